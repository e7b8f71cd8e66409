"""The benchmark run: per prior and task, lam tuned on the validation poses, then the test poses; paired
differences between priors; ``metrics.json``, ``report.md`` and ``fits.png`` written to the output folder."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..data import load_split  # shared npz or a converted (make data) split
from .models import load_priors
from .plot import plot
from .report import format_table, headline, report_md
from .tasks import PER_POSE, BenchConfig, Tasks, evenly, mean_pose, run_task, task_keys

SELECT = {"completion": "mean_mpjpe_mm", "ik": "mpjpe_mm"}  # denoising: geodesic_deg
PAIRS = (
    ("runtime_ambient", "flow_ambient"),
    ("runtime_latent", "flow_latent"),
    ("flow_latent", "flow_latent_z2"),
    ("flow_latent", "flow_ambient"),
    ("flow_ambient", "vposer"),
    ("flow_latent", "vposer"),
    ("flow_ambient", "gmm"),
)


def paired(results: dict, keys) -> dict:
    """Mean per-pose difference a - b of the selection metric and its standard error, for the PAIRS of priors."""
    out = {}
    for a, b in PAIRS:
        if a in results and b in results:
            out[f"{a} - {b}"] = {}
            for key in keys:
                d = results[a][key][PER_POSE] - results[b][key][PER_POSE]
                out[f"{a} - {b}"][key] = {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d)))}
    return out


def tune(tasks: Tasks, prior, key: str) -> tuple[float, dict]:
    """The lam of the task's grid with the lowest validation error (one completion start); (lam, {lam: error})."""
    if prior.name == "none" or (key == "completion" and prior.space == "ambient"):
        return 1.0, {}
    metric = SELECT.get(key, "geodesic_deg")
    grid = tasks.cfg.lam_grid_completion if key == "completion" else tasks.cfg.lam_grid
    scores = {lam: run_task(tasks, prior, key, lam)[0][metric] for lam in grid}
    return min(scores, key=scores.get), scores


def run(
    model_dir: Path,
    test_path: Path,
    out: Path,
    cfg: BenchConfig,
    val_path: Path | None = None,
    train_path: Path | None = None,
    vposer_path: Path = Path("runs/smpl3-vposer"),
    gmm_path: Path = Path("runs/smpl3-gmm"),
    threads: int = 1,
    log=print,
) -> dict:
    """The benchmark of the model in ``model_dir`` on ``cfg.n`` poses of ``test_path``, lam tuned on ``cfg.n_val``
    poses of ``val_path`` (default: val.npz beside the test split; the mean pose from train.npz there); writes
    ``out``/{metrics.json, report.md, fits.png} and returns the metrics. torch runs on ``threads`` threads."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread per process: a shared CPU makes torch's pool spin badly
    try:
        return _run(model_dir, test_path, out, cfg, val_path, train_path, vposer_path, gmm_path, threads, log)
    finally:
        torch.set_num_threads(threads_before)


def _run(model_dir, test_path, out, cfg, val_path, train_path, vposer_path, gmm_path, threads, log) -> dict:
    t_start = time.monotonic()
    val_path = val_path or test_path.with_name("val.npz")
    train_path = train_path or test_path.with_name("train.npz")
    val_tasks, test_tasks = _tasks(test_path, val_path, train_path, cfg)
    priors, origin = load_priors(model_dir, vposer_path, gmm_path, val_tasks.gt[:64], tuple(cfg.priors))
    log(f"flow: {origin}")
    chosen, grids, results, figures = {}, {}, {}, {}
    for name, prior in priors.items():
        chosen[name], grids[name], results[name] = {}, {}, {}
        for key in task_keys(cfg.noise_deg):
            chosen[name][key], grids[name][key], results[name][key], figures[(name, key)] = _tune_and_test(
                val_tasks, test_tasks, name, prior, key, log
            )
    pairs = paired(results, task_keys(cfg.noise_deg))
    for r in results.values():
        for m in r.values():
            m.pop(PER_POSE)
    report = {
        "config": asdict(cfg),
        "model_dir": str(model_dir),
        "flow": origin,
        "test": str(test_path),
        "val": str(val_path),
        "n_test": len(test_tasks.gt),
        "n_val": len(val_tasks.gt),
        "threads": threads,
        "lam": chosen,
        "val_grid": grids,
        "results": results,
        "paired": pairs,
        "reference": test_tasks.reference(),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    _write(out, report, test_tasks, figures, log)
    return report


def _tasks(test_path: Path, val_path: Path, train_path: Path, cfg: BenchConfig) -> tuple[Tasks, Tasks]:
    """(validation tasks, test tasks): ``cfg.n_val`` / ``cfg.n`` poses evenly spaced over each split, each with its
    split's skeleton; the mean pose (completion and IK start) of the train split."""
    test, val = load_split(test_path), load_split(val_path)
    mean = mean_pose(load_split(train_path).rotations)
    gt_test = test.to_6d()[torch.from_numpy(evenly(cfg.n, len(test)))]
    gt_val = val.to_6d()[torch.from_numpy(evenly(cfg.n_val, len(val)))]
    return Tasks(gt_val, val.offsets, mean, cfg), Tasks(gt_test, test.offsets, mean, cfg)


def _tune_and_test(val_tasks: Tasks, test_tasks: Tasks, name: str, prior, key: str, log):
    """One prior on one task key: lam tuned on validation, then the test poses (all completion starts);
    (lam, {lam: validation error}, test metrics with their standard error and seconds, fitted poses)."""
    cfg = test_tasks.cfg
    t0 = time.monotonic()
    lam, scores = tune(val_tasks, prior, key)
    t1 = time.monotonic()
    metrics, poses = run_task(test_tasks, prior, key, lam, cfg.hypotheses if key == "completion" else 1)
    per_pose = metrics[PER_POSE]
    metrics["se"] = float(per_pose.std(ddof=1) / math.sqrt(len(per_pose))) if len(per_pose) > 1 else 0.0
    metrics.update(lam=lam, tune_seconds=round(t1 - t0, 1), test_seconds=round(time.monotonic() - t1, 1))
    log(
        f"{name:15s} {key:12s} lam={lam:<5g} {headline(key, metrics)}  "
        f"(tune {t1 - t0:.0f} s, test {time.monotonic() - t1:.0f} s)"
    )
    return lam, {f"{k:g}": v for k, v in scores.items()}, metrics, poses


def _write(out: Path, report: dict, test_tasks: Tasks, figures: dict, log) -> None:
    """``out``/metrics.json, fits.png and report.md; the results table also to ``log``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    log(table)
    plot(test_tasks, figures, out / "fits.png")
    (out / "report.md").write_text(report_md(report, table))
