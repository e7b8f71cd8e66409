"""Motion-aware glitch detection in a take: which frames, which joints, which spans. Numpy only.

A mocap glitch (a swapped marker, a flipped limb, a joint that jumps for a few frames) makes a joint **jump away
and come back**: the pose after the glitch continues the pose before it. Real motion, however fast, does not:
a joint that moves far between two frames either keeps moving or stays where it went. The detector scores every
candidate span ``[a, b)`` of one take (``1 <= b - a <= max_span`` frames) for every joint ``j``, on the local
rotations ``R_t`` (3x3) of the 21 body joints, with ``d(A, B)`` the geodesic angle of ``A^T B`` (degrees):

    v_t      = d(R_{t-1}, R_t)                           (the joint's step into frame t)
    m_t      = median of v over frames t - window .. t + window     (the take's own local motion level)
    J        = min(v_a, v_b)                             (the jump away at a, and the return at b)
    bridge   = d(R_{a-1}, R_b) / (b - a + 1)             (the mean step from the frame before to the frame after)
    s(a, b)  = (J - max(bridge, m)) / (floor + m)        (m: the larger of m_{a-1}, m_b)

A glitch of angle theta gives J ~ theta while the bridge and m stay at the motion's own speed; smooth motion, at any
speed, gives J ~ bridge ~ m and s ~ 0; a real single fast move (no return) has a small v at one end.

A **held** joint (a channel frozen at its last value while the body moves on, then released) has no jump away: it
stops. Its cue is the release after the hold. A hold of joint j is a run of frames a..b-1 with
``min_held <= b - a <= max_span`` (a longer still run is a joint at rest: scoring it would flag the whole rest
whenever a glitch follows it), each within ``still`` degrees of the frame before (v_t < still), while the body
moves (in none of them are more than half of the take's moving joints, those whose median step is >= ``still``,
also still):

    h(a, b)  = (v_b - m) / (floor + m)          (v_b: the release; m: median of v over the ``window`` frames
                                                 before a and after b, the joint's own motion around the hold)

A joint that truly rests and then starts moves off at its own speed (v_b ~ m, h ~ 0); a held one jumps to where the
motion went meanwhile (v_b ~ (b - a) m). Frames a..b-1 get h; a hold not released within the take gets nothing.

A **left/right swap** of the arm chains (the markers of the two arms exchanged: each arm joint takes the mirror
image of the other side's rotation) jumps both sides at both ends, like any glitch; what only a swap does is
come back to smooth motion when the span is exchanged back. For each arm part p (collar, shoulder, elbow, wrist;
joints l and r) and span ``[a, b)``, with ``M = diag(-1, 1, 1)`` (the mirror across the body's sagittal plane,
``M R M`` the mirrored local rotation):

    J_p      = min(v_a, v_b) over both joints l, r
    U_p      = max(d(R^l_{a-1}, M R^r_a M), d(R^r_{a-1}, M R^l_a M),      (the steps into and out of the span
                   d(M R^r_{b-1} M, R^l_b), d(M R^l_{b-1} M, R^r_b))       with its arms exchanged back)
    w_p(a,b) = (J_p - max(U_p, m)) / (floor + m)     (m: the largest of m_{a-1}, m_b of l and r)

``W_tp`` is the largest ``w_p`` of the spans holding frame t, at least 0. On real motion it is ~0 (exchanging the
arms of a span back makes its ends jump unless the arms are mirror images there), so it has its own clean scale
and catches a swap whose jump alone is small next to the motion's own speed (arms near mirror symmetry, fast
arms).

Per joint and frame, ``S_tj`` is the largest ``s`` of the spans holding frame t, or its ``h``, whichever is larger.
Calibration (``runtime.calibrate``) divides it by the joint's own clean scale ``q_j`` (a high quantile of ``S_tj``
on clean takes), so every joint is judged in units of its own clean behaviour, and sets one threshold ``c`` for the
take:

    z_tj     = S_tj / (q_j c), and for the 8 joints of the arm chains the larger of that and max_p W_tp / (q^w_p c)
               (a swap exchanges the whole chains: all of their joints are suspect, whichever part showed it)
    score_t  = max_j z_tj                    flagged:  score_t >= 1
    suspect joints of frame t: the j with z_tj >= 1

``q^w_p`` is the same high quantile of ``W_tp`` on the clean takes, floored at ``SWAP_FLOOR`` (on most clean takes
the quantile is 0; the floor keeps the swap threshold at about ``SWAP_FLOOR * c`` units of ``floor + m``).

The prior joins in: a frame is also flagged when its log p is below ``tau``. Calibration gives the prior a share
of the false-flag budget: ``tau`` is the ``PRIOR_SHARE * rate`` quantile of log p on the clean frames, and ``c``
is the quantile of ``max_j z_tj c`` that brings the flagged clean frames (either way) to ``rate``. Spans are
the runs of flagged frames (never across a take's start), each with the union of its frames' suspect joints.
Frames 0 and N-1 of a take cannot be the middle of a jump-and-return and are scored 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import rotations

#: version of the statistic above; a calibration records it, and a detector refuses another version's
DETECTOR_VERSION = "jump-return-hold-swap-3"
#: the share of the false-flag budget given to the prior's log p threshold (the rest goes to motion)
PRIOR_SHARE = 0.1
#: the arm parts whose left/right exchange the swap cue scores (joints ``left_P``, ``right_P``)
SWAP_PARTS = ("collar", "shoulder", "elbow", "wrist")
#: floor of the swap cue's clean scale ``q^w_p`` (module docstring)
SWAP_FLOOR = 0.5
_PAIRS = [(rotations.JOINT_NAMES.index(f"left_{p}"), rotations.JOINT_NAMES.index(f"right_{p}")) for p in SWAP_PARTS]


@dataclass(frozen=True)
class Params:
    """The statistic's settings: ``max_span`` (longest glitch paired, frames), ``window`` (half-width of the local
    motion median, frames), ``floor`` (degrees added to the local level in the denominator), ``min_held`` (the
    shortest hold scored, frames), ``still`` (degrees: a step below it holds the joint)."""

    max_span: int = 16
    window: int = 8
    floor: float = 2.0
    min_held: int = 4
    still: float = 0.05

    def to_dict(self) -> dict:
        return {
            "max_span": self.max_span,
            "window": self.window,
            "floor": self.floor,
            "min_held": self.min_held,
            "still": self.still,
        }


@dataclass
class Calibration:
    """What ``runtime.calibrate`` records: per-joint clean scales ``q`` (21,), the take threshold ``c``, the
    target rate, the swap cue's clean scales ``qw`` (4,) (one per ``SWAP_PARTS``), the statistic's ``params`` and
    version."""

    q: np.ndarray
    c: float
    rate: float
    qw: np.ndarray = field(default_factory=lambda: np.full(len(SWAP_PARTS), SWAP_FLOOR))
    params: Params = field(default_factory=Params)
    version: str = DETECTOR_VERSION

    def joint_scores(self, S: np.ndarray, W: np.ndarray) -> np.ndarray:
        """(N, 21) ``z_tj`` of the module docstring from ``S`` (N, 21) and ``W`` (N, 4)."""
        z = S / (self.q * self.c)
        arms = [j for pair in _PAIRS for j in pair]
        z[:, arms] = np.maximum(z[:, arms], (W / (self.qw * self.c)).max(1, keepdims=True))
        return z

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "params": self.params.to_dict(),
            "false_flag_rate": self.rate,
            "threshold": round(float(self.c), 6),
            "joint_scale": [round(float(v), 6) for v in self.q],
            "swap_scale": [round(float(v), 6) for v in self.qw],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("version") != DETECTOR_VERSION:
            raise ValueError(
                f"detector calibration of version {d.get('version')!r}; this runtime's detector is "
                f"{DETECTOR_VERSION!r}: calibrate the model again (poseprior calibrate)"
            )
        if len(d.get("swap_scale", ())) != len(SWAP_PARTS):
            raise ValueError(
                f"detector calibration: 'swap_scale' must hold {len(SWAP_PARTS)} numbers (one per arm part): "
                "calibrate the model again (poseprior calibrate)"
            )
        return cls(
            np.asarray(d["joint_scale"], float),
            float(d["threshold"]),
            float(d["false_flag_rate"]),
            np.asarray(d["swap_scale"], float),
            Params(**d["params"]),
        )


@dataclass
class Detection:
    """Per frame ``score`` (N,) (the motion score; flagged: >= 1), per joint ``joint_score`` (N, 21) (suspect:
    >= 1), the spans (runs of flagged frames within a take) as (first, end, joint indices), end exclusive, and
    ``by_prior`` (N,) bool: the frames the prior flags (log p < tau), when it took part."""

    score: np.ndarray
    joint_score: np.ndarray
    spans: list[tuple[int, int, list[int]]]
    by_prior: np.ndarray | None = None

    @property
    def flags(self) -> np.ndarray:
        """(N,) bool: score >= 1, or log p < tau (``by_prior``)."""
        f = self.score >= 1.0
        return f if self.by_prior is None else f | self.by_prior

    @property
    def suspects(self) -> np.ndarray:
        """(N, 21) bool: the suspect joints of every frame (none on unflagged frames)."""
        return self.joint_score >= 1.0

    def mask(self) -> np.ndarray:
        """(N, 21) bool: each span's joints over the whole span (what ``repair`` frees)."""
        m = np.zeros(self.joint_score.shape, bool)
        for a, b, js in self.spans:
            m[a:b, js] = True
        return m


