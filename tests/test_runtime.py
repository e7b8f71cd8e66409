"""The torch-free runtime: loads and verifies a model directory, checks its inputs, converts representations,
samples reproducibly, and is safe to call from several threads."""

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime.prior as prior_module
import train.rotations as torch_rotations
from export import load_flow
from runtime import GRAPHS, JOINT_NAMES, ModelError, PosePrior, rotations
from runtime.prior import WEIGHTS_FILE, axis_angle_vjp, sha256_file
from train.data import load_npz

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prior(tiny_model):
    return PosePrior.load(tiny_model)


@pytest.fixture(scope="module")
def aa(shared_data):
    """64 held-out poses as axis-angle (64, 21, 3), float64."""
    rot = load_npz(shared_data / "cmu_pose" / "val.npz").rotations
    return rot[np.linspace(0, len(rot) - 1, 64).astype(int)].astype(np.float64)


@pytest.fixture(scope="module")
def poses(aa):
    return rotations.axis_angle_to_6d(aa).astype(np.float32)


def copy_model(src: Path, dst: Path) -> Path:
    """The files the runtime reads (the torch artifacts are left out: the runtime needs none of them)."""
    dst.mkdir()
    for name in [g.file for g in GRAPHS.values()] + [WEIGHTS_FILE, "manifest.json"]:
        shutil.copy(src / name, dst / name)
    return dst


