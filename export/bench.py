"""``poseprior bench``: latency of every graph, onnxruntime (the runtime users get) vs torch eager.

For each graph and batch size (1, 64, 4096): ``warmup`` untimed calls, then ``reps`` timed calls; the table
reports the median milliseconds per call, poses per second, and the ratio torch / onnxruntime (> 1: the runtime
is faster). onnxruntime and torch run one after the other, never at once, with the thread counts printed. The
torch side of the gradient graphs is torch autograd (``log_prob_and_grad``, ``latent_vjp_autograd``); a second
table gives what a gradient costs: each gradient graph's time over ``log_prob``'s (onnxruntime, timed
alternately in one run: ``cost_ratios``).
A model exported before ``latent_vjp`` existed gets no ``latent_vjp`` rows (said under the table).
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
from train.loading import torch_flow

from .graphs import latent_vjp_autograd, log_prob_and_grad

BATCHES = (1, 64, 4096)
GRADIENT_GRAPHS = ("log_prob_grad", "latent_vjp")


def gemm_chain(flow: torch.nn.Module) -> bytes:
    """An ONNX graph of the flow's matrix products alone: every hypernet Linear as one Gemm (same weights, same
    order), each coupling's output sliced to the next one's input width, no other op. Its batch-1 latency is the
    floor for any graph of this architecture in onnxruntime here (the weights must be streamed once per call)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    linears = [m for layer in flow.layers for m in layer.net if isinstance(m, torch.nn.Linear)]
    const = {"zero": [0], "width": [linears[0].in_features], "axis": [1]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in const.items()]
    nodes, cur, width = [], "x", linears[0].in_features
    for i, lin in enumerate(linears):
        inits += [
            numpy_helper.from_array(lin.weight.detach().float().numpy(), f"w{i}"),
            numpy_helper.from_array(lin.bias.detach().float().numpy(), f"b{i}"),
        ]
        if width != lin.in_features:  # a coupling's output (2 halves) -> the next hypernet's input (1 half)
            nodes.append(helper.make_node("Slice", [cur, "zero", "width", "axis"], [f"s{i}"]))
            cur = f"s{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"h{i}"], transB=1))
        cur, width = f"h{i}", lin.out_features
    graph = helper.make_graph(
        nodes,
        "gemm_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", linears[0].in_features])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def time_calls(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cost_ratios(fns: dict[str, Callable[[], object]], rounds: int, block: int, warmup: int) -> dict[str, float]:
    """Each function's time over ``fns["log_prob"]``'s, measured alternately: ``rounds`` rounds, each running every
    function in turn for ``warmup`` untimed then ``block`` timed calls (the median of the block); the result is the
    median over rounds of the per-round ratio. Timing the graphs once each, one after the other, lets the machine's
    drift between the two measurements into the ratio; alternating without the warm-up calls measures cold caches
    instead (each session holds its own copy of the weights, which another graph's run evicts). What the simpler
    schemes gave: ``reports/design-measurements.md``."""
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        med = {k: statistics.median(time_calls(fn, block, warmup)) for k, fn in fns.items()}
        for k in fns:
            per_round[k].append(med[k] / med["log_prob"])
    return {k: statistics.median(v) for k, v in per_round.items() if k != "log_prob"}


def run_bench(
    model: str | Path | None = None, reps: int = 20, warmup: int = 5, threads: int | None = None, batches=BATCHES
) -> dict:
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    prior = PosePrior.load(model, intra_op_num_threads=threads)
    flow, origin = torch_flow(prior)
    flow.requires_grad_(False)
    has_vjp = (prior.path / "latent_vjp.onnx").is_file()
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        z = rng.standard_normal((batch, prior.dim)).astype(np.float32)
        x = prior.sample(z=z)
        g = rng.standard_normal(x.shape).astype(np.float32)
        zt, xt, gt = torch.from_numpy(z), torch.from_numpy(x), torch.from_numpy(g)
        cases = {
            "log_prob": (lambda: prior.log_prob(x), lambda: flow.log_prob(xt)),
            "sample": (lambda: prior.sample(z=z, orthonormalize=False), lambda: flow.forward(zt)),
            "latent_forward": (lambda: prior.latent_forward(z), lambda: flow.latent_forward(zt)),
            "log_prob_grad": (lambda: prior.log_prob_and_grad(x), lambda: log_prob_and_grad(flow.log_prob, xt)),
        }
        if has_vjp:
            cases["latent_vjp"] = (lambda: prior.latent_vjp(z, g), lambda: latent_vjp_autograd(flow, zt, gt))
        for graph, (ort_fn, torch_fn) in cases.items():
            n = max(reps, 5) if batch < 4096 else reps
            with torch.no_grad():
                t_ort = statistics.median(time_calls(ort_fn, n, warmup))
                t_torch = statistics.median(time_calls(torch_fn, n, warmup))
            rows.append(
                {
                    "graph": graph,
                    "batch": batch,
                    "ort_ms": 1e3 * t_ort,
                    "torch_ms": 1e3 * t_torch,
                    "ort_poses_per_s": batch / t_ort,
                    "torch_poses_per_s": batch / t_torch,
                    "speedup": t_torch / t_ort,
                }
            )
        block, warm = (20, warmup) if batch < 4096 else (3, 1)
        ratios = cost_ratios(
            {g: cases[g][0] for g in ("log_prob", *GRADIENT_GRAPHS) if g in cases},
            rounds=max(reps, 5) // 2,
            block=block,
            warmup=warm,
        )
        for r in rows:
            if r["batch"] == batch and r["graph"] in ratios:
                r["over_log_prob"] = ratios[r["graph"]]
    # the floor at batch 1: the same matrix products with nothing else, in onnxruntime with the same settings
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    chain = ort.InferenceSession(gemm_chain(flow), so, providers=["CPUExecutionProvider"])
    x1 = rng.standard_normal((1, flow.layers[0].net[0].in_features)).astype(np.float32)
    floor_ms = 1e3 * statistics.median(time_calls(lambda: chain.run(None, {"x": x1}), max(reps, 5) * 10, warmup))
    n_gemm = sum(isinstance(m, torch.nn.Linear) for layer in flow.layers for m in layer.net)
    return {
        "model": str(prior.path),
        "providers": prior.providers,
        "torch": origin,
        "threads": threads,
        "latent_vjp": has_vjp,
        "reps": reps,
        "warmup": warmup,
        "torch_version": torch.__version__,
        "rows": rows,
        "gemm_floor": {"gemms": n_gemm, "batch": 1, "ort_ms": floor_ms, "reps": max(reps, 5) * 10},
    }


def format_table(result: dict) -> str:
    lines = [
        f"model {result['model']}  (torch eager: {result['torch']})",
        f"onnxruntime {result['providers'][0]} intra_op_num_threads={result['threads']}; torch "
        f"{result['torch_version']} set_num_threads({result['threads']}); median of {result['reps']} calls "
        f"after {result['warmup']} warm-up calls",
        "",
        f"{'graph':15s} {'batch':>5s} {'ORT ms':>9s} {'torch ms':>9s} {'ORT poses/s':>12s} "
        f"{'torch poses/s':>14s} {'torch/ORT':>9s}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['graph']:15s} {r['batch']:5d} {r['ort_ms']:9.3f} {r['torch_ms']:9.3f} "
            f"{r['ort_poses_per_s']:12,.0f} {r['torch_poses_per_s']:14,.0f} {r['speedup']:8.2f}x"
        )
    if not result.get("latent_vjp", True):
        lines.append("(no latent_vjp rows: this model was exported before the latent_vjp graph existed)")
    lines += [
        "",
        "gradient cost: each gradient graph's onnxruntime time over log_prob's (timed alternately, "
        f"{max(result['reps'], 5) // 2} rounds: cost_ratios), and torch autograd's time over onnxruntime's",
        f"{'graph':15s} {'batch':>5s} {'/ log_prob':>11s} {'torch/ORT':>10s}",
    ]
    for r in result["rows"]:
        if r["graph"] in GRADIENT_GRAPHS:
            lines.append(f"{r['graph']:15s} {r['batch']:5d} {r['over_log_prob']:10.2f}x {r['speedup']:9.2f}x")
    f = result.get("gemm_floor")
    if f:
        t1 = next(r["torch_ms"] for r in result["rows"] if r["graph"] == "log_prob" and r["batch"] == 1)
        lines += [
            "",
            f"floor: the flow's {f['gemms']} Gemm nodes alone (same weights, nothing else) in onnxruntime "
            f"at batch 1: {f['ort_ms']:.3f} ms (median of {f['reps']}), so no onnxruntime graph of this "
            f"architecture can beat torch eager's log_prob by more than {t1 / f['ort_ms']:.1f}x here",
        ]
    return "\n".join(lines)


def main(model=None, out: Path | None = None, **kw) -> dict:
    result = run_bench(model, **kw)
    print(format_table(result))
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
