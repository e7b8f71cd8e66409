"""The ``poseprior`` command refuses every user error with exit code 2 and one line naming the argument or file,
never a traceback, and leaves no partial or empty directory behind (issue 11); ``--resume`` continues only the
same run. Most cases run the real click commands in-process (click's CliRunner); the kill tests run real
training subprocesses."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from export.cli import main as torch_commands
from runtime.atomic import partial_path
from runtime.cli import TORCH_COMMANDS
from runtime.cli import main as poseprior
from train.config import ACTIVATIONS, load_config
from train.coupling import ACTIVATIONS as COUPLING_ACTIVATIONS
from train.data import PoseSet
from train.rotations import JOINT_NAMES
from train.trainer import check_no_constant_joints, train


def run_cli(*args) -> Result:
    return CliRunner().invoke(poseprior, [str(a) for a in args])


def refused(result, *needles: str) -> str:
    """Exit 2 with a one-line ``error:`` message holding every needle, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def small_data(cmu, tmp_path_factory) -> Path:
    """A data folder of real CMU poses, small enough for runs of a few seconds (in a temporary folder)."""
    folder = tmp_path_factory.mktemp("small_data")
    for split, n in (("train", 2048), ("val", 256)):
        s = cmu[split].evenly_spaced(n)
        np.savez(folder / f"{split}.npz", rotations=s.rotations, sequence=s.sequence, subject=s.subject)
    return folder


def metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same run: every metric (not the wall-clock fields) and both checkpoints'
    weights bit for bit."""
    timing = {"seconds", "train_poses_per_s"}
    ma, mb = ([{k: v for k, v in r.items() if k not in timing} for r in metrics(d)] for d in (a, b))
    assert ma == mb
    for name in ("best.pt", "last.pt"):
        wa, wb = (torch.load(d / name, weights_only=True)["model"] for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert (
        json.loads((a / "summary.json").read_text())["best_val_log_p"]
        == json.loads((b / "summary.json").read_text())["best_val_log_p"]
    )


# --- the entry point ----------------------------------------------------------------------------------------------
def test_help_lists_every_command_with_its_help():
    r = run_cli("--help")
    assert r.exit_code == 0, r.output
    assert set(TORCH_COMMANDS) == set(torch_commands.commands), "runtime.cli.TORCH_COMMANDS is out of date"
    for name, text in TORCH_COMMANDS.items():
        assert name in r.output and text[:40] in r.output
    assert "demo" in r.output
    assert set(ACTIVATIONS) == set(COUPLING_ACTIVATIONS)


def test_torch_commands_run_through_the_entry_point(tmp_path):
    r = run_cli("train", "--help")
    assert r.exit_code == 0 and "--resume" in r.output
    refused(run_cli("export", tmp_path / "no_run", "--out", tmp_path / "m"), "checkpoint not found")


# --- train: bad arguments -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "hidden"], ["--set 'hidden'", "KEY=VALUE"]),
        (["--set", "hidden=abc"], ["--set hidden=abc", "not of type int"]),
        (["--set", "activation=nosuch"], ["activation='nosuch'", "silu"]),
        (["--set", "batch_size=0"], ["batch_size=0", "> 0"]),
        (["--set", "batch_size=-5"], ["batch_size=-5", "> 0"]),
        (["--set", "lr=NaN"], ["lr=nan", "not finite"]),
        (["--set", 'masked_joints=["nose"]'], ["masked_joints", "nose"]),
        (["--set", "nosuchkey=1"], ["unknown keys", "nosuchkey"]),
        (["--epochs", "0"], ["--epochs 0", "at least 1"]),
        (["--max-steps", "0"], ["--max-steps 0", "at least 1"]),
        (["--max-minutes", "-1"], ["--max-minutes -1", "> 0"]),
    ],
)
def test_train_refuses_bad_arguments_and_leaves_nothing(small_data, tmp_path, args, needles):
    out = tmp_path / "run"
    refused(run_cli("train", "--data", small_data, "--out", out, "--config", "tiny", "--quiet", *args), *needles)
    assert not out.exists()


def test_train_refuses_an_out_that_is_a_file(small_data, tmp_path):
    (tmp_path / "f").write_text("keep me")
    for out in (tmp_path / "f", tmp_path / "f" / "run"):
        refused(run_cli("train", "--data", small_data, "--out", out, "--config", "tiny"), f"--out {out}", "is a file")
    assert (tmp_path / "f").read_text() == "keep me"


@pytest.mark.parametrize(
    "content, needles",
    [
        ({"preset": "nosuch"}, ['unknown "preset"', "'nosuch'", "paper"]),
        ({"preset": "tiny", "hidden": "abc"}, ["c.json", "hidden='abc'"]),
        ([1, 2], ["c.json", "JSON list"]),
    ],
)
def test_train_refuses_a_bad_config_file(small_data, tmp_path, content, needles):
    (tmp_path / "c.json").write_text(json.dumps(content))
    refused(
        run_cli("train", "--data", small_data, "--out", tmp_path / "run", "--config", tmp_path / "c.json"), *needles
    )
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_string_subject_array_naming_the_file(cmu, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    s = cmu["train"].evenly_spaced(64)
    for split in ("train", "val"):
        np.savez(data / f"{split}.npz", rotations=s.rotations, subject=np.array(["s08"] * 64))
    refused(
        run_cli("train", "--data", data, "--out", tmp_path / "run", "--config", "tiny"),
        "train.npz",
        "'subject'",
        "expected integers",
    )
    assert not (tmp_path / "run").exists()


# --- constant joints ----------------------------------------------------------------------------------------------
def test_a_constant_joint_is_found_relative_to_the_data_scale(cmu):
    """A joint held at 0.1 rad in every frame (float32: its std computed in float32 is 3e-6, above the old
    absolute 1e-6) is refused; real joints, even one with 1/1000 of its real motion, are not."""
    cfg = load_config("tiny")
    check_no_constant_joints(cmu["train"], cfg)  # no CMU joint is constant
    rot = cmu["train"].rotations.copy()
    j = JOINT_NAMES.index("left_wrist")
    assert rot[:, j].std(axis=0).max() > 1e-3
    rot[:, j] = np.float32(0.1)
    assert rot[:, j].std(axis=0).max() > 1e-6  # what let it through before
    const = PoseSet(rot, cmu["train"].sequence, cmu["train"].sequence_names, cmu["train"].subject)
    with pytest.raises(ValueError, match="left_wrist"):
        check_no_constant_joints(const, cfg)
    check_no_constant_joints(const, dataclasses.replace(cfg, masked_joints=["left_wrist"]))  # masked: fine
    small = cmu["train"].rotations.copy()
    small[:, j] = small[:, j].mean(axis=0) + 1e-3 * (small[:, j] - small[:, j].mean(axis=0))
    check_no_constant_joints(PoseSet(small, const.sequence, const.sequence_names, const.subject), cfg)


# --- resume -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(small_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("short") / "run"
    r = run_cli(
        "train",
        "--data",
        small_data,
        "--out",
        out,
        "--config",
        "tiny",
        "--max-steps",
        "8",
        "--quiet",
        "--set",
        "max_val=256",
    )
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--epochs", "20"], ["epochs 8 -> 20"]),
        (["--set", "lr=0.5"], ["lr 0.002 -> 0.5"]),
        (["--config", "paper"], ["num_layers 4 -> 12", "hidden 128 -> 256"]),
        (["--config", "tiny"], ["max_val 256 -> 2000"]),
    ],
)
def test_resume_refuses_arguments_that_differ_from_the_run(short_run, small_data, args, needles):
    before = (short_run / "last.pt").read_bytes()
    refused(
        run_cli("train", "--data", small_data, "--out", short_run, "--resume", "--quiet", *args),
        "--resume",
        "config.json",
        *needles,
    )
    assert (short_run / "last.pt").read_bytes() == before


def test_resume_accepts_the_same_arguments(short_run, small_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    r = run_cli(
        "train",
        "--data",
        small_data,
        "--out",
        run,
        "--resume",
        "--quiet",
        "--config",
        "tiny",
        "--set",
        "max_val=256",
        "--epochs",
        "8",
        "--max-steps",
        "12",
    )
    assert r.exit_code == 0, r.output
    assert [m["step"] for m in metrics(run)] == [8, 12]


def test_resume_refuses_other_data_naming_the_files(short_run, small_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    with np.load(data / "val.npz") as d:
        arrays = dict(d)
    arrays["rotations"] = arrays["rotations"][:-1]
    arrays["sequence"], arrays["subject"] = arrays["sequence"][:-1], arrays["subject"][:-1]
    np.savez(data / "val.npz", **arrays)
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    refused(run_cli("train", "--data", data, "--out", run, "--resume"), "different data files", "val.npz")


def test_a_run_killed_before_its_first_checkpoint_resumes(cmu, tmp_path):
    """What a kill inside epoch 1 leaves (config.json, an empty metrics.jsonl, a stray .tmp): --resume runs it
    again from the start, to the same run as an uninterrupted one; a fresh start there is refused."""
    cfg = load_config("tiny")
    cfg.epochs, cfg.patience, cfg.max_val = 2, 100, 256
    tr, va = cmu["train"].evenly_spaced(1024), cmu["val"].evenly_spaced(256)
    train(cfg, tr, va, tmp_path / "full", progress=False)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(cfg.to_json() + "\n")
    (cut / "metrics.jsonl").write_text("")
    (cut / "last.pt.tmp").write_bytes(b"half a checkpoint")
    train(cfg, tr, va, cut, resume=True, progress=False)
    same_run(tmp_path / "full", cut)


def test_a_run_killed_before_its_config_was_written_is_not_stuck(small_data, tmp_path):
    """Killed between creating --out and renaming config.json into place: --resume says there is nothing to
    resume, and a fresh start into that directory (only the partial file of that write in it) is accepted."""
    out = tmp_path / "run"
    out.mkdir()
    partial_path(out / "config.json", pid=999999).write_text('{"hid')
    refused(run_cli("train", "--data", small_data, "--out", out, "--resume"), "nothing to resume", "without --resume")
    r = run_cli(
        "train",
        "--data",
        small_data,
        "--out",
        out,
        "--config",
        "tiny",
        "--max-steps",
        "1",
        "--quiet",
        "--set",
        "max_val=64",
    )
    assert r.exit_code == 0, r.output
    assert [m["step"] for m in metrics(out)] == [1] and (out / "last.pt").is_file()


def test_a_kill_between_the_checkpoint_and_the_metrics_loses_no_epoch(cmu, tmp_path):
    """last.pt of epoch 2 written, its metrics line not (simulated): the line comes back from last.pt."""
    cfg = load_config("tiny")
    cfg.epochs, cfg.patience, cfg.max_val = 3, 100, 256
    tr, va = cmu["train"].evenly_spaced(1024), cmu["val"].evenly_spaced(256)
    train(cfg, tr, va, tmp_path / "full", progress=False)
    train(cfg, tr, va, tmp_path / "cut", max_steps=8, progress=False)  # 2 epochs of 4 steps
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "cut" / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:17])  # and a torn line
    train(cfg, tr, va, tmp_path / "cut", resume=True, progress=False)
    assert [r["epoch"] for r in metrics(tmp_path / "cut")] == [1, 2, 3]
    same_run(tmp_path / "full", tmp_path / "cut")


@pytest.mark.slow
def test_training_killed_at_any_moment_resumes_to_the_same_run(small_data, tmp_path):
    """SIGKILL a real training process at several moments (inside epoch 1 before any checkpoint, right after a
    last.pt write, right after a metrics line, at a seeded random time), resume each time, and end with the same
    run as an uninterrupted one. (The microseconds between the last.pt write and the metrics write are hit by
    the simulated test above.)"""
    args = [
        "--data",
        small_data,
        "--config",
        "tiny",
        "--quiet",
        "--set",
        "max_val=256",
        "--set",
        "epochs=4",
        "--set",
        "patience=100",
    ]
    cmd = [sys.executable, "-m", "runtime.cli", "train", *map(str, args)]
    full, cut = tmp_path / "full", tmp_path / "cut"
    ref = subprocess.Popen([*cmd, "--out", str(full)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def mtime(name: str) -> int:
        return (cut / name).stat().st_mtime_ns if (cut / name).exists() else 0

    def lines() -> int:
        return len((cut / "metrics.jsonl").read_text().splitlines()) if (cut / "metrics.jsonl").exists() else 0

    moments = {
        "inside epoch 1, before any checkpoint": lambda s: (cut / "config.json").exists(),
        "right after a last.pt write": lambda s: mtime("last.pt") != s["last.pt"],
        "right after a metrics line": lambda s: lines() > s["lines"],
        "at a random time": lambda s: time.monotonic() - s["t0"] > s["wait"],
    }
    rng = np.random.default_rng(0)
    kills = []
    for name, moment in moments.items():
        resume = ["--resume"] if (cut / "config.json").exists() else []
        p = subprocess.Popen(
            [*cmd, "--out", str(cut), *resume], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        seen = {"last.pt": mtime("last.pt"), "lines": lines(), "t0": time.monotonic(), "wait": rng.uniform(1, 4)}
        while p.poll() is None and not moment(seen):
            time.sleep(0.001)
        if p.poll() is not None:
            kills.append((name, f"finished first (rc {p.returncode})"))
            continue
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        epoch = torch.load(cut / "last.pt", weights_only=True)["state"]["epoch"] if (cut / "last.pt").exists() else 0
        kills.append((name, f"last.pt at epoch {epoch}, {lines()} metrics lines"))
    last = subprocess.run([*cmd, "--out", str(cut), "--resume"], capture_output=True, text=True)
    assert last.returncode == 0, last.stderr
    assert ref.wait() == 0, ref.stderr.read()
    print("killed:", kills)
    assert sum("finished first" not in k[1] for k in kills) >= 3, kills
    same_run(full, cut)


# --- export -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_runs(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny run with a tampered best.pt, one per case."""
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    root = tmp_path_factory.mktemp("broken")
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    cases = {
        "no model": {k: v for k, v in ckpt.items() if k != "model"},
        "no state": {k: v for k, v in ckpt.items() if k != "state"},
        "bare tensor": torch.zeros(3),
        "model is a tensor": {**ckpt, "model": torch.zeros(3)},
        "wrong shape": {**ckpt, "model": {**ckpt["model"], name: ckpt["model"][name][:, :-1]}},
        "config mismatch": {**ckpt, "config": {**ckpt["config"], "hidden": ckpt["config"]["hidden"] * 2}},
        "bad config": {**ckpt, "config": {**ckpt["config"], "activation": "nosuch"}},
        "NaN weight": {**ckpt, "model": {**ckpt["model"], name: ckpt["model"][name].clone().fill_(float("nan"))}},
        "inf weight": {**ckpt, "model": {**ckpt["model"], name: ckpt["model"][name].clone().fill_(float("inf"))}},
    }
    runs = {}
    for case, obj in cases.items():
        run = root / case.replace(" ", "_")
        run.mkdir()
        for f in ("config.json", "metrics.jsonl", "summary.json"):
            if (tiny_run / f).is_file():
                shutil.copy(tiny_run / f, run / f)
        torch.save(obj, run / "best.pt")
        runs[case] = run
    return runs


