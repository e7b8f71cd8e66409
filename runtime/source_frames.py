"""Source frame numbers: which frame of the source file each converted frame is, and which frames were left out.

The take tools report frames in the source's own numbering (``runtime.takes``): a BVH/AMC take's frame ``i`` is
the file's motion frame ``i`` (0-based, as the file lists them: a cgspeed Daz/MotionBuilder BVH's frame 0, the
converter's T-pose, is dropped, so its first converted frame is frame 1); an npz's frame ``i`` is row ``i`` of its
arrays (every take of a multi-take file numbered in the one file-wide sequence of rows). Subsampling to ``fps``
keeps every ``stride``-th source frame of each take, and the numbers say which.

``take_rows`` splits an npz's rows by its ``sequence`` array (indices into ``sequence_names``), as
``runtime.formats.read_shared_npz`` does (takes in index order, frames in file order); ``amass_takes`` reads an
AMASS-style npz (``poses``; written by ``runtime.convert.save_amass`` or by AMASS) as one take per sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .formats import FormatError, frame_stride, read_amass
from .formats.npz import read_npz


def take_rows(d: dict[str, np.ndarray], n: int, src: str) -> list[tuple[str | None, int | None, np.ndarray]]:
    """(name, subject, rows) of every take of an npz's arrays ``d`` with ``n`` frames: one per ``sequence`` index
    (names from ``sequence_names``, the subject when all its frames share one >= 0), else one take of all rows
    (name and subject None)."""
    if "sequence" not in d:
        return [(None, None, np.arange(n))]
    seq = np.asarray(d["sequence"])
    names = [str(s) for s in np.asarray(d.get("sequence_names", np.array([]))).reshape(-1)]
    if (
        seq.shape != (n,)
        or not np.issubdtype(seq.dtype, np.integer)
        or not names
        or seq.min() < 0
        or seq.max() >= len(names)
    ):
        raise FormatError(f"{src}: 'sequence' must be ({n},) integers indexing its {len(names)} 'sequence_names'")
    subj = np.asarray(d["subject"]) if "subject" in d and np.shape(d["subject"]) == (n,) else None
    order = np.argsort(seq, kind="stable")
    out = []
    for rows in np.split(order, np.flatnonzero(np.diff(seq[order])) + 1):
        s = None if subj is None else {int(v) for v in np.unique(subj[rows])}
        out.append((names[int(seq[rows[0]])], s.pop() if s and len(s) == 1 and min(s) >= 0 else None, rows))
    return out


def amass_takes(path: str | Path, fps: float | None = None) -> list[dict]:
    """The takes of an AMASS-style npz: per take ``poses`` (T, 72) (``read_amass``), ``trans`` (zeros when the
    file has none), ``mocap_framerate`` (NaN when absent), ``source_frames`` (the file rows), ``dropped`` ("": an
    AMASS file keeps every row) and, for a multi-take file, ``sequence`` / ``subject``; subsampled to ``fps``."""
    a = read_amass(path)
    rate = a.get("mocap_framerate")
    stride = frame_stride(rate, fps, str(path))
    n = len(a["poses"])
    trans = a.get("trans", np.zeros((n, 3)))  # no trans: the root stays at the origin
    out = []
    for name, subject, rows in take_rows(read_npz(path), n, str(path)):
        rows = rows[::stride]
        t = {
            "poses": a["poses"][rows],
            "trans": trans[rows],
            "mocap_framerate": np.float64(np.nan if rate is None else rate / stride),
            "source_frames": rows.astype(np.int64),
            "dropped": "",
        }
        if name is not None:
            t["sequence"] = np.array(name)
        if subject is not None:
            t["subject"] = np.array(str(subject))
        out.append(t)
    return out
