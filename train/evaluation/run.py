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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime.rotations import JOINT_NAMES

from . import figures as _figures
from . import metrics, report
from .sources import (
    PoseSource,
    augmented,
    batched_log_prob,
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


def data_rng(seed: int, purpose: str) -> np.random.Generator:
    """The seeded stream of one data subset: ``numpy.random.default_rng([seed + 3, DATA_STREAMS[purpose]])``."""
    return np.random.default_rng([seed + 3, DATA_STREAMS[purpose]])


class _Steps:
    """The progress bar over the named steps, and each step's wall-clock seconds (``timing.json``)."""

    def __init__(self, names: list[str], progress: bool):
        self.bar = tqdm(total=len(names), desc="evaluate", disable=not progress, unit="step")
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        self.bar.set_description(f"evaluate: {name}")
        self.seconds[name] = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - self.seconds[name], 3)
        self.bar.update()


@dataclass
class _Splits:
    """The data the samples are compared with: the held-out split, the train split (optional, with its axis-angle
    rotations for the hinge projection) and the skeleton of forward kinematics."""

    test: PoseSource
    train: PoseSource | None
    train_rotations: np.ndarray | None
    offsets: np.ndarray
    skeleton: str

    @property
    def refs(self) -> dict[str, PoseSource]:
        """{"test": ..., "train": ...} (train only when given): the reference sets of KS and FID."""
        return {"test": self.test} | ({"train": self.train} if self.train is not None else {})


