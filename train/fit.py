"""Fitting poses with a pose prior, in torch (docs/design.md §4; the torch-free twin is ``runtime/fit.py``).

A batch of B independent poses is fitted by minimising the SUM over the batch

    L = sum_b [ data_b(x_b) + lam * prior_b ],

where ``data`` is any differentiable data term (it receives the raw 6D poses x (B, 21, 6) and applies Gram-Schmidt
itself where it needs rotations, e.g. ``rotmats(x)``) and ``prior`` is one of the adapters below. Poses do not
interact, so minimising the sum minimises every pose's own objective.

Spaces and priors (``Prior`` adapters: ``encode`` an initial pose into parameters, ``decode`` parameters into
(raw 6D pose, per-pose penalty)):

=========================== ========== ======================================================================
adapter                     parameters penalty per pose
=========================== ========== ======================================================================
``NoPrior()``               x (6D)     0
``FlowAmbient(flow)``       x (6D)     -log p(x)                        (the flow's density on the raw 6D)
``FlowLatent(flow)``        z          -log p(f(z)) = |z|^2/2 + log|det df/dz| + D/2 log 2pi   (latent_forward)
``FlowLatent(flow, False)`` z          |z|^2 / 2          (drops the Jacobian term: the shortcut; ablation only)
``VPoserLatent(vposer)``    z          |z|^2              (``VPoser.latent_penalty``, as VPoser's IK engine)
``GMMPrior(gmm)``           x (6D)     SMPLify max-mixture penalty of axis_angle(GS(x))
=========================== ========== ======================================================================

Latent adapters encode an initial pose by the exact inverse (flow: ``z = f^-1(x0)``, so f(z0) = x0) or the
encoder's mean (VPoser: ``z = mu(x0)``), so every prior starts from the same pose.

Fixed joints (``fixed = (mask, values)``): in ambient space they are not free, ``x = where(mask, values, params)``
(zero gradient, so the optimiser does not move them). A latent code cannot pin coordinates, so there the fixed joints
add ``fixed_weight * sum_{fixed j} |6D(GS(x_j)) - values_j|^2`` to the data term; the returned ``poses`` take the
fixed joints from ``values`` in both spaces.

Gauge term: GS(x) is unchanged by x_j -> (s1 b1, s2 b2 + t b1), so an objective that reads GS(x) only (data
terms, no prior or the GMM) is flat in 3 directions per joint, and L-BFGS's curvature estimate breaks down there
(its steps overflow). For such priors (``gs_invariant``) in ambient space the objective gets
``gauge_weight * |x - 6D(GS(x))|^2``: zero on orthonormal 6D, so it changes no minimiser's rotations, only the
conditioning. The flow's density is not GS-invariant (it models the lift) and gets no gauge term.

Optimiser: one L-BFGS per pose, vectorised over the batch, with its own history, step size and stopping per
pose (Armijo backtracking that re-evaluates only the poses still searching), so poses converge as if fitted alone,
at batched throughput. It is ``runtime.lbfgs.minimize``, the one implementation the torch-free runtime uses too:
``batched_lbfgs`` puts the torch objective behind its ``Objective`` interface (the value in torch, the gradient by
autograd at the accepted point), so fit-bench's torch and runtime rows differ in the prior's implementation only.
Deterministic: the only randomness is in the starts (``perturb`` with a seed).

Robustness: CMU's exact hinge joints make the flow's density very peaked (|d log p / dx| ~ 1e3-1e4 for a pose
10-20 degrees off the data); L-BFGS's line searches scale their steps to that, and the data terms are written as Gaussian negative log-likelihoods (``1/(2 sigma^2)``
weights) so that ``lam = 1`` is the Bayesian MAP weight and a grid around it is meaningful.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from runtime.lbfgs import minimize

from .kinematics import forward_kinematics
from .rotations import (
    NUM_JOINTS,
    axis_angle_to_matrix,
    gram_schmidt,
    matrix_to_6d,
    orthonormalize_6d,
    sixd_to_axis_angle,
)


def rotmats(x: torch.Tensor) -> torch.Tensor:
    """Raw 6D (B, 21, 6) -> rotation matrices (B, 21, 3, 3) by Gram-Schmidt."""
    return gram_schmidt(x)


# --- priors ------------------------------------------------------------------------------------------------------
class Prior:
    """Interface: ``encode(x0) -> params``, ``decode(params) -> (x raw 6D (B, 21, 6), penalty (B,))``.
    ``gs_invariant``: the penalty depends on GS(x) only (module docstring: gauge term)."""

    name = "none"
    space = "ambient"
    gs_invariant = False

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.detach().clone()

    def decode(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return p, self.penalty(p)

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NoPrior(Prior):
    name = "none"
    gs_invariant = True

    def penalty(self, x):
        return x.new_zeros(x.shape[0])


class FlowAmbient(Prior):
    """penalty = -log p(x) on the raw 6D pose."""

    name = "flow_ambient"

    def __init__(self, flow):
        self.flow = flow.eval()

    def penalty(self, x):
        return -self.flow.log_prob(x)


class FlowLatent(Prior):
    """x, log p = latent_forward(z); penalty = -log p(f(z)) (``jacobian=True``) or |z|^2 / 2."""

    space = "latent"

    def __init__(self, flow, jacobian: bool = True):
        self.flow = flow.eval()
        self.jacobian = jacobian
        self.name = "flow_latent" if jacobian else "flow_latent_z2"

    @torch.no_grad()
    def encode(self, x0):
        return self.flow.inverse(x0)[0]

    def decode(self, z):
        x, log_p = self.flow.latent_forward(z)
        return x, (-log_p if self.jacobian else 0.5 * (z * z).sum(-1))


class VPoserLatent(Prior):
    """x = decode(z) (orthonormal 6D); penalty = |z|^2."""

    name = "vposer"
    space = "latent"

    def __init__(self, vposer):
        self.vposer = vposer.eval()

    @torch.no_grad()
    def encode(self, x0):
        return self.vposer.encode(sixd_to_axis_angle(x0)).loc

    def decode(self, z):
        return self.vposer.decode(z)[1], self.vposer.latent_penalty(z)


class GMMPrior(Prior):
    """penalty = GMM max-mixture penalty of the axis-angle of GS(x) (``log_map``)."""

    name = "gmm"
    gs_invariant = True

    def __init__(self, gmm):
        self.gmm = gmm

    def penalty(self, x):
        return self.gmm.penalty(log_map(gram_schmidt(x)))


def log_map(R: torch.Tensor) -> torch.Tensor:
    """Rotation vectors of matrices (..., 3, 3) with finite gradients everywhere below pi:
    ``w = theta / sin(theta) * v``, ``v = (R21 - R12, R02 - R20, R10 - R01) / 2``, ``theta = atan2(|v|, (tr R - 1)/2)``,
    and ``theta / sin(theta) ~ 1 + |v|^2 / 6`` near 0. (``rotations.matrix_to_axis_angle`` takes square roots that
    are 0 on hinge joints, whose gradient is 0 * inf = NaN.)"""
    v = 0.5 * torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s2 = (v * v).sum(-1, keepdim=True)
    s = s2.clamp_min(1e-12).sqrt()
    c = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) - 1.0)
    ratio = torch.where(s2 > 1e-8, torch.atan2(s, c) / s, 1.0 + s2 / 6.0)
    return v * ratio


# --- data terms: callables (x raw 6D (b, 21, 6), idx (b,) indices into the batch) -> (b,) -------------------------
class Denoise:
    """data = weight * sum_j |x_j - observed_j|^2 on the raw 6D (the runtime's ``denoise`` uses the same)."""

    def __init__(self, observed: torch.Tensor, weight: float = 1.0):
        self.observed, self.weight = observed, weight

    def __call__(self, x, idx):
        return self.weight * ((x - self.observed[idx]) ** 2).sum((1, 2))


class Effectors:
    """data = sum_e |FK(GS(x))_e - target_e|^2 / (2 sigma^2): joint positions (m) of some of the 22 joints,
    FK with ``offsets`` (22, 3), identity root orientation and the pelvis at ``trans`` (B, 3) (default origin)."""

    def __init__(
        self,
        targets: torch.Tensor,
        joints,
        offsets: torch.Tensor,
        sigma: float = 0.01,
        trans: torch.Tensor | None = None,
    ):
        self.targets, self.joints, self.offsets, self.sigma, self.trans = targets, list(joints), offsets, sigma, trans

    def __call__(self, x, idx):
        trans = None if self.trans is None else self.trans[idx]
        p = forward_kinematics(rotmats(x), self.offsets.to(x.dtype), None, trans)[:, self.joints]
        return ((p - self.targets[idx]) ** 2).sum((1, 2)) / (2.0 * self.sigma**2)


# --- fitting -----------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    poses: torch.Tensor  # (B, 21, 6) orthonormal 6D (GS of x; fixed joints from their values)
    raw: torch.Tensor  # (B, 21, 6) x as decoded from the final parameters
    params: torch.Tensor  # final parameters (ambient: x; latent: z)
    loss: torch.Tensor  # (B,) data + lam * prior per pose
    data: torch.Tensor  # (B,)
    prior: torch.Tensor  # (B,) penalty (unweighted)
    seconds: float


def _as_mask(mask, b: int, device) -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=torch.bool, device=device)
    return m.expand(b, NUM_JOINTS) if m.ndim == 1 else m


