"""The torch-free runtime: loads and verifies a model directory, checks its inputs, converts representations,
samples reproducibly, and is safe to call from several threads."""
import json
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
    assert sorted(training["data_sha256"]) == ["cmu_pose/train.npz", "cmu_pose/val.npz"]
    assert (training["config"]["num_layers"], training["config"]["hidden"], training["config"]["depth"]) == (12, 256, 4)
    on_disk = {p.name for p in prior.path.iterdir()}
    required = {g.file for g in GRAPHS.values() if g.required} | {WEIGHTS_FILE, "manifest.json"}
    assert required <= on_disk <= required | {g.file for g in GRAPHS.values()}   # ONNX only: small
    assert sum((prior.path / f).stat().st_size for f in on_disk) < 20e6
    real = prior.log_prob(aa, rep="axis_angle")
    knees = aa.copy()
    knees[:, [3, 4]] = [-1.4, 0.0, 0.0]   # both knees bent 80 degrees the wrong way
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
    "manifest of another model": (lambda m: _edit_manifest(m, lambda d: d["files"][WEIGHTS_FILE].update(sha256="0" * 64)),
                                  r"weights\.bin: sha256"),
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
    single = PosePrior.load(tiny_model, providers=["CPUExecutionProvider"], intra_op_num_threads=1,
                            allow_spinning=False)
    assert single.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(single.log_prob(poses), prior.log_prob(poses), atol=1e-4)


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
    for z, message in ((np.zeros((3, prior.dim + 1), np.float32), "shape"), (np.zeros((0, prior.dim)), "empty"),
                       (np.full((2, prior.dim), np.nan), "NaN"), (np.zeros((2, prior.dim), int), "floating")):
        for call in (prior.latent_forward, lambda z: prior.sample(z=z)):
            with pytest.raises(ValueError, match=message):
                call(z)
    for kwargs, message in (({}, "give n"), ({"n": 0}, "give n"), ({"n": 2, "z": np.zeros((2, prior.dim))}, "as given"),
                            ({"z": np.zeros((2, prior.dim)), "temperature": 0.5}, "as given")):
        with pytest.raises(ValueError, match=message):
            prior.sample(**kwargs)


def test_float64_is_cast(prior, poses):
    assert prior.log_prob(poses.astype(np.float64)).dtype == np.float32
    np.testing.assert_array_equal(prior.log_prob(poses.astype(np.float64)), prior.log_prob(poses))


# --- representations ---------------------------------------------------------------------------------------------
def test_representations_agree(prior, aa, poses):
    log_p = prior.log_prob(poses)
    R = rotations.axis_angle_to_matrix(aa)
    for x, rep in ((R, "matrix"), (aa, "axis_angle"), (aa.reshape(64, 63), "axis_angle"),
                   (aa.astype(np.float32), "axis_angle")):
        np.testing.assert_allclose(prior.log_prob(x, rep=rep), log_p, atol=2e-3, err_msg=f"{rep} {x.shape}")


def test_gradient_in_each_representation(prior, tiny_model, aa, poses):
    log_p, g6 = prior.log_prob_and_grad(poses)
    np.testing.assert_allclose(log_p, prior.log_prob(poses), atol=1e-4)
    _, gR = prior.log_prob_and_grad(rotations.axis_angle_to_matrix(aa), rep="matrix")
    assert gR.shape == (64, 21, 3, 3) and not gR[..., 2].any()
    np.testing.assert_allclose(np.concatenate([gR[..., 0], gR[..., 1]], -1), g6, rtol=1e-3,
                               atol=1e-3 * np.abs(g6).max())
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
    w = np.concatenate([rng.standard_normal((20, 3)), rng.standard_normal((5, 3)) * 1e-9, np.zeros((1, 3)),
                        rng.standard_normal((5, 3)) / np.sqrt(3) * (np.pi - 1e-3)])
    C = rng.standard_normal((len(w), 6))
    analytic = axis_angle_vjp(w, C)
    eps, numeric = 1e-6, np.zeros_like(w)
    for i in range(3):
        d = np.zeros(3)
        d[i] = eps
        numeric[:, i] = (np.sum(C * rotations.axis_angle_to_6d(w + d), -1)
                         - np.sum(C * rotations.axis_angle_to_6d(w - d), -1)) / (2 * eps)
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
    a1, a2 = a[..., :3], a[..., 3:]      # orthonormalised: unit columns, orthogonal
    assert np.abs(np.linalg.norm(a1, axis=-1) - 1).max() < 1e-5 and np.abs(np.linalg.norm(a2, axis=-1) - 1).max() < 1e-5
    assert np.abs(np.sum(a1 * a2, -1)).max() < 1e-5
    raw = prior.sample(100, seed=7, orthonormalize=False)
    assert np.abs(np.linalg.norm(raw[..., :3], axis=-1) - 1).max() > 1e-3, "raw samples should not be orthonormal"
    np.testing.assert_allclose(rotations.orthonormalize_6d(raw), a, atol=1e-6)
    cold = prior.sample(3, seed=1, temperature=0.0, orthonormalize=False)
    np.testing.assert_array_equal(cold, np.broadcast_to(prior.sample(z=np.zeros(prior.dim), orthonormalize=False), cold.shape))


def test_sample_with_z_is_latent_forward(prior):
    z = np.random.default_rng(0).standard_normal((50, prior.dim), dtype=np.float32)
    x, log_p = prior.latent_forward(z)
    np.testing.assert_array_equal(prior.sample(z=z, orthonormalize=False), x)
    # the one-pass density equals the density of the produced poses (an inverse pass), up to float32 round trip
    np.testing.assert_allclose(prior.log_prob(x), log_p, rtol=1e-4, atol=1e-2)


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
