"""``poseprior bench``: latency of every graph, onnxruntime (the runtime users get) vs torch eager.

For each graph and batch size (1, 64, 4096): ``warmup`` untimed calls, then ``reps`` timed calls; the table
reports the median milliseconds per call, poses per second, and the ratio torch / onnxruntime (> 1: the runtime
is faster). onnxruntime and torch run one after the other, never at once, with the thread counts printed.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from runtime import PosePrior
from train.config import Config
from train.trainer import build_flow, load_checkpoint

from .graphs import log_prob_and_grad

BATCHES = (1, 64, 4096)


def torch_flow(prior: PosePrior, runs_dir: Path = Path("runs")) -> tuple[torch.nn.Module, str]:
    """The model's torch flow: from its .pt2, else its training checkpoint, else the same architecture with
    fresh weights (timing is the same; say so)."""
    if (prior.path / "pt2" / "log_prob.pt2").is_file():
        from .torch_export import load_flow
        return load_flow(prior.path), "weights from the model's .pt2"
    training = prior.manifest["training"]
    ckpt = runs_dir / training["run"] / training["checkpoint"]
    if ckpt.is_file():
        return load_checkpoint(ckpt)[0], f"weights from {ckpt}"
    return build_flow(Config.from_dict(training["config"])).eval(), "same architecture, untrained weights"


def time_calls(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_bench(model: str | Path | None = None, reps: int = 20, warmup: int = 5, threads: int | None = None,
              batches=BATCHES) -> dict:
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    prior = PosePrior.load(model, intra_op_num_threads=threads)
    flow, origin = torch_flow(prior)
    flow.requires_grad_(False)
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        z = rng.standard_normal((batch, prior.dim)).astype(np.float32)
        x = prior.sample(z=z)
        zt, xt = torch.from_numpy(z), torch.from_numpy(x)
        cases = {
            "log_prob": (lambda: prior.log_prob(x), lambda: flow.log_prob(xt)),
            "sample": (lambda: prior.sample(z=z, orthonormalize=False), lambda: flow.forward(zt)),
            "latent_forward": (lambda: prior.latent_forward(z), lambda: flow.latent_forward(zt)),
            "log_prob_grad": (lambda: prior.log_prob_and_grad(x), lambda: log_prob_and_grad(flow.log_prob, xt)),
        }
        for graph, (ort_fn, torch_fn) in cases.items():
            n = max(reps, 5) if batch < 4096 else reps
            with torch.no_grad():
                t_ort = statistics.median(time_calls(ort_fn, n, warmup))
                t_torch = statistics.median(time_calls(torch_fn, n, warmup))
            rows.append({"graph": graph, "batch": batch, "ort_ms": 1e3 * t_ort, "torch_ms": 1e3 * t_torch,
                         "ort_poses_per_s": batch / t_ort, "torch_poses_per_s": batch / t_torch,
                         "speedup": t_torch / t_ort})
    return {"model": str(prior.path), "providers": prior.providers, "torch": origin, "threads": threads,
            "reps": reps, "warmup": warmup, "torch_version": torch.__version__, "rows": rows}


def format_table(result: dict) -> str:
    lines = [f"model {result['model']}  (torch eager: {result['torch']})",
             f"onnxruntime {result['providers'][0]} intra_op_num_threads={result['threads']}; torch "
             f"{result['torch_version']} set_num_threads({result['threads']}); median of {result['reps']} calls "
             f"after {result['warmup']} warm-up calls",
             "",
             f"{'graph':15s} {'batch':>5s} {'ORT ms':>9s} {'torch ms':>9s} {'ORT poses/s':>12s} "
             f"{'torch poses/s':>14s} {'torch/ORT':>9s}"]
    for r in result["rows"]:
        lines.append(f"{r['graph']:15s} {r['batch']:5d} {r['ort_ms']:9.3f} {r['torch_ms']:9.3f} "
                     f"{r['ort_poses_per_s']:12,.0f} {r['torch_poses_per_s']:14,.0f} {r['speedup']:8.2f}x")
    return "\n".join(lines)


def main(model=None, out: Path | None = None, **kw) -> dict:
    result = run_bench(model, **kw)
    print(format_table(result))
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
