"""Tests of the Blender add-on in real Blender (bpy 4.5 as a module): run by `make test-blender` in .venv-blender,
never by the default `make test` (testpaths are tests/ and bindings_tests/). The root conftest.py gives shared_data.

Fixtures: ``addon`` (the add-on registered from the source tree), ``bvh_files`` (every BVH skeleton kind: the real
cgspeed Daz and 3dsMax files of ../shared, and MotionBuilder- and SMPL-named files written from a real cmu_pose take
by ``runtime.formats.write_bvh``), ``import_bvh`` (a fresh empty scene with one BVH imported by Blender's own
importer), ``calibrated`` (a model directory with the take-QA detector calibrated), ``cli_score`` (``poseprior
score`` run as a command on a file, its JSON)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

bpy = pytest.importorskip("bpy")

from runtime.formats import JOINT_MAPS, read_motion, write_bvh  # noqa: E402

MB_NAMES = {"pelvis": "Hips", **{k: v for k, v in JOINT_MAPS["cgspeed_motionbuilder"].items() if k != "pelvis"}}
#: the bone names of the SMPL Blender add-ons (Meshcapade's / the SMPL FBX: ``m_avg_`` prefix, ``L_``/``R_`` sides)
SMPL_ADDON = {
    "pelvis": "Pelvis",
    "spine1": "Spine1",
    "spine2": "Spine2",
    "spine3": "Spine3",
    "neck": "Neck",
    "head": "Head",
    **{
        f"{side}_{j}": f"{side[0].upper()}_{j.capitalize()}"
        for side in ("left", "right")
        for j in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist")
    },
}


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def addon():
    import runtime.blender.addon as addon

    addon.register()
    yield addon
    addon.unregister()


@pytest.fixture(scope="session")
def bvh_files(shared_data, tmp_path_factory) -> dict[str, Path]:
    """skeleton kind -> a BVH file of it."""
    out = tmp_path_factory.mktemp("bvh")
    m = read_motion(shared_data / "cmu_pose" / "test.npz")[2]  # 1141 frames at 30 fps, a real CMU take
    mb = replace(m, names=tuple(MB_NAMES[n] for n in m.names), end_sites={"Head": np.array([0.0, 0.1, 0.0])})
    extra = shared_data / "cmu_extra"
    return {
        "cgspeed_daz": extra / "bvh_daz_style" / "11_01.bvh",
        "cgspeed_3dsmax": extra / "bvh_3dsmax" / "131_01.bvh",
        "cgspeed_motionbuilder": write_bvh(mb, out / "cmu_test2_mb.bvh"),
        "smpl": write_bvh(m, out / "cmu_test2_smpl.bvh", unit_m=1.0),
    }


def _import(path: Path, frame_range=None):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True, update_scene_duration=True)
    if frame_range:
        bpy.context.scene.frame_start, bpy.context.scene.frame_end = frame_range
    return bpy.context.object


@pytest.fixture
def import_bvh(addon):
    return _import


@pytest.fixture(scope="session")
def calibrated(shared_data, tmp_path_factory) -> str:
    """The shipped model with the take-QA detector and tau calibrated (``runtime.calibrate``) on the 3dsMax takes
    131_01 and 131_03 of ../shared (the operator tests run on 131_02)."""
    from runtime.calibrate import calibrate

    d = shared_data / "cmu_extra" / "bvh_3dsmax"
    out = tmp_path_factory.mktemp("cal") / "model"
    calibrate([d / "131_01.bvh", d / "131_03.bvh"], out)
    return str(out)


@pytest.fixture(scope="session")
def cli_score(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    cache = {}

    def run(path: Path, *args: str) -> dict:
        key = (str(path), args)
        if key not in cache:
            dst = out / f"{len(cache)}.json"
            cmd = [sys.executable, "-m", "runtime.cli", "score", str(path), "--out", str(dst), *args]
            r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            cache[key] = json.loads(dst.read_text())
        return cache[key]

    return run
