"""``PosePrior``: the exported pose prior run with onnxruntime and numpy only (no torch).

A model directory (written by ``poseprior export``) holds five ONNX graphs sharing one weights file, plus
``manifest.json`` (sha256 of every file, joint names, conventions, dimensions, training record):

=================== ============================ =====================================================
graph               inputs                       outputs
=================== ============================ =====================================================
``log_prob``        poses (B, 21, 6)             log_prob (B,)
``sample``          z (B, D)                     poses (B, 21, 6), raw (not orthonormal)
``latent_forward``  z (B, D)                     poses (B, 21, 6), log_prob (B,)
``log_prob_grad``   poses (B, 21, 6)             log_prob (B,), grad (B, 21, 6) = d log_prob / d poses
``latent_vjp``      z (B, D), grad_poses         poses f(z), log_prob (B,) = log p(f(z)), grad_log_prob_z
                    (B, 21, 6)                   (B, D) = d log p(f(z)) / dz, vjp_z (B, D) = (df/dz)^T grad_poses
=================== ============================ =====================================================

all float32 with a dynamic batch B. With f the flow (latent -> pose) and z ~ N(0, I_D), D = 6 x modelled joints:
``log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1/dx|`` and ``log p(f(z)) = log N(z) - log|det df/dz|``.

Poses are 21 local joint rotations in SMPL body order (``JOINT_NAMES``). The argument ``rep`` states their
representation; it is never guessed from the shape:

* ``"6d"`` (default): (B, 21, 6), the first two columns of each rotation matrix ``[R00 R10 R20 R01 R11 R21]``;
* ``"matrix"``: (B, 21, 3, 3) rotation matrices (checked: ``max|R^T R - I| <= 1e-3`` and det > 0);
* ``"axis_angle"``: (B, 21, 3) or (B, 63) rotation vectors (smplx ``body_pose``).

A single pose (no batch axis) gives unbatched outputs. Everything here is read-only after ``load``, so one
``PosePrior`` may be used from several threads at once (``InferenceSession.run`` is thread-safe).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import rotations

FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"
WEIGHTS_FILE = "weights.bin"
REPS = ("6d", "matrix", "axis_angle")
ROTATION_TOLERANCE = 1e-3   # max |R^T R - I| accepted for rep="matrix"


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of a model: its role, the names of its inputs and outputs, and whether a model must have it
    (``required=False``: models exported before the graph existed load without it)."""
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    required: bool = True

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


GRAPHS = {g.name: g for g in (
    Graph("log_prob", ("poses",), ("log_prob",)),
    Graph("sample", ("z",), ("poses",)),
    Graph("latent_forward", ("z",), ("poses", "log_prob")),
    Graph("log_prob_grad", ("poses",), ("log_prob", "grad")),
    Graph("latent_vjp", ("z", "grad_poses"), ("poses", "log_prob", "grad_log_prob_z", "vjp_z"), required=False),
)}


