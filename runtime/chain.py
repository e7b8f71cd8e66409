"""Runs of consecutive frames as one smoothing problem: the bridge between a run's neighbours, the temporal
smoothness term and a solver that whitens it. Numpy + the prior's graphs (``runtime.prior``), no torch.

A *chain* is a sequence of frames ``c_0 .. c_{T-1}`` (21 joints, raw 6D) in which some joints of some frames are
*free* (``free`` (T, 21) bool) and the rest are held at their given values: one run of repaired frames with the
observed frames around it, or several such runs laid end to end (``ambient`` stacking in ``runtime.takes.repair``).
Its objective is

    L(x) = -lam sum_{t: some joint free} log p(x_t) + w sum_{t=1}^{T-1} sum_j W_tj |x_tj - x_{t-1},j|^2,

``W_tj = 1`` where joint j is free in frame t or t-1 (else 0: two held frames cost nothing) and ``w`` the pair
weight (``smooth * fps^2`` in ``repair``). Frames with no free joint (the held neighbours) enter the smoothness
term only: their log p is a constant.

**Whitening.** The smoothness term is quadratic, with Hessian ``2 w L`` on the free entries, ``L`` tridiagonal in
time for every joint (the chain's graph Laplacian, held neighbours as fixed ends). ``ChainObjective`` solves in
``u`` with

    x = x0 + R^{-1} u,     R^T R = M = 2 w L + mu I     (R upper bidiagonal: the Cholesky factor of M),

so that the smoothness part has the identity as Hessian in ``u`` (plus ``mu``), and L-BFGS no longer has to learn
the badly conditioned ``(T / pi)^2`` spread of ``L``'s eigenvalues (a run of 15 frames: about 100) from its
gradients. The gradient is ``dL/du = R^{-T} dL/dx``; both solves are one sweep over time, vectorised over joints
and channels. ``mu`` (``PRIOR_CURVATURE * lam``) stands for the prior's own curvature and keeps M positive definite
where a run has no held neighbour (a take that is flagged from its first frame to its last).
"""

from __future__ import annotations

import numpy as np

from . import rotations
from .fit import feasible
from .prior import PosePrior

#: mu / lam of the whitening (module docstring): about the curvature of -log p in a free joint's 6D coordinates
#: near a plausible pose (its scale only sets how long the first L-BFGS step is; later steps learn the rest)
PRIOR_CURVATURE = 100.0


def bridge(x: np.ndarray, a: int, b: int, joints: list[int], starts: list[int]) -> np.ndarray:
    """(b - a, len(joints), 6): joints ``joints`` of frames a..b-1 of ``x`` (N, 21, 6) on the geodesic from frame
    a-1 to frame b, ``R_{a-1} exp(s log(R_{a-1}^T R_b))``, s = (t - a + 1) / (b - a + 1); where the run touches a
    take's end (``starts``, or the ends of ``x``), the one neighbour held; with neither, ``x`` as it is."""
    n = len(x)
    ends = set(starts) | {n}
    lo = None if a in ends or a == 0 else x[a - 1, joints]
    hi = None if b in ends or b >= n else x[b, joints]
    if lo is None and hi is None:
        return x[a:b, joints]
    if lo is None or hi is None:
        return np.broadcast_to((hi if lo is None else lo), (b - a, len(joints), 6)).astype(np.float32)
    R0 = rotations.sixd_to_matrix(lo.astype(np.float64))
    w = rotations.matrix_to_axis_angle(np.swapaxes(R0, -1, -2) @ rotations.sixd_to_matrix(hi.astype(np.float64)))
    s = (np.arange(1, b - a + 1) / (b - a + 1))[:, None, None]
    return rotations.matrix_to_6d(R0 @ rotations.axis_angle_to_matrix(w * s)).astype(np.float32)


def pair_weight(free: np.ndarray) -> np.ndarray:
    """(T - 1, 21): ``W_tj`` of the module docstring, 1 where joint j is free in frame t or t - 1."""
    return (free[1:] | free[:-1]).astype(np.float32)


