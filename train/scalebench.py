"""Training at scale (``make train-scale``): poses/s, time per epoch and peak RSS of ``poseprior train`` on the
largest set here (CMU + Bandai, ``make data``'s ``build/smpl/cmu_bandai``, 379,059 train poses, non-commercial,
local only), one process and ``--nproc 2``, and on its first N poses (``--subsets``) to show how peak RSS grows with
the number of poses; a table, with the machine's load average beside every row.

The data go through the ingest path (``--data TRAIN --val VAL``: ``train.ingest``), so training reads memory-mapped
``.npy`` arrays from the conversion cache (filled once, before the timed runs; its time is printed). Each row is
one real run of ``--steps`` optimiser steps (preset ``paper-bandai``: the ``paper`` architecture with Bandai's
virtual spine2 masked, batch 256) under ``/usr/bin/time -v``:

* poses/s: the run's own ``train_poses_per_s`` (global poses of the training loop per second, validation excluded);
* epoch s: ``n / poses/s`` (an epoch extrapolated from the steps run);
* peak RSS: ``Maximum resident set size`` of ``/usr/bin/time`` (the largest single process: with ``--nproc 2`` one
  worker; their mapped arrays are shared pages). The pages of a memory-mapped array that a process has read count
  in its RSS;
* arrays: the bytes of the memory-mapped arrays the run reads (axis-angle and 6D, train and val);
* ``a + b n``: a least-squares line through the one-process rows' peak RSS: ``a`` is the process without data
  (interpreter, torch, model, optimiser), ``b`` the bytes each pose adds, to compare with the arrays' bytes a pose;
  ``(RSS - a) / arrays`` is what the data cost over the arrays themselves.

The last lines extrapolate to 1.4M poses (the paper's data size): epoch time at the measured rate, the arrays'
size at the same bytes per pose, and peak RSS by the line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAPER_POSES = 1_400_000


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return wall, rss_kb * 1024, r.stdout


def subset(train: Path, n: int, folder: Path) -> Path:
    """The first ``n`` poses of converted AMASS-style ``train`` as their own file (``folder/train-N.npz``)."""
    path = folder / f"train-{n}.npz"
    if not path.is_file():
        d = dict(np.load(train))
        total = len(d["poses"])
        cut = {k: v[:n] if v.ndim and len(v) == total else v for k, v in d.items()}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **cut)
        os.replace(tmp, path)
    return path


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least squares ``peak RSS = a + b n`` over the one-process rows: (a bytes, b bytes a pose)."""
    n = np.array([r["n"] for r in rows], float)
    rss = np.array([r["rss"] for r in rows], float)
    b, a = np.polyfit(n, rss, 1)
    return float(a), float(b)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("build/smpl/cmu_bandai"))
    ap.add_argument("--preset", default="paper-bandai")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument(
        "--subsets",
        type=int,
        nargs="*",
        default=[1000, 100_000, 200_000, 300_000],
        help="also train (one process) on the first N poses of the training set",
    )
    ap.add_argument("--nproc", type=int, nargs="*", default=[2])
    ap.add_argument("--cache", type=Path, default=Path("build/cache"))
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    train, val = args.data / "train.npz", args.data / "val.npz"
    for f in (train, val):
        if not f.is_file():
            raise SystemExit(f"error: {f}: not found (run `make data` first)")
    from train import ingest  # the cache, filled once (not timed with the runs)

    folder = args.cache / "scale"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sets, _ = ingest.load_takes([train], [val], cache=args.cache, progress=False)
    n_train = len(sets["train"])
    sizes = [n for n in sorted(set(args.subsets)) if 0 < n < n_train]
    files = {n: subset(train, n, folder) for n in sizes} | {n_train: train}
    for n in sizes:
        ingest.load_takes([files[n]], [val], cache=args.cache, progress=False)
    prep = time.monotonic() - t0
    per_pose = sum(a.nbytes for a in (sets["train"].rotations, sets["train"].six_d)) / n_train
    val_bytes = sum(a.nbytes for a in (sets["val"].rotations, sets["val"].six_d))
    del sets
    rows = []
    for n, nproc in [*((n, None) for n in files), *((n_train, p) for p in args.nproc)]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [
                sys.executable,
                "-m",
                "train.cli",
                "train",
                "--data",
                str(files[n]),
                "--val",
                str(val),
                "--out",
                str(out),
                "--config",
                args.preset,
                "--max-steps",
                str(args.steps),
                "--set",
                "early_stopping=false",
                "--quiet",
                "--cache",
                str(args.cache),
                *(["--nproc", str(nproc)] if nproc else []),
            ]
            before = load()
            wall, rss, _ = run(cmd)
            metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        rate = metrics[-1]["train_poses_per_s"]
        rows.append(
            {
                "n": n,
                "processes": nproc or 1,
                "poses_per_s": rate,
                "epoch_s": n / rate,
                "rss": rss,
                "arrays": n * per_pose + val_bytes,
                "wall_s": wall,
                "load": f"{before} -> {load()}",
            }
        )
        print(f"  {n:,} poses, {nproc or 1} process(es): {rate:.0f} poses/s, peak RSS {rss / 1e6:.0f} MB", flush=True)
    a, b = fit([r for r in rows if r["processes"] == 1])
    print(
        f"training at scale: {args.data} ({n_train:,} train poses), preset {args.preset}, {args.steps} steps of "
        f"batch 256, {os.cpu_count()} CPU cores; conversion cache filled in {prep:.0f} s (0 s when warm)"
    )
    print(
        f"memory-mapped arrays (axis-angle + 6D): {per_pose:.0f} bytes a training pose, "
        f"+ {val_bytes / 1e6:.1f} MB validation"
    )
    print(
        f"{'poses':>9}  {'processes':>9}  {'poses/s':>8}  {'epoch s':>8}  {'arrays MB':>9}  {'peak RSS MB':>11}  "
        f"{'RSS/arrays':>10}  {'(RSS-a)/arrays':>14}  {'wall s':>7}  load average (1, 5, 15 min) before -> after"
    )
    for r in rows:
        # ratios to arrays under 1 % of the process say nothing (a's error alone is larger): shown as "-"
        small = r["arrays"] < 0.01 * r["rss"]
        ratio = "-" if small else f"{r['rss'] / r['arrays']:.2f}"
        over = "-" if small else f"{(r['rss'] - a) / r['arrays']:.2f}"
        print(
            f"{r['n']:>9,}  {r['processes']:>9}  {r['poses_per_s']:>8.0f}  {r['epoch_s']:>8.0f}  "
            f"{r['arrays'] / 1e6:>9.0f}  {r['rss'] / 1e6:>11.0f}  {ratio:>10}  {over:>14}  {r['wall_s']:>7.0f}  "
            f"{r['load']}"
        )
    print(
        f"peak RSS (one process) = a + b n, least squares: a = {a / 1e6:.0f} MB (the process at 0 poses: "
        f"interpreter, torch, model, optimiser, validation), b = {b:.0f} bytes a pose = {b / per_pose:.2f} x the "
        f"{per_pose:.0f} bytes a pose of the arrays"
    )
    best = max(r["poses_per_s"] for r in rows if r["n"] == n_train)
    print(
        f"1.4M poses (the paper's size) at {best:.0f} poses/s: {PAPER_POSES / best / 60:.0f} min an epoch; "
        f"arrays {PAPER_POSES * per_pose / 1e9:.2f} GB at {per_pose:.0f} bytes a pose (memory-mapped), "
        f"peak RSS about {(a + b * PAPER_POSES) / 1e9:.2f} GB by the fit"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "a": a, "b": b, "bytes_per_pose": per_pose}, indent=1) + "\n")


if __name__ == "__main__":
    main()
