"""Fitting poses with the prior without torch, in ambient or latent space (the torch twin is ``train/fit.py``).

A batch of B independent problems is solved at once, each minimising its own

    L_b = data_b(x_b) + lam * (-log p(x_b))

with ``runtime.lbfgs.minimize`` (one L-BFGS per pose, vectorised: own history, line search and stopping; each
graph call gets only the poses still searching). Everything is float32, as the graphs are.

Spaces (``space=``):

* ``"ambient"``: the parameters are the raw 6D poses x (B, 21, 6); -log p(x) and its gradient come from the
  ``log_prob_grad`` graph (one call per trial point). Fixed joints are not free: their entries keep their values.
* ``"latent"``: the parameters are latents z (B, D), x = f(z), and the penalty is -log p(f(z)) = |z|^2/2 +
  log|det df/dz| + D/2 log 2 pi (the Jacobian term included, docs/design.md §4). A trial point costs one
  ``latent_forward`` call (x and log p); the accepted point one ``latent_vjp`` call, which turns the data term's
  pose gradient into (df/dz)^T dL/dx and adds d log p(f(z))/dz. A latent cannot pin coordinates, so fixed joints
  add the anchor ``fixed_weight * sum_{fixed j} |6D(GS(x_j)) - v_j|^2`` to the data term (as ``train.fit``).
  The start is ``init_z`` when given, else ``encode(prior, init)`` (z with f(z) = init, solved iteratively).

Data terms are callables ``data(x, rows) -> (values (b,), d values / d x (b, 21, 6))`` of the raw 6D poses x of the
problems ``rows`` (indices into the batch). Ready-made: ``Denoise``, ``Effectors`` (joint positions through numpy
forward kinematics), ``Anchor``. Tasks: ``denoise``, ``complete``, ``ik``.

Poses are independent problems; a take's frames with a temporal term are ``runtime.takes`` (``repair``).

Returned poses are orthonormalised (Gram-Schmidt) with fixed joints exactly as given; the raw optimum is ``raw``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import rotations
from .formats.joint_maps import SMPL_NAMES
from .kinematics import fk_vjp, forward_kinematics
from .lbfgs import minimize
from .prior import MAX_ABS, ModelError, PosePrior

SPACES = ("ambient", "latent")
BODY = SMPL_NAMES  # the 22 forward-kinematics joints
#: Largest weight (``weight``, ``lam``, ``fixed_weight``, and ``1 / sigma^2``) a fit accepts: the terms
#: are summed in float32, whose range (3.4e38) a weight of 1e39 leaves at once; 1e8 keeps a loss of a few hundred
#: squared units (6D residuals are at most 2 per coordinate) far inside it, as ``MAX_ABS`` does for the poses.
MAX_WEIGHT = 1e8
#: Largest |target| / |trans| (m) and |offset| (m) of an IK problem (FK sums 22 offsets in float32)
MAX_POSITION_M = 1e4
MAX_OFFSET_M = 100.0
DataTerm = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class FitResult:
    poses: np.ndarray  # (B, 21, 6) orthonormal 6D; fixed joints exactly as given
    raw: np.ndarray  # (B, 21, 6) the optimised raw 6D (ambient: the parameters; latent: f(z))
    params: np.ndarray  # ambient: x (B, 21, 6); latent: z (B, D)
    loss: np.ndarray  # (B,) data + lam * (-log p) per pose (data includes the latent anchor)
    data: np.ndarray  # (B,)
    neg_log_p: np.ndarray  # (B,)
    iterations: np.ndarray  # (B,) L-BFGS iterations per pose
    converged: np.ndarray  # (B,) stopped by a tolerance (not by the iteration budget)
    calls: int  # graph calls (each on the poses still active)
    space: str
    seconds: float


# --- argument checks ---------------------------------------------------------------------------------------------
def _poses(a, what: str, num_joints: int) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError(f"{what}: must be a floating-point array, got dtype {a.dtype}")
    if a.ndim != 3 or a.shape[1:] != (num_joints, 6) or a.shape[0] == 0:
        raise ValueError(f"{what}: shape {a.shape}, expected (B, {num_joints}, 6) with B >= 1")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or inf")
    if np.abs(a).max() > np.float64(MAX_ABS):
        raise ValueError(
            f"{what}: |value| {float(np.abs(a).max()):.4g} exceeds {MAX_ABS:g}, the largest the runtime accepts"
        )
    return a.astype(np.float32)


def _number(v, what: str, positive: bool = False, most: float | None = MAX_WEIGHT) -> float:
    """``v`` as a float: finite, >= 0 (> 0 when ``positive``) and at most ``most``; else a ValueError naming it."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number, got {v!r}") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{what}: must be {'> 0' if positive else '>= 0'} and finite, got {v!r}")
    if most is not None and v > most:
        raise ValueError(
            f"{what}: {v:g} exceeds {most:g}, the largest the fit accepts (its float32 loss would overflow)"
        )
    return v


