"""`make check-runs`: the committed runs (runs/smpl3-*) still retrain bit for bit with the blockwise statistics of
train/trainer.py. Not part of `make test`: it needs `make data` (build/smpl, about 2 min) and, for the buffer
check, the runs' original checkpoints (never committed; a checkpoint retrained by `make runs/NAME/best.pt` comes
from today's code, so that check is only meaningful on checkpoints trained before a change to the trainer).
Run: `.venv/bin/python -m pytest -q tests/committed_runs_check.py`."""

import json
from pathlib import Path

import pytest
import torch

from train.augment import Augmentation
from train.config import Config
from train.data import load_dataset
from train.trainer import build_flow, normalization, train, training_poses

ROOT = Path(__file__).resolve().parents[1]
CONVERTED = ROOT / "build" / "smpl" / "cmu"  # make data
COMMITTED = ("smpl3-plain", "smpl3-nowiden", "smpl3-widen", "smpl3-nowiden-mirror")


def augmentation(cfg: Config) -> Augmentation:
    widen = tuple((j, tuple(map(float, s))) for j, s in cfg.widen.items())
    return Augmentation(cfg.alpha, cfg.beta, cfg.noise, cfg.joint_noise, (), widen, cfg.part_mix)


def _need_data() -> None:
    if not (CONVERTED / "train.npz").is_file():
        pytest.fail(f"needs make data's {CONVERTED} (run `make check-runs`, which builds it)")


@pytest.mark.parametrize("run", COMMITTED)
def test_committed_runs_normalisation_reproduces_bitwise(run):
    """The normalisation buffers of every committed smpl3 run (its best.pt, copied in; never committed) come out of
    the blockwise code bit for bit: those runs retrain to the same weights."""
    _need_data()
    if not (ROOT / "runs" / run / "best.pt").is_file():
        pytest.skip(f"runs/{run}/best.pt: the run's original checkpoint is not here (checkpoints are not committed)")
    cfg = Config.from_dict(json.loads((ROOT / "runs" / run / "config.json").read_text()))
    data = load_dataset(CONVERTED)["train"]
    flow = build_flow(cfg)
    x = torch.from_numpy(training_poses(data, cfg.mirror))
    flow.set_moments(*normalization(flow, x, augmentation(cfg), torch.Generator().manual_seed(cfg.seed + 1)))
    best = torch.load(ROOT / "runs" / run / "best.pt", weights_only=True)["model"]
    assert torch.equal(flow.shift, best["shift"]) and torch.equal(flow.log_scale, best["log_scale"])


def test_committed_run_retrains_its_first_epoch_bitwise(tmp_path):
    """runs/smpl3-plain retrained for its first epoch (104 steps, the paper-size flow) logs the committed
    metrics.jsonl line to the last digit."""
    _need_data()
    run = ROOT / "runs" / "smpl3-plain"
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    data = load_dataset(CONVERTED)
    torch.set_num_threads(1)
    train(cfg, data["train"], data["val"], tmp_path / "run", max_steps=104, progress=False)
    got = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    want = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert (got["train_log_p"], got["val_log_p"]) == (want["train_log_p"], want["val_log_p"])
