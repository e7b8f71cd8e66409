"""Training on SMPL-converted data: the augmentations that make a CMU-trained prior an SMPL prior (widening,
part mixing), the converted data's loader, and `poseprior convert`."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime import rotations
from train.augment import PARTS, axis_noise, part_mix


def test_part_mix_takes_whole_parts_from_one_donor():
    x = torch.arange(64 * 21 * 6, dtype=torch.float64).reshape(64, 21, 6)
    y = part_mix(x, 0.5, torch.Generator().manual_seed(0))
    donor = (y[..., 0] // 126).long()  # which pose each joint's numbers came from
    mixed = 0
    for joints in PARTS.values():
        idx = [rotations.JOINT_NAMES.index(n) for n in joints]
        assert (donor[:, idx] == donor[:, idx[:1]]).all()  # a part moves as a whole
        mixed += int((donor[:, idx[0]] != torch.arange(64)).sum())
    assert 0.3 * 64 * len(PARTS) < mixed < 0.7 * 64 * len(PARTS)
    untouched = [j for j in range(21) if not any(rotations.JOINT_NAMES[j] in p for p in PARTS.values())]
    assert (donor[:, untouched] == torch.arange(64)[:, None]).all()
    torch.testing.assert_close(part_mix(x, 0.0), x)


def test_axis_noise_has_the_configured_spread_per_local_axis():
    x = torch.from_numpy(rotations.axis_angle_to_6d(np.zeros((20000, 21, 3))))
    y = axis_noise(x, {"left_knee": (0.0, 0.2, 0.1)}, torch.Generator().manual_seed(0))
    aa = rotations.sixd_to_axis_angle(y.numpy())
    knee = rotations.JOINT_NAMES.index("left_knee")
    np.testing.assert_allclose(aa[:, knee].std(axis=0), [0.0, 0.2, 0.1], atol=0.005)
    assert np.abs(np.delete(aa, knee, axis=1)).max() == 0.0


def test_converted_split_loads_with_sequences_subjects_and_skeleton(shared_data, tmp_path):
    from runtime.convert import load_rest_joints, named_takes, save_amass
    from train.data import load_split

    rest = load_rest_joints(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")
    takes = named_takes(shared_data / "cmu_pose" / "val.npz", rest)
    save_amass(takes, rest, tmp_path / "val.npz")
    s = load_split(tmp_path / "val.npz")
    assert len(s.sequence_names) == len(takes) and set(s.subject.tolist()) == {8}
    assert s.skeleton["name"] == "smpl" and np.allclose(
        np.asarray(s.skeleton["rest_joints"]), rest - rest[0], atol=1e-6
    )
    assert s.offsets.shape == (22, 3)


def test_convert_command(shared_data, tmp_path):
    rest = shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz"
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "runtime.cli", "convert", *map(str, a)], capture_output=True, text=True
    )
    ok = run(
        shared_data / "cmu_extra" / "asf_amc" / "35_01.amc", "--out", tmp_path / "o.npz", "--rest", rest, "--fps", 30
    )
    assert ok.returncode == 0, ok.stderr
    with np.load(tmp_path / "o.npz") as z:
        assert z["poses"].shape == (90, 72) and float(z["mocap_framerate"]) == pytest.approx(30, rel=1e-3)
    for args, msg in [
        ((tmp_path / "nope.bvh", "--out", tmp_path / "x.npz"), "not found"),
        ((shared_data / "cmu_extra" / "asf_amc" / "35_01.amc", "--out", tmp_path / "x.txt"), ".npz"),
        ((shared_data / "cmu_extra" / "asf_amc" / "35_01.amc", "--out", tmp_path / "x.npz", "--fps", -1), "--fps"),
    ]:
        r = run(*args, "--rest", rest)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz"]


@pytest.mark.parametrize("preset, run", [("smpl", "smpl3-nowiden"), ("smpl-widen", "smpl3-widen")])
def test_smpl_presets_are_the_committed_runs_configs(preset, run):
    """`make train` (PRESET=smpl) retrains the shipped default's recipe: the config of the run that
    runtime/models/default was exported from (its manifest's config sha256); smpl-widen is the widened candidate."""
    import json
    from pathlib import Path

    from train.config import PRESETS, Config

    root = Path(__file__).resolve().parents[1]
    committed = json.loads((root / "runs" / run / "config.json").read_text())
    assert PRESETS[preset] == Config.from_dict(committed)
    if preset == "smpl":
        summary = json.loads((root / "runs" / run / "summary.json").read_text())
        manifest = json.loads((root / "runtime" / "models" / "default" / "manifest.json").read_text())
        training = manifest["training"]
        assert (training["run"], training["config_sha256"]) == (run, summary["config_sha256"])
        assert training["data_sha256"] == summary["data_sha256"]


def test_smpl_bandai_preset_is_the_default_recipe_with_spine2_masked():
    """`make noncommercial` trains CMU + Bandai with the default's recipe; only Bandai's constant spine2 is masked."""
    import dataclasses

    from train.config import PRESETS

    assert PRESETS["smpl-bandai"] == dataclasses.replace(PRESETS["smpl"], masked_joints=["spine2"])