class ModelError(ValueError):
    """A model directory is missing, incomplete, modified, or not a pose-prior model; the message says which file."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- model directory ---------------------------------------------------------------------------------------------
def read_manifest(model_dir: Path) -> dict:
    path = model_dir / "manifest.json"
    if not model_dir.is_dir():
        hint = " (the package ships without a default model: pass path=, or export one with `poseprior export " \
               "RUN_DIR --out runtime/models/default`)" if model_dir == DEFAULT_MODEL_DIR else ""
        raise ModelError(f"{model_dir}: no model directory here{hint}")
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a pose-prior model directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise ModelError(f"{path}: model format version {version!r}, this runtime reads version {FORMAT_VERSION}")
    return manifest


def verify_files(model_dir: Path, manifest: dict, names: list[str]) -> None:
    """Check each named file against the sha256 the manifest records for it."""
    files = manifest.get("files", {})
    for name in names:
        path = model_dir / name
        if name not in files:
            raise ModelError(f"{model_dir / 'manifest.json'}: lists no {name}")
        if not path.is_file():
            raise ModelError(f"{path}: missing (the manifest lists it)")
        digest = sha256_file(path)
        if digest != files[name]["sha256"]:
            raise ModelError(f"{path}: sha256 {digest[:16]}... differs from the manifest's {files[name]['sha256'][:16]}..."
                             f" (the file was modified, or belongs to another model)")


# --- onnxruntime sessions ----------------------------------------------------------------------------------------
def _cuda_libraries_load() -> bool:
    """Whether onnxruntime's CUDA provider library and the CUDA libraries it links can be loaded.

    Checked quietly with ctypes: when they are missing, onnxruntime would log an error per session before falling
    back to CPU. Only a missing library counts as "no"; anything else is left for onnxruntime to decide.
    """
    name = {"win32": "onnxruntime_providers_cuda.dll"}.get(sys.platform, "libonnxruntime_providers_cuda.so")
    path = Path(ort.__file__).parent / "capi" / name
    if not path.is_file():
        return False
    try:
        ctypes.CDLL(str(path))
    except OSError as e:
        return "undefined symbol" in str(e)
    return True


def default_providers() -> list[str]:
    """CUDA then CPU where CUDA can actually run, else CPU."""
    if "CUDAExecutionProvider" in ort.get_available_providers() and _cuda_libraries_load():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(intra_op_num_threads: int | None, allow_spinning: bool | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
    if allow_spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


# --- input checks ------------------------------------------------------------------------------------------------
def _as_float(a, what: str) -> np.ndarray:
    """A finite floating-point array (dtype kept: conversions run in the input's precision, graphs in float32)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} must be a floating-point array, got dtype {a.dtype}")
    if a.size and not np.isfinite(a).all():
        first = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{what} contain NaN or inf (first at index {tuple(int(i) for i in first)})")
    return a


def _batched(a: np.ndarray, per_item: tuple[int, ...], what: str) -> tuple[np.ndarray, bool]:
    """(B, *per_item) or per_item -> ((B, *per_item), single); refuses empty batches."""
    if a.shape == per_item:
        return a[None], True
    if a.ndim == len(per_item) + 1 and a.shape[1:] == per_item:
        if a.shape[0] == 0:
            raise ValueError(f"{what}: empty batch (shape {a.shape})")
        return a, False
    raise ValueError(f"{what}: shape {a.shape}, expected (B, {', '.join(map(str, per_item))}) "
                     f"or {per_item} for a single one")


class PosePrior:
    """The pose prior: log density, its gradient, sampling, and the latent-space forward pass.

    Build with ``PosePrior.load(path)``. Hyper-parameters come from the model's manifest: ``joint_names``,
    ``num_joints`` (21), ``dim`` (D, the latent size), ``masked_joints`` (joints the model ignores; sampled as
    the identity). ``providers`` lists the onnxruntime execution providers really in use.
    """

    def __init__(self, model_dir: Path, manifest: dict, sessions: dict[str, ort.InferenceSession]):
        self.path = model_dir
        self.manifest = manifest
        self.joint_names = tuple(manifest["joint_names"])
        self.num_joints = int(manifest["num_joints"])
        self.dim = int(manifest["dim"])
        self.masked_joints = tuple(manifest["masked_joints"])
        self.providers = sessions["log_prob"].get_providers()
        self._sessions = sessions

    @classmethod
    def load(cls, path: str | Path | None = None, providers: list | None = None,
             intra_op_num_threads: int | None = None, allow_spinning: bool | None = None) -> "PosePrior":
        """Open a model directory (default: the model inside the package), checking every file it uses.

        ``providers``: onnxruntime execution providers; None = CUDA where it works, else CPU.
        ``intra_op_num_threads``: threads per graph run (None: onnxruntime's default, one per core).
        ``allow_spinning``: whether idle worker threads spin; turn it off when torch or another thread pool
        shares the process (they slow each other down).
        """
        model_dir = DEFAULT_MODEL_DIR if path is None else Path(path)
        manifest = read_manifest(model_dir)
        graphs = [g for g in GRAPHS.values() if g.required or g.file in manifest.get("files", {})]
        verify_files(model_dir, manifest, [g.file for g in graphs] + [WEIGHTS_FILE])
        options = session_options(intra_op_num_threads, allow_spinning)
        providers = default_providers() if providers is None else list(providers)
        sessions = {}
        for g in graphs:
            try:
                sessions[g.name] = ort.InferenceSession(str(model_dir / g.file), options, providers=providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise ModelError(f"{model_dir / g.file}: onnxruntime cannot load it ({e})") from None
            _check_graph(model_dir / g.file, sessions[g.name], g, manifest)
        return cls(model_dir, manifest, sessions)

    def __repr__(self) -> str:
        return f"PosePrior({str(self.path)!r}, dim={self.dim}, masked_joints={list(self.masked_joints)}, " \
               f"providers={self.providers})"

    # --- conversions of the inputs -------------------------------------------------------------------------------
    def _poses_6d(self, poses, rep: str) -> tuple[np.ndarray, bool, np.ndarray]:
        """Check poses given in ``rep``; returns (6D (B, J, 6) float32, single, the checked batch in ``rep``)."""
        if rep not in REPS:
            raise ValueError(f"rep must be one of {REPS}, got {rep!r}")
        J = self.num_joints
        a = _as_float(poses, "poses")
        per_joint = {"6d": (6,), "matrix": (3, 3), "axis_angle": (3,)}[rep]
        k = len(per_joint) + 1
        if a.ndim in (k, k + 1) and a.shape[-len(per_joint):] == per_joint and a.shape[-k] != J:
            raise ValueError(f"poses (rep={rep!r}): {a.shape[-k]} joints (shape {a.shape}), the model has {J}: "
                             f"the SMPL body joints 1..21 in JOINT_NAMES order, without the pelvis")
        if rep == "6d":
            x, single = _batched(a, (J, 6), "poses (rep='6d')")
            return x.astype(np.float32, copy=False), single, x
        if rep == "matrix":
            R, single = _batched(a, (J, 3, 3), "poses (rep='matrix')")
            err = rotations.rotation_error(R)
            if (err > ROTATION_TOLERANCE).any():
                b, j = np.unravel_index(np.argmax(err), err.shape)
                raise ValueError(f"poses (rep='matrix'): {int((err > ROTATION_TOLERANCE).sum())} matrices are not "
                                 f"rotations (worst: pose {b}, joint {self.joint_names[j]}: max|R^T R - I| or "
                                 f"det < 0 gives {err[b, j]:.3g} > {ROTATION_TOLERANCE})")
            return rotations.matrix_to_6d(R).astype(np.float32, copy=False), single, R
        flat = a.ndim >= 1 and a.shape[-1] == 3 * J
        aa, single = _batched(a.reshape(a.shape[:-1] + (J, 3)) if flat else a, (J, 3), "poses (rep='axis_angle')")
        return rotations.axis_angle_to_6d(aa.astype(np.float64)).astype(np.float32), single, aa

    def _latent(self, z) -> tuple[np.ndarray, bool]:
        z, single = _batched(_as_float(z, "z"), (self.dim,), "z")
        return z.astype(np.float32, copy=False), single

    def _run(self, graph: str, *xs: np.ndarray) -> list[np.ndarray]:
        g = GRAPHS[graph]
        if graph not in self._sessions:
            raise ModelError(f"{self.path}: this model has no {g.file} (exported before the graph existed); "
                             f"re-export it with `poseprior export` to use {graph}")
        return self._sessions[graph].run(list(g.outputs), {i: np.ascontiguousarray(x) for i, x in zip(g.inputs, xs)})

    # --- the prior -----------------------------------------------------------------------------------------------
    def log_prob(self, poses, rep: str = "6d") -> np.ndarray:
        """log p of each pose: (B,) for a batch, a scalar for one pose."""
        x, single, _ = self._poses_6d(poses, rep)
        (log_p,) = self._run("log_prob", x)
        return log_p[0] if single else log_p

    def log_prob_and_grad(self, poses, rep: str = "6d") -> tuple[np.ndarray, np.ndarray]:
        """(log p, d log p / d poses), the gradient in the shape and representation of ``poses``.

        ``rep="6d"``: the graph's gradient. ``rep="matrix"``: log p reads the first two columns of R, so the
        gradient is the 6D one in those columns and 0 in the third. ``rep="axis_angle"``: the chain rule through
        Rodrigues' formula (``axis_angle_vjp``), computed in float64.
        """
        x, single, checked = self._poses_6d(poses, rep)
        log_p, g = self._run("log_prob_grad", x)
        if rep == "matrix":
            g = np.stack([g[..., :3], g[..., 3:], np.zeros_like(g[..., :3])], axis=-1)
        elif rep == "axis_angle":
            g = axis_angle_vjp(checked, g).astype(np.float32).reshape(((1,) if single else ()) + np.shape(poses))
        return (log_p[0], g[0]) if single else (log_p, g)

    def sample(self, n: int | None = None, seed: int | np.random.Generator | None = None, z=None,
               temperature: float = 1.0, orthonormalize: bool = True) -> np.ndarray:
        """Poses f(z) in 6D, (n, 21, 6), with ``z = temperature * N(0, I)`` drawn by ``numpy.random.default_rng(seed)``.

        Give ``z`` ((B, D) or (D,)) instead of ``n`` to choose the latent yourself (used as given). Raw flow
        outputs are not exactly orthonormal: ``orthonormalize`` (default) applies Gram-Schmidt per joint.
        """
        if z is None:
            if n is None or int(n) < 1:
                raise ValueError(f"sample: give n >= 1 or z (got n={n!r})")
            rng = np.random.default_rng(seed)
            z, single = (rng.standard_normal((int(n), self.dim), dtype=np.float32) * np.float32(temperature)), False
        else:
            if n is not None or seed is not None or temperature != 1.0:
                raise ValueError("sample: z is used as given; do not pass n, seed or temperature with it")
            z, single = self._latent(z)
        (x,) = self._run("sample", z)
        if orthonormalize:
            x = rotations.orthonormalize_6d(x).astype(np.float32)
        return x[0] if single else x

    def latent_forward(self, z) -> tuple[np.ndarray, np.ndarray]:
        """(poses f(z) raw (B, 21, 6), log p(f(z)) (B,)) in one pass; ``-log p`` is the latent-space loss
        (not |z|^2, which drops the Jacobian term; DESIGN §4)."""
        z, single = self._latent(z)
        x, log_p = self._run("latent_forward", z)
        return (x[0], log_p[0]) if single else (x, log_p)

    def latent_vjp(self, z, grad_poses) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(poses f(z) raw (B, 21, 6), log p(f(z)) (B,), d log p(f(z))/dz (B, D), (df/dz)^T grad_poses (B, D)).

        One forward and one reverse pass: with a data term E(x) whose gradient in 6D pose space is ``grad_poses``
        = dE/dx at x = f(z), the latent gradient of ``E(f(z)) - lam log p(f(z))`` is ``vjp_z - lam *
        grad_log_prob_z`` (log p with the Jacobian term, DESIGN §4). Masked joints of ``grad_poses`` are ignored.
        A model exported without this graph raises ``ModelError``.
        """
        z, single = self._latent(z)
        g, single_g = _batched(_as_float(grad_poses, "grad_poses"), (self.num_joints, 6), "grad_poses")
        if single_g != single or g.shape[0] != z.shape[0]:
            want = (self.num_joints, 6) if single else (z.shape[0], self.num_joints, 6)
            raise ValueError(f"grad_poses: shape {np.shape(grad_poses)}, expected {want}: one cotangent per latent of "
                             f"z (shape {np.shape(z[0] if single else z)})")
        out = self._run("latent_vjp", z, g.astype(np.float32, copy=False))
        return tuple(o[0] for o in out) if single else tuple(out)


def _check_graph(path: Path, session: ort.InferenceSession, graph: Graph, manifest: dict) -> None:
    """The graph's own metadata and input/output names must agree with the manifest and its role."""
    meta = session.get_modelmeta().custom_metadata_map
    expect = {"format_version": str(FORMAT_VERSION), "graph": graph.name, "dim": str(manifest["dim"]),
              "num_joints": str(manifest["num_joints"]), "weights_sha256": manifest["files"][WEIGHTS_FILE]["sha256"]}
    for key, value in expect.items():
        if meta.get(key) != value:
            raise ModelError(f"{path}: metadata {key}={meta.get(key)!r}, expected {value!r} (not this model's "
                             f"{graph.name} graph)")
    names = (tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs()))
    if names != (graph.inputs, graph.outputs):
        raise ModelError(f"{path}: inputs/outputs {names}, expected {(graph.inputs, graph.outputs)}")


def axis_angle_vjp(aa: np.ndarray, g6: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. rotation vectors w (..., 3) of a function whose gradient w.r.t. their 6D is g6 (..., 6).

    With G = dL/dR = [g6[:3], g6[3:], 0] (6D reads the first two columns) and Rodrigues' R(w), Gallego & Yezzi
    (2015), eq. (9): ``dR/dw_i = (w_i [w]x + [w x (I - R) e_i]x) R / |w|^2``, and near w = 0 ``dR/dw_i = [e_i]x R``;
    ``dL/dw_i = sum(G * dR/dw_i)``.
    """
    w = np.asarray(aa, dtype=np.float64)
    g6 = np.asarray(g6, dtype=np.float64)
    G = np.stack([g6[..., :3], g6[..., 3:], np.zeros_like(g6[..., :3])], axis=-1)
    R = rotations.axis_angle_to_matrix(w)
    t2 = np.sum(w * w, axis=-1)[..., None, None]
    small = t2 < 1e-12
    eye = np.eye(3)
    out = np.empty_like(w)
    for i in range(3):
        e_i = np.broadcast_to(eye[i], w.shape)
        general = (w[..., i, None, None] * rotations._skew(w) + rotations._skew(np.cross(w, (eye - R)[..., :, i])))
        dR = np.where(small, rotations._skew(e_i), general / np.where(small, 1.0, t2)) @ R
        out[..., i] = np.sum(G * dR, axis=(-1, -2))
    return out