def _evaluate(model_dir, data, out: Path, *, n, train, baselines, seed, ablation, subset, figures, progress) -> dict:
    t_start = time.perf_counter()
    runs = find_baselines(list(baselines))
    steps = _Steps(
        ["load", "flow samples", *runs, "data"]
        + (["ablation model"] if ablation else [])
        + ["KS", "FID", "temperature", "APD", "nearest neighbours", "figures", "report"],
        progress,
    )
    with steps("load"):
        prior = load_prior(model_dir)
    with steps("flow samples"):
        t0 = time.perf_counter()
        ours = flow_samples(prior, n, seed, "ours", "ours (orthonormalised)")
        flow_seconds = time.perf_counter() - t0
    samples: list[PoseSource] = [ours]
    for kind, run in runs.items():
        with steps(kind):
            samples.append(_baseline_samples(prior, kind, run, n, seed))
    with steps("data"):
        splits = _load_splits(prior, data, train)
    abl = None
    if ablation:
        with steps("ablation model"):
            abl = _ablation_model(ablation, splits.test, n, seed)
    with steps("KS"):
        ks, ks_ref_lp = _ks_tables(prior, samples, splits, n, seed)
        gap = _generalisation_gap(splits)
    with steps("FID"):
        sub = _subsets(samples, splits, subset, n, seed)
        pos, per_source, fid_floor = _fid(samples, splits, seed)
    with steps("temperature"):
        temperature = _temperature_rows(prior, splits, pos, ks_ref_lp, n, subset, seed)
    with steps("APD"):
        _apd(per_source, pos, sub, samples + list(splits.refs.values()))
    with steps("nearest neighbours"):
        _nearest_neighbours(per_source, sub, samples, splits)
    with steps("figures"):
        panels, abl_metrics = _ablation_metrics(prior, model_dir, ours, abl, ablation)
        figs, clip = _draw(out, panels, samples, splits, n, seed) if figures else ([], None)
    with steps("report"):
        result = _rounded(
            {
                "model": _model_record(prior, model_dir),
                "settings": _settings(n, seed, subset, splits, samples),
                "log_p": _log_p_summaries(samples, splits),
                "ks": ks,
                "gap": gap,
                "temperature": temperature,
                "sample_metrics": per_source,
                "fid_floor": fid_floor,
                "ablation": abl_metrics,
                "histogram_clip": clip,
                "figures": figs,
            }
        )
        (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        steps.seconds["flow_n_samples_seconds"] = round(flow_seconds, 3)
        steps.seconds["total"] = round(time.perf_counter() - t_start, 3)  # report writing itself not included
    (out / "timing.json").write_text(json.dumps(steps.seconds, indent=1) + "\n")
    (out / "report.md").write_text(report.render(result, steps.seconds))
    steps.bar.close()
    return result


# --- the steps -----------------------------------------------------------------------------------------------------
def _baseline_samples(prior, kind: str, run: Path, n: int, seed: int) -> PoseSource:
    """n samples of a baseline run, scored by the flow: VPoser with seed + 1, the GMM with seed + 2."""
    if kind == "vposer":
        return vposer_samples(prior, run, n, seed + 1)
    return gmm_samples(prior, run, n, seed + 2)


def _load_splits(prior, data, train) -> _Splits:
    """The held-out split and the train split (when given); FK uses the train split's offsets, else the held-out's."""
    test, test_set = data_source(prior, data, "data_test", "data: held-out split")
    train_src = train_rotations = None
    if train is not None:
        train_src, train_set = data_source(prior, train, "data_train", "data: train split")
        train_rotations = train_set.rotations
        offsets, skeleton = train_set.offsets, f"offsets of the train split ({train})"
    else:
        offsets, skeleton = test_set.offsets, f"offsets of the held-out split ({data}); no --train given"
    if offsets is None:
        raise ValueError("the data file holds no 'offsets' (mean skeleton): forward kinematics needs one")
    return _Splits(test, train_src, train_rotations, offsets, skeleton)


def _ablation_model(ablation, test: PoseSource, n: int, seed: int) -> dict:
    """The ablation partner: its prior, its n samples (same seed) and its log p of the held-out poses."""
    abl_prior = load_prior(ablation)
    return {
        "prior": abl_prior,
        "samples": flow_samples(abl_prior, n, seed, "ablation", "ablation model"),
        "test_log_p": batched_log_prob(abl_prior, test.sixd),
    }


def _ks_tables(prior, samples: list[PoseSource], splits: _Splits, n: int, seed: int) -> tuple[dict, dict]:
    """KS of flow log p, every sample set against each reference split, with the noise floors (random halves,
    whole-sequence halves) and, with a train split, against the augmented train poses; also the reference log p
    used per split (train: n poses drawn by ``data_rng("ks_train")`` when larger)."""
    ours = samples[0]
    sample_sets = [("ours_raw", ours.raw_log_p)] + [(s.name, s.log_p) for s in samples]
    noisy_joints = prior.manifest.get("training", {}).get("noisy_joints", [])
    if splits.train is not None and noisy_joints:
        projected = constrained(prior, ours, splits.train_rotations, noisy_joints)
        sample_sets.insert(2, ("ours_constrained", projected.log_p))
    ks: dict[str, dict] = {}
    ks_ref_lp: dict[str, np.ndarray] = {}
    for ref_name, ref in splits.refs.items():
        if ref_name == "train" and len(ref) > n:
            idx = np.sort(data_rng(seed, "ks_train").choice(len(ref), n, replace=False))
        else:
            idx = np.arange(len(ref))
        ref_lp = ks_ref_lp[ref_name] = ref.log_p[idx]
        table = {name: metrics.ks(v, ref_lp) for name, v in sample_sets}
        h1, h2 = metrics.random_halves(len(ref), data_rng(seed, f"halves_{ref_name}"))
        table["noise_floor_random_halves"] = metrics.ks(ref.log_p[h1], ref.log_p[h2])
        halves = metrics.sequence_halves(ref.sequence)
        if halves is not None:
            table["noise_floor_sequence_halves"] = metrics.ks(ref.log_p[halves[0]], ref.log_p[halves[1]])
        ks[ref_name] = {"data_poses": len(idx), "table": table}
        if ref_name == "train":
            ks["train_augmented"] = _ks_augmented(prior, ours, ref, idx, ref_lp, seed)
    return ks, ks_ref_lp


def _ks_augmented(prior, ours: PoseSource, ref: PoseSource, idx: np.ndarray, ref_lp: np.ndarray, seed: int) -> dict:
    """KS against what the flow was really fit to: the same train poses, augmented as in training (seed + 4)."""
    sub_src = PoseSource("train_subset", "", ref.sixd[idx], ref_lp)
    aug_lp, aug_gs_lp, params = augmented(prior, sub_src, seed + 4)
    return {
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


def _generalisation_gap(splits: _Splits) -> dict:
    """Mean and median flow log p of the held-out poses, and of the train poses with the gaps train - test."""
    test, train = splits.test, splits.train
    gap = {"test_mean": float(test.log_p.mean()), "test_median": float(np.median(test.log_p)), "n_test": len(test)}
    if train is not None:
        gap.update(train_mean=float(train.log_p.mean()), train_median=float(np.median(train.log_p)), n_train=len(train))
        gap.update(mean_gap=gap["train_mean"] - gap["test_mean"], median_gap=gap["train_median"] - gap["test_median"])
    return gap


def _subsets(samples: list[PoseSource], splits: _Splits, subset: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of the APD / nearest-neighbour subset per source: the first min(subset, n) samples (i.i.d. draws),
    and a seeded random subset of each data split."""
    m = min(subset, n)
    sub = {s.name: np.arange(m) for s in samples}
    sub["data_test"] = np.sort(
        data_rng(seed, "subset_test").choice(len(splits.test), min(subset, len(splits.test)), replace=False)
    )
    if splits.train is not None:
        sub["data_train"] = np.sort(
            data_rng(seed, "subset_train").choice(len(splits.train), min(subset, len(splits.train)), replace=False)
        )
    return sub


def _fid(samples: list[PoseSource], splits: _Splits, seed: int) -> tuple[dict, dict, dict]:
    """Forward-kinematics joint positions of every source, the FID (and its mean term) of each source against each
    reference split, and the FID floor of two random halves of each split: (positions, per-source rows, floors)."""
    refs = splits.refs
    sources = samples + list(refs.values())
    pos = {s.name: joint_positions(s, splits.offsets) for s in sources}
    stats = {k: metrics.gaussian_stats(v) for k, v in pos.items()}
    per_source: dict[str, dict] = {}
    for s in sources:
        per_source[s.name] = {"label": s.label, "n": len(s)}
        for ref_name, ref in refs.items():
            if s.name != ref.name:
                (mu1, s1), (mu2, s2) = stats[s.name], stats[ref.name]
                per_source[s.name][f"fid_{ref_name}"] = metrics.fid_from_stats(mu1, s1, mu2, s2)
                per_source[s.name][f"fid_{ref_name}_mean_term"] = float(np.sum((mu1 - mu2) ** 2))
    fid_floor = {}
    for ref_name, ref in refs.items():
        h1, h2 = metrics.random_halves(len(ref), data_rng(seed, f"halves_{ref_name}"))
        fid_floor[ref_name] = {"fid": metrics.fid(pos[ref.name][h1], pos[ref.name][h2]), "n_each": len(h1)}
    return pos, per_source, fid_floor


def _temperature_rows(prior, splits: _Splits, pos: dict, ks_ref_lp: dict, n: int, subset: int, seed: int) -> dict:
    """Per T of TEMPERATURES: mean log p, APD, and KS and FID against each split, of orthonormalised samples of
    z = T * N(0, I) (the same z as T = 1, scaled)."""
    temperature = {}
    for T in TEMPERATURES:
        s_T = flow_samples(prior, n, seed, f"ours_T{T}", f"ours, T = {T}", temperature=T)
        pos_T = joint_positions(s_T, splits.offsets)
        row = {"mean_log_p": float(s_T.log_p.mean()), "apd_cm": metrics.apd(pos_T[: min(subset, n)][:, 1:])}
        for ref_name, ref in splits.refs.items():
            row[f"ks_{ref_name}"] = metrics.ks(s_T.log_p, ks_ref_lp[ref_name])["ks"]
            row[f"fid_{ref_name}"] = metrics.fid(pos_T, pos[ref.name])
        temperature[str(T)] = row
    return temperature


def _apd(per_source: dict, pos: dict, sub: dict, sources: list[PoseSource]) -> None:
    """Adds each source's APD (cm, the 21 non-root joints, over its subset) to its row."""
    for s in sources:
        per_source[s.name]["apd_cm"] = metrics.apd(pos[s.name][sub[s.name]][:, 1:])
        per_source[s.name]["apd_items"] = len(sub[s.name])


def _nearest_neighbours(per_source: dict, sub: dict, samples: list[PoseSource], splits: _Splits) -> None:
    """With a train split: adds the mean and median geodesic distance (deg) of each subset pose of the priors and
    of the held-out split to its nearest train pose."""
    if splits.train is None:
        return
    train_R = splits.train.matrices()
    for s in samples + [splits.test]:
        d, _ = metrics.nearest_geodesic(s.matrices(sub[s.name]), train_R)
        per_source[s.name].update(
            nn_geodesic_deg_mean=float(d.mean()), nn_geodesic_deg_median=float(np.median(d)), nn_queries=len(d)
        )


def _ablation_metrics(prior, model_dir, ours: PoseSource, abl: dict | None, ablation) -> tuple[list, dict]:
    """The raw-vs-orthonormalised panels (ablation model first, when given) and their metrics: the fraction of
    samples whose log p rises under Gram-Schmidt, and the ablation model's KS (raw, orthonormalised) vs test."""
    panels = []
    if abl is not None:
        panels.append((_model_title(abl["prior"], ablation), abl["samples"].raw_log_p, abl["samples"].log_p))
    panels.append((_model_title(prior, model_dir), ours.raw_log_p, ours.log_p))
    fractions = [metrics.fraction_above(raw, ortho) for _, raw, ortho in panels]
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
    return panels, abl_metrics


def _draw(out: Path, panels: list, samples: list[PoseSource], splits: _Splits, n: int, seed: int):
    """The PNGs: log p histograms, one scatter matrix per prior (against the train split, else the held-out one,
    subset ``data_rng("scatter")``) and the ablation panels; (file names, histogram clip)."""
    refs = splits.refs
    ours = samples[0]
    hist_sets = (
        [(r.name, r.label, r.log_p) for r in refs.values()]
        + [("ours_raw", "ours (raw)", ours.raw_log_p)]
        + [(s.name, s.label, s.log_p) for s in samples]
    )
    clip = _figures.logp_histograms(hist_sets, [r.name for r in refs.values()], out / "logp_histograms.png")
    scatter_ref = splits.train if splits.train is not None else splits.test
    k_sc = min(3000, n, len(scatter_ref))
    sc_idx = np.sort(data_rng(seed, "scatter").choice(len(scatter_ref), k_sc, replace=False))
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
    return figs, clip


def _model_record(prior, model_dir) -> dict:
    """The evaluated model: path, weights checksum, latent dim, masked joints, training record."""
    return {
        "path": str(model_dir),
        "weights_sha256": prior.manifest["files"]["weights.bin"]["sha256"],
        "dim": prior.dim,
        "masked_joints": list(prior.masked_joints),
        "training": prior.manifest.get("training", {}),
    }


def _settings(n: int, seed: int, subset: int, splits: _Splits, samples: list[PoseSource]) -> dict:
    """The run's settings, data records and the seed of every random stream."""
    return {
        "n": n,
        "seed": seed,
        "subset": subset,
        "skeleton": splits.skeleton,
        "data": splits.test.info,
        "train": splits.train.info if splits.train is not None else None,
        "sources": {s.name: s.info for s in samples},
        "seeds": {
            "flow_z": f"numpy default_rng({seed})",
            "vposer": f"torch Generator seed {seed + 1}",
            "gmm": f"torch Generator seed {seed + 2}",
            "augmentation": f"torch Generator seed {seed + 4}",
            "data_subsets": {k: f"numpy default_rng([{seed + 3}, {v}])" for k, v in DATA_STREAMS.items()},
        },
    }


def _log_p_summaries(samples: list[PoseSource], splits: _Splits) -> dict:
    """log p summaries of the data splits, the raw flow samples and every sample set, in the report's order."""
    log_p = {r.name: log_p_summary(r.log_p) for r in splits.refs.values()}
    log_p["ours_raw"] = log_p_summary(samples[0].raw_log_p)
    log_p.update({s.name: log_p_summary(s.log_p) for s in samples})
    return log_p


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