# --- loading -----------------------------------------------------------------------------------------------------
def test_runs_without_torch(tiny_model):
    """In a fresh interpreter where torch, scipy, onnx and the training code cannot be imported."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'scipy', 'onnx', 'onnxscript', 'train', 'export'):
            raise ImportError(name + ' is blocked: the runtime must not need it')
sys.meta_path.insert(0, Block())
from runtime import PosePrior
prior = PosePrior.load({str(tiny_model)!r})
x = prior.sample(4, seed=0)
log_p, grad = prior.log_prob_and_grad(x)
assert prior.log_prob(x).shape == (4,) and grad.shape == (4, 21, 6)
print('ok', prior.providers)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    assert "[E:onnxruntime" not in result.stderr, "provider selection is not quiet: " + result.stderr[:500]


def test_metadata_from_the_manifest(prior, tiny_model):
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    assert prior.joint_names == JOINT_NAMES and prior.num_joints == 21
    assert prior.dim == manifest["dim"] and prior.masked_joints == tuple(manifest["masked_joints"])
    assert prior.providers[-1] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in repr(prior)


def test_shipped_default_model(aa):
    """The model inside the package: loads (sha256-checked), is the paper architecture trained on CMU data only
    (commercial use allowed), and tells real held-out poses from corrupted ones."""
    prior = PosePrior.load()
    assert prior.path == prior_module.DEFAULT_MODEL_DIR and prior.dim == 126
    training = prior.manifest["training"]
    # CMU only (make data: build/smpl/cmu = cmu_pose's train split and cmu_pose val + cmu_extra's ASF/AMC takes,
    # converted to SMPL), in SMPL's convention
    assert sorted(training["data_sha256"]) == ["cmu/train.npz", "cmu/val.npz"]
    assert prior.manifest["skeleton"]["name"] == "smpl" and len(prior.manifest["skeleton"]["rest_joints"]) == 22
    from runtime.convert import CONVERSION_VERSION  # it reports its convention, the conversion and its tau

    assert (prior.skeleton, prior.conversion) == ("smpl", CONVERSION_VERSION)
    assert prior.threshold == prior.manifest["plausibility"]["tau"]
    assert "skeleton='smpl'" in repr(prior) and CONVERSION_VERSION in repr(prior)
    assert (training["config"]["num_layers"], training["config"]["hidden"], training["config"]["depth"]) == (12, 256, 4)
    on_disk = {p.name for p in prior.path.iterdir()}
    required = {g.file for g in GRAPHS.values() if g.required} | {WEIGHTS_FILE, "manifest.json"}
    assert required <= on_disk <= required | {g.file for g in GRAPHS.values()}  # ONNX only: small
    assert sum((prior.path / f).stat().st_size for f in on_disk) < 20e6
    real = prior.log_prob(aa, rep="axis_angle")
    knees = aa.copy()
    knees[:, [3, 4]] = [-1.4, 0.0, 0.0]  # both knees bent 80 degrees the wrong way
    assert np.isfinite(real).all() and np.median(prior.log_prob(knees, rep="axis_angle")) < np.percentile(real, 5)


def test_missing_default_model(monkeypatch, tmp_path):
    monkeypatch.setattr(prior_module, "DEFAULT_MODEL_DIR", tmp_path / "models" / "default")
    with pytest.raises(ModelError, match="without a default model.*poseprior export"):
        PosePrior.load()


def test_tampered_weights(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path / "m")
    data = bytearray((model / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"weights\.bin: sha256 .* differs from the manifest"):
        PosePrior.load(model)


def _swap_graphs(model: Path, fix_manifest: bool) -> None:
    shutil.copy(model / "sample.onnx", model / "log_prob.onnx")
    if fix_manifest:
        manifest = json.loads((model / "manifest.json").read_text())
        manifest["files"]["log_prob.onnx"]["sha256"] = sha256_file(model / "log_prob.onnx")
        (model / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(model: Path, edit) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    edit(manifest)
    (model / "manifest.json").write_text(json.dumps(manifest))


BROKEN = {
    "missing graph": (lambda m: (m / "log_prob_grad.onnx").unlink(), r"log_prob_grad\.onnx: missing"),
    "wrong graph file": (lambda m: _swap_graphs(m, False), r"log_prob\.onnx: sha256 .* another model"),
    "wrong graph, manifest updated": (lambda m: _swap_graphs(m, True), r"graph='sample', expected 'log_prob'"),
    "manifest of another model": (
        lambda m: _edit_manifest(m, lambda d: d["files"][WEIGHTS_FILE].update(sha256="0" * 64)),
        r"weights\.bin: sha256",
    ),
    "no manifest": (lambda m: (m / "manifest.json").unlink(), "no manifest.json"),
    "manifest not JSON": (lambda m: (m / "manifest.json").write_text("{oops"), "not valid JSON"),
    "future format": (lambda m: _edit_manifest(m, lambda d: d.update(format_version=99)), "format version 99"),
    "not a directory": (lambda m: shutil.rmtree(m), "no model directory"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_model_directories(tiny_model, tmp_path, case):
    break_it, message = BROKEN[case]
    model = copy_model(tiny_model, tmp_path / "m")
    break_it(model)
    with pytest.raises(ModelError, match=message):
        PosePrior.load(model)


def test_session_options(prior, tiny_model, poses):
    single = PosePrior.load(
        tiny_model, providers=["CPUExecutionProvider"], intra_op_num_threads=1, allow_spinning=False
    )
    assert single.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(single.log_prob(poses), prior.log_prob(poses), atol=1e-4)
    # the graphs a latent fit calls in turn stop spinning after a run; the others keep their threads warm
    from runtime.prior import ALTERNATING

    for name, sess in prior._sessions.items():
        stop = (
            sess.get_session_options().get_session_config_entry("session.force_spinning_stop")
            if name in ALTERNATING
            else None
        )
        assert (stop == "1") == (name in ALTERNATING), name
    cfg = single._sessions["latent_forward"].get_session_options()
    assert cfg.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# --- inputs ------------------------------------------------------------------------------------------------------
def _not_rotation(poses):
    R = rotations.sixd_to_matrix(poses.astype(np.float64))
    R[3, 5] *= 1.01
    return R


def _reflection(poses):
    R = rotations.sixd_to_matrix(poses.astype(np.float64))
    R[0, 0] = -R[0, 0]
    return R


def _with(poses, value):
    x = poses.copy()
    x[2, 4, 1] = value
    return x


BAD_INPUTS = {
    "wrong shape": (lambda p: p[..., :5], "6d", r"shape \(64, 21, 5\)"),
    "too many joints": (lambda p: np.concatenate([p, p[:, :1]], axis=1), "6d", "22 joints.*the model has 21"),
    "too few joints": (lambda p: p[:, 1:], "6d", "20 joints"),
    "no pose axis": (lambda p: p.reshape(64, 126), "6d", r"shape \(64, 126\)"),
    "integers": (lambda p: p.astype(np.int64), "6d", "floating-point.*int64"),
    "NaN": (lambda p: _with(p, np.nan), "6d", r"NaN or inf .*\(2, 4, 1\)"),
    "inf": (lambda p: _with(p, np.inf), "6d", "NaN or inf"),
    "empty batch": (lambda p: p[:0], "6d", "empty batch"),
    "not a rotation": (_not_rotation, "matrix", "1 matrices are not rotations.*pose 3, joint spine2"),
    "reflection": (_reflection, "matrix", "not rotations.*det < 0"),
    "matrix shape": (lambda p: rotations.sixd_to_matrix(p)[..., :2], "matrix", r"shape \(64, 21, 3, 2\)"),
    "axis-angle shape": (lambda p: np.zeros((4, 62)), "axis_angle", r"shape \(4, 62\)"),
    "unknown rep": (lambda p: p, "quaternion", "rep must be one of"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_refused(prior, poses, case):
    make, rep, message = BAD_INPUTS[case]
    x = make(poses)
    for method in (prior.log_prob, prior.log_prob_and_grad):
        with pytest.raises(ValueError, match=message):
            method(x, rep=rep)


def test_bad_latents_are_refused(prior):
    for z, message in (
        (np.zeros((3, prior.dim + 1), np.float32), "shape"),
        (np.zeros((0, prior.dim)), "empty"),
        (np.full((2, prior.dim), np.nan), "NaN"),
        (np.zeros((2, prior.dim), int), "floating"),
    ):
        for call in (prior.latent_forward, lambda z: prior.sample(z=z)):
            with pytest.raises(ValueError, match=message):
                call(z)
    for kwargs, message in (
        ({}, "give n"),
        ({"n": 0}, r"n must be in \[1, "),
        ({"n": 2, "z": np.zeros((2, prior.dim))}, "as given"),
        ({"z": np.zeros((2, prior.dim)), "temperature": 0.5}, "as given"),
    ):
        with pytest.raises(ValueError, match=message):
            prior.sample(**kwargs)


def test_float64_is_cast(prior, poses):
    assert prior.log_prob(poses.astype(np.float64)).dtype == np.float32
    np.testing.assert_array_equal(prior.log_prob(poses.astype(np.float64)), prior.log_prob(poses))


# --- representations ---------------------------------------------------------------------------------------------
def test_representations_agree(prior, aa, poses):
    log_p = prior.log_prob(poses)
    R = rotations.axis_angle_to_matrix(aa)
    for x, rep in (
        (R, "matrix"),
        (aa, "axis_angle"),
        (aa.reshape(64, 63), "axis_angle"),
        (aa.astype(np.float32), "axis_angle"),
    ):
        np.testing.assert_allclose(prior.log_prob(x, rep=rep), log_p, atol=2e-3, err_msg=f"{rep} {x.shape}")


def test_gradient_in_each_representation(prior, tiny_model, aa, poses):
    log_p, g6 = prior.log_prob_and_grad(poses)
    np.testing.assert_allclose(log_p, prior.log_prob(poses), atol=1e-4)
    _, gR = prior.log_prob_and_grad(rotations.axis_angle_to_matrix(aa), rep="matrix")
    assert gR.shape == (64, 21, 3, 3) and not gR[..., 2].any()
    np.testing.assert_allclose(
        np.concatenate([gR[..., 0], gR[..., 1]], -1), g6, rtol=1e-3, atol=1e-3 * np.abs(g6).max()
    )
    # axis-angle: against torch autograd through Rodrigues and the flow, in float64. The density is steep
    # (|grad| ~ 1e5-1e6), so a float32 reference would be off by ~2e-3 relative: the runtime converts
    # axis-angle -> 6D in float64 for that reason, and matches float64 to ~1e-6.
    _, g_aa = prior.log_prob_and_grad(aa.reshape(64, 63), rep="axis_angle")
    assert g_aa.shape == (64, 63)
    w = torch.tensor(aa, requires_grad=True)
    flow64 = load_flow(tiny_model).double()
    (g_ref,) = torch.autograd.grad(flow64.log_prob(torch_rotations.axis_angle_to_6d(w)).sum(), w)
    np.testing.assert_allclose(g_aa.reshape(64, 21, 3), g_ref.numpy(), atol=1e-4 * float(g_ref.abs().max()))


def test_axis_angle_vjp_matches_finite_differences():
    """d/dw sum(C * sixd(R(w))), float64, including tiny angles and angles near pi."""
    rng = np.random.default_rng(1)
    w = np.concatenate(
        [
            rng.standard_normal((20, 3)),
            rng.standard_normal((5, 3)) * 1e-9,
            np.zeros((1, 3)),
            rng.standard_normal((5, 3)) / np.sqrt(3) * (np.pi - 1e-3),
        ]
    )
    C = rng.standard_normal((len(w), 6))
    analytic = axis_angle_vjp(w, C)
    eps, numeric = 1e-6, np.zeros_like(w)
    for i in range(3):
        d = np.zeros(3)
        d[i] = eps
        numeric[:, i] = (
            np.sum(C * rotations.axis_angle_to_6d(w + d), -1) - np.sum(C * rotations.axis_angle_to_6d(w - d), -1)
        ) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, atol=1e-6)


def test_single_pose_or_batch(prior, aa, poses):
    log_p, grad = prior.log_prob_and_grad(poses)
    assert prior.log_prob(poses[5]).shape == () and prior.log_prob(poses[5]) == pytest.approx(log_p[5], abs=1e-4)
    lp1, g1 = prior.log_prob_and_grad(poses[5])
    assert g1.shape == (21, 6) and np.allclose(g1, grad[5], atol=1e-5 * np.abs(grad).max())
    assert prior.log_prob(aa[5].reshape(63), rep="axis_angle") == pytest.approx(log_p[5], abs=2e-3)
    assert prior.log_prob_and_grad(aa[5].reshape(63), rep="axis_angle")[1].shape == (63,)
    z = np.random.default_rng(0).standard_normal((3, prior.dim), dtype=np.float32)
    x1, lp1 = prior.latent_forward(z[1])
    assert x1.shape == (21, 6) and lp1.shape == () and np.allclose(x1, prior.latent_forward(z)[0][1], atol=1e-6)
    assert prior.sample(z=z[1]).shape == (21, 6)


# --- sampling ----------------------------------------------------------------------------------------------------
def test_sampling(prior):
    a, b = prior.sample(100, seed=7), prior.sample(100, seed=7)
    assert a.shape == (100, 21, 6) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.allclose(a, prior.sample(100, seed=8))
    assert np.array_equal(prior.sample(5, seed=np.random.default_rng(3)), prior.sample(5, seed=3))
    a1, a2 = a[..., :3], a[..., 3:]  # orthonormalised: unit columns, orthogonal
    assert np.abs(np.linalg.norm(a1, axis=-1) - 1).max() < 1e-5 and np.abs(np.linalg.norm(a2, axis=-1) - 1).max() < 1e-5
    assert np.abs(np.sum(a1 * a2, -1)).max() < 1e-5
    raw = prior.sample(100, seed=7, orthonormalize=False)
    assert np.abs(np.linalg.norm(raw[..., :3], axis=-1) - 1).max() > 1e-3, "raw samples should not be orthonormal"
    np.testing.assert_allclose(rotations.orthonormalize_6d(raw), a, atol=1e-6)
    cold = prior.sample(3, seed=1, temperature=1e-30, orthonormalize=False)  # z ~ 1e-30: the flow at z = 0
    np.testing.assert_allclose(
        cold, np.broadcast_to(prior.sample(z=np.zeros(prior.dim), orthonormalize=False), cold.shape), atol=1e-6
    )


def test_sample_with_z_is_latent_forward(prior):
    z = np.random.default_rng(0).standard_normal((50, prior.dim), dtype=np.float32)
    x, log_p = prior.latent_forward(z)
    np.testing.assert_array_equal(prior.sample(z=z, orthonormalize=False), x)
    # the one-pass density equals the density of the produced poses (an inverse pass), up to float32 round trip
    np.testing.assert_allclose(prior.log_prob(x), log_p, rtol=1e-4, atol=1e-2)


def test_encode_is_the_exact_inverse(prior, poses, aa):
    """encode(x) = f^-1(x) on real poses: f(encode(x)) = x, its log p is log_prob's, and runtime.fit.encode uses
    it (one graph call instead of an iterative solve)."""
    from runtime import fit as rfit

    z, log_p = prior.encode(poses)
    assert z.shape == (len(poses), prior.dim) and z.dtype == np.float32
    np.testing.assert_allclose(prior.sample(z=z, orthonormalize=False), poses, atol=2e-5)
    np.testing.assert_allclose(log_p, prior.log_prob(poses), rtol=1e-5, atol=1e-3)
    z_aa, lp_aa = prior.encode(aa, rep="axis_angle")
    np.testing.assert_allclose(lp_aa, prior.log_prob(aa, rep="axis_angle"), rtol=1e-5, atol=1e-3)
    z1, err = rfit.encode(prior, poses)
    np.testing.assert_array_equal(z1, z)
    assert err.max() < 2e-5
    with pytest.raises(ValueError, match="joints"):
        prior.encode(poses[:, :20])
    far = poses[:3] * 50.0  # a start far off the data: its exact latent leaves the runtime's range
    z_far, _ = prior.encode(far)
    z2, _ = rfit.encode(prior, np.concatenate([poses[:2], far]))
    np.testing.assert_array_equal(z2[:2], z[:2])  # in range: the exact inverse
    from runtime.prior import MAX_ABS

    assert np.abs(z2).max() <= MAX_ABS and np.isfinite(z2).all()  # out of range: the iterative solve
    if np.abs(z_far).max() > MAX_ABS:
        assert not np.array_equal(z2[2:], z_far)


# --- threads -----------------------------------------------------------------------------------------------------
def test_concurrent_calls_match_serial(prior, poses):
    rng = np.random.default_rng(0)
    batches = [poses[rng.integers(0, len(poses), 32)] for _ in range(8)]
    serial = [prior.log_prob(b) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            parallel = list(pool.map(prior.log_prob, batches))
            for s, p in zip(serial, parallel):
                np.testing.assert_array_equal(s, p)
        grads = list(pool.map(lambda b: prior.log_prob_and_grad(b)[1], batches))
    for b, g in zip(batches, grads):
        np.testing.assert_array_equal(prior.log_prob_and_grad(b)[1], g)


# --- issue 11: numbers the graphs cannot take, sample's arguments, degenerate 6D --------------------------------------
def _entry(x, value):
    x = x.astype(np.float64)
    x[1, 7, 2] = value
    return x


def _b2_scaled(poses):
    x = poses.astype(np.float64)
    x[..., 3:] *= 1e20
    return x


HUGE_POSES = {
    "float64 entry beyond float32 (1e39)": (lambda p: _entry(p, 1e39), "6d", r"1e\+39 at index \(1, 7, 2\)"),
    "6D x 1e10": (lambda p: p * 1e10, "6d", "exceeds 1e"),
    "6D x 1e30": (lambda p: p.astype(np.float64) * 1e30, "6d", "exceeds 1e"),
    "b2 x 1e20": (_b2_scaled, "6d", "exceeds 1e"),
    "axis-angle 1e200": (lambda p: np.full((4, 63), 1e200), "axis_angle", "exceeds 1e"),
}


@pytest.mark.parametrize("case", HUGE_POSES)
def test_huge_poses_are_refused(prior, poses, case):
    make, rep, message = HUGE_POSES[case]
    for method in (prior.log_prob, prior.log_prob_and_grad):
        with pytest.raises(ValueError, match="poses.*" + message):
            method(make(poses), rep=rep)


def test_inputs_within_the_bound_stay_finite(prior, poses):
    """At the documented bound, every graph returns finite numbers (the bound is what the graphs tolerate)."""
    bound = prior_module.MAX_ABS
    x = poses.copy()
    x[::2] *= bound  # whole poses at the bound
    x[1::2, :, 3:] *= bound  # b2 alone at the bound
    log_p, grad = prior.log_prob_and_grad(x)
    assert np.isfinite(log_p).all() and np.isfinite(grad).all() and np.isfinite(prior.log_prob(x)).all()
    z = np.random.default_rng(0).uniform(-bound, bound, (16, prior.dim)).astype(np.float32)
    xs, lp = prior.latent_forward(z)
    assert np.isfinite(xs).all() and np.isfinite(lp).all()
    R = rotations.sixd_to_matrix(prior.sample(z=z))
    assert rotations.rotation_error(R).max() < 1e-5  # rotations, not zero matrices
    aa = np.full((2, 63), bound)
    assert np.isfinite(prior.log_prob_and_grad(aa, rep="axis_angle")[1]).all()


def test_huge_latents_are_refused(prior):
    z = np.random.default_rng(0).standard_normal((4, prior.dim))
    for bad, message in (
        (z * 1e38, "exceeds 1e"),
        (z * 1e20, "exceeds 1e"),
        (np.where(np.arange(prior.dim) == 3, 1e39, z), r"1e\+39 at index \(0, 3\)"),
    ):
        for call in (prior.latent_forward, lambda z: prior.sample(z=z)):
            with pytest.raises(ValueError, match="z: .*" + message):
                call(bad)


BAD_SAMPLE_ARGS = {
    "temperature NaN": ({"n": 2, "temperature": float("nan")}, "temperature must be finite"),
    "temperature inf": ({"n": 2, "temperature": float("inf")}, "temperature must be finite"),
    "temperature None": ({"n": 2, "temperature": None}, "temperature must be a real number"),
    "temperature 1e30": ({"n": 2, "temperature": 1e30}, r"temperature must be finite and in \(0, "),
    "temperature -1": ({"n": 2, "temperature": -1}, r"temperature must be finite and in \(0, "),
    "temperature '2'": ({"n": 2, "temperature": "2"}, "temperature must be a real number"),
    "n 2.5": ({"n": 2.5}, "n must be a positive int"),
    "n '3'": ({"n": "3"}, "n must be a positive int"),
    "n True": ({"n": True}, "n must be a positive int"),
    "n inf": ({"n": float("inf")}, "n must be a positive int"),
    "n [3]": ({"n": [3]}, "n must be a positive int"),
    "n 2**40": ({"n": 2**40}, r"n must be in \[1, 1000000\]"),
    "n -3": ({"n": -3}, r"n must be in \[1, "),
    "seed 1.5": ({"n": 2, "seed": 1.5}, "seed must be None, an int >= 0 or a numpy.random.Generator"),
    "seed 'abc'": ({"n": 2, "seed": "abc"}, "seed must be None"),
    "seed -1": ({"n": 2, "seed": -1}, "seed must be None"),
    "orthonormalize 'no'": ({"n": 2, "orthonormalize": "no"}, "orthonormalize must be True or False"),
}


@pytest.mark.parametrize("case", BAD_SAMPLE_ARGS)
def test_bad_sample_arguments(prior, case):
    kwargs, message = BAD_SAMPLE_ARGS[case]
    with pytest.raises(ValueError, match="sample: " + message):
        prior.sample(**kwargs)


def test_sample_accepts_numpy_scalars(prior):
    a = prior.sample(np.int64(3), seed=np.int32(4), temperature=np.float32(0.5))
    np.testing.assert_array_equal(a, prior.sample(3, seed=4, temperature=0.5))


@pytest.mark.parametrize(
    "shape, hint",
    [
        ((5, 66), r"\(B, 63\).*smplx global_orient \+ body_pose.*x\[\.\.\., 3:66\]"),
        ((5, 69), r"\(B, 63\).*23-joint body_pose.*x\[\.\.\., :63\]"),
        ((66,), r"\(B, 63\).*global_orient"),
        ((5, 72), r"\(B, 63\).*full SMPL pose"),
    ],
)
def test_axis_angle_layouts_of_smpl_are_named(prior, shape, hint):
    for method in (prior.log_prob, prior.log_prob_and_grad):
        with pytest.raises(ValueError, match=r"poses \(rep='axis_angle'\): shape .*" + hint):
            method(np.zeros(shape), rep="axis_angle")
    with pytest.raises(ValueError, match=r"expected \(B, 63\) \(smplx body_pose\) or \(B, 21, 3\)"):
        prior.log_prob(np.zeros((5, 64)), rep="axis_angle")


def test_gram_schmidt_refuses_degenerate_pairs(poses):
    x = poses[:3].astype(np.float64)
    cases = {
        "zero first column": (lambda y: y.__setitem__((1, 4, slice(0, 3)), 0.0), r"index \(1, 4\) has a zero first"),
        "zero second column": (lambda y: y.__setitem__((2, 0, slice(3, 6)), 0.0), r"index \(2, 0\) has a zero second"),
        "parallel columns": (
            lambda y: y.__setitem__((0, 9, slice(3, 6)), -2.5 * y[0, 9, :3]),
            r"\(0, 9\) has parallel",
        ),
        "NaN": (lambda y: y.__setitem__((0, 1, 1), np.nan), "NaN or inf"),
    }
    for name, (edit, message) in cases.items():
        y = x.copy()
        edit(y)
        for fn in (rotations.gram_schmidt, rotations.orthonormalize_6d, rotations.sixd_to_axis_angle):
            with pytest.raises(ValueError, match="gram_schmidt: .*" + message):
                fn(y)


def test_gram_schmidt_at_any_scale(poses):
    """6D is scale-invariant: columns scaled by 1e-30 or 1e30 (float64) or 1e20 (float32) give the same rotations
    (the old code returned zero matrices once the squared norms overflowed)."""
    R = rotations.gram_schmidt(poses.astype(np.float64))
    for scale, dtype in ((1e30, np.float64), (1e-30, np.float64), (1e20, np.float32), (1e-20, np.float32)):
        x = poses.astype(dtype) * np.asarray(scale, dtype)
        x[..., 3:] *= np.asarray(0.5, dtype)
        got = rotations.gram_schmidt(x)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, R, atol=1e-6)
    nearly_parallel = np.array([1.0, 0, 0, 1.0, 1e-5, 0])  # sine 1e-5 > tolerance: still a rotation
    assert rotations.rotation_error(rotations.gram_schmidt(nearly_parallel)) < 1e-12


# --- issue 11: bounded memory --------------------------------------------------------------------------------------
def test_chunked_runs_equal_one_run(prior, tiny_model, aa, poses):
    """A PosePrior whose chunks are 64 rows returns, for a batch of 1000 (not a multiple of 64), exactly what one
    run on the whole batch returns, for every graph and representation."""
    small = PosePrior.load(tiny_model, max_chunk_bytes=1)
    assert small.chunk_rows("log_prob_grad", "axis_angle") == 64 and prior.chunk_rows("log_prob_grad") >= 1024
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(aa), 1000)
    x6, xa = poses[idx], aa[idx]
    for rep, x in (("6d", x6), ("matrix", rotations.axis_angle_to_matrix(xa)), ("axis_angle", xa.reshape(-1, 63))):
        np.testing.assert_array_equal(small.log_prob(x, rep=rep), prior.log_prob(x, rep=rep))
        for a, b in zip(small.log_prob_and_grad(x, rep=rep), prior.log_prob_and_grad(x, rep=rep)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small.sample(1000, seed=3), prior.sample(1000, seed=3))
    np.testing.assert_array_equal(
        small.sample(1000, seed=3, temperature=0.5, orthonormalize=False),
        prior.sample(1000, seed=3, temperature=0.5, orthonormalize=False),
    )
    z = rng.standard_normal((1000, prior.dim), dtype=np.float32)
    for a, b in zip(small.latent_forward(z), prior.latent_forward(z)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="max_chunk_bytes must be a positive int"):
        PosePrior.load(tiny_model, max_chunk_bytes=0)


def test_allocation_failure_is_a_clear_memory_error(tiny_model):
    """Under an address-space limit, onnxruntime's own "Failed to allocate memory" becomes a MemoryError that
    says what to change."""
    code = f"""
