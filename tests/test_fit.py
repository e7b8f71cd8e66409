"""Fitting with the prior: torch API (train/fit.py), torch-free runtime (runtime/fit.py), benchmark plumbing."""

import numpy as np
import pytest
import torch

from runtime import PosePrior, rotations
from runtime import fit as rfit
from runtime.rotations import JOINT_NAMES as JOINTS
from runtime.rotations import geodesic_deg
from train import fit as F
from train.data import load_npz
from train.rotations import axis_angle_to_matrix, gram_schmidt, matrix_to_6d, matrix_to_axis_angle


@pytest.fixture(scope="module")
def flow(tiny_model):
    from export import load_flow

    return load_flow(tiny_model).requires_grad_(False)


@pytest.fixture(scope="module")
def prior(tiny_model):
    return PosePrior.load(tiny_model, providers=["CPUExecutionProvider"], intra_op_num_threads=1)


@pytest.fixture(scope="module")
def val_poses(shared_data):
    d = load_npz(shared_data / "cmu_pose" / "val.npz")
    return d.to_6d()[::89][:8]  # 8 real poses of the validation subject, (8, 21, 6)


def random_rotations(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return matrix_to_6d(axis_angle_to_matrix(torch.randn(n, 21, 3, generator=gen, dtype=torch.float64) * 0.5)).float()


def test_no_prior_recovers_the_target_of_a_pure_data_term():
    target = random_rotations(6, seed=1)

    def data(x, idx):  # |GS(x) - target|^2 in 6D: minimised exactly at the target rotations
        return ((matrix_to_6d(gram_schmidt(x)) - target[idx]) ** 2).sum((1, 2))

    start = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(6, 21, 1)
    r = F.fit(F.NoPrior(), start, data, iters=100)
    err = geodesic_deg(gram_schmidt(r.poses.double()).numpy(), gram_schmidt(target.double()).numpy())
    assert err.max() < 0.05, err.max()
    assert r.loss.shape == (6,) and torch.all(r.prior == 0)


def test_effector_term_recovers_joint_positions(shared_data):
    """IK with every joint observed and no prior: the positions come back (to 0.5 mm)."""
    d = load_npz(shared_data / "cmu_pose" / "val.npz")
    gt = d.to_6d()[:4]
    off = torch.from_numpy(d.offsets).float()
    from train.kinematics import forward_kinematics

    targets = forward_kinematics(gram_schmidt(gt), off)
    data = F.Effectors(targets, range(22), off, sigma=0.01)
    start = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(4, 21, 1)
    r = F.fit(F.NoPrior(), start, data, iters=150)
    p = forward_kinematics(gram_schmidt(r.poses), off)
    assert (p - targets).norm(dim=-1).max() < 5e-4


def test_ambient_flow_fitting_lowers_minus_log_p(flow, val_poses):
    x0 = F.perturb(val_poses, 15.0, seed=3)
    r = F.fit(F.FlowAmbient(flow), x0, None, iters=20)
    with torch.no_grad():
        before, after = -flow.log_prob(x0), -flow.log_prob(r.raw)
    assert torch.allclose(after, r.prior, atol=1e-3)
    assert torch.all(after < before - 1.0), (before, after)


def test_latent_jacobian_loss_is_minus_log_p_of_the_decoded_pose(flow, prior, val_poses):
    lat = F.FlowLatent(flow, jacobian=True)
    z = lat.encode(val_poses)
    x, pen = lat.decode(z)
    assert (x - val_poses).abs().max() < 1e-3  # f(f^-1(x0)) = x0: latent fitting starts at x0
    with torch.no_grad():
        ref = -flow.log_prob(x)
    assert torch.allclose(pen, ref, rtol=1e-4, atol=1e-2)  # float32 inverse vs forward pass
    assert np.allclose(pen.numpy(), -prior.log_prob(x.numpy()), rtol=1e-4, atol=1e-2)  # the exported graph
    _, pen_z = F.FlowLatent(flow, jacobian=False).decode(z)
    assert torch.allclose(pen_z, 0.5 * (z * z).sum(-1))
    assert not torch.allclose(pen_z, pen, atol=1.0)  # the Jacobian term is not zero


def test_log_map_matches_and_has_finite_gradients_on_hinges():
    gen = torch.Generator().manual_seed(0)
    aa = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    aa = aa * (2.5 / aa.norm(dim=-1, keepdim=True)).clamp(max=1.0)
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(F.log_map(R), matrix_to_axis_angle(R), atol=1e-9)
    hinge = axis_angle_to_matrix(torch.tensor([[0.7, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    hinge.requires_grad_(True)
    (g,) = torch.autograd.grad(F.log_map(hinge).sum(), hinge)
    assert torch.isfinite(g).all()


def test_fitting_is_deterministic_with_a_seed(flow, val_poses):
    a = F.perturb(val_poses, 20.0, seed=5)
    assert torch.equal(a, F.perturb(val_poses, 20.0, seed=5))
    assert not torch.equal(a, F.perturb(val_poses, 20.0, seed=6))
    runs = [
        F.fit(F.FlowLatent(flow), F.perturb(val_poses, 20.0, seed=5), F.Denoise(val_poses, 8.0), iters=10)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].poses, runs[1].poses) and torch.equal(runs[0].loss, runs[1].loss)


# --- torch-free runtime vs the torch path -------------------------------------------------------------------------
# Same objective, same start, the same algorithm both sides (per-pose batched L-BFGS with Armijo backtracking:
# train.fit.batched_lbfgs in torch, runtime.lbfgs.minimize in numpy float32 on onnxruntime's graphs), so the
# answers differ only by float32 rounding of the two implementations, which the very peaked test model amplifies
# along its narrow hinge valleys. Problems are well posed: denoising a clean capture with a tight data term
# (sigma = 0.3 deg) and completing an arm from 2-degree starts. Tolerances: objective 1 % + 0.05; rotations
# (after Gram-Schmidt) median < 0.1 deg and max < 3 deg per joint.
OBJ_ATOL, OBJ_RTOL, ROTATION_ATOL_DEG = 0.05, 1e-2, 3.0


def compare(torch_res, rt_res):
    t_loss = torch_res.loss.double().numpy()
    assert np.allclose(rt_res.loss, t_loss, rtol=OBJ_RTOL, atol=OBJ_ATOL), np.c_[rt_res.loss, t_loss]
    # compared as rotations (what a user takes from a fit): along the 6D scale/shear directions the augmented
    # density is nearly flat, so two optimisers may stop at different raw 6D of the same rotation
    angle = geodesic_deg(rotations.gram_schmidt(rt_res.poses), rotations.gram_schmidt(torch_res.poses.numpy()))
    assert np.median(angle) < 0.1 and angle.max() < ROTATION_ATOL_DEG, np.sort(angle.ravel())[-5:]


def test_runtime_denoising_matches_torch(flow, prior, val_poses):
    w = 1.0 / (2.0 * np.radians(0.3) ** 2)
    t = F.fit(F.FlowAmbient(flow), val_poses, F.Denoise(val_poses, w), 1.0, iters=200)
    r = rfit.denoise(prior, val_poses.numpy(), weight=w, lam=1.0, iters=200)
    compare(t, r)
    assert np.all(r.loss < -prior.log_prob(val_poses.numpy()))  # better than the start (data term 0 there)
    assert np.allclose(r.neg_log_p, -prior.log_prob(r.raw), rtol=1e-5, atol=1e-3)  # reported terms are true


def test_runtime_completion_matches_torch(flow, prior, val_poses):
    names = ("left_collar", "left_shoulder", "left_elbow", "left_wrist")
    mask = torch.tensor([n in names for n in prior.joint_names])
    start = F.perturb(val_poses, 2.0, seed=12, joints=mask)
    t = F.fit(F.FlowAmbient(flow), start, None, 1.0, fixed=(~mask, val_poses), iters=1000)
    r = rfit.complete(prior, start.numpy(), list(names), iters=1000)
    compare(t, r)
    assert np.array_equal(r.poses[:, ~mask.numpy()], start.numpy()[:, ~mask.numpy()])  # visible joints untouched
    assert np.all(r.neg_log_p < -prior.log_prob(start.numpy()))


def test_runtime_fit_is_deterministic(prior, val_poses):
    start = F.perturb(val_poses, 5.0, seed=13).numpy()
    a, b = (rfit.denoise(prior, start, weight=50.0, iters=20) for _ in range(2))
    assert np.array_equal(a.poses, b.poses) and np.array_equal(a.loss, b.loss)


def test_runtime_denoising_reduces_the_error_of_real_poses(prior, shared_data):
    """10 deg RMS rotation noise on 64 real test poses: the default denoise (5 iterations) lowers the geodesic
    error to the ground truth; every pose's objective goes down."""
    gt = load_npz(shared_data / "cmu_pose" / "test.npz").to_6d()[::40][:64]
    sigma = 10.0 / np.sqrt(3.0)
    noisy = F.perturb(gt, sigma, seed=3).numpy()
    w = 1.0 / (2.0 * np.radians(sigma) ** 2)
    r = rfit.denoise(prior, noisy, weight=w)
    R = rotations.gram_schmidt(gt.double().numpy())
    before = geodesic_deg(rotations.gram_schmidt(noisy.astype(np.float64)), R).mean()
    after = geodesic_deg(rotations.gram_schmidt(r.poses.astype(np.float64)), R).mean()
    assert after < 0.95 * before, (before, after)
    assert np.all(r.loss < -prior.log_prob(noisy)) and r.iterations.max() <= rfit.DENOISE_ITERS["ambient"]


def test_runtime_free_mask_checks(prior):
    with pytest.raises(ValueError, match="unknown joint names"):
        rfit.free_mask(["left_hand"], 2)
    assert rfit.free_mask(None, 3).shape == (3, 21)
    assert rfit.free_mask(["head"], 2)[:, 14].all() and rfit.free_mask(["head"], 2).sum() == 2


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p, x: rfit.fit(p, x, space="tangent"), "space"),
        (lambda p, x: rfit.fit(p, x[:, :20]), "init: shape"),
        (lambda p, x: rfit.fit(p, np.where(np.arange(6) == 2, np.nan, x)), "init: contains NaN"),
        (lambda p, x: rfit.fit(p, x.astype(np.int64)), "init: must be a floating-point"),
        (lambda p, x: rfit.fit(p, x, lam=-1.0), "lam"),
        (lambda p, x: rfit.fit(p, x, iters=-3), "iters"),
        (lambda p, x: rfit.fit(p, x, space="latent", init_z=np.zeros((len(x), 3), np.float32)), "init_z"),
        (lambda p, x: rfit.denoise(p, x, weight=0.0), "weight"),
        (lambda p, x: rfit.ik(p, np.zeros((len(x), 2, 3)), ["head"], np.zeros((22, 3))), "targets: shape"),
        (lambda p, x: rfit.ik(p, np.zeros((len(x), 1, 3)), ["hand"], np.zeros((22, 3))), "joints: unknown"),
        (lambda p, x: rfit.ik(p, np.zeros((len(x), 1, 3)), ["head"], np.zeros((24, 3))), "offsets: shape"),
        (lambda p, x: rfit.ik(p, np.zeros((len(x), 1, 3)), ["head"], np.zeros((22, 3)), sigma=0), "sigma"),
    ],
)
def test_runtime_fit_rejects_bad_arguments(prior, val_poses, call, match):
    with pytest.raises(ValueError, match=match):
        call(prior, val_poses.numpy())


# --- latent space: the runtime (torch not importable) vs train.fit ---------------------------------------------------
RUNTIME_LATENT = """
import sys
sys.modules["torch"] = None                        # `import torch` now raises ImportError, in every module
import numpy as np
from runtime import PosePrior
from runtime import fit as rfit
model, inputs, out = sys.argv[1:4]
a = np.load(inputs)
prior = PosePrior.load(model, providers=["CPUExecutionProvider"], intra_op_num_threads=1)
free = a["mask"]
given = rfit.complete(prior, a["start"], free, lam=float(a["lam"]), space="latent", init_z=a["z0"], iters=int(a["iters"]))
encoded = rfit.complete(prior, a["start"], free, lam=float(a["lam"]), space="latent", iters=int(a["iters"]))
np.savez(out, poses=given.poses, loss=given.loss, enc_poses=encoded.poses, enc_loss=encoded.loss,
         z_enc=rfit.encode(prior, a["start"])[0], torch_loaded=np.array(sys.modules["torch"] is not None))
"""
# Latent completion of an arm (lam = 10 against the anchor's fixed_weight = 5000, 300 iterations, 2-degree starts):
# same objective and algorithm both sides; the runtime gets torch's start z0 = f^-1(x0) (init_z) and, separately,
# its own ``encode`` (the inverse solved with latent_vjp). Tolerances: objective 1 % + 0.05 nats; rotations after
# Gram-Schmidt median < 0.1 deg, max < 3 deg (as the ambient comparison); encode vs the exact inverse 1e-3.


def test_runtime_latent_completion_matches_torch_without_torch(tiny_model, flow, val_poses, tmp_path):
    import subprocess
    import sys

    names = ("left_collar", "left_shoulder", "left_elbow", "left_wrist")
    mask = torch.tensor([n in names for n in JOINTS])
    start = F.perturb(val_poses, 2.0, seed=12, joints=mask)
    lam, iters = 10.0, 300
    # both sides on one thread (the runtime's session below is): 300 L-BFGS steps on this non-convex objective carry
    # the rounding of a different thread count far along a flat valley (2 torch threads: one joint 12 deg apart at
    # the same loss), which is not the difference between the two implementations that this test is about
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = F.fit(F.FlowLatent(flow), start, None, lam, fixed=(~mask, val_poses), fixed_weight=5000.0, iters=iters)
        with torch.no_grad():
            z0 = flow.inverse(start)[0]
    finally:
        torch.set_num_threads(threads)
    np.savez(tmp_path / "in.npz", start=start.numpy(), mask=mask.numpy(), z0=z0.numpy(), lam=lam, iters=iters)
    script = tmp_path / "rt.py"
    script.write_text(RUNTIME_LATENT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = np.load(tmp_path / "out.npz")
    assert not r["torch_loaded"]
    assert np.abs(r["z_enc"] - z0.numpy()).max() < 1e-3
    for poses, loss in ((r["poses"], r["loss"]), (r["enc_poses"], r["enc_loss"])):
        assert np.allclose(loss, t.loss.double().numpy(), rtol=OBJ_RTOL, atol=OBJ_ATOL), np.c_[loss, t.loss.numpy()]
        angle = geodesic_deg(rotations.gram_schmidt(poses), rotations.gram_schmidt(t.poses.numpy()))
        assert np.median(angle) < 0.1 and angle.max() < ROTATION_ATOL_DEG, np.sort(angle.ravel())[-5:]
    assert np.array_equal(r["poses"][:, ~mask.numpy()], start.numpy()[:, ~mask.numpy()])


def test_runtime_latent_denoising_lowers_its_objective(prior, val_poses):
    """Latent denoising from the encoded noisy pose: every pose's objective goes down; the reported -log p is the
    flow's density of the decoded pose."""
    noisy = F.perturb(val_poses, 5.0, seed=21).numpy()
    w = 1.0 / (2.0 * np.radians(5.0) ** 2)
    r = rfit.denoise(prior, noisy, weight=w, space="latent", iters=20)
    assert r.params.shape == (len(noisy), prior.dim) and r.space == "latent"
    assert np.all(r.loss < -prior.log_prob(noisy) - 1e-3)
    assert np.allclose(r.neg_log_p, -prior.log_prob(r.raw), rtol=1e-3, atol=0.05)


# --- the batched L-BFGS: per-pose convergence ------------------------------------------------------------------------
class Quadratics:
    """f_b(p) = sum_i c_bi (p_i - 1)^2 / 2 + (p_0 p_1)^2 / 4, conditioning c_b per problem; counts evaluated rows."""

    def __init__(self, c):
        self.c, self.rows = c, []

    def value(self, rows, p):
        self.rows.append(len(rows))
        q = p - 1.0
        f = 0.5 * (self.c[rows] * q * q).sum(1) + 0.25 * (p[:, 0] * p[:, 1]) ** 2
        g = self.c[rows] * q
        g[:, 0] += 0.5 * p[:, 0] * p[:, 1] ** 2
        g[:, 1] += 0.5 * p[:, 1] * p[:, 0] ** 2
        return f, g

    def gradient(self, rows, p, cache, sel):
        return cache[sel]


def test_batched_lbfgs_solves_each_problem_as_if_alone():
    from runtime.lbfgs import minimize

    rng = np.random.default_rng(0)
    c = np.exp(rng.uniform(-3, 3, size=(6, 8)))
    c[0] = 1.0  # an easy problem: converges in a few iterations
    p0 = rng.standard_normal((6, 8))
    obj = Quadratics(c)
    res = minimize(obj, p0, iters=200, gtol=1e-9)
    for b in range(6):
        alone = minimize(Quadratics(c[b : b + 1]), p0[b : b + 1], iters=200, gtol=1e-9)
        assert np.allclose(alone.p[0], res.p[b], rtol=0, atol=1e-12) and alone.iterations[0] == res.iterations[b]
    assert res.converged.all() and np.abs(res.g).max() <= 1e-7  # at gtol, or at float64 resolution
    assert res.iterations[0] < res.iterations.max()  # per-pose stopping ...
    assert min(obj.rows) < 6  # ... and later calls see only the active rows


def quadratics_torch(c):
    """``Quadratics``' f_b in torch, for ``train.fit.batched_lbfgs`` (gradient by autograd)."""
    c = torch.from_numpy(c)

    def fn(rows, p):
        q = p - 1.0
        return 0.5 * (c[rows] * q * q).sum(1) + 0.25 * (p[:, 0] * p[:, 1]) ** 2

    return fn


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_fitting_runs_the_runtime_lbfgs_iterate_by_iterate(dtype):
    """train.fit.batched_lbfgs (torch objective, autograd) and runtime.lbfgs.minimize (numpy objective, analytic
    gradient): the same iterates after every iteration count, problem by problem, to float tolerance."""
    from runtime.lbfgs import minimize

    rng = np.random.default_rng(1)
    c = np.exp(rng.uniform(-3, 3, size=(5, 6)))
    p0 = rng.standard_normal((5, 6)).astype(dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for iters in (1, 2, 3, 5, 8, 13, 40):
        ref = minimize(Quadratics(c.astype(dtype)), p0, iters=iters)
        got = F.batched_lbfgs(quadratics_torch(c.astype(dtype)), torch.from_numpy(p0), iters)
        assert got.dtype == torch.from_numpy(p0).dtype
        np.testing.assert_allclose(got.numpy(), ref.p, rtol=tol, atol=tol, err_msg=f"after {iters} iterations")


# --- gradients of the data terms (brute force) and numpy forward kinematics ------------------------------------------
@pytest.fixture(scope="module")
def smpl_offsets(shared_data):
    """SMPL's neutral rest offsets of the 22 body joints (read from ../shared, never copied)."""
    return np.load(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")["offsets"][:22].astype(np.float64)


def finite_difference(fn, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (fn(x + e) - fn(x - e)).sum() / (2 * h)
    return g


def test_gram_schmidt_vjp_matches_finite_differences(val_poses):
    rng = np.random.default_rng(1)
    x = val_poses.double().numpy()[:2] * rng.uniform(0.5, 2.0, size=(2, 21, 1)) + 0.1 * rng.standard_normal((2, 21, 6))
    G = rng.standard_normal((2, 21, 3, 3))
    g = rotations.gram_schmidt_vjp(x, G)
    fd = finite_difference(lambda v: np.einsum("bjkl,bjkl->b", rotations.gram_schmidt(v), G), x)
    assert np.abs(g - fd).max() < 1e-6 * np.abs(fd).max()


def test_effector_gradient_matches_finite_differences_and_torch(val_poses, smpl_offsets):
    from runtime.kinematics import forward_kinematics
    from train.kinematics import forward_kinematics as torch_fk

    x = F.perturb(val_poses[:2], 10.0, seed=2).double().numpy()
    joints = ["pelvis", "head", "left_wrist", "right_ankle"]
    targets = forward_kinematics(rotations.gram_schmidt(val_poses[:2].double().numpy()), smpl_offsets)[
        :, [0, 15, 20, 8]
    ]
    term = rfit.Effectors(targets, joints, smpl_offsets, sigma=0.05)
    term.offsets, term.targets, term.inv_var = term.offsets.astype(np.float64), targets, 1.0 / 0.05**2  # float64
    value, g = term(x, np.arange(2))
    fd = finite_difference(lambda v: term(v, np.arange(2))[0], x)
    assert np.abs(g - fd).max() < 1e-5 * np.abs(fd).max()
    xt = torch.from_numpy(x).requires_grad_(True)
    P = torch_fk(gram_schmidt(xt), torch.from_numpy(smpl_offsets))[:, [0, 15, 20, 8]]
    ((P - torch.from_numpy(targets)) ** 2).sum().div(2 * 0.05**2).backward()
    assert np.allclose(g, xt.grad.numpy(), atol=1e-9) and np.allclose(value.sum(), 0.5 / 0.05**2 * 0 + value.sum())


def test_runtime_ik_recovers_every_joint_position(prior, val_poses, smpl_offsets):
    """No prior (lam = 0), all 22 joints observed on the SMPL rest skeleton: the positions come back (1 mm)."""
    from runtime.kinematics import forward_kinematics

    targets = forward_kinematics(rotations.gram_schmidt(val_poses[:4].double().numpy()), smpl_offsets)
    r = rfit.ik(prior, targets, list(rfit.BODY), smpl_offsets, lam=0.0, iters=300)
    P = forward_kinematics(rotations.gram_schmidt(r.poses.astype(np.float64)), smpl_offsets)
    assert np.linalg.norm(P - targets, axis=-1).max() < 1e-3


def test_runtime_ik_matches_torch(flow, prior, val_poses, smpl_offsets):
    """Sparse effectors (pelvis, head, wrists, ankles) with the prior, from the rest pose: same objective both sides."""
    from runtime.kinematics import forward_kinematics

    eff = [0, 15, 20, 21, 7, 8]
    gt = val_poses[:4]
    targets = forward_kinematics(rotations.gram_schmidt(gt.double().numpy()), smpl_offsets)[:, eff]
    start = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(4, 21, 1)
    t = F.fit(
        F.FlowAmbient(flow),
        start,
        F.Effectors(torch.from_numpy(targets).float(), eff, torch.from_numpy(smpl_offsets).float(), 0.01),
        1.0,
        iters=300,
    )
    r = rfit.ik(prior, targets, eff, smpl_offsets, sigma=0.01, lam=1.0, iters=300)
    assert np.allclose(r.loss, t.loss.double().numpy(), rtol=2e-2, atol=0.5), np.c_[r.loss, t.loss.numpy()]


# --- benchmark plumbing -----------------------------------------------------------------------------------------------
def test_fitbench_masks_and_descendants():
    from train.fitbench import BODY, MASKS, descendants

    assert [BODY[k] for k in descendants(MASKS["left_leg"])] == ["left_knee", "left_ankle", "left_foot"]
    assert [BODY[k] for k in descendants(MASKS["left_arm"])] == ["left_shoulder", "left_elbow", "left_wrist"]
    assert len(descendants(MASKS["trunk"])) == 12  # everything above the pelvis except hips and legs


def test_fitbench_runs_end_to_end(tiny_model, shared_data, baseline_runs, tmp_path):
    from train.fitbench import BenchConfig, run

    cfg = BenchConfig(
        n=3,
        n_val=3,
        hypotheses=2,
        lam_grid=(0.3, 1.0),
        lam_grid_completion=(10.0, 100.0),
        iters={"completion": 3, "ik": 3, "denoise": 3},
    )
    report = run(
        tiny_model,
        shared_data / "cmu_pose" / "test.npz",
        tmp_path,
        cfg,
        vposer_path=baseline_runs[0],
        gmm_path=baseline_runs[1],
        log=lambda *_: None,
    )
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.json", "report.md", "fits.png"}
    assert set(report["results"]) == {
        "none",
        "gmm",
        "vposer",
        "flow_ambient",
        "flow_latent",
        "flow_latent_z2",
        "runtime_ambient",
        "runtime_latent",
    }  # the runtime rows, torch-free fits
    for name in ("runtime_ambient", "runtime_latent"):  # real fits: IK moved away from its start, the mean pose
        assert report["results"][name]["ik"]["mpjpe_mm"] < report["reference"]["ik"]["mpjpe_mm"]
    assert report["lam"]["flow_latent"]["completion"] in (10.0, 100.0)
    assert report["val_grid"]["flow_ambient"]["completion"] == {}  # ambient completion: nothing to tune


@pytest.mark.parametrize("space", ["ambient", "latent"])
def test_a_trial_point_beyond_the_runtime_range_is_infeasible_not_an_error(prior, val_poses, space):
    """A line-search trial with |p| > MAX_ABS (a fit-bench completion stepped to 1e7) gets f = inf, so L-BFGS
    backtracks; the graphs would refuse such an input with ValueError."""
    from runtime.fit import _Ambient, _Latent
    from runtime.prior import MAX_ABS

    rows = np.arange(2)
    if space == "ambient":
        obj = _Ambient(prior, None, 1.0, np.ones((2, 21), bool), rows)
        p = np.asarray(val_poses[:2], np.float32).reshape(2, -1).copy()
    else:
        obj = _Latent(prior, None, 1.0, rows)
        p = np.zeros((2, prior.dim), np.float32)
    p[1, 0] = 10 * MAX_ABS
    f, _ = obj.value(rows, p)
    assert np.isfinite(f[0]) and f[1] == np.inf


def test_a_latent_trial_whose_data_gradient_leaves_the_range_is_infeasible(prior, val_poses):
    """A data term through Gram-Schmidt at a nearly degenerate f(z) can have a pose-space gradient beyond MAX_ABS
    (latent completion of real validation poses, 3 iterations: 1.5e6); ``latent_vjp`` would refuse it, so the trial
    is infeasible (f = inf) and the fit goes on instead of raising."""
    from runtime.fit import _Latent
    from runtime.prior import MAX_ABS

    rows = np.arange(3)

    def steep(x, rows):  # finite value, gradient 10 * MAX_ABS on row 1 only
        g = np.zeros_like(x)
        g[rows == 1] = 10 * MAX_ABS
        return np.ones(len(x), np.float32), g

    obj = _Latent(prior, steep, 1.0, rows)
    f, dg = obj.value(rows, np.zeros((3, prior.dim), np.float32))
    assert np.isfinite(f[[0, 2]]).all() and f[1] == np.inf
    obj.gradient(rows, np.zeros((3, prior.dim), np.float32), dg, np.array([0, 2]))  # the graph accepts the rest
    r = rfit.fit(prior, val_poses[:3], steep, space="latent", iters=5)  # a whole fit does not raise
    assert np.isfinite(r.loss[[0, 2]]).all()
