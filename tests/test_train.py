"""Training runs on the real CMU data: the tiny preset learns, is deterministic, resumes exactly, and the CLI
refuses bad input with a clear message and no run directory left behind."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from train.config import load_config
from train.rotations import axis_angle_to_6d
from train.trainer import load_checkpoint, train


def metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_training_improves_validation_log_p(cmu, tmp_path):
    """The tiny preset on the full CMU train split (the run CI relies on): it learns, and keeps the best epoch."""
    summary = train(load_config("tiny"), cmu["train"], cmu["val"], tmp_path / "run", progress=False)
    rows = metrics(tmp_path / "run")
    print("tiny run:", [round(r["val_log_p"], 1) for r in rows], f"{summary['train_seconds']} s")
    # the CMU train split is small and the validation subject differs: training log p rises steadily while the
    # validation log p peaks within a few epochs (the best checkpoint is kept)
    assert rows[-1]["train_log_p"] > rows[0]["train_log_p"] + 10
    assert summary["best_val_log_p"] > rows[0]["val_log_p"] and summary["best_epoch"] > 1
    assert {"epoch", "step", "train_log_p", "val_log_p", "lr", "seconds"} <= set(rows[0])
    for name in ("best.pt", "last.pt"):  # plain tensors and values only
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ckpt["data_sha256"]["cmu_pose/train.npz"] == next(iter(cmu["train"].files.values()))
    flow, ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    x = cmu["val"].to_6d()[:64]
    assert torch.isfinite(flow.log_prob(x)).all()
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == ckpt["config"]
    # dequantisation (the preset's 6D noise) keeps the density finite off CMU's hinge joints: a pose 5 degrees off
    # the knee hinge gets a moderate penalty instead of the singular density's -1e19
    aa = torch.from_numpy(cmu["val"].rotations[:64]).double()
    off = aa.clone()
    off[:, 3, 1] += math.radians(5)
    with torch.no_grad():
        lp, lp_off = flow.double().log_prob(axis_angle_to_6d(aa)), flow.log_prob(axis_angle_to_6d(off))
    print("5 degrees off the left knee's hinge: median log p drop", float((lp - lp_off).median()))
    assert torch.isfinite(lp_off).all() and 0 < float((lp - lp_off).median()) < 1000


def test_same_seed_same_first_epoch(cmu, tmp_path):
    cfg = load_config("tiny")
    tr, va = cmu["train"].evenly_spaced(3000), cmu["val"]
    a = train(cfg, tr, va, tmp_path / "a", max_steps=6, progress=False)
    b = train(cfg, tr, va, tmp_path / "b", max_steps=6, progress=False)
    assert metrics(tmp_path / "a")[0]["train_log_p"] == metrics(tmp_path / "b")[0]["train_log_p"]
    assert a["best_val_log_p"] == b["best_val_log_p"]
    cfg.seed = 1
    train(cfg, tr, va, tmp_path / "c", max_steps=6, progress=False)
    assert metrics(tmp_path / "c")[0]["train_log_p"] != metrics(tmp_path / "a")[0]["train_log_p"]


def test_resume_continues_without_losing_an_epoch(cmu, tmp_path):
    cfg = load_config("tiny")
    cfg.epochs, cfg.patience = 4, 100
    tr, va = cmu["train"].evenly_spaced(2048), cmu["val"]
    train(cfg, tr, va, tmp_path / "full", progress=False)
    # stop after 2 epochs (8 steps each), then resume to the end
    train(cfg, tr, va, tmp_path / "cut", max_steps=16, progress=False)
    assert len(metrics(tmp_path / "cut")) == 2
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # an epoch logged after the last checkpoint
        f.write(json.dumps({"epoch": 3, "val_log_p": 0.0}) + "\n")
    train(cfg, tr, va, tmp_path / "cut", resume=True, progress=False)
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["epoch"] for r in cut] == [1, 2, 3, 4]
    for r1, r2 in zip(full, cut):
        assert r1["train_log_p"] == pytest.approx(r2["train_log_p"], abs=1e-9)
        assert r1["val_log_p"] == pytest.approx(r2["val_log_p"], abs=1e-9)
    with pytest.raises(ValueError, match="different config"):
        cfg.lr = 0.5
        train(cfg, tr, va, tmp_path / "cut", resume=True, progress=False)


def test_without_early_stopping_every_epoch_runs_and_the_last_is_kept(cmu, tmp_path):
    """early_stopping=False (a fixed epoch budget, a sweep lever): patience is ignored, best.pt is the last epoch."""
    cfg = load_config("tiny")
    cfg.epochs, cfg.patience, cfg.early_stopping = 3, 1, False
    summary = train(cfg, cmu["train"].evenly_spaced(1024), cmu["val"], tmp_path / "run", progress=False)
    assert summary["stop_reason"] == "epochs" and summary["epochs"] == summary["best_epoch"] == 3
    assert summary["best_val_log_p"] == metrics(tmp_path / "run")[-1]["val_log_p"]
    best, last = (torch.load(tmp_path / "run" / f, weights_only=True)["model"] for f in ("best.pt", "last.pt"))
    assert all(torch.equal(best[k], last[k]) for k in last)


def test_runs_from_before_a_config_key_existed_resume(cmu, tmp_path):
    """A run whose config.json and last.pt predate a key (here early_stopping) resumes with the key's default."""
    cfg = load_config("tiny")
    cfg.epochs, cfg.patience = 2, 100
    tr, va = cmu["train"].evenly_spaced(1024), cmu["val"]
    train(cfg, tr, va, tmp_path / "run", max_steps=4, progress=False)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    del ckpt["config"]["early_stopping"]
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    assert train(cfg, tr, va, tmp_path / "run", resume=True, progress=False)["epochs"] == 2


