"""``report.md``: the metrics of ``run.evaluate`` as Markdown tables, with the definitions and figure links."""

from __future__ import annotations

import json

PAPER_KS = {"ours_raw": "0.24", "ours": "0.020", "vposer": "0.98"}
KS_ROWS = {
    "ours_raw": "ours, raw samples",
    "ours": "ours, orthonormalised (GS) samples",
    "ours_constrained": "diagnostic: ours, GS + dequantised joints projected back onto the train split's hinges",
    "vposer": "VPoser samples (orthonormal 6D)",
    "gmm": "GMM samples (axis-angle → 6D)",
    "dequantised_vs_clean": "floor set by the dequantisation: augmented train poses after GS (a) vs the "
    "clean train poses (b)",
    "noise_floor_random_halves": "noise floor: two random halves of the data",
    "noise_floor_sequence_halves": "noise floor: two halves made of whole sequences",
}
KS_TITLES = {
    "test": "against the held-out (test) split",
    "train": "against the train split (what the paper probably used)",
    "train_augmented": "diagnostic: against the train poses augmented as in training",
}


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _title(m: dict) -> list[str]:
    """The title and what produced the report."""
    s = m["settings"]
    return [
        f"# Pose-prior evaluation: `{m['model']['path']}`",
        f"The flow is evaluated through the runtime (`PosePrior`, onnxruntime CPU), as users get it; the baselines "
        f"through torch. n = {s['n']} samples per prior, seed {s['seed']}. Written by `poseprior evaluate` "
        f"(`train/evaluation/`); `metrics.json` holds every number below, `timing.json` the run times.",
    ]


def _model(m: dict) -> list[str]:
    """## Model: the run, checkpoint, stop, checksums and training config."""
    tr = m["model"]["training"]
    summ = tr.get("summary", {})
    b = ["## Model"]
    b.append(
        _table(
            ["field", "value"],
            [
                [
                    "run",
                    f"`{tr.get('run', '–')}` / `{tr.get('checkpoint', '–')}` (epoch {tr.get('epoch', '–')}, "
                    f"step {tr.get('step', '–')})",
                ],
                ["validation log p at training (augmented)", _f(tr.get("val_log_p"))],
                [
                    "stop",
                    f"{summ.get('stop_reason', '–')} after {summ.get('epochs', '–')} epochs "
                    f"(best {summ.get('best_epoch', '–')}), {summ.get('train_seconds', '–')} s",
                ],
                ["weights sha256", f"`{m['model']['weights_sha256']}`"],
                ["latent dim / masked joints", f"{m['model']['dim']} / {m['model']['masked_joints'] or 'none'}"],
                ["training data sha256", "<br>".join(f"{k}: `{v}`" for k, v in tr.get("data_sha256", {}).items())],
                ["config sha256", f"`{tr.get('config_sha256', '–')}`"],
            ],
        )
    )
    b.append(f"Training config: `{json.dumps(tr.get('config', {}), sort_keys=True)}`")
    return b


def _data(m: dict) -> list[str]:
    """## Data and settings: the splits with checksums, seeds, skeleton and per-source info."""
    s = m["settings"]
    b = ["## Data and settings"]
    rows = [_split_row("held-out (test)", s["data"])] + ([_split_row("train", s["train"])] if s.get("train") else [])
    b.append(_table(["split", "file", "poses", "sequences", "sha256"], rows))
    seeds = s["seeds"]
    lines = [
        f"- Seeds: flow latents {seeds['flow_z']} (the latents of `PosePrior.sample(n, seed={s['seed']})`), "
        f"VPoser {seeds['vposer']}, GMM {seeds['gmm']}, training augmentation {seeds['augmentation']}, "
        f"data subsets numpy `default_rng([{s['seed'] + 3}, k])` (k per use, in `metrics.json`).",
        f"- Skeleton for forward kinematics (every prior and data set): {s['skeleton']}; root orientation "
        f"identity, pelvis at the origin.",
    ]
    lines += [
        f"- `{name}`: {json.dumps({k: v for k, v in info.items() if k != 'seed'})}"
        for name, info in s["sources"].items()
    ]
    b.append("\n".join(lines))
    return b


def _split_row(label: str, info: dict) -> list[str]:
    """A row of the splits table: label, file, poses, sequences, sha256."""
    return [label, f"`{info['path']}`", str(info["n"]), str(info["sequences"]), f"`{info['sha256']}`"]