def _bounded(a: np.ndarray, what: str, most: float) -> np.ndarray:
    if a.size and np.abs(a).max() > most:
        raise ValueError(
            f"{what}: |value| {float(np.abs(a).max()):.4g} exceeds {most:g} m, the largest the fit "
            f"accepts (float32 forward kinematics)"
        )
    return a


def free_mask(free, batch: int, joint_names=rotations.JOINT_NAMES) -> np.ndarray:
    """(B, 21) bool from None (all free), joint names, a (21,) or (B, 21) boolean mask."""
    J = len(joint_names)
    if free is None:
        return np.ones((batch, J), bool)
    free = np.asarray(free)
    if free.dtype.kind in "US":
        unknown = set(free.ravel().tolist()) - set(joint_names)
        if unknown:
            raise ValueError(f"free: unknown joint names {sorted(unknown)}; expected names from {tuple(joint_names)}")
        free = np.isin(np.asarray(joint_names), free)
    if free.dtype != bool or free.shape not in ((J,), (batch, J)):
        raise ValueError(f"free: joint names, or a boolean mask of shape ({J},) or ({batch}, {J}); got {free.shape}")
    return np.broadcast_to(free, (batch, J))


# --- data terms --------------------------------------------------------------------------------------------------
class Denoise:
    """``weight * sum_j |x_j - observed_j|^2`` on the raw 6D (as ``train.fit.Denoise``); gradient 2 w (x - obs)."""

    def __init__(self, observed: np.ndarray, weight: float):
        self.observed, self.weight = np.asarray(observed, np.float32), np.float32(weight)

    def __call__(self, x, rows):
        r = x - self.observed[rows]
        return self.weight * np.einsum("bjk,bjk->b", r, r), (2.0 * self.weight) * r


class Anchor:
    """``weight * sum_{j in mask} |6D(GS(x_j)) - values_j|^2``: holds joints of a decoded pose (latent space);
    gradient through ``rotations.gram_schmidt_vjp``."""

    def __init__(self, values: np.ndarray, mask: np.ndarray, weight: float):
        self.values, self.mask, self.weight = np.asarray(values, np.float32), np.asarray(mask), np.float32(weight)

    def __call__(self, x, rows):
        m = self.mask[rows][..., None]
        r = np.where(m, rotations.orthonormalize_6d(x) - self.values[rows], 0.0).astype(np.float32)
        G = np.stack([r[..., :3], r[..., 3:], np.zeros_like(r[..., :3])], axis=-1)
        return self.weight * np.einsum("bjk,bjk->b", r, r), (2.0 * self.weight) * rotations.gram_schmidt_vjp(
            x, G
        ).astype(np.float32)


