"""``fits.png``: skeletons of a few test poses, ground truth and each prior's fit."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from runtime.rotations import PARENTS

from ..kinematics import forward_kinematics
from ..rotations import gram_schmidt
from .models import ROWS
from .tasks import Tasks


def plot(tasks: Tasks, figures: dict, path: Path) -> None:
    """Skeletons (front view, yawed 30°) of a few test poses: ground truth (grey) and each prior's fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ROWS)
    panels = [("completion", "left_arm"), ("completion", "trunk"), ("ik", None), ("denoise_20", None)]
    panels = [p for p in panels if any((n, p[0]) in figures for n in names)]
    idx = [0, len(tasks.gt) // 2]
    rows = len(panels) * len(idx)
    fig, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 2.6 * rows), squeeze=False)
    yaw = math.radians(30)
    view = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0]], dtype=torch.float64)

    def draw(ax, x6, color):
        P = forward_kinematics(gram_schmidt(x6.double())[None], tasks.score.offsets)[0] @ view.T
        for k in range(1, 22):
            ax.plot(*zip(P[PARENTS[k]].numpy(), P[k].numpy()), color=color, lw=1.5)

    for r, ((key, mask), i) in enumerate([(p, i) for p in panels for i in idx]):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.set_aspect("equal")
            ax.axis("off")
            poses = figures.get((name, key))
            if poses is None:
                continue
            fitted = poses[mask][0, i] if mask else poses[i]
            draw(ax, tasks.gt[i], "0.7")
            draw(ax, fitted, "C3" if name.startswith("flow") else "C0")
            if r == 0:
                ax.set_title(ROWS[name], fontsize=7)
            if c == 0:
                ax.text(
                    -0.1,
                    0.5,
                    f"{key}{'/' + mask if mask else ''}\npose {i}",
                    transform=ax.transAxes,
                    rotation=90,
                    va="center",
                    ha="right",
                    fontsize=7,
                )
    fig.suptitle("fits (colour) vs ground truth (grey); completion: first start", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
