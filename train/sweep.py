"""``sweep``: the ablations and hyper-parameter sweep of the evaluation protocol, judged on the VALIDATION split.

Every setting is the ``paper`` preset plus the sweep's base overrides plus its own overrides. For each: train
(resumable: a killed sweep continues where it stopped), export the best checkpoint (ONNX only), and run
``evaluate`` against the validation split (with the train split for the train-side KS). The test split is never
read. ``reports/sweep/report.md`` tabulates validation KS, validation log p, gap, FID, APD and nearest-pose
distance per setting.

The rule that picks the default (``choose``): among the settings whose prior stays usable near the data (the
median log p drop of validation poses under 2 degrees of random rotation on every joint, ``near_data_penalty``,
below ``MAX_PENALTY`` nats: a prior that gives -1e15 to a pose 2 degrees from a real one cannot regularise
anything), the lowest KS of orthonormalised samples against the validation poses; settings closer to it than
two seeds of one setting are to each other (``seed_spread``) are tied, and the tie goes to the fewest changes
(a seed replicate reruns a setting to measure that spread; it does not compete). The
validation log p of the *augmented* data is reported but not used to rank: settings with different alpha,
beta or noise define different augmented densities, so their log p are not comparable with each other.
"""
from __future__ import annotations

import json
from pathlib import Path

#: the base every setting starts from: DESIGN §3 (the paper preset without its 6D noise) + rotation noise on the
#: linear hinge joints; explicit, so that the sweep does not change when the preset does
BASE = {"noise": 0.0, "joint_noise": 0.02}
#: name -> overrides on BASE
SETTINGS = {
    "base": {},
    # without augmentation the density of orthonormal 6D is singular and validation log p climbs without end
    # (early stopping never fires): stop it where the base run stopped
    "noaug": {"alpha": 0.0, "beta": 0.0, "epochs": 20},
    "mirror": {"mirror": True},
    "alpha0.03": {"alpha": 0.03}, "alpha0.3": {"alpha": 0.3},
    "beta0.03": {"beta": 0.03}, "beta0.3": {"beta": 0.3},
    "nodequant": {"joint_noise": 0.0},
    "noise0.02": {"joint_noise": 0.0, "noise": 0.02},
    "jnoise0.005": {"joint_noise": 0.005}, "jnoise0.01": {"joint_noise": 0.01}, "jnoise0.05": {"joint_noise": 0.05},
    "wd1e-4": {"weight_decay": 1e-4},
    "hidden128": {"hidden": 128},
    "layers6": {"num_layers": 6},
    # second round: the best single changes of the first round, combined
    "jnoise0.01-mirror": {"joint_noise": 0.01, "mirror": True},
    "jnoise0.01-beta0.03": {"joint_noise": 0.01, "beta": 0.03},
    "jnoise0.01-wd1e-4": {"joint_noise": 0.01, "weight_decay": 1e-4},
    # how much of the spread above is the seed's: the chosen setting again with another seed
    "jnoise0.01-seed1": {"joint_noise": 0.01, "seed": 1},
}
#: round 3: the levers again, around the only setting of rounds 1-2 that passes the near-data rule
NOISE = {"joint_noise": 0.0, "noise": 0.02}
SETTINGS.update({f"noise0.02-{name}": {**NOISE, **o} for name, o in {
    "seed1": {"seed": 1}, "seed2": {"seed": 2},
    # a fixed epoch budget, keeping the last epoch: how much fitting the train split costs on unseen subjects
    "epochs10": {"epochs": 10, "early_stopping": False}, "epochs30": {"epochs": 30, "early_stopping": False},
    "mirror": {"mirror": True},
    "alpha0.03": {"alpha": 0.03}, "alpha0.3": {"alpha": 0.3},
    "beta0.03": {"beta": 0.03}, "beta0.3": {"beta": 0.3},
    "wd1e-4": {"weight_decay": 1e-4}, "hidden128": {"hidden": 128}, "layers6": {"num_layers": 6},
}.items()})
SETTINGS.update({"noise0.01": {**NOISE, "noise": 0.01}, "noise0.04": {**NOISE, "noise": 0.04}})


MAX_PENALTY = 100.0   # nats