def fit(
    prior: Prior,
    init: torch.Tensor,
    data=None,
    lam: float = 1.0,
    *,
    fixed=None,
    fixed_weight: float = 5000.0,
    gauge_weight: float = 10.0,
    iters: int = 100,
    chunk: int | None = None,
    history: int = 10,
) -> FitResult:
    """Minimise ``sum_b data_b + lam * penalty_b + anchor_b`` from ``init`` (B, 21, 6) (see the module docstring),
    at most ``iters`` L-BFGS iterations per pose, ``chunk`` poses per batched call (memory only).

    ``data(x, idx) -> (b,)`` or None; ``fixed = (mask (21,) or (B, 21) bool, values (B, 21, 6))`` or None;
    ``anchor`` is the latent-space stand-in for fixed joints (``fixed_weight``, module docstring); the gauge
    term (``gauge_weight``) applies to GS-invariant ambient priors only.
    """
    t0 = time.monotonic()
    B = init.shape[0]
    mask = values = None
    if fixed is not None:
        mask, values = _as_mask(fixed[0], B, init.device), fixed[1].to(init.dtype)
    chunk = chunk or B
    outs = []
    for s in range(0, B, chunk):
        idx = torch.arange(s, min(s + chunk, B), device=init.device)
        m = None if mask is None else mask[idx]
        v = None if values is None else values[idx]
        x0 = init[idx] if m is None else torch.where(m[..., None], v, init[idx])
        outs.append(_fit_chunk(prior, x0, data, lam, idx, m, v, (fixed_weight, gauge_weight), iters, history))
    res = [torch.cat(t) for t in zip(*outs)]
    poses = orthonormalize_6d(res[0])
    if mask is not None:
        poses = torch.where(mask[..., None], values, poses)
    return FitResult(poses, *res, time.monotonic() - t0)


