"""``PosePrior``: the exported pose prior run with onnxruntime and numpy only (no torch).

A model directory (``poseprior export``) holds six ONNX graphs sharing one weights file (the five below, and
``encode``: poses -> z, log_prob), plus ``manifest.json`` (sha256 of every file, joint names, conventions, dimensions, training record):

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
* ``"axis_angle"``: (B, 21, 3) or (B, 63) rotation vectors (smplx ``body_pose``);
* ``"6d_rows"``: (B, 21, 6), PyTorch3D's ``matrix_to_rotation_6d``: the first two ROWS ``[R00 R01 R02 R10 R11 R12]``,
  made a rotation by PyTorch3D's ``rotation_6d_to_matrix`` (Gram-Schmidt on the rows), then scored as its columns.
  Rows are orthonormal too: passed as ``rep="6d"`` they are read as the inverse rotations (nothing can detect it;
  real poses then score far below their true log p).

A single pose (no batch axis) gives unbatched outputs. Everything here is read-only after ``load``, so one
``PosePrior`` may be used from several threads at once (``InferenceSession.run`` is thread-safe).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import onnxruntime as ort

from . import rotations
from .manifest import (  # noqa: F401  (re-exported: runtime, train)
    FORMAT_VERSION,
    WEIGHTS_FILE,
    Graph,
    ModelError,
    check_graph,
    present,
    read_manifest,
    read_verified,
    sha256_file,
    verify_files,
)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"
REPS = ("6d", "matrix", "axis_angle", "6d_rows")
ROTATION_TOLERANCE = 1e-3  # max |R^T R - I| accepted for rep="matrix"
#: Largest |entry| of any numeric input (poses in every rep, z). Measured: the shipped model's graphs stay finite
#: in float32 up to |x| = 1e8 (poses) and 1e18 (z), the tiny test model's up to 1e13; 1e6 leaves a margin of 100.
MAX_ABS = 1e6
SAMPLE_MAX = 10**6  # largest n of sample(n): its output alone is n x 504 bytes (0.5 GB)
TEMPERATURE_MAX = 1e4  # z = temperature * N(0, I) stays far inside MAX_ABS
#: Default ``max_chunk_bytes`` of ``PosePrior.load``: the working memory one graph run may take.
DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20
#: Chunks are whole multiples of this many rows: onnxruntime's CPU kernels work on blocks of 4 rows, so results
#: of a chunked call are bit-identical to one call on the whole batch.
CHUNK_ALIGN = 64
#: Working memory per row of the numpy conversions of each ``rep`` (float64 temporaries), on top of the graph's.
REP_ROW_BYTES = {"6d": 1024, "matrix": 8 * 1024, "axis_angle": 24 * 1024, "6d_rows": 16 * 1024}

GRAPHS = {
    g.name: g
    for g in (
        Graph("log_prob", ("poses",), ("log_prob",), row_bytes=8 * 1024),
        Graph("sample", ("z",), ("poses",), row_bytes=16 * 1024),  # with the Gram-Schmidt of its output
        Graph("latent_forward", ("z",), ("poses", "log_prob"), row_bytes=8 * 1024),
        Graph("log_prob_grad", ("poses",), ("log_prob", "grad"), row_bytes=128 * 1024),
        # optional: models exported before it existed load without it (only latent_vjp then raises ModelError)
        Graph(
            "latent_vjp",
            ("z", "grad_poses"),
            ("poses", "log_prob", "grad_log_prob_z", "vjp_z"),
            row_bytes=256 * 1024,
            required=False,
        ),
        Graph("encode", ("poses",), ("z", "log_prob"), row_bytes=8 * 1024, required=False),
    )
}


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


#: graphs that latent-space fitting calls in turn (``latent_forward`` for a line-search trial, ``latent_vjp`` at the
#: accepted point): their thread pools stop spinning when a run returns (``session_options``)
ALTERNATING = ("latent_forward", "latent_vjp")


def session_options(
    intra_op_num_threads: int | None, allow_spinning: bool | None, stop_spinning: bool = False
) -> ort.SessionOptions:
    """Options of one session. Every session has its own intra-op thread pool, whose threads spin for a while
    after a run, ready for the next; a different session run meanwhile competes with them for the cores.
    ``stop_spinning``: stop as soon as a run returns (``session.force_spinning_stop``). Two graphs called in turn
    then no longer take each other's cores, while one graph called again and again pays for waking its threads
    every call, so only the ``ALTERNATING`` graphs stop (the timings behind this choice:
    ``reports/design-measurements.md``). ``allow_spinning=False``: no spinning at all (for processes whose other
    thread pools need the cores, e.g. torch's)."""
    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
    if allow_spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if stop_spinning and allow_spinning is not False:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


# --- input checks ------------------------------------------------------------------------------------------------
def _index(flat: int, shape: tuple[int, ...], offset: int = 0) -> tuple[int, ...]:
    idx = np.unravel_index(flat, shape)
    return (int(idx[0]) + offset,) + tuple(int(i) for i in idx[1:])


def check_values(a, what: str) -> np.ndarray:
    """``a`` as a floating-point array whose entries are finite and within ``MAX_ABS`` (hence finite once cast to
    float32, as the graphs run); the dtype is kept (conversions run in the input's precision). Checked in row
    blocks of axis 0, so the temporaries stay small."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} must be a floating-point array, got dtype {a.dtype}")
    rows = max(1, (1 << 22) // max(1, a[0].size if a.ndim else 1))
    for start in range(0, len(a) if a.ndim else 1, rows):
        block = a[start : start + rows] if a.ndim else a
        finite = np.isfinite(block)
        if not finite.all():
            first = _index(int(np.argmin(finite)), block.shape, start)
            raise ValueError(f"{what} contain NaN or inf (first at index {first})")
        big = np.abs(block) > np.float64(MAX_ABS)  # float64: MAX_ABS overflows a float16 (a warning)
        if big.any():
            k = int(np.argmax(big))
            raise ValueError(
                f"{what}: |value| {float(block.flat[k]):.7g} at index {_index(k, block.shape, start)} "
                f"exceeds {MAX_ABS:g}, the largest magnitude the runtime accepts (every graph stays "
                f"finite in float32 within it)"
            )
    return a


def _batched(
    a: np.ndarray, per_item: tuple[int, ...], what: str, expected: str | None = None
) -> tuple[np.ndarray, bool]:
    """(B, *per_item) or per_item -> ((B, *per_item), single); refuses empty batches."""
    if a.shape == per_item:
        return a[None], True
    if a.ndim == len(per_item) + 1 and a.shape[1:] == per_item:
        if a.shape[0] == 0:
            raise ValueError(f"{what}: empty batch (shape {a.shape})")
        return a, False
    expected = expected or f"(B, {', '.join(map(str, per_item))}) or {per_item} for a single one"
    raise ValueError(f"{what}: shape {a.shape}, expected {expected}")


#: Axis-angle widths that are another layout of SMPL / smplx poses, and what to pass instead.
AXIS_ANGLE_HINTS = {
    66: "looks like smplx global_orient + body_pose (22 joints): pass body_pose = x[..., 3:66]",
    69: "looks like SMPL's 23-joint body_pose (with the two hands): pass x[..., :63]",
    72: "looks like a full SMPL pose (global_orient + 23 joints): pass body_pose = x[..., 3:66]",
}


def check_sample_args(n, seed, temperature) -> tuple[int, float]:
    """``n`` an int (not bool) in [1, SAMPLE_MAX]; ``seed`` None, an int >= 0 or a ``numpy.random.Generator``;
    ``temperature`` a real number, finite, in (0, TEMPERATURE_MAX]. Returns (n, temperature)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"sample: n must be a positive int (or give z), got {type(n).__name__} {n!r}"[:200])
    if not 1 <= n <= SAMPLE_MAX:
        raise ValueError(f"sample: n must be in [1, {SAMPLE_MAX}] (call sample again for more), got {n}")
    if seed is not None and not isinstance(seed, np.random.Generator):
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(
                f"sample: seed must be None, an int >= 0 or a numpy.random.Generator, got "
                f"{type(seed).__name__} {seed!r}"[:200]
            )
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"sample: temperature must be a real number, got {type(temperature).__name__} {temperature!r}"[:200]
        )
    t = float(temperature)
    if not (math.isfinite(t) and 0 < t <= TEMPERATURE_MAX):
        raise ValueError(f"sample: temperature must be finite and in (0, {TEMPERATURE_MAX:g}], got {t!r}")
    return int(n), t


