"""``make bench-memory``: peak memory of every graph on a large batch, and chunked == one call.

For each case (a ``PosePrior`` method and a representation) a fresh interpreter runs it on ``--n`` poses (200,000)
under ``/usr/bin/time -v``; the table reports its peak RSS ("Maximum resident set size": the interpreter, numpy,
onnxruntime, the model, the inputs and outputs, and the largest chunk) and wall seconds. The inputs are the
model's own samples (``sample(n, seed=0)``, whose first rows do not depend on n) in the case's representation.
Then this process runs the same method unchunked (one graph run) on the first ``--check`` poses (10,000) and
compares: "equal" means every output is bit-identical to the first rows of the chunked run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from runtime import rotations
from runtime.prior import DEFAULT_MAX_CHUNK_BYTES, PosePrior

CASES = {  # name -> (method, rep)
    "log_prob": ("log_prob", "6d"),
    "log_prob axis_angle": ("log_prob", "axis_angle"),
    "log_prob_and_grad": ("log_prob_and_grad", "6d"),
    "log_prob_and_grad matrix": ("log_prob_and_grad", "matrix"),
    "log_prob_and_grad axis_angle": ("log_prob_and_grad", "axis_angle"),
    "latent_forward": ("latent_forward", "z"),
    "sample": ("sample", "n"),
}
GRAPH_OF = {
    "log_prob": "log_prob",
    "log_prob_and_grad": "log_prob_grad",
    "latent_forward": "latent_forward",
    "sample": "sample",
}


def inputs(prior: PosePrior, rep: str, n: int):
    """n inputs in ``rep``; the first k rows are the same for every n."""
    if rep == "n":
        return n
    if rep == "z":
        return np.random.default_rng(0).standard_normal((n, prior.dim), dtype=np.float32)
    x = prior.sample(n, seed=0)
    if rep == "6d":
        return x
    out = np.empty((n, prior.num_joints) + ((3, 3) if rep == "matrix" else (3,)), np.float64)
    for s in range(0, n, 8192):  # converted in blocks, so the input's own conversion stays small
        R = rotations.sixd_to_matrix(x[s : s + 8192].astype(np.float64))
        out[s : s + 8192] = R if rep == "matrix" else rotations.matrix_to_axis_angle(R)
    return out


def run(prior: PosePrior, case: str, n: int) -> list[np.ndarray]:
    method, rep = CASES[case]
    x = inputs(prior, rep, n)
    if rep == "n":
        out = prior.sample(x, seed=0)
    elif rep == "z":
        out = prior.latent_forward(x)
    else:
        out = getattr(prior, method)(x, rep=rep)
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def child(model: str | None, case: str, n: int, check: int, out: str) -> None:
    prior = PosePrior.load(model)
    t0 = time.monotonic()
    results = run(prior, case, n)
    seconds = time.monotonic() - t0
    np.savez(
        out,
        seconds=seconds,
        chunk_rows=prior.chunk_rows(
            GRAPH_OF[CASES[case][0]], CASES[case][1] if CASES[case][1] in ("6d", "matrix", "axis_angle") else "6d"
        ),
        **{f"out{i}": r[:check] for i, r in enumerate(results)},
    )


def measure(model: str | None, case: str, n: int, check: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.npz")
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "runtime.tools.membench",
            "--child",
            case,
            "--n",
            str(n),
            "--check",
            str(check),
            "--out",
            out,
        ] + (["--model", model] if model else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{case}: the benchmark child failed:\n{proc.stderr[-3000:]}")
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
        with np.load(out) as f:
            chunked = [f[f"out{i}"] for i in range(len([k for k in f.files if k.startswith("out")]))]
            seconds, rows = float(f["seconds"]), int(f["chunk_rows"])
    whole = PosePrior.load(model, max_chunk_bytes=1 << 62)  # one graph run for the whole check batch
    reference = run(whole, case, check)
    equal = len(reference) == len(chunked) and all(np.array_equal(a, b) for a, b in zip(reference, chunked))
    return {"case": case, "n": n, "rows": rows, "rss_mb": rss_kb / 1024, "seconds": seconds, "equal": equal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--n", type=int, default=200_000, help="poses per case")
    ap.add_argument("--check", type=int, default=10_000, help="poses compared with one unchunked call")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.model, args.child, args.n, args.check, args.out)
        return 0
    prior = PosePrior.load(args.model)
    print(
        f"model {prior.path}, providers {prior.providers}, max_chunk_bytes {DEFAULT_MAX_CHUNK_BYTES >> 20} MiB "
        f"(default); peak RSS of a fresh interpreter running each case on {args.n:,} inputs"
    )
    print(
        f"{'case':30s} {'n':>8s} {'chunk rows':>10s} {'peak RSS MB':>11s} {'seconds':>8s}  "
        f"equal to one call on {args.check:,}"
    )
    worst = 0.0
    ok = True
    for case in args.cases:
        r = measure(args.model, case, args.n, args.check)
        worst, ok = max(worst, r["rss_mb"]), ok and r["equal"]
        print(
            f"{r['case']:30s} {r['n']:8d} {r['rows']:10d} {r['rss_mb']:11.0f} {r['seconds']:8.1f}  "
            f"{'yes' if r['equal'] else 'NO'}",
            flush=True,
        )
    print(f"largest peak {worst:.0f} MB; all equal: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
