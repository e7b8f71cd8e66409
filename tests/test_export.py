"""The exported model directory: every graph in every format agrees with the torch flow, the ONNX files are
valid, self-describing, free of build paths and share one weights file, and the export is atomic."""

import json
import os
import re
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import export.exporter as exporter
from export import export_model, latent_vjp_autograd, load_flow, log_prob_and_grad
from export.cli import main as cli
from export.onnx_export import INLINE_LIMIT, OPSET
from runtime import rotations
from runtime.prior import GRAPHS, WEIGHTS_FILE, sha256_file
from train.augment import augment
from train.config import load_config
from train.data import load_npz
from train.trainer import load_checkpoint, train

BATCHES = (1, 7, 1000)
# log_prob: absolute, but at least LOG_PROB_RELATIVE relative, pose by pose (test_parity_on_real_and_sampled_poses)
# and batch by batch: log p is a difference of terms (log N(z), the sum of the couplings' log-scales) several times
# larger than itself, so its error is a few float32 ulps of those terms. Measured on the real test split (2,522):
# up to 9.2e-5 on the 300-step fixture model, 1.2e-4 on a tiny preset trained 416 steps (the old bound, 1e-4, fails
# there), issue 11 saw 2.1e-4 on the CI-trained one; samples and augmented val poses: up to 9.2e-5.
# grad: relative to max |grad| (of the batch; of each pose for real and sampled poses).
# grad_log_prob_z, vjp_z (latent_vjp): relative to their max |.| too.
# z (encode): relative to max |z| as well.
TOLERANCE = {"log_prob": 5e-4, "poses": 1e-5, "grad": 1e-5, "grad_log_prob_z": 1e-5, "vjp_z": 1e-5, "z": 1e-5}
RELATIVE = ("grad", "grad_log_prob_z", "vjp_z", "z")
LOG_PROB_RELATIVE = 2e-6
TORCHSCRIPT = ("log_prob", "sample", "latent_forward")
BUILD_PATH = re.compile(rb"/(?:work|tmp|root|home|Users)/")


@pytest.fixture(scope="module")
def manifest(tiny_model):
    return json.loads((tiny_model / "manifest.json").read_text())


@pytest.fixture(scope="module")
def flow(tiny_model, request):
    """The torch reference: the run's checkpoint, or (for $POSEPRIOR_TEST_MODEL) the flow rebuilt from the .pt2."""
    if os.environ.get("POSEPRIOR_TEST_MODEL"):
        return load_flow(tiny_model)
    return load_checkpoint(request.getfixturevalue("tiny_run") / "best.pt")[0]


@pytest.fixture(scope="module")
def val_6d(shared_data):
    return rotations.axis_angle_to_6d(load_npz(shared_data / "cmu_pose" / "val.npz").rotations).astype(np.float32)


def inputs(name: str, batch: int, val_6d: np.ndarray, manifest: dict) -> tuple[np.ndarray, ...]:
    """In-distribution inputs, one per graph input: held-out poses, half of them augmented as in training; or
    z ~ N(0, I) (with a N(0, 1) cotangent grad_poses for latent_vjp)."""
    rng = np.random.default_rng(batch)
    if GRAPHS[name].inputs[0] == "z":
        z = rng.standard_normal((batch, manifest["dim"]), dtype=np.float32)
        return (z, rng.standard_normal((batch, 21, 6), dtype=np.float32)) if name == "latent_vjp" else (z,)
    cfg = manifest["training"]["config"]
    x = torch.from_numpy(val_6d[rng.integers(0, len(val_6d), batch)])
    aug = augment(x, cfg["alpha"], cfg["beta"], torch.Generator().manual_seed(batch), cfg.get("noise", 0.0))
    return (torch.where(torch.arange(batch)[:, None, None] % 2 == 1, aug, x).numpy(),)


