"""Two real ``poseprior train --config tiny`` processes on one ``--out``, started ``offset`` seconds apart: exactly
one may run (rc 0), the other is refused (rc 2, one line), and the run directory is consistent: ``config.json``,
``last.pt``, ``best.pt`` and ``summary.json`` all come from the run that ran (its seed, its config sha256).

    python tests/concurrent_runs.py --data ../shared/data/cmu_pose --repeats 20      # make concurrency-check

Each repeat draws the second start's delay uniformly from [0, --max-offset] s (seeded) and prints one line; the
exit status is 1 if any repeat broke the rule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _start(data: Path, out: Path, seed: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "runtime.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--config",
        "tiny",
        "--set",
        f"seed={seed}",
        "--set",
        "max_val=200",
        "--max-steps",
        "3",
        "--quiet",
    ]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)


def one_round(data: Path, root: Path, offset: float) -> dict:
    """Run the two trainings (seed 1 first, seed 2 ``offset`` s later); returns what happened and the problems."""
    import torch

    out = root / "run"
    a = _start(data, out, 1, root / "a.err")
    time.sleep(offset)
    b = _start(data, out, 2, root / "b.err")
    rcs = (a.wait(), b.wait())
    errs = [(root / f"{k}.err").read_text() for k in "ab"]
    problems = []
    if sorted(rcs) != [0, 2]:
        problems.append(f"return codes {rcs}, expected one 0 and one 2")
    winner = 1 if rcs[0] == 0 else 2
    loser_err = errs[1 if winner == 1 else 0].strip().splitlines()
    # refused while the other runs ("in use by"), or after it finished ("not empty")
    if rcs.count(2) == 1 and (len(loser_err) != 1 or not ("in use by" in loser_err[0] or "not empty" in loser_err[0])):
        problems.append(f"the refused run said {loser_err!r}, expected one 'in use by' / 'not empty' line")
    if any("Traceback" in e for e in errs):
        problems.append("a traceback")
    if not problems:
        cfg = json.loads((out / "config.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        seeds = {"config.json": cfg["seed"], "last.pt": last["config"]["seed"], "best.pt": best["config"]["seed"]}
        if set(seeds.values()) != {winner}:
            problems.append(f"mixed run: seeds {seeds}, the run that ran had seed {winner}")
        shas = {summary["config_sha256"], last["config_sha256"], best["config_sha256"]}
        if len(shas) != 1:
            problems.append(f"config sha256 differ between summary.json, last.pt, best.pt: {shas}")
        if sorted(p.name for p in out.iterdir()) != [
            "best.pt",
            "config.json",
            "last.pt",
            "metrics.jsonl",
            "summary.json",
        ]:
            problems.append(f"run directory holds {sorted(p.name for p in out.iterdir())}")
    if list(root.glob(".run.lock")):
        problems.append("lock file left behind")
    how = "in use" if any("in use by" in e for e in errs) else "not empty"
    return {"offset": offset, "rcs": rcs, "winner": winner, "refused": how, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cmu_pose")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--max-offset", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    failed = 0
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="poseprior-lock-") as tmp:
            r = one_round(args.data, Path(tmp), rng.uniform(0.0, args.max_offset))
        failed += bool(r["problems"])
        print(
            f"{i + 1:2d}: offset {r['offset']:.2f} s, rc {r['rcs']}, ran: seed {r['winner']}, other refused: {r['refused']}"
            + (f"  FAILED: {'; '.join(r['problems'])}" if r["problems"] else "  ok"),
            flush=True,
        )
    print(f"{args.repeats - failed} of {args.repeats} repeats: exactly one run, consistent run directory")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
