"""Pose data sets: every loader returns the same in-memory form, a ``PoseSet``.

Sources:
* the shared npz format of ``../shared/data/{cmu_pose,bandai_pose}`` (``rotations`` (N, 21, 3) axis-angle in SMPL
  body order, ``sequence``, ``subject``, ``offsets``, ...) -- ``load_npz``;
* AMASS ``.npz`` files (``poses`` (T, 72 | 156 | 165), body joints 1..21 = ``poses[:, 3:66]``) -- ``train.amass``;
* takes of any format (BVH of any skeleton, ASF/AMC, AMASS, shared npz), converted to SMPL by ``runtime.convert``,
  cached and memory-mapped -- ``train.ingest`` (what ``poseprior train --data`` uses for anything but the split
  layout below).

A split-layout data directory holds a ``train`` and a ``val`` split, each either ``<split>.npz`` (shared format or
a converted AMASS-style file) or a folder ``<split>/`` of AMASS ``.npz`` files; its poses are used as they are.
Splits stay as given (by subject or sequence). BVH and ASF/AMC takes are never read here: they go through
``train.ingest`` (``runtime.convert``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime.formats import FormatError
from runtime.formats.npz import MAX_ANGLE_RAD, npz_keys
from runtime.formats.npz import read_npz as _read_npz
from runtime.prior import sha256_file  # noqa: F401  (re-exported for the loaders)
from runtime.rotations import mirror_axis_angle

from .rotations import NUM_JOINTS, axis_angle_to_6d


class DataError(ValueError):
    """A data file is missing, unreadable or holds bad values; the message names the file and the problem."""


@contextmanager
def as_data_error():
    """Re-raise the runtime readers' ``runtime.formats.FormatError`` as ``DataError`` (same message)."""
    try:
        yield
    except FormatError as e:
        raise DataError(str(e)) from None


@dataclass
class PoseSet:
    rotations: np.ndarray  # (N, 21, 3) float32 axis-angle, SMPL body order
    sequence: np.ndarray  # (N,) int: index into sequence_names
    sequence_names: list[str]
    subject: np.ndarray  # (N,) int (-1 where unknown)
    offsets: np.ndarray | None = None  # (22, 3) mean rest skeleton (m), for forward kinematics
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every file read
    skeleton: dict | None = None  # the skeleton converted to (make data): name, conversion, rest_joints
    six_d: np.ndarray | None = None  # (N, 21, 6) float32 = to_6d(), precomputed (train.ingest: memory-mapped)

    def __len__(self) -> int:
        return len(self.rotations)

    def to_6d(self) -> torch.Tensor:
        """(N, 21, 6) float32 tensor of orthonormal 6D rotations (converted in float64, in chunks; ``six_d`` when
        it is given, without a copy)."""
        if self.six_d is not None:
            return torch.from_numpy(self.six_d)
        aa = torch.from_numpy(self.rotations)
        return (
            torch.cat([axis_angle_to_6d(c.double()).float() for c in aa.split(32768)])
            if len(aa)
            else torch.empty(0, NUM_JOINTS, 6)
        )

    def evenly_spaced(self, n: int) -> "PoseSet":
        """``n`` poses at indices ``linspace(0, N - 1, n)`` (rounded down), with their sequences and subjects."""
        idx = np.linspace(0, len(self) - 1, n).astype(int)
        return PoseSet(
            self.rotations[idx],
            self.sequence[idx],
            self.sequence_names,
            self.subject[idx],
            self.offsets,
            self.files,
            self.skeleton,
        )

    def mirrored(self) -> "PoseSet":
        """The left-right mirror image of every pose (``runtime.rotations.mirror_axis_angle``)."""
        return PoseSet(
            mirror_axis_angle(self.rotations),
            self.sequence,
            self.sequence_names,
            self.subject,
            self.offsets,
            self.files,
            self.skeleton,
        )

    @staticmethod
    def concat(sets: list["PoseSet"]) -> "PoseSet":
        names: list[str] = []
        seqs, files = [], {}
        for s in sets:
            seqs.append(s.sequence + len(names))
            names += list(s.sequence_names)
            files.update(s.files)
        offsets = next((s.offsets for s in sets if s.offsets is not None), None)
        skeleton = next((s.skeleton for s in sets if s.skeleton is not None), None)
        return PoseSet(
            np.concatenate([s.rotations for s in sets]),
            np.concatenate(seqs),
            names,
            np.concatenate([s.subject for s in sets]),
            offsets,
            files,
            skeleton,
        )


