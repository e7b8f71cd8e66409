"""The model directory's ``manifest.json``: its one schema, and the checks of a directory's files and graphs.

Required fields (anything else, e.g. ``conventions``, ``training``, ``exporter``, ``torch``, is free-form)::

    format_version  int, == FORMAT_VERSION
    joint_names     list of str, == runtime.rotations.JOINT_NAMES
    num_joints      int, == len(joint_names) (21)
    masked_joints   list of distinct str, each in joint_names
    dim             int, == 6 * (num_joints - len(masked_joints))   (the latent size D)
    files           {relative path: {"sha256": 64 lowercase hex digits, "bytes": int >= 0 (optional)}}, listing
                    at least every graph file and weights.bin
    graphs          {graph name: {"file": "<name>.onnx", "inputs": {tensor: shape}, "outputs": {tensor: shape}}}
                    for every graph the runtime runs, with the tensor names of its role and the shapes of
                    ``tensor_shape`` (``"batch"`` for the dynamic axis)

Optional, checked when present: ``skeleton``/``plausibility`` (``_skeleton``) and ``detector`` (``_detector``: the
take-QA calibration written by ``poseprior calibrate``).

Every problem raises ``ModelError`` naming the file and the field. Each ONNX graph is then checked against the
manifest (``check_graph``): its metadata (format version, role, dim, num_joints, joint_names, masked_joints,
weights sha256), its input/output names, and their shapes (static dims 21, 6, D; dynamic batch).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .rotations import JOINT_NAMES

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.bin"
BATCH = "batch"
#: Shape of each named graph tensor; "dim" stands for the manifest's dim (D).
TENSOR_SHAPES: dict[str, tuple] = {
    "poses": (BATCH, len(JOINT_NAMES), 6),
    "grad": (BATCH, len(JOINT_NAMES), 6),
    "z": (BATCH, "dim"),
    "log_prob": (BATCH,),
    "grad_poses": (BATCH, len(JOINT_NAMES), 6),
    "grad_log_prob_z": (BATCH, "dim"),
    "vjp_z": (BATCH, "dim"),
}
#: Working memory of one input row of a graph whose role sets no ``row_bytes`` (the largest measured).
DEFAULT_ROW_BYTES = 128 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelError(ValueError):
    """A model directory is missing, incomplete, modified, or not a pose-prior model; the message says which file."""


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of a model: its role, the names of its inputs and outputs, its working memory per input row
    in bytes (measured for the paper architecture by ``make bench-memory``; sets the chunk size), and the shapes
    of tensors that ``TENSOR_SHAPES`` does not name (``{"tensor": ("batch", 21, 6)}``; "dim" stands for D), and
    whether every model must have it (``required=False``: models exported before the graph existed load without
    it). Every input and output has the batch on axis 0."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    row_bytes: int = DEFAULT_ROW_BYTES
    shapes: dict | None = None
    required: bool = True

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def tensor_shape(graph: Graph, tensor: str, dim: int) -> list:
    """The shape a tensor of ``graph`` must have (``graph.shapes``, else ``TENSOR_SHAPES``; D filled in)."""
    return [dim if d == "dim" else d for d in {**TENSOR_SHAPES, **(graph.shapes or {})}[tensor]]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- reading and validating manifest.json ------------------------------------------------------------------------
def read_manifest(model_dir: Path, graphs: Iterable[Graph]) -> dict:
    """Parse ``model_dir/manifest.json`` and validate it in full (``validate_manifest``)."""
    path = model_dir / "manifest.json"
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a pose-prior model directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None
    except RecursionError:
        raise ModelError(f"{path}: not a manifest (JSON nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    validate_manifest(manifest, path, graphs)
    return manifest


def _where(keys: tuple) -> str:
    return "".join(f"[{k!r}]" for k in keys)


def _get(obj: Any, keys: tuple, kind: type | tuple, path: Path, what: str) -> Any:
    """``obj[k0][k1]...``, which must exist and be of type ``kind`` (bool is not an int here)."""
    value = obj
    for i, k in enumerate(keys):
        if not isinstance(value, dict):
            raise ModelError(f"{path}: field {_where(keys[:i])} must be an object, got {type(value).__name__}")
        if k not in value:
            raise ModelError(f"{path}: field {_where(keys[: i + 1])} is missing")
        value = value[k]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ModelError(f"{path}: field {_where(keys)} must be {what}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _names(manifest: dict, key: str, path: Path) -> list[str]:
    names = _get(manifest, (key,), list, path, "a list of joint names")
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise ModelError(f"{path}: field {_where((key, i))} must be a joint name (str), got {_short(n)}")
    return names


def present(manifest: dict, graphs: Iterable[Graph]) -> list[Graph]:
    """The graphs a model directory has: every required one, and the optional ones whose file or graph entry its
    manifest lists (a model exported before an optional graph existed has neither; one without the other is
    refused by ``validate_manifest``)."""
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    entries = manifest.get("graphs") if isinstance(manifest.get("graphs"), dict) else {}
    return [g for g in graphs if g.required or g.file in files or g.name in entries]


def _skeleton(manifest: dict, path: Path) -> None:
    """``skeleton``: the convention of the training data, ``{"name": "smpl", "conversion": str, "rest_joints":
    22 x 3 metres}`` (``runtime.convert`` reads the rest joints back) or ``{"name": "source", "conversion": null}``;
    ``plausibility`` (optional, written by ``make plausibility``): ``{"tau": number, "percentile": number,
    "definition": str, "data_sha256": sha256}``."""
    name = _get(manifest, ("skeleton", "name"), str, path, "a convention name")
    _get(manifest, ("skeleton", "conversion"), (str, type(None)), path, "a conversion version or null")
    if name == "smpl":
        rest = _get(manifest, ("skeleton", "rest_joints"), list, path, "22 joints x 3 numbers")
        if len(rest) != 22 or not all(
            isinstance(r, list)
            and len(r) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in r)
            for r in rest
        ):
            raise ModelError(f"{path}: field ['skeleton']['rest_joints'] must be 22 joints x 3 finite numbers")
    if "plausibility" in manifest:
        tau = _get(manifest, ("plausibility", "tau"), (int, float), path, "a number")
        _get(manifest, ("plausibility", "percentile"), (int, float), path, "a number")
        _get(manifest, ("plausibility", "definition"), str, path, "a description")
        digest = _get(manifest, ("plausibility", "data_sha256"), str, path, "a sha256 (64 hex digits)")
        if not math.isfinite(tau) or not _SHA256.fullmatch(digest):
            raise ModelError(f"{path}: field ['plausibility'] must hold a finite tau and a sha256 of its data")


def _detector(manifest: dict, path: Path) -> None:
    """``detector`` (optional, written by ``poseprior calibrate``; ``runtime.detect``)::

    version          str, the statistic's version (runtime.detect.DETECTOR_VERSION)
    params           {"max_span": int >= 1, "window": int >= 1, "floor": number > 0, "min_held": int >= 1,
                     "still": number > 0} (the last two since detector version jump-return-hold-2)
    false_flag_rate  number in (0, 1): the fraction of the calibration takes' frames flagged
    threshold        number > 0: c, the take threshold in units of the joint scales
    joint_scale      21 numbers > 0: q_j, each joint's clean scale
    swap_scale       4 numbers > 0: q^w_p, the swap cue's clean scale per arm part (since jump-return-hold-swap-3)
    fps              number > 0 or null: the calibration takes' frame rate (the statistic is per frame)
    takes            [{"file": str, "sha256": 64 hex digits, "frames": int >= 1}, ...] (at least one)
    data_sha256      sha256 of the takes' sha256s joined by newlines, in order
    """
    if "detector" not in manifest:
        return

    def num(keys, what, ok):
        v = _get(manifest, ("detector",) + keys, (int, float), path, what)
        if not (math.isfinite(v) and ok(v)):
            raise ModelError(f"{path}: field {_where(('detector',) + keys)} must be {what}, got {_short(v)}")
        return v

    _get(manifest, ("detector", "version"), str, path, "a detector version")
    for k in ("max_span", "window"):
        if _get(manifest, ("detector", "params", k), int, path, "an int >= 1") < 1:
            raise ModelError(f"{path}: field ['detector']['params'][{k!r}] must be an int >= 1")
    num(("params", "floor"), "a number > 0", lambda v: v > 0)
    params = manifest["detector"]["params"]
    if "min_held" in params and _get(manifest, ("detector", "params", "min_held"), int, path, "an int >= 1") < 1:
        raise ModelError(f"{path}: field ['detector']['params']['min_held'] must be an int >= 1")
    if "still" in params:
        num(("params", "still"), "a number > 0", lambda v: v > 0)
    num(("false_flag_rate",), "a number in (0, 1)", lambda v: 0 < v < 1)
    num(("threshold",), "a number > 0", lambda v: v > 0)
    scale = _get(manifest, ("detector", "joint_scale"), list, path, f"{len(JOINT_NAMES)} numbers > 0")
    if len(scale) != len(JOINT_NAMES):
        raise ModelError(
            f"{path}: field ['detector']['joint_scale'] must hold {len(JOINT_NAMES)} numbers, got {len(scale)}"
        )
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in scale):
        raise ModelError(f"{path}: field ['detector']['joint_scale'] must hold finite numbers > 0")
    if "swap_scale" in manifest["detector"]:
        sw = _get(manifest, ("detector", "swap_scale"), list, path, "4 numbers > 0")
        if len(sw) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in sw
        ):
            raise ModelError(f"{path}: field ['detector']['swap_scale'] must hold 4 finite numbers > 0")
    fps = _get(manifest, ("detector", "fps"), (int, float, type(None)), path, "a frame rate or null")
    if fps is not None:
        num(("fps",), "a frame rate > 0", lambda v: v > 0)
    takes = _get(manifest, ("detector", "takes"), list, path, "a list of {file, sha256, frames}")
    if not takes:
        raise ModelError(f"{path}: field ['detector']['takes'] is empty")
    for i, t in enumerate(takes):
        where = f"{path}: field ['detector']['takes'][{i}]"
        if not isinstance(t, dict):
            raise ModelError(f"{where} must be an object {{file, sha256, frames}}, got {_short(t)}")
        if not isinstance(t.get("file"), str):
            raise ModelError(f"{where}['file'] must be a file name")
        if not isinstance(t.get("sha256"), str) or not _SHA256.fullmatch(t["sha256"]):
            raise ModelError(f"{where}['sha256'] must be 64 lowercase hex digits")
        if type(t.get("frames")) is not int or t["frames"] < 1:
            raise ModelError(f"{where}['frames'] must be an int >= 1")
    digest = _get(manifest, ("detector", "data_sha256"), str, path, "a sha256 (64 hex digits)")
    expected = hashlib.sha256("\n".join(t["sha256"] for t in takes).encode()).hexdigest()
    if digest != expected:
        raise ModelError(
            f"{path}: field ['detector']['data_sha256'] is not the sha256 of its takes' checksums "
            f"(the record was edited)"
        )


def validate_manifest(manifest: Any, path: Path, graphs: Iterable[Graph]) -> None:
    """The schema of this module's docstring; ``ModelError`` names ``path`` and the first wrong field."""
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format version {repr(version)[:40]}, this runtime reads version {FORMAT_VERSION}"
        )
    _skeleton(manifest, path)
    _detector(manifest, path)
    joint_names = _names(manifest, "joint_names", path)
    if tuple(joint_names) != JOINT_NAMES:
        diff = next((i for i, (a, b) in enumerate(zip(joint_names, JOINT_NAMES)) if a != b), None)
        detail = (
            f"{len(joint_names)} names, expected {len(JOINT_NAMES)}"
            if diff is None
            else f"entry {diff} is {joint_names[diff]!r}, expected {JOINT_NAMES[diff]!r}"
        )
        raise ModelError(f"{path}: field ['joint_names'] differs from runtime.rotations.JOINT_NAMES ({detail})")
    num_joints = _get(manifest, ("num_joints",), int, path, "an int")
    if num_joints != len(JOINT_NAMES):
        raise ModelError(f"{path}: field ['num_joints'] is {num_joints}, expected {len(JOINT_NAMES)} (joint_names)")
    masked = _names(manifest, "masked_joints", path)
    unknown = [n for n in masked if n not in JOINT_NAMES]
    if unknown or len(set(masked)) != len(masked):
        raise ModelError(
            f"{path}: field ['masked_joints'] must be distinct names from joint_names, got {repr(masked)[:120]}"
        )
    dim = _get(manifest, ("dim",), int, path, "an int")
    if dim != 6 * (num_joints - len(masked)):
        raise ModelError(
            f"{path}: field ['dim'] is {dim}, expected 6 x (num_joints - len(masked_joints)) = "
            f"{6 * (num_joints - len(masked))}"
        )

    files = _get(manifest, ("files",), dict, path, "an object {file: {sha256, bytes}}")
    for name in files:
        _get(manifest, ("files", name), dict, path, "an object {sha256, bytes}")
        digest = _get(manifest, ("files", name, "sha256"), str, path, "a sha256 (64 hex digits)")
        if not _SHA256.fullmatch(digest):
            raise ModelError(
                f"{path}: field {_where(('files', name, 'sha256'))} must be 64 lowercase hex digits, "
                f"got {_short(digest)}"
            )
        if "bytes" in files[name]:
            size = _get(manifest, ("files", name, "bytes"), int, path, "an int")
            if size < 0:
                raise ModelError(f"{path}: field {_where(('files', name, 'bytes'))} is negative")

    graphs = present(manifest, graphs)
    for name in [g.file for g in graphs] + [WEIGHTS_FILE]:
        _get(manifest, ("files", name), dict, path, "an object {sha256, bytes}")
    _get(manifest, ("graphs",), dict, path, "an object {graph: {file, inputs, outputs}}")
    for g in graphs:
        if _get(manifest, ("graphs", g.name, "file"), str, path, "a file name") != g.file:
            raise ModelError(
                f"{path}: field {_where(('graphs', g.name, 'file'))} is "
                f"{manifest['graphs'][g.name]['file']!r}, expected {g.file!r}"
            )
        for side, tensors in (("inputs", g.inputs), ("outputs", g.outputs)):
            entry = _get(manifest, ("graphs", g.name, side), dict, path, "an object {tensor: shape}")
            if list(entry) != list(tensors):
                raise ModelError(
                    f"{path}: field {_where(('graphs', g.name, side))} names {list(entry)}, expected {list(tensors)}"
                )
            for t in tensors:
                if json.dumps(entry[t]) != json.dumps(tensor_shape(g, t, dim)):  # 21.0 or true are not 21
                    raise ModelError(
                        f"{path}: field {_where(('graphs', g.name, side, t))} is {_short(entry[t])}, "
                        f"expected {tensor_shape(g, t, dim)}"
                    )


