"""Is it an SMPL prior? Real SMPL poses vs glitched ones, unseen motions, completion: ``make plausibility``.

With the files of ``make data`` (``build/smpl``) and a model directory, all through the torch-free runtime:

* ``tau`` = the 1st percentile of log p on the converted BVH takes of ``cmu_extra`` (subjects 11, 14, 131: unseen,
  varied, never used for choosing);
* real poses: the share above ``tau`` of the real SMPL frames (``../shared/data/smpl_reference``, when present), of
  the converted ``cmu_pose`` test subject and of the converted validation set;
* glitched copies of the validation poses (what settings are chosen on), the real SMPL frames and the test subject (``runtime.glitch.corrupt``: 3 joints off by 60
  degrees about random axes; both knees bent 80 degrees backwards; uniformly random rotations): their share above
  ``tau`` (should be <= 5 %) and the ROC AUC of log p, real vs glitched;
* the 2-degree near-data penalty on the validation poses (``near_data_penalty``);
* left-arm completion (collar, shoulder, elbow, wrist) with ``runtime.fit.complete`` (latent space, from the mean
  arm) against filling the arm with the training mean pose (the chordal mean of each joint's rotations), mean
  geodesic error of the 4 joints, per source file of the BVH takes and the test subject, with the iteration
  budget of ``COMPLETE_ITERS`` that gains most on 400 validation poses (the MAP completion is not the best
  estimate: run to convergence it moves further from the truth than 30 steps do);
* the per-joint median nearest-neighbour geodesic distance from the real SMPL frames to the training poses (how
  close the conversion brought the two conventions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from runtime import PosePrior, rotations
from runtime import fit as rfit
from runtime.atomic import atomic_write_text
from runtime.glitch import corrupt, knees_backwards, random_rotations
from runtime.prior import sha256_file

ARM = ("left_collar", "left_shoulder", "left_elbow", "left_wrist")
#: L-BFGS iteration budgets of the left-arm completion; the one with the best gain on validation is reported
COMPLETE_ITERS = (10, 30, 100)


def body(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 21, 3) body rotations, sequence index (N,), sequence names of a converted (AMASS-style) file."""
    with np.load(path, allow_pickle=False) as z:
        aa = z["poses"][:, 3:66].reshape(-1, 21, 3).astype(np.float64)
        seq = z["sequence"] if "sequence" in z else np.zeros(len(aa), int)
        names = [str(s) for s in z["sequence_names"]] if "sequence_names" in z else [path.stem]
    return aa, seq, names


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC = P(log p of a real pose > log p of a glitched one), ties counted half (Mann-Whitney U / n m)."""
    r = ranks(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given their mean rank (``scipy.stats.rankdata``'s "average")."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def chordal_mean(aa: np.ndarray) -> np.ndarray:
    """Per joint, the rotation nearest (Frobenius) to the mean rotation matrix: (N, J, 3) -> (J, 3, 3)."""
    M = rotations.axis_angle_to_matrix(aa).mean(axis=0)
    U, _, Vt = np.linalg.svd(M)
    D = np.ones((len(M), 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    return (U * D[:, None, :]) @ Vt


def nn_table(query: np.ndarray, ref: np.ndarray, stride: int = 1) -> dict[str, float]:
    """Per joint, median over ``query`` poses of the geodesic distance (degrees) to the nearest ``ref`` rotation of
    that joint: ``2 acos max |q . q_ref|`` on unit quaternions."""
    out = {}
    for j, name in enumerate(rotations.JOINT_NAMES):
        q = rotations.matrix_to_quaternion(rotations.axis_angle_to_matrix(query[:, j]))
        r = rotations.matrix_to_quaternion(rotations.axis_angle_to_matrix(ref[::stride, j]))
        best = np.concatenate([np.abs(q[i : i + 256] @ r.T).max(axis=1) for i in range(0, len(q), 256)])
        out[name] = float(np.median(np.degrees(2 * np.arccos(np.clip(best, 0.0, 1.0)))))
    return out


def glitches(aa: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The three glitched copies of ``aa`` (``runtime.glitch``), drawn from ``rng`` in this order."""
    uniform = random_rotations(aa.shape, rng)
    return {
        "3 joints off by 60 deg": corrupt(aa, rng, 3, 60),
        "knees bent 80 deg backwards": knees_backwards(aa),
        "random rotations": uniform,
    }