def _objective(prior, p, data, lam, idx, mask, values, weights):
    """(x, per-pose data term incl. the latent anchor or the gauge term, per-pose penalty) for parameters p."""
    fixed_weight, gauge_weight = weights
    if prior.space == "ambient" and mask is not None:
        p = torch.where(mask[..., None], values, p)
    x, pen = prior.decode(p)
    d = data(x, idx) if data is not None else x.new_zeros(x.shape[0])
    if prior.space == "latent" and mask is not None:
        err = ((orthonormalize_6d(x) - values) ** 2).sum(-1)
        d = d + fixed_weight * (err * mask).sum(-1)
    if prior.space == "ambient" and prior.gs_invariant and gauge_weight:
        d = d + gauge_weight * ((x - orthonormalize_6d(x)) ** 2).sum((1, 2))
    return x, d, pen


def _fit_chunk(prior, x0, data, lam, idx, mask, values, weights, iters, history):
    p = prior.encode(x0).detach().clone()

    def per_pose(rows, q):
        _, d, pen = _objective(
            prior,
            q,
            data,
            lam,
            idx[rows],
            None if mask is None else mask[rows],
            None if values is None else values[rows],
            weights,
        )
        return d + lam * pen

    p = batched_lbfgs(per_pose, p, iters, history)
    with torch.no_grad():
        q = p if not (prior.space == "ambient" and mask is not None) else torch.where(mask[..., None], values, p)
        x, d, pen = _objective(prior, p, data, lam, idx, mask, values, weights)
        return x.detach(), q.detach(), (d + lam * pen).detach(), d.detach(), pen.detach()


