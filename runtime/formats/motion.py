"""``Motion``: one take of any source skeleton, in metres, as local rotations; its forward kinematics.

Every reader (``read_bvh``, ``read_amc``, the shared npz format) returns this one form:

* ``names`` (J joint names, parents before children), ``parents`` (J,) int64 (-1 for the root);
* ``offsets`` (J, 3) metres: joint j's position relative to its parent, in the parent's frame, in the skeleton's
  zero pose (every rotation the identity). FK does not use ``offsets[0]`` (readers set it to 0): the root's
  position is ``trans``;
* ``rotations`` (T, J, 3, 3) local rotations, zero pose = identity, frames world-aligned in the zero pose;
* ``trans`` (T, 3) root position (world, metres, the file's up axis ``up``); ``fps`` frames per second;
* ``end_sites``: joint name -> (3,) offset of its End Site / bone tip in that joint's frame (BVH ``End Site``,
  ASF leaf bones), for the bone directions of leaf joints (head top, toe tip).

Forward kinematics (``forward_kinematics``), the SMPL kinematic convention of ``../shared/data/*/README.md``:

    G_0 = R_0,  P_0 = trans;     G_j = G_parent(j) R_j,   P_j = P_parent(j) + G_parent(j) offsets_j.

Euler angles (``euler_matrix`` / ``matrix_to_euler``): ``axes = "zyx"`` means ``R = Rz(a0) Ry(a1) Rx(a2)``, i.e.
rotations applied intrinsically (about the moving axes) in the listed order -- scipy's
``Rotation.from_euler("ZYX", ...)``. ``R_x(t) = [[1, 0, 0], [0, c, -s], [0, s, c]]`` and its cyclic twins.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# atomic_write lives in runtime.atomic; re-exported here only until runtime/takes.py imports it from there
from ..atomic import atomic_write as atomic_write
from ..kinematics import chain
from ..rotations import rotation_error


class FormatError(ValueError):
    """A motion file cannot be read; the message names the file and the line (text formats) or frame."""


_AXES = {"x": 0, "y": 1, "z": 2}
#: largest |root position| (m) and |bone offset| (m) of a ``Motion``: beyond them a value is corrupt (and its
#: conversion would overflow float32)
MAX_TRANS_M = 1e5
MAX_OFFSET_M = 100.0
#: frame rates (Hz) a take may have: beyond them a rate is corrupt (a BVH ``Frame Time: 1e-300`` is 1e300 fps,
#: whose square overflows the smoothing weight ``fps^2``)
FPS_RANGE = (0.1, 10_000.0)


def check_fps(fps: float, src: str, what: str = "frame rate") -> float:
    """``fps`` as a float if it is a number within ``FPS_RANGE``, else a FormatError naming ``src``."""
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise FormatError(f"{src}: {what} {fps!r} is not a number") from None
    if not (np.isfinite(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1]):
        raise FormatError(f"{src}: {what} {fps:g} Hz is outside {FPS_RANGE[0]:g}-{FPS_RANGE[1]:g} Hz: a corrupt value")
    return fps


#: largest ``runtime.rotations.rotation_error`` a ``Motion`` rotation may have (float32 sources reach ~1e-7)
ROTATION_TOL = 1e-5


def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """(...,) radians -> (..., 3, 3) rotation about coordinate axis ``axis`` ("x", "y" or "z")."""
    a = _AXES[axis.lower()]
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    i, j = (a + 1) % 3, (a + 2) % 3  # cyclic, so that R[j, i] = +sin for every axis
    R = np.zeros(angle.shape + (3, 3))
    R[..., a, a] = 1.0
    R[..., i, i], R[..., i, j], R[..., j, i], R[..., j, j] = c, -s, s, c
    return R


def euler_matrix(angles: np.ndarray, axes: str) -> np.ndarray:
    """(..., k) radians, ``axes`` k letters -> ``R = R_axes[0](angles[..., 0]) R_axes[1](...) ...`` (..., 3, 3)."""
    angles = np.asarray(angles, dtype=np.float64)
    R = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3))
    for k, axis in enumerate(axes):
        R = R @ axis_rotation(axis, angles[..., k])
    return R


def matrix_to_euler(R: np.ndarray, axes: str) -> np.ndarray:
    """Inverse of ``euler_matrix`` for three distinct axes (i, j, k): (..., 3, 3) -> (..., 3) radians.

    With ``s = +1`` for a cyclic order (xyz, yzx, zxy) and -1 otherwise: ``a1 = asin(s R[i, k])``,
    ``a0 = atan2(-s R[j, k], R[k, k])``, ``a2 = atan2(-s R[i, j], R[i, i])``; the middle angle lies in
    [-90, 90] degrees. At gimbal lock (``|cos a1| < 1e-9``) ``a2 = 0`` and ``a0 = atan2(s R[k, j], R[j, j])``.
    """
    i, j, k = (_AXES[a] for a in axes.lower())
    if len({i, j, k}) != 3:
        raise ValueError(f"axes {axes!r}: need three distinct axes")
    s = 1.0 if (j - i) % 3 == 1 else -1.0
    R = np.asarray(R, dtype=np.float64)
    a1 = np.arcsin(np.clip(s * R[..., i, k], -1.0, 1.0))
    lock = np.abs(np.cos(a1)) < 1e-9
    a0 = np.where(lock, np.arctan2(s * R[..., k, j], R[..., j, j]), np.arctan2(-s * R[..., j, k], R[..., k, k]))
    a2 = np.where(lock, 0.0, np.arctan2(-s * R[..., i, j], R[..., i, i]))
    return np.stack([a0, a1, a2], axis=-1)


def frame_stride(source_fps: float | None, fps: float | None, source: str) -> int:
    """Subsampling step ``max(1, round(source_fps / fps))``; 1 when ``fps`` is None (keep every frame).

    Frames ``0, stride, 2 stride, ...`` are kept, so the kept rate is ``source_fps / stride``: exactly ``fps``
    when it divides the source rate, the nearest reachable rate otherwise, and the source rate when
    ``fps >= source_fps`` (frames are never duplicated).
    """
    if fps is None:
        return 1
    if not fps > 0:
        raise FormatError(f"{source}: requested frame rate {fps} must be positive")
    if source_fps is None:
        raise FormatError(f"{source}: no source frame rate in the file, so it cannot be subsampled to {fps:g} fps")
    if not (np.isfinite(source_fps) and source_fps > 0):
        raise FormatError(f"{source}: source frame rate {source_fps} is not a positive number")
    return max(1, round(source_fps / fps))


def read_lines(path, kind: str) -> list[str]:
    """The lines of a text motion file (UTF-8, a BOM allowed); FormatError naming the file and ``kind``."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read {kind} file ({type(e).__name__}: {e})") from None


