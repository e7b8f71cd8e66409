"""Whole mocap takes under the prior, torch-free: score every frame, flag the implausible ones, repair them.

A take is any file ``runtime.convert`` reads (BVH, ASF/AMC, AMASS npz, the shared npz; one file may hold several
takes): it is converted to SMPL ``body_pose`` first, so the frames are scored in the convention the prior knows.

Scoring (``score``): frame t gets ``log p(x_t)``, its 21 body rotations under the prior; it is **flagged** when
``log p(x_t) < tau``. The default ``tau`` is the one the model records in its manifest (``plausibility.tau``:
a low percentile of its log p on real, unseen, varied takes, written at export by ``make plausibility
PL_RECORD=--record``, or by ``poseprior calibrate``); a model without that record needs an explicit threshold.
A model calibrated by ``poseprior calibrate`` (manifest ``detector``) is scored by the motion-aware detector
(``runtime.detect``) instead: frame t is flagged when its motion score is >= 1 (a joint jumps away and comes back)
or ``log p(x_t) < tau``, with the suspect joints of every flagged frame and the spans they form.

Repair (``repair``, settings ``RepairOptions``): the free joints F_t of the frames to repair are filled under
the prior, in latent space (default) or ambient space, in named steps:

1. the free joints (``named_mask`` / ``flagged_mask``, below);
2. the start (``start_poses``): each flagged run's free joints on the geodesic **bridge** between the observed
   frames around it (``runtime.chain.bridge``), named joints at the prior's mode f(0); then every frame on its own
   (``runtime.fit.complete``), except in ambient space with smoothing, which starts its solve at the bridge;
3. with ``smooth > 0``, the runs of consecutive frames t = a..b with temporal smoothness (``smooth_runs``):

       min  sum_t -lam log p(x_t) + [latent] fixed_weight sum_{j not in F_t} |GS(x_t,j) - x_obs,t,j|^2
            + smooth fps^2 sum_{t=a}^{b+1} sum_{j in F} |x_t,j - x_{t-1},j|^2,

   x_{a-1} and x_{b+1} the observed frames around the run (held; absent at a take's ends). Latent: x_t = f(z_t),
   each run one problem (``RunObjective``) from step 2's latents. Ambient: x the free joints' raw 6D; the runs,
   each with its held neighbours, are laid end to end into chains of up to ``STACK_FRAMES`` frames, and each chain
   is one problem solved in coordinates that whiten the smoothness term (``runtime.chain.ChainObjective``), from
   the bridge, until a step gains less than ``ftol``;
4. the take with the free joints replaced (``Repair``).

The free joints are replaced in the take; the others keep their observed values exactly. Which joints are free:

* ``joints=NAMES``: those joints in every frame (an occluded limb, a broken marker set);
* ``flagged=True`` with the detector: each span's suspect joints over the whole span (frames flagged by log p
  alone: their worst joints, as below);
* ``flagged=True`` without it: the **worst joints** of each flagged frame (``worst_joints``): joint j's gain is how much
  log p rises when j alone is re-optimised, less the smoothness term's rise against the unflagged frames next to
  it; greedily, the joint with the largest gain is freed (and set to its re-optimised value), then the next while
  its gain is at least ``MIN_GAIN`` nats, at most ``max_joints``;
  a run of consecutive flagged frames then frees the same joints in all its frames: the ``max_joints`` chosen
  in most of them (so the filled joints move continuously through the run).

The root orientation and translation are never changed. The output is an AMASS-style npz
(``runtime.convert.save_amass``) in SMPL convention.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import rotations
from .atomic import atomic_write
from .chain import ChainObjective, bridge, pair_weight
from .convert import CONVERSION_VERSION, load_rest_joints, named_takes, save_amass
from .detect import Calibration, Detection, body_matrices, detect
from .fit import MAX_WEIGHT, Anchor, complete, feasible
from .lbfgs import minimize
from .prior import ModelError, PosePrior

#: what ``progress`` callbacks receive: (frames done, frames in all)
Progress = Callable[[int, int], None]
SCORE_SUFFIXES = (".json", ".csv")
#: frames converted to 6D at a time (``Take.body_6d``)
BODY_6D_FRAMES = 16384


@dataclass
class Take:
    """Converted takes of one file, as one timeline: ``poses`` (N, 72) SMPL axis-angle (root first), ``trans``
    (N, 3), ``fps`` (NaN when the source has none), ``names`` and ``starts`` (the first frame of each take);
    ``frames`` (N,): the source's own number of each frame (``runtime.source_frames``; default 0..N-1) and
    ``dropped``: what conversion left out of the source, one note per take ("" when nothing)."""

    source: str
    poses: np.ndarray
    trans: np.ndarray
    fps: float
    names: list[str]
    starts: list[int]
    subjects: list[int] = field(default_factory=list)
    frames: np.ndarray | None = None
    dropped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.frames is None:
            self.frames = np.arange(len(self.poses))

    @property
    def body_6d(self) -> np.ndarray:
        """(N, 21, 6): the 21 body joints (SMPL joints 1..21) as 6D rotations (float32; converted in blocks of
        ``BODY_6D_FRAMES`` frames, so the float64 temporaries do not grow with the take)."""
        out = np.empty((len(self.poses), 21, 6), np.float32)
        for a in range(0, len(self.poses), BODY_6D_FRAMES):
            out[a : a + BODY_6D_FRAMES] = rotations.axis_angle_to_6d(
                self.poses[a : a + BODY_6D_FRAMES, 3:66].reshape(-1, 21, 3)
            )
        return out

    def spans(self) -> list[tuple[str, int, int]]:
        """(name, first frame, end frame) of each take."""
        ends = self.starts[1:] + [len(self.poses)]
        return list(zip(self.names, self.starts, ends))


def runs(frames: np.ndarray, starts: list[int]) -> list[tuple[int, int]]:
    """Sorted frame indices as runs of consecutive frames (first, last), inclusive; a run never crosses the
    start of a take (``starts``)."""
    f = np.asarray(frames, int)
    if not len(f):
        return []
    cuts = np.flatnonzero((np.diff(f) > 1) | np.isin(f[1:], starts))
    return [(int(f[a]), int(f[b])) for a, b in zip(np.r_[0, cuts + 1], np.r_[cuts, len(f) - 1])]


def check_smpl_prior(prior: PosePrior) -> None:
    """The take tools score SMPL ``body_pose``: refuse a model trained in another convention, and warn
    (``UserWarning``) when its training data came from another version of the conversion than the one that will
    convert the take (``runtime.convert.CONVERSION_VERSION``): its scores are then of slightly different poses."""
    if prior.skeleton != "smpl":
        raise ModelError(
            f"{prior.path}: the model's skeleton is {prior.skeleton!r}, not 'smpl': takes are converted "
            f"to SMPL body_pose, so they need an SMPL prior (such as the shipped default)"
        )
    trained = prior.conversion
    if trained and trained != CONVERSION_VERSION:
        warnings.warn(
            f"{prior.path}: the model was trained on takes converted by {trained}; this runtime converts "
            f"with {CONVERSION_VERSION} (runtime/convert.py), so its scores are of slightly different "
            f"poses than it learned from",
            UserWarning,
            stacklevel=2,
        )


def read_take(
    src: str | Path,
    rest_joints: np.ndarray | None = None,
    skeleton_file: str | Path | None = None,
    fps: float | None = None,
    joint_map: dict[str, str] | None = None,
) -> Take:
    """Read and convert every take of ``src`` to SMPL (``runtime.convert.named_takes``; ``rest_joints`` default:
    the shipped model's skeleton; ``joint_map``: the rig's {SMPL joint: source joint}, default the built-in
    skeleton detected)."""
    rest = load_rest_joints() if rest_joints is None else np.asarray(rest_joints, float)
    takes = named_takes(src, rest, skeleton_file, fps, joint_map)
    rates = [float(t["mocap_framerate"]) for _, _, t in takes]
    starts = list(np.cumsum([0] + [len(t["poses"]) for _, _, t in takes[:-1]]).astype(int))
    return Take(
        str(src),
        np.concatenate([t["poses"] for _, _, t in takes]).astype(np.float64, copy=False),
        np.concatenate([t["trans"] for _, _, t in takes]).astype(np.float64, copy=False),
        rates[0],
        [n for n, _, _ in takes],
        [int(s) for s in starts],
        [s for _, s, _ in takes],
        np.concatenate([t["source_frames"] for _, _, t in takes]),
        [t["dropped"] for _, _, t in takes],
    )


def recorded_threshold(prior: PosePrior) -> tuple[float, str] | None:
    """(tau, its definition) from the model's manifest ``plausibility`` record, None when it has none."""
    if prior.threshold is None:
        return None
    return prior.threshold, str(prior.manifest["plausibility"].get("definition", "tau"))


