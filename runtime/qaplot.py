"""The take-QA timeline (``poseprior score --plot`` with a calibrated model): log p and the motion score over
time, the flagged spans shaded, and a joint-by-time strip of the suspect joints. Needs matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .rotations import JOINT_NAMES


def plot_timeline(s, path: str | Path, repaired: np.ndarray | None = None, title: str | None = None) -> Path:
    """``s``: a ``runtime.takes.Score`` with a detection. Three rows sharing the time axis (seconds when the take
    has a frame rate): log p (and, with ``repaired`` (N,), log p after repair) with the threshold; the motion
    score (flagged at >= 1, log scale); the suspect joints (one row per joint that is suspect somewhere). Spans are
    shaded in every row, take boundaries dotted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'poseprior[plot]'") from None
    d = s.detection
    path = Path(path)
    lp = s.log_prob.astype(np.float64)
    n = len(lp)
    fps = s.take.fps
    t = np.arange(n) / fps if np.isfinite(fps) else np.arange(n, dtype=float)
    dt = (t[1] - t[0]) if n > 1 else 1.0
    sus = d.suspects
    rows = np.flatnonzero(sus.any(0))
    fig, axes = plt.subplots(
        3,
        1,
        figsize=(11, 5.6 + 0.12 * len(rows)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2, max(1.2, 0.35 * len(rows))]},
    )
    lo = min(np.percentile(lp, 1), s.threshold) - 10
    ax = axes[0]
    ax.plot(t, np.clip(lp, lo, None), lw=0.9, color="C0", label="log p")
    if repaired is not None:
        ax.plot(t, np.clip(repaired, lo, None), lw=1.4, color="C2", label="log p after repair")
    ax.axhline(s.threshold, color="C3", lw=1, ls="--", label=f"tau {s.threshold:.1f}")
    ax.set_ylim(lo, max(lp.max(), -np.inf if repaired is None else repaired.max()) + 5)
    ax.set_ylabel("log p")
    ax.legend(fontsize=8, loc="lower left", ncol=3)
    ax = axes[1]
    ax.semilogy(t, np.maximum(d.score, 1e-2), lw=0.9, color="C1")
    ax.axhline(1.0, color="C3", lw=1, ls="--")
    ax.set_ylabel("motion score")
    ax = axes[2]
    for i, j in enumerate(rows):
        f = np.flatnonzero(sus[:, j])
        ax.scatter(t[f], np.full(len(f), i), s=9, marker="s", color="C3")
    ax.set_yticks(range(len(rows)), [JOINT_NAMES[j] for j in rows], fontsize=7)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.set_ylabel("suspect joints")
    ax.set_xlabel("time (s)" if np.isfinite(fps) else "frame")
    for ax in axes:
        for a, b, _ in d.spans:
            ax.axvspan(t[a] - dt / 2, t[b - 1] + dt / 2, color="C3", alpha=0.15, lw=0)
        for _, a, _ in s.take.spans()[1:]:
            ax.axvline(t[a], color="0.6", lw=0.8, ls=":")
    flagged = len(s.flagged)
    axes[0].set_title(title or f"{Path(s.take.source).name}: {flagged} of {n} frames flagged in {len(d.spans)} spans")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
