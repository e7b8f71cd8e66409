"""Take-QA benchmark (``make qa-bench``): inject glitches into held-out takes, detect them, repair them. Torch-free.

Protocol (docs/design.md §5, issue 18):

* Takes: every file of ``cmu_extra`` (ASF/AMC, Daz-style BVH, 3dsMax-style BVH) and the ``cmu_pose`` test and val
  splits, converted to SMPL at ``--fps`` (default 30). A *subject* is a CMU subject number; the renamed ASF/AMC
  files without one (backflip, charleston, lambada, zombie) are one subject each (each has its own skeleton).
* Leave one subject out: the detector is calibrated (``runtime.calibrate.calibrate_arrays``, target
  ``--false-flag-rate``) on the clean takes of every other subject and tested on this subject's takes.
* Clean rate: the fraction of the held-out subject's clean frames that are flagged, leaving out frames within
  ``EXCLUDE`` frames of a source jump (a joint turning > 60 degrees between two frames: real capture glitches).
* Glitches: ``--copies`` seeded copies of every held-out take, each with a glitch segment every ``--spacing``
  frames on average (default ``SPACING``) (kinds drawn uniformly; ``inject``):

  - ``offset``: 1-3 joints each rotated by a fixed random-axis rotation of 30-90 degrees for 1-15 frames;
  - ``flip``: one limb joint (hip, knee, shoulder, elbow) turned 180 degrees about its bone for 1-10 frames;
  - ``swap``: the left and right arm chains (collar, shoulder, elbow, wrist) exchanged and mirrored, 3-15 frames;
  - ``spike`` (own): one frame, every joint rotated by a random rotation of 10-25 degrees;
  - ``dropout`` (own): 1-3 joints reset to the rest pose (identity) for 2-10 frames (a lost marker cluster);
  - ``frozen`` (own): one limb joint held at its last value for 5-15 frames, then released.

* **Recall** of a kind (and size bucket): the fraction of its glitched frames (frames inside an injected
  segment whose glitch moves some joint by >= ``MIN_CHANGE`` degrees from the clean take) that are flagged.
  Frames of a segment whose injected change is smaller are not glitched (a swap of two nearly mirror-symmetric
  arms changes nothing) and are counted apart. Recall is also given apart for the glitched frames whose change
  is ``MIN_CHANGE``-``BIG`` and >= ``BIG`` degrees (``BIG`` = 30, the offset kinds' smallest angle), every kind
  alike; the issue's bars are read on the >= ``BIG`` frames. For offsets and flips that is every glitched frame
  (their change is their angle, >= 30); a swap moves a frame by the arms' distance from mirror symmetry, which can
  be anything from 0 to 180 degrees. **Joint hit rate**: of the flagged glitched frames, the fraction
  whose suspect joints include the injected joint that changed most.
* Seeds: the glitched copies are drawn ``--seeds`` times (seeds ``--seed`` ..); the tables are the first seed's,
  and every kind's recall (all glitched frames, and >= ``BIG``) is also given as mean, sd, min and max over the
  seeds. Which takes a kind's segments land on varies from seed to seed; a kind whose recall differs between
  takes (a swap on a take whose arms stay near mirror symmetry) varies with it.
* Repair error: on glitched frames of ``--repair-takes`` glitched copies, the largest angle (degrees) over the
  21 joints between the frame and the clean take, before and after ``runtime.takes.repair`` with the detector's
  spans; median.
* Speed: frames/s of scoring (log p + detector) and of repair, one thread, on converted arrays (no file reading).
  Repair speed is given per take frame and per repaired frame (the frames whose joints it solves), for the repair
  of a scored take (``runtime.takes.repair(..., scored=)``) and end to end (log p + detector + repair).
* Baselines: log p alone (tau = the rate quantile of the calibration subjects' log p) and the detector.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import rotations
from .calibrate import calibrate_arrays, clean_exclusion
from .convert import load_rest_joints
from .detect import Calibration, body_matrices, detect, fit_calibration, joint_statistic, swap_statistic
from .prior import PosePrior
from .takes import Score, Take, read_take
from .takes import repair as repair_take

KINDS = ("offset", "flip", "swap", "spike", "dropout", "frozen")
SPACING = 45
MIN_CHANGE = 10.0
BIG = 30.0
EXCLUDE = 5
LIMBS = (
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
)
ARM = ("collar", "shoulder", "elbow", "wrist")
J = rotations.JOINT_NAMES
CHILD = {
    "left_hip": "left_knee",
    "right_hip": "right_knee",
    "left_knee": "left_ankle",
    "right_knee": "right_ankle",
    "left_shoulder": "left_elbow",
    "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist",
    "right_elbow": "right_wrist",
}


@dataclass
class HeldTake:
    name: str
    subject: str
    poses: np.ndarray  # (n, 72)
    trans: np.ndarray
    fps: float
    R: np.ndarray  # (n, 21, 3, 3)
    log_p: np.ndarray | None = None


def subject_of(name: str, number: int | None) -> str:
    if number is not None and number >= 0:
        return f"{number:02d}"
    m = re.match(r"(\d+)_", name)
    return m.group(1) if m else re.sub(r"\d+$", "", name)


def held_out_files(shared: Path) -> list[Path]:
    extra = shared / "cmu_extra"
    files = sorted(extra.glob("asf_amc/*.amc")) + sorted(extra.glob("bvh_*/*.bvh"))
    return files + [shared / "cmu_pose" / "test.npz", shared / "cmu_pose" / "val.npz"]


def load_takes(files: list[Path], rest: np.ndarray, fps: float | None) -> list[HeldTake]:
    out = []
    for f in files:
        t = read_take(f, rest, None, fps)
        for (name, a, b), s in zip(t.spans(), t.subjects or [None] * len(t.names)):
            out.append(
                HeldTake(name, subject_of(name, s), t.poses[a:b], t.trans[a:b], t.fps, body_matrices(t.poses[a:b]))
            )
    return out


def _about(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return rotations.axis_angle_to_matrix(axis * np.radians(deg))


def inject(R: np.ndarray, rng: np.random.Generator, rest: np.ndarray, spacing: int = SPACING, margin: int = 20):
    """A glitched copy of ``R`` (n, 21, 3, 3) and its segments [(kind, a, b, size, joints)], b exclusive."""
    n = len(R)
    G = R.copy()
    segs = []
    t = margin + int(rng.integers(0, spacing))
    while True:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = float("nan")
        if kind == "offset":
            L = int(rng.integers(1, 16))
            js = list(rng.choice(21, int(rng.integers(1, 4)), replace=False))
            size = float(rng.uniform(30, 90))
        elif kind == "flip":
            L = int(rng.integers(1, 11))
            js = [J.index(LIMBS[int(rng.integers(len(LIMBS)))])]
            size = 180.0
        elif kind == "swap":
            L = int(rng.integers(3, 16))
            js = [J.index(f"{s}_{p}") for p in ARM for s in ("left", "right")]
        elif kind == "spike":
            L = 1
            js = list(range(21))
        elif kind == "dropout":
            L = int(rng.integers(2, 11))
            js = list(rng.choice(21, int(rng.integers(1, 4)), replace=False))
        else:
            L = int(rng.integers(5, 16))
            js = [J.index(LIMBS[int(rng.integers(len(LIMBS)))])]
        a, b = t, t + L
        if b + margin > n:
            break
        if kind == "offset":
            for j in js:
                G[a:b, j] = G[a:b, j] @ _about(rng.normal(size=3), size)
        elif kind == "flip":
            j = js[0]
            bone = rest[1 + J.index(CHILD[J[j]])] - rest[1 + j]
            G[a:b, j] = G[a:b, j] @ _about(bone, 180.0)
        elif kind == "swap":
            for p in ARM:
                l, r = J.index(f"left_{p}"), J.index(f"right_{p}")
                G[a:b, l], G[a:b, r] = rotations.mirror_matrix(R[a:b, r]), rotations.mirror_matrix(R[a:b, l])
        elif kind == "spike":
            for j in js:
                G[a, j] = G[a, j] @ _about(rng.normal(size=3), float(rng.uniform(10, 25)))
        elif kind == "dropout":
            G[a:b, js] = np.eye(3)
        else:
            G[a:b, js[0]] = R[a - 1, js[0]]
        segs.append((kind, a, b, size, [int(j) for j in js]))
        t = b + int(rng.integers(spacing // 2, 3 * spacing // 2))
    return G, segs


def to_poses(poses: np.ndarray, R: np.ndarray) -> np.ndarray:
    out = poses.copy()
    out[:, 3:66] = rotations.matrix_to_axisrotations.geodesic_deg(R).reshape(len(R), 63)
    return out


def bucket(kind: str, size: float) -> str:
    if kind != "offset":
        return kind
    lo = 30 if size < 45 else 45 if size < 60 else 60
    return f"offset {lo}-{ {30: 45, 45: 60, 60: 90}[lo] }"


METHODS = ("detector", "motion alone", "log p alone")


def _flags(method: str, cal: dict, S: np.ndarray, lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flags (n,), joint scores (n, 21)) of one method under one subject's calibrations; ``S``: the detector's
    statistics (``joint_statistic``, ``swap_statistic``)."""
    if method == "log p alone":
        return lp < cal["tau_alone"], np.zeros_like(S[0])
    d: Calibration = cal["detector"] if method == "detector" else cal["motion"]
    js = d.joint_scores(*S)
    f = js.max(1) >= 1
    return (f | (lp < cal["tau"])) if method == "detector" else f, js