def near_data_penalty(model_dir: Path, val: Path, degrees: float = 2.0, seed: int = 0) -> float:
    """Median over validation poses of log p(pose) - log p(pose'), pose' = every joint rotated by
    exp([xi]x), xi ~ N(0, (degrees in rad)^2 I_3) (numpy default_rng(seed)). A pose 2 degrees from a real one
    must keep a finite, moderate log p; a density that is singular along some joint's constraint does not."""
    import numpy as np

    from runtime import PosePrior, rotations

    prior = PosePrior.load(model_dir, providers=["CPUExecutionProvider"])
    aa = np.load(val)["rotations"].astype(np.float64)
    xi = np.radians(degrees) * np.random.default_rng(seed).standard_normal(aa.shape)
    moved = rotations.axis_angle_to_matrix(aa) @ rotations.axis_angle_to_matrix(xi)
    drop = prior.log_prob(rotations.axis_angle_to_6d(aa).astype(np.float32)) - \
        prior.log_prob(rotations.matrix_to_6d(moved).astype(np.float32))
    return float(np.median(drop))


def row(name: str, overrides: dict, run: Path, report: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    m = json.loads((report / "metrics.json").read_text())
    penalty = json.loads((report / "near_data_penalty.json").read_text())["median_drop_nats"]
    ks_val, ks_train = m["ks"]["test"]["table"], m["ks"]["train"]["table"]
    ours = m["sample_metrics"]["ours"]
    return {"name": name, "overrides": overrides, "epochs": s["epochs"], "best_epoch": s["best_epoch"],
            "val_log_p_augmented": s["best_val_log_p"],
            "ks_val": ks_val["ours"]["ks"], "ks_val_raw": ks_val["ours_raw"]["ks"],
            "ks_val_hinges": ks_val.get("ours_constrained", {}).get("ks"),
            "ks_train": ks_train["ours"]["ks"], "ks_train_raw": ks_train["ours_raw"]["ks"],
            "ks_train_dequant_floor": m["ks"]["train_augmented"]["table"].get("dequantised_vs_clean", {}).get("ks"),
            "ks_floor_val": ks_val["noise_floor_random_halves"]["ks"],
            "ks_floor_val_sequences": ks_val["noise_floor_sequence_halves"]["ks"],
            "log_p_val_data": m["log_p"]["data_test"]["mean"], "log_p_train_data": m["log_p"]["data_train"]["mean"],
            "log_p_samples": m["log_p"]["ours"]["median"], "gap": m["gap"]["mean_gap"],
            "fid_train": ours["fid_train"], "fid_val": ours["fid_test"], "apd_cm": ours["apd_cm"],
            "nn_deg": ours["nn_geodesic_deg_mean"],
            "fraction_ortho_above_raw": m["ablation"]["ours"]["fraction_ortho_above_raw"],
            "near_data_penalty": penalty, "train_seconds": s["train_seconds"]}


def _competes(r: dict) -> bool:
    """A setting that may become the default: usable near the data, and not a seed replicate."""
    return "seed" not in r["overrides"] and r["near_data_penalty"] < MAX_PENALTY


def seed_spread(rows: list[dict]) -> float:
    """The largest range of KS GS vs val among a usable setting and its seed replicates (rows whose overrides are
    the setting's plus ``seed``): how far apart two runs of one setting land by the seed alone."""
    spread = 0.0
    for r in filter(_competes, rows):
        group = [q["ks_val"] for q in rows if q is r or ("seed" in q["overrides"] and
                 {k: v for k, v in q["overrides"].items() if k != "seed"} == r["overrides"])]
        spread = max(spread, max(group) - min(group))
    return spread


def choose(rows: list[dict]) -> str | None:
    """Among settings whose near-data penalty is below MAX_PENALTY (seed replicates do not compete), the lowest KS
    of orthonormalised samples vs validation; settings within ``seed_spread`` of that lowest KS are tied (the
    sweep cannot tell them apart) and the tie goes to the fewest overrides, then to the earlier setting."""
    candidates = list(filter(_competes, rows))
    if not candidates:
        return None
    best = min(r["ks_val"] for r in candidates)
    tied = [r for r in candidates if r["ks_val"] <= best + seed_spread(rows)]
    return min(tied, key=lambda r: len(r["overrides"]))["name"]


def render(rows: list[dict], n: int) -> str:
    head = ["setting", "overrides", "epochs (best)", "val log p (aug.)", "KS GS vs val", "KS raw vs val",
            "KS GS+hinges vs val", "2° noise penalty (nats)",
            "KS GS vs train", "KS raw vs train", "dequantisation floor of KS vs train",
            "log p: val / train mean, GS samples median", "gap train-val",
            "FID vs train", "FID vs val", "APD cm", "NN deg", "GS >= raw"]
    lines = ["# Sweep on the validation split", "",
             f"Base: `paper` preset + {json.dumps(BASE)}; each row changes what its overrides say. {n} samples per "
             "setting; KS against the validation split (891 poses of one subject, 11 sequences) and a seeded "
             "subset of the train split. Produced by `make sweep` (train/sweep.py). The test split is not used here.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    chosen = choose(rows)
    for r in rows:
        cells = [f"**{r['name']}** (chosen)" if r["name"] == chosen else r["name"], ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-",
                 f"{r['epochs']} ({r['best_epoch']})", f"{r['val_log_p_augmented']:.1f}", f"{r['ks_val']:.3f}",
                 f"{r['ks_val_raw']:.3f}", "-" if r["ks_val_hinges"] is None else f"{r['ks_val_hinges']:.3f}",
                 f"{r['near_data_penalty']:.3g}",
                 f"{r['ks_train']:.3f}", f"{r['ks_train_raw']:.3f}",
                 "-" if r["ks_train_dequant_floor"] is None else f"{r['ks_train_dequant_floor']:.3f}",
                 f"{r['log_p_val_data']:.1f} / {r['log_p_train_data']:.1f} / {r['log_p_samples']:.1f}",
                 f"{r['gap']:.1f}", f"{r['fid_train']:.0f}", f"{r['fid_val']:.0f}", f"{r['apd_cm']:.1f}",
                 f"{r['nn_deg']:.1f}",
                 f"{100 * r['fraction_ortho_above_raw']:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        floor = rows[0]["ks_floor_val"]
        lines += ["", f"Chosen by the lowest KS GS vs val among settings whose 2° noise penalty (median log p drop "
                  f"of validation poses with 2 degrees of random rotation on every joint) is below {MAX_PENALTY:.0f} "
                  f"nats, settings within {seed_spread(rows):.3f} of it (the largest KS range between seed "
                  "replicates of one such setting) counting as tied and the tie going to the fewest overrides: "
                  f"**{chosen}**. Validation log p of the augmented data "
                  "ranks nothing across settings: different alpha, beta, noise are different densities.",
                  "", f"Noise floor of KS on the validation split: {floor:.3f} between two random halves, "
                  f"{rows[0]['ks_floor_val_sequences']:.3f} between two halves made of whole recordings (the split "
                  "is 11 walking sequences of one subject). KS GS+hinges: the dequantised hinge joints of the "
                  "samples projected back onto the train split's hinges (a diagnostic; samples keep them)."]
    return "\n".join(lines) + "\n"


def sweep(data: Path, names: list[str], runs: Path = Path("runs"), models: Path = Path("models"),
          reports: Path = Path("reports/sweep"), n: int = 3000, max_minutes: float = 30.0) -> list[dict]:
    from export import export_model

    from .config import Config, load_config
    from .data import load_dataset
    from .evaluation.run import evaluate
    from .trainer import train

    dataset = None
    rows = []
    for name in names:
        overrides = SETTINGS[name]
        run, model, report = runs / f"sweep-{name}", models / f"sweep-{name}", reports / name
        if not (run / "summary.json").is_file():
            cfg = Config.from_dict({**json.loads(load_config("paper").to_json()), **BASE, **overrides})
            dataset = dataset or load_dataset(data)
            print(f"sweep {name}: training {overrides or 'base'}", flush=True)
            train(cfg, dataset["train"], dataset["val"], run, resume=(run / "config.json").is_file(),
                  max_minutes=max_minutes, progress=False)
        if not (report / "metrics.json").is_file():
            export_model(run, model, torch_artifacts=False)
            print(f"sweep {name}: evaluating on validation", flush=True)
            evaluate(model, data / "val.npz", report, n=n, train=data / "train.npz", figures=False, progress=False)
        if not (report / "near_data_penalty.json").is_file():
            value = near_data_penalty(model, data / "val.npz")
            (report / "near_data_penalty.json").write_text(json.dumps({"median_drop_nats": value}) + "\n")
        rows.append(row(name, overrides, run, report))
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        (reports / "report.md").write_text(render(rows, n))
    return rows
