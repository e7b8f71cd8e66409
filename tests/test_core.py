"""Math tests of the core: rotations vs scipy, torch vs numpy, augmentation, flow invertibility and log-det."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import runtime.rotations as nr
import train.rotations as tr
from train.augment import Augmentation, augment, degenerate_joints, lift, rotation_noise
from train.flow import PoseFlow


def random_aa(n, seed=0, max_angle=np.pi):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    return axis * rng.uniform(0, max_angle, size=(n, 1))


def perturbed_flow(seed=0, dtype=torch.float64, **kw):
    """A flow whose couplings are far from the identity (the zero-initialised last layers are randomised)."""
    torch.manual_seed(seed)
    flow = PoseFlow(**kw).to(dtype)
    for layer in flow.layers:
        torch.nn.init.normal_(layer.net[-1].weight, std=0.05)
        torch.nn.init.normal_(layer.net[-1].bias, std=0.05)
    with torch.no_grad():
        flow.shift.normal_(0, 0.3)
        flow.log_scale.normal_(0, 0.3)
    return flow


# --- rotations ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_angle", [1e-7, 1e-3, 1.0, np.pi - 1e-4])
def test_axis_angle_to_matrix_matches_scipy(max_angle):
    aa = random_aa(500, max_angle=max_angle)
    ref = Rotation.from_rotvec(aa).as_matrix()
    assert np.abs(nr.axis_angle_to_matrix(aa) - ref).max() < 1e-12
    assert np.abs(tr.axis_angle_to_matrix(torch.from_numpy(aa)).numpy() - ref).max() < 1e-12


@pytest.mark.parametrize("max_angle", [1e-7, 1e-3, 1.0, np.pi - 1e-6])
def test_matrix_to_axis_angle_matches_scipy(max_angle):
    R = Rotation.from_rotvec(random_aa(500, seed=1, max_angle=max_angle)).as_matrix()
    ref = Rotation.from_matrix(R).as_rotvec()
    # near pi, w and -w are the same rotation: compare as rotations, and as vectors elsewhere
    for got in (nr.matrix_to_axis_angle(R), tr.matrix_to_axis_angle(torch.from_numpy(R)).numpy()):
        assert np.abs(Rotation.from_rotvec(got).as_matrix() - R).max() < 1e-9
        if max_angle < 3:
            assert np.abs(got - ref).max() < 1e-9


def test_6d_is_first_two_columns_and_round_trips():
    R = Rotation.random(300, random_state=2).as_matrix()
    d6 = nr.matrix_to_6d(R)
    assert np.array_equal(d6, np.concatenate([R[:, :, 0], R[:, :, 1]], axis=1))
    assert np.array_equal(d6[:, :3], R[:, :, 0])  # column, not row
    assert np.abs(nr.gram_schmidt(d6) - R).max() < 1e-12
    assert np.abs(tr.gram_schmidt(torch.from_numpy(d6)).numpy() - R).max() < 1e-12


def test_gram_schmidt_gives_rotations_for_arbitrary_pairs():
    rng = np.random.default_rng(3)
    d6 = rng.normal(size=(1000, 6))
    R = nr.gram_schmidt(d6)
    assert nr.rotation_error(R).max() < 1e-12
    assert np.allclose(np.linalg.det(R), 1.0)
    # e1 is b1's direction; e2 lies in the plane of (b1, b2) on b2's side
    assert np.allclose(R[:, :, 0], d6[:, :3] / np.linalg.norm(d6[:, :3], axis=1, keepdims=True))
    assert (np.sum(R[:, :, 1] * d6[:, 3:], axis=1) > 0).all()
    assert np.abs(tr.gram_schmidt(torch.from_numpy(d6)).numpy() - R).max() < 1e-12


def test_torch_and_numpy_conversions_agree():
    aa = random_aa(400, seed=4)
    t = torch.from_numpy(aa)
    assert np.abs(nr.axis_angle_to_6d(aa) - tr.axis_angle_to_6d(t).numpy()).max() < 1e-12
    d6 = nr.axis_angle_to_6d(aa)
    assert np.abs(nr.sixd_to_axis_angle(d6) - tr.sixd_to_axis_angle(torch.from_numpy(d6)).numpy()).max() < 1e-9


def test_half_split_layout():
    x = np.arange(2 * 21 * 6, dtype=np.float64).reshape(2, 21, 6)
    v = nr.to_flow_layout(x)
    assert np.array_equal(v[:, :63].reshape(2, 21, 3), x[:, :, :3])  # all first columns
    assert np.array_equal(v[:, 63:].reshape(2, 21, 3), x[:, :, 3:])  # then all second columns
    assert np.array_equal(nr.from_flow_layout(v), x)
    assert np.array_equal(tr.to_flow_layout(torch.from_numpy(x)).numpy(), v)
    assert np.array_equal(tr.from_flow_layout(torch.from_numpy(v)).numpy(), x)


def test_rotation_error_flags_non_rotations():
    R = Rotation.random(3, random_state=5).as_matrix()
    assert nr.rotation_error(R).max() < 1e-12
    assert nr.rotation_error(R * 1.1).min() > 0.1
    assert nr.rotation_error(-R).min() >= 1.0  # reflection, det = -1


# --- augmentation ---------------------------------------------------------------------------------------------
def test_augmentation_round_trips_through_gram_schmidt():
    x = tr.axis_angle_to_6d(torch.from_numpy(random_aa(21 * 512, seed=6)).reshape(512, 21, 3)).float()
    b = augment(x, alpha=0.5, beta=0.5, generator=torch.Generator().manual_seed(0))
    assert (b - x).abs().max() > 0.1  # it moved off the manifold
    assert (tr.orthonormalize_6d(b) - x).abs().max() < 1e-5  # float32 precision
    b64 = augment(x.double(), 0.5, 0.5, torch.Generator().manual_seed(0))
    assert (tr.orthonormalize_6d(b64) - x.double()).abs().max() < 1e-6  # x itself is float32-rounded

    # full rank: (rotation w, eps) -> lift(R(w), eps) has a rank-6 Jacobian, so augmented 6D fills R^6
    # (orthonormal 6D alone is a 3-d manifold: the same Jacobian without eps has rank 3)
    def f(we):
        return lift(tr.axis_angle_to_6d(we[:3]), we[3:], 0.5, 0.5)

    for we in torch.randn(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)):
        assert torch.linalg.matrix_rank(torch.autograd.functional.jacobian(f, we)) == 6
        assert torch.linalg.matrix_rank(torch.autograd.functional.jacobian(tr.axis_angle_to_6d, we[:3])) == 3
    assert torch.equal(augment(x, 0.0, 0.0), x)


# --- flow -----------------------------------------------------------------------------------------------------
def test_flow_starts_at_identity_couplings():
    flow = PoseFlow()
    z = torch.randn(4, 126)
    x, logdet = flow.forward(z)
    assert torch.allclose(x, tr.from_flow_layout(z)) and torch.all(logdet == 0)


def test_flow_is_invertible_in_float32():
    flow = perturbed_flow(dtype=torch.float32)
    x = augment(
        tr.axis_angle_to_6d(torch.from_numpy(random_aa(21 * 256, seed=7)).float().reshape(256, 21, 3)),
        0.1,
        0.1,
        torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        z, ld_inv = flow.inverse(x)
        x2, ld_fwd = flow.forward(z)
        z2, _ = flow.inverse(flow.sample(256, torch.Generator().manual_seed(1)))
    assert (x2 - x).abs().max() < 1e-4
    assert (ld_inv + ld_fwd).abs().max() < 1e-3
    assert z2.shape == (256, 126)


def test_log_det_matches_brute_force_jacobian():
    flow = perturbed_flow(num_layers=4, hidden=32, depth=2)
    z = torch.randn(3, 126, dtype=torch.float64)
    for zi in z:
        J = torch.autograd.functional.jacobian(lambda v: tr.to_flow_layout(flow.forward(v[None])[0])[0], zi)
        ref = torch.linalg.slogdet(J).logabsdet
        _, logdet = flow.forward(zi[None])
        assert abs(logdet.item() - ref.item()) < 1e-6
        x = flow.forward(zi[None])[0]
        Ji = torch.autograd.functional.jacobian(
            lambda v: flow.inverse(tr.from_flow_layout(v[None]))[0][0], tr.to_flow_layout(x)[0]
        )
        assert abs(float(flow.inverse(x)[1]) - float(torch.linalg.slogdet(Ji).logabsdet)) < 1e-6


def test_latent_forward_log_prob_equals_log_prob_of_its_output():
    flow = perturbed_flow(dtype=torch.float32)
    z = torch.randn(500, 126)
    with torch.no_grad():
        x, lp = flow.latent_forward(z)
        assert (lp - flow.log_prob(x)).abs().max() < 1e-4 * max(1.0, float(lp.abs().max()) / 100)
    flow64 = perturbed_flow()
    with torch.no_grad():
        x, lp = flow64.latent_forward(z.double())
        assert (lp - flow64.log_prob(x)).abs().max() < 1e-9


def test_masked_joint_is_identity_and_ignored():
    flow = perturbed_flow(masked_joints=("spine2",))
    assert flow.dim == 120
    x = flow.sample(10, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 5], torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=x.dtype).expand(10, 6))
    y = x.clone()
    y[:, 5] = torch.randn(10, 6, dtype=x.dtype)
    assert torch.equal(flow.log_prob(x), flow.log_prob(y))
    with pytest.raises(ValueError, match="unknown joint"):
        PoseFlow(masked_joints=("spine7",))


def test_log_prob_independent_of_train_eval_mode():
    flow = perturbed_flow()
    x = flow.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(flow.train().log_prob(x), flow.eval().log_prob(x))


def test_dequantisation_noise_widens_degenerate_directions():
    """A hinge joint (rotation about x only) has a1 = (1, 0, 0): the lift keeps a1_y = a1_z = 0, noise does not."""
    angles = torch.linspace(0, 2, 1000, dtype=torch.float64)[:, None]
    hinge = tr.axis_angle_to_6d(torch.cat([angles, torch.zeros(1000, 2, dtype=torch.float64)], 1))[:, None]
    g = torch.Generator().manual_seed(0)
    assert augment(hinge, 0.3, 0.3, g)[..., 1:3].abs().max() == 0
    noisy = augment(hinge, 0.3, 0.3, g, noise=0.02)
    assert 0.015 < float(noisy[..., 1:3].std()) < 0.025
    err = torch.rad2deg(torch.linalg.matrix_norm(tr.gram_schmidt(noisy) - tr.gram_schmidt(hinge)))
    assert float(err.median()) < 5


def test_degenerate_joints_finds_hinges_and_duplicates():
    """Hinges (rotation vectors on a line or a plane) and a joint equal to an earlier one are found; a joint with
    full 3D spread is not."""
    aa = random_aa(21 * 2000, seed=3, max_angle=1.0).reshape(2000, 21, 3)
    aa[:, 3, 1:] = 0.0  # left_knee: a hinge about x
    aa[:, 17, 2] = 0.0  # left_elbow: rotation vectors in a plane
    aa[:, 13] = aa[:, 12]  # right_collar duplicates left_collar
    assert degenerate_joints(aa) == ["left_knee", "right_collar", "left_elbow"]
    aa[:, 3, 1:] = 2e-3 * np.random.default_rng(0).normal(size=(2000, 2))  # 0.1 degrees off the hinge: real spread
    assert degenerate_joints(aa) == ["right_collar", "left_elbow"]


def test_rotation_noise_on_chosen_joints_only():
    """R -> R exp([sigma xi]x): the chosen joints move by a geodesic angle |sigma xi| (Maxwell: mean 2 sigma
    sqrt(2/pi)), stay rotations, and every other joint is bit-identical."""
    x = tr.axis_angle_to_6d(torch.from_numpy(random_aa(21 * 4000, seed=5)).reshape(4000, 21, 3))
    sigma = 0.02
    y = rotation_noise(x, [3, 13], sigma, torch.Generator().manual_seed(0))
    others = [j for j in range(21) if j not in (3, 13)]
    assert torch.equal(y[:, others], x[:, others])
    Ry, Rx = tr.gram_schmidt(y[:, [3, 13]]), tr.gram_schmidt(x[:, [3, 13]])
    assert torch.allclose(tr.matrix_to_6d(Ry), y[:, [3, 13]], atol=1e-12)  # still orthonormal
    angle = tr.matrix_to_axis_angle(Rx.transpose(-1, -2) @ Ry).norm(dim=-1)
    assert abs(float(angle.mean()) / (2 * sigma * np.sqrt(2 / np.pi)) - 1) < 0.02


def test_augmentation_composes_rotation_noise_lift_and_6d_noise():
    x = tr.axis_angle_to_6d(torch.from_numpy(random_aa(21 * 64, seed=6)).reshape(64, 21, 3))
    plain = Augmentation(0.1, 0.2)(x, torch.Generator().manual_seed(1))
    assert torch.equal(plain, augment(x, 0.1, 0.2, torch.Generator().manual_seed(1)))
    aug = Augmentation(0.1, 0.2, joint_noise=0.05, noisy_joints=("left_knee",))
    g = torch.Generator().manual_seed(1)
    expected = augment(rotation_noise(x, [3], 0.05, g), 0.1, 0.2, g)
    assert torch.equal(aug(x, torch.Generator().manual_seed(1)), expected)
    gs = tr.orthonormalize_6d(aug(x, torch.Generator().manual_seed(1)))
    assert torch.allclose(gs[:, [j for j in range(21) if j != 3]], x[:, [j for j in range(21) if j != 3]], atol=1e-10)
