"""``.npz`` motion files: the project's shared pose format and AMASS, read without torch (``allow_pickle=False``).

Shared format (``../shared/data/cmu_pose/README.md``): ``rotations`` (N, 21, 3) local axis-angle in SMPL body order,
``root_orient`` (N, 3), ``trans`` (N, 3) metres Y up, ``sequence`` (N,) into ``sequence_names``, ``subject`` (N,),
``seq_offsets`` (S, 22, 3) exact rest offsets per sequence (else ``offsets`` (22, 3)), ``parents`` (22,), ``fps``.
``read_shared_npz`` gives one ``Motion`` per sequence with ``names = SMPL_NAMES`` (pelvis + ``JOINT_NAMES``),
``rotations[:, 0] = R(root_orient)``, ``rotations[:, k] = R(rotations[:, k-1])``, frames in file order.

AMASS (``read_amass``): ``poses`` (T, 72) SMPL, (T, 156) SMPL-H or (T, 165) SMPL-X axis-angle, ``poses[:, 0:3]`` the
root orientation and ``poses[:, 3:66]`` the 21 body joints; returned as SMPL's 72 = root + 21 body joints + the two
hand joints (zeros for SMPL-H / SMPL-X, whose hands are finger joints instead; a 72-wide file is kept as is).
``trans`` (T, 3) (Z up in AMASS), ``mocap_framerate`` (or SMPL-X's ``mocap_frame_rate``), ``betas``, ``gender``.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..rotations import NUM_JOINTS, PARENTS, axis_angle_to_matrix
from .joint_maps import SMPL_NAMES
from .motion import FormatError, Motion, check_fps

#: widths of AMASS ``poses`` that hold the SMPL body joints at columns 3..65
POSE_WIDTHS = {72: "SMPL", 156: "SMPL-H", 165: "SMPL-X"}
RATE_KEYS = ("mocap_framerate", "mocap_frame_rate")


def npz_keys(path: str | Path) -> set[str]:
    """The array names of an ``.npz`` (its zip members, without reading the arrays); FormatError if it is not one."""
    try:
        with zipfile.ZipFile(path) as z:
            return {n.removesuffix(".npy") for n in z.namelist()}
    except (OSError, zipfile.BadZipFile) as e:
        raise FormatError(f"{path}: cannot read npz file, not a valid numpy .npz archive ({e})") from None


def check_members(path: str | Path) -> None:
    """Every ``.npy`` member of the npz ``path`` must be a .npy array whose header's shape and dtype fit in the
    bytes the member holds (``prod(shape) * itemsize <= member size - header size``), checked from the headers
    alone, before anything is allocated: a 1 KB file whose header claims (10^12, 72) is refused, not allocated.
    FormatError naming the file and the member."""
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    try:
                        version = fmt.read_magic(f)
                        shape, _, dtype = (
                            fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
                        )
                    except (ValueError, SyntaxError, TypeError, EOFError) as e:
                        raise FormatError(f"{path}: member {info.filename} is not a .npy array ({e})"[:300]) from None
                    held = info.file_size - f.tell()
                need = int(np.prod([int(n) for n in shape], dtype=object) if shape else 1) * dtype.itemsize
                if need > held:
                    raise FormatError(
                        f"{path}: member {info.filename}: its header claims shape {tuple(shape)} of "
                        f"{dtype} ({need:,} bytes) but the member holds {held:,} bytes: a corrupt file"
                    )
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise FormatError(
            f"{path}: cannot read npz file, not a valid numpy .npz archive ({type(e).__name__}: {e})"
        ) from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles), or a FormatError naming the file; the file is always closed.
    The members' headers are checked against their sizes first (``check_members``)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    check_members(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        # TypeError/ValueError: a .npy or a non-zip file (numpy then complains about pickles)
        raise FormatError(
            f"{path}: cannot read npz file, not a valid numpy .npz archive ({type(e).__name__}: {e})"
        ) from None


#: largest |value| accepted in a pose file: rotation vectors (radians) and root translations (metres); beyond them
#: a value is not a pose (and 1e39 is not even a float32)
MAX_ANGLE_RAD = 1e3
MAX_TRANS_M = 1e5


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (stored, no pickles) with fixed member timestamps, so the same arrays always give the same bytes
    (and sha256). Writes ``path`` in place: callers wrap it in ``runtime.atomic.atomic_write``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _finite_frames(a: np.ndarray, what: str, src: str, bound: float | None = None, unit: str = "") -> np.ndarray:
    """``a`` as float64, every frame finite and (``bound``) within ``|value| <= bound``; FormatError naming the
    file, the first bad frame and the value."""
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise FormatError(f"{src}: {what} has dtype {a.dtype}, expected numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        a = a.astype(np.float64, copy=False)
    flat = a.reshape(len(a), -1)
    rows = max(1, (1 << 20) // max(1, flat.shape[1]))  # checked in blocks: small temporaries
    for s in range(0, len(flat), rows):
        block = flat[s : s + rows]
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            n = int((~np.isfinite(flat).all(axis=1)).sum())
            raise FormatError(f"{src}: frame {s + int(np.argmax(bad))}: {what} holds NaN or inf ({n} frames)")
        if bound is not None:
            big = (np.abs(block) > bound).any(axis=1)
            if big.any():
                f = int(np.argmax(big))
                v = block[f][np.argmax(np.abs(block[f]))]
                n = int((np.abs(flat) > bound).any(axis=1).sum())
                raise FormatError(
                    f"{src}: frame {s + f}: {what} holds {v:.4g}, beyond the +-{bound:g}{unit} a pose "
                    f"file may hold ({n} frames): a corrupt value"
                )
    return a


def _integral(a: np.ndarray) -> bool:
    """Integers, or floats of integral value."""
    if np.issubdtype(a.dtype, np.integer):
        return True
    return bool(np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all())


def _rate(d: dict[str, np.ndarray], keys: tuple[str, ...], src: str) -> float | None:
    """The first of ``keys`` in ``d`` as a positive frame rate (None when absent); FormatError when it is not."""
    key = next((k for k in keys if k in d), None)
    if key is None:
        return None
    try:
        rate = float(d[key].reshape(-1)[0]) if d[key].size == 1 else None
    except (TypeError, ValueError):
        rate = None
    if rate is None or not (np.isfinite(rate) and rate > 0):
        raise FormatError(f"{src}: {key} = {d[key]!r} is not a positive number")
    return check_fps(rate, src, key)


def read_shared_npz(path: str | Path) -> list[Motion]:
    """One ``Motion`` per sequence of a shared-format npz (module docstring)."""
    src = str(path)
    d = read_npz(path)
    missing = [k for k in ("rotations", "root_orient", "trans") if k not in d]
    if missing or ("seq_offsets" not in d and "offsets" not in d):
        raise FormatError(
            f"{src}: not the shared pose format: lacks {missing or ['seq_offsets/offsets']} (keys: {', '.join(d)})"
        )
    rot = d["rotations"]
    n = len(rot)
    if rot.ndim != 3 or rot.shape[1:] != (NUM_JOINTS, 3) or n == 0:
        raise FormatError(f"{src}: rotations have shape {rot.shape}, expected (N > 0, {NUM_JOINTS}, 3) axis-angle")
    for k, shape in (("root_orient", (n, 3)), ("trans", (n, 3))):
        if d[k].shape != shape:
            raise FormatError(f"{src}: {k} has shape {d[k].shape}, expected {shape}")
    for k in ("parents", "sequence_names", "sequence", "subject"):
        if k in d and d[k].ndim != 1:
            raise FormatError(f"{src}: '{k}' has shape {d[k].shape}, expected a 1-d array")
    for k in ("sequence", "subject"):
        if k in d and not _integral(d[k]):
            raise FormatError(f"{src}: '{k}' has dtype {d[k].dtype}, expected integers")
    if "parents" in d and not _integral(d["parents"]):
        raise FormatError(f"{src}: 'parents' has dtype {d['parents'].dtype}, expected integers")
    rot, root, trans = (
        _finite_frames(d[k], k, src, *b)
        for k, b in (
            ("rotations", (MAX_ANGLE_RAD, " rad")),
            ("root_orient", (MAX_ANGLE_RAD, " rad")),
            ("trans", (MAX_TRANS_M, " m")),
        )
    )
    if "parents" in d and tuple(d["parents"].tolist()) != PARENTS:
        raise FormatError(f"{src}: parents {d['parents'].tolist()} are not SMPL's {list(PARENTS)}")
    seq = d["sequence"].astype(np.int64) if "sequence" in d else np.zeros(n, np.int64)
    names = [str(s) for s in d["sequence_names"]] if "sequence_names" in d else [Path(path).stem]
    subj = d["subject"].astype(np.int64) if "subject" in d else np.full(n, -1, np.int64)
    if seq.shape != (n,) or subj.shape != (n,) or seq.min() < 0 or seq.max() >= len(names):
        raise FormatError(
            f"{src}: 'sequence'/'subject' must have shape ({n},) with sequence indices into "
            f"the {len(names)} sequence_names"
        )
    offsets = d["seq_offsets"] if "seq_offsets" in d else np.broadcast_to(d["offsets"], (len(names), 22, 3))
    if offsets.shape != (len(names), 22, 3):
        raise FormatError(f"{src}: seq_offsets has shape {offsets.shape}, expected ({len(names)}, 22, 3)")
    fps = _rate(d, ("fps",), src)
    if fps is None:
        raise FormatError(f"{src}: no 'fps'")
    order = np.argsort(seq, kind="stable")  # frames keep file order
    cuts = np.flatnonzero(np.diff(seq[order])) + 1
    out = []
    for idx in np.split(order, cuts):
        s = int(seq[idx[0]])
        subject = {int(v) for v in np.unique(subj[idx])}
        R = axis_angle_to_matrix(np.concatenate([root[idx, None], rot[idx]], axis=1))  # (n, 22, 3, 3)
        out.append(
            Motion(
                SMPL_NAMES,
                np.array(PARENTS),
                offsets[s].astype(np.float64),
                R,
                trans[idx],
                fps,
                f"{src} [{names[s]}]",
                up="y",
                subject=str(subject.pop()) if len(subject) == 1 and -1 not in subject else None,
                sequence=names[s],
            )
        )
    return out


def read_amass(path: str | Path) -> dict:
    """An AMASS npz (module docstring) as ``{"poses": (T, 72), "trans": (T, 3), "mocap_framerate": float,
    "betas": ..., "gender": str}``; ``trans``, the rate, ``betas`` and ``gender`` only when the file has them."""
    src = str(path)
    d = read_npz(path)
    if "poses" not in d:
        raise FormatError(f"{src}: no 'poses' array (keys: {', '.join(d)}); not an AMASS file")
    poses = d["poses"]
    if poses.ndim != 2 or poses.shape[1] not in POSE_WIDTHS or len(poses) == 0:
        raise FormatError(
            f"{src}: 'poses' has shape {poses.shape}, expected (T > 0, W) with W in "
            + ", ".join(f"{w} ({m})" for w, m in POSE_WIDTHS.items())
        )
    poses = _finite_frames(poses, "poses", src, MAX_ANGLE_RAD, " rad")
    if poses.shape[1] != 72:
        wide, poses = poses, np.zeros((len(poses), 72))
        poses[:, :66] = wide[:, :66]
    out: dict = {"poses": poses}
    if "trans" in d:
        if d["trans"].shape != (len(poses), 3):
            raise FormatError(f"{src}: 'trans' has shape {d['trans'].shape}, expected ({len(poses)}, 3)")
        out["trans"] = _finite_frames(d["trans"], "trans", src, MAX_TRANS_M, " m")
    rate = _rate(d, RATE_KEYS, src)
    if rate is not None:
        out["mocap_framerate"] = rate
    if "betas" in d:
        out["betas"] = _finite_frames(d["betas"].reshape(1, -1), "betas", src)[0]
    if "gender" in d:
        out["gender"] = str(d["gender"])
    return out
