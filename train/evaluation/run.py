"""``evaluate``: the evaluation protocol of docs/design.md §5 on one exported model, written to a report directory.

The flow is run through the runtime (``PosePrior`` on the model directory), as users get it; torch only loads
and samples the baselines. Outputs: ``metrics.json`` (deterministic: identical for identical inputs and seed),
``timing.json`` (wall-clock seconds per stage), ``report.md`` and the PNG figures. Seeds: ``sources``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.rotations import JOINT_NAMES

from . import figures as _figures
from . import metrics, report
from .sources import (
    PoseSource,
    augmented,
    constrained,
    data_source,
    find_baselines,
    flow_samples,
    gmm_samples,
    joint_positions,
    load_prior,
    vposer_samples,
)

SCATTER_JOINTS = ("left_hip", "right_collar", "right_wrist")
#: the data subsets, each drawn by numpy.random.default_rng([seed + 3, k]) with its own k
DATA_STREAMS = {"ks_train": 0, "halves_test": 1, "halves_train": 2, "subset_test": 3, "subset_train": 4, "scatter": 5}
SIG_DIGITS = 6
#: sampling temperatures reported besides T = 1 (z = T * N(0, I)): a sampling-time lever, not the default
TEMPERATURES = (0.9, 0.8, 0.7)


def _rounded(x):
    """Floats to SIG_DIGITS significant digits (recursively); keeps metrics.json short and stable."""
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if not math.isfinite(x) or x == 0.0:
            return x if math.isfinite(x) else str(x)
        return float(f"{x:.{SIG_DIGITS - 1}e}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def log_p_summary(v: np.ndarray) -> dict:
    f = v[np.isfinite(v)]
    q = np.percentile(f, [1, 50, 99]) if len(f) else [math.nan] * 3
    return {
        "n": len(v),
        "nonfinite": int(len(v) - len(f)),
        "mean": float(f.mean()),
        "median": float(q[1]),
        "min": float(f.min()),
        "p01": float(q[0]),
        "p99": float(q[2]),
        "max": float(f.max()),
    }


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    n: int = 10000,
    train: str | Path | None = None,
    baselines: list[str | Path] = (),
    seed: int = 0,
    ablation: str | Path | None = None,
    subset: int = 2000,
    figures: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate the model in ``model_dir`` against the held-out split ``data`` (and the ``train`` split, when
    given); writes ``out``/{metrics.json, timing.json, report.md, *.png}; returns the metrics.

    ``subset``: samples (and data poses) used for APD and nearest-neighbour distances (all n for FID and KS).
    ``figures=False``: no PNGs (the sweep, which evaluates dozens of models); every number is still computed.
    """
    out = Path(out)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _evaluate(
            model_dir,
            data,
            out,
            n=n,
            train=train,
            baselines=baselines,
            seed=seed,
            ablation=ablation,
            subset=subset,
            figures=figures,
            progress=progress,
        )
    except BaseException:
        if fresh:  # a failed evaluation leaves no (empty or partial) report directory it created
            shutil.rmtree(out, ignore_errors=True)
        raise