def body_matrices(poses: np.ndarray) -> np.ndarray:
    """(N, 21, 3, 3) local rotations of the 21 body joints of SMPL axis-angle ``poses`` (N, 72)."""
    return rotations.axis_angle_to_matrix(np.asarray(poses, np.float64)[:, 3:66].reshape(-1, 21, 3))


def _segments(n: int, starts) -> list[tuple[int, int]]:
    s = sorted({0, *[int(x) for x in starts if 0 <= int(x) < n]})
    return list(zip(s, s[1:] + [n]))


def joint_statistic(R: np.ndarray, starts=(0,), params: Params = Params()) -> np.ndarray:
    """(N, 21) ``S_tj`` of the module docstring for rotations ``R`` (N, 21, 3, 3), each take (``starts``) on
    its own."""
    N, J = R.shape[:2]
    S = np.zeros((N, J))
    L, W = params.max_span, params.window
    for lo, hi in _segments(N, starts):
        n = hi - lo
        if n < 3:
            continue
        r = R[lo:hi]
        v = np.zeros((n, J))
        v[1:] = rotations.geodesic_deg(r[:-1], r[1:])
        pad = np.pad(v[1:], ((W, W), (0, 0)), mode="edge")
        m = np.empty((n, J))
        m[1:] = np.median(np.lib.stride_tricks.sliding_window_view(pad, 2 * W + 1, axis=0), axis=-1)
        m[0] = m[1]
        out = np.zeros((n, J))
        for k in range(1, min(L, n - 2) + 1):  # span [a, a + k), a = 1 .. n - 1 - k
            a, b = slice(1, n - k), slice(1 + k, n)  # a = 1 .. n - 1 - k, b = a + k
            before = slice(0, n - k - 1)  # a - 1
            jump = np.minimum(v[a], v[b])
            bridge = rotations.geodesic_deg(r[before], r[b]) / (k + 1)
            level = np.maximum(m[before], m[b])
            s = (jump - np.maximum(bridge, level)) / (params.floor + level)
            for i in range(k):  # frames a + i of every span
                np.maximum(out[1 + i : n - k + i], s, out=out[1 + i : n - k + i])
        S[lo:hi] = np.maximum(out, hold_statistic(v, params))
    return S


