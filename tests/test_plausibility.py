"""``make plausibility`` (runtime.tools.plausibility): its figures follow their definitions, on small real sets.

The sets are converted here from ../shared (a few takes each, the layout of ``make data``), the model is the shipped
default; the real SMPL frames are ../shared/data/smpl_reference when present.
"""

import json
import shutil

import numpy as np
import pytest

from runtime import PosePrior
from runtime.convert import load_rest_joints, named_takes, save_amass
from runtime.tools import plausibility as P


@pytest.fixture(scope="module")
def sets(shared_data, tmp_path_factory):
    rest = load_rest_joints(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")
    out = tmp_path_factory.mktemp("smpl") / "cmu"
    out.mkdir()
    cmu, extra = shared_data / "cmu_pose", shared_data / "cmu_extra"

    def takes(path, every=1):
        return [
            (n, s, {k: (v[::every] if k in ("poses", "trans") else v) for k, v in t.items()})
            for n, s, t in named_takes(path, rest, fps=30)
        ]

    save_amass(takes(cmu / "train.npz", 20), rest, out / "train.npz")
    save_amass(takes(cmu / "val.npz", 10) + takes(extra / "asf_amc" / "zombie.amc"), rest, out / "val.npz")
    save_amass(takes(cmu / "test.npz", 10), rest, out / "test.npz")
    save_amass(
        takes(extra / "bvh_3dsmax" / "131_02.bvh") + takes(extra / "bvh_daz_style" / "11_01.bvh"),
        rest,
        out / "bvh_takes.npz",
    )
    return out


@pytest.fixture(scope="module")
def result(sets, shared_data):
    return P.evaluate(
        PosePrior.load().path, sets, shared_data / "smpl_reference" / "amass_dev_sample.npz", n_complete=20
    )


def test_figures_follow_their_definitions(result, sets, shared_data):
    prior = PosePrior.load()
    takes, _, names = P.body(sets / "bvh_takes.npz")
    lp = prior.log_prob(takes, rep="axis_angle")
    assert result["tau"] == pytest.approx(np.percentile(lp, 1), abs=1e-4)  # 1st percentile of the BVH takes
    assert result["real"]["BVH takes (11, 14, 131)"]["above_tau"] == pytest.approx((lp > result["tau"]).mean())
    for row in list(result["real"].values()) + list(result["glitched"].values()):
        assert 0.0 <= row["above_tau"] <= 1.0 and np.isfinite(row["median"])
    assert result["glitched"]["validation (08 + ASF/AMC): random rotations"]["above_tau"] == 0.0
    chosen = result["completion_iters"]
    gains = {int(k): v["gain"] for k, v in chosen["validation"].items()}
    assert set(gains) == set(P.COMPLETE_ITERS) and chosen["chosen"] == max(gains, key=gains.get)
    comp = result["completion_left_arm"]
    assert set(comp) == {
        "validation (08 + ASF/AMC), choosing",
        *names,
        "cmu_pose test (03)",
        "all reported (BVH takes + test)",
    }
    for v in comp.values():
        assert v["gain"] == pytest.approx(1 - v["prior_deg"] / v["mean_pose_deg"])
    parts = [comp[k] for k in (*names, "cmu_pose test (03)")]
    assert comp["all reported (BVH takes + test)"]["n"] == sum(v["n"] for v in parts)
    if (shared_data / "smpl_reference" / "amass_dev_sample.npz").is_file():
        assert set(result["nn_deg"]) == set(prior.joint_names)
        assert all(0.0 <= d < 60.0 for d in result["nn_deg"].values())
    if "best_threshold" in result:
        b = result["best_threshold"]
        assert 0.0 <= b["real_above_5pct_glitch_threshold"] <= 1.0
        assert 0.0 <= b["glitched_above_90pct_real_threshold"] <= 1.0
    md = P.markdown(result)
    assert f"tau = 1st percentile of log p on the converted BVH takes = {result['tau']:.1f}" in md
    assert f"{chosen['chosen']} L-BFGS iterations" in md


def test_record_threshold_keeps_the_model_loadable(result, sets, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(PosePrior.load().path, model)
    P.record_threshold(model, result["tau"], sets / "bvh_takes.npz")
    rec = json.loads((model / "manifest.json").read_text())["plausibility"]
    assert rec["tau"] == round(result["tau"], 4) and rec["percentile"] == 1 and len(rec["data_sha256"]) == 64
    assert PosePrior.load(model).manifest["plausibility"] == rec
    assert not [p for p in model.iterdir() if "partial" in p.name]


def test_best_threshold_is_the_trade_off_of_any_threshold():
    real = np.arange(100.0)  # 10th percentile 9.9
    glitched = np.arange(100.0) - 50.0  # 95th percentile 44.05
    b = P.best_threshold(real, glitched)
    assert b["real_above_5pct_glitch_threshold"] == pytest.approx(0.55)  # 45..99 of real above 44.05
    assert b["glitched_above_90pct_real_threshold"] == pytest.approx(0.40)  # glitched 10..49 above 9.9
