"""The plain install (``pip install .``, no extras: no torch) gives a working ``poseprior`` command: ``--help`` and
the torch-free subcommands run, the torch ones say in one line which extra to install (exit 2), and ``import
train`` / ``import export`` raise ImportError with the same hint. Builds a fresh venv (pip reaches PyPI)."""

from __future__ import annotations

import json
import subprocess
import time
import venv
import zipfile
from pathlib import Path

import pytest

from runtime.cli import TRAIN_EXTRA_HINT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with ``pip install <repo>`` (no extras)."""
    env = tmp_path_factory.mktemp("plain_venv")
    t0 = time.monotonic()
    venv.create(env, with_pip=True)
    r = subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"plain install: {time.monotonic() - t0:.1f} s")
    return env / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # cwd outside the checkout, so that the installed package (not the source tree) is imported
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd)},
    )


@pytest.mark.slow
def test_plain_install_runs_the_torch_free_commands(plain_install, tmp_path, shared_data):
    r = run(plain_install, "python", "-c", "import torch", cwd=tmp_path)
    assert r.returncode != 0, "the plain install must not pull torch"
    r = run(plain_install, "poseprior", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout and "train" in r.stdout and "Traceback" not in r.stderr
    r = run(
        plain_install,
        "poseprior",
        "demo",
        "--n",
        "50",
        "--out",
        tmp_path / "demo.png",
        "--data",
        shared_data / "cmu_pose" / "test.npz",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "real, unseen subject" in r.stdout and "Traceback" not in r.stderr
    r = run(plain_install, "poseprior", "demo", "--model", tmp_path / "no_model", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    take = shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh"  # the take tools, torch-free
    r = run(plain_install, "poseprior", "score", take, "--out", tmp_path / "s.json", cwd=tmp_path)
    assert r.returncode == 0 and "frames flagged" in r.stdout, r.stderr
    assert len(json.loads((tmp_path / "s.json").read_text())["log_prob"]) == 597
    r = run(plain_install, "poseprior", "score", take, "--plot", tmp_path / "s.png", cwd=tmp_path)
    assert r.returncode == 2 and "pip install 'poseprior[plot]'" in r.stderr and not (tmp_path / "s.png").exists()
    r = run(
        plain_install,
        "poseprior",
        "repair",
        take,
        "--flagged",
        "--space",
        "ambient",
        "--out",
        tmp_path / "r.npz",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and (tmp_path / "r.npz").is_file(), r.stderr
    # calibrate on the user's own clean takes (two folders of another skeleton), then score with that model dir:
    # no torch, no checkout (cwd is an empty temp dir; the model comes from the installed package)
    takes = shared_data / "cmu_extra" / "bvh_3dsmax"
    r = run(plain_install, "poseprior", "calibrate", takes, "--out", tmp_path / "mine", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert len(manifest["detector"]["takes"]) == 3, manifest["detector"]
    r = run(
        plain_install,
        "poseprior",
        "score",
        take,
        "--model",
        tmp_path / "mine",
        "--out",
        tmp_path / "c.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "frames flagged" in r.stdout, r.stderr
    r = run(plain_install, "poseprior", "calibrate", tmp_path / "s.json", "--out", tmp_path / "bad", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and not (tmp_path / "bad").exists(), r.stderr
    for command in ("train", "export", "evaluate", "fit-bench", "bench"):
        r = run(plain_install, "poseprior", command, "--help", cwd=tmp_path)
        assert r.returncode == 2, (command, r.returncode, r.stderr)
        assert r.stderr.strip() == f"error: poseprior {command} {TRAIN_EXTRA_HINT}", r.stderr
    for package in ("train", "export", "train.cli"):
        r = run(plain_install, "python", "-c", f"import {package}", cwd=tmp_path)
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith(TRAIN_EXTRA_HINT), r.stderr
    r = run(plain_install, "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    site = Path(r.stdout.strip())
    for sub in ("train/evaluation/run.py", "runtime/cli.py", "runtime/models/default/manifest.json"):
        assert (site / sub).is_file(), f"{sub} is not installed (subpackages and package data)"
    # the Blender extension zip from the plain install (its manifest template is package data; docs/blender.md)
    r = run(plain_install, "poseprior", "blender-addon", "--out", tmp_path / "pp.zip", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "pp.zip") as z:
        names = set(z.namelist())
    assert {"blender_manifest.toml", "runtime/blender/addon/__init__.py", "runtime/models/default/weights.bin"} <= names
