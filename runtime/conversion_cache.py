"""The conversion cache of ``train.ingest`` (numpy only, so that its worker processes import no torch): one source
take file converted by ``runtime.convert`` and stored under a key of everything the result depends on.

    key = sha256(source sha256, the .asf's sha256 for an .amc, CONVERSION_VERSION, rest joints, fps, joint map)

``<key>.npy``: the 21 body joints of every take, float32 axis-angle (N, 21, 3) = ``poses[:, 3:66]`` of
``named_takes`` (the numbers ``poseprior convert`` writes); ``<key>.json``: the source, conversion version,
skeleton detected and the takes (name, subject, frames). Both written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .convert import CONVERSION_VERSION, named_takes
from .formats import FormatError, detect_skeleton, read_motion
from .formats.npz import npz_keys
from .formats.read import find_asf
from .manifest import sha256_file

#: the cache folder when neither ``--cache`` nor ``$POSEPRIOR_CACHE`` is given
DEFAULT_CACHE = Path.home() / ".cache" / "poseprior"


def cache_dir(given: str | Path | None = None) -> Path:
    """``given``, else ``$POSEPRIOR_CACHE``, else ``~/.cache/poseprior``; converted takes go to ``<it>/convert``."""
    return Path(given or os.environ.get("POSEPRIOR_CACHE") or DEFAULT_CACHE) / "convert"


def source_key(path: Path, rest: np.ndarray, fps: float | None, joint_map: dict | None) -> tuple[str, dict]:
    """(cache key, the source's record {path, sha256[, asf, asf_sha256]}) (module docstring)."""
    record = {"path": str(path), "sha256": sha256_file(path)}
    h = hashlib.sha256(record["sha256"].encode())
    if path.suffix.lower() == ".amc":
        try:
            asf = find_asf(path)
        except FormatError as e:
            raise FormatError(str(e)) from None
        record.update(asf=str(asf), asf_sha256=sha256_file(asf))
        h.update(record["asf_sha256"].encode())
    h.update(
        json.dumps(
            [CONVERSION_VERSION, np.asarray(rest, np.float64).round(9).tolist(), fps, joint_map], sort_keys=True
        ).encode()
    )
    return h.hexdigest(), record


def _skeleton_of(path: Path, joint_map: dict | None) -> str:
    if joint_map is not None:
        return "joint map"
    if path.suffix.lower() == ".npz" and "poses" in npz_keys(path):
        return "smpl (AMASS)"
    m = read_motion(path)
    return detect_skeleton(m[0] if isinstance(m, list) else m)


def convert_one(
    path: str, key: str, folder: str, rest: np.ndarray, fps: float | None, joint_map: dict | None
) -> str | None:
    """Convert one source into ``folder/<key>.npy`` + ``.json`` (atomically); None, or the one-line error."""
    path_, out = Path(path), Path(folder)
    try:
        takes = named_takes(path_, rest, fps=fps, joint_map=joint_map)
        skeleton = _skeleton_of(path_, joint_map)
    except (FormatError, ValueError, OSError) as e:
        msg = str(e)
        return msg if msg.startswith(str(path_)) else f"{path_}: {msg}"
    poses = np.concatenate([t["poses"][:, 3:66] for *_, t in takes]).astype(np.float32).reshape(-1, 21, 3)
    meta = {
        "source": path,
        "conversion": CONVERSION_VERSION,
        "skeleton": skeleton,
        "fps": fps,
        "takes": [{"name": n, "subject": s, "frames": len(t["poses"])} for n, s, t in takes],
    }
    atomic_write(out / f"{key}.npy", lambda tmp: np.save(tmp, poses))
    atomic_write_text(out / f"{key}.json", json.dumps(meta))
    return None
