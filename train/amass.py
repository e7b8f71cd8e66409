"""AMASS ``.npz`` files -> ``PoseSet``, through the torch-free reader ``runtime.formats.read_amass``.

Layout of an AMASS file: ``poses`` (T, 156) SMPL-H, (T, 165) SMPL-X or (T, 72) SMPL axis-angle, with
``poses[:, 0:3]`` the global root orientation and ``poses[:, 3:66]`` the 21 body joints 1..21 in SMPL body
order; ``mocap_framerate`` (SMPL-H) or ``mocap_frame_rate`` (SMPL-X) is the source frame rate in Hz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.formats import read_amass
from runtime.formats.motion import frame_stride as _frame_stride
from runtime.formats.npz import POSE_WIDTHS, RATE_KEYS  # noqa: F401  (re-exported)

from .data import DataError, PoseSet, as_data_error, check_rotations, sha256_file
from .rotations import NUM_JOINTS


def frame_stride(source_fps: float | None, fps: float | None, source: str) -> int:
    """``runtime.formats.frame_stride`` (``max(1, round(source_fps / fps))``, 1 when ``fps`` is None), raising
    ``DataError``."""
    with as_data_error():
        return _frame_stride(source_fps, fps, source)


def load_amass(path: str | Path, fps: float | None = None) -> PoseSet:
    """One AMASS file as a single sequence named after the file stem (subject -1, no offsets).

    ``rotations = poses[::stride, 3:66].reshape(-1, 21, 3)`` with ``stride = frame_stride(src, fps)``;
    asking for ``fps`` from a file without a frame rate is an error.
    """
    path = Path(path)
    with as_data_error():
        d = read_amass(path)
    rate = d.get("mocap_framerate")
    if fps is not None and rate is None:
        raise DataError(f"{path}: frame rate {fps} requested but the file has no {' or '.join(RATE_KEYS)}")
    stride = frame_stride(rate, fps, str(path))
    rot = check_rotations(d["poses"][::stride, 3:66].reshape(-1, NUM_JOINTS, 3), str(path))
    n = len(rot)
    return PoseSet(rot, np.zeros(n, np.int64), [path.stem], np.full(n, -1, np.int64), None,
                   {str(path): sha256_file(path)})