def verify_files(model_dir: Path, manifest: dict, names: list[str]) -> None:
    """Check each named file against the sha256 the manifest records for it."""
    read_verified(model_dir, manifest, names)


def read_verified(model_dir: Path, manifest: dict, names: list[str]) -> dict[str, bytes]:
    """The bytes of each named file, read once, checked against the sha256 the manifest records for it: a caller
    that uses these bytes (not the file again) uses exactly what was checked, even if the file is replaced
    meanwhile."""
    files = manifest["files"]
    out = {}
    for name in names:
        path = model_dir / name
        if name not in files:
            raise ModelError(f"{model_dir / 'manifest.json'}: field ['files'] lists no {name}")
        if not path.is_file():
            raise ModelError(f"{path}: missing (the manifest lists it)")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != files[name]["sha256"]:
            raise ModelError(
                f"{path}: sha256 {digest[:16]}... differs from the manifest's {files[name]['sha256'][:16]}..."
                f" (the file was modified, or belongs to another model)"
            )
        out[name] = data
    return out


# --- one graph against the manifest ------------------------------------------------------------------------------
def graph_metadata(graph: Graph, manifest: dict) -> dict[str, str]:
    """The ``metadata_props`` a graph must carry (as ``export`` writes them)."""
    return {
        "format_version": str(FORMAT_VERSION),
        "graph": graph.name,
        "dim": str(manifest["dim"]),
        "num_joints": str(manifest["num_joints"]),
        "joint_names": json.dumps(manifest["joint_names"]),
        "masked_joints": json.dumps(manifest["masked_joints"]),
        "weights_sha256": manifest["files"][WEIGHTS_FILE]["sha256"],
    }


