"""The smoothing chain of ``repair`` (runtime.chain): the whitening is the Cholesky factor of the smoothness
Hessian, the chain objective's gradient is its derivative, the bridge joins the neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import PosePrior, rotations
from runtime.chain import ChainObjective, Whitening, bridge, pair_weight
from runtime.takes import read_take


@pytest.fixture(scope="module")
def prior() -> PosePrior:
    return PosePrior.load()


@pytest.fixture(scope="module")
def x(shared_data) -> np.ndarray:
    return read_take(shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh").body_6d


def dense_hessian(free: np.ndarray, w: float, j: int) -> np.ndarray:
    """2 w L + (nothing) of joint j's free entries, built from the pair sum directly (module docstring)."""
    T = len(free)
    H = np.zeros((T, T))
    W = pair_weight(free)[:, j]
    for t in range(1, T):
        if W[t - 1]:
            e = np.zeros(T)
            e[t], e[t - 1] = 1.0, -1.0
            e[~free[:, j]] = 0.0  # held entries are constants
            H += 2 * w * np.outer(e, e)
    return H


def test_the_whitening_factors_the_smoothness_hessian_and_its_solves_invert_it():
    rng = np.random.default_rng(0)
    free = np.zeros((12, 21), bool)
    free[1:5, 3] = True  # a run with both neighbours held
    free[0:3, 7] = True  # a run at the chain's start: one held neighbour
    free[6:12, 7] = True  # ... and one at its end
    free[:, 9] = True  # no held neighbour at all: mu keeps M positive definite
    w, mu = 900.0, 100.0
    white = Whitening(free, w, mu)
    for j in (3, 7, 9):
        f = free[:, j]
        M = dense_hessian(free, w, j)[np.ix_(f, f)] + mu * np.eye(f.sum())
        R = np.diag(white.d[f, j].astype(np.float64)) + np.diag(white.e[f, j][1:].astype(np.float64), 1)
        np.testing.assert_allclose(R.T @ R, M, rtol=1e-5, atol=1e-3)
    u = rng.standard_normal((12, 21, 6)).astype(np.float32)
    u[~free] = 0.0
    y = white.solve_r(u)
    g = white.solve_rt(u)
    for j in (3, 7, 9):
        f = free[:, j]
        R = np.diag(white.d[f, j].astype(np.float64)) + np.diag(white.e[f, j][1:].astype(np.float64), 1)
        np.testing.assert_allclose(R @ y[f, j], u[f, j], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(R.T @ g[f, j], u[f, j], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y[~free], 0.0)  # held entries stay where they are


def test_the_chain_objective_gradient_is_its_derivative(prior, x):
    free = np.zeros((10, 21), bool)
    free[1:4, [3, 16]] = True  # two runs with their held neighbours, end to end
    free[6:9, 5] = True
    obj = ChainObjective(prior, x[100:110], free, 1.0, 900.0)
    rng = np.random.default_rng(1)
    u = (0.3 * rng.standard_normal((1, obj.T * 21 * 6))).astype(np.float32)
    d = rng.standard_normal(u.shape).astype(np.float32)
    d /= np.linalg.norm(d)
    f, cache = obj.value(np.arange(1), u)
    g = obj.gradient(np.arange(1), u, cache, np.arange(1))[0]
    h = 1e-2
    fd = (obj.value(np.arange(1), u + h * d)[0][0] - obj.value(np.arange(1), u - h * d)[0][0]) / (2 * h)
    assert abs(fd - g @ d[0]) <= 0.01 * abs(g @ d[0]) + 0.05, (fd, g @ d[0])
    xu = obj.poses(u[0])  # the value is the module docstring's L at x(u)
    rows = free.any(1)
    W = (free[1:] | free[:-1])[..., None]
    L = -prior.log_prob(xu[rows]).sum() + 900.0 * ((W * np.diff(xu, axis=0)) ** 2).sum()
    assert abs(f[0] - L) <= 1e-4 * abs(L) + 1e-2, (f[0], L)
    held = ~free
    np.testing.assert_array_equal(obj.poses(u[0])[held], x[100:110][held])  # held entries never move
    np.testing.assert_array_equal(obj.poses(np.zeros_like(u[0])), x[100:110])  # u = 0 is the start


def test_the_bridge_runs_on_the_geodesic_between_the_neighbours(x):
    a, b, js = 50, 56, [4, 17]
    br = bridge(x, a, b, js, [0])
    R = rotations.sixd_to_matrix(np.concatenate([x[a - 1 : a, js], br, x[b : b + 1, js]]).astype(np.float64))
    steps = rotations.geodesic_deg(R[1:], R[:-1])  # (7, 2): equal steps from frame a-1 to frame b
    np.testing.assert_allclose(steps, np.broadcast_to(steps.mean(0), steps.shape), atol=1e-3)
    assert bridge(x, 0, 3, js, [0]).tolist() == np.broadcast_to(x[3, js], (3, 2, 6)).tolist()  # take start: hold