def _take(t: HeldTake, R: np.ndarray) -> Take:
    n = len(R)
    return Take(t.name, to_poses(t.poses[:n], R), t.trans[:n], t.fps, [t.name], [0], [-1])


TALLIES = ("frames", "flagged", "small", "big", "big_flagged", "joint_hit", "segments", "found")


def _count(cal: dict, t: HeldTake, G, segs, S, lp, clean_ok, rows: dict, near: dict) -> None:
    """Add one glitched copy ``G`` of ``t`` to the tallies: per method and kind bucket, its glitched frames (some
    joint >= ``MIN_CHANGE`` off the clean take), those >= ``BIG`` off, and how many of each are flagged; its
    segments and those found; the flagged frames whose suspects hold the most-changed joint; and (``near``) the
    unglitched frames more than 2 frames from every segment, and how many of them are flagged."""
    change = rotations.geodesic_deg(G, t.R)  # (n, 21) degrees from the clean take
    inside = np.zeros(len(G), bool)
    for _, a, b, _, _ in segs:
        inside[max(0, a - 2) : b + 2] = True
    for m in METHODS:
        f, js = _flags(m, cal, S, lp)
        ok = ~inside & clean_ok
        near[m][0] += int(f[ok].sum())
        near[m][1] += int(ok.sum())
        for kind, a, b, size, joints in segs:
            r = rows[m].setdefault(bucket(kind, size), dict.fromkeys(TALLIES, 0))
            most = change[a:b].max(1)
            real = most >= MIN_CHANGE
            big = most >= BIG
            worst = change[a:b].argmax(1)
            hit = f[a:b] & real
            r["frames"] += int(real.sum())
            r["small"] += int((~real).sum())
            r["flagged"] += int(hit.sum())
            r["big"] += int(big.sum())
            r["big_flagged"] += int((f[a:b] & big).sum())
            r["segments"] += int(real.any())
            r["found"] += int(hit.any())
            r["joint_hit"] += int((hit & (js[a:b][np.arange(b - a), worst] >= 1)).sum())