class Effectors:
    """``sum_e |FK(GS(x))_e - target_e|^2 / (2 sigma^2)`` (as ``train.fit.Effectors``): positions (m) of the FK
    joints ``joints`` (names from ``BODY`` = pelvis + JOINT_NAMES, or indices 0..21), FK with the skeleton's rest
    ``offsets`` (22, 3) or (B, 22, 3), identity root orientation and the pelvis at ``trans`` (B, 3) (default
    origin). Gradient: ``kinematics.fk_vjp`` then ``rotations.gram_schmidt_vjp``."""

    def __init__(
        self, targets: np.ndarray, joints, offsets: np.ndarray, sigma: float = 0.01, trans: np.ndarray | None = None
    ):
        self.joints = _body_indices(joints)
        self.targets = _bounded(np.asarray(targets, np.float64), "targets", MAX_POSITION_M).astype(np.float32)
        if self.targets.ndim != 3 or self.targets.shape[1:] != (len(self.joints), 3):
            raise ValueError(
                f"targets: shape {self.targets.shape}, expected (B, {len(self.joints)}, 3) "
                f"(one position per joint in joints)"
            )
        if not np.isfinite(self.targets).all():
            raise ValueError("targets: contains NaN or inf")
        B = len(self.targets)
        off = np.asarray(offsets, np.float64)
        if np.isfinite(off).all():
            _bounded(off, "offsets", MAX_OFFSET_M)
        off = off.astype(np.float32)
        if off.shape not in ((len(BODY), 3), (B, len(BODY), 3)) or not np.isfinite(off).all():
            raise ValueError(
                f"offsets: shape {off.shape}, expected finite ({len(BODY)}, 3) or ({B}, {len(BODY)}, 3) "
                f"rest offsets (child relative to parent, metres)"
            )
        self.offsets = np.broadcast_to(off, (B, len(BODY), 3))
        self.trans = None if trans is None else np.asarray(trans, np.float64)
        if self.trans is not None and np.isfinite(self.trans).all():
            _bounded(self.trans, "trans", MAX_POSITION_M)
        self.trans = None if self.trans is None else self.trans.astype(np.float32)
        if self.trans is not None and (self.trans.shape != (B, 3) or not np.isfinite(self.trans).all()):
            raise ValueError(f"trans: shape {self.trans.shape}, expected finite ({B}, 3)")
        sigma = _number(sigma, "sigma", positive=True, most=None)
        if sigma < MAX_WEIGHT**-0.5:
            raise ValueError(
                f"sigma: {sigma:g} is below {MAX_WEIGHT**-0.5:g} m: 1 / sigma^2 would exceed "
                f"{MAX_WEIGHT:g}, the largest weight the fit accepts (its float32 loss would overflow)"
            )
        self.inv_var = np.float32(1.0 / sigma**2)

    def __call__(self, x, rows):
        R = rotations.gram_schmidt(x)
        trans = None if self.trans is None else self.trans[rows]
        P = forward_kinematics(R, self.offsets[rows], None, trans)
        r = P[:, self.joints] - self.targets[rows]
        grad_p = np.zeros((len(rows), len(BODY), 3), np.float32)
        np.add.at(grad_p, (slice(None), self.joints), self.inv_var * r)
        _, gR = fk_vjp(R, self.offsets[rows], grad_p, None, trans)
        return 0.5 * self.inv_var * np.einsum("bjk,bjk->b", r, r), rotations.gram_schmidt_vjp(x, gR).astype(np.float32)


def _body_indices(joints) -> list[int]:
    """Joint names or indices into ``BODY``; one name or index alone is one joint (not its characters)."""
    if isinstance(joints, (str, int, np.integer)):
        joints = [joints]
    out = []
    for j in joints:
        if isinstance(j, str):
            if j not in BODY:
                raise ValueError(f"joints: unknown joint {j!r}; expected names from {BODY}")
            out.append(BODY.index(j))
        elif isinstance(j, (int, np.integer)) and 0 <= int(j) < len(BODY):
            out.append(int(j))
        else:
            raise ValueError(f"joints: {j!r} is neither a joint name nor an index 0..{len(BODY) - 1}")
    if not out:
        raise ValueError("joints: give at least one joint")
    return out


