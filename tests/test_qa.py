"""Take QA on real takes: the motion-aware detector (runtime.detect), ``poseprior calibrate`` (runtime.calibrate),
``score``/``repair`` with a calibrated model, and the benchmark's glitch injection (runtime.qabench)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from runtime import qabench, rotations
from runtime.calibrate import calibrate
from runtime.cli import main as poseprior
from runtime.convert import load_rest_joints
from runtime.detect import (
    SWAP_FLOOR,
    SWAP_PARTS,
    Calibration,
    body_matrices,
    hold_statistic,
    joint_statistic,
    swap_statistic,
)
from runtime.manifest import ModelError, sha256_file
from runtime.prior import DEFAULT_MODEL_DIR, PosePrior
from runtime.takes import calibration, read_take, repair, score

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(poseprior, [str(a) for a in args])


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory) -> Path:
    """The shipped model calibrated on the ASF/AMC takes of cmu_extra at 30 fps (the validation takes)."""
    out = tmp_path_factory.mktemp("qa") / "calibrated"
    calibrate([shared_data / "cmu_extra" / "asf_amc"], out, fps=30)
    return out


@pytest.fixture(scope="module")
def take(shared_data):
    return read_take(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", fps=30)


def glitched(take, frames: slice, joint: str, deg: float):
    """``take`` with ``joint`` turned by ``deg`` about x (its local frame) in ``frames``."""
    poses = take.poses.copy()
    R = body_matrices(poses)
    j = rotations.JOINT_NAMES.index(joint)
    R[frames, j] = R[frames, j] @ rotations.axis_angle_to_matrix(np.array([np.radians(deg), 0, 0]))
    poses[:, 3:66] = rotations.matrix_to_axis_angle(R).reshape(len(R), 63)
    return type(take)(take.source, poses, take.trans, take.fps, take.names, take.starts, take.subjects)


def test_calibrated_detector_flags_few_clean_frames_and_finds_the_glitch_and_its_joint(model, take):
    prior = PosePrior.load(model)
    clean = score(prior, take)
    assert clean.detection is not None
    assert len(clean.flagged) / len(take.poses) <= 0.02  # an unseen subject (131), clean
    bad = glitched(take, slice(100, 106), "left_elbow", 40.0)
    s = score(prior, bad)
    assert set(range(100, 106)) <= set(s.flagged.tolist())
    span = [sp for sp in s.detection.spans if sp[0] <= 100 < sp[1]]
    assert span and span[0][:2] == (100, 106), s.detection.spans
    assert rotations.JOINT_NAMES.index("left_elbow") in span[0][2]
    d = s.to_dict()
    assert d["flagged"] == s.flagged.tolist() and len(d["suspect_joints"]) == len(d["flagged"])
    assert {"start": 100, "end": 106} == {
        k: d["spans"][[x["start"] for x in d["spans"]].index(100)][k] for k in ("start", "end")
    }
    assert len(d["score"]) == len(take.poses)


def test_a_real_fast_move_without_return_is_not_a_glitch(take):
    """A joint that turns 60 degrees within one frame and stays there has no return: no span pairs it."""
    R = body_matrices(take.poses)
    j = rotations.JOINT_NAMES.index("right_knee")
    R[150:, j] = R[150:, j] @ rotations.axis_angle_to_matrix(np.array([np.radians(60), 0, 0]))
    S = joint_statistic(R)
    bad = joint_statistic(body_matrices(glitched(take, slice(150, 156), "right_knee", 60.0).poses))
    assert bad[150:156, j].min() > 4 * max(S[140:170, j].max(), 0.1)


def test_a_held_joint_is_scored_by_its_release_and_a_still_body_is_not(model, take):
    """A joint frozen at its last value for 10 frames while the body moves, then released (the hold cue of
    runtime.detect); the whole body still for those frames (a pause) is no hold."""
    R = body_matrices(take.poses)
    j = rotations.JOINT_NAMES.index("right_elbow")
    held = R.copy()
    held[200:210, j] = R[199, j]
    S, clean = joint_statistic(held), joint_statistic(R)
    assert S[200:210, j].min() > 10 * max(clean[190:220, j].max(), 0.1)  # the shipped default: 23.4 vs 0.5
    paused = R.copy()
    paused[200:210] = R[199]
    v = np.zeros(R.shape[:2])
    v[1:] = rotations.geodesic_deg(paused[1:], paused[:-1])
    assert not hold_statistic(v).any()
    poses = take.poses.copy()
    poses[:, 3:66] = rotations.matrix_to_axis_angle(held).reshape(len(R), 63)
    s = score(PosePrior.load(model), type(take)(take.source, poses, take.trans, take.fps, take.names, take.starts))
    span = [sp for sp in s.detection.spans if sp[0] <= 205 < sp[1]]
    assert span and span[0][0] <= 200 and span[0][1] >= 210 and j in span[0][2], s.detection.spans


def swapped(take, frames: slice):
    """``take`` with the left and right arm chains (``SWAP_PARTS``) exchanged and mirrored in ``frames``."""
    poses = take.poses.copy()
    R = body_matrices(poses)
    G = R.copy()
    for p in SWAP_PARTS:
        left, right = rotations.JOINT_NAMES.index(f"left_{p}"), rotations.JOINT_NAMES.index(f"right_{p}")
        G[frames, left], G[frames, right] = (
            rotations.mirror_matrix(R[frames, right]),
            rotations.mirror_matrix(R[frames, left]),
        )
    poses[:, 3:66] = rotations.matrix_to_axis_angle(G).reshape(len(G), 63)
    return type(take)(take.source, poses, take.trans, take.fps, take.names, take.starts, take.subjects)


def test_a_swap_whose_jumps_are_small_next_to_the_motion_is_found_by_the_swap_cue(model, take):
    """131_01, arms exchanged over frames 143-150: every frame is >= 27 deg off the clean take, but the jumps in
    and out are small next to the arms' own speed there, so the jump-and-return statistic alone (the detector
    before version jump-return-hold-swap-3) stays below its threshold; exchanging the span back makes the motion
    smooth, which is what the swap cue scores."""
    prior = PosePrior.load(model)
    cal = Calibration.from_dict(prior.manifest["detector"])
    bad = swapped(take, slice(143, 151))
    G, R = body_matrices(bad.poses), body_matrices(take.poses)
    assert rotations.geodesic_deg(G[143:151], R[143:151]).max(1).min() > 25
    S, W = joint_statistic(G), swap_statistic(G)
    assert (S[143:151] / (cal.q * cal.c)).max() < 1  # what the jump-and-return statistic says
    assert (W[143:151] / (cal.qw * cal.c)).max(1).min() >= 1  # the swap cue, on every frame of the swap
    assert swap_statistic(R).max() < SWAP_FLOOR  # the clean take: exchanging arms back never makes it smoother
    s = score(prior, bad)
    assert set(range(143, 151)) <= set(s.flagged.tolist()), s.detection.spans
    span = [sp for sp in s.detection.spans if sp[0] <= 146 < sp[1]]
    arms = {rotations.JOINT_NAMES.index(f"{side}_{p}") for p in SWAP_PARTS for side in ("left", "right")}
    assert span and span[0][:2] == (143, 151) and set(span[0][2]) == arms, s.detection.spans  # the whole chains


def test_repair_frees_the_span_leaves_other_frames_byte_identical_and_joins_smoothly(model, take):
    prior = PosePrior.load(model)
    bad = glitched(take, slice(200, 210), "right_shoulder", 70.0)
    r = repair(prior, bad, flagged=True, space="ambient")
    assert r.detection is not None and r.mask[200:210, rotations.JOINT_NAMES.index("right_shoulder")].all()
    untouched = ~r.mask.any(1)
    assert untouched.sum() > 0.9 * len(untouched)
    assert r.take.poses[untouched].tobytes() == bad.poses[untouched].tobytes()
    R0, R1 = body_matrices(take.poses), body_matrices(r.take.poses)
    j = rotations.JOINT_NAMES.index("right_shoulder")
    err = rotations.geodesic_deg(R1[200:210, j], R0[200:210, j])
    assert np.median(err) < 0.35 * 70  # the shipped default: 22.1 deg (-68 %)
    steps = rotations.geodesic_deg(R1[199:211, j], R1[200:212, j])  # into, through and out of the span
    own = rotations.geodesic_deg(R0[1:, j], R0[:-1, j])
    assert steps.max() <= max(3 * np.percentile(own, 99), 10.0), (steps, np.percentile(own, 99))
    again = repair(prior, bad, flagged=True, space="ambient", scored=score(prior, bad))  # the score reused
    assert again.take.poses.tobytes() == r.take.poses.tobytes() and again.detection.spans == r.detection.spans


def test_calibrate_records_a_checked_manifest_field(model, shared_data):
    m = json.loads((model / "manifest.json").read_text())
    det = m["detector"]
    assert det["false_flag_rate"] == 0.01 and len(det["joint_scale"]) == 21 and det["fps"] == 30.0
    files = sorted((shared_data / "cmu_extra" / "asf_amc").glob("*.amc"))
    assert [t["file"] for t in det["takes"]] == [f.name for f in files]
    assert det["takes"][0]["sha256"] == sha256_file(files[0])
    assert m["plausibility"]["data_sha256"] == det["data_sha256"]
    bad = model.parent / "edited"
    shutil.copytree(model, bad)
    m["detector"]["takes"][0]["sha256"] = "0" * 64  # the record no longer matches its digest
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="data_sha256"):
        PosePrior.load(bad)
    m = json.loads((model / "manifest.json").read_text())
    m["detector"]["joint_scale"] = m["detector"]["joint_scale"][:20]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="joint_scale"):
        PosePrior.load(bad)
    m = json.loads((model / "manifest.json").read_text())
    assert m["detector"]["params"]["min_held"] == 4 and m["detector"]["params"]["still"] == 0.05
    m["detector"]["params"]["min_held"] = 0
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="min_held"):
        PosePrior.load(bad)
    m = json.loads((model / "manifest.json").read_text())
    assert len(m["detector"]["swap_scale"]) == 4 and min(m["detector"]["swap_scale"]) >= SWAP_FLOOR
    m["detector"]["swap_scale"] = [0.5, 0.5, 0.5, -1.0]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="swap_scale"):
        PosePrior.load(bad)
    del m["detector"]["swap_scale"]  # a current-version record without it: refused when the detector is built
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="swap_scale"):
        calibration(PosePrior.load(bad))
    m["detector"]["version"] = "jump-return-hold-2"  # a calibration by the previous detector
    (bad / "manifest.json").write_text(json.dumps(m))
    r = run_cli("score", shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh", "--model", bad)
    assert r.exit_code == 2 and "calibrate the model again" in r.output and r.output.count("\n") == 1, r.output


def test_calibrate_cli_bad_input_one_line_exit_2_nothing_left(shared_data, tmp_path):
    out = tmp_path / "m"
    for args in (
        [tmp_path / "missing.bvh"],
        [shared_data / "cmu_pose" / "README.md"],
        [shared_data / "cmu_extra" / "asf_amc" / "35_01.amc", "--false-flag-rate", "0.7"],
        [shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh", "--fps", "1"],
    ):
        r = run_cli("calibrate", *args, "--out", out)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1 and "Traceback" not in r.output, r.output
        assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    (tmp_path / "taken").mkdir()
    r = run_cli("calibrate", shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh", "--out", tmp_path / "taken")
    assert r.exit_code == 2 and "exists" in r.output


def test_calibrate_warns_when_a_take_is_training_data(shared_data, tmp_path):
    src = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, src)
    take = shared_data / "cmu_extra" / "bvh_daz_style" / "14_19.bvh"
    m = json.loads((src / "manifest.json").read_text())
    m["training"]["data_sha256"]["sources/14_19.bvh"] = sha256_file(take)
    (src / "manifest.json").write_text(json.dumps(m))
    r = CliRunner().invoke(poseprior, ["calibrate", str(take), "--model", str(src), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "warning: 14_19.bvh: the model was trained on this file" in r.output
    r = run_cli("calibrate", take, "--out", tmp_path / "m2")
    assert r.exit_code == 0 and "warning:" not in r.output


def test_score_and_repair_cli_with_a_calibrated_model(model, shared_data, tmp_path):
    take = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_03.bvh"
    r = run_cli(
        "score",
        take,
        "--fps",
        "30",
        "--model",
        model,
        "--out",
        tmp_path / "s.json",
        "--plot",
        tmp_path / "s.png",
        "--progress",
    )
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "s.json").read_text())
    assert {"flagged", "spans", "suspect_joints", "score"} <= set(d) and (tmp_path / "s.png").stat().st_size > 0
    r = run_cli("score", take, "--fps", "30", "--model", model, "--out", tmp_path / "s.csv")
    assert r.exit_code == 0 and (tmp_path / "s.csv").read_text().splitlines()[0].endswith("score,suspect_joints")
    r = run_cli("score", take, "--model", model)  # 120 fps take, 30 fps calibration
    assert r.exit_code == 0 and "calibrated on takes at 30 fps" in r.output
    r = run_cli("repair", take, "--fps", "30", "--flagged", "--model", model, "--out", tmp_path / "r.npz")
    assert r.exit_code == 0 and (tmp_path / "r.npz").is_file(), r.output


def test_calibrate_needs_no_torch(shared_data, tmp_path):
    """calibrate and score run with torch unimportable (as in a plain pip install)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from runtime.cli import main\n"
        f"main([{str(shared_data / 'cmu_extra' / 'bvh_daz_style' / '11_01.bvh')!r}, '--out', "
        f"{str(tmp_path / 'm')!r}], prog_name='poseprior', standalone_mode=True)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code.replace("main([", "main(['calibrate', ")], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "torch" not in r.stderr and (tmp_path / "m" / "manifest.json").is_file()


def test_injected_glitches_are_seeded_and_what_they_say(shared_data):
    rest = load_rest_joints()
    R = body_matrices(read_take(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_02.bvh", fps=30).poses)
    G1, s1 = qabench.inject(R, np.random.default_rng(3), rest)
    G2, s2 = qabench.inject(R, np.random.default_rng(3), rest)
    assert np.array_equal(G1, G2) and repr(s1) == repr(s2) and len(s1) >= 4
    change = rotations.geodesic_deg(G1, R)
    inside = np.zeros(len(R), bool)
    for kind, a, b, size, joints in s1:
        inside[a:b] = True
        if kind == "flip":
            assert np.allclose(change[a:b, joints[0]], 180, atol=1e-3)
        if kind == "offset":
            assert np.allclose(change[a:b, joints], size, atol=1e-3)
        if kind == "swap":
            l, r = rotations.JOINT_NAMES.index("left_elbow"), rotations.JOINT_NAMES.index("right_elbow")
            assert np.allclose(G1[a:b, l], rotations.MIRROR @ R[a:b, r] @ rotations.MIRROR)
    assert change[~inside].max() < 1e-3  # degrees (arccos near 1)


@pytest.mark.parametrize("args", [["--seeds", "0"], ["--spacing", "1"]])
def test_qabench_refuses_a_bad_seed_count_or_spacing_exit_2_nothing_written(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        qabench.main([*args, "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and args[0] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