def completion(
    prior: PosePrior, aa: np.ndarray, mean: np.ndarray, iters: int = 100, space: str = "latent"
) -> dict[str, float]:
    """Mean geodesic error (degrees) of the left arm's 4 joints: completed by the prior (``runtime.fit.complete``
    from the mean arm, in ``space``) vs the mean pose."""
    idx = [rotations.JOINT_NAMES.index(n) for n in ARM]
    R = rotations.axis_angle_to_matrix(aa)
    start = R.copy()
    start[:, idx] = mean[idx]
    done = rfit.complete(prior, rotations.matrix_to_6d(start).astype(np.float32), list(ARM), space=space, iters=iters)
    Rc = rotations.gram_schmidt(np.asarray(done.poses, np.float64))
    err_prior = rotations.geodesic_deg(Rc[:, idx], R[:, idx]).mean()
    err_mean = rotations.geodesic_deg(start[:, idx], R[:, idx]).mean()
    return {
        "n": len(aa),
        "prior_deg": float(err_prior),
        "mean_pose_deg": float(err_mean),
        "gain": float(1 - err_prior / err_mean),
    }


def best_threshold(real: np.ndarray, glitched: np.ndarray) -> dict[str, float]:
    """What ANY threshold could do with this model, whatever tau is: the share of ``real`` log p above the
    threshold that lets 5 % of ``glitched`` through (its 95th percentile), and the share of ``glitched`` above the
    one that keeps 90 % of ``real`` (its 10th percentile). Issue 10 asks for >= 90 % and <= 5 % at once."""
    t_glitch, t_real = np.percentile(glitched, 95), np.percentile(real, 10)
    return {
        "real_above_5pct_glitch_threshold": float((real > t_glitch).mean()),
        "glitched_above_90pct_real_threshold": float((glitched > t_real).mean()),
    }


def near_data_penalty(prior: PosePrior, aa: np.ndarray, degrees: float = 2.0, seed: int = 0) -> float:
    """Median over poses of log p(pose) - log p(pose'), pose' = every joint R_j exp([xi_j]x), xi_j ~
    N(0, (degrees in rad)^2 I_3) (numpy default_rng(seed)): a prior usable near the data keeps it moderate."""
    xi = np.radians(degrees) * np.random.default_rng(seed).standard_normal(aa.shape)
    moved = rotations.axis_angle_to_matrix(aa) @ rotations.axis_angle_to_matrix(xi)
    return float(np.median(prior.log_prob(aa, rep="axis_angle") - prior.log_prob(moved, rep="matrix")))