import resource, numpy as np
from runtime import PosePrior
prior = PosePrior.load({str(tiny_model)!r}, providers=["CPUExecutionProvider"], intra_op_num_threads=1,
                       max_chunk_bytes=1 << 40)
x = prior.sample(64, seed=0)
prior.log_prob_and_grad(x)
poses = np.tile(x, (1000, 1, 1))                      # 64,000 poses: 32 MB in, several GB of graph memory
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (600 << 20), resource.RLIM_INFINITY))
try:
    prior.log_prob_and_grad(poses)
except MemoryError as e:
    print("MemoryError:", e)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("MemoryError: log_prob_grad: onnxruntime could not allocate memory"), result.stdout
    assert "max_chunk_bytes" in result.stdout


# --- issue 11: malformed manifests and mismatched graphs -------------------------------------------------------------
def _set(keys, value):
    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _drop(*keys):
    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


def _rename_joint(d):
    d["joint_names"][3] = "knee_left"


MALFORMED = {
    "sha256 null": (
        _set(("files", "weights.bin", "sha256"), None),
        r"\['files'\]\['weights.bin'\]\['sha256'\] must be",
    ),
    "sha256 an int": (_set(("files", "log_prob.onnx", "sha256"), 12), r"\['log_prob.onnx'\]\['sha256'\] must be"),
    "sha256 missing": (_drop("files", "sample.onnx", "sha256"), r"\['sample.onnx'\]\['sha256'\] is missing"),
    "sha256 not hex": (_set(("files", "sample.onnx", "sha256"), "z" * 64), "64 lowercase hex digits"),
    "files a string": (_set(("files",), "weights.bin"), r"field \['files'\] must be an object"),
    "files a list": (_set(("files",), ["weights.bin"]), r"field \['files'\] must be an object"),
    "files null": (_set(("files",), None), r"field \['files'\] must be an object"),
    "files missing": (_drop("files"), r"field \['files'\] is missing"),
    "joint_names missing": (_drop("joint_names"), r"field \['joint_names'\] is missing"),
    "dim missing": (_drop("dim"), r"field \['dim'\] is missing"),
    "num_joints missing": (_drop("num_joints"), r"field \['num_joints'\] is missing"),
    "masked_joints missing": (_drop("masked_joints"), r"field \['masked_joints'\] is missing"),
    "dim a string": (_set(("dim",), "126"), r"field \['dim'\] must be an int"),
    "num_joints true": (_set(("num_joints",), True), r"field \['num_joints'\] must be an int"),
    "joint_names reversed": (_set(("joint_names",), list(JOINT_NAMES[::-1])), r"\['joint_names'\] differs.*entry 0"),
    "joint renamed": (_rename_joint, r"\['joint_names'\] differs.*entry 3 is 'knee_left', expected 'left_knee'"),
    "20 joint names": (_set(("joint_names",), list(JOINT_NAMES[:20])), r"\['joint_names'\] differs.*20 names"),
    "joint_names a string": (_set(("joint_names",), " ".join(JOINT_NAMES)), r"\['joint_names'\] must be a list"),
    "masked joint not a joint": (_set(("masked_joints",), ["tail"]), r"\['masked_joints'\] must be distinct names"),
    "masked joint edited": (_set(("masked_joints",), ["spine2"]), r"\['dim'\] is 126, expected .* = 120"),
    "graphs missing": (_drop("graphs"), r"field \['graphs'\] is missing"),
    "graph file renamed": (
        _set(("graphs", "sample", "file"), "x.onnx"),
        r"\['graphs'\]\['sample'\]\['file'\] is 'x.onnx'",
    ),
    "graph shape edited": (
        _set(("graphs", "log_prob", "inputs", "poses"), ["batch", 22, 6]),
        r"\['graphs'\]\['log_prob'\]\['inputs'\]\['poses'\] is .* expected \['batch', 21, 6\]",
    ),
    "empty object": (lambda d: d.clear(), "format version None"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_manifest(tiny_model, tmp_path, case):
    edit, message = MALFORMED[case]
    model = copy_model(tiny_model, tmp_path / "m")
    _edit_manifest(model, edit)
    with pytest.raises(ModelError, match=re.escape(str(model / "manifest.json")) + ": .*" + message):
        PosePrior.load(model)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not a manifest .JSON nested too deeply"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "not a manifest .JSON nested too deeply"),
        ("[1, 2]", "must hold a JSON object, got list"),
        ("9" * 5000, "not valid JSON"),
    ],
)
def test_manifest_that_is_not_an_object(tiny_model, tmp_path, text, message):
    model = copy_model(tiny_model, tmp_path / "m")
    (model / "manifest.json").write_text(text)
    with pytest.raises(ModelError, match="manifest.json: " + message):
        PosePrior.load(model)