def _ks(m: dict) -> list[str]:
    """## 1: the KS tables, one per reference split, with the noise floors and the paper's figures."""
    s = m["settings"]
    b = ["## 1. KS statistic of flow log-density (samples vs data)"]
    b.append(
        "`scipy.stats.ks_2samp` between the flow's log p of prior samples (a) and of data poses (b). "
        "*Expected under H0* = 0.8687·sqrt((n+m)/(nm)): what a sample of the data distribution itself would "
        "score at these sizes. Paper (its own 1.4M-pose data and model): raw 0.24, orthonormalised 0.020, "
        f"VPoser 0.98. The held-out split is {s['data']['sequences']} recorded sequences; consecutive frames are "
        "nearly identical, so random halves of frames understate the variation between recordings: the "
        "whole-sequence halves show it."
    )
    for ref, block in m["ks"].items():
        b.append(f"### {KS_TITLES.get(ref, ref)} ({block['data_poses']} data poses)")
        if ref == "train_augmented":
            a = block["augmentation"]
            b.append(
                f"The same train poses, augmented as in training (alpha {a['alpha']}, beta {a['beta']}, "
                f"6D noise {a['noise']}, rotation noise {a.get('joint_noise', 0.0)} rad on "
                f"{', '.join(a.get('noisy_joints', [])) or 'no joints'}): raw samples vs the augmented poses, orthonormalised samples vs the "
                "augmented poses after Gram-Schmidt. This separates how well the flow fits its training "
                "distribution from how far that distribution is from the clean data; the last row is that "
                "distance: the KS against the clean train poses that a flow fitting its training distribution "
                "exactly would still show (Gram-Schmidt removes the lift, not the rotation part of the "
                "noise), judged by this flow's log p."
            )
        rows = [
            [
                KS_ROWS.get(k, k),
                _f(v["ks"]),
                str(v["n_a"]),
                str(v["n_b"]),
                _f(v["expected_null"]),
                _f(v["p_value"]) if v["p_value"] > 0 else "< 1e-300",
                PAPER_KS.get(k, "") if ref != "train_augmented" else "",
            ]
            for k, v in block["table"].items()
        ]
        b.append(_table(["set", "KS", "n (a)", "n (b)", "expected under H0", "p-value", "paper"], rows))
    return b


def _gap(m: dict) -> list[str]:
    """## 2: mean and median log p of the splits and the train − test gap."""
    g = m["gap"]
    b = ["## 2. Generalisation gap (flow log p of data poses)"]
    rows = [["held-out (test)", str(g["n_test"]), _f(g["test_mean"]), _f(g["test_median"])]]
    if "train_mean" in g:
        rows.append(["train", str(g["n_train"]), _f(g["train_mean"]), _f(g["train_median"])])
        rows.append(["gap (train − test)", "", _f(g["mean_gap"]), _f(g["median_gap"])])
    b.append(_table(["split", "poses", "mean log p", "median log p"], rows))
    return b


def _sample_metrics(m: dict) -> list[str]:
    """## 3: FID, APD and NN geodesic per source, with their definitions and the FID floor."""
    s = m["settings"]
    b = ["## 3. Model-independent sample metrics"]
    b.append(
        "- **FID** on forward-kinematics joint positions (22 joints × 3, in cm, so FID is in cm²): "
        "FID = |μ1 − μ2|² + Tr(S1 + S2 − 2 (S1 S2)^½), all n samples against all poses of the split; "
        "the mean term |μ1 − μ2|² is given after the slash.\n"
        "- **APD** (cm) = mean over all unordered pairs (i, j) of a fixed subset of "
        "(1/21) Σ_k |p_ik − p_jk|, k over the 21 non-root joints (the pelvis is at the origin in every pose).\n"
        "- **NN geodesic** (degrees): for each pose of a subset, the minimum over all training poses of the mean "
        "per-joint geodesic angle arccos((tr(Q_kᵀ R_k) − 1)/2); mean and median over the subset.\n"
        f"- Subsets: the first {min(s['subset'], s['n'])} samples of each prior (i.i.d. draws) and a seeded random "
        f"subset of {s['subset']} poses of each data split (all, if fewer). The data rows are references, not priors."
    )
    rows = []
    for name, v in m["sample_metrics"].items():
        rows.append(
            [
                v["label"],
                str(v["n"]),
                f"{_f(v.get('fid_test'), 1)} / {_f(v.get('fid_test_mean_term'), 1)}" if "fid_test" in v else "–",
                f"{_f(v.get('fid_train'), 1)} / {_f(v.get('fid_train_mean_term'), 1)}" if "fid_train" in v else "–",
                _f(v["apd_cm"], 2),
                f"{_f(v.get('nn_geodesic_deg_mean'), 2)} / {_f(v.get('nn_geodesic_deg_median'), 2)}"
                if "nn_geodesic_deg_mean" in v
                else "–",
            ]
        )
    floor = m["fid_floor"]
    rows.append(
        [
            "FID floor: two random halves of the split",
            "",
            _f(floor["test"]["fid"], 1),
            _f(floor.get("train", {}).get("fid"), 1),
            "",
            "",
        ]
    )
    b.append(
        _table(
            [
                "set",
                "n",
                "FID vs test / mean term (cm²)",
                "FID vs train / mean term (cm²)",
                "APD (cm)",
                "NN geodesic to train, mean / median (deg)",
            ],
            rows,
        )
    )
    b.append(
        "FID is biased upward at small sample sizes: the floor compares halves of a split "
        f"({floor['test']['n_each']} poses each for test), fewer than the n samples of a prior."
    )
    return b