def evaluate(model: str | Path, data: Path, dev: Path | None, n_complete: int = 200, seed: int = 0) -> dict:
    prior = PosePrior.load(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    takes, take_seq, take_names = body(data / "bvh_takes.npz")
    test, _, _ = body(data / "test.npz")
    val, _, _ = body(data / "val.npz")
    train, _, _ = body(data / "train.npz")
    lp_takes = prior.log_prob(takes, rep="axis_angle")
    tau = float(np.percentile(lp_takes, 1))
    real = {
        "BVH takes (11, 14, 131)": lp_takes,
        "cmu_pose test (03)": prior.log_prob(test, rep="axis_angle"),
        "validation (08 + ASF/AMC)": prior.log_prob(val, rep="axis_angle"),
    }
    out: dict = {"tau": tau, "model": str(model), "real": {}, "glitched": {}}
    sources = {"validation (08 + ASF/AMC)": val, "cmu_pose test (03)": test}
    if dev is not None and dev.is_file():
        with np.load(dev, allow_pickle=False) as z:
            smpl = z["poses"][:, 3:66].reshape(-1, 21, 3).astype(np.float64)
        real["real SMPL (AMASS sample)"] = prior.log_prob(smpl, rep="axis_angle")
        sources["real SMPL (AMASS sample)"] = smpl
        out["nn_deg"] = nn_table(smpl, train)
    for name, lp in real.items():
        out["real"][name] = {"n": len(lp), "median": float(np.median(lp)), "above_tau": float((lp > tau).mean())}
    for src, aa in sources.items():
        for gname, g in glitches(aa, rng).items():
            lp = prior.log_prob(g, rep="axis_angle")
            out["glitched"][f"{src}: {gname}"] = {
                "n": len(lp),
                "median": float(np.median(lp)),
                "above_tau": float((lp > tau).mean()),
                "auc": auc(real[src], lp),
            }
            if src == "validation (08 + ASF/AMC)" and gname == "3 joints off by 60 deg":
                glitched_val = lp
    if "real SMPL (AMASS sample)" in real:
        out["best_threshold"] = best_threshold(real["real SMPL (AMASS sample)"], glitched_val)
    out["near_data_penalty_2deg"] = near_data_penalty(prior, val)
    mean = chordal_mean(train)

    def spaced(aa, n):
        return aa[np.linspace(0, len(aa) - 1, min(n, len(aa))).astype(int)]

    choose = {it: completion(prior, spaced(val, 2 * n_complete), mean, iters=it) for it in COMPLETE_ITERS}
    iters = max(choose, key=lambda it: choose[it]["gain"])
    out["completion_iters"] = {"chosen": iters, "validation": {str(k): v for k, v in choose.items()}}
    comp = {"validation (08 + ASF/AMC), choosing": choose[iters]}
    for s, name in enumerate(take_names):
        comp[name] = completion(prior, spaced(takes[take_seq == s], n_complete), mean, iters=iters)
    comp["cmu_pose test (03)"] = completion(prior, spaced(test, n_complete), mean, iters=iters)
    report = [v for k, v in comp.items() if not k.startswith("validation")]
    n = sum(v["n"] for v in report)
    pooled = {k: sum(v["n"] * v[k] for v in report) / n for k in ("prior_deg", "mean_pose_deg")}
    comp["all reported (BVH takes + test)"] = {
        "n": n,
        **pooled,
        "gain": 1 - pooled["prior_deg"] / pooled["mean_pose_deg"],
    }
    out["completion_left_arm"] = comp
    return out


def record_threshold(model_dir: Path, tau: float, data: Path) -> None:
    """Store ``tau`` in the model's manifest (atomically; the manifest lists the other files' sha256, and is not
    itself hashed): ``{"tau", "percentile": 1, "definition", "data_sha256"}``."""
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["plausibility"] = {
        "tau": round(tau, 4),
        "percentile": 1,
        "definition": "1st percentile of log p on unseen, varied CMU takes (cmu_extra BVH: "
        "subjects 11, 14, 131, converted to SMPL)",
        "data_sha256": sha256_file(data),
    }
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def markdown(r: dict) -> str:
    lines = [
        f"model `{r['model']}`; tau = 1st percentile of log p on the converted BVH takes = {r['tau']:.1f}",
        "",
        "| real poses | n | median log p | above tau |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v['n']} | {v['median']:.1f} | {v['above_tau']:.1%} |" for k, v in r["real"].items()]
    lines += [
        "",
        "| glitched poses | n | median log p | above tau | ROC AUC real vs glitched |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['n']} | {v['median']:.3g} | {v['above_tau']:.1%} | {v['auc']:.3f} |"
        for k, v in r["glitched"].items()
    ]
    if "best_threshold" in r:
        b = r["best_threshold"]
        lines += [
            "",
            "Any threshold, real SMPL frames vs validation poses with 3 joints off by 60 deg: where 5 % of "
            f"the glitches pass, {b['real_above_5pct_glitch_threshold']:.1%} of the real SMPL frames do; where "
            f"90 % of the real SMPL frames pass, {b['glitched_above_90pct_real_threshold']:.1%} of the "
            "glitches do.",
        ]
    lines += [
        "",
        f"2-degree near-data penalty (median over validation poses): {r['near_data_penalty_2deg']:.1f} nats",
        "",
        f"left-arm completion, latent space, {r['completion_iters']['chosen']} L-BFGS iterations (chosen on "
        "validation: gain "
        + ", ".join(f"{v['gain']:.1%} at {k}" for k, v in r["completion_iters"]["validation"].items())
        + ")",
        "",
        "| left-arm completion | prior (deg) | training mean pose (deg) | gain |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['prior_deg']:.1f} | {v['mean_pose_deg']:.1f} | {v['gain']:.1%} |"
        for k, v in r["completion_left_arm"].items()
    ]
    if "nn_deg" in r:
        lines += ["", "| joint | median NN distance, real SMPL frames -> training poses (deg) |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in r["nn_deg"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", type=Path, default=Path("build/smpl/cmu"))
    ap.add_argument(
        "--dev",
        type=Path,
        default=Path("../shared/data/smpl_reference/amass_dev_sample.npz"),
        help="real SMPL frames (AMASS sample); their rows are skipped when the file is absent",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--n-complete", type=int, default=200)
    ap.add_argument(
        "--record",
        action="store_true",
        help='write tau into the model\'s manifest.json ("plausibility"), for the demo and `score`',
    )
    a = ap.parse_args(argv)
    r = evaluate(a.model, a.data, a.dev, a.n_complete)
    if a.record:
        record_threshold(Path(a.model), r["tau"], a.data / "bvh_takes.npz")
    text = markdown(r)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "plausibility.json").write_text(json.dumps(r, indent=1) + "\n")
        (a.out / "plausibility.md").write_text(text)


if __name__ == "__main__":
    main()