class Whitening:
    """``M = 2 w L + mu I`` of the module docstring for a chain's ``free`` (T, 21) mask, factored once: ``R`` has
    diagonal ``d`` (T, 21) and superdiagonal ``e`` (T, 21) (``e_t = R_{t-1,t}``, ``e_0 = 0``). Held entries are
    their own identity block (their ``u`` stays 0). ``solve_r(u)`` = R^{-1} u, ``solve_rt(g)`` = R^{-T} g, for
    arrays (T, 21, ...)."""

    def __init__(self, free: np.ndarray, w: float, mu: float):
        free = np.asarray(free, bool)
        T, J = free.shape
        W = pair_weight(free) * np.float32(2 * w) if T > 1 else np.zeros((0, J), np.float32)
        diag = np.full((T, J), np.float64(mu))
        diag[1:] += W
        diag[:-1] += W
        off = np.zeros((T, J))  # M_{t-1,t}, coupling two free entries only
        off[1:] = -W * (free[1:] & free[:-1])
        diag = np.where(free, diag, 1.0)
        d, e = np.empty((T, J)), np.zeros((T, J))
        d[0] = np.sqrt(diag[0])
        for t in range(1, T):  # Cholesky of a tridiagonal matrix, every joint at once
            e[t] = off[t] / d[t - 1]
            d[t] = np.sqrt(diag[t] - e[t] ** 2)
        self.d, self.e, self.T = d.astype(np.float32), e.astype(np.float32), T

    def solve_r(self, u: np.ndarray) -> np.ndarray:
        """R^{-1} u: back substitution from the last frame."""
        d, e = self.d.reshape(self.d.shape + (1,) * (u.ndim - 2)), self.e.reshape(self.e.shape + (1,) * (u.ndim - 2))
        y = np.empty_like(u)
        y[-1] = u[-1] / d[-1]
        for t in range(self.T - 2, -1, -1):
            y[t] = (u[t] - e[t + 1] * y[t + 1]) / d[t]
        return y

    def solve_rt(self, g: np.ndarray) -> np.ndarray:
        """R^{-T} g: forward substitution from the first frame."""
        d, e = self.d.reshape(self.d.shape + (1,) * (g.ndim - 2)), self.e.reshape(self.e.shape + (1,) * (g.ndim - 2))
        v = np.empty_like(g)
        v[0] = g[0] / d[0]
        for t in range(1, self.T):
            v[t] = (g[t] - e[t] * v[t - 1]) / d[t]
        return v


class ChainObjective:
    """``L`` of the module docstring on a chain ``x0`` (T, 21, 6) (the start: held entries as observed, free ones
    where the search begins) with ``free`` (T, 21), for ``runtime.lbfgs.minimize``: parameters ``u`` (T*21*6,),
    ``x = x0 + R^{-1} u`` on the free entries (``Whitening``), so ``u = 0`` is the start. One ``log_prob_grad``
    call per evaluation, on the frames with a free joint only."""

    def __init__(self, prior: PosePrior, x0: np.ndarray, free: np.ndarray, lam: float, w: float):
        self.prior, self.x0, self.free = prior, np.asarray(x0, np.float32), np.asarray(free, bool)
        self.T = len(self.x0)
        self.lam, self.w = np.float32(lam), np.float32(w)
        self.W = pair_weight(self.free)[..., None]  # (T-1, 21, 1)
        self.rows = np.flatnonzero(self.free.any(1))
        self.white = Whitening(self.free, float(w), PRIOR_CURVATURE * float(lam))
        self.fmask = self.free[..., None]

    def poses(self, u: np.ndarray) -> np.ndarray:
        """The chain's raw 6D poses (T, 21, 6) at parameters ``u``."""
        dx = self.white.solve_r(np.asarray(u, np.float32).reshape(self.T, -1, 6))
        return np.where(self.fmask, self.x0 + dx, self.x0).astype(np.float32)

    def _parts(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        log_p, g = self.prior.log_prob_and_grad(x[self.rows])
        d = self.W * np.diff(x, axis=0)  # (T-1, 21, 6), zero where not smoothed
        gx = np.zeros_like(x)
        gx[self.rows] = -self.lam * g
        gx[1:] += (2 * self.w) * d
        gx[:-1] -= (2 * self.w) * d
        L = float(-self.lam * log_p.sum()) + float(self.w * np.einsum("tjk,tjk->", d, d))
        return L, np.where(self.fmask, gx, 0.0).astype(np.float32)

    def value(self, rows, p):
        f = np.full(len(p), np.inf, np.float32)
        cache = [None] * len(p)
        for i in range(len(p)):
            x = self.poses(p[i])
            if feasible(x.reshape(1, -1))[0]:
                f[i], gx = self._parts(x)
                cache[i] = gx
        return f, cache

    def gradient(self, rows, p, cache, sel):
        return np.stack([self.white.solve_rt(cache[i]).reshape(-1) for i in sel]).astype(np.float32)
