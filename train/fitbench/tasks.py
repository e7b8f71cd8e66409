"""The fitting tasks of the benchmark on one set of ground-truth poses: part completion, sparse-effector IK and
denoising (their objectives and metrics: the package docstring), with the settings ``BenchConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from runtime.formats.joint_maps import SMPL_NAMES
from runtime.rotations import JOINT_NAMES, PARENTS, axis_angle_to_matrix, geodesic_deg

from .. import fit as F
from ..kinematics import forward_kinematics
from ..rotations import gram_schmidt, matrix_to_6d
from .models import RuntimePrior

BODY = SMPL_NAMES  # the 22 FK joints
MASKS = {
    "left_leg": ("left_hip", "left_knee", "left_ankle", "left_foot"),
    "right_leg": ("right_hip", "right_knee", "right_ankle", "right_foot"),
    "left_arm": ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
    "right_arm": ("right_collar", "right_shoulder", "right_elbow", "right_wrist"),
    "trunk": ("spine1", "spine2", "spine3", "neck", "head"),
}
EFFECTORS = ("pelvis", "head", "left_wrist", "right_wrist", "left_ankle", "right_ankle")


@dataclass
class BenchConfig:
    n: int = 500  # test poses
    n_val: int = 100  # validation poses for the lam grid
    hypotheses: int = 10  # completion starts per pose
    init_sigma_deg: float = 20.0  # spread of the completion starts around the mean pose
    noise_deg: tuple = (10.0, 20.0)  # denoising noise levels
    effector_sigma_m: float = 0.01  # IK observation noise (and its data-term sigma)
    iters: dict = field(default_factory=lambda: {"completion": 20, "ik": 30, "denoise": 30})
    chunk: int = 2500  # poses per batched call (memory only: poses never interact)
    lam_grid: tuple = (0.03, 0.1, 0.3, 1.0, 3.0)  # IK and denoising (calibrated data terms: MAP at 1)
    lam_grid_completion: tuple = (3.0, 10.0, 30.0, 100.0, 300.0)  # latent completion: lam against the anchor
    fixed_weight: float = 5000.0  # latent-space anchor of visible joints (1/(2 * 0.01^2))
    seed: int = 0
    priors: tuple = ()  # names from models.ROWS to run (default: all)


def evenly(n: int, total: int) -> np.ndarray:
    """Indices of min(n, total) items evenly spaced over 0 .. total - 1 (rounded, unique)."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def mean_pose(aa: np.ndarray) -> torch.Tensor:
    """Per-joint chordal mean rotation (mean matrix projected onto SO(3) by SVD) of poses (N, 21, 3) -> 6D (21, 6)."""
    M = axis_angle_to_matrix(aa.astype(np.float64)).mean(0)
    U, _, Vt = np.linalg.svd(M)
    D = np.ones((len(M), 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    return matrix_to_6d(torch.from_numpy((U * D[:, None, :]) @ Vt)).float()


def joint_mask(names) -> torch.Tensor:
    return torch.tensor([n in names for n in JOINT_NAMES])


def descendants(names) -> list[int]:
    """FK joints (indices into BODY) whose position depends on the rotation of a joint in ``names``."""
    rotated = {BODY.index(n) for n in names}
    out = []
    for k in range(1, len(BODY)):
        a = PARENTS[k]
        while a > 0 and a not in rotated:
            a = PARENTS[a]
        if a > 0:
            out.append(k)
    return out


class Scorer:
    """Errors of fitted orthonormal 6D poses against ground truth, with the evaluation skeleton."""

    def __init__(self, gt: torch.Tensor, offsets: np.ndarray):
        self.R = gram_schmidt(gt.double())
        self.offsets = torch.from_numpy(np.asarray(offsets, dtype=np.float64))
        self.P = forward_kinematics(self.R, self.offsets)

    def geodesic(self, x: torch.Tensor) -> np.ndarray:
        """(..., N, 21) degrees; x (..., N, 21, 6)."""
        return geodesic_deg(gram_schmidt(x.double()).numpy(), self.R.numpy())

    def joint_errors(self, x: torch.Tensor) -> np.ndarray:
        """(..., N, 22) mm; x (..., N, 21, 6)."""
        R = gram_schmidt(x.double())
        P = forward_kinematics(R.reshape(-1, *R.shape[-3:]), self.offsets).reshape(R.shape[:-3] + (22, 3))
        return 1000.0 * (P - self.P).norm(dim=-1).numpy()


# --- the tasks ---------------------------------------------------------------------------------------------------
PER_POSE = "_per_pose"  # the selection metric per test pose (N,): standard errors and paired differences


class Tasks:
    """The three tasks on one set of ground-truth poses gt (N, 21, 6); all randomness is seeded by ``cfg.seed``."""

    def __init__(self, gt: torch.Tensor, offsets: np.ndarray, mean: torch.Tensor, cfg: BenchConfig):
        self.gt, self.cfg, self.mean = gt, cfg, mean
        self.score = Scorer(gt, offsets)
        self.offsets = torch.from_numpy(np.asarray(offsets, dtype=np.float32))
        n = len(gt)
        self.mean_poses = mean.expand(n, -1, -1).contiguous()
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        eff = [BODY.index(e) for e in EFFECTORS]
        noise = torch.randn(n, len(eff), 3, generator=gen, dtype=torch.float64) * cfg.effector_sigma_m
        self.effectors = eff
        self.targets = (self.score.P[:, eff] + noise).float()
        self.noisy = {s: F.perturb(gt, s, seed=cfg.seed + 1000 + int(s)) for s in cfg.noise_deg}

    def _fit(self, prior, init, data, lam, task, fixed=None):
        c = self.cfg
        if isinstance(prior, RuntimePrior):
            return prior.fit(init, data, lam, fixed, c.fixed_weight, c.iters[task])
        return F.fit(
            prior, init, data, lam, fixed=fixed, fixed_weight=c.fixed_weight, iters=c.iters[task], chunk=c.chunk
        )

    def completion(self, prior, lam: float, mask_name: str, hypotheses: int):
        """(metrics, fitted poses (H, N, 21, 6))."""
        m = joint_mask(MASKS[mask_name])
        n, H = len(self.gt), hypotheses
        base = torch.where(m[:, None], self.mean_poses, self.gt)
        init = torch.cat([F.perturb(base, self.cfg.init_sigma_deg, seed=self.cfg.seed + h, joints=m) for h in range(H)])
        res = self._fit(prior, init, None, lam, "completion", fixed=(~m, self.gt.repeat(H, 1, 1)))
        poses = res.poses.reshape(H, n, 21, 6)
        mpjpe = self.score.joint_errors(poses)[..., descendants(MASKS[mask_name])].mean(-1)  # (H, N)
        geo = self.score.geodesic(poses)[..., m.numpy()].mean(-1)
        return {
            "mpjpe_mm": float(mpjpe.mean()),
            "mpjpe_best_mm": float(mpjpe.min(0).mean()),
            "geodesic_deg": float(geo.mean()),
            "geodesic_best_deg": float(geo.min(0).mean()),
            "seconds": res.seconds,
            PER_POSE: mpjpe.mean(0),
        }, poses

    def ik(self, prior, lam: float):
        data = F.Effectors(
            self.targets, self.effectors, self.offsets, self.cfg.effector_sigma_m, trans=self.targets[:, 0]
        )
        res = self._fit(prior, self.mean_poses, data, lam, "ik")
        err = self.score.joint_errors(res.poses)[:, 1:]
        return {
            "mpjpe_mm": float(err.mean()),
            "geodesic_deg": float(self.score.geodesic(res.poses).mean()),
            "seconds": res.seconds,
            PER_POSE: err.mean(-1),
        }, res.poses

    def denoise(self, prior, lam: float, sigma: float):
        noisy = self.noisy[sigma]
        res = self._fit(prior, noisy, F.Denoise(noisy, 1.0 / (2.0 * math.radians(sigma) ** 2)), lam, "denoise")
        geo = self.score.geodesic(res.poses).mean(-1)
        return {
            "geodesic_deg": float(geo.mean()),
            "mpjpe_mm": float(self.score.joint_errors(res.poses)[:, 1:].mean()),
            "seconds": res.seconds,
            PER_POSE: geo,
        }, res.poses

    def reference(self) -> dict:
        """Errors without fitting: completion with the mean pose in the masked joints, IK's start (the mean pose),
        the noisy inputs of denoising."""
        out = {"completion": {}}
        for name, joints in MASKS.items():
            m = joint_mask(joints)
            x = torch.where(m[:, None], self.mean_poses, self.gt)
            out["completion"][name] = {
                "mpjpe_mm": float(self.score.joint_errors(x)[:, descendants(joints)].mean()),
                "geodesic_deg": float(self.score.geodesic(x)[:, m.numpy()].mean()),
            }
        for metric in ("mpjpe_mm", "geodesic_deg"):
            out["completion"][f"mean_{metric}"] = float(np.mean([out["completion"][n][metric] for n in MASKS]))
        out["ik"] = {
            "mpjpe_mm": float(self.score.joint_errors(self.mean_poses)[:, 1:].mean()),
            "geodesic_deg": float(self.score.geodesic(self.mean_poses).mean()),
        }
        for s in self.noisy:
            out[f"denoise_{s:g}"] = self.noisy_input(s)
        return out

    def noisy_input(self, sigma: float) -> dict:
        x = self.noisy[sigma]
        return {
            "geodesic_deg": float(self.score.geodesic(x).mean()),
            "mpjpe_mm": float(self.score.joint_errors(x)[:, 1:].mean()),
        }


def task_keys(noise_deg) -> list[str]:
    return ["completion", "ik"] + [f"denoise_{float(s):g}" for s in noise_deg]


def run_task(tasks: Tasks, prior, key: str, lam: float, hypotheses: int = 1):
    """(metrics, poses) of one prior on one task key; completion runs every mask."""
    if key == "completion":
        out, poses = {}, {}
        for name in MASKS:
            out[name], poses[name] = tasks.completion(prior, lam, name, hypotheses)
        for metric in ("mpjpe_mm", "mpjpe_best_mm", "geodesic_deg", "geodesic_best_deg", "seconds"):
            out[f"mean_{metric}"] = float(np.mean([out[name][metric] for name in MASKS]))
        out[PER_POSE] = np.mean([out[name].pop(PER_POSE) for name in MASKS], axis=0)
        return out, poses
    if key == "ik":
        return tasks.ik(prior, lam)
    return tasks.denoise(prior, lam, float(key.split("_")[1]))
