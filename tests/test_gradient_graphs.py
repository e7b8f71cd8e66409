"""The two gradient graphs (``log_prob_grad``, ``latent_vjp``) and their hand-derived reverse pass.

Math: the reverse pass of ``export.graphs`` against torch autograd (float64, every activation, with and without a
masked joint) and against central finite differences, on real CMU test poses and on samples. Export: the ONNX
``latent_vjp`` run by the runtime against torch autograd (<= 1e-5 relative to max |g|) on the latents of real
test poses (through the inverse) and on random z; bad inputs; models exported before the graph existed; the
onnxruntime schedule the reverse pass's speed relies on (SiLU derivatives computed in the forward pass).
"""

import json
import shutil

import numpy as np
import pytest
import torch

from export import LatentVJP, LogProbGrad, latent_vjp_autograd, load_flow, log_prob_and_grad
from runtime import ModelError, PosePrior, rotations
from train.data import load_npz
from train.flow import PoseFlow

RELATIVE = 1e-5  # parity bound of the exported graphs, relative to max |g|
GRAPH_INPUTS = {"log_prob_grad": ("poses",), "latent_vjp": ("z", "grad_poses")}


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.fixture(scope="module")
def test_6d(shared_data) -> np.ndarray:
    aa = load_npz(shared_data / "cmu_pose" / "test.npz").rotations
    idx = np.random.default_rng(0).choice(len(aa), 200, replace=False)
    return rotations.axis_angle_to_6d(aa[idx]).astype(np.float32)


@pytest.fixture(scope="module")
def flow(tiny_model):
    return load_flow(tiny_model).requires_grad_(False)


@pytest.fixture(scope="module")
def prior(tiny_model):
    return PosePrior.load(tiny_model, providers=["CPUExecutionProvider"])


def random_flow(activation: str, masked: tuple[str, ...]) -> PoseFlow:
    """A float64 flow with every weight perturbed (a fresh flow is the identity: its last layers are zero)."""
    torch.manual_seed(len(activation) + len(masked))
    flow = PoseFlow(4, 48, 2, 3.0, activation, masked).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
        flow.shift.normal_()
        flow.log_scale.normal_(0.0, 0.3)
    return flow.requires_grad_(False)


@pytest.mark.parametrize("masked", [(), ("spine2",)])
@pytest.mark.parametrize("activation", ["silu", "relu", "tanh", "gelu"])
def test_reverse_pass_matches_autograd(activation, masked):
    flow = random_flow(activation, masked)
    x = torch.randn(6, 21, 6, dtype=torch.float64)
    log_p, grad = LogProbGrad(flow)(x)
    ref_lp, ref_grad = log_prob_and_grad(flow.log_prob, x)
    assert torch.allclose(log_p, ref_lp, rtol=1e-12, atol=1e-9) and rel_err(grad, ref_grad) < 1e-10
    z, g = torch.randn(6, flow.dim, dtype=torch.float64), torch.randn(6, 21, 6, dtype=torch.float64)
    for out, ref, name in zip(
        LatentVJP(flow)(z, g), latent_vjp_autograd(flow, z, g), ("poses", "log_prob", "grad_log_prob_z", "vjp_z")
    ):
        assert rel_err(out, ref) < 1e-10, name
    if masked:
        assert not grad[:, rotations.JOINT_NAMES.index("spine2")].any()


