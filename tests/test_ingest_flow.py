"""Train on your own takes, end to end: a folder mixing Daz-style BVH, 3dsMax-style BVH, ASF/AMC and an AMASS-style
npz (links to ../shared files in tmp_path, never committed) -> `poseprior train` -> `export` -> (calibrate) ->
`poseprior score` of the held-out take by the runtime; and the same log p from a model trained on the
`poseprior convert` outputs of the same files (byte-identical arrays). Plus the ingest's cache, errors and --map."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.cli import main as poseprior
from runtime.convert import CONVERSION_VERSION, load_rest_joints, named_takes, save_amass
from train import ingest

FPS = "30"
TRAIN = {
    "daz/14_19.bvh": "bvh_daz_style/14_19.bvh",
    "max/131_01.bvh": "bvh_3dsmax/131_01.bvh",
    "asf/35_01.amc": "asf_amc/35_01.amc",
    "asf/35.asf": "asf_amc/35.asf",
}
HELD_OUT = "daz/11_01.bvh"  # subject 11: the split by subject puts it in validation (never trained on)
HAS_CALIBRATE = "calibrate" in poseprior.list_commands(None)


def cli(*args):
    r = CliRunner().invoke(poseprior, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r


def refused(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.output, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def takes(shared_data, tmp_path_factory) -> Path:
    """The mixed folder: links to cmu_extra files, and an AMASS-style npz written by save_amass from a converted take."""
    root = tmp_path_factory.mktemp("takes") / "takes"
    extra = shared_data / "cmu_extra"
    for rel, src in {**TRAIN, HELD_OUT: "bvh_daz_style/11_01.bvh"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(extra / src)
    rest = load_rest_joints()
    (root / "amass").mkdir()
    save_amass(named_takes(extra / "bvh_3dsmax" / "131_02.bvh", rest, fps=30.0), rest, root / "amass" / "131_02.npz")
    return root


def train_export_score(
    data: Path, work: Path, cache: Path, take: Path, calibration_take: Path
) -> tuple[Path, dict, np.ndarray]:
    run, model = work / "run", work / "model"
    r = cli(
        "train",
        "--data",
        data,
        "--out",
        run,
        "--config",
        "tiny",
        "--fps",
        FPS,
        "--cache",
        cache,
        "--max-steps",
        "40",
        "--quiet",
    )
    assert r.stdout.count("\n") <= 4, r.stdout  # a few lines, not the whole summary
    cli("export", run, "--out", model, "--onnx-only")
    if HAS_CALIBRATE:  # tau from clean takes of the user's own domain, not trained on (131_03: not in the folder)
        cli("calibrate", calibration_take, "--model", model, "--out", work / "calibrated", "--fps", FPS)
        model, threshold = work / "calibrated", ()
    else:  # STEP LEFT OPEN: `poseprior calibrate` is not on this branch yet; score with an explicit tau
        threshold = ("--threshold", "0")
    cli("score", take, "--model", model, "--fps", FPS, "--out", work / "score.json", *threshold)
    score = json.loads((work / "score.json").read_text())
    return run, json.loads((run / "data.json").read_text()), np.array(score["log_prob"], np.float32)


def test_train_export_score_on_a_mixed_folder(takes, shared_data, tmp_path):
    cache = tmp_path / "cache"
    clean = shared_data / "cmu_extra" / "bvh_3dsmax" / "131_03.bvh"
    run, record, log_p = train_export_score(takes, tmp_path / "a", cache, takes / HELD_OUT, clean)
    # what the run records: every source with its sha256, the skeleton detected, the conversion version, the split
    skeletons = {Path(s["path"]).name: s["skeleton"] for s in record["sources"]}
    assert skeletons == {
        "14_19.bvh": "cgspeed_daz",
        "11_01.bvh": "cgspeed_daz",
        "131_01.bvh": "cgspeed_3dsmax",
        "35_01.amc": "cmu_asf",
        "131_02.npz": "smpl (AMASS)",
    }
    assert all(len(s["sha256"]) == 64 for s in record["sources"]) and record["conversion"] == CONVERSION_VERSION
    assert record["split"] == "by subject" and record["units"]["val"] == ["subject 11"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skeleton"]["name"] == "smpl" and summary["skeleton"]["conversion"] == CONVERSION_VERSION
    assert len(log_p) == 150 and np.isfinite(log_p).all()  # 597 frames at 120 fps, less the T-pose, at 30 fps

    # the same files through `poseprior convert` first: the same arrays, the same training, the same log p
    converted = tmp_path / "converted"
    for src in sorted(p for p in takes.rglob("*") if p.suffix in (".bvh", ".amc", ".npz")):
        out = converted / src.relative_to(takes).with_suffix(".npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        cli("convert", src, "--out", out, "--fps", FPS)
    _, record_b, log_p_b = train_export_score(converted, tmp_path / "b", cache, takes / HELD_OUT, clean)
    assert record_b["units"] == record["units"] and record_b["poses"] == record["poses"]
    # train + val, axis-angle + 6D, of each run: the two runs' arrays are byte-identical (each content twice)
    import hashlib

    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.glob("convert/set-*.npy")]
    assert len(digests) == 8 and all(digests.count(d) == 2 for d in digests)
    np.testing.assert_array_equal(log_p_b, log_p)


def test_cache_second_run_converts_nothing(takes, tmp_path):
    cache = ingest.cache_dir(tmp_path / "c")
    files = ingest.collect([takes])
    first = ingest.convert_sources(files, cache, fps=30.0, jobs=2, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(stamps) == 2 * len(files)
    again = ingest.convert_sources(files, cache, fps=30.0, jobs=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.poses, b.poses)
        assert isinstance(b.poses, np.memmap)
    # the key holds the conversion version, rest joints, fps and joint map: another fps is another entry
    assert (
        ingest.source_key(files[0], load_rest_joints(), 30.0, None)[0]
        != ingest.source_key(files[0], load_rest_joints(), 60.0, None)[0]
    )


def test_bad_take_is_named_and_skip_bad_goes_on(takes, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(takes, data, symlinks=True)
    (data / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    r = CliRunner().invoke(
        poseprior,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--config",
            "tiny",
            "--cache",
            str(tmp_path / "c"),
            "--fps",
            FPS,
            "--quiet",
        ],
    )
    refused(r, "broken.bvh", "--skip-bad")
    assert not (tmp_path / "run").exists()
    sets, record = ingest.load_takes(
        [data], cache=tmp_path / "c", fps=30.0, skip_bad=True, progress=False, log=lambda m: None
    )
    assert "broken.bvh" not in {Path(s["path"]).name for s in record["sources"]} and len(sets["train"]) > 0


def test_joint_map_option(takes, tmp_path):
    """--map: a renamed rig converts with the user's map, and only with it."""
    from dataclasses import replace

    from runtime.formats import JOINT_MAPS, read_bvh, write_bvh

    m = read_bvh(takes / "max" / "131_01.bvh")
    renamed = replace(m, names=[f"my_{n}" for n in m.names], end_sites={f"my_{k}": v for k, v in m.end_sites.items()})
    path = write_bvh(renamed, tmp_path / "131_01.bvh")
    jm = {k: f"my_{v}" for k, v in JOINT_MAPS["cgspeed_3dsmax"].items()}
    (tmp_path / "map.json").write_text(json.dumps(jm))
    r = CliRunner().invoke(poseprior, ["convert", str(path), "--out", str(tmp_path / "x.npz")])
    refused(r, "skeleton not recognised")
    cli("convert", path, "--out", tmp_path / "mapped.npz", "--map", tmp_path / "map.json")
    assert np.load(tmp_path / "mapped.npz")["poses"].shape[1] == 72
    (tmp_path / "bad.json").write_text(json.dumps({"hips": "x"}))
    refused(
        CliRunner().invoke(
            poseprior, ["convert", str(path), "--out", str(tmp_path / "y.npz"), "--map", str(tmp_path / "bad.json")]
        ),
        "bad.json",
        "joint map keys",
    )
    cli("score", path, "--map", tmp_path / "map.json", "--fps", FPS)