#: ``intra_op_num_threads`` may be at most this many times the cores this process may run on: onnxruntime starts
#: every thread of every session's pool at load (1000 threads on 2 cores had not loaded after 120 s)
THREADS_PER_CORE_MAX = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(intra_op_num_threads) -> int | None:
    """None, or an int in [0, ``THREADS_PER_CORE_MAX`` x ``usable_cores()``] (0: onnxruntime's default)."""
    if intra_op_num_threads is None:
        return None
    n = intra_op_num_threads
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"intra_op_num_threads must be None or an int >= 0, got {n!r}"[:200])
    most = THREADS_PER_CORE_MAX * usable_cores()
    if n > most:
        raise ValueError(
            f"intra_op_num_threads={n}: this machine has {usable_cores()} usable cores; more than "
            f"{most} threads per graph only slow it down (and each session starts them all at load)"
        )
    return int(n)


def _check_chunk_bytes(max_chunk_bytes) -> int:
    if (
        isinstance(max_chunk_bytes, (bool, np.bool_))
        or not isinstance(max_chunk_bytes, (int, np.integer))
        or max_chunk_bytes < 1
    ):
        raise ValueError(f"max_chunk_bytes must be a positive int (bytes), got {max_chunk_bytes!r}"[:200])
    return int(max_chunk_bytes)