def _temperature(m: dict) -> list[str]:
    """## 3b: the sampling-temperature rows beside T = 1."""
    b = ["## 3b. Sampling temperature"]
    b.append(
        "Orthonormalised samples from z = T·N(0, I) (`PosePrior.sample(temperature=T)`; the same z as the "
        "T = 1 rows, scaled), KS against the same data sets as section 2, FID against all poses of each "
        "split. A lever at sampling time that trades diversity (APD) for typicality; the rows above use T = 1."
    )
    t1 = m["sample_metrics"]["ours"]
    rows = [
        [
            "1.0 (above)",
            _f(m["log_p"]["ours"]["mean"]),
            _f(m["ks"]["test"]["table"]["ours"]["ks"]),
            _f(m["ks"].get("train", {}).get("table", {}).get("ours", {}).get("ks")),
            _f(t1.get("fid_test"), 1),
            _f(t1.get("fid_train"), 1),
            _f(t1["apd_cm"], 2),
        ]
    ]
    for T, v in m.get("temperature", {}).items():
        rows.append(
            [
                T,
                _f(v["mean_log_p"]),
                _f(v["ks_test"]),
                _f(v.get("ks_train")),
                _f(v["fid_test"], 1),
                _f(v.get("fid_train"), 1),
                _f(v["apd_cm"], 2),
            ]
        )
    b.append(
        _table(
            ["T", "mean log p", "KS vs test", "KS vs train", "FID vs test (cm²)", "FID vs train (cm²)", "APD (cm)"],
            rows,
        )
    )
    return b


def _log_p(m: dict) -> list[str]:
    """## 4: the log p summaries."""
    b = ["## 4. Flow log p summaries"]
    rows = [
        [
            k,
            str(v["n"]),
            str(v["nonfinite"]),
            _f(v["mean"]),
            _f(v["median"]),
            _f(v["min"]),
            _f(v["p01"]),
            _f(v["p99"]),
            _f(v["max"]),
        ]
        for k, v in m["log_p"].items()
    ]
    b.append(_table(["set", "n", "non-finite", "mean", "median", "min", "1 %", "99 %", "max"], rows))
    return b


def _ablation(m: dict) -> list[str]:
    """## 5: raw vs orthonormalised samples."""
    b = ["## 5. Ablation: raw vs orthonormalised samples"]
    lines = []
    for k, v in m["ablation"].items():
        line = (
            f"- {k}: {100 * v['fraction_ortho_above_raw']:.1f}% of the samples have a higher log p after Gram-Schmidt"
        )
        if "ks_ortho_vs_test" in v:
            line += (
                f"; `{v['model']}`: KS vs test raw {_f(v['ks_raw_vs_test']['ks'])}, orthonormalised "
                f"{_f(v['ks_ortho_vs_test']['ks'])} (under its own density)"
            )
        lines.append(line)
    b.append("\n".join(lines))
    return b


def _figures(m: dict) -> list[str]:
    """## 6: the figure links and how they were drawn (or why not)."""
    b = ["## 6. Figures"]
    if m["figures"]:
        clip = m["histogram_clip"]
        b.append(
            f"Histogram clipping: the top panel spans [{_f(clip['lower'], 1)}, {_f(clip['upper'], 1)}] "
            "(the 1st percentile of the data's log p minus 100 nats, to the largest value); lower values are "
            "not drawn, their share is in the legend. The bottom panel shows every finite value on a "
            "symmetric-log axis. Scatter plots: rotation vectors (rad) of 3000 samples over 3000 training "
            "poses, axis limits from the data. Ablation: raw vs orthonormalised log p of the same samples, "
            "dashed y = x."
        )
        b.append("\n\n".join(f"![{f}]({f})" for f in m["figures"]))
    else:
        b.append("Not drawn for this report (`evaluate(..., figures=False)`, as the sweep does).")
    return b


def _timing(timing: dict) -> list[str]:
    """## 7: the seconds of each stage of this run."""
    return [
        "## 7. Timing (this run; not part of metrics.json)",
        _table(["stage", "seconds"], [[k, _f(float(v), 2)] for k, v in timing.items()]),
    ]


def render(m: dict, timing: dict) -> str:
    """report.md of the metrics ``m`` (``run.evaluate``'s result) and the stage ``timing``: the sections in order,
    separated by blank lines."""
    sections = (_title, _model, _data, _ks, _gap, _sample_metrics, _temperature, _log_p, _ablation, _figures)
    blocks = [block for section in sections for block in section(m)] + _timing(timing)
    return "\n\n".join(blocks) + "\n"