@pytest.mark.parametrize(
    "case, needles",
    [
        ("no model", ["'model'"]),
        ("no state", ["'state'"]),
        ("bare tensor", ["not a poseprior flow checkpoint"]),
        ("model is a tensor", ["'model'"]),
        ("wrong shape", ["do not match", "size mismatch"]),
        ("config mismatch", ["do not match"]),
        ("bad config", ["activation='nosuch'"]),
        ("NaN weight", ["non-finite"]),
        ("inf weight", ["non-finite"]),
    ],
)
def test_export_refuses_a_broken_checkpoint(broken_runs, tmp_path, case, needles):
    out = tmp_path / "model"
    refused(run_cli("export", broken_runs[case], "--out", out), "best.pt", *needles)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_an_out_that_is_a_file(tiny_run, tmp_path):
    (tmp_path / "f").write_text("keep me")
    refused(run_cli("export", tiny_run, "--out", tmp_path / "f"), "is a file")
    refused(run_cli("export", tiny_run, "--out", tmp_path / "f" / "model"), "is a file")
    assert (tmp_path / "f").read_text() == "keep me"


@pytest.mark.slow
def test_a_killed_export_leaves_no_partials_for_good(tiny_run, tmp_path):
    """An export SIGKILLed while building leaves .model.partial-PID-*; the next export of that --out removes the
    partials of processes that no longer run (and keeps those of a running one)."""
    out = tmp_path / "model"
    p = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "export", str(tiny_run), "--out", str(out), "--onnx-only"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while p.poll() is None and not list(tmp_path.glob(".model.partial-*")):
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    partials = list(tmp_path.glob(".model.partial-*"))
    assert partials and partials[0].name.startswith(f".model.partial-{p.pid}-")
    alive = tmp_path / f".model.partial-{os.getpid()}-x"  # an export still running (this process)
    alive.mkdir()
    old = tmp_path / f".model.old-{p.pid}-y"  # killed between its two renames
    old.mkdir()
    r = run_cli("export", tiny_run, "--out", out, "--onnx-only")
    assert r.exit_code == 0, r.output
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["model", alive.name])


# --- evaluate, fit-bench -----------------------------------------------------------------------------------------
def test_a_failed_evaluate_leaves_no_out_directory(shared_data, tmp_path):
    out = tmp_path / "report"
    refused(
        run_cli(
            "evaluate", tmp_path / "no_model", "--data", shared_data / "cmu_pose" / "test.npz", "--out", out, "--quiet"
        ),
        "no_model",
    )
    assert not out.exists()
    (tmp_path / "f").write_text("")
    refused(
        run_cli(
            "evaluate", tmp_path / "no_model", "--data", shared_data / "cmu_pose" / "test.npz", "--out", tmp_path / "f"
        ),
        "--out",
        "is a file",
    )


def test_fit_bench_refuses_bad_arguments(shared_data, tmp_path):
    test = shared_data / "cmu_pose" / "test.npz"
    (tmp_path / "f").write_text("")
    refused(run_cli("fit-bench", tmp_path / "no_model", "--data", test, "--out", tmp_path / "f"), "--out", "is a file")
    refused(run_cli("fit-bench", tmp_path / "no_model", "--data", test, "--out", tmp_path / "o", "--n", "0"), "--n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
