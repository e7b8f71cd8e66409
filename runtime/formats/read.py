"""``read_motion``: any supported motion file by its extension.

* ``.bvh`` -> ``read_bvh`` (one ``Motion``);
* ``.amc`` -> ``read_amc`` on its skeleton: ``skeleton_file`` when given, else ``find_asf`` (the ``.asf`` of the
  same stem, or whose stem starts the AMC's, or the only one in the folder) (one ``Motion``);
* ``.npz`` of the shared pose format -> ``read_shared_npz`` (a list, one ``Motion`` per sequence). AMASS npz files
  hold SMPL poses without a skeleton: ``read_amass`` reads them (``read_motion`` says so).
"""

from __future__ import annotations

from pathlib import Path

from .asf import read_amc
from .bvh import read_bvh
from .motion import FormatError, Motion
from .npz import npz_keys, read_shared_npz


def find_asf(amc: Path) -> Path:
    """The skeleton of an AMC file: ``<stem>.asf`` beside it, else the ``.asf`` beside it with the longest stem
    that starts the AMC's stem (CMU: ``35_01.amc`` -> ``35.asf``, ``charleston1.amc`` -> ``charleston.asf``), else
    the folder's only ``.asf``."""
    same = amc.with_suffix(".asf")
    if same.is_file():
        return same
    found = sorted(p for p in amc.parent.glob("*") if p.suffix.lower() == ".asf")
    prefix = [p for p in found if amc.stem.startswith(p.stem)]
    if prefix:
        return max(prefix, key=lambda p: len(p.stem))
    if len(found) != 1:
        raise FormatError(
            f"{amc}: no {same.name} and {len(found)} .asf files in {amc.parent} "
            f"({', '.join(p.name for p in found) or 'none'}): pass skeleton_file"
        )
    return found[0]


def read_motion(path: str | Path, skeleton_file: str | Path | None = None) -> Motion | list[Motion]:
    """Read ``path`` by its extension (module docstring); FormatError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    ext = path.suffix.lower()
    if ext == ".bvh":
        return read_bvh(path)
    if ext == ".amc":
        return read_amc(path, Path(skeleton_file) if skeleton_file is not None else find_asf(path))
    if ext == ".npz":
        keys = npz_keys(path)
        if "rotations" in keys:
            return read_shared_npz(path)
        if "poses" in keys:
            raise FormatError(f"{path}: an AMASS file (SMPL poses, no skeleton): read it with read_amass")
        raise FormatError(
            f"{path}: npz has neither 'rotations' (shared format) nor 'poses' (AMASS); keys: {sorted(keys)}"
        )
    raise FormatError(f"{path}: unknown motion file type {ext or '(none)'!r} (expected .bvh, .amc or .npz)")