def reference(flow, name: str, x: torch.Tensor, *more: torch.Tensor) -> list[np.ndarray]:
    if name == "log_prob_grad":
        return [t.numpy() for t in log_prob_and_grad(flow.log_prob, x)]
    if name == "latent_vjp":
        return [t.numpy() for t in latent_vjp_autograd(flow, x, *more)]
    with torch.no_grad():
        out = {
            "log_prob": lambda: flow.log_prob(x),
            "sample": lambda: flow(x)[0],
            "latent_forward": lambda: flow.latent_forward(x),
            "encode": lambda: (flow.inverse(x)[0], flow.log_prob(x)),
        }[name]()
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.fixture(scope="module")
def backends(tiny_model):
    """graph name -> backend name -> callable numpy input -> list of numpy outputs."""

    def torch_fn(module):
        def run(*x):
            with torch.no_grad():
                out = module(*map(torch.from_numpy, x))
            return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

        return run

    table = {}
    for name, g in GRAPHS.items():
        session = ort.InferenceSession(str(tiny_model / g.file), providers=["CPUExecutionProvider"])
        table[name] = {
            "onnxruntime": lambda *x, s=session, i=g.inputs: s.run(None, dict(zip(i, x))),
            "pt2": torch_fn(torch.export.load(tiny_model / "pt2" / f"{name}.pt2").module()),
        }
        if name in TORCHSCRIPT:
            table[name]["torchscript"] = torch_fn(torch.jit.load(str(tiny_model / "torchscript" / f"{name}.pt")))
    return table


def test_parity_with_torch(flow, backends, val_6d, manifest, report):
    """onnxruntime, .pt2 and TorchScript against the eager flow (gradient: against torch autograd)."""
    rows, failures = [], []
    for name, g in GRAPHS.items():
        for batch in BATCHES:
            x = inputs(name, batch, val_6d, manifest)
            ref = reference(flow, name, *map(torch.from_numpy, x))
            for backend, run in backends[name].items():
                out = run(*x)
                errors = {}
                for output, a, r in zip(g.outputs, out, ref):
                    assert a.shape == r.shape and a.dtype == np.float32, (name, backend, output, a.shape, r.shape)
                    err = float(np.abs(a - r).max())
                    errors[output] = err / float(np.abs(r).max()) if output in RELATIVE else err
                    tolerance = TOLERANCE[output]
                    if output == "log_prob":
                        tolerance = max(tolerance, LOG_PROB_RELATIVE * float(np.abs(r).max()))
                    if errors[output] > tolerance:
                        failures.append(f"{name} batch {batch} {backend} {output}: {errors[output]:.2e}")
                rows.append((name, batch, backend, errors))
    table = [
        f"{'graph':15s} {'batch':>5s}  {'backend':12s} {'log_prob':>9s} {'poses':>9s} {'grad/max':>9s} "
        f"{'gz/max':>9s} {'vjp/max':>9s} {'z/max':>9s}"
    ]
    for name, batch, backend, errors in rows:
        cells = [f"{errors[k]:9.1e}" if k in errors else f"{'-':>9s}" for k in ("log_prob", "poses", *RELATIVE)]
        table.append(f"{name:15s} {batch:5d}  {backend:12s} {' '.join(cells)}")
    report("exported graphs vs the eager torch flow: max |error| (gradients: relative to their max |.|)", table)
    assert not failures, "\n".join(failures + table)


@pytest.fixture(scope="module")
def test_6d(shared_data):
    return rotations.axis_angle_to_6d(
        load_npz(shared_data / "cmu_pose" / "test.npz").rotations.astype(np.float64)
    ).astype(np.float32)


