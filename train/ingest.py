"""One ingest path for training: takes of any format ``runtime.formats`` reads, converted by ``runtime.convert``,
cached, memory-mapped, split (``poseprior train --data``).

Sources (``collect``): files and folders (searched recursively), mixed freely: BVH of every known skeleton (or of
any rig, with a joint map ``--map FILE.json``), CMU ASF/AMC (the ``.amc`` takes; their ``.asf`` is found beside
them and is not a take itself), AMASS / SMPL-H / SMPL-X ``.npz`` (read as they are: already SMPL), the shared npz
format (one take per sequence). ``shape.npz`` (AMASS body shapes) is not a take.

Conversion (``convert_sources``): every source through ``runtime.convert.named_takes`` on the SMPL rest skeleton
(the shipped model's, ``runtime.convert.load_rest_joints``), subsampled to ``fps``; the 21 body joints are kept as
float32 axis-angle ``poses[:, 3:66]``, the same numbers ``poseprior convert`` writes into its AMASS-style file and
``train.amass.load_amass`` reads back (so training on a folder of takes and on their ``poseprior convert`` outputs
sees byte-identical arrays). Each source's result is cached under ``cache_dir`` as ``<key>.npy`` (the poses) and
``<key>.json`` (its takes, subjects, skeleton) with

    key = sha256(source bytes, the .asf's bytes for an .amc, CONVERSION_VERSION, rest joints, fps, joint map),

so a second run converts nothing, and a new conversion version, skeleton or map converts again. Sources are
converted in parallel (``jobs`` processes, default one per core) with a progress bar. A source that cannot be read
or converted raises ``DataError`` naming it (``skip_bad``: reported and left out).

Split (``split``): by subject (CMU's ``SS_TT`` file names, or the shared format's own ``subject``) when every take
has one and there are at least two, else by file (each take's source file is a unit); units are ordered by the
sha256 of their name (a subject's "subject N", a file's name without its folder) and go to validation in that order
until it holds ``val_fraction`` of the poses (at least one unit, never all; after the first, none that would
take it past half of the poses). ``--val`` gives the validation set explicitly instead (then all of ``--data`` trains).

Memory: the poses of a split are one ``.npy`` in the cache (keyed by the keys of its sources), opened with
``np.load(mmap_mode="c")``; so are their 6D rotations (``PoseSet.six_d``), which is what training indexes. Pages
are read from disk on demand and shared with the page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from runtime.conversion_cache import cache_dir, convert_one, source_key
from runtime.convert import CONVERSION_VERSION, load_rest_joints
from runtime.formats import FormatError

from .data import DataError, PoseSet
from .rotations import axis_angle_to_6d

TAKE_SUFFIXES = (".bvh", ".amc", ".npz")
NOT_TAKES = ("shape.npz",)


def collect(paths: list[str | Path]) -> list[Path]:
    """The take files of ``paths`` (files as given, folders searched recursively), each once, in order of path."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TAKE_SUFFIXES and f.name not in NOT_TAKES
            )
            if not files:
                raise DataError(f"{p}: folder holds no takes (.bvh, .amc, .npz)")
            found.update(dict.fromkeys(files))
        elif p.is_file():
            if p.suffix.lower() not in TAKE_SUFFIXES:
                raise DataError(f"{p}: not a take file (expected .bvh, .amc or .npz)")
            found[p] = None
        else:
            raise DataError(f"{p}: no such file or folder")
    return list(found)


@dataclass
class Source:
    """One converted source: its record (path, sha256, skeleton, takes) and its poses (memory-mapped)."""

    record: dict
    poses: np.ndarray  # (N, 21, 3) float32 axis-angle, memory-mapped from the cache