def _recall(rows: dict, hit: str, of: str) -> dict:
    """Per method and kind bucket, tally ``hit`` / tally ``of`` (``_count``); None where ``of`` is 0."""
    return {m: {b: r[hit] / r[of] if r[of] else None for b, r in sorted(v.items())} for m, v in rows.items()}


def _spread(values: list) -> dict | None:
    """Mean, sd (n - 1), min, max of ``values`` (None entries left out); None when none is left."""
    v = np.asarray([x for x in values if x is not None], float)
    if not len(v):
        return None
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def run(
    models: list[str | None],
    shared: Path,
    fps: float | None,
    rate: float,
    copies: int,
    seed: int,
    repair_takes: int,
    repair_frames: int,
    progress=print,
    spacing: int = SPACING,
    seeds: int = 1,
) -> dict:
    """The benchmark of the module docstring for each model directory (None: the shipped one); ``spacing``: the
    mean number of frames between glitch segments (``inject``); ``seeds``: the glitched copies are drawn again
    with seeds ``seed .. seed + seeds - 1`` (the main tallies and the repair are the first seed's; the recall of
    each seed, and its mean, sd, min and max over the seeds, go in ``recall_by_seed``/``recall_spread``)."""
    results = {}
    for model in models:
        prior = PosePrior.load(model, intra_op_num_threads=1)
        rest = load_rest_joints(prior.path)
        takes = load_takes(held_out_files(shared), rest, fps)
        progress(f"{prior.path}: {len(takes)} takes, {sum(len(t.R) for t in takes)} frames at {takes[0].fps:.0f} fps")
        clean_S, clean_ok = [], []
        score_frames, score_s, score_cpu = 0, 0.0, 0.0
        for t in takes:
            s0, c0 = time.perf_counter(), time.process_time()  # scoring = rotations -> log p + statistic
            R = body_matrices(t.poses)
            t.log_p = prior.log_prob(rotations.matrix_to_6d(R).astype(np.float32)).astype(np.float64)
            S = joint_statistic(R), swap_statistic(R)
            score_s += time.perf_counter() - s0
            score_cpu += time.process_time() - c0
            score_frames += len(R)
            clean_S.append(S)
            clean_ok.append(~clean_exclusion(t.R, EXCLUDE))
        subjects = sorted({t.subject for t in takes})
        clean = {m: [0, 0] for m in METHODS}
        per_subject, cals = {}, {}
        for subj in subjects:
            idx = [i for i, t in enumerate(takes) if t.subject != subj]
            base = calibrate_arrays(
                [clean_S[i][0] for i in idx], [clean_S[i][1] for i in idx], [takes[i].log_p for i in idx], rate
            )
            lp_all = np.concatenate([takes[i].log_p for i in idx])
            cal = {
                "tau": base["tau"],
                "detector": base["detector"],
                "motion": fit_calibration(
                    np.concatenate([clean_S[i][0] for i in idx]), np.concatenate([clean_S[i][1] for i in idx]), rate
                ),
                "tau_alone": float(np.quantile(lp_all, rate)),
            }
            cals[subj] = cal
            nf = {m: [0, 0] for m in METHODS}
            for i, t in enumerate(takes):
                if t.subject != subj:
                    continue
                for m in METHODS:
                    f, _ = _flags(m, cal, clean_S[i], t.log_p)
                    nf[m][0] += int(f[clean_ok[i]].sum())
                    nf[m][1] += int(clean_ok[i].sum())
            for m in METHODS:
                clean[m][0] += nf[m][0]
                clean[m][1] += nf[m][1]
            per_subject[subj] = {m: nf[m][0] / max(nf[m][1], 1) for m in METHODS}
        by_seed, glitched = [], []
        for k in range(seeds):
            rng = np.random.default_rng(seed + k)
            rows = {m: {} for m in METHODS}
            near = {m: [0, 0] for m in METHODS}  # unglitched frames of the glitched copies
            for i, t in enumerate(takes):
                for c in range(copies):
                    G, segs = inject(t.R, rng, rest, spacing)
                    lp = prior.log_prob(rotations.matrix_to_6d(G).astype(np.float32)).astype(np.float64)
                    S = joint_statistic(G), swap_statistic(G)
                    _count(cals[t.subject], t, G, segs, S, lp, clean_ok[i], rows, near)
                    if k == 0:
                        glitched.append((t, c, G, segs, S, lp))
            by_seed.append((rows, near))
        rows, near = by_seed[0]
        summary = {
            "model": str(prior.path),
            "fps": float(takes[0].fps),
            "false_flag_rate": rate,
            "copies": copies,
            "seed": seed,
            "min_change": MIN_CHANGE,
            "big": BIG,
            "spacing": spacing,
            "takes": len(takes),
            "frames": int(sum(len(t.R) for t in takes)),
            "subjects": subjects,
            "clean_frames_used": clean["detector"][1],
            "clean_frames_left_out": int(sum((~ok).sum() for ok in clean_ok)),
            "clean_flagged": {m: v[0] / max(v[1], 1) for m, v in clean.items()},
            "unglitched_flagged_in_glitched_copies": {m: v[0] / max(v[1], 1) for m, v in near.items()},
            "clean_flagged_per_subject": per_subject,
            "recall": _recall(rows, "flagged", "frames"),
            "recall_30": _recall(rows, "big_flagged", "big"),
            "seeds": list(range(seed, seed + seeds)),
            "recall_by_seed": {
                key: [_recall(r, *t)["detector"] for r, _ in by_seed]
                for key, t in (("all", ("flagged", "frames")), ("30", ("big_flagged", "big")))
            },
            "segment_recall": {
                m: {b: r["found"] / max(r["segments"], 1) for b, r in sorted(v.items())} for m, v in rows.items()
            },
            "joint_hit": {b: r["joint_hit"] / max(r["flagged"], 1) for b, r in sorted(rows["detector"].items())},
            "counts": {
                b: {k: r[k] for k in ("frames", "small", "big", "segments")}
                for b, r in sorted(rows["detector"].items())
            },
            "score_frames_per_s": score_frames / score_s,
            "score_frames_per_cpu_s": score_frames / score_cpu,
            "cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),  # processes wanting a core, last minute
        }
        summary["recall_spread"] = {
            key: {b: _spread([r.get(b) for r in per]) for b in summary["recall"]["detector"]}
            for key, per in summary["recall_by_seed"].items()
        }
        summary["unglitched_flagged_spread"] = _spread(
            [n["detector"][0] / max(n["detector"][1], 1) for _, n in by_seed]
        )
        if repair_takes:
            summary["repair"] = _repair_eval(prior, takes, glitched, cals, repair_takes, repair_frames, progress)
        progress(json.dumps({k: summary[k] for k in ("clean_flagged", "recall")}, indent=1))
        results[str(prior.path)] = summary
    return results


