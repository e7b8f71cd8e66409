"""Repair output that keeps everything the input had: an AMASS / SMPL-H / SMPL-X npz is written back whole.

``write_repaired(src, take, repaired, out)``: every array of ``src`` (its keys in its order, dtypes and bytes as
they were: ``betas``, ``gender``, ``trans``, ``mocap_framerate``, hand and face poses, ``dmpls``, anything else)
is written to ``out`` unchanged, except ``poses[r, 3:66]`` -- the 21 body joints (SMPL joints 1..21) -- of the
repaired rows ``r``, which get the repaired take's values cast to ``poses``' dtype. The rows are the source's own
(``Take.frames``), so a multi-take file, or one whose takes are not contiguous, is written back in its own order.
Written atomically (no partial file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .formats import FormatError
from .formats.npz import POSE_WIDTHS, npz_keys, read_npz, write_npz


def is_amass(path: str | Path) -> bool:
    """Whether ``path`` is an npz with a ``poses`` array (an AMASS-style file, kept whole by ``write_repaired``)."""
    path = Path(path)
    return path.suffix.lower() == ".npz" and path.is_file() and "poses" in npz_keys(path)


def write_repaired(src: str | Path, frames: np.ndarray, body: np.ndarray, out: str | Path) -> Path:
    """``src``'s arrays with ``poses[frames, 3:66] = body`` (``frames`` (R,) source rows, ``body`` (R, 63)
    axis-angle) written to ``out`` (module docstring)."""
    d = read_npz(src)
    poses = d["poses"]
    if poses.ndim != 2 or poses.shape[1] not in POSE_WIDTHS:
        raise FormatError(f"{src}: 'poses' has shape {poses.shape}, expected (T, W), W in {sorted(POSE_WIDTHS)}")
    frames = np.asarray(frames, np.int64)
    if len(frames) and (frames.min() < 0 or frames.max() >= len(poses)):
        raise FormatError(f"{src}: repaired rows {frames.min()}..{frames.max()} outside its {len(poses)} frames")
    if len(frames):
        poses = poses.copy()
        poses[frames, 3:66] = np.asarray(body).astype(poses.dtype)
        d["poses"] = poses
    return atomic_write(Path(out), lambda tmp: write_npz(tmp, d))
