"""The evaluation (``train/evaluation``, ``poseprior evaluate``): its metric formulas on cases with known answers,
and an end-to-end run on the tiny exported model with the committed baselines (files, keys, determinism)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from click.testing import CliRunner

from runtime import rotations
from train.evaluation import evaluate, metrics

REPO = Path(__file__).resolve().parents[1]


# --- metric formulas ---------------------------------------------------------------------------------------------
def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((500, 12)) @ np.random.default_rng(1).standard_normal((12, 12))
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-7)


def test_fid_closed_forms():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(5)
    # equal covariances: FID = |mu1 - mu2|^2
    a = rng.standard_normal((5, 5))
    s = a @ a.T + np.eye(5)
    assert metrics.fid_from_stats(np.zeros(5), s, mu, s) == pytest.approx(mu @ mu, rel=1e-9)
    # isotropic: N(0, a^2 I) vs N(mu, b^2 I) in d dims: |mu|^2 + d (a - b)^2
    assert metrics.fid_from_stats(np.zeros(5), 4.0 * np.eye(5), mu, 9.0 * np.eye(5)) == pytest.approx(mu @ mu + 5.0)
    # general (non-commuting) covariances: the textbook formula with scipy's sqrtm
    b = rng.standard_normal((5, 5))
    s2 = b @ b.T + 0.1 * np.eye(5)
    expect = mu @ mu + np.trace(s + s2 - 2.0 * scipy.linalg.sqrtm(s @ s2).real)
    assert metrics.fid_from_stats(np.zeros(5), s, mu, s2) == pytest.approx(expect, rel=1e-8)


def test_fid_of_a_shifted_gaussian_sample():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20000, 3)), rng.standard_normal((20000, 3)) + np.array([2.0, 0.0, 1.0])
    assert metrics.fid(x, y) == pytest.approx(5.0, abs=0.1)


def test_apd_of_known_points():
    # two poses of two joints: distances 5 and 2 -> mean 3.5; three poses: mean over the three pairs
    p = np.array([[[0, 0, 0], [1, 0, 0]], [[3, 4, 0], [1, 0, 2]]], float)
    assert metrics.apd(p) == pytest.approx(3.5)
    q = np.zeros((3, 1, 3))
    q[1, 0, 0], q[2, 0, 0] = 1.0, 3.0  # pair distances 1, 3, 2
    assert metrics.apd(q) == pytest.approx(2.0)


def test_nearest_geodesic():
    rng = np.random.default_rng(0)
    ref = rotations.axis_angle_to_matrix(rng.normal(scale=0.5, size=(300, 21, 3)))
    d, idx = metrics.nearest_geodesic(ref[[7, 123, 299]], ref, chunk=2)
    assert np.all(d < 1e-6) and list(idx) == [7, 123, 299]
    # one joint turned by 10 degrees: the pose itself is nearest at mean angle 10/21 (others are far)
    q = ref[[5]].copy()
    q[0, 3] = rotations.axis_angle_to_matrix(np.radians(10.0) * np.array([0.0, 0.6, 0.8])) @ q[0, 3]
    d, idx = metrics.nearest_geodesic(q, ref)
    assert idx[0] == 5 and d[0] == pytest.approx(10.0 / 21, abs=0.02)


def test_ks_of_identical_distributions_is_at_the_noise_floor():
    x = np.random.default_rng(0).standard_normal(20000)
    h1, h2 = metrics.random_halves(len(x), np.random.default_rng(1))
    assert len(np.intersect1d(h1, h2)) == 0 and len(h1) == len(h2) == 10000
    r = metrics.ks(x[h1], x[h2])
    assert r["n_a"] == r["n_b"] == 10000
    assert r["expected_null"] == pytest.approx(0.8687 * math.sqrt(2 / 10000), rel=1e-3)
    assert r["ks"] < 3 * r["expected_null"] and r["p_value"] > 1e-3
    # rank-based: astronomically low or failed (NaN) densities are just the lowest ranks
    y = x[h2].copy()
    y[:100] = -1e15
    y[100:200] = np.nan
    assert metrics.ks(x[h1], y)["ks"] == pytest.approx(
        metrics.ks(x[h1], np.where(np.arange(10000) < 200, -1e30, y))["ks"]
    )
    assert metrics.ks(x[h1], x[h2] + 1.0)["ks"] > 0.3


def test_sequence_halves_are_whole_sequences():
    seq = np.repeat([0, 1, 2, 3, 4], [50, 40, 30, 20, 10])
    a, b = metrics.sequence_halves(seq)
    assert not set(seq[a]) & set(seq[b]) and len(a) + len(b) == len(seq) and abs(len(a) - len(b)) <= 20
    assert metrics.sequence_halves(np.zeros(10, int)) is None


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baselines(baseline_runs):
    return baseline_runs


@pytest.fixture(scope="module")
def report(tiny_model, shared_data, baselines, tmp_path_factory):
    """The API run: n = 300 samples, the tiny model as its own ablation partner."""
    out = tmp_path_factory.mktemp("eval") / "a"
    data = shared_data / "cmu_pose"
    evaluate(
        tiny_model,
        data / "test.npz",
        out,
        n=300,
        train=data / "train.npz",
        baselines=baselines,
        seed=3,
        ablation=tiny_model,
        subset=150,
        progress=False,
    )
    return out


def test_evaluate_writes_the_report(report):
    for name in (
        "metrics.json",
        "timing.json",
        "report.md",
        "logp_histograms.png",
        "scatter_ours.png",
        "scatter_vposer.png",
        "scatter_gmm.png",
        "ablation.png",
    ):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    m = json.loads((report / "metrics.json").read_text())
    assert set(m) >= {"model", "settings", "log_p", "ks", "gap", "sample_metrics", "fid_floor", "ablation", "figures"}
    assert set(m["ks"]) == {"test", "train", "train_augmented"}
    floor = m["ks"]["train_augmented"]["table"]["dequantised_vs_clean"]  # augmented train (GS) vs clean train
    assert 0.0 < floor["ks"] < 1.0 and floor["n_a"] == floor["n_b"] == 300
    for ref in ("test", "train"):
        table = m["ks"][ref]["table"]
        assert set(table) >= {"ours_raw", "ours", "vposer", "gmm", "noise_floor_random_halves"}
        assert table["ours"]["n_a"] == 300 and 0.0 <= table["ours"]["ks"] <= 1.0
    assert m["ks"]["test"]["table"]["ours"]["n_b"] == 2522 and m["ks"]["train"]["table"]["ours"]["n_b"] == 300
    noisy = m["model"]["training"].get("noisy_joints", [])
    assert ("ours_constrained" in m["ks"]["test"]["table"]) == bool(noisy)  # the diagnostic row iff hinge noise
    assert list(m["temperature"]) == ["0.9", "0.8", "0.7"]
    for v in m["temperature"].values():
        assert 0 <= v["ks_test"] <= 1 and 0 <= v["ks_train"] <= 1 and v["fid_test"] >= 0 and v["apd_cm"] > 0
    # colder samples are more typical under the flow and less diverse
    t = [m["log_p"]["ours"]["mean"]] + [v["mean_log_p"] for v in m["temperature"].values()]
    assert t == sorted(t) and m["temperature"]["0.7"]["apd_cm"] < m["sample_metrics"]["ours"]["apd_cm"]
    assert set(m["gap"]) >= {"test_mean", "train_mean", "mean_gap", "test_median", "train_median", "median_gap"}
    for name in ("ours", "vposer", "gmm"):
        v = m["sample_metrics"][name]
        assert v["fid_test"] >= 0 and v["fid_train"] >= 0 and v["apd_cm"] > 0 and v["nn_geodesic_deg_mean"] > 0
        assert v["apd_items"] == 150 and v["nn_queries"] == 150
    assert m["sample_metrics"]["data_test"]["nn_geodesic_deg_mean"] > 0
    assert m["ablation"]["ablation"]["fraction_ortho_above_raw"] == m["ablation"]["ours"]["fraction_ortho_above_raw"]
    assert m["settings"]["sources"]["ours"]["max_abs_latent_forward_vs_log_prob"] < 1e-2
    text = (report / "report.md").read_text()
    for needle in (
        "KS statistic",
        "noise floor",
        "FID",
        "APD",
        "NN geodesic",
        "Generalisation gap",
        "Timing",
        "![ablation.png](ablation.png)",
        m["model"]["weights_sha256"],
    ):
        assert needle in text, needle


def test_hinge_projection_keeps_data_and_removes_off_hinge_noise(tiny_model, shared_data):
    """The diagnostic projection onto the train split's hinges leaves train poses where they are and puts a
    knee rotated off its hinge back onto it (rotation about x only, for CMU's knees)."""
    from train.evaluation.sources import PoseSource, constrained, load_prior

    prior = load_prior(tiny_model)
    train_aa = np.load(shared_data / "cmu_pose" / "train.npz")["rotations"]
    idx = np.arange(0, len(train_aa), 97)
    sixd = rotations.axis_angle_to_6d(train_aa[idx].astype(np.float64)).astype(np.float32)
    src = PoseSource("data", "data", sixd, np.zeros(len(idx)))
    hinges = ["left_knee", "right_knee", "left_foot", "right_foot", "right_collar", "left_elbow", "right_elbow"]
    same = constrained(prior, src, train_aa, hinges)
    assert np.abs(same.rotvecs() - src.rotvecs()).max() < 1e-4
    off = train_aa[idx].astype(np.float64)
    off[:, 3, 1:] += np.radians(3)  # left knee 3 degrees off its hinge
    off_src = PoseSource("off", "off", rotations.axis_angle_to_6d(off).astype(np.float32), np.zeros(len(idx)))
    back = constrained(prior, off_src, train_aa, hinges).rotvecs()
    assert np.abs(back[:, 3, 1:]).max() < 1e-4 and np.abs(back[:, 3, 0] - off[:, 3, 0]).max() < 1e-4


def test_evaluate_is_deterministic_and_the_cli_runs_it(report, tiny_model, shared_data, baselines, tmp_path):
    from train.cli import main

    data = shared_data / "cmu_pose"
    out = tmp_path / "b"
    args = [
        "evaluate",
        str(tiny_model),
        "--data",
        str(data / "test.npz"),
        "--train",
        str(data / "train.npz"),
        "--out",
        str(out),
        "--n",
        "300",
        "--seed",
        "3",
        "--ablation",
        str(tiny_model),
        "--subset",
        "150",
        "--quiet",
    ] + [a for b in baselines for a in ("--baselines", str(b))]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "KS vs test" in r.output
    assert (out / "metrics.json").read_bytes() == (report / "metrics.json").read_bytes()
    assert (out / "report.md").is_file() and json.loads((out / "timing.json").read_text())["total"] > 0


def test_evaluate_without_figures_computes_the_same_numbers(report, tiny_model, shared_data, baselines, tmp_path):
    """figures=False (the sweep) draws nothing and changes no number."""
    data = shared_data / "cmu_pose"
    evaluate(
        tiny_model,
        data / "test.npz",
        tmp_path / "c",
        n=300,
        train=data / "train.npz",
        baselines=baselines,
        seed=3,
        ablation=tiny_model,
        subset=150,
        figures=False,
        progress=False,
    )
    assert not list((tmp_path / "c").glob("*.png"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (report, tmp_path / "c"))
    assert b["figures"] == [] and b["histogram_clip"] is None
    for m in (a, b):
        del m["figures"], m["histogram_clip"]
    assert a == b
    assert "Not drawn" in (tmp_path / "c" / "report.md").read_text()


def test_evaluate_refuses_a_bad_baseline(tiny_model, shared_data, tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"alpha": 0.1}))  # a flow run, not a baseline
    with pytest.raises(ValueError, match="not a vposer or gmm run"):
        evaluate(
            tiny_model, shared_data / "cmu_pose" / "test.npz", tmp_path / "out", n=50, baselines=[bad], progress=False
        )