def check_rotations(rot: np.ndarray, source: str) -> np.ndarray:
    """Shape (N, 21, 3), finite, non-empty; returns float32. Raises DataError naming ``source``."""
    rot = np.asarray(rot)
    if rot.ndim != 3 or rot.shape[1:] != (NUM_JOINTS, 3):
        raise DataError(f"{source}: rotations have shape {rot.shape}, expected (N, {NUM_JOINTS}, 3) axis-angle")
    if not np.issubdtype(rot.dtype, np.floating):
        raise DataError(f"{source}: rotations have dtype {rot.dtype}, expected floating point")
    if len(rot) == 0:
        raise DataError(f"{source}: no poses (empty split)")
    bad = ~np.isfinite(rot).all(axis=(1, 2))
    if bad.any():
        raise DataError(f"{source}: {int(bad.sum())} poses contain NaN or inf (first at index {int(np.argmax(bad))})")
    big = (np.abs(rot) > MAX_ANGLE_RAD).any(axis=(1, 2))
    if big.any():
        raise DataError(
            f"{source}: {int(big.sum())} poses hold rotation vectors beyond +-{MAX_ANGLE_RAD:g} rad "
            f"(first at index {int(np.argmax(big))}): a corrupt value"
        )
    return rot.astype(np.float32, copy=False)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles), or a DataError naming the file (``runtime.formats.npz``)."""
    with as_data_error():
        return _read_npz(path)


def _integers(d: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """Array ``key`` of an npz as int64 (integers, or floats of integral value); else a DataError naming the file
    and the key."""
    a = d[key]
    integral = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and bool(np.isfinite(a).all()) and bool((a == np.round(a)).all())
    )
    if not integral:
        raise DataError(f"{path}: '{key}' has dtype {a.dtype}, expected integers")
    return a.astype(np.int64)


def load_npz(path: str | Path) -> PoseSet:
    """The shared npz format (see ../shared/data/cmu_pose/README.md)."""
    path = Path(path)
    d = read_npz(path)
    if "rotations" not in d:
        raise DataError(f"{path}: no 'rotations' array (keys: {', '.join(d)}); not a pose npz of the shared format")
    rot = check_rotations(d["rotations"], str(path))
    n = len(rot)
    seq = _integers(d, "sequence", path) if "sequence" in d else np.zeros(n, np.int64)
    names = [str(s) for s in d["sequence_names"]] if "sequence_names" in d else [path.stem]
    subj = _integers(d, "subject", path) if "subject" in d else np.full(n, -1, np.int64)
    offsets = d["offsets"] if "offsets" in d else None
    if offsets is not None and (not np.issubdtype(offsets.dtype, np.number) or not np.isfinite(offsets).all()):
        raise DataError(f"{path}: 'offsets' must be finite numbers (dtype {offsets.dtype})")
    offsets = None if offsets is None else offsets.astype(np.float32)
    if seq.shape != (n,) or subj.shape != (n,):
        raise DataError(f"{path}: 'sequence'/'subject' must have shape ({n},)")
    return PoseSet(rot, seq, names, subj, offsets, {str(path): sha256_file(path)})


def load_split(path: str | Path, fps: float | None = None) -> PoseSet:
    """One split: a shared-format npz, an AMASS npz, a BVH file, or a folder of AMASS npz / BVH files."""
    path = Path(path)
    if path.is_dir():
        # AMASS folders also hold shape.npz (body shape only): not poses
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".npz" and p.name != "shape.npz")
        if not files:
            raise DataError(f"{path}: folder holds no .npz files")
        return PoseSet.concat([load_split(f, fps) for f in files])
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.suffix.lower() in (".bvh", ".amc"):
        raise DataError(
            f"{path}: a motion take: read it through train.ingest (runtime.convert), e.g. "
            f"`poseprior train --data {path.parent}`"
        )
    if path.suffix.lower() == ".npz":
        with as_data_error():  # the archive's member names are the array names: no need to read them twice
            keys = npz_keys(path)
        if "rotations" in keys:
            return load_npz(path)
        if "poses" in keys:
            from .amass import load_amass

            return load_amass(path, fps=fps)
        raise DataError(
            f"{path}: npz has neither 'rotations' (shared format) nor 'poses' (AMASS); keys: {sorted(keys)}"
        )
    raise DataError(f"{path}: unknown data file type (expected .npz)")


def is_split_layout(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is a split-layout folder (``train.npz`` or ``train/``, and ``val.npz`` or ``val/``)
    whose splits hold ``.npz`` files only (no BVH / ASF/AMC takes: those go through ``train.ingest``)."""
    d = Path(data_dir)
    splits = [next((c for c in (d / f"{s}.npz", d / s) if c.exists()), None) for s in ("train", "val")]
    if d.is_dir() and splits[0] is not None and splits[0].suffix == ".npz" and splits[1] is None:
        raise DataError(
            f"{d}: has {splits[0].name} but no 'val' split (val.npz or val/); add one, or give the "
            f"validation takes with --val"
        )
    if not d.is_dir() or None in splits:
        return False
    return not any(f.suffix.lower() in (".bvh", ".amc") for s in splits if s.is_dir() for f in s.rglob("*"))


def find_split(data_dir: str | Path, split: str) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    found = [c for c in (data_dir / f"{split}.npz", data_dir / split) if c.exists()]
    if len(found) == 2:
        raise DataError(
            f"{data_dir}: holds both {split}.npz and a folder {split}/: which is the '{split}' split? "
            f"Move one of them away"
        )
    if found:
        return found[0]
    raise DataError(f"{data_dir}: no '{split}' split (expected {split}.npz or a folder {split}/)")


def load_dataset(data_dir: str | Path, splits=("train", "val"), fps: float | None = None) -> dict[str, PoseSet]:
    return {s: load_split(find_split(data_dir, s), fps) for s in splits}