# --- the CLI and bad input --------------------------------------------------------------------------------------
def poseprior(*args):
    return subprocess.run([sys.executable, "-m", "train.cli", *map(str, args)], capture_output=True, text=True)


def write_split(folder, rotations):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(rotations)
    for s in ("train", "val"):
        np.savez(
            folder / f"{s}.npz", rotations=rotations, sequence=np.zeros(n, np.int32), subject=np.zeros(n, np.int32)
        )


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or folder"),
        ("no_val", "no 'val' split"),
        ("corrupt", "cannot read npz"),
        ("nan", "NaN or inf"),
        ("shape", "expected (N, 21, 3)"),
        ("empty", "empty split"),
        ("not_pose", "neither 'rotations'"),
    ],
)
def test_cli_rejects_bad_data(tmp_path, case, message):
    data = tmp_path / "data"
    good = (np.random.default_rng(0).normal(size=(64, 21, 3)) * 0.3).astype(np.float32)
    if case != "missing":
        write_split(data, good)
    if case == "no_val":
        (data / "val.npz").unlink()
    elif case == "corrupt":
        (data / "train.npz").write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "nan":
        bad = good.copy()
        bad[7, 3, 1] = np.nan
        write_split(data, bad)
    elif case == "shape":
        write_split(data, good[:, :20])
    elif case == "empty":
        write_split(data, good[:0])
    elif case == "not_pose":
        np.savez(data / "train.npz", something=np.zeros(3))
    r = poseprior("train", "--data", data, "--out", tmp_path / "run", "--config", "tiny", "--quiet")
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    if case not in ("missing", "no_val"):
        assert "train.npz" in r.stderr or "val.npz" in r.stderr
    assert not (tmp_path / "run").exists()


def test_cli_refuses_to_overwrite_and_to_resume_nothing(tmp_path, shared_data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", out, "--config", "tiny")
    assert r.returncode != 0 and "not empty" in r.stderr
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", tmp_path / "none", "--resume")
    assert r.returncode != 0 and "nothing to resume" in r.stderr
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", tmp_path / "x", "--config", "nosuchpreset")
    assert r.returncode != 0 and "neither a flow preset" in r.stderr


def test_cli_trains_and_resumes(tmp_path, shared_data):
    out = tmp_path / "run"
    r = poseprior(
        "train",
        "--data",
        shared_data / "cmu_pose",
        "--out",
        out,
        "--config",
        "tiny",
        "--max-steps",
        "3",
        "--set",
        "max_val=200",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["max_val"] == 200
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", out, "--resume", "--max-steps", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert [m["step"] for m in metrics(out)] == [3, 5]