def _gauge(x, rows):
    """``|x - 6D(GS(x))|^2``, zero on orthonormal 6D: conditions an ambient fit without prior (lam = 0), whose
    objective would be flat along the 6D scale/shear directions (as ``train.fit``'s gauge term)."""
    r = x - rotations.orthonormalize_6d(x).astype(np.float32)
    G = np.stack([r[..., :3], r[..., 3:], np.zeros_like(r[..., :3])], axis=-1)
    return np.einsum("bjk,bjk->b", r, r), 2.0 * (r - rotations.gram_schmidt_vjp(x, G).astype(np.float32))


def _total(terms: list[DataTerm]) -> DataTerm | None:
    if not terms:
        return None

    def data(x, rows):
        vals, grads = zip(*(t(x, rows) for t in terms))
        return np.sum(vals, axis=0).astype(np.float32), np.sum(grads, axis=0).astype(np.float32)

    return data


# --- objectives for runtime.lbfgs --------------------------------------------------------------------------------
def feasible(p: np.ndarray) -> np.ndarray:
    """(b,) rows the graphs accept: finite and within ``MAX_ABS``. A line-search trial outside gets f = inf, so
    the search backtracks instead of the graph raising."""
    return np.isfinite(p).all(1) & (np.abs(p).max(1) <= np.float64(MAX_ABS))


class _Ambient:
    """p = x (b, 21*6); value and gradient from one ``log_prob_grad`` call; fixed entries get zero gradient."""

    def __init__(self, prior, data, lam, mask, rows):
        self.prior, self.data, self.lam, self.mask, self.rows = prior, data, np.float32(lam), mask, rows
        self.calls = 0

    def parts(self, rows, p):
        x = p.reshape(len(p), -1, 6)
        d, dg = (np.zeros(len(x), np.float32), np.zeros_like(x)) if self.data is None else self.data(x, self.rows[rows])
        if self.lam:
            self.calls += 1
            log_p, g = self.prior.log_prob_and_grad(x)
        else:
            log_p, g = np.zeros(len(x), np.float32), np.zeros_like(x)
        return d, -log_p, np.where(self.mask[rows][..., None], dg - self.lam * g, 0.0).reshape(len(p), -1)

    def value(self, rows, p):
        f = np.full(len(p), np.inf, np.float32)
        grad = np.zeros_like(p)
        ok = feasible(p)
        if ok.any():
            d, nlp, grad[ok] = self.parts(rows[ok], p[ok])
            f[ok] = d + self.lam * nlp
        return f, grad

    def gradient(self, rows, p, cache, sel):
        return cache[sel]


class _Latent:
    """p = z (b, D); value from ``latent_forward``, gradient at accepted points from ``latent_vjp``."""

    def __init__(self, prior, data, lam, rows):
        self.prior, self.data, self.lam, self.rows = prior, data, np.float32(lam), rows
        self.calls = 0

    def parts(self, rows, z):
        self.calls += 1
        x, log_p = self.prior.latent_forward(z)
        d, dg = (np.zeros(len(x), np.float32), np.zeros_like(x)) if self.data is None else self.data(x, self.rows[rows])
        return x, d, -log_p, dg

    def value(self, rows, p):
        """A trial whose pose-space data gradient leaves the range ``latent_vjp`` accepts (a data term through
        Gram-Schmidt at a nearly degenerate f(z)) is infeasible too: f = inf, so the line search backtracks."""
        f = np.full(len(p), np.inf, np.float32)
        dg = np.zeros((len(p), self.prior.num_joints, 6), np.float32)
        ok = feasible(p)
        if ok.any():
            _, d, nlp, g = self.parts(rows[ok], p[ok])
            good = feasible(g.reshape(len(g), -1)) & np.isfinite(d)
            ok[ok] = good
            dg[ok], f[ok] = g[good], (d + self.lam * nlp)[good]
        return f, dg

    def gradient(self, rows, p, cache, sel):
        self.calls += 1
        _, _, grad_log_p, vjp = self.prior.latent_vjp(p[sel], cache[sel])
        return (vjp - self.lam * grad_log_p).astype(np.float32)


