"""``export_model``: a training run -> a model directory that the torch-free runtime loads.

Layout of the model directory::

    manifest.json           format version, files + sha256, joints, conventions, dims, training record
    weights.bin             the weights of all six graphs, each distinct tensor once
    log_prob.onnx           poses (batch, 21, 6) -> log_prob (batch)
    sample.onnx             z (batch, D) -> poses (batch, 21, 6)             raw, not orthonormalised
    latent_forward.onnx     z (batch, D) -> poses (batch, 21, 6), log_prob (batch)
    log_prob_grad.onnx      poses (batch, 21, 6) -> log_prob (batch), grad (batch, 21, 6)
    latent_vjp.onnx         z (batch, D), grad_poses (batch, 21, 6) -> poses (batch, 21, 6), log_prob (batch),
                            grad_log_prob_z (batch, D), vjp_z (batch, D)
    encode.onnx             poses (batch, 21, 6) -> z (batch, D), log_prob (batch)     the exact inverse f^-1
    pt2/<graph>.pt2         torch.export programs of the six graphs
    torchscript/<graph>.pt  TorchScript of log_prob, sample, latent_forward

The directory is built beside ``out_dir`` (``.NAME.partial-PID-*``) and renamed into place at the end, so a
failed export leaves nothing; an existing model directory at ``out_dir`` is replaced (moved aside to
``.NAME.old-PID-*`` first), anything else there is refused. An export killed outright (SIGKILL, power loss) can
leave those hidden directories behind: every export first removes the ones of ``out_dir`` whose process (PID in
the name) is no longer running.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import onnx
import torch

from runtime.atomic import pid_alive
from runtime.prior import FORMAT_VERSION, GRAPHS, WEIGHTS_FILE, sha256_file
from runtime.rotations import JOINT_NAMES, NUM_JOINTS
from train.trainer import load_checkpoint

from .graphs import Encode, LatentForward, LatentVJP, LogProb, LogProbGrad, Sample
from .onnx_export import OPSET, set_metadata, share_weights, to_onnx
from .torch_export import export_program, save_pt2, save_torchscript

MODULES = {
    "log_prob": LogProb,
    "sample": Sample,
    "latent_forward": LatentForward,
    "log_prob_grad": LogProbGrad,
    "latent_vjp": LatentVJP,
    "encode": Encode,
}
TORCHSCRIPT = ("log_prob", "sample", "latent_forward")
EXAMPLE_BATCH = 3  # > 1, so that torch.export does not specialise the batch size

CONVENTIONS = {
    "rotation_6d": "first two columns of the rotation matrix R, contiguous: [R00 R10 R20 R01 R11 R21] "
    "(not VPoser's interleaved [R00 R01 R10 R11 R20 R21], not PyTorch3D's rows)",
    "poses": "(batch, 21, 6) float32: local rotations of the 21 non-root SMPL body joints in joint_names order, "
    "each in 6D",
    "latent": "z (batch, dim) float32, base distribution N(0, I_dim); dim = 6 x (21 - len(masked_joints))",
    "log_prob": "natural log density of the 6D pose in R^dim: log p(x) = log N(f^-1(x); 0, I) + "
    "log|det d f^-1/dx|, with f the flow latent -> pose",
    "gram_schmidt": "e1 = b1/|b1|, e2 = normalize(b2 - (e1.b2) e1), e3 = e1 x e2, R = [e1 e2 e3]; samples are "
    "raw flow outputs: orthonormalise them before use as rotations",
    "masked_joints": "not modelled: ignored by log_prob (zero gradient), sampled as the identity",
}
GRAPH_DOCS = {
    "log_prob": "log p of 6D poses",
    "sample": "raw poses f(z) from latents z",
    "latent_forward": "poses f(z) and log p(f(z)) = log N(z) - log|det df/dz| in one pass",
    "log_prob_grad": "log p of 6D poses and its gradient d log p / d poses",
    "latent_vjp": "poses f(z), log p(f(z)) = log N(z) - log|det df/dz|, d log p(f(z)) / dz and (df/dz)^T grad_poses "
    "in one forward and one reverse pass",
    "encode": "latents z = f^-1(poses) and log p(poses): the flow's exact inverse",
}
LATENT_SHAPED = ("z", "grad_log_prob_z", "vjp_z")


def _shape(name: str, dim: int) -> list:
    return ["batch"] if name == "log_prob" else ["batch", dim] if name in LATENT_SHAPED else ["batch", NUM_JOINTS, 6]


def _read_json(path: Path, lines: bool = False):
    """A JSON file (``lines``: JSON lines) of a run directory, or ValueError naming it."""
    try:
        text = path.read_text()
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()] if lines else json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _training_record(run_dir: Path, ckpt: dict, which: str) -> dict:
    """What the model was trained on and how well: config, data checksums, the checkpoint's epoch and metrics."""
    state = ckpt["state"]
    if isinstance(ckpt.get("metrics"), list):  # the checkpoint's own history (runs since issue 11)
        rows = ckpt["metrics"]
    else:
        rows = _read_json(run_dir / "metrics.jsonl", lines=True) if (run_dir / "metrics.jsonl").is_file() else []
    row = next((r for r in rows if isinstance(r, dict) and r.get("epoch") == state["epoch"]), None)
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    return {
        "run": run_dir.resolve().name,
        "checkpoint": f"{which}.pt",
        "epoch": state["epoch"],
        "step": state["step"],
        "val_log_p": None if row is None else row.get("val_log_p"),
        "best_epoch": state["best_epoch"],
        "best_val_log_p": state["best_val"],
        "config": ckpt["config"],
        "config_sha256": ckpt["config_sha256"],
        "data_sha256": ckpt["data_sha256"],
        "noisy_joints": ckpt.get("noisy_joints", []),
        "summary": summary,
    }


