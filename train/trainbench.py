"""Training throughput of 1 and N data-parallel processes (``make train-bench``): a table.

Each row is a real ``poseprior train`` run of ``--steps`` optimiser steps (the global batch of the preset) in a
temporary run directory: one process without torchrun, then ``--nproc N`` for every N asked. Throughput is the
run's own ``train_poses_per_s`` (mean over its epochs; global poses of the training loop per second of rank 0, validation excluded);
"wall" includes process start, data loading and validation. torchrun gives every worker OMP_NUM_THREADS=1, so
N processes use N cores; the single process uses torch's default pool (all cores). Every setup runs
``--repeats`` times, interleaved; the table shows each setup's best run (the one least slowed by other load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_one(data: Path, preset: str, steps: int, nproc: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "train.cli",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--config",
            preset,
            "--max-steps",
            str(steps),
            "--set",
            "early_stopping=false",
            "--quiet",
            *(["--nproc", str(nproc)] if nproc else []),
        ]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
        cfg = json.loads((out / "config.json").read_text())
    rate = sum(row["train_poses_per_s"] for row in rows) / len(rows)  # mean over the epochs run
    return {
        "processes": nproc or 1,
        "launcher": "torchrun" if nproc else "none",
        "batch": cfg["batch_size"],
        "steps": rows[-1]["step"],
        "poses_per_s": rate,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("build/smpl/cmu"), help="train/val splits (make data)")
    ap.add_argument("--preset", default="smpl")
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts run under torchrun")
    ap.add_argument("--repeats", type=int, default=2, help="runs per setup (interleaved); the table shows the best")
    args = ap.parse_args(argv)
    if min(args.steps, args.repeats, *args.nproc) < 1:
        ap.error("--steps, --repeats and --nproc must be at least 1")
    setups = [None, *args.nproc]
    runs = [[] for _ in setups]
    for _ in range(args.repeats):  # interleaved, so a change in the machine's other load hits every setup alike
        for i, n in enumerate(setups):
            runs[i].append(bench_one(args.data, args.preset, args.steps, n))
    results = [max(r, key=lambda x: x["poses_per_s"]) for r in runs]
    print(
        f"training throughput, preset {args.preset}, {args.data}, {os.cpu_count()} CPU cores, CPU (gloo), "
        f"best of {args.repeats} interleaved runs"
    )
    print(f"{'processes':>9}  {'launcher':>8}  {'batch':>5}  {'steps':>5}  {'poses/s':>9}  {'wall s':>7}")
    for r in results:
        print(
            f"{r['processes']:>9}  {r['launcher']:>8}  {r['batch']:>5}  {r['steps']:>5}  "
            f"{r['poses_per_s']:>9.0f}  {r['wall_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
