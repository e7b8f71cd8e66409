"""The sweep (train/sweep.py): its settings are the committed runs' configs, and the rule that picks the default."""
import json
from pathlib import Path

import pytest

from train.config import Config, load_config
from train.sweep import BASE, MAX_PENALTY, SETTINGS, choose, seed_spread

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_settings_reproduce_the_committed_runs(name):
    """Each setting builds exactly the config its committed run was trained with, whatever the presets say now."""
    committed = REPO / "runs" / f"sweep-{name}" / "config.json"
    if not committed.is_file():
        pytest.skip(f"{committed} not committed")
    cfg = Config.from_dict({**json.loads(load_config("paper").to_json()), **BASE, **SETTINGS[name]})
    assert cfg == Config.from_dict(json.loads(committed.read_text()))   # keys added since take their defaults


def test_choose_skips_unusable_priors_and_seed_replicates():
    def row(name, ks, penalty, **overrides):
        return {"name": name, "ks_val": ks, "near_data_penalty": penalty, "overrides": overrides}

    rows = [row("sharp", 0.05, 1e15), row("lucky-seed", 0.01, 10.0, seed=1), row("a", 0.3, 30.0, alpha=0.3),
            row("b", 0.2, MAX_PENALTY - 1, beta=0.3)]
    assert choose(rows) == "b"
    assert choose(rows[:2]) is None


def test_choose_ties_settings_within_the_seed_spread_and_prefers_fewer_changes():
    def row(name, ks, penalty=30.0, **overrides):
        return {"name": name, "ks_val": ks, "near_data_penalty": penalty, "overrides": overrides}

    base, replicate = row("base", 0.20, noise=0.02), row("base-seed1", 0.19, noise=0.02, seed=1)
    lever = row("lever", 0.195, noise=0.02, weight_decay=1e-4)
    # an unusable setting's replicates do not widen the spread
    sharp = row("sharp", 0.09, 1e15, joint_noise=0.01)
    sharp_seed = row("sharp-seed1", 0.34, 1e15, joint_noise=0.01, seed=1)
    assert seed_spread([base, replicate, lever, sharp, sharp_seed]) == pytest.approx(0.01)
    assert choose([base, replicate, lever, sharp, sharp_seed]) == "base"        # 0.005 better: within the spread
    assert choose([base, replicate, row("lever", 0.15, noise=0.02, weight_decay=1e-4)]) == "lever"
    assert choose([base, lever]) == "lever"                                     # no replicates: no tolerance


def test_committed_sweep_report_names_its_choice():
    """The sweep (CMU-canonical convention, before the SMPL conversion) is a record: its choice is still what its
    rule gives on its committed rows. The shipped default is an SMPL run chosen on the new validation set."""
    rows = json.loads((REPO / "reports" / "sweep" / "summary.json").read_text())
    assert choose(rows) == "noise0.02"
    manifest = json.loads((REPO / "runtime" / "models" / "default" / "manifest.json").read_text())
    assert manifest["skeleton"]["name"] == "smpl" and manifest["training"]["run"] == "smpl-mix"
