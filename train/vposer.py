"""Baseline: a VPoser-style VAE (Pavlakos et al. 2019; docs/design.md §5), trained on the same splits as the flow.

Model (what this implementation chose; VPoser v2's own net differs in the details noted):

* input: 63-d axis-angle (21 joints x 3), standardised elementwise with FIXED mean/std from the training poses
  (VPoser v2 used an input BatchNorm; fixed statistics keep train and eval mode identical);
* encoder ``Linear(63,H) - LeakyReLU - Dropout(p) - Linear(H,H) - LeakyReLU`` then two heads,
  ``mu = Linear(H,D)(h)`` and ``sigma = softplus(Linear(H,D)(h))``: posterior ``q(z|x) = N(mu, diag sigma^2)``
  (v2 also had a BatchNorm and a second activation-free Linear; no BatchNorm here);
* decoder ``Linear(D,H) - LeakyReLU - Dropout(p) - Linear(H,H) - LeakyReLU - Linear(H,21*6)``, read per joint as
  OUR 6D layout ``(b1, b2)`` (first two columns, contiguous; VPoser's code used an interleaved layout) and mapped
  to rotations by Gram-Schmidt, ``R = GS(b1, b2)``. H = 512, D = 32 in the ``paper`` preset.

Loss per pose (mean over the batch), with w = ``kl_weight`` = 0.005 as in the SMPL-X paper (c1 = w, c2 = 1 - w):

    L = (1 - w) * sum_j ||R_hat_j - R_j||_F^2 + w * KL(q(z|x) || N(0, I)),
    ||R_hat - R||_F^2 = 6 - 2 tr(R_hat^T R) = 4 (1 - cos theta),   theta = geodesic angle between R_hat and R,
    KL = sum_d ( (mu_d^2 + sigma_d^2 - 1) / 2 - log sigma_d ),

with z = mu + sigma * eps (reparameterisation). The SMPL-X paper's orthogonality and determinant terms are not
needed: GS output is a rotation by construction. Adam, early stopping on the validation loss, computed in eval
mode with ONE fixed draw of eps (seed ``val_seed``) so it is comparable between epochs.

For fitting, VPoser's prior is ``||z||^2`` in latent space (``VPoser.latent_penalty``; ``-log N(z) = ||z||^2/2 +
const``), the shortcut docs/design.md §4 contrasts with the flow's exact density.

The run directory is the flow's (``train.trainer``): ``config.json`` (with ``"model": "vposer"``),
``metrics.jsonl``, ``best.pt``/``last.pt`` (weights, optimizer, epoch, RNG states, config, data sha256; they load
with ``torch.load(weights_only=True)``) and ``summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn.functional import softplus

from runtime.atomic import atomic_write_text

from . import distributed
from .config import ConfigBase, load_preset
from .data import PoseSet
from .rotations import NUM_JOINTS, axis_angle_to_matrix, gram_schmidt, matrix_to_6d
from .trainer import Limits, Objective, Run, data_checksums, read_checkpoint, run_epochs


@dataclass
class VPoserConfig(ConfigBase):
    model: str = "vposer"  # fixed: tells run directories of the baselines and the flow apart
    hidden: int = 512
    latent: int = 32
    dropout: float = 0.1
    kl_weight: float = 0.005
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10  # early stopping: epochs without a lower validation loss
    grad_clip: float = 10.0
    seed: int = 0
    val_seed: int = 1234  # the fixed eps of the validation loss
    max_val: int = 20000  # at most this many validation poses (a fixed, seeded subset)


PRESETS = {
    "paper": VPoserConfig(),
    "tiny": VPoserConfig(hidden=128, latent=16, epochs=6, patience=3, max_val=2000),
}


def load_config(spec: str | None) -> VPoserConfig:
    """``spec``: a preset name, a JSON file of overrides on a preset (key ``preset``, default ``paper``), or None."""
    return load_preset(PRESETS, spec, "vposer")


class VPoser(nn.Module):
    def __init__(self, hidden: int = 512, latent: int = 32, dropout: float = 0.1):
        super().__init__()
        n_in = 3 * NUM_JOINTS
        self.latent = latent
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_std", torch.ones(n_in))
        self.encoder = nn.Sequential(
            nn.Linear(n_in, hidden), nn.LeakyReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.LeakyReLU()
        )
        self.to_mu = nn.Linear(hidden, latent)
        self.to_sigma = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(),
            nn.Linear(hidden, 6 * NUM_JOINTS),
        )

    @torch.no_grad()
    def set_normalization(self, aa: torch.Tensor) -> None:
        """Fix the input standardisation to the mean and std of training poses aa (N, 21, 3)."""
        x = aa.reshape(len(aa), -1)
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp_min(1e-3))

    def encode(self, aa: torch.Tensor) -> Normal:
        """Axis-angle (B, 21, 3) or (B, 63) -> posterior q(z|x) = N(mu, diag sigma^2), batch shape (B, latent)."""
        h = self.encoder((aa.flatten(1) - self.input_mean) / self.input_std)
        return Normal(self.to_mu(h), softplus(self.to_sigma(h)) + 1e-6)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, latent) -> (rotation matrices (B, 21, 3, 3), orthonormal 6D (B, 21, 6))."""
        R = gram_schmidt(self.decoder(z).reshape(z.shape[0], NUM_JOINTS, 6))
        return R, matrix_to_6d(R)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n poses as orthonormal 6D (n, 21, 6), z ~ N(0, I). Call in eval mode (dropout off)."""
        z = torch.randn(n, self.latent, generator=generator, device=self.input_mean.device)
        return self.decode(z)[1]

    @staticmethod
    def latent_penalty(z: torch.Tensor) -> torch.Tensor:
        """VPoser's fitting prior ``||z||^2`` per pose (B,); ``-log N(z; 0, I) = ||z||^2 / 2 + const``."""
        return (z * z).sum(-1)

    def loss(self, aa: torch.Tensor, R: torch.Tensor, eps: torch.Tensor, kl_weight: float) -> dict:
        """Per-batch means of the loss terms (module docstring) for poses aa, their matrices R, noise eps."""
        q = self.encode(aa)
        R_hat, _ = self.decode(q.loc + q.scale * eps)
        rec = ((R_hat - R) ** 2).sum((1, 2, 3)).mean()
        kl = (0.5 * (q.loc**2 + q.scale**2 - 1.0) - q.scale.log()).sum(-1).mean()
        return {"loss": (1.0 - kl_weight) * rec + kl_weight * kl, "rec": rec, "kl": kl}