def _build(flow, out: Path, record: dict, torch_artifacts: bool = True) -> dict:
    """Write every file of the model directory into ``out`` (empty); returns the manifest.

    ``torch_artifacts=False`` writes only what the runtime reads (the ONNX graphs, weights, manifest): the form
    shipped inside the runtime package.
    """
    examples = {
        "poses": torch.zeros(EXAMPLE_BATCH, NUM_JOINTS, 6),
        "z": torch.zeros(EXAMPLE_BATCH, flow.dim),
        "grad_poses": torch.zeros(EXAMPLE_BATCH, NUM_JOINTS, 6),
    }
    if torch_artifacts:
        (out / "pt2").mkdir()
        (out / "torchscript").mkdir()
    models = {}
    for name, graph in GRAPHS.items():
        module, example = MODULES[name](flow).eval(), [examples[i] for i in graph.inputs]
        program = export_program(module, *example)
        models[name] = to_onnx(program, graph)
        if torch_artifacts:
            save_pt2(program, out / "pt2" / f"{name}.pt2")
            if name in TORCHSCRIPT:
                save_torchscript(module, example[0], out / "torchscript" / f"{name}.pt")

    share_weights(models, out / WEIGHTS_FILE)
    masked = list(record["config"]["masked_joints"])
    # the convention of the training data: "smpl" (converted by make data; with SMPL's rest joints, which
    # runtime.convert reads back) or the source's own rotations (older runs on ../shared/data/cmu_pose directly)
    skeleton = (record.get("summary") or {}).get("skeleton") or {"name": "source", "conversion": None}
    versions = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": version("onnxscript"),
        "opset": OPSET,
    }
    common = {
        "format_version": str(FORMAT_VERSION),
        "joint_names": json.dumps(list(JOINT_NAMES)),
        "rotation_6d": CONVENTIONS["rotation_6d"],
        "layout": CONVENTIONS["poses"],
        "num_joints": str(NUM_JOINTS),
        "dim": str(flow.dim),
        "masked_joints": json.dumps(masked),
        "weights_sha256": sha256_file(out / WEIGHTS_FILE),
        "config_sha256": record["config_sha256"],
        "exporter": json.dumps(versions),
        "skeleton": skeleton["name"],
    }
    for name, model in models.items():
        set_metadata(model, {"graph": name, **common}, f"poseprior {name}: {GRAPH_DOCS[name]}")
        onnx.save(model, out / GRAPHS[name].file)
        onnx.checker.check_model(str(out / GRAPHS[name].file), full_check=True)

    manifest = {
        "format_version": FORMAT_VERSION,
        "joint_names": list(JOINT_NAMES),
        "num_joints": NUM_JOINTS,
        "dim": flow.dim,
        "masked_joints": masked,
        "conventions": CONVENTIONS,
        "skeleton": skeleton,
        "graphs": {
            name: {
                "file": g.file,
                "doc": GRAPH_DOCS[name],
                "inputs": {i: _shape(i, flow.dim) for i in g.inputs},
                "outputs": {o: _shape(o, flow.dim) for o in g.outputs},
            }
            for name, g in GRAPHS.items()
        },
        "torch": {
            "pt2": {name: f"pt2/{name}.pt2" for name in GRAPHS},
            "torchscript": {name: f"torchscript/{name}.pt" for name in TORCHSCRIPT},
        }
        if torch_artifacts
        else {},
        "training": record,
        "exporter": versions,
        "files": {
            p.relative_to(out).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(out.rglob("*"))
            if p.is_file()
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` directories that exports of ``out_dir`` killed
    outright left beside it (their PID no longer runs); returns what was removed."""
    removed = []
    for p in out_dir.parent.glob(f".{out_dir.name}.*-*-*"):
        kind, _, rest = p.name[len(out_dir.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("partial", "old") and pid.isdigit() and p.is_dir() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def export_model(run_dir: str | Path, out_dir: str | Path, which: str = "best", torch_artifacts: bool = True) -> dict:
    """Export checkpoint ``which`` ("best" or "last") of training run ``run_dir`` into model directory
    ``out_dir``; returns the manifest (with ``export_seconds`` added, not written). ``torch_artifacts=False``:
    ONNX only (no .pt2 / TorchScript)."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file, not a model directory; not replacing it")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise ValueError(f"{out_dir}: exists, is not empty and is not a model directory; not replacing it")
    t0 = time.monotonic()
    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{run_dir / 'config.json'}: not a JSON object of config keys")
    if config.get("model", "flow") != "flow":
        raise ValueError(f"{run_dir}: a {config['model']} run; only flow runs export to the runtime's format")
    flow, ckpt = load_checkpoint(run_dir / f"{which}.pt")
    flow.requires_grad_(False)
    record = _training_record(run_dir, ckpt, which)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shipped
    try:
        manifest = _build(flow, tmp, record, torch_artifacts)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**manifest, "export_seconds": round(time.monotonic() - t0, 2)}
