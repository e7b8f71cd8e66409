"""The benchmark's Markdown: the results table (printed and in ``report.md``) and ``report.md`` itself."""

from __future__ import annotations

from .models import ROWS
from .tasks import MASKS, task_keys

REFERENCE = "reference, no fit: mean pose (completion, IK start) / noisy input"


def headline(key: str, m: dict) -> str:
    """One log line of a task's test metrics: MPJPE and geodesic error (completion: mean and best of the starts)."""
    if key == "completion":
        return (
            f"MPJPE {m['mean_mpjpe_mm']:.1f} mm (best {m['mean_mpjpe_best_mm']:.1f}), "
            f"geodesic {m['mean_geodesic_deg']:.1f} deg (best {m['mean_geodesic_best_deg']:.1f})"
        )
    return f"MPJPE {m['mpjpe_mm']:.1f} mm, geodesic {m['geodesic_deg']:.2f} deg"


def format_table(report: dict) -> str:
    """Markdown table: one row per prior; completion mean / best-of-H per mask average, IK, denoising."""
    keys = task_keys(report["config"]["noise_deg"])
    H = report["config"]["hypotheses"]
    head = [
        "prior",
        f"completion MPJPE mm (mean / best of {H})",
        "completion geodesic deg (mean / best)",
        "IK MPJPE mm",
    ] + [f"denoise {k.split('_')[1]}° geodesic deg / MPJPE mm" for k in keys[2:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = report["reference"]
    lines.append(
        f"| {REFERENCE} | {ref['completion']['mean_mpjpe_mm']:.1f} | "
        f"{ref['completion']['mean_geodesic_deg']:.1f} | {ref['ik']['mpjpe_mm']:.1f} | "
        + " | ".join(f"{ref[k]['geodesic_deg']:.2f} / {ref[k]['mpjpe_mm']:.1f}" for k in keys[2:])
        + " |"
    )
    for name, label in ROWS.items():
        r = report["results"].get(name)
        if r is None:
            continue
        c = r["completion"]
        cells = [
            label,
            f"{c['mean_mpjpe_mm']:.1f} / {c['mean_mpjpe_best_mm']:.1f}",
            f"{c['mean_geodesic_deg']:.1f} / {c['mean_geodesic_best_deg']:.1f}",
            f"{r['ik']['mpjpe_mm']:.1f}",
        ]
        cells += [f"{r[k]['geodesic_deg']:.2f} / {r[k]['mpjpe_mm']:.1f}" for k in keys[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    per_mask = [
        "",
        "Completion per mask, MPJPE mm mean / best:",
        "",
        "| prior | " + " | ".join(MASKS) + " |",
        "|" + "---|" * (len(MASKS) + 1),
        f"| {REFERENCE} | " + " | ".join(f"{ref['completion'][m]['mpjpe_mm']:.1f}" for m in MASKS) + " |",
    ]
    for name, label in ROWS.items():
        if name in report["results"]:
            c = report["results"][name]["completion"]
            per_mask.append(
                f"| {label} | "
                + " | ".join(f"{c[m]['mpjpe_mm']:.1f} / {c[m]['mpjpe_best_mm']:.1f}" for m in MASKS)
                + " |"
            )
    return "\n".join(lines + per_mask)


def report_md(report: dict, table: str) -> str:
    cfg = report["config"]
    keys = task_keys(cfg["noise_deg"])
    lam_rows = ["| prior | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, label in ROWS.items():
        if name in report["lam"]:
            cells = []
            for k, v in report["lam"][name].items():
                grid = [float(g) for g in report["val_grid"][name][k]]
                cells.append("n/a" if not grid else f"{v:g}" + (" (grid edge)" if v in (min(grid), max(grid)) else ""))
            lam_rows.append(f"| {label} | " + " | ".join(cells) + " |")
    pair_rows = ["| a − b | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for pair, by_key in report["paired"].items():
        a, b = pair.split(" - ")
        pair_rows.append(
            f"| {ROWS[a]} − {ROWS[b]} | "
            + " | ".join(f"{by_key[k]['mean']:+.2f} ± {by_key[k]['se']:.2f}" for k in keys)
            + " |"
        )
    return "\n".join(
        [
            "# Downstream fitting benchmark (`poseprior fit-bench`)",
            "",
            f"Model: `{report['model_dir']}`; flow weights: {report['flow']}.",
            f"Test: `{report['test']}` ({report['n_test']} poses, evenly spaced); lam tuned on `{report['val']}` "
            f"({report['n_val']} poses), grid {cfg['lam_grid']} (latent completion: {cfg['lam_grid_completion']}). "
            f"Optimiser: one L-BFGS per pose (runtime.lbfgs, both sides), iterations {cfg['iters']}, chunks of {cfg['chunk']} poses; "
            f"{cfg['hypotheses']} completion starts (mean pose + N(0, {cfg['init_sigma_deg']}°) per masked joint). "
            f"Total {report['seconds']:.0f} s on {report['threads']} thread(s).",
            "",
            "Lower is better everywhere. See `train/fitbench/` for the exact objectives.",
            "",
            table,
            "",
            "## Paired differences on the test poses",
            "",
            "Mean per-pose difference ± its standard error, of completion MPJPE (mm, mean over masks and starts), "
            "IK MPJPE (mm) and denoising geodesic error (deg). Negative: a is better.",
            "",
            *pair_rows,
            "",
            "## Chosen prior weights (validation)",
            "",
            "n/a: no weight to choose (no prior; ambient completion, where the prior is the whole objective).",
            "",
            *lam_rows,
            "",
            "![fits](fits.png)",
            "",
        ]
    )