def test_parity_on_real_and_sampled_poses(flow, backends, test_6d, tiny_model, report):
    """onnxruntime's density and gradient graphs vs the eager flow on EVERY real pose of the test split (2,522,
    subject 03) and on as many of the model's samples (orthonormalised and raw), pose by pose."""
    from runtime import PosePrior

    prior = PosePrior.load(tiny_model)
    sets = {
        "test split (real)": test_6d,
        "samples": prior.sample(len(test_6d), seed=0),
        "raw samples": prior.sample(len(test_6d), seed=0, orthonormalize=False),
    }
    rows, failures = [], []
    for name, x in sets.items():
        ref_lp, ref_grad = (t.numpy() for t in log_prob_and_grad(flow.log_prob, torch.from_numpy(x)))
        (lp,) = backends["log_prob"]["onnxruntime"](x)
        lp_g, grad = backends["log_prob_grad"]["onnxruntime"](x)
        err = np.maximum(np.abs(lp - ref_lp), np.abs(lp_g - ref_lp))
        bound = np.maximum(TOLERANCE["log_prob"], LOG_PROB_RELATIVE * np.abs(ref_lp))
        grad_err = np.abs(grad - ref_grad).max(axis=(1, 2)) / np.abs(ref_grad).max(axis=(1, 2))
        over = int((err > bound).sum()) + int((grad_err > TOLERANCE["grad"]).sum())
        rows.append(
            f"{name:18s} {len(x):6d} {np.abs(ref_lp).max():9.3g} {err.max():10.2e} "
            f"{(err / np.maximum(np.abs(ref_lp), 1.0)).max():10.2e} {grad_err.max():10.2e} {over:5d}"
        )
        if over:
            failures.append(f"{name}: {over} poses beyond the bound (log p error up to {err.max():.2e})")
    table = [f"{'poses':18s} {'n':>6s} {'max|lp|':>9s} {'lp err':>10s} {'lp rel':>10s} {'grad rel':>10s} {'over':>5s}"]
    report(
        f"onnxruntime vs torch per pose (bound: log p max({TOLERANCE['log_prob']:g}, {LOG_PROB_RELATIVE:g}|log p|),"
        f" grad {TOLERANCE['grad']:g} max|g| of the pose)",
        table + rows,
    )
    assert not failures, "\n".join(failures + table + rows)


def test_graphs_are_valid_and_named(tiny_model, manifest):
    for name, g in GRAPHS.items():
        path = tiny_model / g.file
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
        for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
            assert [v.name for v in values] == list(getattr(g, kind))
            for v in values:
                assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                assert dims == manifest["graphs"][name][kind][v.name] and dims[0] == "batch"


