"""``make demo``: the shipped default prior at work, with numpy + onnxruntime only.

It samples poses, scores real poses of a subject the model never saw (``--data``: ``make demo`` passes CMU subject
03 from ``../shared/data``, converted to SMPL ``body_pose`` by ``runtime.convert`` when the model is an SMPL prior), real
SMPL poses (``--smpl``: ``make demo`` passes the AMASS sample of ``../shared/data/smpl_reference``) and corrupted copies of them,
prints a table and writes a figure (matplotlib, if installed). "Plausible" means above the threshold recorded in
the model's manifest (``plausibility.tau``: the 1st percentile of log p on unseen, varied CMU takes), or, for a
model without one, the 1st percentile of the real unseen subject.

    python -m runtime.demo [--model DIR] [--data TEST.npz] [--smpl AMASS.npz] [--out demo.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from . import PosePrior, rotations
from .atomic import atomic_write
from .glitch import corrupt, knees_backwards, random_rotations
from .kinematics import forward_kinematics
from .takes import recorded_threshold


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: the one inside the package)")
    ap.add_argument("--data", type=Path, default=None, help="real poses (shared npz format; default: none)")
    ap.add_argument("--smpl", type=Path, default=None, help="real SMPL poses (an AMASS npz; default: none)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("demo.png"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    prior = PosePrior.load(args.model)
    print(f"loaded {prior.path} in {1e3 * (time.perf_counter() - t0):.0f} ms; providers {prior.providers}")
    train = prior.manifest.get("training", {})
    rng = np.random.default_rng(0)
    sets: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    samples = prior.sample(args.n, seed=0)
    sets["samples (orthonormalised)"] = prior.log_prob(samples)
    sets["samples (raw)"] = prior.log_prob(prior.sample(args.n, seed=0, orthonormalize=False))
    real = None
    smpl_prior = prior.manifest.get("skeleton", {}).get("name") == "smpl"
    if args.data is not None and args.data.is_file():
        aa, offsets = _real_poses(args.data, prior if smpl_prior else None)
        real = aa[np.sort(rng.choice(len(aa), min(args.n, len(aa)), replace=False))]
        sets["real, unseen subject"] = prior.log_prob(real, rep="axis_angle")
        sets["real + 1 joint off by 30 deg"] = prior.log_prob(corrupt(real, rng, 1, 30), rep="axis_angle")
        sets["real + 3 joints off by 60 deg"] = prior.log_prob(corrupt(real, rng, 3, 60), rep="axis_angle")
        sets["real, knees bent backwards"] = prior.log_prob(knees_backwards(real), rep="axis_angle")
    else:
        offsets = None
        print(
            f"(no real poses {'given (--data)' if args.data is None else f'at {args.data}'}: scoring samples and "
            f"random rotations only)"
        )
    if args.smpl is not None and args.smpl.is_file():
        from .formats import read_amass

        body = read_amass(args.smpl)["poses"][:, 3:66].reshape(-1, 21, 3)
        sets["real SMPL poses (AMASS sample)"] = prior.log_prob(body, rep="axis_angle")
    else:
        print(
            f"(no real SMPL poses {'given (--smpl)' if args.smpl is None else f'at {args.smpl}'}: the AMASS sample "
            f"is evaluation data, not on every machine; its row is skipped)"
        )
    sets["random rotations"] = prior.log_prob(random_rotations((args.n, 21, 3), rng), rep="axis_angle")
    seconds = time.perf_counter() - t0

    recorded = recorded_threshold(prior)
    if recorded is not None:
        threshold, definition = recorded
        how = f"the threshold in the model's manifest ({definition})"
    else:
        ref = sets.get("real, unseen subject", sets["samples (orthonormalised)"])
        threshold = float(np.percentile(ref, 1))
        how = f"the 1st percentile of the {'real' if real is not None else 'sampled'} poses"
    data_names = ", ".join(train.get("data_sha256", {})) or "unknown data"
    print(
        f"\nlog p under the prior ({prior.dim}-d flow, skeleton {prior.manifest.get('skeleton', {}).get('name')}, "
        f"trained on {data_names});\n'plausible' = above {how}: {threshold:.1f}\n"
    )
    print(f"{'poses':34s} {'n':>5s} {'mean':>9s} {'median':>9s} {'5%':>9s} {'plausible':>10s}")
    rows = {}
    for name, lp in sets.items():
        rows[name] = {
            "n": len(lp),
            "mean": float(lp.mean()),
            "median": float(np.median(lp)),
            "p5": float(np.percentile(lp, 5)),
            "plausible": float((lp > threshold).mean()),
        }
        r = rows[name]
        print(f"{name:34s} {r['n']:5d} {_num(r['mean'])} {_num(r['median'])} {_num(r['p5'])} {r['plausible']:10.1%}")
    print(f"\n{sum(len(v) for v in sets.values())} poses scored in {seconds:.2f} s")
    _figure(args.out, sets, samples, offsets)
    return rows


def _real_poses(path: Path, smpl_prior: PosePrior | None) -> tuple[np.ndarray, np.ndarray]:
    """Body rotations (N, 21, 3) and FK offsets (22, 3) of a shared-format npz; converted to SMPL (on the model's
    own rest skeleton) when ``smpl_prior`` is given."""
    if smpl_prior is None:
        with np.load(path) as d:
            return d["rotations"].astype(np.float64), d["offsets"].astype(np.float64)
    from .convert import convert_file, load_rest_joints

    rest = load_rest_joints(smpl_prior.path)
    poses = np.concatenate([t["poses"] for t in convert_file(path, rest)])
    offsets = rest - rest[np.maximum(np.array(rotations.PARENTS), 0)]
    offsets[0] = 0.0
    return poses[:, 3:66].reshape(-1, 21, 3), offsets


def _num(v: float) -> str:
    return f"{v:9.1f}" if abs(v) < 1e6 else f"{v:9.1e}"


def _figure(out: Path, sets: dict, samples: np.ndarray, offsets: np.ndarray | None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no figure)")
        return
    fig = plt.figure(figsize=(14, 4.8))
    ax = fig.add_subplot(1, 2 if offsets is not None else 1, 1)
    lo = min(np.percentile(v, 1) for v in sets.values())
    hi = max(v.max() for v in sets.values())
    bins = np.linspace(max(lo, hi - 600), hi, 80)
    for name, lp in sets.items():
        ax.hist(np.clip(lp, bins[0], None), bins=bins, histtype="step", lw=1.5, label=name, density=True)
    peak = max(np.histogram(np.clip(lp, bins[0], None), bins=bins, density=True)[0][1:].max() for lp in sets.values())
    ax.set_ylim(0, 1.15 * peak)  # the clipped left-edge bin may go off the top
    ax.set_xlabel("log p (values below the axis are clipped to its left edge)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("The prior separates real from corrupted poses")
    if offsets is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        pos = forward_kinematics(rotations.gram_schmidt(samples[:8].astype(np.float64)), offsets)
        for i, p in enumerate(pos):  # front view: x (the body's left is +x, drawn on the right) and y (up)
            for k, parent in enumerate(rotations.PARENTS[1:], start=1):
                ax2.plot([p[parent, 0] + 0.9 * i, p[k, 0] + 0.9 * i], [p[parent, 1], p[k, 1]], color=f"C{i}", lw=2)
        ax2.set_aspect("equal")
        ax2.set_axis_off()
        ax2.set_title("Eight samples, front view (seed 0)")
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    print(f"figure: {out}")


if __name__ == "__main__":
    main()
