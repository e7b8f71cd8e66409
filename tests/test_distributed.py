"""Data-parallel training (train.distributed) with real torchrun processes on the CPU (gloo): 2 processes reproduce
the 1-process run of the same seed and global batch, one run directory is written (by rank 0), a killed rank
stops the run and ``--resume`` (with another number of processes) completes it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train.config import load_config
from train.data import load_npz
from train.trainer import train
from train.vposer import load_vposer

N_TRAIN = 2817  # 11 full batches of 256 and one of 1 pose: rank 0's shard of the last batch is empty
TOL = 0.05  # nats: validation log p of 2 processes vs 1 (the sums run in another order)


def metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data_dir(shared_data, tmp_path_factory) -> Path:
    """A data folder in the shared format: N_TRAIN evenly spaced CMU train poses, and the real val split."""
    d = tmp_path_factory.mktemp("ddp_data") / "cmu_small"
    d.mkdir()
    src = np.load(shared_data / "cmu_pose" / "train.npz")
    idx = np.linspace(0, len(src["rotations"]) - 1, N_TRAIN).astype(int)
    np.savez(
        d / "train.npz", rotations=src["rotations"][idx], sequence=src["sequence"][idx], subject=src["subject"][idx]
    )
    os.symlink(shared_data / "cmu_pose" / "val.npz", d / "val.npz")
    return d


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Path:
    """The 1-process run (no torchrun): tiny preset, 2 epochs."""
    cfg = load_config("tiny")
    cfg.epochs = 2
    run = tmp_path_factory.mktemp("ddp_ref") / "run"
    train(cfg, load_npz(data_dir / "train.npz"), load_npz(data_dir / "val.npz"), run, progress=False)
    return run


def poseprior_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train.cli", "train", "--data", str(data_dir), "--out", str(out), "--quiet", *extra]


def env_with_tmp(tmp: Path) -> dict:
    tmp.mkdir()
    return {**os.environ, "TMPDIR": str(tmp)}


def test_two_processes_reproduce_one(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        poseprior_args(data_dir, out, "--config", "tiny", "--epochs", "2", "--nproc", "2"),
        capture_output=True,
        text=True,
        env=env_with_tmp(tmp_path / "tmp"),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = metrics(reference), metrics(out)
    print("val log p, 1 vs 2 processes:", [(a["val_log_p"], b["val_log_p"]) for a, b in zip(one, two)])
    assert [m["epoch"] for m in two] == [m["epoch"] for m in one] == [1, 2]
    assert [m["step"] for m in two] == [m["step"] for m in one] == [12, 24]
    for a, b in zip(one, two):
        assert abs(a["val_log_p"] - b["val_log_p"]) < TOL
        assert abs(a["train_log_p"] - b["train_log_p"]) < TOL
        assert a["val_log_p"] != b["val_log_p"]  # really another computation (gradient sums in another order)
    # one run directory, written by rank 0 only; the per-machine copy of the training array is gone
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.jsonl",
        "summary.json",
    ]
    assert json.loads((out / "config.json").read_text()) == json.loads((reference / "config.json").read_text())
    assert list((tmp_path / "tmp").glob("poseprior-*")) == []
    assert r.stdout.count("summary.json") == 1  # the closing line is printed once (rank 0)


def test_two_processes_on_ingested_takes_reproduce_one(data_dir, tmp_path):
    """The ingest path (``--data FILE --val FILE``: the cache's memory-mapped 6D) with 2 processes, where every
    rank trains on the per-machine mapped copy of the set's ``six_d`` as it is, computes the one-process run up
    to the order of float sums, and leaves nothing in ``$TMPDIR``."""
    src = np.load(data_dir / "train.npz")  # as an AMASS-style file (poses[:, 3:66] = the body's axis-angle)
    poses = np.zeros((len(src["rotations"]), 72), np.float32)
    poses[:, 3:66] = src["rotations"].reshape(len(poses), 63)
    takes = tmp_path / "train.npz"
    np.savez(takes, poses=poses, trans=np.zeros((len(poses), 3), np.float32), mocap_framerate=np.float64(30))
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"run{nproc}"
        extra = ["--config", "tiny", "--epochs", "2", "--val", str(data_dir / "val.npz")]
        extra += ["--cache", str(tmp_path / "cache"), *(["--nproc", "2"] if nproc == 2 else [])]
        r = subprocess.run(
            poseprior_args(takes, out, *extra),
            capture_output=True,
            text=True,
            env=env_with_tmp(tmp_path / f"tmp{nproc}"),
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        runs[nproc] = metrics(out)
        assert list((tmp_path / f"tmp{nproc}").glob("poseprior-*")) == []
    assert [m["step"] for m in runs[2]] == [m["step"] for m in runs[1]] == [12, 24]
    for a, b in zip(runs[1], runs[2]):
        assert abs(a["val_log_p"] - b["val_log_p"]) < TOL and abs(a["train_log_p"] - b["train_log_p"]) < TOL


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` below process ``launcher`` (Linux /proc)."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    for pid in parent:
        up = pid
        while up in parent and up != launcher:
            up = parent[up]
        if up == launcher and pid != launcher:
            try:
                env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
                return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker to kill through /proc")
def test_a_killed_rank_stops_the_run_and_resume_completes_it(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        poseprior_args(data_dir, out, "--config", "tiny", "--epochs", "2", "--nproc", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with_tmp(tmp_path / "tmp"),
    )
    try:
        deadline = time.monotonic() + 240
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text()):  # epoch 1 saved
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "epoch 1 did not finish"
            time.sleep(0.01)
        victim = _worker_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # torchrun stops rank 0 too and fails
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "rank : 1 (local_rank: 1)" in " ".join(err.split()) and "Signal 9 (SIGKILL)" in err  # torchrun's report
    # rank 0 says why it stops: it saw its peer vanish in a collective, or torchrun's SIGTERM came first
    assert (
        "error: rank 0 of 2: another rank of the run stopped" in err or "error: rank 0 of 2: stopped by SIGTERM" in err
    ), err[-3000:]
    assert [m["epoch"] for m in metrics(out)] == [1] and not (out / "summary.json").exists()

    # resume with 1 process (without torchrun): the run completes and matches the uninterrupted 1-process run
    r = subprocess.run(poseprior_args(data_dir, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one, resumed = metrics(reference), metrics(out)
    assert [m["epoch"] for m in resumed] == [1, 2] and [m["step"] for m in resumed] == [12, 24]
    for a, b in zip(one, resumed):
        assert abs(a["val_log_p"] - b["val_log_p"]) < TOL
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_data_parallel_gradient_is_the_whole_batch_mean(data_dir, tmp_path):
    """One DDP step on 2 processes: the shard-weighted gradient is the one-process gradient of the whole batch
    (185 poses split 92 / 93; and 1 pose, where rank 0's shard is empty); plain DDP averaging of the two shard
    means (equal weights) is measurably not."""
    out = tmp_path / "grad.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(Path(__file__).with_name("ddp_grad_worker.py")),
            str(data_dir / "train.npz"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    errors = json.loads(out.read_text())
    print("relative gradient error (weighted, equal weights):", errors)
    assert errors["185"][0] < 1e-5 and errors["1"][0] < 1e-5
    assert errors["185"][1] > 1e-4 and errors["1"][1] > 0.4  # the weighting matters (0.5: half)


def test_vposer_trains_on_two_processes(data_dir, tmp_path):
    """The VPoser baseline through the same loop: one run directory, a model that loads and learns. (Its dropout
    masks are drawn per rank, so it is not the 1-process run number for number.)"""
    out = tmp_path / "run"
    r = subprocess.run(
        poseprior_args(data_dir, out, "--model", "vposer", "--config", "tiny", "--epochs", "2", "--nproc", "2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(out)
    assert [m["step"] for m in rows] == [12, 24] and rows[1]["val_loss"] < rows[0]["val_loss"]
    model, ckpt = load_vposer(out)
    assert ckpt["config"]["model"] == "vposer" and ckpt["state"]["epoch"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--nproc", "0"], "Invalid value for '--nproc'"),
        (["--nproc", "2", "--model", "gmm"], "--model gmm fits in one process"),
        (["--nproc", "2", "--out", "NONEMPTY"], "run directory exists and is not empty"),
    ],
)
def test_nproc_refuses_bad_arguments_before_starting_torchrun(data_dir, tmp_path, extra, message):
    nonempty = tmp_path / "nonempty"
    nonempty.mkdir()
    (nonempty / "something").write_text("x")
    args = [str(nonempty) if a == "NONEMPTY" else a for a in extra]
    r = subprocess.run(
        poseprior_args(data_dir, tmp_path / "run", "--config", "tiny", *args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert "torch.distributed.run" not in r.stderr and not (tmp_path / "run").exists()