def build_vposer(cfg: VPoserConfig) -> VPoser:
    return VPoser(cfg.hidden, cfg.latent, cfg.dropout)


def load_vposer(path: str | Path) -> tuple[VPoser, dict]:
    """Rebuild a VPoser from ``best.pt``/``last.pt`` (or a run directory: its ``best.pt``).
    Returns (model in eval mode, checkpoint)."""
    ckpt = read_checkpoint(path, "vposer")
    model = build_vposer(VPoserConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


@torch.no_grad()
def evaluate(
    model: VPoser, aa: torch.Tensor, R: torch.Tensor, eps: torch.Tensor, kl_weight: float, batch: int = 4096
) -> dict:
    """Validation figures in eval mode: the loss terms with the given eps, and the mean geodesic error (degrees)
    of the reconstruction from the posterior mean z = mu."""
    model.eval()
    sums = {"loss": 0.0, "rec": 0.0, "kl": 0.0, "geodesic_deg": 0.0}
    for i in range(0, len(aa), batch):
        a, r, e = aa[i : i + batch], R[i : i + batch], eps[i : i + batch]
        for k, v in model.loss(a, r, e, kl_weight).items():
            sums[k] += float(v) * len(a)
        R_hat, _ = model.decode(model.encode(a).loc)
        cos = (((R_hat * r).sum((-2, -1)) - 1.0) / 2.0).clamp(-1.0, 1.0)
        sums["geodesic_deg"] += float(torch.rad2deg(torch.acos(cos)).mean(-1).sum())
    return {k: v / len(aa) for k, v in sums.items()}


def _matrices(aa: torch.Tensor) -> torch.Tensor:
    return torch.cat([axis_angle_to_matrix(c.double()).float() for c in aa.split(32768)])


def train_vposer(
    cfg: VPoserConfig,
    train_set: PoseSet,
    val_set: PoseSet,
    out: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict:
    """Train a VPoser into run directory ``out`` (layout as ``train.trainer.train``); returns the summary dict."""
    out = Path(out)
    data_sha = data_checksums(train_set, val_set)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    aa_train = torch.from_numpy(train_set.rotations).float()
    R_train = torch.from_numpy(distributed.per_machine(lambda: {"R": _matrices(aa_train).numpy()})["R"])  # per machine
    vgen = torch.Generator().manual_seed(cfg.val_seed)
    aa_val = torch.from_numpy(val_set.rotations).float()
    if len(aa_val) > cfg.max_val:
        aa_val = aa_val[torch.randperm(len(aa_val), generator=vgen)[: cfg.max_val]]
    R_val = _matrices(aa_val)
    eps_val = torch.randn(len(aa_val), cfg.latent, generator=vgen)

    model = build_vposer(cfg)
    model.set_normalization(aa_train)
    dev = distributed.device()
    model.to(dev)
    aa_val, R_val, eps_val = aa_val.to(dev), R_val.to(dev), eps_val.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch_loss(idx: torch.Tensor, shard: slice) -> torch.Tensor:
        eps = torch.randn(len(idx), cfg.latent, generator=gen)  # the whole batch's noise, then this rank's shard
        idx = idx[shard]
        return model.loss(aa_train[idx].to(dev), R_train[idx].to(dev), eps[shard].to(dev), cfg.kl_weight)["loss"]

    def validate() -> dict:
        return {f"val_{k}": v for k, v in evaluate(model, aa_val, R_val, eps_val, cfg.kl_weight).items()}

    state, stop_reason = run_epochs(
        Run(out, cfg, model, opt, gen, data_sha, len(aa_train)),
        Objective(batch_loss, validate, score="val_loss", higher_is_better=False, train_field=("train_loss", 1.0)),
        Limits(resume, max_steps, max_minutes, progress=progress),
    )
    best = state["best"]
    summary = {
        "model": "vposer",
        "stop_reason": stop_reason,
        "epochs": state["epoch"],
        "steps": state["step"],
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"],
        "best_val_rec": best.get("val_rec"),
        "best_val_kl": best.get("val_kl"),
        "best_val_geodesic_deg": best.get("val_geodesic_deg"),
        "train_seconds": round(state["seconds"], 1),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "config_sha256": cfg.sha256(),
        "data_sha256": data_sha,
    }
    if distributed.is_main():
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