def _repair_eval(prior, takes, glitched, cals, n_takes, max_frames, progress) -> dict:
    """Worst-joint error (degrees vs the clean take) on the glitched frames, before and after repair with the
    detector's spans (``runtime.takes.repair`` as ``poseprior repair --flagged`` runs it on a calibrated model:
    ambient space, its default smoothing), on the first copy of up to ``n_takes`` takes (spread over the subjects), each cut to
    ``max_frames`` frames; repair frames/s on one thread."""
    by_subject: dict[str, list] = {}
    for g in glitched:
        if g[1] == 0 and len(g[0].R) >= 60:
            by_subject.setdefault(g[0].subject, []).append(g)
    chosen = []
    while len(chosen) < n_takes and any(by_subject.values()):
        for subj in sorted(by_subject):
            if by_subject[subj] and len(chosen) < n_takes:
                chosen.append(by_subject[subj].pop(0))
    before, after, kinds, frames, seconds, total_s, solved = [], [], [], 0, 0.0, 0.0, 0
    cpu = total_cpu = 0.0
    for t, _, G, segs, S, lp in chosen:
        n = min(len(G), max_frames)
        cal = cals[t.subject]
        seg = [s for s in segs if s[2] <= n - 1]
        tk = _take(t, G[:n])
        s0, c0 = time.perf_counter(), time.process_time()  # end to end: log p, the detector, the repair
        log_p = prior.log_prob(tk.body_6d)
        det = detect(G[:n], cal["detector"], [0], log_p, cal["tau"])
        s1, c1 = time.perf_counter(), time.process_time()  # the repair of the scored take
        scored = Score(tk, log_p, cal["tau"], "the benchmark's calibration", str(prior.path), det)
        r = repair_take(prior, tk, flagged=True, threshold=cal["tau"], scored=scored, space="ambient")
        seconds += time.perf_counter() - s1
        total_s += time.perf_counter() - s0
        cpu += time.process_time() - c1
        total_cpu += time.process_time() - c0
        frames += n
        solved += r.solved
        Rr = body_matrices(r.take.poses)
        e0, e1 = rotations.geodesic_deg(G[:n], t.R[:n]).max(1), rotations.geodesic_deg(Rr, t.R[:n]).max(1)
        for kind, a, b, size, joints in seg:
            real = e0[a:b] >= MIN_CHANGE
            before += e0[a:b][real].tolist()
            after += e1[a:b][real].tolist()
            kinds += [bucket(kind, size)] * int(real.sum())
        untouched = ~r.mask.any(1)
        assert np.array_equal(r.take.poses[untouched], tk.poses[untouched])
    before, after, kinds = np.array(before), np.array(after), np.array(kinds)
    out = {
        "takes": len(chosen),
        "frames": frames,
        "glitched_frames": int(len(before)),
        "median_before": float(np.median(before)),
        "median_after": float(np.median(after)),
        "reduction": float(1 - np.median(after) / np.median(before)),
        "per_kind": {
            k: {"before": float(np.median(before[kinds == k])), "after": float(np.median(after[kinds == k]))}
            for k in sorted(set(kinds))
        },
        "frames_per_s": frames / seconds,
        "solved_frames_per_s": solved / seconds,
        "end_to_end_frames_per_s": frames / total_s,
        "end_to_end_solved_frames_per_s": solved / total_s,
        "frames_per_cpu_s": frames / cpu,
        "solved_frames_per_cpu_s": solved / cpu,
        "end_to_end_solved_frames_per_cpu_s": solved / total_cpu,
        "solved": solved,
    }
    progress(
        f"repair: {out['glitched_frames']} glitched frames, median worst-joint error {out['median_before']:.1f} "
        f"-> {out['median_after']:.1f} deg ({out['reduction']:.0%} less), {out['frames_per_s']:.0f} frames/s"
    )
    return out