def swap_statistic(R: np.ndarray, starts=(0,), params: Params = Params()) -> np.ndarray:
    """(N, 4) ``W_tp`` of the module docstring (one column per ``SWAP_PARTS``) for rotations ``R`` (N, 21, 3, 3),
    each take (``starts``) on its own."""
    N = len(R)
    W = np.zeros((N, len(_PAIRS)))
    L, Wn = params.max_span, params.window
    for lo, hi in _segments(N, starts):
        n = hi - lo
        if n < 3:
            continue
        r = R[lo:hi][:, np.array(_PAIRS)]  # (n, 4, 2, 3, 3): per part, left and right
        x = rotations.mirror_matrix(r[:, :, ::-1])  # each side's exchanged-back rotation
        v = np.zeros((n, len(_PAIRS), 2))
        v[1:] = rotations.geodesic_deg(r[:-1], r[1:])
        into = np.zeros_like(v)  # d(R_{t-1}, exchanged R_t): the step into an exchanged frame t
        into[1:] = rotations.geodesic_deg(r[:-1], x[1:])
        out_of = np.zeros_like(v)  # d(exchanged R_{t-1}, R_t): the step out of an exchanged frame t - 1
        out_of[1:] = rotations.geodesic_deg(x[:-1], r[1:])
        pad = np.pad(v[1:], ((Wn, Wn), (0, 0), (0, 0)), mode="edge")
        m = np.empty_like(v)
        m[1:] = np.median(np.lib.stride_tricks.sliding_window_view(pad, 2 * Wn + 1, axis=0), axis=-1)
        m[0] = m[1]
        best = np.zeros((n, len(_PAIRS)))
        for k in range(1, min(L, n - 2) + 1):  # span [a, a + k), a = 1 .. n - 1 - k
            a, b = slice(1, n - k), slice(1 + k, n)  # a = 1 .. n - 1 - k, b = a + k
            jump = np.minimum(v[a], v[b]).min(2)
            back = np.maximum(into[a], out_of[b]).max(2)
            level = np.maximum(m[0 : n - k - 1], m[b]).max(2)
            w = (jump - np.maximum(back, level)) / (params.floor + level)
            for i in range(k):  # frames a + i of every span
                np.maximum(best[1 + i : n - k + i], w, out=best[1 + i : n - k + i])
        W[lo:hi] = best
    return W