def _threshold(prior: PosePrior, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        t = float(threshold)
        if not np.isfinite(t):
            raise ValueError(f"threshold: must be a finite number, got {threshold!r}")
        return t, "given by the user"
    rec = recorded_threshold(prior)
    if rec is None:
        raise ModelError(
            f"{prior.path}: the model records no plausibility threshold (manifest 'plausibility.tau'); "
            f"pass one (--threshold LOG_P), or record it with `make plausibility PL_RECORD=--record`"
        )
    return rec


@dataclass
class Score:
    """Per-frame log p of a take and the frames below the threshold."""

    take: Take
    log_prob: np.ndarray  # (N,)
    threshold: float
    threshold_source: str
    model: str
    #: the motion-aware detector's result (``runtime.detect``), when the model records a calibration
    detection: Detection | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the flagged frames: the detector's (motion score >= 1 or log p < threshold) when it ran,
        else the frames with log p < threshold."""
        if self.detection is not None:
            return np.flatnonzero(self.detection.flags)
        return np.flatnonzero(self.log_prob < self.threshold)

    def flagged_spans(self) -> list[tuple[int, int]]:
        """Runs of consecutive flagged frames of one take as (first, last) (inclusive), in frame order."""
        return runs(self.flagged, self.take.starts)

    def to_dict(self) -> dict:
        """The JSON record: ``log_prob`` (one per frame), ``threshold``, ``flagged`` (the flagged frames' numbers in
        the source file, ``source_frame``), ``flagged_spans`` ([first, last] source frames of each run),
        ``source_frame`` (each frame's number in the source), ``dropped`` (source frames conversion left out, one
        note per take), and context; with the detector also ``score`` (one per frame), ``suspect_joints`` (one list
        per flagged frame, in the order of ``flagged``) and ``spans`` ([{start, end (exclusive), joints}], source
        frame numbers) (docs/takes.md). ``takes[].start`` indexes the converted timeline (``log_prob``)."""
        t = self.take
        fr = np.asarray(t.frames)
        out = {
            "source": t.source,
            "model": self.model,
            "conversion": CONVERSION_VERSION,
            "frames": len(self.log_prob),
            "fps": t.fps if np.isfinite(t.fps) else None,
            "takes": [
                {"name": n, "start": a, "frames": b - a, "first_source_frame": int(fr[a])} for n, a, b in t.spans()
            ],
            "dropped": [d for d in t.dropped if d],
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "flagged": fr[self.flagged].tolist(),
            "flagged_fraction": float(len(self.flagged) / len(self.log_prob)),
            "flagged_spans": [[int(fr[a]), int(fr[b])] for a, b in self.flagged_spans()],
            "source_frame": fr.tolist(),
            "log_prob": [round(float(v), 4) for v in self.log_prob],
        }
        if self.detection is not None:
            d, names = self.detection, np.array(rotations.JOINT_NAMES)
            out.update(
                {
                    "detector": "motion + prior (runtime.detect), calibrated: the model's manifest 'detector'",
                    "suspect_joints": [names[d.suspects[f]].tolist() for f in self.flagged],
                    "spans": [
                        {"start": int(fr[a]), "end": int(fr[b - 1]) + 1, "joints": names[js].tolist()}
                        for a, b, js in d.spans
                    ],
                    "score": [round(float(v), 4) for v in d.score],
                }
            )
        return out


def calibration(prior: PosePrior) -> Calibration | None:
    """The detector calibration the model's manifest records (``detector``, by ``poseprior calibrate``), or None."""
    rec = prior.manifest.get("detector")
    if rec is None:
        return None
    try:
        return Calibration.from_dict(rec)
    except ValueError as e:
        raise ModelError(f"{prior.path}: {e}") from None


def _detection(prior: PosePrior, take: Take, log_prob: np.ndarray, tau: float, notes: list[str]) -> Detection | None:
    cal = calibration(prior)
    if cal is None:
        return None
    fps = prior.manifest["detector"].get("fps")
    if fps and np.isfinite(take.fps) and abs(take.fps / fps - 1) > 0.25:
        notes.append(
            f"the detector was calibrated on takes at {fps:.4g} fps and this take is at {take.fps:.4g} fps: "
            f"its motion statistic is per frame, so pass --fps {fps:.4g} (or calibrate at this rate)"
        )
    return detect(body_matrices(take.poses), cal, take.starts, log_prob, tau)


def score(
    prior: PosePrior,
    take: Take,
    threshold: float | None = None,
    progress: Progress | None = None,
    chunk: int = 2048,
    motion: bool = True,
) -> Score:
    """log p of every frame of ``take`` (``chunk`` frames per call, ``progress(done, total)`` after each) and the
    flagged frames: with ``motion`` and a model that records a detector calibration (``poseprior calibrate``),
    the motion-aware detector's (``runtime.detect``: a motion score >= 1, or log p < ``threshold``); otherwise the
    frames with log p < ``threshold``. ``threshold`` default: the model's recorded tau."""
    check_smpl_prior(prior)
    tau, how = _threshold(prior, threshold)
    x = take.body_6d
    lp = np.empty(len(x), np.float32)
    for a in range(0, len(x), chunk):
        lp[a : a + chunk] = prior.log_prob(x[a : a + chunk])
        if progress:
            progress(min(a + chunk, len(x)), len(x))
    notes: list[str] = []
    det = _detection(prior, take, lp, tau, notes) if motion else None
    return Score(take, lp, tau, how, str(prior.path), det, notes)


# --- writing a score ---------------------------------------------------------------------------------------------
def write_score(s: Score, path: str | Path) -> Path:
    """``.json``: ``Score.to_dict``; ``.csv``: one row per frame (frame: its number in the source, take, time_s,
    log_prob, flagged, and with the detector score, suspect_joints: names joined by ';')."""
    return write_scores([s], path)


def write_scores(scores: list[Score], path: str | Path) -> Path:
    """Scores of one or several take files in one file. One: ``write_score``'s format. Several: ``.json``
    ``{"files": [Score.to_dict, ...]}``; ``.csv`` the rows of all, the take column ``<file>:<take name>``."""
    path = Path(path)
    if path.suffix.lower() not in SCORE_SUFFIXES:
        raise ValueError(f"{path}: a score is written as {' or '.join(SCORE_SUFFIXES)}")
    if path.suffix.lower() == ".json":
        record = scores[0].to_dict() if len(scores) == 1 else {"files": [s.to_dict() for s in scores]}
        text = json.dumps(record, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        detector = any(s.detection is not None for s in scores)
        w.writerow(
            ["frame", "take", "time_s", "log_prob", "flagged"] + (["score", "suspect_joints"] if detector else [])
        )
        names = np.array(rotations.JOINT_NAMES)
        for s in scores:
            d = s.detection
            flagged = np.zeros(len(s.log_prob), bool)
            flagged[s.flagged] = True
            fps = s.take.fps
            for name, a, b in s.take.spans():
                label = name if len(scores) == 1 else f"{s.take.source}:{name}"
                for t in range(a, b):
                    extra = (
                        []
                        if not detector
                        else (["", ""] if d is None else [f"{d.score[t]:.4f}", ";".join(names[d.suspects[t]])])
                    )
                    w.writerow(
                        [
                            int(s.take.frames[t]),
                            label,
                            f"{(t - a) / fps:.4f}" if np.isfinite(fps) else "",
                            f"{s.log_prob[t]:.4f}",
                            int(flagged[t]),
                        ]
                        + extra
                    )
        text = buf.getvalue()
    atomic_write(path, lambda p: p.write_text(text))
    return path


def plot_score(s: Score, path: str | Path, repaired: np.ndarray | None = None) -> Path:
    """log p over time (seconds when the take has a frame rate), the threshold, flagged frames marked, take
    boundaries dashed; ``repaired`` (N,): log p after ``repair``, drawn over it. Needs matplotlib
    (``pip install 'poseprior[plot]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'poseprior[plot]'") from None
    path = Path(path)
    lp = s.log_prob.astype(np.float64)
    fps = s.take.fps
    t = np.arange(len(lp)) / fps if np.isfinite(fps) else np.arange(len(lp), dtype=float)
    # the y-range holds the real frames and the threshold; far-off values sit on the bottom edge as triangles
    good = lp[lp >= s.threshold]
    top = max(good.max() if len(good) else s.threshold, -np.inf if repaired is None else float(np.max(repaired))) + 5
    spread = (np.percentile(good, 95) - np.percentile(good, 5)) if len(good) > 10 else 50.0
    bottom = min(s.threshold - max(spread, 20.0), np.percentile(lp, 2))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    if repaired is not None:
        ax.plot(t, np.clip(repaired, bottom, None), lw=2.2, color="C2", label="log p after repair")
    ax.plot(
        t, np.clip(lp, bottom, None), lw=0.9, color="C0", label="log p" + (" before" if repaired is not None else "")
    )
    ax.axhline(s.threshold, color="C3", lw=1, ls="--", label=f"threshold {s.threshold:.1f}")
    f = s.flagged
    if len(f):
        clipped = lp[f] < bottom
        ax.scatter(t[f][~clipped], lp[f][~clipped], s=10, color="C3", zorder=3, label=f"flagged ({len(f)})")
        ax.scatter(t[f][clipped], np.full(clipped.sum(), bottom), s=16, marker="v", color="C3", zorder=3)
    for _, a, _ in s.take.spans()[1:]:
        ax.axvline(t[a], color="0.6", lw=0.8, ls=":")
    ax.set_ylim(bottom - 0.02 * (top - bottom), top)
    ax.set_xlabel("time (s)" if np.isfinite(fps) else "frame")
    ax.set_ylabel("log p" + (" (triangles: below the axis)" if (lp < bottom).any() else ""))
    fixed = "" if repaired is None else f", {int((np.abs(repaired - lp) > 1e-3).sum())} repaired"
    ax.set_title(f"{Path(s.take.source).name}: {len(f)} of {len(lp)} frames below the threshold{fixed}")
    ax.legend(fontsize=8, loc="lower left", ncol=4)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


# --- repair ------------------------------------------------------------------------------------------------------
#: a joint is freed when re-optimising it alone raises log p by at least this much (nats): about the 95th
#: percentile of single-joint gains on the unflagged frames of a real take (131_01 at 30 fps: 10.5), so a
#: clean joint of a real pose rarely clears it
MIN_GAIN = 10.0
#: poses whose worst joints are chosen at once (``worst_joints``): each round re-optimises every joint of each pose
#: in one batch (21 problems a pose, with L-BFGS histories), so a larger batch only costs memory
WORST_JOINTS_POSES = 128
#: each single-joint re-optimisation of ``worst_joints`` stops when a step lowers its -log p by less than this
#: fraction (``runtime.lbfgs.minimize``'s ``ftol``): small enough that the joints chosen stay those of running all
#: ``iters`` steps (checked on the glitched take of tests/test_takes.py: reports/qa/repair-speed.md)
WORST_JOINTS_FTOL = 1e-3


def prior_mode(prior: PosePrior) -> np.ndarray:
    """The pose at the latent origin, f(0) (1, 21, 6), Gram-Schmidt orthonormalised: where free joints start."""
    x = prior.sample(z=np.zeros((1, prior.dim), np.float32), orthonormalize=False).astype(np.float64)
    return rotations.orthonormalize_6d(x).astype(np.float32)


def worst_joints(
    prior: PosePrior,
    poses: np.ndarray,
    max_joints: int = 3,
    min_gain: float = MIN_GAIN,
    iters: int = 10,
    context: np.ndarray | None = None,
    weight: float = 0.0,
) -> np.ndarray:
    """(B, 21) bool: the joints to free in each pose of ``poses`` (B, 21, 6), chosen greedily by the score

        S(x) = log p(x) - weight * sum_k |x - c_k|^2      (c_k: the pose's ``context`` frames, (B, K, 21, 6),
                                                           NaN where a pose has fewer; none: S = log p)

    In each round every joint not yet chosen is re-optimised alone (ambient completion from the prior's mode f(0);
    at most ``iters`` L-BFGS steps, stopping at ``WORST_JOINTS_FTOL``; all problems of the round in one batch), its
    gain is ``S(after) - S(before)``, and the joint with the largest gain is chosen (and set to its re-optimised
    value for the next round) when that gain is >= ``min_gain`` -- the first round always chooses one. At most
    ``max_joints`` rounds; masked joints of the model are never chosen. ``repair`` passes the observed, unflagged
    frames before and after a flagged one as its context, with its smoothness weight: by log p alone a joint next
    to the broken one can look as guilty (the neck bent to undo a broken head), but only the broken joint moves
    back towards the frames around it."""
    if not isinstance(max_joints, (int, np.integer)) or not 1 <= max_joints <= prior.num_joints:
        raise ValueError(f"max_joints: an integer in [1, {prior.num_joints}], got {max_joints!r}")
    if len(poses) > WORST_JOINTS_POSES:  # the poses are independent: in blocks, memory does not grow with B
        c = WORST_JOINTS_POSES
        return np.concatenate(
            [
                worst_joints(
                    prior,
                    poses[a : a + c],
                    max_joints,
                    min_gain,
                    iters,
                    None if context is None else context[a : a + c],
                    weight,
                )
                for a in range(0, len(poses), c)
            ]
        )
    x = np.asarray(poses, np.float32).copy()
    B, J = len(x), prior.num_joints
    ctx = np.full((B, 0, J, 6), np.nan, np.float32) if context is None else np.asarray(context, np.float32)

    def score(p, rows, log_p):
        d = (p[:, None] - ctx[rows]) ** 2
        return log_p - weight * np.where(np.isnan(d), 0.0, d).sum((1, 2, 3))

    mask = np.zeros((B, J), bool)
    open_ = np.ones(B, bool)  # poses still choosing
    active = np.array([n not in prior.masked_joints for n in prior.joint_names])
    base = score(x, np.arange(B), prior.log_prob(x))
    mode = prior_mode(prior)
    for k in range(max_joints):
        cand = np.flatnonzero(open_)
        if not len(cand):
            break
        frees, owner, joint = [], [], []
        for b in cand:
            for j in np.flatnonzero(active & ~mask[b]):
                f = np.zeros(J, bool)
                f[j] = True
                frees.append(f)
                owner.append(b)
                joint.append(j)
        owner, joint, frees = np.array(owner), np.array(joint), np.array(frees)
        res = complete(prior, np.where(frees[..., None], mode, x[owner]), frees, iters=iters, ftol=WORST_JOINTS_FTOL)
        after = score(res.poses, owner, -res.neg_log_p)
        gain = after - base[owner]
        for b in cand:
            sel = np.flatnonzero(owner == b)
            best = sel[np.argmax(gain[sel])]
            if k and gain[best] < min_gain:
                open_[b] = False
                continue
            mask[b, joint[best]] = True
            x[b] = res.poses[best]
            base[b] = after[best]
    return mask


@dataclass
class Repair:
    """What ``repair`` changed: ``take`` with the repaired poses, the free-joint ``mask`` (N, 21), log p before
    and after (N,; after = before on the frames it left alone), the threshold used (NaN for ``joints=``), the
    number of frames solved, seconds, and the detection it used (``flagged=True`` with the detector)."""

    take: Take
    mask: np.ndarray
    log_prob_before: np.ndarray
    log_prob_after: np.ndarray
    threshold: float
    solved: int
    seconds: float
    detection: Detection | None = None

    @property
    def repaired(self) -> np.ndarray:
        """Indices of the frames with at least one replaced joint."""
        return np.flatnonzero(self.mask.any(1))


@dataclass(frozen=True)
class RepairOptions:
    """How ``repair`` solves (module docstring), checked when made (``ValueError``):

    * ``space``: ``"latent"`` (x = f(z), with the Jacobian term) or ``"ambient"`` (the free joints' raw 6D);
    * ``lam``: weight of ``-log p``; ``fixed_weight``: the latent anchor of the joints that are not free
      (``runtime.fit``'s);
    * ``smooth``: weight of the squared velocity |dx/dt|^2 of the free joints' 6D per frame (seconds^2): the pair
      weight is ``smooth * fps^2``, so one value suits every frame rate (1.0: frame-to-frame steps of a repaired
      run like the capture's own: reports/qa/repair-speed.md); 0: frame by frame, no smoothing; at most
      ``runtime.fit.MAX_WEIGHT``;
    * ``iters``: L-BFGS steps of the frame-by-frame completion; ``run_iters``: at most this many steps of each
      smoothing solve; the ambient one (whitened, ``runtime.chain``) stops earlier, when a step lowers its
      objective L by less than ``ftol * max(1, |L|)`` (latent runs are not whitened: a small step there says
      little about the distance left, so they run all ``run_iters`` steps);
    * ``max_joints``: with ``flagged`` and no detector suspects, at most this many joints per frame
      (``worst_joints``).
    """

    space: str = "latent"
    lam: float = 1.0
    smooth: float = 1.0
    fixed_weight: float = 5000.0
    iters: int = 30
    run_iters: int = 200
    ftol: float = 1e-2
    max_joints: int = 3

    def __post_init__(self) -> None:
        if self.space not in ("latent", "ambient"):
            raise ValueError(f"space: 'latent' or 'ambient', got {self.space!r}")
        s = float(self.smooth)
        if not (np.isfinite(s) and 0 <= s <= MAX_WEIGHT):
            raise ValueError(f"smooth: must be in [0, {MAX_WEIGHT:g}] (runtime.fit.MAX_WEIGHT), got {self.smooth!r}")
        for name in ("iters", "run_iters"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: an integer >= 1, got {v!r}")
        if not (isinstance(self.max_joints, (int, np.integer)) and 1 <= self.max_joints <= 21):
            raise ValueError(f"max_joints: an integer in [1, 21], got {self.max_joints!r}")
        if not (np.isfinite(self.ftol) and 0 <= self.ftol < 1):
            raise ValueError(f"ftol: must be in [0, 1), got {self.ftol!r}")


#: ambient repair stacks independent runs (each with its held neighbour frames) into chains of about this many
#: frames: one graph call per L-BFGS evaluation for all of them
STACK_FRAMES = 256


def default_space(prior: PosePrior, flagged: bool) -> str:
    """The space ``repair`` works in when the caller does not choose (``poseprior repair --space auto``, the
    Blender add-on): ``"ambient"`` for flagged frames of a model calibrated on takes (its detector gives spans and
    suspect joints, and the ambient chain solve starts on the bridge), else ``"latent"``."""
    return "ambient" if flagged and calibration(prior) is not None else "latent"


def repair(
    prior: PosePrior,
    take: Take,
    joints=None,
    flagged: bool = False,
    threshold: float | None = None,
    *,
    options: RepairOptions | None = None,
    scored: Score | None = None,
    motion: bool = True,
    frames=None,
    progress: Progress | None = None,
    **settings,
) -> Repair:
    """Fill ``joints`` (names) in every frame, or (``flagged=True``) the flagged frames' joints; exactly one of the
    two. How: ``options`` (``RepairOptions``), or its fields as keywords (``space="ambient"``, ``smooth=0.5``,
    ...). The steps (module docstring):

    1. the free joints (``named_mask`` / ``flagged_mask``): with ``flagged``, the detector's spans and suspect
       joints (``scored.detection``, or with ``motion`` the one the model's calibration gives, as ``score`` runs
       it), the frames the prior alone flags (log p < ``threshold``, default the model's tau) freeing their
       ``worst_joints``;
    2. the start (``start_poses``): a flagged run on the bridge between its neighbours (``runtime.chain.bridge``),
       named joints at the prior's mode f(0); then, where the solve needs it, every frame on its own
       (``runtime.fit.complete``);
    3. with ``smooth > 0``, the runs with temporal smoothness (``smooth_runs``);
    4. the take with the free joints replaced, every other value as it was (``Repair``).

    ``frames``: the frame indices that may change (default: all); step 1's free joints are cut to them, and the
    frames around them stay held, so a repaired range joins the take on both sides.
    ``scored``: the take's ``Score`` when the caller has it (its log p, detection and, when ``threshold`` is None,
    threshold are used, not recomputed).
    ``progress(done, total)`` counts frames (first pass, then runs)."""
    if (joints is None) == (not flagged):
        raise ValueError(
            "repair: name the joints to fill (joints=...) or repair the flagged frames (flagged=True), one of the two"
        )
    opts = dataclasses.replace(options or RepairOptions(), **settings)
    if opts.smooth > 0 and not np.isfinite(take.fps):
        raise ValueError(
            f"{take.source}: the take has no frame rate, which the smoothness term needs "
            f"(its weight is per second); repair it with smooth=0 (--smooth 0)"
        )
    check_smpl_prior(prior)
    if scored is not None and len(scored.log_prob) != len(take.poses):
        raise ValueError(
            f"scored: the score of a take of {len(scored.log_prob)} frames, this take has {len(take.poses)}"
        )
    t0 = time.monotonic()
    x = take.body_6d
    before = prior.log_prob(x) if scored is None else np.asarray(scored.log_prob, np.float32)
    if threshold is None and scored is not None:
        threshold = scored.threshold
    tau = _threshold(prior, threshold)[0] if flagged or threshold is not None else float("nan")
    det = None
    if joints is not None:
        mask = named_mask(prior, joints, len(x))
    else:
        if motion:
            det = scored.detection if scored is not None else _detection(prior, take, before, tau, [])
        mask = flagged_mask(prior, take, x, before, tau, det, opts)
    if frames is not None:
        mask &= frame_mask(frames, len(x))[:, None]
    rows = np.flatnonzero(mask.any(1))
    total = len(rows) * (2 if opts.smooth > 0 else 1)
    out, z = start_poses(prior, take, x, mask, joints is None, opts, progress, total)
    if opts.smooth > 0:
        out = smooth_runs(prior, take, x, out, z, mask, opts, progress, total)
    after = before.copy()
    poses = take.poses.copy()
    if len(rows):
        after[rows] = prior.log_prob(out[rows])
        aa = rotations.sixd_to_axis_angle(out[rows].astype(np.float64)).reshape(-1, 63)
        poses[rows, 3:66] = np.where(np.repeat(mask[rows], 3, axis=1), aa, poses[rows, 3:66])
    fixed = dataclasses.replace(take, poses=poses)
    return Repair(fixed, mask, before, after, tau, len(rows), time.monotonic() - t0, det if flagged else None)


def frame_mask(frames, n: int) -> np.ndarray:
    """(n,) bool: True at the frame indices ``frames`` of a take of ``n`` frames (``ValueError`` for an index
    outside it, or none at all)."""
    idx = np.asarray(frames).reshape(-1)
    if idx.size == 0 or idx.dtype.kind not in "iu":
        raise ValueError(f"frames: one or more integer frame indices, got {frames!r}"[:200])
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"frames: indices {idx.min()}..{idx.max()} outside the take's {n} frames")
    keep = np.zeros(n, bool)
    keep[idx] = True
    return keep


def named_mask(prior: PosePrior, joints, frames: int) -> np.ndarray:
    """(frames, 21) bool: the named ``joints`` (a name or names) free in every frame (``ValueError`` for names
    the model does not know or does not model)."""
    names = [joints] if isinstance(joints, str) else list(joints)
    unknown = [n for n in names if n not in prior.joint_names]
    if unknown or not names:
        raise ValueError(f"joints: unknown joint names {unknown}; expected names from {prior.joint_names}")
    dead = [n for n in names if n in prior.masked_joints]
    if dead:
        raise ValueError(f"joints: {dead} are masked in this model (it does not model them): nothing to fill")
    mask = np.zeros((frames, prior.num_joints), bool)
    mask[:, [prior.joint_names.index(n) for n in names]] = True
    return mask


def flagged_mask(
    prior: PosePrior,
    take: Take,
    x: np.ndarray,
    log_prob: np.ndarray,
    tau: float,
    det: Detection | None,
    opts: RepairOptions,
) -> np.ndarray:
    """(N, 21) bool, the joints to free: each detector span's suspect joints over the whole span
    (``Detection.mask``); the frames flagged by the prior alone (all flagged frames without a detector) their
    ``worst_joints``, scored against the observed, unflagged frames next to them with the smoothness weight, and
    then one set per run of such frames: the ``max_joints`` chosen in most of its frames (so the filled joints
    move continuously through the run)."""
    N, J = len(x), prior.num_joints
    if det is not None:
        flagged_all = np.flatnonzero(det.flags)
        mask = det.mask()
        bad = flagged_all[~mask[flagged_all].any(1)]
    else:
        mask = np.zeros((N, J), bool)
        bad = flagged_all = np.flatnonzero(log_prob < tau)
    if not len(bad):
        return mask
    ctx = np.full((len(bad), 2, J, 6), np.nan, np.float32)  # the observed, unflagged frames around, same take
    unflagged = np.ones(N, bool)
    unflagged[flagged_all] = False
    for i, t in enumerate(bad):
        for k, u in enumerate((t - 1, t + 1)):
            if 0 <= u < N and unflagged[u] and max(t, u) not in take.starts:
                ctx[i, k] = x[u]
    weight = opts.smooth * take.fps**2 if opts.smooth > 0 else 0.0
    mask[bad] = worst_joints(prior, x[bad], opts.max_joints, context=ctx, weight=weight)
    for a, b in runs(bad, take.starts):  # one set of joints per run: its frames' most chosen
        counts = mask[a : b + 1].sum(0)
        keep = np.argsort(-counts, kind="stable")[: opts.max_joints]
        mask[a : b + 1] = False
        mask[a : b + 1, keep[counts[keep] > 0]] = True
    return mask


def start_poses(
    prior: PosePrior,
    take: Take,
    x: np.ndarray,
    mask: np.ndarray,
    flagged: bool,
    opts: RepairOptions,
    progress: Progress | None,
    total: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(poses (N, 21, 6), latents (N, D)): where the solve starts. With ``flagged``, each run's free joints on the
    bridge between the observed frames around it (``runtime.chain.bridge``: the repaired frames join their
    neighbours from the start); named joints (no neighbours: free in every frame) at the prior's mode f(0). Then
    every frame on its own (``runtime.fit.complete``, ``iters`` steps; the latents its answer), except in ambient
    space with smoothing, whose chain solve starts from the bridge directly (the named joints' frames still
    go through it: the mode is no start for a chain). Latents are 0 where not computed."""
    out = x.copy()
    rows = np.flatnonzero(mask.any(1))
    z = np.zeros((len(x), prior.dim), np.float32)
    if flagged:
        for a, b in runs(rows, take.starts):
            js = np.flatnonzero(mask[a : b + 1].any(0))
            out[a : b + 1, js] = bridge(x, a, b + 1, list(js), take.starts)
            out[a : b + 1] = np.where(mask[a : b + 1, :, None], out[a : b + 1], x[a : b + 1])
    else:
        out = np.where(mask[..., None], prior_mode(prior), x)
    first = rows if not (flagged and opts.space == "ambient" and opts.smooth > 0) else rows[:0]
    block = 1024
    for a in range(0, len(first), block):
        r = first[a : a + block]
        res = complete(
            prior, out[r], mask[r], opts.lam, space=opts.space, fixed_weight=opts.fixed_weight, iters=opts.iters
        )
        out[r] = np.where(mask[r][..., None], res.poses, out[r])
        if opts.space == "latent":
            z[r] = res.params
        if progress:
            progress(a + len(r), total)
    return out, z


def smooth_runs(
    prior: PosePrior,
    take: Take,
    x: np.ndarray,
    out: np.ndarray,
    z: np.ndarray,
    mask: np.ndarray,
    opts: RepairOptions,
    progress: Progress | None,
    total: int,
) -> np.ndarray:
    """``out`` with every run of repaired frames (``runs``) re-solved with temporal smoothness, pair weight
    ``w = smooth * fps^2``, at most ``run_iters`` L-BFGS steps. Ambient: the runs, each
    with the observed frames around it held, laid end to end in chains of about ``STACK_FRAMES`` frames, each
    chain one whitened problem (``runtime.chain.ChainObjective``, from ``out``; first step ``-dL/du``, stopping
    at ``ftol``). Latent: each run one problem
    (``RunObjective``, from the latents ``z``)."""
    w = opts.smooth * take.fps**2
    N = len(x)
    ends = set(take.starts) | {N}
    all_runs = runs(np.flatnonzero(mask.any(1)), take.starts)
    out = out.copy()
    done = total - sum(b - a + 1 for a, b in all_runs)
    if opts.space == "ambient":
        for group in _stacks(all_runs, STACK_FRAMES):
            chain, free, parts = [], [], []
            for a, b in group:  # [the frame before,] the run[, the frame after]
                lo, hi = a - (a not in ends), b + 1 + (b + 1 not in ends)
                parts.append((a, b, sum(len(c) for c in chain) + a - lo))
                chain.append(np.where(mask[lo:hi, :, None], out[lo:hi], x[lo:hi]))
                free.append(mask[lo:hi])
            obj = ChainObjective(prior, np.concatenate(chain), np.concatenate(free), opts.lam, w)
            res = minimize(
                obj, np.zeros((1, obj.T * prior.num_joints * 6), np.float32), opts.run_iters, h0=1.0, ftol=opts.ftol
            )
            xr = rotations.orthonormalize_6d(obj.poses(res.p[0]).astype(np.float64)).astype(np.float32)
            for a, b, at in parts:
                out[a : b + 1] = np.where(mask[a : b + 1, :, None], xr[at : at + b - a + 1], x[a : b + 1])
                done += b - a + 1
            if progress:
                progress(done, total)
        return out
    for a, b in all_runs:
        f = mask[a : b + 1]
        obj = RunObjective(
            prior,
            out[a : b + 1],
            f,
            None if a in ends else x[a - 1],
            None if b + 1 in ends else x[b + 1],
            opts.lam,
            w,
            opts.fixed_weight,
        )
        res = minimize(obj, z[a : b + 1].reshape(1, -1), opts.run_iters)
        xr = rotations.orthonormalize_6d(obj.poses(res.p[0]).astype(np.float64)).astype(np.float32)
        out[a : b + 1] = np.where(f[..., None], xr, x[a : b + 1])
        done += b - a + 1
        if progress:
            progress(done, total)
    return out


def _stacks(run_list: list[tuple[int, int]], frames: int) -> list[list[tuple[int, int]]]:
    """Consecutive runs grouped so that each group holds at most ``frames`` frames (a longer run alone)."""
    groups, size = [], frames
    for a, b in run_list:
        if size + b - a + 3 > frames:
            groups.append([])
            size = 0
        groups[-1].append((a, b))
        size += b - a + 3
    return groups


class RunObjective:
    """A run of consecutive frames t = 0..T-1 of one take as ONE latent-space problem for
    ``runtime.lbfgs.minimize``, parameters the T latents, x_t = f(z_t):

        L = sum_t lam (-log p(x_t)) + fixed_weight sum_t sum_{j fixed} |GS(x_t,j) - v_t,j|^2
            + smooth sum_{t=0}^{T} sum_{j free} |x_t,j - x_{t-1},j|^2,

    with x_{-1} and x_T the observed frames around the run (held; absent at a take's ends). The smoothness
    gradient is ``2 smooth (2 x_t - x_{t-1} - x_{t+1})`` on the free joints (``runtime.chain.pair_weight``)."""

    def __init__(
        self,
        prior: PosePrior,
        observed: np.ndarray,
        free: np.ndarray,
        before: np.ndarray | None,
        after: np.ndarray | None,
        lam: float,
        smooth: float,
        fixed_weight: float,
    ):
        self.prior, self.v, self.free = prior, observed.astype(np.float32), free
        self.before, self.after = before, after
        self.lam, self.smooth = np.float32(lam), np.float32(smooth)
        self.anchor = Anchor(self.v, ~free, fixed_weight)
        self.T = len(observed)
        held = np.zeros((1, free.shape[1]), bool)
        chain = [held] * (before is not None) + [free] + [held] * (after is not None)
        self.W = pair_weight(np.concatenate(chain))[..., None]

    def _smooth(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        chain = [x]
        if self.before is not None:
            chain.insert(0, self.before[None])
        if self.after is not None:
            chain.append(self.after[None])
        c = np.concatenate(chain)
        lead = 1 if self.before is not None else 0
        d = self.W * np.diff(c, axis=0)  # (pairs, 21, 6), zero where not smoothed
        g = np.zeros_like(c)
        g[1:] += d
        g[:-1] -= d
        return float(self.smooth * np.einsum("tjk,tjk->", d, d)), (2 * self.smooth) * g[lead : lead + self.T]

    def poses(self, p: np.ndarray) -> np.ndarray:
        """The run's raw 6D poses (T, 21, 6) at parameters ``p``."""
        return self.prior.latent_forward(p.reshape(self.T, -1))[0]

    def value(self, rows, p):
        f = np.full(len(p), np.inf, np.float32)
        cache = [None] * len(p)
        for i in range(len(p)):
            if feasible(p[i : i + 1])[0]:
                x, log_p = self.prior.latent_forward(p[i].reshape(self.T, -1))
                a, gx = self.anchor(x, np.arange(self.T))
                sv, sg = self._smooth(x)
                f[i], cache[i] = float(-self.lam * log_p.sum()) + float(a.sum()) + sv, gx + sg
        return f, cache

    def gradient(self, rows, p, cache, sel):
        out = np.zeros((len(sel), p.shape[1]), np.float32)
        for k, i in enumerate(sel):
            _, _, grad_log_p, vjp = self.prior.latent_vjp(p[i].reshape(self.T, -1), cache[i])
            out[k] = (vjp - self.lam * grad_log_p).reshape(-1)
        return out


def write_take(take: Take, rest_joints: np.ndarray, path: str | Path) -> Path:
    """``take`` as an AMASS-style npz (``runtime.convert.save_amass``: one file, every take, atomically), with
    ``source_frame`` (N,), each frame's number in the source, and ``dropped`` (one note per take, "" when
    nothing was left out)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the output is an .npz file")
    parts = [
        (n, s, {"poses": take.poses[a:b], "trans": take.trans[a:b], "mocap_framerate": np.float64(take.fps)})
        for (n, a, b), s in zip(take.spans(), take.subjects or [-1] * len(take.names))
    ]
    dropped = take.dropped or [""] * len(take.names)
    return save_amass(
        parts, rest_joints, path, {"source_frame": np.asarray(take.frames, np.int64), "dropped": np.array(dropped)}
    )
