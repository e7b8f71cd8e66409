"""Independent L-BFGS problems solved as one batch, in numpy (``train.fit.batched_lbfgs`` runs this same function on
torch objectives).

B problems ``min_p f_b(p_b)``, p_b in R^n, that do not interact are minimised together: every problem keeps its
own curvature history, step size and stopping, and each objective call receives only the rows still searching,
so a problem that has converged costs nothing more while the others go on. Per iteration and active problem:

* direction ``d = -H g`` by the two-loop recursion over the last ``history`` pairs (s, y), with
  ``H0 = gamma I``, ``gamma = s.y / y.y`` of the newest pair. At the start and after a reset: ``d = -h0 g``
  (``h0``: the caller's inverse-curvature scale, e.g. ``1 / (2 w)`` for a data term ``w |x - y|^2``) or, without
  ``h0``, steepest descent with step ``min(1, 1 / |g|_1)``;
* Armijo backtracking ``f(p + t d) <= f(p) + c1 t g.d`` from t = 1, each retry at the minimiser of the quadratic
  through f(0), f'(0) and f(t), kept within [0.1 t, 0.5 t], at most ``max_backtracks`` retries. Only the trial
  VALUE is computed during the search (``Objective.value``); the gradient is computed once, at the accepted point
  (``Objective.gradient``, which may reuse what ``value`` cached, e.g. the ambient graph's gradient);
* stopping, per problem: ``|g|_inf <= gtol``; or a relative decrease ``f_old - f_new <= ftol * max(1, |f_new|)``;
  or a failed search from a fresh start (no decrease representable in float32); or an infeasible start
  (f(p0) = inf: nothing to search from). A failed search from an L-BFGS direction resets that problem's history
  instead.

Everything runs in the dtype of ``p0`` (float32 for the exported graphs: no casts on the hot path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Objective(Protocol):
    """Per-row objective: ``value(rows, p) -> (f (b,), cache)``; ``gradient(rows, p, cache, sel) -> g (len(sel), n)``
    for the rows ``rows[sel]`` at ``p[sel]`` (``cache`` is what ``value`` returned for ``rows``)."""

    def value(self, rows: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def gradient(self, rows: np.ndarray, p: np.ndarray, cache: Any, sel: np.ndarray) -> np.ndarray: ...


@dataclass
class LBFGSResult:
    p: np.ndarray  # (B, n) final parameters
    f: np.ndarray  # (B,) final objective values
    g: np.ndarray  # (B, n) final gradients
    iterations: np.ndarray  # (B,) iterations each problem ran
    converged: np.ndarray  # (B,) True: stopped by gtol / ftol / a failed fresh search, False: ran out of iterations
    calls: int  # objective calls (value + gradient), each on the rows active at the time


def minimize(
    obj: Objective,
    p0: np.ndarray,
    iters: int,
    history: int = 10,
    h0: float | np.ndarray | None = None,
    gtol: float = 1e-5,
    ftol: float = 0.0,
    c1: float = 1e-4,
    max_backtracks: int = 10,
) -> LBFGSResult:
    """Minimise B independent objectives from ``p0`` (B, n), at most ``iters`` iterations each (module docstring)."""
    p = np.array(p0, copy=True)
    B, n = p.shape
    dt = p.dtype
    S, Y = np.zeros((B, history, n), dt), np.zeros((B, history, n), dt)
    rho, gamma = np.zeros((B, history), dt), np.ones(B, dt)
    slot = np.zeros(B, np.int64)  # next history slot per problem
    fresh = np.ones(B, bool)
    done = np.zeros(B, bool)
    its = np.zeros(B, np.int64)
    h0 = None if h0 is None else np.broadcast_to(np.asarray(h0, dt), (B,))
    calls = 0
    rows = np.arange(B)
    f, cache = obj.value(rows, p)
    g = obj.gradient(rows, p, cache, np.arange(B)).astype(dt, copy=False)
    f = f.astype(dt, copy=False)
    calls += 2
    done |= (np.abs(g).max(1) <= gtol) | ~np.isfinite(f)  # f = inf: an infeasible start, nothing to search from
    for _ in range(iters):
        act = np.flatnonzero(~done)
        if len(act) == 0:
            break
        its[act] += 1
        ga = g[act]
        # two-loop recursion, newest pair first; empty slots have rho = 0 and contribute nothing
        q, alphas = -ga, []
        order = [(slot[act] - 1 - i) % history for i in range(history)]
        Sa, Ya, ra = S[act], Y[act], rho[act]
        ar = np.arange(len(act))
        for j in order:
            a = ra[ar, j] * np.einsum("bn,bn->b", Sa[ar, j], q)
            q = q - a[:, None] * Ya[ar, j]
            alphas.append(a)
        r = gamma[act, None] * q
        for j, a in zip(reversed(order), reversed(alphas)):
            r = r + Sa[ar, j] * (a - ra[ar, j] * np.einsum("bn,bn->b", Ya[ar, j], r))[:, None]
        sd = fresh[act] | (np.einsum("bn,bn->b", ga, r) >= 0)
        if h0 is None:
            t_sd = np.minimum(1.0, 1.0 / np.maximum(np.abs(ga).sum(1), 1e-30)).astype(dt)
            d = np.where(sd[:, None], -ga, r)
            t = np.where(sd, t_sd, 1.0).astype(dt)
        else:
            d = np.where(sd[:, None], -h0[act, None] * ga, r)
            t = np.ones(len(act), dt)
        gd = np.einsum("bn,bn->b", ga, d)
        p_new, f_new = p[act].copy(), f[act].copy()
        accepted = np.zeros(len(act), bool)
        pend = np.arange(len(act))
        for _ in range(max_backtracks + 1):
            if len(pend) == 0:
                break
            trial = p[act[pend]] + t[pend, None] * d[pend]
            fr, cache = obj.value(act[pend], trial)
            calls += 1
            fr = fr.astype(dt, copy=False)
            tp, f0, gdp = t[pend], f[act[pend]], gd[pend]
            ok = np.isfinite(fr) & (fr <= f0 + c1 * tp * gdp)
            if ok.any():
                sel = np.flatnonzero(ok)
                acc = pend[sel]
                g_acc = obj.gradient(act[pend], trial, cache, sel).astype(dt, copy=False)
                calls += 1
                p_new[acc], f_new[acc], accepted[acc] = trial[sel], fr[sel], True
                g[act[acc]] = g_acc  # written below for the rest (unchanged)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                quad = -gdp * tp * tp / (2.0 * (fr - f0 - gdp * tp))
            quad = np.where(np.isfinite(quad), quad, 0.1 * tp)
            t[pend] = np.minimum(np.maximum(quad, 0.1 * tp), 0.5 * tp)
            pend = pend[~ok]
        g_new = g[act]
        s_, y_ = p_new - p[act], g_new - ga
        sy = np.einsum("bn,bn->b", s_, y_)
        # keep a pair only with positive curvature (relative to |s| |y|, so tiny late steps still count)
        upd = accepted & (sy > 10 * np.finfo(dt).eps * np.linalg.norm(s_, axis=1) * np.linalg.norm(y_, axis=1))
        u, k = act[upd], slot[act[upd]]
        S[u, k], Y[u, k], rho[u, k] = s_[upd], y_[upd], 1.0 / sy[upd]
        gamma[u] = sy[upd] / np.einsum("bn,bn->b", y_[upd], y_[upd])
        slot[u] = (k + 1) % history
        failed = ~accepted
        rho[act[failed]] = 0.0  # a failed search from an L-BFGS direction: reset
        fresh[act] = failed
        small = accepted & (f[act] - f_new <= ftol * np.maximum(1.0, np.abs(f_new)))
        done[act] |= (failed & sd) | small | (np.abs(g_new).max(1) <= gtol)
        p[act], f[act] = p_new, f_new
    converged = done.copy()
    return LBFGSResult(p, f, g, its, converged, calls)
