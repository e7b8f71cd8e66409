"""Take tools lose nothing and speak the source's frame numbers (issue 18, item 8; item 2: multi-take files)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from runtime import PosePrior, takes
from runtime.convert import convert, load_rest_joints, named_takes
from runtime.formats import read_motion


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def rest(shared_data):
    return load_rest_joints(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")


def test_a_multi_take_npz_written_by_convert_reads_back_as_its_takes(shared_data, rest, tmp_path):
    src = shared_data / "cmu_pose" / "val.npz"
    convert(src, tmp_path / "c.npz", rest)
    orig = named_takes(src, rest)
    back = named_takes(tmp_path / "c.npz", rest)
    assert [n for n, _, _ in back] == [n for n, _, _ in orig] and len(back) == 11
    assert [len(t["poses"]) for *_, t in back] == [len(t["poses"]) for *_, t in orig]
    tk = takes.read_take(tmp_path / "c.npz", rest)
    assert tk.names == [n for n, _, _ in orig] and tk.starts[1] == len(orig[0][2]["poses"])
    assert tk.subjects == [8] * 11
    r = cli("score", tmp_path / "c.npz", "--out", tmp_path / "s.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "s.json").read_text())
    assert [t["name"] for t in d["takes"]] == tk.names and "11 takes" in r.stdout
    assert all(a <= b for a, b in d["flagged_spans"])
    assert not any(a < s <= b for a, b in d["flagged_spans"] for s in tk.starts)  # no run crosses a take start


def test_daz_frames_are_numbered_as_in_the_bvh(shared_data, tmp_path):
    bvh = shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh"
    assert len(read_motion(bvh)) == 598
    tk = takes.read_take(bvh)
    np.testing.assert_array_equal(tk.frames, np.arange(1, 598))
    assert "frame 0" in tk.dropped[0] and "T-pose" in tk.dropped[0]
    r = cli("score", bvh, "--out", tmp_path / "s.json", cwd=tmp_path)
    assert r.returncode == 0 and "left out frame 0" in r.stdout, r.stdout + r.stderr
    d = json.loads((tmp_path / "s.json").read_text())
    s = takes.score(PosePrior.load(), tk)
    assert d["flagged"] == (s.flagged + 1).tolist() and d["flagged"]  # flagged frame N is BVH frame N
    assert d["dropped"] == tk.dropped
    r = cli("score", bvh, "--out", tmp_path / "s.csv", cwd=tmp_path)
    assert open(tmp_path / "s.csv").read().splitlines()[1].startswith("1,11_01,")


def test_repair_of_an_smplh_npz_keeps_every_other_array_byte_equal(shared_data, tmp_path):
    src = shared_data / "smpl_reference" / "amass_dev_sample.npz"
    if not src.is_file():
        pytest.skip(f"{src} absent")
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    arrays = {k: (v[:40] if v.ndim and len(v) == 500 else v) for k, v in arrays.items()}
    arrays["poses"] = arrays["poses"].astype(np.float32)
    arrays["dmpls"] = np.arange(40 * 8, dtype=np.float32).reshape(40, 8)  # an extra key
    np.savez(tmp_path / "in.npz", **arrays)
    lp = PosePrior.load().log_prob(arrays["poses"][:, 3:66].astype(np.float64), rep="axis_angle")
    tau = float(np.sort(lp)[2])  # 2 frames below it
    r = cli(
        "repair",
        tmp_path / "in.npz",
        "--flagged",
        "--threshold",
        tau,
        "--space",
        "ambient",
        "--smooth",
        "0",
        "--out",
        tmp_path / "out.npz",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as o:
        out = {k: o[k] for k in o.files}
    assert list(out) == list(arrays)
    rows = np.flatnonzero(lp < tau)
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        if k != "poses":
            assert out[k].tobytes() == v.tobytes(), k
    keep = np.ones(40, bool)
    keep[rows] = False
    assert out["poses"][keep].tobytes() == arrays["poses"][keep].tobytes()
    assert out["poses"][:, :3].tobytes() == arrays["poses"][:, :3].tobytes()
    assert out["poses"][:, 66:].tobytes() == arrays["poses"][:, 66:].tobytes()  # the hands
    assert (out["poses"][rows, 3:66] != arrays["poses"][rows, 3:66]).any()


def test_out_is_never_the_input(shared_data, rest, tmp_path):
    convert(shared_data / "cmu_pose" / "val.npz", tmp_path / "c.npz", rest)
    (tmp_path / "link.npz").symlink_to(tmp_path / "c.npz")
    before = (tmp_path / "c.npz").read_bytes()
    for cmd in (["convert", tmp_path / "c.npz"], ["repair", tmp_path / "c.npz", "--flagged"]):
        for out in (tmp_path / "c.npz", tmp_path / "link.npz"):
            r = cli(*cmd, "--out", out, cwd=tmp_path)
            assert r.returncode == 2 and "it is the input" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "c.npz").read_bytes() == before


def test_score_and_repair_take_several_files_and_folders(shared_data, tmp_path):
    daz = shared_data / "cmu_extra" / "bvh_daz_style"
    (tmp_path / "o").mkdir()
    r = cli(
        "score",
        daz,
        shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh",
        "--out",
        tmp_path / "all.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "all.json").read_text())
    assert [f["source"].split("/")[-1] for f in d["files"]] == ["11_01.bvh", "14_19.bvh", "131_01.bvh"]
    r = cli("score", daz, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["11_01.json", "14_19.json"]
    r = cli("repair", daz, "--flagged", "--out", tmp_path / "r.npz", cwd=tmp_path)
    assert r.returncode == 2 and "existing folder" in r.stderr and not (tmp_path / "r.npz").exists()
    (tmp_path / "empty").mkdir()
    r = cli("score", tmp_path / "empty", cwd=tmp_path)
    assert r.returncode == 2 and "no takes" in r.stderr
