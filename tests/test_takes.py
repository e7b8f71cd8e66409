"""The take tools (runtime/takes.py, `poseprior score` / `poseprior repair`) on real takes from ../shared."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import PosePrior, rotations, takes
from runtime.convert import load_rest_joints
from runtime.fit import encode
from runtime.formats import read_amass
from runtime.glitch import corrupt

ARM = ["left_collar", "left_shoulder", "left_elbow", "left_wrist"]


@pytest.fixture(scope="module")
def prior() -> PosePrior:
    return PosePrior.load()


@pytest.fixture(scope="module")
def daz_take(shared_data) -> Path:
    return shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh"


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def glitched(take: takes.Take, frames: np.ndarray, seed: int = 0) -> takes.Take:
    """``take`` with 3 joints of each of ``frames`` rotated by 60 degrees (the demo's corruption)."""
    aa = take.poses[:, 3:66].reshape(-1, 21, 3).copy()
    aa[frames] = corrupt(aa[frames], np.random.default_rng(seed), 3, 60)
    poses = take.poses.copy()
    poses[:, 3:66] = aa.reshape(-1, 63)
    return takes.Take(take.source, poses, take.trans, take.fps, take.names, take.starts, take.subjects)


def geodesic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 21) degrees between the body joints of two (N, 72) axis-angle pose arrays."""
    R = [rotations.axis_angle_to_matrix(p[:, 3:66].reshape(-1, 21, 3)) for p in (a, b)]
    return rotations.geodesic_deg(*R)


def test_runs_split_at_gaps_and_take_starts():
    assert takes.runs(np.array([], int), [0]) == []
    assert takes.runs(np.array([2, 3, 4, 7, 8, 10]), [0]) == [(2, 4), (7, 8), (10, 10)]
    assert takes.runs(np.array([3, 4, 5, 6]), [0, 5]) == [(3, 4), (5, 6)]


def test_score_is_log_p_of_the_converted_frames(prior, daz_take):
    take = takes.read_take(daz_take)
    s = takes.score(prior, take, chunk=100)
    assert len(s.log_prob) == len(take.poses) == 597
    np.testing.assert_array_equal(s.log_prob, prior.log_prob(take.poses[:, 3:66], rep="axis_angle"))
    tau = prior.manifest["plausibility"]["tau"]
    assert s.threshold == tau
    np.testing.assert_array_equal(s.flagged, np.flatnonzero(s.log_prob < tau))
    assert 0 < len(s.flagged) < len(take.poses)  # this Daz take dips below tau for part of it
    assert sum(b - a + 1 for a, b in s.flagged_spans()) == len(s.flagged)
    assert takes.score(prior, take, threshold=-1e9).flagged.size == 0


def test_score_command_writes_json_csv_and_plot(prior, daz_take, tmp_path):
    r = cli("score", daz_take, "--out", tmp_path / "s.json", "--plot", tmp_path / "s.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "s.json").read_text())
    assert len(d["log_prob"]) == d["frames"] == 597 and d["threshold"] == prior.manifest["plausibility"]["tau"]
    assert d["flagged"] == [d["source_frame"][t] for t, v in enumerate(d["log_prob"]) if v < d["threshold"]]
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert f"{len(d['flagged'])} frames flagged" in r.stdout
    r = cli("score", daz_take, "--out", tmp_path / "s.csv", "--threshold", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 597 and all((float(x["log_prob"]) < 0) == (x["flagged"] == "1") for x in rows)
    assert abs(float(rows[120]["time_s"]) - 1.0) < 1e-3  # 120 fps


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "s.txt"], "must end in .json or .csv"),
        (["--out", "no_dir/s.json"], "does not exist"),
        (["--plot", "s.bmp"], "--plot"),
        (["--threshold", "nan"], "threshold"),
        (["--fps", "-3"], "--fps"),
        (["--model", "no_model"], "no model directory"),
    ],
)
def test_score_refuses_bad_arguments(daz_take, tmp_path, args, message):
    r = cli("score", daz_take, *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


def test_bad_takes_are_named(shared_data, tmp_path):
    src = (shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh").read_text().splitlines()
    (tmp_path / "cut.bvh").write_text("\n".join(src[: len(src) // 2]) + "\n1.0 2.0\n")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    for name, message in (("cut.bvh", "cut.bvh"), ("x.npz", "x.npz"), ("absent.bvh", "absent.bvh")):
        r = cli("score", tmp_path / name, "--out", tmp_path / "s.json", cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "s.json").exists()


def test_a_model_without_a_recorded_threshold_needs_one(daz_take, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(takes.__file__.replace("takes.py", "models/default"), model)
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["plausibility"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    r = cli("score", daz_take, "--model", model, cwd=tmp_path)
    assert r.returncode == 2 and "--threshold" in r.stderr and "records no plausibility threshold" in r.stderr
    r = cli("score", daz_take, "--model", model, "--threshold", "-50", cwd=tmp_path)
    assert r.returncode == 0 and "threshold -50 (given by the user)" in r.stdout, r.stdout + r.stderr


def test_a_model_in_another_convention_is_refused(tiny_model, daz_take, tmp_path):
    r = cli("score", daz_take, "--model", tiny_model, cwd=tmp_path)
    assert r.returncode == 2 and "not 'smpl'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_amass_without_trans_or_rate_scores_and_is_refused_where_a_rate_is_needed(prior, shared_data, tmp_path):
    src = tmp_path / "bare.npz"
    take = takes.read_take(shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh")
    np.savez(src, poses=take.poses[:50])  # poses only
    s = takes.score(prior, takes.read_take(src))
    assert len(s.log_prob) == 50 and s.to_dict()["fps"] is None
    with pytest.raises(ValueError, match="no frame rate"):
        takes.repair(prior, takes.read_take(src), flagged=True, threshold=1e9)
    r = cli("convert", src, "--out", tmp_path / "c.npz", cwd=tmp_path)
    assert r.returncode == 2 and "frame rate" in r.stderr and not (tmp_path / "c.npz").exists(), r.stderr
    r = cli(
        "repair",
        src,
        "--flagged",
        "--smooth",
        "0",
        "--threshold",
        "1e9",
        "--space",
        "ambient",
        "--out",
        tmp_path / "r.npz",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr  # an AMASS input is written back whole: no rate needed
    with np.load(tmp_path / "r.npz") as z:
        assert z.files == ["poses"] and z["poses"].shape == (50, 72)


def test_the_run_objective_gradient_is_its_derivative(prior, daz_take):
    """The latent run objective (``takes.RunObjective``): its gradient against central differences."""
    x = takes.read_take(daz_take).body_6d
    free = np.zeros((6, 21), bool)
    free[:, [3, 16]] = True
    obj = takes.RunObjective(prior, x[100:106], free, x[99], x[106], 1.0, 1e3, 5e3)
    rng = np.random.default_rng(0)
    p0 = encode(prior, x[100:106])[0] + 0.05 * rng.standard_normal((6, prior.dim)).astype(np.float32)
    d = rng.standard_normal(p0.shape)
    p0, d = p0.reshape(1, -1).astype(np.float32), (d / np.linalg.norm(d)).reshape(1, -1).astype(np.float32)
    f, cache = obj.value(np.arange(1), p0)
    g = obj.gradient(np.arange(1), p0, cache, np.arange(1))[0]
    h = 1e-2
    fd = (obj.value(np.arange(1), p0 + h * d)[0][0] - obj.value(np.arange(1), p0 - h * d)[0][0]) / (2 * h)
    assert abs(fd - g @ d[0]) <= 0.01 * abs(g @ d[0]) + 0.05, (fd, g @ d[0])


def test_repair_flagged_frames_of_a_glitched_take(prior, shared_data, tmp_path):
    take = takes.read_take(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", fps=30)
    rng = np.random.default_rng(0)
    frames = np.sort(rng.choice(np.arange(5, len(take.poses) - 5), 25, replace=False))
    bad = glitched(take, frames)
    r = takes.repair(prior, bad, flagged=True, space="ambient")
    flagged = np.flatnonzero(r.log_prob_before < r.threshold)
    assert len(flagged) >= 5 and set(flagged) <= set(frames)  # only glitched frames are flagged
    assert (r.log_prob_after[flagged] >= r.threshold).mean() >= 0.9
    err_before, err_after = geodesic(bad.poses, take.poses), geodesic(r.take.poses, take.poses)
    glitch = err_before > 1.0
    freed = r.mask
    assert err_after[freed & glitch].mean() < 0.7 * err_before[freed & glitch].mean()
    # the broken joints themselves are freed (the observed frames around each one tell them from their neighbours:
    # by log p alone most of them; the neck can be taken for a broken head)
    assert (freed & glitch)[flagged].sum() >= 0.85 * glitch[flagged].sum()  # the shipped default: 58 of 66
    np.testing.assert_array_equal(
        r.take.poses[:, 3:66].reshape(-1, 21, 3)[~freed], bad.poses[:, 3:66].reshape(-1, 21, 3)[~freed]
    )  # the rest exactly as given
    np.testing.assert_array_equal(r.take.poses[:, :3], bad.poses[:, :3])
    np.testing.assert_array_equal(r.take.trans, bad.trans)
    out = takes.write_take(r.take, load_rest_joints(), tmp_path / "r.npz")
    back = read_amass(out)
    np.testing.assert_allclose(back["poses"], r.take.poses, atol=1e-6)


@pytest.mark.parametrize("space", ["latent", "ambient"])
def test_repair_named_joints_with_smoothness(prior, shared_data, space):
    """Named joints in every frame: per frame from f(0), then the whole take as one run (latent: ``RunObjective``;
    ambient: the whitened chain of runtime.chain)."""
    full = takes.read_take(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", fps=30)
    n = 24
    take = takes.Take(full.source, full.poses[:n], full.trans[:n], full.fps, full.names, [0], full.subjects)
    idx = [prior.joint_names.index(j) for j in ARM]
    rough = takes.repair(prior, take, joints=ARM, space=space, smooth=0.0, iters=20)
    smooth = takes.repair(prior, take, joints=ARM, space=space, smooth=1.0, iters=20, run_iters=100)
    for r in (rough, smooth):
        assert r.mask[:, idx].all() and r.mask.sum() == n * len(idx)
        err = geodesic(r.take.poses, take.poses)
        assert err[:, idx].mean() < 35 and np.abs(np.delete(err, idx, 1)).max() < 1e-3
    steps = [
        rotations.geodesic_deg(
            *(lambda R: (R[1:], R[:-1]))(
                rotations.axis_angle_to_matrix(r.take.poses[:, 3:66].reshape(-1, 21, 3)[:, idx])
            )
        )
        for r in (rough, smooth)
    ]
    assert np.percentile(steps[1], 99) < 0.5 * np.percentile(steps[0], 99)  # the smoothness term is at work


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--joints NAMES or --flagged"),
        (["--joints", "left_elbow", "--flagged"], "one of the two"),
        (["--joints", "left_ebow"], "unknown joint names"),
        (["--joints", "left_elbow", "--threshold", "3"], "only with --flagged"),
        (["--flagged", "--out", "r.bvh"], "must end in .npz"),
    ],
)
def test_repair_refuses_bad_arguments(daz_take, tmp_path, args, message):
    if "--out" not in args:
        args = args + ["--out", "r.npz"]
    r = cli("repair", daz_take, *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


def test_repair_command_on_a_real_take(daz_take, tmp_path):
    r = cli(
        "repair",
        daz_take,
        "--flagged",
        "--space",
        "ambient",
        "--out",
        tmp_path / "r.npz",
        "--plot",
        tmp_path / "r.png",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "still below the threshold: 0" in r.stdout, r.stdout
    back = read_amass(tmp_path / "r.npz")
    assert back["poses"].shape == (597, 72) and abs(back["mocap_framerate"] - 120) < 0.01
    assert (tmp_path / "r.png").is_file()


def test_a_model_from_another_conversion_version_is_named(prior, daz_take, tmp_path):
    """Scores of a model trained on takes of an older conversion are of slightly different poses: say so (a
    warning in Python, a note on stderr from the CLI), and still score."""
    import shutil
    import warnings

    model = tmp_path / "old"
    shutil.copytree(prior.path, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["skeleton"]["conversion"] = "smpl-segments-1"
    (model / "manifest.json").write_text(json.dumps(manifest))
    old = PosePrior.load(model)
    with pytest.warns(UserWarning, match="smpl-segments-1"):
        takes.check_smpl_prior(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        takes.check_smpl_prior(prior)  # the shipped model: same version, silent
    r = cli("score", daz_take, "--model", model, cwd=tmp_path)
    assert r.returncode == 0 and "note:" in r.stderr and "smpl-segments-1" in r.stderr, r.stderr
