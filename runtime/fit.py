"""Fitting poses with the prior without torch: scipy L-BFGS-B on ``PosePrior.log_prob_and_grad`` (the exported
gradient graph). The torch twin, with more priors and latent space, is ``train/fit.py``.

Ambient space only: the parameters are raw 6D poses x (B, 21, 6) and the objective is the SUM over the batch

    L(x) = sum_b [ data_b(x_b) - lam * log p(x_b) ],

minimised over the free joints (the others stay as given). Poses are independent, so all of them are optimised
jointly as ONE flat float64 vector: the minimiser is every pose's own minimiser (L-BFGS's curvature pairs do mix
poses, so per-pose convergence can be slower than B separate runs; the answer is the same). Ready-made tasks:

* ``denoise``: data = weight * sum_j |x_j - observed_j|^2 (stay near an observed pose; all joints free);
* ``complete``: no data term; the visible joints are fixed and the masked joints free (the most likely completion
  under the prior, from the given start).

``fit`` takes any data term with a numpy gradient: ``data(x) -> (values (B,), d values / d x (B, 21, 6))``.
Returned poses are orthonormalised (Gram-Schmidt); the raw optimum is kept in ``raw``. scipy is needed here only
(``runtime/__init__`` and ``runtime/prior.py`` do not import this module).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from . import rotations
from .prior import PosePrior


@dataclass
class FitResult:
    poses: np.ndarray       # (B, 21, 6) orthonormal 6D; fixed joints exactly as given
    raw: np.ndarray         # (B, 21, 6) the optimised 6D before Gram-Schmidt
    loss: np.ndarray        # (B,) data + lam * (-log p) per pose
    data: np.ndarray        # (B,)
    neg_log_p: np.ndarray   # (B,)
    iterations: int
    evaluations: int
    message: str
    seconds: float


def free_mask(free, batch: int, joint_names=rotations.JOINT_NAMES) -> np.ndarray:
    """(B, 21) bool from None (all free), joint names, a (21,) or (B, 21) boolean mask."""
    J = len(joint_names)
    if free is None:
        return np.ones((batch, J), bool)
    free = np.asarray(free)
    if free.dtype.kind in "US":
        unknown = set(free.tolist()) - set(joint_names)
        if unknown:
            raise ValueError(f"unknown joint names {sorted(unknown)}; expected names from {tuple(joint_names)}")
        free = np.isin(np.asarray(joint_names), free)
    if free.dtype != bool or free.shape not in ((J,), (batch, J)):
        raise ValueError(f"free: joint names, or a boolean mask of shape ({J},) or ({batch}, {J}); got {free.shape}")
    return np.broadcast_to(free, (batch, J))


def fit(prior: PosePrior, init, data=None, lam: float = 1.0, free=None, maxiter: int = 100,
        history: int = 10, balance: bool = True) -> FitResult:
    """Minimise ``sum_b data_b(x_b) - lam * log p(x_b)`` over the ``free`` joints of ``init`` (B, 21, 6) with
    L-BFGS-B (``maxiter`` iterations, at most 1.25 maxiter evaluations, ``history`` correction pairs).

    ``balance``: minimise ``sum_b c_b L_b`` with ``c_b = 1 / max(1, |grad L_b(init)|)`` instead, the same
    minimisers (poses are independent) but a line search that one far-off pose cannot dominate."""
    t0 = time.monotonic()
    x0 = np.array(init, dtype=np.float64)
    if x0.ndim != 3 or x0.shape[1:] != (prior.num_joints, 6):
        raise ValueError(f"init: shape {x0.shape}, expected (B, {prior.num_joints}, 6)")
    mask = free_mask(free, len(x0), prior.joint_names)
    evals = [0]

    def unpack(v):
        x = x0.copy()
        x[mask] = v.reshape(-1, 6)
        return x

    def parts(x):
        log_p, g = prior.log_prob_and_grad(x.astype(np.float32))
        d, dg = (np.zeros(len(x)), np.zeros_like(x)) if data is None else data(x)
        return np.asarray(d, np.float64), np.asarray(dg, np.float64), -log_p.astype(np.float64), g.astype(np.float64)

    def per_pose(x):
        d, dg, nlp, g = parts(x)
        return d + lam * nlp, np.where(mask[..., None], dg - lam * g, 0.0)

    scale = np.ones(len(x0))
    if balance:
        scale = 1.0 / np.maximum(np.linalg.norm(per_pose(x0)[1].reshape(len(x0), -1), axis=1), 1.0)

    def objective(v):
        evals[0] += 1
        loss, grad = per_pose(unpack(v))
        return float(np.sum(scale * loss)), (scale[:, None, None] * grad)[mask].ravel()

    res = minimize(objective, x0[mask].ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": maxiter, "maxfun": 4 * maxiter, "maxcor": history,
                            "ftol": 1e-15, "gtol": 1e-10})
    x = unpack(res.x)
    d, _, nlp, _ = parts(x)
    poses = np.where(mask[..., None], rotations.orthonormalize_6d(x), x0)
    return FitResult(poses, x, d + lam * nlp, d, nlp, int(res.nit), evals[0], str(res.message),
                     time.monotonic() - t0)


def denoise(prior: PosePrior, observed, weight: float = 1.0, lam: float = 1.0, init=None, maxiter: int = 100,
            history: int = 10) -> FitResult:
    """Poses near ``observed`` (B, 21, 6) and likely under the prior:
    ``min_x sum_b weight * |x_b - observed_b|^2 - lam * log p(x_b)``, starting at ``init`` (default: observed).
    With noise of ``sigma`` radians per rotation axis, ``weight = 1 / (2 sigma^2)`` makes lam = 1 the MAP weight."""
    obs = np.asarray(observed, dtype=np.float64)

    def data(x):
        r = x - obs
        return weight * np.sum(r * r, axis=(1, 2)), 2.0 * weight * r

    return fit(prior, obs if init is None else init, data, lam, None, maxiter, history)


def complete(prior: PosePrior, poses, free, lam: float = 1.0, maxiter: int = 100, history: int = 10) -> FitResult:
    """Most likely completion: the ``free`` joints (names or boolean mask) of ``poses`` (B, 21, 6) are optimised
    for ``-lam * log p`` starting from their given values, the other joints stay fixed. (Without a data term
    ``lam`` only scales the objective.)"""
    return fit(prior, poses, None, lam, free, maxiter, history)