def _edit_graph(model: Path, graph: str, edit) -> None:
    """Edit one .onnx file (its weights stay external) and fix its sha256 in the manifest."""
    import onnx

    proto = onnx.load(str(model / f"{graph}.onnx"), load_external_data=False)
    edit(proto)
    onnx.save(proto, str(model / f"{graph}.onnx"))
    _edit_manifest(model, lambda d: d["files"][f"{graph}.onnx"].update(sha256=sha256_file(model / f"{graph}.onnx")))


def _metadata(key, value):
    def edit(proto):
        next(p for p in proto.metadata_props if p.key == key).value = value

    return edit


def _input_joints(proto):
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 22


GRAPH_EDITS = {
    "joint names reversed": (
        "log_prob",
        _metadata("joint_names", json.dumps(list(JOINT_NAMES[::-1]))),
        r"log_prob\.onnx: metadata joint_names=",
    ),
    "one joint renamed": (
        "log_prob_grad",
        _metadata("joint_names", json.dumps(["knee"] + list(JOINT_NAMES[1:]))),
        r"log_prob_grad\.onnx: metadata joint_names=",
    ),
    "masked joints edited": (
        "sample",
        _metadata("masked_joints", '["spine2"]'),
        r"sample\.onnx: metadata masked_joints=",
    ),
    "input shape 21 -> 22 joints": (
        "log_prob",
        _input_joints,
        r"log_prob\.onnx: .*22.*expected tensor\(float\) \['batch', 21, 6\]",
    ),
}


@pytest.mark.parametrize("case", GRAPH_EDITS)
def test_graph_that_disagrees_with_the_manifest(tiny_model, tmp_path, case):
    graph, edit, message = GRAPH_EDITS[case]
    model = copy_model(tiny_model, tmp_path / "m")
    _edit_graph(model, graph, edit)
    with pytest.raises(ModelError, match=message):
        PosePrior.load(model)
