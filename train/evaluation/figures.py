"""The evaluation's figures (matplotlib, Agg backend, PNG), after the paper's Figures 2-4.

* ``logp_histograms``: the distributions of flow log-density of data and samples. Top panel: the data's range,
  ``[L, U]`` with ``L = (1st percentile of all data log p) - 100`` nats and ``U`` the largest value of any set;
  values below L (out-of-distribution samples reach -1e15) are not drawn, the legend gives their share, and each
  curve's area is the share of its set inside the range. Bottom panel: every finite value, on a symmetric-log x
  axis (linear within +-100) and a log y axis (fraction of the set per bin).
* ``scatter_matrix``: per joint, the 3 x 3 pairwise scatter of rotation-vector components (diagonal: the
  marginal histograms), prior samples over data. Axis limits: the data's 0.5-99.5 percentile range padded by
  25 % of its width; points beyond are not drawn.
* ``ablation``: per model, raw vs orthonormalised log p of the same samples, with the dashed line y = x and the
  fraction of points above it in the legend. Axis limits: 0.5-100 percentiles of both; points beyond are not
  drawn (their count is in the title).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import fraction_above  # noqa: E402

SAVE = {"dpi": 110, "metadata": {"Software": None}}  # no version string: identical files on every run
COLORS = {
    "data_test": "black",
    "data_train": "0.55",
    "ours_raw": "tab:orange",
    "ours": "tab:blue",
    "vposer": "tab:red",
    "gmm": "tab:green",
}
HIST_MARGIN = 100.0


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i % 10}")


def logp_histograms(sets: list[tuple[str, str, np.ndarray]], data_names: list[str], path: Path) -> dict:
    """sets: (name, label, log p). Writes the figure; returns the clipping it applied."""
    finite = {name: v[np.isfinite(v)] for name, _, v in sets}
    data = np.concatenate([finite[n] for n in data_names])
    lo = float(np.percentile(data, 1.0) - HIST_MARGIN)
    hi = float(max(v.max() for v in finite.values() if len(v)))
    bins = np.linspace(lo, hi, 121)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 8.5))
    clipped = {}
    for i, (name, label, v) in enumerate(sets):
        below = float(np.mean(~(v >= lo)))  # NaN counts as below
        clipped[name] = below
        inside = v[v >= lo]
        # area under each curve = the fraction of the set inside the axis range
        ax.hist(
            inside,
            bins=bins,
            weights=np.full(len(inside), 1.0 / (len(v) * (bins[1] - bins[0]))),
            histtype="step",
            lw=1.6 if name.startswith("data") else 1.2,
            color=_color(name, i),
            label=f"{label} (n={len(v)}; {100 * below:.1f}% below {lo:.0f}, not drawn)",
        )
    ax.set_xlim(lo, hi)
    ax.set_xlabel(f"log p (flow); values below {lo:.0f} are not drawn (their share is in the legend)")
    ax.set_ylabel("density (area = share inside the range)")
    ax.set_title("Flow log-density of data and samples")
    ax.legend(fontsize=8, loc="upper left")
    allv = np.concatenate(list(finite.values()))
    edges = _symlog_edges(float(allv.min()), hi, 160)
    for i, (name, label, v) in enumerate(sets):
        ax2.hist(
            finite[name],
            bins=edges,
            histtype="step",
            color=_color(name, i),
            label=label,
            weights=np.full(len(finite[name]), 1.0 / max(len(v), 1)),
        )
    ax2.set_yscale("log")
    ax2.set_xscale("symlog", linthresh=HIST_MARGIN)
    ax2.set_xlabel("log p (flow), full range, symmetric-log axis (linear within +-100)")
    ax2.set_ylabel("fraction per bin")
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, **SAVE)
    plt.close(fig)
    return {"lower": lo, "upper": hi, "fraction_below": clipped}


def _symlog_edges(lo: float, hi: float, n: int, t: float = HIST_MARGIN) -> np.ndarray:
    """n+1 bin edges evenly spaced in symlog(x) = sign(x) log10(1 + |x|/t)."""
    f = lambda x: np.sign(x) * np.log10(1.0 + np.abs(x) / t)  # noqa: E731
    g = lambda y: np.sign(y) * t * (10.0 ** np.abs(y) - 1.0)  # noqa: E731
    return g(np.linspace(f(lo), f(hi) + 1e-9, n + 1))


def scatter_matrix(
    prior_rv: np.ndarray,
    data_rv: np.ndarray,
    joint_ids: list[int],
    joint_names: list[str],
    prior_label: str,
    data_label: str,
    path: Path,
    color: str = "tab:blue",
) -> None:
    """Rotation vectors (n, 21, 3) of prior samples and data: one 3 x 3 block per joint, side by side."""
    nj = len(joint_ids)
    fig = plt.figure(figsize=(5.4 * nj, 5.6))
    outer = fig.add_gridspec(1, nj, left=0.04, right=0.99, bottom=0.08, top=0.86, wspace=0.16)
    # tight_layout is avoided on purpose: with 27 axes it takes longer than drawing them
    axes = np.concatenate([outer[b].subgridspec(3, 3, wspace=0.35, hspace=0.3).subplots() for b in range(nj)], 1)
    comp = ("x", "y", "z")
    for b, j in enumerate(joint_ids):
        d, p = data_rv[:, j], prior_rv[:, j]
        q0, q1 = np.percentile(d, 0.5, axis=0), np.percentile(d, 99.5, axis=0)
        pad = 0.25 * np.maximum(q1 - q0, 0.05)
        lim = np.stack([q0 - pad, q1 + pad], 1)
        for r in range(3):
            for c in range(3):
                ax = axes[r, 3 * b + c]
                if r == c:
                    bins = np.linspace(*lim[r], 41)
                    ax.hist(d[:, r], bins=bins, density=True, color="0.6", alpha=0.7)
                    ax.hist(p[:, r], bins=bins, density=True, histtype="step", color=color, lw=1.3)
                    ax.set_yticks([])
                else:
                    ax.scatter(d[:, c], d[:, r], s=1.5, c="0.45", alpha=0.35, lw=0, rasterized=True)
                    ax.scatter(p[:, c], p[:, r], s=1.5, c=color, alpha=0.35, lw=0, rasterized=True)
                    ax.set_ylim(*lim[r])
                ax.set_xlim(*lim[c])
                ax.tick_params(labelsize=6)
                if r == 2:
                    ax.set_xlabel(f"{comp[c]}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{comp[r]}", fontsize=8)
        axes[0, 3 * b + 1].set_title(f"{joint_names[j]} (rotation vector, rad)", fontsize=10)
    handles = [
        plt.Line2D([], [], ls="", marker="o", color="0.45", label=f"{data_label} (n={len(data_rv)})"),
        plt.Line2D([], [], ls="", marker="o", color=color, label=f"{prior_label} (n={len(prior_rv)})"),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=9, ncol=2)
    fig.savefig(path, **SAVE)
    plt.close(fig)


def ablation(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """panels: (title, raw log p, orthonormalised log p) of the same samples, one scatter each with y = x."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    for ax, (title, raw, ortho) in zip(axes[0], panels):
        above = fraction_above(raw, ortho)
        both = np.concatenate([raw, ortho])
        both = both[np.isfinite(both)]
        lo, hi = np.percentile(both, 0.5), both.max()
        pad = 0.03 * (hi - lo)
        lim = (lo - pad, hi + pad)
        outside = int(np.sum(~((raw >= lim[0]) & (ortho >= lim[0]))))
        ax.scatter(
            raw,
            ortho,
            s=2,
            alpha=0.3,
            lw=0,
            color="tab:blue",
            rasterized=True,
            label=f"samples (n={len(raw)}); above y = x: {100 * above:.1f}%",
        )
        ax.plot(lim, lim, "r--", lw=1.2, label="y = x")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_aspect("equal")
        ax.set_xlabel("log p of raw sample")
        ax.set_ylabel("log p of orthonormalised sample")
        ax.set_title("\n".join(textwrap.wrap(title, 48)) + f"\n({outside} points beyond the axes)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, **SAVE)
    plt.close(fig)
