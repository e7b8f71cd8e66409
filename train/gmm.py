"""Baseline: a full-covariance Gaussian mixture on 63-d axis-angle poses (SMPLify style; docs/design.md §5).

Density, with x the 21 x 3 axis-angle pose flattened to d = 63 numbers and K components (8 in ``paper``):

    p(x) = sum_k w_k N(x; mu_k, Sigma_k),
    log N(x; mu, Sigma) = -1/2 (x - mu)^T Sigma^-1 (x - mu) - 1/2 log det Sigma - d/2 log(2 pi).

Fit by EM (float64): k-means++ seeding (fixed seed) and ``kmeans_iter`` Lloyd steps give hard assignments for the
first M-step; then E-step ``r_ik = w_k N(x_i; k) / p(x_i)`` and M-step ``N_k = sum_i r_ik``, ``w_k = N_k / N``,
``mu_k = sum_i r_ik x_i / N_k``, ``Sigma_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + reg_covar * I`` (as
scikit-learn's ``reg_covar``). Stop when the mean train log-likelihood rises by less than ``tol`` (nats per pose)
or after ``max_iter`` iterations.

SMPLify's pose penalty (the max-mixture approximation of -log p), as computed here:

    penalty(x) = min_k [ 1/2 (x - mu_k)^T Sigma_k^-1 (x - mu_k) - log w_k + 1/2 log det Sigma_k ]
               = min_k [ -log(w_k N(x; mu_k, Sigma_k)) ] - d/2 log(2 pi).

SMPLify's code (``MaxMixturePrior``) uses ``-log(w_k / sqrt(det Sigma_k / min_j det Sigma_j))``: the same up to
the additive constant 1/2 log min_j det Sigma_j, so the same minimiser and gradients.

The run directory has ``config.json`` (``"model": "gmm"``), ``metrics.jsonl`` (one line per EM iteration),
``best.pt`` (the fitted parameters, loadable with ``torch.load(weights_only=True)``) and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from runtime.atomic import atomic_write_text

from .config import ConfigBase, load_preset
from .data import PoseSet
from .rotations import NUM_JOINTS
from .trainer import CHECKPOINT_FORMAT, atomic_save, data_checksums, read_checkpoint

DIM = 3 * NUM_JOINTS


@dataclass
class GMMConfig(ConfigBase):
    model: str = "gmm"  # fixed: tells run directories of the baselines and the flow apart
    n_components: int = 8
    reg_covar: float = 1e-4  # added to every covariance's diagonal (rad^2)
    tol: float = 1e-5  # stop when mean train log-likelihood rises less than this (nats per pose)
    max_iter: int = 500
    kmeans_iter: int = 20
    seed: int = 0


PRESETS = {
    "paper": GMMConfig(),
    "tiny": GMMConfig(tol=1e-3, max_iter=10, kmeans_iter=5),
}


def load_config(spec: str | None) -> GMMConfig:
    """``spec``: a preset name, a JSON file of overrides on a preset (key ``preset``, default ``paper``), or None."""
    return load_preset(PRESETS, spec, "gmm")


class GMM(nn.Module):
    """Mixture with weights (K,), means (K, 63), covariances (K, 63, 63); poses in and out as (B, 21, 3)
    axis-angle (or (B, 63)). Computes in the dtype of its buffers (float64 as fitted; ``.float()`` for float32)."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)
        L = torch.linalg.cholesky(covs)
        eye = torch.eye(covs.shape[-1], dtype=covs.dtype).expand_as(covs)
        # Sigma^-1 = P^T P with P = L^-1 (lower triangular), so (x-mu)^T Sigma^-1 (x-mu) = ||P (x-mu)||^2
        self.register_buffer("prec_chol", torch.linalg.solve_triangular(L, eye, upper=False), persistent=False)
        self.register_buffer("log_det", 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1), persistent=False)

    def _mahalanobis(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K): (x - mu_k)^T Sigma_k^-1 (x - mu_k)."""
        x = x.reshape(x.shape[0], -1).to(self.means.dtype)
        y = torch.einsum("kij,bkj->bki", self.prec_chol, x[:, None, :] - self.means)
        return (y * y).sum(-1)

    def component_log_prob(self, aa: torch.Tensor) -> torch.Tensor:
        """(B, K): log w_k + log N(x; mu_k, Sigma_k)."""
        return self.weights.log() - 0.5 * (self._mahalanobis(aa) + self.log_det + DIM * math.log(2 * math.pi))

    def log_prob(self, aa: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x), in the input's dtype; differentiable."""
        return torch.logsumexp(self.component_log_prob(aa), dim=-1).to(aa.dtype)

    def penalty(self, aa: torch.Tensor) -> torch.Tensor:
        """(B,) SMPLify's max-mixture penalty (module docstring), in the input's dtype; differentiable."""
        terms = 0.5 * self._mahalanobis(aa) - self.weights.log() + 0.5 * self.log_det
        return terms.min(-1).values.to(aa.dtype)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """n poses (n, 21, 3) axis-angle: k ~ Categorical(w), x = mu_k + L_k eps (Sigma_k = L_k L_k^T).
        ``generator``: a torch.Generator or an int seed."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, DIM, generator=generator, dtype=self.means.dtype)
        L = torch.linalg.cholesky(self.covs)
        x = self.means[k] + torch.einsum("bij,bj->bi", L[k], eps)
        return x.reshape(n, NUM_JOINTS, 3)


def load_gmm(path: str | Path) -> tuple[GMM, dict]:
    """Rebuild a GMM from ``best.pt`` (or a run directory); returns (GMM, checkpoint)."""
    ckpt = read_checkpoint(path, "gmm")
    m = ckpt["model"]
    return GMM(m["weights"], m["means"], m["covs"]), ckpt


# --- EM ------------------------------------------------------------------------------------------------------
def kmeans_pp(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Hard labels (N,) from k-means++ seeding and ``iters`` Lloyd steps (an emptied cluster keeps its centre)."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values ** 2
        centres = torch.cat([centres, x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]])
    labels = torch.cdist(x, centres).argmin(1)
    for _ in range(iters):
        for j in range(k):
            if (labels == j).any():
                centres[j] = x[labels == j].mean(0)
        labels = torch.cdist(x, centres).argmin(1)
    return labels


def m_step(x: torch.Tensor, resp: torch.Tensor, reg_covar: float) -> GMM:
    """Weights, means and regularised covariances from responsibilities resp (N, K)."""
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
    means = resp.T @ x / nk[:, None]
    covs = torch.stack([((x - means[j]) * resp[:, j : j + 1]).T @ (x - means[j]) / nk[j] for j in range(len(nk))])
    covs = covs + reg_covar * torch.eye(x.shape[1], dtype=x.dtype)
    return GMM(nk / len(x), means, covs)


@torch.no_grad()
def mean_log_prob(gmm: GMM, aa: torch.Tensor, batch: int = 8192) -> float:
    return float(torch.cat([gmm.log_prob(aa[i : i + batch]) for i in range(0, len(aa), batch)]).mean())


@torch.no_grad()
def fit_gmm(cfg: GMMConfig, train_set: PoseSet, val_set: PoseSet, out: str | Path, *, progress: bool = True) -> dict:
    """Fit by EM into run directory ``out``; returns the summary dict (also ``summary.json``)."""
    out = Path(out)
    data_sha = data_checksums(train_set, val_set)
    x = torch.from_numpy(train_set.rotations).double().reshape(len(train_set), DIM)
    x_val = torch.from_numpy(val_set.rotations).double().reshape(len(val_set), DIM)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    (out / "metrics.jsonl").write_text("")
    t0 = time.monotonic()
    labels = kmeans_pp(x, cfg.n_components, cfg.kmeans_iter, torch.Generator().manual_seed(cfg.seed))
    gmm = m_step(x, torch.nn.functional.one_hot(labels, cfg.n_components).double(), cfg.reg_covar)
    prev, converged, resp = -math.inf, False, None  # resp: the E-step's responsibilities, from iteration 1 on
    bar = tqdm(range(cfg.max_iter + 1), desc="EM", disable=not progress, leave=False)
    for it in bar:
        if it:
            gmm = m_step(x, resp, cfg.reg_covar)  # M-step
        comp = gmm.component_log_prob(x)  # E-step, and the log-likelihood of this model
        lse = torch.logsumexp(comp, -1)
        train_ll, val_ll = float(lse.mean()), mean_log_prob(gmm, x_val)
        row = {"iter": it, "train_log_p": train_ll, "val_log_p": val_ll, "seconds": round(time.monotonic() - t0, 3)}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        bar.set_postfix(train=f"{train_ll:.3f}", val=f"{val_ll:.3f}")
        if train_ll - prev < cfg.tol:
            converged = True
            break
        prev = train_ll
        resp = (comp - lse[:, None]).exp()
    state = {"iterations": row["iter"], "converged": converged, "train_log_p": train_ll, "val_log_p": val_ll}
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": gmm.state_dict(),
            "config": asdict(cfg),
            "config_sha256": cfg.sha256(),
            "data_sha256": data_sha,
            "state": state,
        },
        out / "best.pt",
    )
    summary = {
        "model": "gmm",
        "stop_reason": "tol" if converged else "max_iter",
        "iterations": row["iter"],
        "train_log_p": train_ll,
        "val_log_p": val_ll,
        "weights": [round(float(w), 4) for w in gmm.weights],
        "train_seconds": round(time.monotonic() - t0, 1),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "config_sha256": cfg.sha256(),
        "data_sha256": data_sha,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