def convert_sources(
    files: list[Path],
    cache: Path,
    rest: np.ndarray | None = None,
    fps: float | None = None,
    joint_map: dict | None = None,
    jobs: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    log=print,
) -> list[Source]:
    """Every file converted (or read from the cache), in the order given (module docstring)."""
    rest = load_rest_joints() if rest is None else np.asarray(rest, np.float64)
    cache.mkdir(parents=True, exist_ok=True)
    errors: dict[Path, str] = {}
    keys = {}
    for f in files:
        try:
            keys[f] = source_key(f, rest, fps, joint_map)
        except (FormatError, OSError) as e:
            errors[f] = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"
    todo = [
        (f, k) for f, (k, _) in keys.items() if not ((cache / f"{k}.npy").is_file() and (cache / f"{k}.json").is_file())
    ]
    if todo:
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        bar = tqdm(
            total=len(todo),
            desc=f"converting {len(todo)} of {len(files)} takes ({jobs} processes)",
            disable=not progress,
            unit="file",
        )
        if jobs == 1:
            results = ((f, convert_one(str(f), k, str(cache), rest, fps, joint_map)) for f, k in todo)
        else:  # spawn: the workers import numpy and the runtime only (no forked torch threads)
            pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))
            futures = [(f, pool.submit(convert_one, str(f), k, str(cache), rest, fps, joint_map)) for f, k in todo]
            results = ((f, fut.result()) for f, fut in futures)
        try:
            for f, err in results:
                if err is not None:
                    errors[f] = err
                bar.update(1)
        finally:
            bar.close()
            if jobs > 1:
                pool.shutdown(cancel_futures=True)
    for f, err in errors.items():
        if not skip_bad:
            raise DataError(f"{err} (--skip-bad: train without it)")
        log(f"skipped {err}")
    out = []
    for f, (k, record) in keys.items():
        if f in errors:
            continue
        meta = json.loads((cache / f"{k}.json").read_text())
        out.append(
            Source(
                {
                    **record,
                    "key": k,
                    "skeleton": meta["skeleton"],
                    "conversion": meta["conversion"],
                    "takes": meta["takes"],
                },
                np.load(cache / f"{k}.npy", mmap_mode="r"),
            )
        )
    if not out:
        raise DataError("no readable takes in --data")
    return out