def central_differences(fn, x: torch.Tensor, directions: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, K): (fn(x + eps u_k) - fn(x - eps u_k)) / (2 eps) per row, for K directions u_k (K, *x.shape[1:])."""
    return torch.stack([(fn(x + eps * u) - fn(x - eps * u)) / (2 * eps) for u in directions], dim=1)


def test_gradients_match_finite_differences(flow, test_6d):
    """Directional derivatives of the trained tiny flow (in float64) on real test poses and on samples."""
    flow = flow.double()
    try:
        rng = torch.Generator().manual_seed(0)
        real = torch.from_numpy(test_6d[:8]).double()
        with torch.no_grad():
            z_samples = torch.randn(8, flow.dim, generator=rng, dtype=torch.float64)
            samples = flow(z_samples)[0]
            z_real = flow.inverse(real)[0]
        for x in (real, samples):
            u = torch.randn(4, *x.shape[1:], generator=rng, dtype=torch.float64)
            with torch.no_grad():
                _, grad = LogProbGrad(flow)(x)
                fd = central_differences(flow.log_prob, x, u)
            analytic = torch.einsum("bjc,kjc->bk", grad, u)
            assert rel_err(analytic, fd) < 1e-6
        for z in (z_real, z_samples):
            g = torch.randn(z.shape[0], 21, 6, generator=rng, dtype=torch.float64)
            u = torch.randn(4, flow.dim, generator=rng, dtype=torch.float64)
            with torch.no_grad():
                _, _, grad_z, vjp_z = LatentVJP(flow)(z, g)
                fd_lp = central_differences(lambda v: flow.latent_forward(v)[1], z, u)
                fd_x = central_differences(lambda v: (flow(v)[0] * g).sum((1, 2)), z, u)
            assert rel_err(grad_z @ u.T, fd_lp) < 1e-6
            assert rel_err(vjp_z @ u.T, fd_x) < 1e-6
    finally:
        flow.float()


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_latent_vjp_parity_with_autograd(prior, flow, test_6d, batch, report):
    """The exported graph through PosePrior.latent_vjp vs torch autograd, on the latents of real test poses and on
    random z; the pose cotangent is a seeded N(0, 1)."""
    rng = np.random.default_rng(batch)
    real = test_6d[rng.integers(0, len(test_6d), batch)]
    with torch.no_grad():
        z_real = flow.inverse(torch.from_numpy(real))[0].numpy()
    rows = []
    for label, z in (("real poses", z_real), ("random z", rng.standard_normal((batch, prior.dim), dtype=np.float32))):
        g = rng.standard_normal((batch, 21, 6), dtype=np.float32)
        out = prior.latent_vjp(z, g)
        ref = [t.numpy() for t in latent_vjp_autograd(flow, torch.from_numpy(z), torch.from_numpy(g))]
        errs = {
            "poses": float(np.abs(out[0] - ref[0]).max()),
            "log_prob": float(np.abs(out[1] - ref[1]).max() / max(1.0, np.abs(ref[1]).max())),
            "grad_log_prob_z": rel_err(out[2], ref[2]),
            "vjp_z": rel_err(out[3], ref[3]),
        }
        rows.append(f"{label:11s} {batch:5d} " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
        assert all(o.dtype == np.float32 and o.shape == r.shape for o, r in zip(out, ref))
        assert errs["poses"] <= 1e-5 and errs["log_prob"] <= 1e-6, (label, errs)
        assert errs["grad_log_prob_z"] <= RELATIVE and errs["vjp_z"] <= RELATIVE, (label, errs)
        if label == "real poses":  # f(f^-1(x)) = x, and log p(f(z)) is the density of the pose
            assert np.abs(out[0] - real).max() < 1e-4
            np.testing.assert_allclose(out[1], prior.log_prob(real), rtol=1e-5, atol=1e-3)
    report("latent_vjp (onnxruntime) vs torch autograd: poses abs, log_prob rel, gradients rel to max|.|", rows)


def test_latent_vjp_agrees_with_the_other_graphs(prior):
    z = np.random.default_rng(1).standard_normal((5, prior.dim), dtype=np.float32)
    x, log_p, grad_z, vjp_z = prior.latent_vjp(z, np.zeros((5, 21, 6), np.float32))
    x2, log_p2 = prior.latent_forward(z)
    np.testing.assert_allclose(x, x2, atol=1e-6)
    np.testing.assert_allclose(log_p, log_p2, rtol=1e-6, atol=1e-4)
    assert not vjp_z.any() and np.abs(grad_z).max() > 0  # a zero cotangent pulls back to zero
    one = prior.latent_vjp(z[0], np.ones((21, 6), np.float32))  # a single latent: unbatched outputs
    assert [o.shape for o in one] == [(21, 6), (), (prior.dim,), (prior.dim,)]


@pytest.mark.parametrize(
    "z_shape, g, match",
    [
        ((3, None), np.zeros((2, 21, 6), np.float32), r"grad_poses: shape \(2, 21, 6\), expected \(3, 21, 6\)"),
        ((3, None), np.zeros((3, 20, 6), np.float32), r"grad_poses: shape \(3, 20, 6\)"),
        ((None,), np.zeros((3, 21, 6), np.float32), r"grad_poses: shape \(3, 21, 6\), expected \(21, 6\)"),
        ((3, None), np.zeros((3, 21, 6), np.int32), r"grad_poses must be a floating-point array"),
        ((3, None), np.full((3, 21, 6), np.nan, np.float32), r"grad_poses contain NaN"),
        ((3, 5), np.zeros((3, 21, 6), np.float32), r"z: shape \(3, 5\)"),
    ],
)
def test_latent_vjp_bad_inputs(prior, z_shape, g, match):
    z = np.zeros(tuple(prior.dim if d is None else d for d in z_shape), np.float32)
    with pytest.raises(ValueError, match=match):
        prior.latent_vjp(z, g)


def test_model_without_latent_vjp(tiny_model, tmp_path):
    """A model exported before latent_vjp and encode (four graphs: neither files nor graph entries) loads and
    works; only latent_vjp is refused, clearly, and runtime.fit.encode solves iteratively. A manifest that lists
    the graph while the file is gone is refused at load; so is a graph entry without its file."""
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    (old / "latent_vjp.onnx").unlink()
    (old / "encode.onnx").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    listed = manifest["files"].pop("latent_vjp.onnx")
    del manifest["files"]["encode.onnx"], manifest["graphs"]["latent_vjp"], manifest["graphs"]["encode"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    prior = PosePrior.load(old)
    z = np.zeros((2, prior.dim), np.float32)
    assert np.isfinite(prior.latent_forward(z)[1]).all()
    with pytest.raises(ModelError, match=r"no latent_vjp\.onnx.*re-export"):
        prior.latent_vjp(z, np.zeros((2, 21, 6), np.float32))
    with pytest.raises(ModelError, match=r"no encode\.onnx.*re-export"):
        prior.encode(prior.sample(2, seed=0))

    entry_only = json.loads(json.dumps(manifest))
    entry_only["graphs"]["latent_vjp"] = json.loads((tiny_model / "manifest.json").read_text())["graphs"]["latent_vjp"]
    (old / "manifest.json").write_text(json.dumps(entry_only))
    with pytest.raises(ModelError, match=r"\['files'\]\['latent_vjp.onnx'\] is missing"):
        PosePrior.load(old)

    entry_only["files"]["latent_vjp.onnx"] = listed
    (old / "manifest.json").write_text(json.dumps(entry_only))
    with pytest.raises(ModelError, match=r"latent_vjp\.onnx: missing"):
        PosePrior.load(old)


def executed_ops(model_file, feeds: dict, tmp_path) -> list[str]:
    """The op types of one run of ``model_file`` in the order onnxruntime (default session options) ran them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    events = json.loads(open(session.end_profiling()).read())
    return [e["args"]["op_name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


@pytest.mark.parametrize("graph", ["log_prob_grad", "latent_vjp"])
def test_silu_derivative_runs_in_the_forward_pass(tiny_model, flow, tmp_path, graph):
    """The shipped schedule that export.graphs._act_vjp relies on: onnxruntime computes each SiLU derivative
    sig (1 + p - h) right after the activation (Sigmoid, Mul, then Sub, Add, Mul), before the reverse pass's first
    MatMul, so that the reverse pass reads one tensor per activation. Allowed: one coupling's worth deferred (the
    first one of latent_vjp, whose reverse pass starts first)."""
    assert isinstance(flow.layers[0].net[1], torch.nn.SiLU)
    feeds = {
        "poses": np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (4, 21, 1)),
        "z": np.zeros((4, flow.dim), np.float32),
        "grad_poses": np.ones((4, 21, 6), np.float32),
    }
    ops = executed_ops(tiny_model / f"{graph}.onnx", {k: feeds[k] for k in GRAPH_INPUTS[graph]}, tmp_path)
    forward = ops[: ops.index("MatMul")]
    depth = len(flow.layers[0].net) // 2
    activations = len(flow.layers) * depth
    early = sum(forward[i : i + 5] == ["Sigmoid", "Mul", "Sub", "Add", "Mul"] for i in range(len(forward)))
    assert forward.count("Sigmoid") == activations and early >= activations - depth, (early, activations)
