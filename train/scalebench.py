"""Training at scale (``make train-scale``): poses/s, time per epoch and peak RSS of ``poseprior train`` on the
largest set here (CMU + Bandai, ``make data``'s ``build/smpl/cmu_bandai``, ~380k poses, non-commercial, local only),
one process and ``--nproc 2``; a table, with the machine's load average beside every row.

The data go through the ingest path (``--data TRAIN --val VAL``: ``train.ingest``), so training reads memory-mapped
``.npy`` arrays from the conversion cache (filled once, before the timed runs; its time is printed). Each row is
one real run of ``--steps`` optimiser steps (preset ``paper-bandai``: the ``paper`` architecture with Bandai's
virtual spine2 masked, batch 256) under ``/usr/bin/time -v``:

* poses/s: the run's own ``train_poses_per_s`` (global poses of the training loop per second, validation excluded);
* epoch s: ``n_train / poses/s`` (an epoch extrapolated from the steps run);
* peak RSS: ``Maximum resident set size`` of ``/usr/bin/time`` (the largest single process: with ``--nproc 2`` one
  worker; their mapped arrays are shared pages);
* arrays: the bytes of the memory-mapped arrays the run reads (axis-angle and 6D, train and val).

The last lines extrapolate to 1.4M poses (the paper's data size): epoch time at the measured rate, and the arrays'
size at the same bytes per pose.
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("build/smpl/cmu_bandai"))
    ap.add_argument("--preset", default="paper-bandai")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--nproc", type=int, nargs="+", default=[2])
    ap.add_argument("--cache", type=Path, default=Path("build/cache"))
    args = ap.parse_args(argv)
    train, val = args.data / "train.npz", args.data / "val.npz"
    for f in (train, val):
        if not f.is_file():
            raise SystemExit(f"error: {f}: not found (run `make data` first)")
    from train import ingest  # the cache, filled once (not timed with the runs)

    t0 = time.monotonic()
    sets, _ = ingest.load_takes([train], [val], cache=args.cache, progress=False)
    prep = time.monotonic() - t0
    n_train = len(sets["train"])
    arrays = sum(a.nbytes for s in sets.values() for a in (s.rotations, s.six_d))
    del sets
    rows = []
    for nproc in [None, *args.nproc]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [
                sys.executable,
                "-m",
                "train.cli",
                "train",
                "--data",
                str(train),
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
                "processes": nproc or 1,
                "poses_per_s": rate,
                "epoch_s": n_train / rate,
                "rss": rss,
                "wall_s": wall,
                "load": f"{before} -> {load()}",
            }
        )
    print(
        f"training at scale: {args.data} ({n_train:,} train poses), preset {args.preset}, {args.steps} steps of "
        f"batch 256, {os.cpu_count()} CPU cores; conversion cache filled in {prep:.0f} s (0 s when warm)"
    )
    print(f"memory-mapped arrays (axis-angle + 6D, train + val): {arrays / 1e6:.0f} MB")
    print(
        f"{'processes':>9}  {'poses/s':>8}  {'epoch s':>8}  {'peak RSS MB':>11}  {'RSS/arrays':>10}  "
        f"{'wall s':>7}  load average (1, 5, 15 min) before -> after"
    )
    for r in rows:
        print(
            f"{r['processes']:>9}  {r['poses_per_s']:>8.0f}  {r['epoch_s']:>8.0f}  {r['rss'] / 1e6:>11.0f}  "
            f"{r['rss'] / arrays:>10.2f}  {r['wall_s']:>7.0f}  {r['load']}"
        )
    best = max(r["poses_per_s"] for r in rows)
    per_pose = arrays / n_train
    print(
        f"1.4M poses (the paper's size) at {best:.0f} poses/s: {PAPER_POSES / best / 60:.0f} min an epoch; "
        f"arrays {PAPER_POSES * per_pose / 1e9:.2f} GB at {per_pose:.0f} bytes a pose (memory-mapped)"
    )


if __name__ == "__main__":
    main()