class PosePrior:
    """The pose prior: log density, its gradient, sampling, and the latent-space forward pass.

    Build with ``PosePrior.load(path)``. Hyper-parameters come from the model's manifest: ``joint_names``,
    ``num_joints`` (21), ``dim`` (D, the latent size), ``masked_joints`` (joints the model ignores; sampled as
    the identity). ``providers`` lists the onnxruntime execution providers really in use.

    Inputs: floating-point, finite, ``|x| <= MAX_ABS`` (1e6); anything else raises ``ValueError``. Batches of
    any size run in chunks of whole ``CHUNK_ALIGN`` rows sized so that one graph run (plus the numpy conversions
    of ``rep``) takes about ``max_chunk_bytes`` (``Graph.row_bytes`` per row); results are bit-identical to one
    call. If onnxruntime still cannot allocate a chunk, ``MemoryError`` says to lower ``max_chunk_bytes``.
    """

    def __init__(
        self,
        model_dir: Path,
        manifest: dict,
        sessions: dict[str, ort.InferenceSession],
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ):
        self.path = model_dir
        self.manifest = manifest
        self.joint_names = tuple(manifest["joint_names"])
        self.num_joints = int(manifest["num_joints"])
        self.dim = int(manifest["dim"])
        self.masked_joints = tuple(manifest["masked_joints"])
        skeleton = manifest.get("skeleton") or {}
        #: the convention the model was trained in ("smpl": smplx body_pose) and the version of
        #: ``runtime.convert`` that made its training data; None for a model whose manifest does not say
        self.skeleton: str | None = skeleton.get("name")
        self.conversion: str | None = skeleton.get("conversion")
        #: the plausibility threshold recorded at export (``make plausibility PL_RECORD=--record``), or None
        tau = (manifest.get("plausibility") or {}).get("tau")
        self.threshold: float | None = None if tau is None else float(tau)
        self.max_chunk_bytes = _check_chunk_bytes(max_chunk_bytes)
        self.providers = sessions["log_prob"].get_providers()
        self._sessions = sessions

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        providers: list | None = None,
        intra_op_num_threads: int | None = None,
        allow_spinning: bool | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> "PosePrior":
        """Open a model directory (default: the model inside the package), checking every file it uses.

        ``providers``: onnxruntime execution providers; None = CUDA where it works, else CPU.
        ``intra_op_num_threads``: threads per graph run (None: onnxruntime's default, one per core); at most
        ``THREADS_PER_CORE_MAX`` per usable core (``ValueError`` beyond).
        ``allow_spinning``: whether idle worker threads spin; turn it off when torch or another thread pool
        shares the process (they slow each other down).
        ``max_chunk_bytes``: working memory of one graph run (default 256 MiB); larger batches run in chunks.
        """
        max_chunk_bytes = _check_chunk_bytes(max_chunk_bytes)
        intra_op_num_threads = check_threads(intra_op_num_threads)
        model_dir = DEFAULT_MODEL_DIR if path is None else Path(path)
        if not model_dir.is_dir():
            hint = (
                " (the package ships without a default model: pass path=, or export one with `poseprior "
                "export RUN_DIR --out runtime/models/default`)"
                if model_dir == DEFAULT_MODEL_DIR
                else ""
            )
            raise ModelError(f"{model_dir}: no model directory here{hint}")
        manifest = read_manifest(model_dir, GRAPHS.values())
        graphs = present(manifest, GRAPHS.values())
        # the bytes checked are the bytes run: each file is read once, hashed, and handed to onnxruntime from memory
        # (the graphs' external data "weights.bin" included), so a file replaced meanwhile cannot slip in
        blobs = read_verified(model_dir, manifest, [g.file for g in graphs] + [WEIGHTS_FILE])
        weights = np.frombuffer(blobs[WEIGHTS_FILE], np.uint8)
        providers = default_providers() if providers is None else list(providers)
        sessions = {}
        for g in graphs:
            options = session_options(intra_op_num_threads, allow_spinning, stop_spinning=g.name in ALTERNATING)
            options.add_external_initializers_from_files_in_memory([WEIGHTS_FILE], [weights], [len(weights)])
            try:
                sessions[g.name] = ort.InferenceSession(blobs[g.file], options, providers=providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise ModelError(f"{model_dir / g.file}: onnxruntime cannot load it ({e})") from None
            check_graph(model_dir / g.file, sessions[g.name], g, manifest)
        return cls(model_dir, manifest, sessions, max_chunk_bytes)

    def __repr__(self) -> str:
        return (
            f"PosePrior({str(self.path)!r}, dim={self.dim}, skeleton={self.skeleton!r}, "
            f"conversion={self.conversion!r}, masked_joints={list(self.masked_joints)}, providers={self.providers})"
        )

    # --- checks and conversions of the inputs --------------------------------------------------------------------
    def _poses(self, poses, rep: str) -> tuple[np.ndarray, bool]:
        """Check poses given in ``rep``; returns (the batch in ``rep``: (B, J, 6) / (B, J, 3, 3) / (B, J, 3), single)."""
        if not isinstance(rep, str) or rep not in REPS:
            raise ValueError(f"rep must be one of {REPS}, got {rep!r}"[:200])
        J = self.num_joints
        a = np.asarray(poses)
        per_joint = {"6d": (6,), "6d_rows": (6,), "matrix": (3, 3), "axis_angle": (3,)}[rep]
        k = len(per_joint) + 1
        if a.ndim in (k, k + 1) and a.shape[-len(per_joint) :] == per_joint and a.shape[-k] != J:
            raise ValueError(
                f"poses (rep={rep!r}): {a.shape[-k]} joints (shape {a.shape}), the model has {J}: "
                f"the SMPL body joints 1..21 in JOINT_NAMES order, without the pelvis"
            )
        if rep == "axis_angle":
            if a.ndim in (1, 2) and a.shape[-1] in AXIS_ANGLE_HINTS:
                raise ValueError(
                    f"poses (rep='axis_angle'): shape {a.shape}, expected (B, 63) or (B, 21, 3): "
                    f"{AXIS_ANGLE_HINTS[a.shape[-1]]}"
                )
            if a.ndim in (1, 2) and a.shape[-1] == 3 * J:
                a = a.reshape(a.shape[:-1] + (J, 3))
            a, single = _batched(
                a,
                (J, 3),
                "poses (rep='axis_angle')",
                f"(B, {3 * J}) (smplx body_pose) or (B, {J}, 3), or ({3 * J},) / ({J}, 3) for one pose",
            )
        else:
            a, single = _batched(a, (J,) + per_joint, f"poses (rep={rep!r})")
        a = check_values(a, "poses")
        if rep == "matrix":
            for s in self._slices(len(a), GRAPHS["log_prob"], rep):
                err = rotations.rotation_error(a[s])
                bad = err > ROTATION_TOLERANCE
                if bad.any():
                    b, j = np.unravel_index(np.argmax(err), err.shape)
                    raise ValueError(
                        f"poses (rep='matrix'): {int(bad.sum())} matrices are not rotations (worst: "
                        f"pose {b + s.start}, joint {self.joint_names[j]}: max|R^T R - I| or det < 0 "
                        f"gives {err[b, j]:.3g} > {ROTATION_TOLERANCE})"
                    )
        return a, single

    @staticmethod
    def _to_6d(a: np.ndarray, rep: str) -> np.ndarray:
        """A checked chunk in ``rep`` -> 6D float32 (axis-angle converted in float64)."""
        if rep == "6d":
            return a.astype(np.float32, copy=False)
        if rep == "matrix":
            return rotations.matrix_to_6d(a).astype(np.float32, copy=False)
        if rep == "6d_rows":
            return rotations.rows_6d_to_6d(a.astype(np.float64)).astype(np.float32)
        return rotations.axis_angle_to_6d(a.astype(np.float64)).astype(np.float32)

    def _latent(self, z) -> tuple[np.ndarray, bool]:
        z, single = _batched(np.asarray(z), (self.dim,), "z")
        return check_values(z, "z"), single

    # --- running graphs in chunks --------------------------------------------------------------------------------
    def chunk_rows(self, graph: str, rep: str = "6d") -> int:
        """Rows per graph run: ``max_chunk_bytes / (row_bytes of the graph + REP_ROW_BYTES[rep])``, rounded down
        to a multiple of ``CHUNK_ALIGN`` (at least one such block)."""
        per_row = GRAPHS[graph].row_bytes + REP_ROW_BYTES[rep]
        return max(CHUNK_ALIGN, self.max_chunk_bytes // per_row // CHUNK_ALIGN * CHUNK_ALIGN)

    def _slices(self, n: int, graph: Graph, rep: str = "6d") -> Iterator[slice]:
        rows = self.chunk_rows(graph.name, rep)
        return (slice(start, min(n, start + rows)) for start in range(0, n, rows))

    def _run(self, graph: Graph, rows: slice, *inputs: np.ndarray) -> list[np.ndarray]:
        """One run of ``graph`` on a chunk (rows ``rows`` of the batch, for messages); every output must be finite."""
        if graph.name not in self._sessions:
            raise ModelError(
                f"{self.path}: no {graph.file} in this model directory (exported before the "
                f"{graph.name} graph existed): re-export it with `poseprior export`"
            )
        feed = {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in zip(graph.inputs, inputs)}
        try:
            outputs = self._sessions[graph.name].run(list(graph.outputs), feed)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            if "alloc" in str(e).lower():
                raise MemoryError(
                    f"{graph.name}: onnxruntime could not allocate memory for a chunk of "
                    f"{rows.stop - rows.start} rows ({str(e).strip()[:200]}); pass a smaller "
                    f"max_chunk_bytes to PosePrior.load (now {self.max_chunk_bytes})"
                ) from None
            raise
        for name, out in zip(graph.outputs, outputs):
            finite = np.isfinite(out)
            if not finite.all():
                row = rows.start + int(np.unravel_index(np.argmin(finite), out.shape)[0])
                raise ValueError(
                    f"{graph.name}: {name} is not finite in float32 for input row {row}: this model "
                    f"overflows there although the input is within {MAX_ABS:g}"
                )
        return outputs

    # --- the prior -----------------------------------------------------------------------------------------------
    def log_prob(self, poses, rep: str = "6d") -> np.ndarray:
        """log p of each pose: (B,) for a batch, a scalar for one pose."""
        a, single = self._poses(poses, rep)
        graph = GRAPHS["log_prob"]
        log_p = np.empty(len(a), np.float32)
        for s in self._slices(len(a), graph, rep):
            (log_p[s],) = self._run(graph, s, self._to_6d(a[s], rep))
        return log_p[0] if single else log_p

    def log_prob_and_grad(self, poses, rep: str = "6d") -> tuple[np.ndarray, np.ndarray]:
        """(log p, d log p / d poses), the gradient in the shape and representation of ``poses``.

        ``rep="6d"``: the graph's gradient. ``rep="matrix"``: log p reads the first two columns of R, so the
        gradient is the 6D one in those columns and 0 in the third. ``rep="axis_angle"``: the chain rule through
        Rodrigues' formula (``axis_angle_vjp``), computed in float64. ``rep="6d_rows"``: the chain rule through
        the rows' Gram-Schmidt (``rotations.rows_6d_vjp``), in float64.
        """
        a, single = self._poses(poses, rep)
        graph = GRAPHS["log_prob_grad"]
        log_p = np.empty(len(a), np.float32)
        grad = np.zeros(a.shape, np.float32)
        for s in self._slices(len(a), graph, rep):
            log_p[s], g = self._run(graph, s, self._to_6d(a[s], rep))
            if rep == "6d":
                grad[s] = g
            elif rep == "matrix":
                grad[s, ..., 0], grad[s, ..., 1] = g[..., :3], g[..., 3:]
            elif rep == "6d_rows":
                grad[s] = rotations.rows_6d_vjp(a[s].astype(np.float64), g)
            else:
                grad[s] = axis_angle_vjp(a[s], g)
        grad = grad.reshape(((1,) if single else ()) + np.shape(poses))
        return (log_p[0], grad[0]) if single else (log_p, grad)

    def sample(
        self,
        n: int | None = None,
        seed: int | np.random.Generator | None = None,
        z=None,
        temperature: float = 1.0,
        orthonormalize: bool = True,
    ) -> np.ndarray:
        """Poses f(z) in 6D, (n, 21, 6), with ``z = temperature * N(0, I)`` drawn by ``numpy.random.default_rng(seed)``.

        ``n``: an int in [1, SAMPLE_MAX]; ``seed``: None, an int >= 0 or a Generator; ``temperature``: finite, in
        (0, TEMPERATURE_MAX]. Give ``z`` ((B, D) or (D,)) instead of ``n`` to choose the latent yourself (used as
        given). Raw flow outputs are not exactly orthonormal: ``orthonormalize`` (default) applies Gram-Schmidt
        per joint.
        """
        if not isinstance(orthonormalize, (bool, np.bool_)):
            raise ValueError(f"sample: orthonormalize must be True or False, got {orthonormalize!r}"[:200])
        graph = GRAPHS["sample"]
        if z is None:
            if n is None:
                raise ValueError("sample: give n >= 1 or z")
            n, temperature = check_sample_args(n, seed, temperature)
            rng = np.random.default_rng(seed)
            single = False
            # consecutive draws of rows continue one stream: chunked z equals one draw of (n, D)
            draw = lambda s: (
                rng.standard_normal((s.stop - s.start, self.dim), dtype=np.float32) * np.float32(temperature)
            )
        else:
            if n is not None or seed is not None or not (isinstance(temperature, (int, float)) and temperature == 1.0):
                raise ValueError("sample: z is used as given; do not pass n, seed or temperature with it")
            z, single = self._latent(z)
            n = len(z)
            draw = lambda s: z[s]
        x = np.empty((n, self.num_joints, 6), np.float32)
        for s in self._slices(n, graph):
            (raw,) = self._run(graph, s, draw(s))
            x[s] = rotations.orthonormalize_6d(raw) if orthonormalize else raw
        return x[0] if single else x

    def latent_forward(self, z) -> tuple[np.ndarray, np.ndarray]:
        """(poses f(z) raw (B, 21, 6), log p(f(z)) (B,)) in one pass; ``-log p`` is the latent-space loss
        (not |z|^2, which drops the Jacobian term; docs/design.md §4)."""
        z, single = self._latent(z)
        graph = GRAPHS["latent_forward"]
        x, log_p = np.empty((len(z), self.num_joints, 6), np.float32), np.empty(len(z), np.float32)
        for s in self._slices(len(z), graph):
            x[s], log_p[s] = self._run(graph, s, z[s])
        return (x[0], log_p[0]) if single else (x, log_p)

    def latent_vjp(self, z, grad_poses) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(poses f(z) raw (B, 21, 6), log p(f(z)) (B,), d log p(f(z))/dz (B, D), (df/dz)^T grad_poses (B, D)).

        One forward and one reverse pass: with a data term E(x) whose gradient in 6D pose space is ``grad_poses``
        = dE/dx at x = f(z), the latent gradient of ``E(f(z)) - lam log p(f(z))`` is ``vjp_z - lam *
        grad_log_prob_z`` (log p with the Jacobian, docs/design.md §4). Masked joints of ``grad_poses`` are ignored.
        A model exported without this graph raises ``ModelError``.
        """
        z, single = self._latent(z)
        g, single_g = _batched(np.asarray(grad_poses), (self.num_joints, 6), "grad_poses")
        g = check_values(g, "grad_poses")
        if single_g != single or g.shape[0] != z.shape[0]:
            want = (self.num_joints, 6) if single else (z.shape[0], self.num_joints, 6)
            raise ValueError(
                f"grad_poses: shape {np.shape(grad_poses)}, expected {want}: one cotangent per latent of "
                f"z (shape {np.shape(z[0] if single else z)})"
            )
        graph = GRAPHS["latent_vjp"]
        n = len(z)
        out = (
            np.empty((n, self.num_joints, 6), np.float32),
            np.empty(n, np.float32),
            np.empty((n, self.dim), np.float32),
            np.empty((n, self.dim), np.float32),
        )
        for s in self._slices(n, graph):
            for o, r in zip(out, self._run(graph, s, z[s], g[s])):
                o[s] = r
        return tuple(o[0] for o in out) if single else out

    def encode(self, poses, rep: str = "6d") -> tuple[np.ndarray, np.ndarray]:
        """(z = f^-1(poses) (B, D), log p (B,)): the latents of poses, exactly (one pass of the inverse flow;
        ``sample(z=z, orthonormalize=False)`` gives the 6D back). A model exported without this graph raises
        ``ModelError`` (``runtime.fit.encode`` then solves f(z) = x iteratively)."""
        a, single = self._poses(poses, rep)
        graph = GRAPHS["encode"]
        z, log_p = np.empty((len(a), self.dim), np.float32), np.empty(len(a), np.float32)
        for s in self._slices(len(a), graph, rep):
            z[s], log_p[s] = self._run(graph, s, self._to_6d(a[s], rep))
        return (z[0], log_p[0]) if single else (z, log_p)


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
        general = w[..., i, None, None] * rotations.skew(w) + rotations.skew(np.cross(w, (eye - R)[..., :, i]))
        dR = np.where(small, rotations.skew(e_i), general / np.where(small, 1.0, t2)) @ R
        out[..., i] = np.sum(G * dR, axis=(-1, -2))
    return out