#: frames checked at a time by ``Motion`` (the checks' temporaries stay a few MB whatever the take's length)
CHECK_FRAMES = 1024


def _first_bad_frame(a: np.ndarray) -> int | None:
    for s in range(0, len(a), CHECK_FRAMES):
        bad = ~np.isfinite(a[s : s + CHECK_FRAMES].reshape(len(a[s : s + CHECK_FRAMES]), -1)).all(axis=1)
        if bad.any():
            return s + int(np.argmax(bad))
    return None


@dataclass(frozen=True, eq=False)
class Motion:
    """One take: a skeleton (names, parents, offsets) and its motion (rotations, trans); see the module docstring."""

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    rotations: np.ndarray
    trans: np.ndarray
    fps: float
    source: str
    up: str = "y"
    subject: str | None = None
    sequence: str | None = None
    end_sites: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src, J = self.source, len(self.names)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        parents = np.asarray(self.parents, dtype=np.int64)
        offsets = np.asarray(self.offsets, dtype=np.float64)
        rotations = np.asarray(self.rotations, dtype=np.float64)
        trans = np.asarray(self.trans, dtype=np.float64)
        if len(set(self.names)) != J or J == 0:
            raise FormatError(f"{src}: joint names must be unique and non-empty")
        if parents.shape != (J,) or parents[0] != -1 or any(not -1 < p < j for j, p in enumerate(parents[1:], 1)):
            raise FormatError(
                f"{src}: parents must be (J,) with -1 for the root first and every parent before "
                f"its child, got {parents.tolist()}"
            )
        if offsets.shape != (J, 3) or not np.isfinite(offsets).all():
            raise FormatError(f"{src}: offsets must be finite with shape ({J}, 3), got {offsets.shape}")
        T = len(rotations)
        if rotations.shape != (T, J, 3, 3) or trans.shape != (T, 3) or T == 0:
            raise FormatError(
                f"{src}: rotations {rotations.shape} / trans {trans.shape} must be (T, {J}, 3, 3) / (T, 3) with T > 0"
            )
        for what, a in (("rotations", rotations), ("trans", trans)):
            f = _first_bad_frame(a)
            if f is not None:
                raise FormatError(f"{src}: frame {f}: {what} hold NaN or inf")
        far = np.abs(trans).max(axis=1) > MAX_TRANS_M
        if far.any():
            f = int(np.argmax(far))
            raise FormatError(
                f"{src}: frame {f}: root position {trans[f].tolist()} m is beyond +-{MAX_TRANS_M:g} m "
                f"({int(far.sum())} frames): a corrupt value (or a wrong unit)"
            )
        long = np.abs(offsets).max(axis=1) > MAX_OFFSET_M
        if long.any():
            j = int(np.argmax(long))
            raise FormatError(
                f"{src}: bone offset of joint {self.names[j]} is {offsets[j].tolist()} m, beyond "
                f"+-{MAX_OFFSET_M:g} m: a corrupt value (or a wrong unit)"
            )
        for s in range(0, T, CHECK_FRAMES):
            err = rotation_error(rotations[s : s + CHECK_FRAMES])  # (frames, J)
            if (err > ROTATION_TOL).any():
                f, j = np.unravel_index(int(np.argmax(err > ROTATION_TOL)), err.shape)
                raise FormatError(
                    f"{src}: frame {s + f}: rotation of joint {self.names[j]} is not a rotation "
                    f"matrix (|R^T R - I| or det < 0: {err[f, j]:.2g})"
                )
        check_fps(self.fps, src)
        if self.up not in ("x", "y", "z"):
            raise FormatError(f"{src}: up axis {self.up!r} must be 'x', 'y' or 'z'")
        sites = {str(k): np.asarray(v, dtype=np.float64) for k, v in self.end_sites.items()}
        for k, v in sites.items():
            if k not in self.names or v.shape != (3,) or not np.isfinite(v).all():
                raise FormatError(f"{src}: end site of {k!r} must be a finite (3,) offset of a known joint")
        for name, a in (("parents", parents), ("offsets", offsets), ("rotations", rotations), ("trans", trans)):
            object.__setattr__(self, name, a)
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "end_sites", sites)

    def __len__(self) -> int:
        return len(self.rotations)

    def index(self, name: str) -> int:
        """Index of joint ``name``; FormatError naming the file when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise FormatError(f"{self.source}: no joint {name!r}") from None

    def subsample(self, fps: float | None) -> "Motion":
        """Every ``frame_stride(self.fps, fps)``-th frame from frame 0, at rate ``self.fps / stride``."""
        stride = frame_stride(self.fps, fps, self.source)
        if stride == 1:
            return self
        return replace(self, rotations=self.rotations[::stride], trans=self.trans[::stride], fps=self.fps / stride)

    def rest_positions(self) -> np.ndarray:
        """(J, 3) joint positions of the zero pose with the root at the origin: cumulative ``offsets``."""
        P = np.zeros((len(self.names), 3))
        for j in range(1, len(self.names)):
            P[j] = P[self.parents[j]] + self.offsets[j]
        return P


def forward_kinematics(m: Motion) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations G (T, J, 3, 3) and positions P (T, J, 3), metres: ``runtime.kinematics.chain`` of the
    take, ``G_0 = R_0``, ``P_0 = trans``, ``G_j = G_parent R_j``, ``P_j = P_parent + G_parent offsets_j``."""
    return chain(m.rotations, m.offsets, m.parents, m.trans)


def end_site_positions(m: Motion, P: np.ndarray | None = None, G: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """World positions (T, 3) of every end site: ``P_j + G_j end_sites[j]`` (FK computed when not given)."""
    if P is None or G is None:
        G, P = forward_kinematics(m)
    return {k: P[:, m.index(k)] + G[:, m.index(k)] @ v for k, v in m.end_sites.items()}