def _units(sources: list[Source], by: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """(unit name, [(source index, take index)]) per subject or per file."""
    units: dict[str, list] = {}
    for i, s in enumerate(sources):
        for j, t in enumerate(s.record["takes"]):
            name = f"subject {t['subject']}" if by == "subject" else s.record["path"]
            units.setdefault(name, []).append((i, j))
    return list(units.items())


def choose_split(sources: list[Source], val_fraction: float = 0.1) -> tuple[str, set[str], list]:
    """(how: "subject" or "file", the validation units, all units) (module docstring)."""
    subjects = {t["subject"] for s in sources for t in s.record["takes"]}
    by = "subject" if -1 not in subjects and len(subjects) >= 2 else "file"
    units = _units(sources, by)
    if len(units) < 2:
        raise DataError(
            f"--data: one {by} only ({units[0][0] if units else 'none'}): nothing to validate on; "
            f"give more takes or --val"
        )
    frames = {name: sum(sources[i].record["takes"][j]["frames"] for i, j in takes) for name, takes in units}
    total = sum(frames.values())
    val: set[str] = set()
    # ordered by the sha256 of the unit's name (a file's own name, not its folder): the same split wherever it lies
    for name, _ in sorted(units, key=lambda u: (hashlib.sha256(Path(u[0]).name.encode()).hexdigest(), u[0])):
        held = sum(frames[v] for v in val)
        if len(val) == len(units) - 1 or (val and held >= val_fraction * total):
            break
        if val and held + frames[name] > 0.5 * total:  # validation never takes most of the data
            continue
        val.add(name)
    return by, val, units


def build_set(sources: list[Source], takes: list[tuple[int, int]], cache: Path, rest: np.ndarray) -> PoseSet:
    """The poses of ``takes`` ((source, take) pairs, in order) as one PoseSet memory-mapped from the cache: the
    axis-angle array and its 6D (``PoseSet.six_d``) each one ``.npy`` keyed by the takes' source keys."""
    names, subj, seq, spans = [], [], [], []
    for i, j in takes:
        s = sources[i]
        start = sum(t["frames"] for t in s.record["takes"][:j])
        n = s.record["takes"][j]["frames"]
        spans.append((i, start, n))
        seq.append(np.full(n, len(names), np.int64))
        subj.append(np.full(n, s.record["takes"][j]["subject"], np.int64))
        names.append(s.record["takes"][j]["name"])
    key = hashlib.sha256(json.dumps([(sources[i].record["key"], a, n) for i, a, n in spans]).encode()).hexdigest()
    paths = {"aa": cache / f"set-{key}.npy", "6d": cache / f"set-{key}-6d.npy"}
    total = sum(n for *_, n in spans)
    if not all(p.is_file() for p in paths.values()):
        tmp = {k: p.with_suffix(f".{os.getpid()}.tmp") for k, p in paths.items()}
        aa = np.lib.format.open_memmap(tmp["aa"], "w+", np.float32, (total, 21, 3))
        d6 = np.lib.format.open_memmap(tmp["6d"], "w+", np.float32, (total, 21, 6))
        at = 0
        for i, a, n in spans:
            for b in range(a, a + n, 65536):  # in blocks: memory stays flat
                e = min(a + n, b + 65536)
                block = np.array(sources[i].poses[b:e])
                aa[at : at + e - b] = block
                # as PoseSet.to_6d computes it (torch, float64 -> float32): the same numbers as the split layout's
                d6[at : at + e - b] = axis_angle_to_6d(torch.from_numpy(block).double()).float().numpy()
                at += e - b
        aa.flush()
        d6.flush()
        del aa, d6
        for k in paths:
            os.replace(tmp[k], paths[k])
    files = {}
    for i in sorted({i for i, _ in takes}):
        files[sources[i].record["path"]] = sources[i].record["sha256"]
    skeleton = {"name": "smpl", "conversion": CONVERSION_VERSION, "rest_joints": (rest - rest[0]).round(6).tolist()}
    return PoseSet(
        np.load(paths["aa"], mmap_mode="c"),
        np.concatenate(seq),
        names,
        np.concatenate(subj),
        None,
        files,
        skeleton,
        six_d=np.load(paths["6d"], mmap_mode="c"),
    )


def load_takes(
    data: list[str | Path],
    val: list[str | Path] | None = None,
    cache: str | Path | None = None,
    fps: float | None = None,
    joint_map: dict | None = None,
    jobs: int | None = None,
    skip_bad: bool = False,
    val_fraction: float = 0.1,
    progress: bool = True,
    log=print,
) -> tuple[dict[str, PoseSet], dict]:
    """``{"train": PoseSet, "val": PoseSet}`` from take files / folders, and the record of the ingest (sources
    with sha256, skeleton and split; written to the run directory as ``data.json``)."""
    folder = cache_dir(cache)
    rest = load_rest_joints()
    sources = convert_sources(collect(data), folder, rest, fps, joint_map, jobs, skip_bad, progress, log)
    if val:
        vsources = convert_sources(collect(val), folder, rest, fps, joint_map, jobs, skip_bad, progress, log)
        overlap = {s.record["sha256"] for s in sources} & {s.record["sha256"] for s in vsources}
        if overlap:
            names = [s.record["path"] for s in vsources if s.record["sha256"] in overlap]
            raise DataError(f"--val: {len(overlap)} take file(s) also in --data (same sha256), e.g. {names[0]}")
        how = "explicit (--val)"
        sets = {
            "train": build_set(
                sources, [(i, j) for i, s in enumerate(sources) for j in range(len(s.record["takes"]))], folder, rest
            ),
            "val": build_set(
                vsources, [(i, j) for i, s in enumerate(vsources) for j in range(len(s.record["takes"]))], folder, rest
            ),
        }
        split = {"train": [s.record["path"] for s in sources], "val": [s.record["path"] for s in vsources]}
        all_sources = sources + vsources
    else:
        by, val_units, units = choose_split(sources, val_fraction)
        how = f"by {by}"
        pick = {
            k: [t for name, takes in units if (name in val_units) == (k == "val") for t in takes]
            for k in ("train", "val")
        }
        pick = {k: sorted(v) for k, v in pick.items()}
        sets = {k: build_set(sources, v, folder, rest) for k, v in pick.items()}
        split = {"train": sorted(n for n, _ in units if n not in val_units), "val": sorted(val_units)}
        all_sources = sources
    record = {
        "conversion": CONVERSION_VERSION,
        "fps": fps,
        "joint_map": joint_map,
        "split": how,
        "units": split,
        "poses": {k: len(v) for k, v in sets.items()},
        "sources": [{k: v for k, v in s.record.items() if k != "key"} for s in all_sources],
    }
    return sets, record
