"""Calibrate a model's take-QA thresholds on the user's own clean takes (``poseprior calibrate``). Numpy only.

From clean takes (any file ``runtime.convert`` reads), ``calibrate_arrays`` sets

* ``tau``: the ``PRIOR_SHARE * rate`` quantile of log p over their frames (the per-frame log p threshold,
  ``plausibility.tau``; the prior's share of the false-flag budget, ``runtime.detect``);
* the motion-aware detector (``runtime.detect``): each joint's clean scale ``q_j``, the swap cue's ``q^w_p`` and
  the threshold ``c``, so that about ``rate`` of the clean frames are flagged by the two together.

``calibrate`` copies a model directory, records both in its ``manifest.json`` (``plausibility`` and ``detector``,
see ``runtime.manifest``), with the takes used and their sha256, and warns when a take's sha256 is one of the
model's training data checksums. It builds the new directory next to ``out`` and renames it into place, so a failure
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import rotations
from .convert import load_rest_joints
from .detect import PRIOR_SHARE, Params, body_matrices, fit_calibration, joint_statistic, swap_statistic
from .manifest import sha256_file
from .prior import PosePrior
from .takes import check_smpl_prior, read_take

#: frames within this many frames of a source jump are left out of the clean rate in ``make qa-bench``
JUMP_DEG = 60.0


def clean_exclusion(R: np.ndarray, radius: int, jump_deg: float = JUMP_DEG) -> np.ndarray:
    """(n,) bool: frames within ``radius`` frames of a step where some joint turns more than ``jump_deg`` degrees
    between consecutive frames of ``R`` (n, 21, 3, 3) (a real capture glitch of the source)."""
    n = len(R)
    out = np.zeros(n, bool)
    if n < 2:
        return out
    step = rotations.geodesic_deg(R[:-1], R[1:]).max(1)
    for t in np.flatnonzero(step > jump_deg) + 1:
        out[max(0, t - radius) : t + radius] = True
    return out


def calibrate_arrays(
    statistics: list[np.ndarray],
    swaps: list[np.ndarray],
    log_probs: list[np.ndarray],
    rate: float,
    params: Params = Params(),
) -> dict:
    """``{"tau": float, "detector": runtime.detect.Calibration}`` from per-take detector statistics (each
    (n, 21), ``runtime.detect.joint_statistic``), swap cues (each (n, 4), ``runtime.detect.swap_statistic``) and
    log p (each (n,)) of clean takes."""
    S = np.concatenate(statistics)
    lp = np.concatenate(log_probs)
    tau = float(np.quantile(lp, PRIOR_SHARE * rate))
    return {"tau": tau, "detector": fit_calibration(S, np.concatenate(swaps), rate, params, already=lp < tau)}


#: the take files a folder given to ``calibrate`` contributes (searched recursively)
TAKE_SUFFIXES = (".bvh", ".amc", ".npz")


def take_files(paths) -> list[Path]:
    """The files of ``paths``: each file as given, each folder's ``TAKE_SUFFIXES`` files (recursively, sorted);
    ``ValueError`` for a path that does not exist or a folder without takes."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TAKE_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: a folder without takes ({', '.join(TAKE_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not out:
        raise ValueError("calibrate: no takes given")
    return out


def training_checksums(manifest: dict) -> set[str]:
    """Every sha256 the model's manifest records under ``training`` (its training data's checksums, whatever the
    exporter recorded: converted arrays, and source files where the training run listed them)."""
    found = set()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
            found.add(v)

    walk(manifest.get("training", {}))
    return found


def calibrate(
    takes,
    out: str | Path,
    model: str | Path | None = None,
    rate: float = 0.01,
    fps: float | None = None,
    skeleton_file: str | Path | None = None,
) -> dict:
    """Copy the model directory ``model`` (default: the shipped one) to ``out`` with ``plausibility`` (tau) and
    ``detector`` calibrated on the clean ``takes`` (files or folders) at ``rate``. Returns a summary (``frames``,
    ``tau``, ``threshold``, ``warnings``: the training-data overlaps found, and what they were checked against).
    ``ValueError``/``FormatError``/``ModelError`` name the bad input; nothing is written then."""
    out = Path(out)
    if not (isinstance(rate, float) or isinstance(rate, int)) or not 0 < rate < 0.5:
        raise ValueError(f"false flag rate: a number in (0, 0.5), got {rate!r}")
    if out.exists():
        raise ValueError(f"{out}: exists; calibrate writes a new model directory (choose another --out)")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: folder {out.parent} does not exist")
    files = take_files(takes)
    prior = PosePrior.load(model)
    check_smpl_prior(prior)
    rest = load_rest_joints(prior.path)
    stats, swaps, lps, records, rates = [], [], [], [], []
    for f in files:
        t = read_take(f, rest, skeleton_file, fps)
        if len(t.poses) < 3:
            raise ValueError(f"{f}: {len(t.poses)} frames; a take to calibrate on needs at least 3")
        R = body_matrices(t.poses)
        stats.append(joint_statistic(R, t.starts, Params()))
        swaps.append(swap_statistic(R, t.starts, Params()))
        lps.append(prior.log_prob(rotations.matrix_to_6d(R).astype(np.float32)).astype(np.float64))
        records.append({"file": f.name, "sha256": sha256_file(f), "frames": int(len(t.poses))})
        rates.append(t.fps)
    frames = sum(r["frames"] for r in records)
    if frames < 100:
        raise ValueError(f"calibrate: {frames} frames in all; at least 100 clean frames are needed")
    cal = calibrate_arrays(stats, swaps, lps, float(rate))
    det = cal["detector"]
    known = training_checksums(prior.manifest)
    overlap = [r["file"] for r in records if r["sha256"] in known]
    notes = []
    if overlap:
        notes.append(
            f"{', '.join(overlap)}: the model was trained on {'this file' if len(overlap) == 1 else 'these files'}"
            f" (its sha256 is among the manifest's training checksums): a calibration on training data "
            f"flags too little on new takes"
        )
    notes_checked = (
        f"overlap with the training data checked against the {len(known)} checksum(s) the manifest "
        f"records under 'training' (a take converted before training has another checksum and is "
        f"not recognised)"
    )
    finite = [r for r in rates if np.isfinite(r)]
    shas = [r["sha256"] for r in records]
    data_sha = hashlib.sha256("\n".join(shas).encode()).hexdigest()
    manifest = json.loads((prior.path / "manifest.json").read_text())
    manifest["plausibility"] = {
        "tau": round(cal["tau"], 4),
        "percentile": round(100 * PRIOR_SHARE * float(rate), 4),
        "definition": f"{100 * PRIOR_SHARE * float(rate):g}th percentile of log p on the clean takes "
        f"given to poseprior calibrate ({len(records)} file(s), {frames} frames)",
        "data_sha256": data_sha,
    }
    manifest["detector"] = {
        **det.to_dict(),
        "fps": float(np.median(finite)) if finite else None,
        "takes": records,
        "data_sha256": data_sha,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(prior.path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        PosePrior.load(tmp)  # the new directory must load (schema, checksums)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "files": len(records),
        "frames": frames,
        "tau": cal["tau"],
        "threshold": det.c,
        "rate": float(rate),
        "fps": manifest["detector"]["fps"],
        "warnings": notes,
        "checked": notes_checked,
        "out": str(out),
    }