def test_one_shared_weights_file(tiny_model):
    """Large tensors of all graphs live in weights.bin, each distinct content once; small ones stay inline."""
    weights = (tiny_model / WEIGHTS_FILE).read_bytes()
    ranges = {}
    for name, g in GRAPHS.items():
        model = onnx.load(str(tiny_model / g.file), load_external_data=False)
        used = set()
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                assert info["location"] == WEIGHTS_FILE, t.name
                used.add((int(info["offset"]), int(info["length"])))
                assert int(info["length"]) >= INLINE_LIMIT
            else:
                assert len(t.raw_data) < INLINE_LIMIT, f"{name}: {t.name} inline but {len(t.raw_data)} bytes"
        ranges[name] = used
        for node in model.graph.node:  # no weights hidden in Constant nodes either
            for attr in node.attribute:
                assert not (attr.type == onnx.AttributeProto.TENSOR and len(attr.t.raw_data) >= INLINE_LIMIT), node.name
    assert len({frozenset(r) for r in ranges.values()}) == 1, "graphs use different weight tensors"
    spans = sorted(ranges["log_prob"])
    contents = [weights[o : o + n] for o, n in spans]
    assert len(set(contents)) == len(contents), "a tensor is stored twice"
    assert all(a[0] + a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping tensors"
    assert spans[-1][0] + spans[-1][1] == len(weights)
    assert len(weights) - sum(n for _, n in spans) < 64 * len(spans), "unused bytes beyond alignment padding"
    assert not [p.name for p in tiny_model.iterdir() if p.suffix in (".data", ".bin") and p.name != WEIGHTS_FILE]


def test_no_build_machine_paths(tiny_model):
    for path in sorted(p for p in tiny_model.rglob("*") if p.is_file()):
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                blobs += [z.read(n) for n in z.namelist()]
        found = [m.group() for b in blobs for m in BUILD_PATH.finditer(b)]
        assert not found, f"{path.relative_to(tiny_model)} holds absolute paths {found[:3]}"


def test_metadata_props(tiny_model, manifest):
    expected = {
        "format_version": "1",
        "joint_names": json.dumps(list(rotations.JOINT_NAMES)),
        "num_joints": "21",
        "dim": str(manifest["dim"]),
        "masked_joints": json.dumps(manifest["masked_joints"]),
        "weights_sha256": sha256_file(tiny_model / WEIGHTS_FILE),
        "config_sha256": manifest["training"]["config_sha256"],
    }
    for name, g in GRAPHS.items():
        meta = {p.key: p.value for p in onnx.load(str(tiny_model / g.file), load_external_data=False).metadata_props}
        assert {k: meta.get(k) for k in expected} == expected
        assert meta["graph"] == name
        assert "[R00 R10 R20 R01 R11 R21]" in meta["rotation_6d"] and "(batch, 21, 6)" in meta["layout"]
        assert {"torch", "onnx", "onnxscript", "opset"} <= set(json.loads(meta["exporter"]))


def test_manifest(tiny_model, manifest):
    files = {p.relative_to(tiny_model).as_posix() for p in tiny_model.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for name, f in manifest["files"].items():
        assert sha256_file(tiny_model / name) == f["sha256"], name
        assert (tiny_model / name).stat().st_size == f["bytes"]
    assert {g.file for g in GRAPHS.values()} | {WEIGHTS_FILE} <= files
    assert {f"pt2/{g}.pt2" for g in GRAPHS} | {f"torchscript/{g}.pt" for g in TORCHSCRIPT} <= files
    assert manifest["format_version"] == 1 and manifest["joint_names"] == list(rotations.JOINT_NAMES)
    assert manifest["dim"] == 6 * (21 - len(manifest["masked_joints"]))
    t = manifest["training"]
    assert t["data_sha256"] and all(len(v) == 64 for v in t["data_sha256"].values())
    assert np.isfinite(t["val_log_p"]) and t["checkpoint"] in ("best.pt", "last.pt")
    assert set(manifest["conventions"]) >= {"rotation_6d", "poses", "latent", "log_prob", "gram_schmidt"}


def test_manifest_records_the_run(tiny_model, manifest, request):
    if os.environ.get("POSEPRIOR_TEST_MODEL") and not os.environ.get("POSEPRIOR_TEST_RUN"):
        pytest.skip("$POSEPRIOR_TEST_MODEL is set without $POSEPRIOR_TEST_RUN, the run it was exported from")
    run = request.getfixturevalue("tiny_run")
    flow, ckpt = load_checkpoint(run / "best.pt")
    t = manifest["training"]
    assert t["config"] == ckpt["config"] and t["config_sha256"] == ckpt["config_sha256"]
    assert t["data_sha256"] == ckpt["data_sha256"] and t["epoch"] == ckpt["state"]["epoch"]
    summary = json.loads((run / "summary.json").read_text())
    assert t["summary"] == summary and t["val_log_p"] == pytest.approx(summary["best_val_log_p"])
    rebuilt = load_flow(tiny_model).state_dict()  # the .pt2 holds the checkpoint's weights exactly
    assert all(torch.equal(rebuilt[k], v) for k, v in flow.state_dict().items())


def test_export_is_atomic(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "model"
    calls = []

    def fail_on_second_graph(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real(*args)

    real = exporter.export_program
    monkeypatch.setattr(exporter, "export_program", fail_on_second_graph)
    with pytest.raises(RuntimeError, match="injected"):
        export_model(tiny_run, out)
    assert list(tmp_path.iterdir()) == [], "a failed export left files behind"

    # a model directory is replaced; any other non-empty directory is refused
    def fake_build(flow, tmp, record, torch_artifacts=True):
        (tmp / "manifest.json").write_text("{}")
        return {"files": {}}

    monkeypatch.setattr(exporter, "_build", fake_build)
    out.mkdir()
    (out / "manifest.json").write_text('{"old": 1}')
    export_model(tiny_run, out)
    assert (out / "manifest.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model directory"):
        export_model(tiny_run, other)
    assert (other / "x.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="best.*last"):
        export_model(tiny_run, tmp_path / "m2", which="worst")


def test_cli_export(tiny_run, tmp_path, monkeypatch):
    seen = {}

    def fake_export(run_dir, out_dir, which, torch_artifacts):
        seen.update(run_dir=run_dir, out_dir=out_dir, which=which, torch_artifacts=torch_artifacts)
        return {
            "files": {"log_prob.onnx": {"bytes": 1000}},
            "export_seconds": 1.0,
            "training": {"epoch": 3, "val_log_p": 150.0},
        }

    monkeypatch.setattr("export.cli.export_model", fake_export)
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "m"), "--which", "last"])
    assert result.exit_code == 0, result.output
    assert seen == {"run_dir": tiny_run, "out_dir": tmp_path / "m", "which": "last", "torch_artifacts": True}
    assert "log_prob.onnx" in result.output
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "m"), "--onnx-only"])
    assert result.exit_code == 0 and seen["torch_artifacts"] is False
    monkeypatch.undo()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "no_run"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "checkpoint not found" in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_masked_joint_model(shared_data, tmp_path):
    """A model that does not model spine2 (as for the Bandai data): 120-d latent, identity spine2 in samples,
    zero gradient there, and the same parity."""
    from runtime import PosePrior

    data = {split: load_npz(shared_data / "cmu_pose" / f"{split}.npz") for split in ("train", "val")}
    cfg = load_config("tiny")
    cfg.masked_joints = ["spine2"]
    train(cfg, data["train"], data["val"], tmp_path / "run", max_steps=20, progress=False)
    export_model(tmp_path / "run", tmp_path / "model")
    flow = load_checkpoint(tmp_path / "run" / "best.pt")[0]
    prior = PosePrior.load(tmp_path / "model")
    assert (prior.dim, prior.masked_joints) == (120, ("spine2",))

    spine2 = rotations.JOINT_NAMES.index("spine2")
    z = np.random.default_rng(0).standard_normal((50, 120), dtype=np.float32)
    x = prior.sample(z=z, orthonormalize=False)
    np.testing.assert_allclose(x, flow(torch.from_numpy(z))[0].detach().numpy(), atol=1e-5)
    assert np.array_equal(x[:, spine2], np.tile(rotations.IDENTITY_6D.astype(np.float32), (50, 1)))
    for module in (
        torch.jit.load(str(tmp_path / "model" / "torchscript" / "sample.pt")),
        torch.export.load(tmp_path / "model" / "pt2" / "sample.pt2").module(),
    ):
        np.testing.assert_allclose(module(torch.from_numpy(z)).detach().numpy(), x, atol=1e-5)
    poses = rotations.axis_angle_to_6d(data["val"].rotations[:50]).astype(np.float32)
    log_p, grad = prior.log_prob_and_grad(poses)
    ref_lp, ref_grad = log_prob_and_grad(flow.log_prob, torch.from_numpy(poses))
    np.testing.assert_allclose(log_p, ref_lp.numpy(), atol=1e-4)
    np.testing.assert_allclose(grad, ref_grad.numpy(), atol=1e-5 * float(ref_grad.abs().max()))
    assert not grad[:, spine2].any()
    poses[:, spine2] = 5.0  # a masked joint does not change the density
    np.testing.assert_allclose(prior.log_prob(poses), log_p, atol=1e-4)


def test_bench_gemm_floor_graph_is_the_flows_matrix_products(flow):
    """`make bench`'s floor graph: the flow's Linear layers alone, chained, computed by onnxruntime."""
    from export.bench import gemm_chain

    session = ort.InferenceSession(gemm_chain(flow), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, flow.dim // 2)).astype(np.float32)
    h = torch.from_numpy(x).double()
    linears = [m for layer in flow.layers for m in layer.net if isinstance(m, torch.nn.Linear)]
    for lin in linears:
        h = torch.nn.functional.linear(h[:, : lin.in_features], lin.weight.double(), lin.bias.double())
    assert len(session.get_inputs()) == 1 and len(linears) == len(flow.layers) * (len(flow.layers[0].net) + 1) // 2
    np.testing.assert_allclose(session.run(None, {"x": x})[0], h.detach().numpy(), rtol=1e-4, atol=1e-4)