BARS = {
    "clean": 0.02,
    "offset 30-45": 0.75,
    "offset 45-60": 0.90,
    "offset 60-90": 0.90,
    "flip": 0.90,
    "swap": 0.90,
    "repair": 0.60,
    "score_fps": 5000,
    "repair_fps": 200,
}


def markdown(results: dict) -> str:
    """The report: per model, clean frames flagged and recall per kind for the three methods, repair, speed."""
    out = [
        "# Take-QA benchmark (`make qa-bench`)",
        "",
        "Protocol: `runtime/qabench.py` docstring. Recall = fraction of glitched frames (inside an injected "
        f"segment, some joint >= {MIN_CHANGE:g} deg off the clean take) that are flagged; clean = fraction of the "
        f"held-out subject's clean frames flagged (frames within {EXCLUDE} frames of a > 60 deg source jump left "
        "out). Leave one subject out: calibrated on the other subjects' clean takes.",
        "",
    ]
    for model, r in results.items():
        out += [
            f"## {model}",
            "",
            f"{r['takes']} takes, {r['frames']} frames at {r['fps']:.0f} fps, {len(r['subjects'])} subjects "
            f"({', '.join(r['subjects'])}); {r['copies']} glitched copies per take (a segment every "
            f"{r.get('spacing', SPACING)} frames on average), seed {r['seed']}; target false "
            f"flag rate {r['false_flag_rate']:g}; {r['clean_frames_left_out']} clean frames left out near source jumps.",
            "",
            "| | " + " | ".join(METHODS) + " | bar |",
            "|---" * (len(METHODS) + 2) + "|",
            "| clean frames flagged | "
            + " | ".join(f"{r['clean_flagged'][m]:.2%}" for m in METHODS)
            + f" | <= {BARS['clean']:.0%} |",
            "| unglitched frames of glitched copies flagged | "
            + " | ".join(f"{r['unglitched_flagged_in_glitched_copies'][m]:.2%}" for m in METHODS)
            + " | |",
        ]
        for b in r["recall"]["detector"]:
            bar = f">= {BARS[b]:.0%} (on >= {BIG:g} deg, below)" if b in BARS else "(own kind)"
            out.append(
                f"| recall: {b} ({r['counts'][b]['frames']} frames) | "
                + " | ".join(_pct(r["recall"][m][b]) for m in METHODS)
                + f" | {bar} |"
            )
        out += _size_table(r)
        out += [
            "",
            "| kind | segments found (any frame flagged) | flagged frames whose suspects hold the most-changed joint |",
            "|---|---|---|",
        ]
        out += [f"| {b} | {r['segment_recall']['detector'][b]:.1%} | {r['joint_hit'][b]:.1%} |" for b in r["joint_hit"]]
        out += [
            "",
            f"Scoring (log p + detector, one thread, converted arrays): {r['score_frames_per_s']:,.0f} frames/s "
            f"of wall-clock time, {r.get('score_frames_per_cpu_s', float('nan')):,.0f} per CPU second of the "
            f"process (bar >= {BARS['score_fps']:,}; the two differ when other processes share the cores: "
            f"load average {r.get('load_average', float('nan')):.1f} on {r.get('cores', '?')} cores during this run).",
            "",
        ]
        if "repair" in r:
            p = r["repair"]
            out += [
                f"Repair (`--flagged`, the detector's spans, ambient space, smoothing on) of {p['takes']} glitched takes "
                f"({p['frames']} frames, {p['solved']} repaired): median worst-joint error on {p['glitched_frames']} "
                f"glitched frames {p['median_before']:.1f} -> {p['median_after']:.1f} deg "
                f"(**{p['reduction']:.0%} less**, bar >= {BARS['repair']:.0%}).",
                "",
                f"Repair speed, one thread, the take already scored: {p['frames_per_s']:,.0f} take frames/s, "
                f"**{p['solved_frames_per_s']:,.0f} repaired frames/s** of wall-clock time; per CPU second of the "
                f"process {p['frames_per_cpu_s']:,.0f} take frames/s, **{p['solved_frames_per_cpu_s']:,.0f} repaired "
                f"frames/s** (bar >= {BARS['repair_fps']} repaired frames/s). With the scoring (log p + detector) "
                f"in the time: {p['end_to_end_solved_frames_per_s']:,.0f} repaired frames/s of wall-clock time, "
                f"{p['end_to_end_solved_frames_per_cpu_s']:,.0f} per CPU second.",
                "",
                "| kind | median worst-joint error before | after |",
                "|---|---|---|",
            ]
            out += [f"| {k} | {v['before']:.1f} | {v['after']:.1f} |" for k, v in p["per_kind"].items()]
            out.append("")
    return "\n".join(out) + "\n"