def hold_statistic(v: np.ndarray, params: Params = Params()) -> np.ndarray:
    """(n, 21) ``h`` of the module docstring from one take's steps ``v`` (n, 21) (degrees, ``v[0]`` unused): the
    frames of every released hold of ``min_held`` to ``max_span`` frames while the body moves, 0 elsewhere."""
    n, J = v.shape
    h = np.zeros((n, J))
    still = np.zeros((n, J), bool)
    still[1:] = v[1:] < params.still
    movers = np.median(v[1:], axis=0) >= params.still if n > 1 else np.zeros(J, bool)
    body_still = (still & movers).sum(1) > 0.5 * movers.sum()
    W = params.window
    for j in range(J):
        edges = np.flatnonzero(np.diff(np.r_[0, still[:, j].astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2]):  # still over frames a..b-1; v[b] is the release
            if not params.min_held <= b - a <= params.max_span or b >= n or body_still[a:b].any():
                continue
            around = np.r_[v[max(1, a - W) : a, j], v[b + 1 : b + 1 + W, j]]
            m = float(np.median(around)) if len(around) else 0.0
            h[a:b, j] = (v[b, j] - m) / (params.floor + m)
    return h


def detect(
    R: np.ndarray, cal: Calibration, starts=(0,), log_prob: np.ndarray | None = None, tau: float | None = None
) -> Detection:
    """Score every frame and joint of ``R`` (N, 21, 3, 3) under ``cal`` (module docstring). With ``log_prob``
    (N,) and ``tau``, the prior joins in: a frame is also flagged when ``log_prob < tau`` (it then has no suspect
    joints from motion; ``repair`` chooses them by the prior)."""
    js = cal.joint_scores(joint_statistic(R, starts, cal.params), swap_statistic(R, starts, cal.params))
    score = js.max(1)
    by_prior = np.zeros(len(R), bool) if log_prob is None or tau is None else np.asarray(log_prob) < tau
    flagged = np.flatnonzero((score >= 1.0) | by_prior)
    spans = []
    if len(flagged):
        cuts = np.flatnonzero((np.diff(flagged) > 1) | np.isin(flagged[1:], list(starts)))
        for i, j in zip(np.r_[0, cuts + 1], np.r_[cuts, len(flagged) - 1]):
            a, b = int(flagged[i]), int(flagged[j]) + 1
            spans.append((a, b, [int(x) for x in np.flatnonzero((js[a:b] >= 1.0).any(0))]))
    return Detection(score, js, spans, by_prior)


def fit_calibration(
    S_clean: np.ndarray,
    W_clean: np.ndarray,
    rate: float,
    params: Params = Params(),
    joint_quantile: float = 0.99,
    already: np.ndarray | None = None,
) -> Calibration:
    """Calibration from ``S_tj`` (N, 21) and ``W_tp`` (N, 4) of clean frames: ``q_j`` = the ``joint_quantile``
    of joint j's statistic (floored at 0.05 so a joint that never moves does not divide by ~0), ``q^w_p`` the
    same of ``W_tp`` floored at ``SWAP_FLOOR``, ``c`` such that ``rate`` of the frames are flagged: the
    ``1 - rate`` quantile of ``max_j z_tj c`` (module docstring), or, with ``already`` (N,) bool (frames the
    prior flags), the quantile that flags ``rate`` of the frames in all, those included."""
    if not 0 < rate < 1:
        raise ValueError(f"false flag rate: must be in (0, 1), got {rate!r}")
    if len(S_clean) < 100:
        raise ValueError(f"calibration needs at least 100 clean frames, got {len(S_clean)}")
    q = np.maximum(np.quantile(S_clean, joint_quantile, axis=0), 0.05)
    qw = np.maximum(np.quantile(W_clean, joint_quantile, axis=0), SWAP_FLOOR)
    score = Calibration(q, 1.0, rate, qw).joint_scores(S_clean, W_clean).max(1)
    if already is not None and already.any():
        pre = float(already.mean())
        left = max(rate - pre, 0.0) / (1 - pre)
        c = float(np.quantile(score[~already], 1 - left)) if left > 0 else float(score.max()) * 1.01
    else:
        c = float(np.quantile(score, 1 - rate))
    return Calibration(q, max(c, 1e-6), float(rate), qw, params)
