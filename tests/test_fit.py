"""Fitting with the prior: torch API (train/fit.py), torch-free runtime (runtime/fit.py), benchmark plumbing."""
import numpy as np

import pytest
import torch

from runtime import PosePrior, rotations
from runtime import fit as rfit
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
    return d.to_6d()[::89][:8]                 # 8 real poses of the validation subject, (8, 21, 6)


def random_rotations(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return matrix_to_6d(axis_angle_to_matrix(torch.randn(n, 21, 3, generator=gen, dtype=torch.float64) * 0.5)).float()


@pytest.mark.parametrize("optimizer,iters,tol_deg", [("batched-lbfgs", 100, 0.05), ("lbfgs", 100, 0.05),
                                                     ("adam", 400, 0.5)])
def test_no_prior_recovers_the_target_of_a_pure_data_term(optimizer, iters, tol_deg):
    target = random_rotations(6, seed=1)

    def data(x, idx):   # |GS(x) - target|^2 in 6D: minimised exactly at the target rotations
        return ((matrix_to_6d(gram_schmidt(x)) - target[idx]) ** 2).sum((1, 2))

    start = torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(6, 21, 1)
    r = F.fit(F.NoPrior(), start, data, optimizer=optimizer, iters=iters, lr=0.02)
    err = geodesic_deg(gram_schmidt(r.poses.double()).numpy(), gram_schmidt(target.double()).numpy())
    assert err.max() < tol_deg, err.max()
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
    assert (x - val_poses).abs().max() < 1e-3                 # f(f^-1(x0)) = x0: latent fitting starts at x0
    with torch.no_grad():
        ref = -flow.log_prob(x)
    assert torch.allclose(pen, ref, rtol=1e-4, atol=1e-2)     # float32 inverse vs forward pass
    assert np.allclose(pen.numpy(), -prior.log_prob(x.numpy()), rtol=1e-4, atol=1e-2)   # the exported graph
    _, pen_z = F.FlowLatent(flow, jacobian=False).decode(z)
    assert torch.allclose(pen_z, 0.5 * (z * z).sum(-1))
    assert not torch.allclose(pen_z, pen, atol=1.0)            # the Jacobian term is not zero


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
    runs = [F.fit(F.FlowLatent(flow), F.perturb(val_poses, 20.0, seed=5), F.Denoise(val_poses, 8.0), iters=10)
            for _ in range(2)]
    assert torch.equal(runs[0].poses, runs[1].poses) and torch.equal(runs[0].loss, runs[1].loss)


# --- torch-free runtime vs the torch path -------------------------------------------------------------------------
# Same objective, same start, L-BFGS both sides (torch: per-pose batched L-BFGS with Armijo backtracking; runtime:
# scipy L-BFGS-B on all poses as one vector), 200 iterations. The tiny test model (8 epochs, 4 couplings) has very
# narrow valleys along CMU's hinge joints (a model dequantising only the linear hinges was singular along the 2-DoF
# joints, log p ~ -1e9 two degrees off the data): from noisy starts the two optimisers stop in different places of
# such valleys, which is a property of that model, not of the code (with the shipped model, 500 test poses denoised jointly by the runtime reach the
# torch path's mean geodesic error, 9.64 vs 9.64 deg at 10 deg noise, 14.68 vs 14.52 at 20). So the problems here
# are well posed: denoising a clean capture with a tight data term (sigma = 0.3 deg) and completing an arm from
# 2-degree starts (1000 iterations). Tolerances: objective 1 % + 0.05; rotations (after Gram-Schmidt) median
# < 0.1 deg and max < 3 deg per joint. Measured: the 300-step test model 1.7 deg worst joint, CI's 8-epoch tiny
# model reached the same objective (within 0.6 nats) with one joint further apart at a 5-degree start.
OBJ_ATOL, OBJ_RTOL, ROTATION_ATOL_DEG = 0.05, 1e-2, 3.0


def compare(torch_res, rt_res):
    t_loss = torch_res.loss.double().numpy()
    assert np.allclose(rt_res.loss, t_loss, rtol=OBJ_RTOL, atol=OBJ_ATOL), np.c_[rt_res.loss, t_loss]
    # compared as rotations (what a user takes from a fit): along the 6D scale/shear directions the augmented
    # density is nearly flat, so two optimisers may stop at different raw 6D of the same rotation
    # (scipy's float64 L-BFGS on onnxruntime's float32 gradient vs torch's L-BFGS on a very peaked density)
    angle = geodesic_deg(rotations.gram_schmidt(rt_res.poses), rotations.gram_schmidt(torch_res.poses.numpy()))
    assert np.median(angle) < 0.1 and angle.max() < ROTATION_ATOL_DEG, np.sort(angle.ravel())[-5:]


def test_runtime_denoising_matches_torch(flow, prior, val_poses):
    w = 1.0 / (2.0 * np.radians(0.3) ** 2)
    t = F.fit(F.FlowAmbient(flow), val_poses, F.Denoise(val_poses, w), 1.0, iters=200)
    r = rfit.denoise(prior, val_poses.numpy(), weight=w, lam=1.0, maxiter=200)
    compare(t, r)
    assert np.all(r.loss < -prior.log_prob(val_poses.numpy()))      # better than the start (data term 0 there)


def test_runtime_completion_matches_torch(flow, prior, val_poses):
    names = ("left_collar", "left_shoulder", "left_elbow", "left_wrist")
    mask = torch.tensor([n in names for n in prior.joint_names])
    start = F.perturb(val_poses, 2.0, seed=12, joints=mask)
    t = F.fit(F.FlowAmbient(flow), start, None, 1.0, fixed=(~mask, val_poses), iters=1000)
    r = rfit.complete(prior, start.numpy(), list(names), maxiter=1000)
    compare(t, r)
    assert np.array_equal(r.poses[:, ~mask.numpy()], start.numpy()[:, ~mask.numpy()])   # visible joints untouched
    assert np.all(r.neg_log_p < -prior.log_prob(start.numpy()))


def test_runtime_fit_is_deterministic(prior, val_poses):
    start = F.perturb(val_poses, 5.0, seed=13).numpy()
    a, b = (rfit.denoise(prior, start, weight=50.0, maxiter=20) for _ in range(2))
    assert np.array_equal(a.poses, b.poses) and np.array_equal(a.loss, b.loss)


def test_runtime_free_mask_checks(prior):
    with pytest.raises(ValueError, match="unknown joint names"):
        rfit.free_mask(["left_hand"], 2)
    assert rfit.free_mask(None, 3).shape == (3, 21)
    assert rfit.free_mask(["head"], 2)[:, 14].all() and rfit.free_mask(["head"], 2).sum() == 2


# --- benchmark plumbing -----------------------------------------------------------------------------------------------
def test_fitbench_masks_and_descendants():
    from train.fitbench import BODY, MASKS, descendants
    assert [BODY[k] for k in descendants(MASKS["left_leg"])] == ["left_knee", "left_ankle", "left_foot"]
    assert [BODY[k] for k in descendants(MASKS["left_arm"])] == ["left_shoulder", "left_elbow", "left_wrist"]
    assert len(descendants(MASKS["trunk"])) == 12          # everything above the pelvis except hips and legs


def test_fitbench_runs_end_to_end(tiny_model, shared_data, baseline_runs, tmp_path):
    from train.fitbench import BenchConfig, run
    cfg = BenchConfig(n=3, n_val=3, hypotheses=2, lam_grid=(0.3, 1.0), lam_grid_completion=(10.0, 100.0),
                      iters={"completion": 3, "ik": 3, "denoise": 3})
    report = run(tiny_model, shared_data / "cmu_pose" / "test.npz", tmp_path, cfg, vposer_path=baseline_runs[0],
                 gmm_path=baseline_runs[1], log=lambda *_: None)
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.json", "report.md", "fits.png"}
    assert set(report["results"]) == {"none", "gmm", "vposer", "flow_ambient", "flow_latent", "flow_latent_z2"}
    assert report["lam"]["flow_latent"]["completion"] in (10.0, 100.0)
    assert report["val_grid"]["flow_ambient"]["completion"] == {}    # ambient completion: nothing to tune
