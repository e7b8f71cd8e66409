"""AMASS ``.npz`` files -> ``PoseSet``.

Layout of an AMASS file: ``poses`` (T, 156) SMPL-H, (T, 165) SMPL-X or (T, 72) SMPL axis-angle, with
``poses[:, 0:3]`` the global root orientation and ``poses[:, 3:66]`` the 21 body joints 1..21 in SMPL body
order (the rest is hands / jaw / eyes, unused here); ``mocap_framerate`` (SMPL-H) or ``mocap_frame_rate``
(SMPL-X) is the source frame rate in Hz. Files are read with ``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import DataError, PoseSet, check_rotations, read_npz, sha256_file
from .rotations import NUM_JOINTS

#: widths of ``poses`` that hold the SMPL body joints at columns 3..65
POSE_WIDTHS = {72: "SMPL", 156: "SMPL-H", 165: "SMPL-X"}
_RATE_KEYS = ("mocap_framerate", "mocap_frame_rate")


def frame_stride(source_fps: float | None, fps: float | None, source: str) -> int:
    """Subsampling step ``max(1, round(source_fps / fps))``; 1 when ``fps`` is None (keep every frame).

    Frames ``0, stride, 2 stride, ...`` are kept, so the kept rate is ``source_fps / stride``: exactly ``fps``
    when it divides the source rate, the nearest reachable rate otherwise, and the source rate when
    ``fps >= source_fps`` (frames are never duplicated). Shared with ``train.bvh``.
    """
    if fps is None:
        return 1
    if not fps > 0:
        raise DataError(f"{source}: requested frame rate {fps} must be positive")
    if not (np.isfinite(source_fps) and source_fps > 0):
        raise DataError(f"{source}: source frame rate {source_fps} is not a positive number")
    return max(1, round(source_fps / fps))


def load_amass(path: str | Path, fps: float | None = None) -> PoseSet:
    """One AMASS file as a single sequence named after the file stem (subject -1, no offsets).

    ``rotations = poses[::stride, 3:66].reshape(-1, 21, 3)`` with ``stride = frame_stride(src, fps)``;
    asking for ``fps`` from a file without a frame rate is an error.
    """
    path = Path(path)
    d = read_npz(path)
    if "poses" not in d:
        raise DataError(f"{path}: no 'poses' array (keys: {', '.join(d)}); not an AMASS file")
    poses = d["poses"]
    rate = next((float(d[k]) for k in _RATE_KEYS if k in d), None)
    if poses.ndim != 2 or poses.shape[1] not in POSE_WIDTHS:
        raise DataError(f"{path}: 'poses' has shape {poses.shape}, expected (T, W) with W in "
                        + ", ".join(f"{w} ({m})" for w, m in POSE_WIDTHS.items()))
    if fps is not None and rate is None:
        raise DataError(f"{path}: frame rate {fps} requested but the file has no "
                        f"{' or '.join(_RATE_KEYS)}")
    stride = frame_stride(rate, fps, str(path))
    rot = check_rotations(poses[::stride, 3:66].reshape(-1, NUM_JOINTS, 3), str(path))
    n = len(rot)
    return PoseSet(rot, np.zeros(n, np.int64), [path.stem], np.full(n, -1, np.int64), None,
                   {str(path): sha256_file(path)})