def check_graph(path: Path, session, graph: Graph, manifest: dict) -> None:
    """The graph's metadata, input/output names and shapes must agree with the manifest and the graph's role.

    ``session``: its ``onnxruntime.InferenceSession``. Dynamic axes read as their name (``"batch"``).
    """
    meta = session.get_modelmeta().custom_metadata_map
    for key, value in graph_metadata(graph, manifest).items():
        if key in ("joint_names", "masked_joints"):
            try:
                same = json.loads(meta.get(key, "null")) == json.loads(value)
            except (ValueError, RecursionError):
                same = False
        else:
            same = meta.get(key) == value
        if not same:
            raise ModelError(
                f"{path}: metadata {key}={repr(meta.get(key))[:80]}, expected {repr(value)[:80]} "
                f"(not this model's {graph.name} graph)"
            )
    names = (tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs()))
    if names != (graph.inputs, graph.outputs):
        raise ModelError(f"{path}: inputs/outputs {names}, expected {(graph.inputs, graph.outputs)}")
    dim = manifest["dim"]
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        expected = tensor_shape(graph, arg.name, dim)
        if list(arg.shape) != expected or arg.type != "tensor(float)":
            raise ModelError(
                f"{path}: {arg.name} is {arg.type} {list(arg.shape)}, expected tensor(float) "
                f"{expected} (manifest dim {dim}, {len(JOINT_NAMES)} joints)"
            )