def _pct(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}%}"


def _spread_cell(sp: dict | None) -> str:
    if sp is None:
        return "-"
    return f"{sp['mean']:.1%} ± {sp['sd']:.1%} ({sp['min']:.1%}-{sp['max']:.1%})"


def _size_table(r: dict) -> list[str]:
    """Detector recall of every kind split by how far the glitch moves the frame (its most-changed joint):
    ``MIN_CHANGE``-``BIG`` and >= ``BIG`` degrees, and both over the seeds (mean ± sd, min-max)."""
    big, ms = r.get("big", BIG), r.get("min_change", MIN_CHANGE)
    seeds = r.get("seeds", [r["seed"]])
    out = [
        "",
        f"Recall by the glitch's size on the frame (the angle of its most-changed joint from the clean take), "
        f"detector. The bars apply to the frames moved by >= {big:g} deg, the offset kinds' smallest angle, for "
        f"every kind alike: every frame of an offset or a flip is; a swap of two nearly mirror-symmetric arms "
        f"moves a frame by less. Over seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} draws of the glitched copies): "
        "mean ± sd (min-max) of the per-seed recall.",
        "",
        f"| kind | {ms:g}-{big:g} deg: frames, recall | >= {big:g} deg: frames, recall "
        f"| all, over {len(seeds)} seeds | >= {big:g} deg, over {len(seeds)} seeds | bar |",
        "|---|---|---|---|---|---|",
    ]
    for b, c in r["counts"].items():
        small_n = c["frames"] - c["big"]
        rec_all, rec_big = r["recall"]["detector"][b], r["recall_30"]["detector"][b]
        small_rec = None
        if small_n:
            small_rec = (rec_all * c["frames"] - (rec_big or 0.0) * c["big"]) / small_n
        out.append(
            f"| {b} | {small_n}, {_pct(small_rec)} | {c['big']}, {_pct(rec_big)} "
            f"| {_spread_cell(r['recall_spread']['all'][b])} | {_spread_cell(r['recall_spread']['30'][b])} "
            f"| {f'>= {BARS[b]:.0%}' if b in BARS else '(own kind)'} |"
        )
    return out