class TorchObjective:
    """``runtime.lbfgs.Objective`` over a torch loss ``fn(rows, p_rows) -> (len(rows),)`` of parameters shaped
    ``shape[1:]`` per row: ``value`` evaluates it in torch (keeping the graph), ``gradient`` differentiates the
    selected rows by autograd (zero where the loss does not depend on p). numpy in and out, in p's dtype."""

    def __init__(self, fn, shape: tuple[int, ...], device: torch.device):
        self.fn, self.shape, self.device = fn, tuple(shape[1:]), device

    def value(self, rows: np.ndarray, p: np.ndarray):
        with torch.enable_grad():
            xr = torch.from_numpy(np.ascontiguousarray(p)).to(self.device).requires_grad_(True)
            f = self.fn(torch.from_numpy(rows).to(self.device), xr.view(len(rows), *self.shape))
        return f.detach().cpu().numpy(), (xr, f)

    def gradient(self, rows: np.ndarray, p: np.ndarray, cache, sel: np.ndarray) -> np.ndarray:
        xr, f = cache
        if not f.requires_grad:
            return np.zeros((len(sel), xr.shape[1]), p.dtype)
        sel_t = torch.from_numpy(sel).to(self.device)
        g = torch.autograd.grad(f[sel_t].sum(), xr)[0]  # rows do not interact: row i's gradient is f_i's
        return g[sel_t].cpu().numpy()


def batched_lbfgs(
    fn,
    p0: torch.Tensor,
    iters: int,
    history: int = 10,
    c1: float = 1e-4,
    max_backtracks: int = 10,
    grad_tol: float = 1e-5,
) -> torch.Tensor:
    """B independent L-BFGS runs, vectorised: ``runtime.lbfgs.minimize`` (its docstring states the algorithm:
    per-pose history, Armijo backtracking, stopping at ``|g|_inf <= grad_tol``) on the torch loss ``fn(rows,
    p_rows) -> (len(rows),)`` (rows: LongTensor into the batch; losses of different poses must not interact),
    through ``TorchObjective``. Returns the final parameters, shaped and typed as ``p0``."""
    shape = p0.shape
    p = p0.detach().reshape(shape[0], -1).cpu().numpy().copy()
    res = minimize(
        TorchObjective(fn, shape, p0.device),
        p,
        iters,
        history=history,
        gtol=grad_tol,
        c1=c1,
        max_backtracks=max_backtracks,
    )
    return torch.from_numpy(res.p).to(p0.device).view(shape)


# --- initial poses and noise -------------------------------------------------------------------------------------
def perturb(x: torch.Tensor, sigma_deg: float, seed: int, joints=None) -> torch.Tensor:
    """Orthonormal 6D poses (B, 21, 6) rotated per joint, R' = R exp([eps]x), eps ~ N(0, sigma^2 I_3) (radians),
    drawn from ``torch.Generator().manual_seed(seed)`` in float64 (same numbers for any dtype of x); only the
    joints in the boolean mask ``joints`` ((21,) or (B, 21)) when given. The mean angle is about 1.60 sigma."""
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(x.shape[0], NUM_JOINTS, 3, generator=gen, dtype=torch.float64) * math.radians(sigma_deg)
    R = gram_schmidt(x.double()) @ axis_angle_to_matrix(eps)
    out = matrix_to_6d(R).to(x.dtype)
    if joints is not None:
        out = torch.where(_as_mask(joints, x.shape[0], x.device)[..., None], out, x)
    return out