def _evaluate(model_dir, data, out: Path, *, n, train, baselines, seed, ablation, subset, figures, progress) -> dict:
    t_start = time.perf_counter()
    runs = find_baselines(list(baselines))
    steps = (
        ["load", "flow samples", *runs, "data"]
        + (["ablation model"] if ablation else [])
        + ["KS", "FID", "temperature", "APD", "nearest neighbours", "figures", "report"]
    )
    bar = tqdm(total=len(steps), desc="evaluate", disable=not progress, unit="step")
    timing: dict[str, float] = {}

    def step(name: str):
        bar.set_description(f"evaluate: {name}")
        timing[name] = time.perf_counter()

    def done(name: str):
        timing[name] = round(time.perf_counter() - timing[name], 3)
        bar.update()

    def data_rng(purpose: str) -> np.random.Generator:
        return np.random.default_rng([seed + 3, DATA_STREAMS[purpose]])

    step("load")
    prior = load_prior(model_dir)
    done("load")

    step("flow samples")
    t0 = time.perf_counter()
    ours = flow_samples(prior, n, seed, "ours", "ours (orthonormalised)")
    flow_seconds = time.perf_counter() - t0
    done("flow samples")
    samples: list[PoseSource] = [ours]
    for kind, run in runs.items():
        step(kind)
        samples.append(
            (vposer_samples if kind == "vposer" else gmm_samples)(prior, run, n, seed + {"vposer": 1, "gmm": 2}[kind])
        )
        done(kind)

    step("data")
    test, test_set = data_source(prior, data, "data_test", "data: held-out split")
    refs = {"test": test}
    train_src = None
    if train is not None:
        train_src, train_set = data_source(prior, train, "data_train", "data: train split")
        refs["train"] = train_src
        offsets, skeleton = train_set.offsets, f"offsets of the train split ({train})"
    else:
        offsets, skeleton = test_set.offsets, f"offsets of the held-out split ({data}); no --train given"
    if offsets is None:
        raise ValueError("the data file holds no 'offsets' (mean skeleton): forward kinematics needs one")
    done("data")

    abl = None
    if ablation:
        step("ablation model")
        abl_prior = load_prior(ablation)
        abl = {
            "prior": abl_prior,
            "samples": flow_samples(abl_prior, n, seed, "ablation", "ablation model"),
            "test_log_p": None,
        }
        abl["test_log_p"] = np.concatenate(
            [abl_prior.log_prob(test.sixd[i : i + 4096]) for i in range(0, len(test), 4096)]
        )
        done("ablation model")

    # --- KS of flow log p: samples vs data, and noise floors --------------------------------------------------
    step("KS")
    sample_sets = [("ours_raw", ours.raw_log_p)] + [(s.name, s.log_p) for s in samples]
    noisy_joints = prior.manifest.get("training", {}).get("noisy_joints", [])
    if train_src is not None and noisy_joints:
        sample_sets.insert(2, ("ours_constrained", constrained(prior, ours, train_set.rotations, noisy_joints).log_p))
    ks: dict[str, dict] = {}
    ks_ref_lp: dict[str, np.ndarray] = {}
    for ref_name, ref in refs.items():
        if ref_name == "train" and len(ref) > n:
            idx = np.sort(data_rng("ks_train").choice(len(ref), n, replace=False))
        else:
            idx = np.arange(len(ref))
        ref_lp = ks_ref_lp[ref_name] = ref.log_p[idx]
        table = {name: metrics.ks(v, ref_lp) for name, v in sample_sets}
        h1, h2 = metrics.random_halves(len(ref), data_rng(f"halves_{ref_name}"))
        table["noise_floor_random_halves"] = metrics.ks(ref.log_p[h1], ref.log_p[h2])
        halves = metrics.sequence_halves(ref.sequence)
        if halves is not None:
            table["noise_floor_sequence_halves"] = metrics.ks(ref.log_p[halves[0]], ref.log_p[halves[1]])
        ks[ref_name] = {"data_poses": len(idx), "table": table}
        if ref_name == "train":
            # against what the flow was really fit to: the same train poses, augmented as in training
            sub_src = PoseSource("train_subset", "", ref.sixd[idx], ref_lp)
            aug_lp, aug_gs_lp, params = augmented(prior, sub_src, seed + 4)
            ks["train_augmented"] = {
                "data_poses": len(idx),
                "augmentation": params,
                "table": {
                    "ours_raw": metrics.ks(ours.raw_log_p, aug_lp),
                    "ours": metrics.ks(ours.log_p, aug_gs_lp),
                    # the floor of "ours vs train" that the dequantisation itself sets: a flow that fit its training
                    # distribution exactly would sample GS(augmented train) and score this against the clean poses
                    "dequantised_vs_clean": metrics.ks(aug_gs_lp, ref_lp),
                },
            }
    gap = {"test_mean": float(test.log_p.mean()), "test_median": float(np.median(test.log_p)), "n_test": len(test)}
    if train_src is not None:
        gap.update(
            train_mean=float(train_src.log_p.mean()),
            train_median=float(np.median(train_src.log_p)),
            n_train=len(train_src),
        )
        gap.update(mean_gap=gap["train_mean"] - gap["test_mean"], median_gap=gap["train_median"] - gap["test_median"])
    done("KS")

    # --- model-independent metrics on forward-kinematics joint positions --------------------------------------
    step("FID")
    m = min(subset, n)
    sub = {s.name: np.arange(m) for s in samples}  # samples are i.i.d.: the first m are a random subset
    sub["data_test"] = np.sort(data_rng("subset_test").choice(len(test), min(subset, len(test)), replace=False))
    if train_src is not None:
        sub["data_train"] = np.sort(
            data_rng("subset_train").choice(len(train_src), min(subset, len(train_src)), replace=False)
        )
    pos = {s.name: joint_positions(s, offsets) for s in samples + list(refs.values())}
    stats = {k: metrics.gaussian_stats(v) for k, v in pos.items()}
    per_source: dict[str, dict] = {}
    for s in samples + list(refs.values()):
        per_source[s.name] = {"label": s.label, "n": len(s)}
        for ref_name, ref in refs.items():
            if s.name != ref.name:
                (mu1, s1), (mu2, s2) = stats[s.name], stats[ref.name]
                per_source[s.name][f"fid_{ref_name}"] = metrics.fid_from_stats(mu1, s1, mu2, s2)
                per_source[s.name][f"fid_{ref_name}_mean_term"] = float(np.sum((mu1 - mu2) ** 2))
    fid_floor = {}
    for ref_name, ref in refs.items():
        h1, h2 = metrics.random_halves(len(ref), data_rng(f"halves_{ref_name}"))
        fid_floor[ref_name] = {"fid": metrics.fid(pos[ref.name][h1], pos[ref.name][h2]), "n_each": len(h1)}
    done("FID")

    # --- sampling temperature: KS, FID and APD of orthonormalised samples at T < 1 (same z, scaled) --------------
    step("temperature")
    temperature = {}
    for T in TEMPERATURES:
        s_T = flow_samples(prior, n, seed, f"ours_T{T}", f"ours, T = {T}", temperature=T)
        pos_T = joint_positions(s_T, offsets)
        row = {"mean_log_p": float(s_T.log_p.mean()), "apd_cm": metrics.apd(pos_T[: min(subset, n)][:, 1:])}
        for ref_name, ref in refs.items():
            row[f"ks_{ref_name}"] = metrics.ks(s_T.log_p, ks_ref_lp[ref_name])["ks"]
            row[f"fid_{ref_name}"] = metrics.fid(pos_T, pos[ref.name])
        temperature[str(T)] = row
    done("temperature")

    step("APD")
    for s in samples + list(refs.values()):
        per_source[s.name]["apd_cm"] = metrics.apd(pos[s.name][sub[s.name]][:, 1:])
        per_source[s.name]["apd_items"] = len(sub[s.name])
    done("APD")

    step("nearest neighbours")
    if train_src is not None:
        train_R = train_src.matrices()
        for s in samples + [test]:
            d, _ = metrics.nearest_geodesic(s.matrices(sub[s.name]), train_R)
            per_source[s.name].update(
                nn_geodesic_deg_mean=float(d.mean()), nn_geodesic_deg_median=float(np.median(d)), nn_queries=len(d)
            )
    done("nearest neighbours")

    # --- figures ----------------------------------------------------------------------------------------------
    step("figures")
    panels = []
    if abl is not None:
        panels.append((f"{_model_title(abl['prior'], ablation)}", abl["samples"].raw_log_p, abl["samples"].log_p))
    panels.append((f"{_model_title(prior, model_dir)}", ours.raw_log_p, ours.log_p))
    fractions = [metrics.fraction_above(raw, ortho) for _, raw, ortho in panels]
    figs, clip = [], None
    if figures:
        hist_sets = (
            [(r.name, r.label, r.log_p) for r in refs.values()]
            + [("ours_raw", "ours (raw)", ours.raw_log_p)]
            + [(s.name, s.label, s.log_p) for s in samples]
        )
        clip = _figures.logp_histograms(hist_sets, [r.name for r in refs.values()], out / "logp_histograms.png")
        scatter_ref = train_src if train_src is not None else test
        k_sc = min(3000, n, len(scatter_ref))
        sc_idx = np.sort(data_rng("scatter").choice(len(scatter_ref), k_sc, replace=False))
        data_rv = scatter_ref.rotvecs(sc_idx)
        joint_ids = [JOINT_NAMES.index(j) for j in SCATTER_JOINTS]
        figs = ["logp_histograms.png"]
        for s in samples:
            name = f"scatter_{s.name}.png"
            _figures.scatter_matrix(
                s.rotvecs(np.arange(k_sc)),
                data_rv,
                joint_ids,
                list(JOINT_NAMES),
                s.label,
                scatter_ref.label,
                out / name,
                color=_figures.COLORS.get(s.name, "tab:blue"),
            )
            figs.append(name)
        _figures.ablation(panels, out / "ablation.png")
        figs.append("ablation.png")
    abl_metrics = {"ours": {"fraction_ortho_above_raw": fractions[-1]}}
    if abl is not None:
        a = abl["samples"]
        abl_metrics["ablation"] = {
            "model": str(ablation),
            "fraction_ortho_above_raw": fractions[0],
            "ks_raw_vs_test": metrics.ks(a.raw_log_p, abl["test_log_p"]),
            "ks_ortho_vs_test": metrics.ks(a.log_p, abl["test_log_p"]),
            "training": abl["prior"].manifest.get("training", {}).get("config", {}),
        }
    done("figures")

    step("report")
    log_p = {r.name: log_p_summary(r.log_p) for r in refs.values()}
    log_p["ours_raw"] = log_p_summary(ours.raw_log_p)
    log_p.update({s.name: log_p_summary(s.log_p) for s in samples})
    result = {
        "model": {
            "path": str(model_dir),
            "weights_sha256": prior.manifest["files"]["weights.bin"]["sha256"],
            "dim": prior.dim,
            "masked_joints": list(prior.masked_joints),
            "training": prior.manifest.get("training", {}),
        },
        "settings": {
            "n": n,
            "seed": seed,
            "subset": subset,
            "skeleton": skeleton,
            "data": test.info,
            "train": train_src.info if train_src is not None else None,
            "sources": {s.name: s.info for s in samples},
            "seeds": {
                "flow_z": f"numpy default_rng({seed})",
                "vposer": f"torch Generator seed {seed + 1}",
                "gmm": f"torch Generator seed {seed + 2}",
                "augmentation": f"torch Generator seed {seed + 4}",
                "data_subsets": {k: f"numpy default_rng([{seed + 3}, {v}])" for k, v in DATA_STREAMS.items()},
            },
        },
        "log_p": log_p,
        "ks": ks,
        "gap": gap,
        "temperature": temperature,
        "sample_metrics": per_source,
        "fid_floor": fid_floor,
        "ablation": abl_metrics,
        "histogram_clip": clip,
        "figures": figs,
    }
    result = _rounded(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    timing["flow_n_samples_seconds"] = round(flow_seconds, 3)
    timing["total"] = round(time.perf_counter() - t_start, 3)  # report writing itself not included
    done("report")
    (out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    (out / "report.md").write_text(report.render(result, timing))
    bar.close()
    return result


def _model_title(prior, path) -> str:
    cfg = prior.manifest.get("training", {}).get("config", {})
    run = prior.manifest.get("training", {}).get("run", Path(path).name)
    aug = (
        "no augmentation"
        if not (cfg.get("alpha") or cfg.get("beta"))
        else f"inverse-GS augmentation alpha={cfg.get('alpha')}, beta={cfg.get('beta')}"
    )
    noise = f", 6D noise {cfg['noise']}" if cfg.get("noise") else ""
    if cfg.get("joint_noise"):
        noise += f", rotation noise {cfg['joint_noise']} rad on hinge/duplicate joints"
    return f"{run}: {aug}{noise}"