def figure(results: dict, path: Path) -> None:
    """Recall per kind (bars) of the three methods, with the clean rate in the legend, for the first model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = next(iter(results.values()))
    kinds = list(r["recall"]["detector"])
    fig, ax = plt.subplots(figsize=(10, 3.4))
    w = 0.27
    for i, m in enumerate(METHODS):
        ax.bar(
            np.arange(len(kinds)) + (i - 1) * w,
            [r["recall"][m][k] or 0.0 for k in kinds],
            w,
            label=f"{m} (clean flagged {r['clean_flagged'][m]:.1%})",
        )
    ax.set_xticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_ylabel("recall (glitched frames flagged)")
    ax.set_ylim(0, 1.05)
    ax.axhline(0.9, color="0.5", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(
        f"take QA, leave one subject out, calibrated at {r['false_flag_rate']:.0%} ({r['frames']} frames, "
        f"{len(r['subjects'])} held-out subjects, {r['fps']:.0f} fps)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.qabench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        default=None,
        help="model directory (repeat, or separate with spaces, for candidates; default: the shipped one)",
    )
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--false-flag-rate", type=float, default=0.01)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds", type=int, default=10, help="draw the glitched copies with seeds SEED .. SEED+SEEDS-1 (the spread)"
    )
    ap.add_argument("--repair-takes", type=int, default=0)
    ap.add_argument("--repair-frames", type=int, default=600)
    ap.add_argument(
        "--spacing", type=int, default=SPACING, help="mean frames between glitch segments (the glitch density)"
    )
    ap.add_argument("--out", type=Path, default=None, help="report folder: qa-bench.md, qa-bench.json")
    ap.add_argument("--figure", type=Path, default=None, help="recall figure (.png) of the first model")
    a = ap.parse_args(argv)
    if a.spacing < 2:
        ap.error(f"--spacing: at least 2 frames, got {a.spacing}")
    if a.seeds < 1:
        ap.error(f"--seeds: at least 1, got {a.seeds}")
    models = [m for arg in (a.model or []) for m in arg.split()] or [None]
    t0 = time.monotonic()
    results = run(
        models,
        a.shared,
        a.fps or None,
        a.false_flag_rate,
        a.copies,
        a.seed,
        a.repair_takes,
        a.repair_frames,
        spacing=a.spacing,
        seeds=a.seeds,
    )
    print(
        f"\nrecall at {a.false_flag_rate:.0%} clean flagged (calibrated, leave one subject out), {time.monotonic() - t0:.0f} s:"
    )
    for model, r in results.items():
        rec = r["recall"]["detector"]
        print(
            f"{model}: clean {r['clean_flagged']['detector']:.2%}; "
            + ", ".join(f"{k} {_pct(v)} (>= {BIG:g} deg {_pct(r['recall_30']['detector'][k])})" for k, v in rec.items())
            + (f"; repair -{r['repair']['reduction']:.0%}" if "repair" in r else "")
        )
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "qa-bench.json").write_text(json.dumps(results, indent=1) + "\n")
        (a.out / "qa-bench.md").write_text(markdown(results))
        print(f"wrote {a.out}/qa-bench.md, qa-bench.json")
    if a.figure is not None:
        figure(results, a.figure)
        print(f"wrote {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
