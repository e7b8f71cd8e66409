"""The extension zip built by `poseprior blender-addon --wheels` installs into a bare bpy 4.5 (no poseprior, no
onnxruntime: .venv-blender-bare) with a fresh user profile and no network (``unshare -rn``: a network namespace with
no interfaces but loopback, down), enables, and scores an imported BVH as the CLI does; a model directory set in the
add-on's preferences is the one it then scores with. install_check.py runs inside that Blender."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, env

BARE = Path(os.environ.get("POSEPRIOR_BARE_BPY", ROOT / ".venv-blender-bare" / "bin" / "python"))
WHEELS = Path(os.environ.get("POSEPRIOR_BLENDER_WHEELS", ROOT / "build" / "blender-wheels"))


def _need(path: Path, what: str):
    if not path.exists():
        msg = f"{path} missing ({what}; `make test-blender` makes it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _offline() -> list[str]:
    """``unshare -rn`` where the kernel allows an unprivileged network namespace, else nothing (then the check relies
    on the fresh profile's online access being off, which install_check.py records)."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def test_zip_installs_offline(bvh_files, calibrated, cli_score, tmp_path):
    _need(BARE, "a bare bpy venv")
    _need(WHEELS, "onnxruntime wheels for Blender's Python")
    zip_path = tmp_path / "poseprior_blender.zip"
    r = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "blender-addon", "--out", str(zip_path), "--wheels", str(WHEELS)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    bvh = bvh_files["cgspeed_daz"]
    report = tmp_path / "report.json"
    e = {k: v for k, v in env().items() if k not in ("PYTHONPATH",)}
    e["BLENDER_USER_RESOURCES"] = str(tmp_path / "profile")
    offline = _offline()
    cmd = [
        *offline,
        str(BARE),
        str(ROOT / "tests_blender" / "install_check.py"),
        str(zip_path),
        str(bvh),
        calibrated,
        str(report),
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and report.is_file(), r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(report.read_text())
    print(f"network namespace: {bool(offline)}; {json.dumps({k: v for k, v in out.items() if k != 'log_p'})}")
    assert out["fresh"] == {"onnxruntime": True, "runtime": True}  # nothing of ours in that Python before
    assert out["install"] == ["FINISHED"] and out["enabled"] and out["score"] == ["FINISHED"]
    profile = str(tmp_path / "profile")
    assert out["onnxruntime"].startswith(profile) and out["runtime"].startswith(profile)  # the bundled copies
    d = np.abs(np.array(out["log_p"]) - np.array(cli_score(bvh)["log_prob"]))
    print(f"installed extension vs CLI: max |d log p| {d.max():.2e} over {len(d)} frames")
    assert d.max() < 1e-3
    assert out["model_default"].startswith(profile) and out["model_prefs"] == calibrated


def test_zip_without_wheels(bvh_files, cli_score, tmp_path):
    """Built without --wheels: in a Blender without onnxruntime it enables and says in one line how to install it;
    after the documented offline step (pip from a wheel folder, --no-index, into the profile's scripts/modules, which
    Blender puts on sys.path) the same install scores as the CLI."""
    _need(BARE, "a bare bpy venv")
    _need(WHEELS, "onnxruntime wheels for Blender's Python")
    zip_path = tmp_path / "poseprior_blender.zip"
    r = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "blender-addon", "--out", str(zip_path)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    bvh = bvh_files["cgspeed_3dsmax"]
    e = {k: v for k, v in env().items() if k not in ("PYTHONPATH",)}
    offline = _offline()

    def blender(profile: Path) -> dict:
        e["BLENDER_USER_RESOURCES"] = str(profile)
        report = profile.parent / f"{profile.name}.json"
        cmd = [*offline, str(BARE), str(ROOT / "tests_blender" / "nowheels_check.py"), str(zip_path), str(bvh)]
        r = subprocess.run([*cmd, str(report)], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and report.is_file(), r.stdout[-2000:] + r.stderr[-2000:]
        assert "Traceback" not in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
        return json.loads(report.read_text())

    out = blender(tmp_path / "bare")
    assert not out["onnxruntime_found"] and out["install"] == ["FINISHED"] and out["enabled"]
    assert out["error"].startswith("Error: PosePrior needs onnxruntime") and "\n" not in out["error"], out

    profile = tmp_path / "with_ort"
    pip = [
        *offline,
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--find-links",
        str(WHEELS),
    ]
    pip += ["--target", str(profile / "scripts" / "modules"), "onnxruntime"]
    r = subprocess.run(pip, capture_output=True, text=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert r.returncode == 0, r.stderr
    out = blender(profile)
    assert out["score"] == ["FINISHED"] and out["onnxruntime"].startswith(str(profile)), out
    d = np.abs(np.array(out["log_p"]) - np.array(cli_score(bvh)["log_prob"]))
    print(f"wheel-folder install: max |d log p| vs CLI {d.max():.2e} over {len(d)} frames")
    assert d.max() < 1e-3
