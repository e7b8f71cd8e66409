"""Fitting throughput of the torch-free runtime: ``runtime.fit.denoise`` on real test poses (a ``make bench`` row).

Problem (issue 12): ``n`` poses of the test split (evenly spaced), each joint rotated by R' = R exp([eps]x) with
eps ~ N(0, (noise / sqrt 3)^2 I_3) (numpy, seeded): an RMS rotation angle of ``noise`` degrees (mean angle about
0.92 noise). Denoised with ``runtime.fit.denoise`` at ``weight = 3 / (4 sigma^2)``, sigma = noise / sqrt 3 in
radians (the MAP weight at lam = 1: each 6D coordinate's noise variance is 2 sigma^2 / 3), all poses in one call. Reported: poses/s (wall clock of the call, graph
calls included), the process's CPU seconds (on a shared, loaded machine the wall clock measures the neighbours;
with ``--threads 1`` CPU seconds are the work itself), graph calls, and the mean geodesic error (deg, 21 joints)
to the clean poses before and after. Torch is not imported here.

    python -m runtime.tools.fitbench_rt MODEL_DIR [MODEL_DIR ...] --data build/smpl/cmu/test.npz

The poses must be in the model's convention: the converted test split of ``make data`` (an AMASS-style npz,
SMPL ``body_pose``) for an SMPL prior; a shared-format npz (``rotations``) for a model trained on one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from runtime import PosePrior, rotations
from runtime import fit as rfit


def noisy_poses(aa: np.ndarray, noise_deg: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean orthonormal 6D (N, 21, 6), noisy 6D) from axis-angle poses (N, 21, 3); float32."""
    R = rotations.axis_angle_to_matrix(aa.astype(np.float64))
    eps = np.random.default_rng(seed).standard_normal(aa.shape) * math.radians(noise_deg) / math.sqrt(3.0)
    noisy = R @ rotations.axis_angle_to_matrix(eps)
    return rotations.matrix_to_6d(R).astype(np.float32), rotations.matrix_to_6d(noisy).astype(np.float32)


def body_poses(path: Path) -> np.ndarray:
    """(N, 21, 3) axis-angle body poses of an AMASS-style npz (``poses``: SMPL joints 1..21) or a shared-format
    one (``rotations``)."""
    d = np.load(path)
    if "poses" in d.files:
        return d["poses"][:, 3:66].reshape(-1, 21, 3)
    return d["rotations"]


def geodesic(x: np.ndarray, clean: np.ndarray) -> float:
    return float(
        rotations.geodesic_deg(
            rotations.gram_schmidt(x.astype(np.float64)), rotations.gram_schmidt(clean.astype(np.float64))
        ).mean()
    )


def denoise_rows(
    model_dir: Path | None,
    data: Path,
    n: int = 1000,
    noise_deg: float = 10.0,
    seed: int = 0,
    threads: int | None = None,
    settings=None,
) -> list[dict]:
    """One row per (space, settings): the model's ambient space, and its latent space where it has latent_vjp."""
    prior = PosePrior.load(model_dir, providers=["CPUExecutionProvider"], intra_op_num_threads=threads)
    aa = body_poses(data)
    idx = np.unique(np.linspace(0, len(aa) - 1, min(n, len(aa))).round().astype(int))
    clean, noisy = noisy_poses(aa[idx], noise_deg, seed)
    sigma = math.radians(noise_deg) / math.sqrt(3.0)
    weight = 3.0 / (4.0 * sigma**2)
    settings = settings or [("ambient", {}), ("ambient", {"iters": 30}), ("latent", {})]
    rows = []
    before = geodesic(noisy, clean)
    rfit.denoise(prior, noisy[:8], weight, iters=2)  # warm-up: sessions, allocations
    for space, opts in settings:
        if space == "latent" and not rfit.has_latent_space(prior):
            continue
        cpu = time.process_time()
        r = rfit.denoise(prior, noisy, weight, space=space, **opts)
        cpu = time.process_time() - cpu
        after = geodesic(r.poses, clean)
        rows.append(
            {
                "model": str(prior.path),
                "space": space,
                "iters": opts.get("iters", rfit.DENOISE_ITERS[space]),
                "poses": len(noisy),
                "seconds": r.seconds,
                "poses_per_s": len(noisy) / r.seconds,
                "cpu_seconds": cpu,
                "poses_per_cpu_s": len(noisy) / cpu,
                "mean_iterations": float(r.iterations.mean()),
                "graph_calls": r.calls,
                "noisy_deg": before,
                "denoised_deg": after,
                "reduction": 1.0 - after / before,
            }
        )
    return rows


def table(rows: list[dict], noise_deg: float) -> str:
    head = (
        f"denoise {rows[0]['poses'] if rows else 0} test poses, {noise_deg:g} deg RMS noise (runtime.fit.denoise, "
        f"lam = 1, MAP weight)\n"
        f"{'model':24s} {'space':8s} {'iters':>5s} {'poses/s':>8s} {'s':>7s} {'CPU s':>7s} {'poses/CPU-s':>11s} "
        f"{'calls':>6s} "
        f"{'noisy deg':>9s} {'fit deg':>8s} {'less':>6s}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{Path(r['model']).name:24s} {r['space']:8s} {r['iters']:5d} {r['poses_per_s']:8.0f} "
            f"{r['seconds']:7.2f} {r['cpu_seconds']:7.2f} {r['poses_per_cpu_s']:11.0f} {r['graph_calls']:6d} {r['noisy_deg']:9.2f} {r['denoised_deg']:8.2f} "
            f"{100 * r['reduction']:5.1f}%"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", type=Path, help="model directories (default: the shipped model)")
    ap.add_argument(
        "--data",
        type=Path,
        default=Path("build/smpl/cmu/test.npz"),
        help="test poses in the model's convention (default: the converted split of `make data`)",
    )
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=10.0, help="RMS rotation angle per joint, degrees")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    a = ap.parse_args(argv)
    if a.n < 1 or not a.noise > 0:
        print("error: --n must be >= 1 and --noise > 0", file=sys.stderr)
        return 2
    if not a.data.is_file():
        print(f"error: --data {a.data}: no such file", file=sys.stderr)
        return 2
    rows = []
    try:
        for m in a.models or [None]:
            rows += denoise_rows(m, a.data, a.n, a.noise, threads=a.threads)
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows, a.noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