def output_scale(prior: PosePrior, n: int = 4096, seed: int = 0) -> np.ndarray:
    """Per-coordinate spread (21, 6) of the flow's raw outputs f(z), z ~ N(0, I) (``n`` seeded samples): the
    preconditioner of ``encode``. Coordinates the model keeps constant (masked joints) get 1."""
    x = prior.sample(n, seed=seed, orthonormalize=False).astype(np.float64)
    s = x.std(0)
    return np.where(s > 1e-6, s, 1.0).astype(np.float32)


def encode(
    prior: PosePrior, poses, iters: int = 1000, tol: float = 1e-5, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Latents z (B, D) with f(z) = poses (B, 21, 6): the flow's inverse, solved as
    ``min_z sum |(f(z) - x) / s|^2 / 2`` with s = ``output_scale(prior)`` (the flow's outputs span 1e-2..1 per
    coordinate: unscaled, the problem is ill-conditioned), batched L-BFGS from z = 0, gradient
    (df/dz)^T ((f(z) - x) / s^2) by ``latent_vjp``, until ``max|f(z) - x| <= tol`` per pose (float32 reaches about
    1e-6; real poses take about 80 iterations). Returns (z, max|f(z) - x| per pose): a pose far outside the data
    may not converge within ``iters``; its z is the closest found (a latent fit then starts at f(z), not x).
    Models with the ``encode`` graph (the flow's exact inverse) answer in one call instead, except for poses so
    far off the data (e.g. raw starts of a completion) that their exact latent leaves the runtime's range
    (``|z| > MAX_ABS``, not finite): those get the iterative solve, which stays near z = 0."""
    x = _poses(poses, "poses", prior.num_joints)
    far = np.ones(len(x), bool)
    z = np.zeros((len(x), prior.dim), np.float32)
    if "encode.onnx" in prior.manifest.get("files", {}):
        try:
            z, _ = prior.encode(x)
            far = ~feasible(z)
        except ValueError:  # an output not finite in float32: solve every pose iteratively
            pass
    if far.any():
        z = np.where(far[:, None], 0.0, z).astype(np.float32)
        z[far] = _solve_inverse(prior, x[far], iters, tol, scale)
    fz, _ = prior.latent_forward(z)
    return z, np.abs(fz - x).max((1, 2))


def _solve_inverse(prior: PosePrior, x: np.ndarray, iters: int, tol: float, scale: np.ndarray | None) -> np.ndarray:
    """``encode``'s iterative solve of f(z) = x (its docstring), from z = 0."""
    inv_var = 1.0 / (output_scale(prior) if scale is None else scale) ** 2

    class Residual:
        def value(self, rows, z):
            fz, _ = prior.latent_forward(z)
            r = (fz - x[rows]).astype(np.float32)
            f = 0.5 * np.einsum("bjk,jk,bjk->b", r, inv_var, r)
            return np.where(np.abs(r).max((1, 2)) <= tol, 0.0, f).astype(np.float32), r  # 0: stop this pose

        def gradient(self, rows, z, r, sel):
            return prior.latent_vjp(z[sel], r[sel] * inv_var)[3].astype(np.float32)

    return minimize(Residual(), np.zeros((len(x), prior.dim), np.float32), iters, gtol=0.0, h0=1.0).p


# --- fitting -----------------------------------------------------------------------------------------------------
def has_latent_space(prior: PosePrior) -> bool:
    """Whether the model ships the ``latent_vjp`` graph that latent-space fitting needs."""
    return "latent_vjp.onnx" in prior.manifest.get("files", {})


def fit(
    prior: PosePrior,
    init,
    data: DataTerm | None = None,
    lam: float = 1.0,
    free=None,
    *,
    space: str = "ambient",
    init_z=None,
    fixed_weight: float = 5000.0,
    iters: int = 100,
    history: int = 10,
    h0: float | None = None,
    gtol: float = 1e-5,
    ftol: float = 0.0,
) -> FitResult:
    """Minimise ``data_b(x_b) + lam * (-log p(x_b))`` per pose from ``init`` (B, 21, 6) (see the module docstring).

    ``free``: joints optimised (None = all; names or a (21,)/(B, 21) boolean mask); the others keep their
    ``init`` values (ambient) or are anchored to them with ``fixed_weight`` (latent). ``init_z`` (B, D): the
    latent start (default ``encode(prior, init)``). L-BFGS options (``runtime.lbfgs.minimize``): ``iters`` per pose, ``history`` pairs, ``h0`` the
    first step's inverse curvature (e.g. ``1 / (2 w)`` for a data term ``w |x - y|^2``), ``gtol``, ``ftol``.
    """
    t0 = time.monotonic()
    if space not in SPACES:
        raise ValueError(f"space: must be one of {SPACES}, got {space!r}")
    x0 = _poses(init, "init", prior.num_joints)
    B = len(x0)
    lam = _number(lam, "lam")
    fixed_weight = _number(fixed_weight, "fixed_weight")
    if not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"iters: must be an integer >= 0, got {iters!r}")
    if not isinstance(history, (int, np.integer)) or history < 1:
        raise ValueError(f"history: must be an integer >= 1, got {history!r}")
    if h0 is not None:
        h0 = _number(h0, "h0", positive=True)
    if space == "latent" and not has_latent_space(prior):
        raise ModelError(
            f"{prior.path}: space='latent' needs the latent_vjp graph, which this model was exported "
            f"without; re-export it with `poseprior export`, or fit in space='ambient'"
        )
    mask = free_mask(free, B, prior.joint_names)
    terms = [] if data is None else [data]
    if space == "ambient" and lam == 0:
        terms.append(_gauge)
    if space == "latent" and not mask.all():
        terms.append(Anchor(x0, ~mask, fixed_weight))
    z0 = None
    if space == "latent":
        if init_z is None:
            z0 = encode(prior, x0)[0]
        else:
            z0 = np.asarray(init_z)
            if z0.dtype.kind != "f" or z0.shape != (B, prior.dim) or not np.isfinite(z0).all():
                raise ValueError(
                    f"init_z: expected finite floats of shape ({B}, {prior.dim}), got {z0.dtype} {z0.shape}"
                )
            z0 = z0.astype(np.float32)
    opts = dict(iters=int(iters), history=int(history), h0=h0, gtol=gtol, ftol=ftol)

    out = _solve(prior, space, x0, z0, np.arange(B), _total(terms), lam, mask, opts)
    raw, params, loss, d, nlp, its, conv, calls = out
    conv = conv & np.isfinite(loss)  # never "converged" to a non-finite loss
    poses = np.where(mask[..., None], rotations.orthonormalize_6d(raw), x0).astype(np.float32)
    return FitResult(poses, raw, params, loss, d, nlp, its, conv, int(calls), space, time.monotonic() - t0)


def _solve(prior, space, x0, z0, rows, data, lam, mask, opts):
    """(raw, params, loss, data, -log p, iterations, converged, graph calls) of one batch of problems."""
    m = mask[rows]
    if space == "ambient":
        obj = _Ambient(prior, data, lam, m, rows)
        res = minimize(obj, x0.reshape(len(x0), -1), **opts)
        x = res.p.reshape(x0.shape)
        params = x
        d = np.zeros(len(x), np.float32) if data is None else data(x, rows)[0]
        with np.errstate(invalid="ignore"):  # a non-finite loss stays NaN here (and is not "converged")
            nlp = (res.f - d) / np.float32(lam) if lam else -prior.log_prob(x)  # res.f = d + lam * (-log p)
    else:
        obj = _Latent(prior, data, lam, rows)
        res = minimize(obj, z0, **opts)
        params = res.p
        x, d, nlp, _ = obj.parts(np.arange(len(rows)), res.p)
    calls = obj.calls + (space == "latent" or not lam)  # + the final latent_forward / log_prob call
    return x.astype(np.float32), params, d + lam * nlp, d, nlp, res.iterations, res.converged, calls


# --- tasks -------------------------------------------------------------------------------------------------------
DENOISE_ITERS = {"ambient": 5, "latent": 10}


def denoise(
    prior: PosePrior, observed, weight: float = 1.0, lam: float = 1.0, *, space: str = "ambient", init=None, **options
) -> FitResult:
    """Poses near ``observed`` (B, 21, 6) and likely under the prior:
    ``min_x weight * |x - observed|^2 - lam * log p(x)`` per pose, from ``init`` (default: observed). With rotation noise
    R exp([eps]x), eps ~ N(0, sigma^2 I_3), each 6D coordinate moves with variance 2 sigma^2 / 3 (the two columns
    of R, averaged over axes; measured 0.665 sigma^2), so ``weight = 3 / (4 sigma^2)`` makes lam = 1 the MAP weight. In ambient space
    the first L-BFGS step uses the data term's exact inverse curvature, ``h0 = 1 / (2 weight)`` (a proximal step
    ``x + lam / (2 weight) * grad log p(x)`` from the observation). ``options``: ``fit``'s L-BFGS options;
    ``iters`` defaults to ``DENOISE_ITERS`` (ambient 5, latent 10): stopping early is nearly as accurate as running
    to convergence and costs a fraction (docs/fitting.md, "Throughput": ``runtime.tools.fitbench_rt`` measures it)."""
    obs = _poses(observed, "observed", prior.num_joints)
    weight = _number(weight, "weight", positive=True)
    options = {
        "h0": 1.0 / (2.0 * weight) if space == "ambient" else None,
        "iters": DENOISE_ITERS.get(space, 0),
        **options,
    }
    return fit(prior, obs if init is None else init, Denoise(obs, weight), lam, None, space=space, **options)


def complete(
    prior: PosePrior, poses, free, lam: float = 1.0, *, space: str = "ambient", fixed_weight: float = 5000.0, **options
) -> FitResult:
    """Most likely completion: the ``free`` joints (names or boolean mask) of ``poses`` (B, 21, 6) are optimised
    for ``-lam * log p`` from their given values, the other joints stay as given (ambient: not free; latent: held
    by the anchor ``fixed_weight * |6D(GS(x_j)) - v_j|^2``, traded against ``lam``). In ambient space ``lam`` only
    scales the objective."""
    return fit(prior, poses, None, lam, free, space=space, fixed_weight=fixed_weight, **options)


def ik(
    prior: PosePrior,
    targets,
    joints,
    offsets,
    sigma: float = 0.01,
    lam: float = 1.0,
    *,
    trans=None,
    init=None,
    space: str = "ambient",
    **options,
) -> FitResult:
    """Inverse kinematics: all 21 rotations from joint positions ``targets`` (B, E, 3) (metres) of the FK joints
    ``joints`` (E names from ``BODY`` or indices), ``min_x sum_e |FK(GS(x))_e - target_e|^2 / (2 sigma^2) -
    lam * log p(x)``; FK on the skeleton's rest ``offsets`` (22, 3) or (B, 22, 3), identity root orientation, the
    pelvis at ``trans`` (B, 3) (default origin). Start: ``init`` (default: the rest pose, identity rotations)."""
    term = Effectors(targets, joints, offsets, sigma, trans)
    if init is None:
        init = np.broadcast_to(rotations.IDENTITY_6D.astype(np.float32), (len(term.targets), prior.num_joints, 6))
    return fit(prior, init, term, lam, None, space=space, **options)
