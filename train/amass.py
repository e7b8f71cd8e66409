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

from .data import DataError, PoseSet, as_data_error, check_rotations, read_npz, sha256_file
from .rotations import NUM_JOINTS, PARENTS


def frame_stride(source_fps: float | None, fps: float | None, source: str) -> int:
    """``runtime.formats.frame_stride`` (``max(1, round(source_fps / fps))``, 1 when ``fps`` is None), raising
    ``DataError``."""
    with as_data_error():
        return _frame_stride(source_fps, fps, source)


def load_amass(path: str | Path, fps: float | None = None) -> PoseSet:
    """One AMASS file as a single sequence named after the file stem (subject -1, no offsets), or, for the
    converted split files of ``make data`` (``runtime.tools.smpl_data``), its own ``sequence`` / ``sequence_names`` /
    ``subject`` arrays and the SMPL skeleton it was converted to (``rest_joints`` -> FK offsets).

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
    extra = read_npz(path) if d.get("sequence") is None else d
    seq, names, subj = np.zeros(n, np.int64), [path.stem], np.full(n, -1, np.int64)
    if "sequence" in extra and "sequence_names" in extra:
        seq = np.asarray(extra["sequence"])[::stride].astype(np.int64)
        names = [str(x) for x in extra["sequence_names"]]
        subj = np.asarray(extra.get("subject", np.full(len(extra["sequence"]), -1)))[::stride].astype(np.int64)
        if seq.shape != (n,) or subj.shape != (n,) or seq.min() < 0 or seq.max() >= len(names):
            raise DataError(f"{path}: 'sequence'/'subject' must have one entry per pose, indexing sequence_names")
    offsets, skeleton = None, None
    if "rest_joints" in extra:
        rest = np.asarray(extra["rest_joints"], np.float64)[:22]
        offsets = (rest - rest[np.maximum(np.array(PARENTS), 0)]).astype(np.float32)
        offsets[0] = 0.0
        skeleton = {
            "name": "smpl",
            "conversion": str(extra.get("conversion", "")),
            "rest_joints": (rest - rest[0]).round(6).tolist(),
        }
    return PoseSet(rot, seq, names, subj, offsets, {str(path): sha256_file(path)}, skeleton)
