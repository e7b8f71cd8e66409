"""Where the evaluated poses come from: the flow through the runtime, the two baselines through torch, the data.

Every source ends as orthonormal rotations (n, 21, 3, 3) plus the flow's log p of them, so the metrics never see
a model. Seeds, for evaluation seed S (each source its own stream, so adding one changes no other):

* flow: ``z = numpy.random.default_rng(S).standard_normal((n, D), float32)``, the very latents of
  ``PosePrior.sample(n, seed=S)``; raw poses and their log p from ``latent_forward(z)``, orthonormalised poses
  by Gram-Schmidt and scored by ``log_prob``;
* VPoser: ``VPoser.sample(n, torch.Generator().manual_seed(S + 1))`` (orthonormal 6D by construction);
* GMM: ``GMM.sample(n, torch.Generator().manual_seed(S + 2))`` (axis-angle, converted to 6D in float64);
* data subsets (KS against train, APD, nearest neighbours, scatter plots): ``numpy.random.default_rng([S + 3, k])``,
  k fixed per use (``run.DATA_STREAMS``);
* the training-time augmentation of train poses (``augmented``): ``torch.Generator().manual_seed(S + 4)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import PosePrior, rotations
from runtime.kinematics import forward_kinematics
from runtime.rotations import JOINT_NAMES

BATCH = 4096  # poses per onnxruntime call


@dataclass
class PoseSource:
    """Poses of one origin: orthonormal 6D (n, 21, 6) float32, the flow's log p of them (n,), and extras."""

    name: str
    label: str
    sixd: np.ndarray
    log_p: np.ndarray
    raw_log_p: np.ndarray | None = None  # flow samples: log p of the raw (not orthonormal) outputs
    sequence: np.ndarray | None = None  # data: sequence id per pose
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sixd)

    def matrices(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Rotation matrices (n, 21, 3, 3), float64."""
        x = self.sixd if idx is None else self.sixd[idx]
        return rotations.gram_schmidt(x.astype(np.float64))

    def rotvecs(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Rotation vectors (n, 21, 3) (angle in [0, pi]), float64."""
        return rotations.matrix_to_axis_angle(self.matrices(idx))


def load_prior(model_dir: str | Path) -> PosePrior:
    """The runtime's PosePrior on CPU, threads not spinning (torch shares the process)."""
    return PosePrior.load(model_dir, providers=["CPUExecutionProvider"], allow_spinning=False)


def batched_log_prob(prior: PosePrior, sixd: np.ndarray) -> np.ndarray:
    """log p of 6D poses (n, 21, 6), in batches of ``BATCH``; float64 out."""
    return np.concatenate(
        [prior.log_prob(sixd[i : i + BATCH].astype(np.float32)) for i in range(0, len(sixd), BATCH)]
    ).astype(np.float64)


def flow_samples(
    prior: PosePrior, n: int, seed: int, name: str = "ours", label: str = "ours", temperature: float = 1.0
) -> PoseSource:
    """n samples of the flow, z = temperature * N(0, I) as ``PosePrior.sample`` draws it: raw log p (one
    ``latent_forward`` pass) and log p after Gram-Schmidt."""
    z = np.random.default_rng(seed).standard_normal((n, prior.dim), dtype=np.float32) * np.float32(temperature)
    raw, raw_lp = [], []
    for i in range(0, n, BATCH):
        x, lp = prior.latent_forward(z[i : i + BATCH])
        raw.append(x)
        raw_lp.append(lp)
    raw = np.concatenate(raw)
    raw_lp = np.concatenate(raw_lp).astype(np.float64)
    # consistency of the exported graphs: the inverse pass must give the forward pass's density
    inverse_lp = batched_log_prob(prior, raw)
    ortho = rotations.orthonormalize_6d(raw.astype(np.float64)).astype(np.float32)
    return PoseSource(
        name,
        label,
        ortho,
        batched_log_prob(prior, ortho),
        raw_log_p=raw_lp,
        info={
            "seed": seed,
            "max_abs_latent_forward_vs_log_prob": float(np.abs(raw_lp - inverse_lp).max()),
            "raw_orthonormality_error_median": float(np.median(_orthonormality_error(raw))),
        },
    )


def _orthonormality_error(x6: np.ndarray) -> np.ndarray:
    """Per pose, the max over joints of max(| |b1| - 1 |, | |b2| - 1 |, |b1.b2|)."""
    b1, b2 = x6[..., :3].astype(np.float64), x6[..., 3:].astype(np.float64)
    e = np.maximum(np.abs(np.linalg.norm(b1, axis=-1) - 1), np.abs(np.linalg.norm(b2, axis=-1) - 1))
    return np.maximum(e, np.abs((b1 * b2).sum(-1))).max(-1)


def data_source(prior: PosePrior, path: str | Path, name: str, label: str):
    """A data split (shared npz format, or a converted AMASS-style split of ``make data``) as a PoseSource (all
    poses), plus its PoseSet (offsets, checksums)."""
    from ..data import load_split

    ps = load_split(path)
    sixd = rotations.axis_angle_to_6d(ps.rotations.astype(np.float64)).astype(np.float32)
    src = PoseSource(
        name,
        label,
        sixd,
        batched_log_prob(prior, sixd),
        sequence=ps.sequence,
        info={
            "path": str(path),
            "sha256": next(iter(ps.files.values())),
            "n": len(ps),
            "sequences": len(np.unique(ps.sequence)),
        },
    )
    return src, ps


def find_baselines(paths: list[str | Path]) -> dict[str, Path]:
    """{"vposer": run dir, "gmm": run dir} from --baselines arguments: each a run directory (its config.json
    names the model) or a folder of run directories. Two runs of one kind is an error (name one)."""
    found: dict[str, Path] = {}
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: baseline run directory not found")
        runs = [p] if (p / "config.json").is_file() else sorted(d for d in p.iterdir() if (d / "config.json").is_file())
        for run in runs:
            kind = json.loads((run / "config.json").read_text()).get("model", "flow")
            if kind not in ("vposer", "gmm"):
                continue
            if kind in found and found[kind] != run:
                raise ValueError(f"two {kind} runs ({found[kind]}, {run}): pass the one to use as --baselines")
            found[kind] = run
        if (p / "config.json").is_file() and not any(found.get(k) == p for k in ("vposer", "gmm")):
            raise ValueError(f"{p}: not a vposer or gmm run (config.json 'model')")
    return found


def vposer_samples(prior: PosePrior, run: Path, n: int, seed: int) -> PoseSource:
    """n VPoser samples (decoder of z ~ N(0, I), eval mode): orthonormal 6D, scored by the flow."""
    import torch

    from ..vposer import load_vposer

    model, ckpt = load_vposer(run)
    with torch.no_grad():
        sixd = model.sample(n, generator=torch.Generator().manual_seed(seed)).numpy().astype(np.float32)
    return PoseSource(
        "vposer",
        "VPoser",
        sixd,
        batched_log_prob(prior, sixd),
        info={"run": str(run), "seed": seed, "epoch": int(ckpt["state"]["epoch"])},
    )


def gmm_samples(prior: PosePrior, run: Path, n: int, seed: int) -> PoseSource:
    """n GMM samples (axis-angle, any angle), converted to orthonormal 6D in float64, scored by the flow."""
    import torch

    from ..gmm import load_gmm

    gmm, ckpt = load_gmm(run)
    aa = gmm.sample(n, generator=torch.Generator().manual_seed(seed)).numpy().astype(np.float64)
    sixd = rotations.axis_angle_to_6d(aa).astype(np.float32)
    return PoseSource(
        "gmm",
        "GMM",
        sixd,
        batched_log_prob(prior, sixd),
        info={"run": str(run), "seed": seed, "components": int(len(gmm.weights))},
    )


def augmented(prior: PosePrior, poses: PoseSource, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The distribution the flow was fit to: poses augmented as in training (``train.augment.Augmentation`` with
    the settings of the model's manifest), and their log p before and after Gram-Schmidt."""
    import torch

    from ..augment import Augmentation

    training = prior.manifest.get("training", {})
    cfg = training.get("config", {})
    params = {k: float(cfg.get(k) or 0.0) for k in ("alpha", "beta", "noise", "joint_noise")}
    widen = tuple((j, tuple(map(float, v))) for j, v in (cfg.get("widen") or {}).items())
    aug = Augmentation(
        **params,
        noisy_joints=tuple(training.get("noisy_joints", [])),
        widen=widen,
        part_mix=float(cfg.get("part_mix") or 0.0),
    )
    x = aug(torch.from_numpy(poses.sixd.astype(np.float64)), torch.Generator().manual_seed(seed)).numpy()
    return (
        batched_log_prob(prior, x),
        batched_log_prob(prior, rotations.orthonormalize_6d(x)),
        {**params, "noisy_joints": list(aug.noisy_joints)},
    )


def constrained(
    prior: PosePrior, src: PoseSource, train_rotations: np.ndarray, joints: list[str], tol: float = 1e-3
) -> PoseSource:
    """Diagnostic: ``src`` with the dequantised ``joints`` (the manifest's ``noisy_joints``) put back onto the
    training data's constraints: a joint equal to an earlier one in every training pose is set to it, any other
    one has its rotation vector projected onto the principal subspace (about the training mean) spanned by the
    directions with standard deviation >= ``tol`` rad (the hinge's axis, the elbow's plane). This undoes the
    ``joint_noise`` the samples carry, the way Gram-Schmidt undoes the lift (``train.augment.degenerate_joints``
    uses the same ``tol``)."""
    aa = src.rotvecs()
    for name in joints:
        j = JOINT_NAMES.index(name)
        x = train_rotations[:, j].astype(np.float64)
        twin = next((k for k in range(j) if np.abs(x - train_rotations[:, k]).max() < tol), None)
        if twin is not None:
            aa[:, j] = aa[:, twin]
            continue
        mu = x.mean(0)
        _, sv, vt = np.linalg.svd(x - mu, full_matrices=False)
        keep = vt[sv / np.sqrt(len(x)) >= tol]
        aa[:, j] = mu + ((aa[:, j] - mu) @ keep.T) @ keep
    sixd = rotations.axis_angle_to_6d(aa).astype(np.float32)
    return PoseSource(f"{src.name}_constrained", f"{src.label} + hinge projection", sixd, batched_log_prob(prior, sixd))


def joint_positions(src: PoseSource, offsets: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Forward kinematics in centimetres (n, 22, 3): root orientation identity, pelvis at the origin, the one
    fixed skeleton ``offsets`` (22, 3) in metres for every source."""
    return 100.0 * forward_kinematics(src.matrices(idx), np.asarray(offsets, np.float64))
