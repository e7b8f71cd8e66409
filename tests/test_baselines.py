"""The two baselines of docs/design.md §5 on real CMU data (subsets, for speed): the VPoser-style VAE learns, decodes
proper rotations and resumes exactly; the GMM's EM is monotone, its density matches scipy and its penalty the
stated formula; both train through ``poseprior train --model``."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from train.gmm import fit_gmm, load_gmm
from train.gmm import load_config as gmm_config
from train.rotations import matrix_to_6d
from train.vposer import VPoser, load_vposer, train_vposer
from train.vposer import load_config as vposer_config


def metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


# --- VPoser ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vposer_run(cmu, tmp_path_factory):
    out = tmp_path_factory.mktemp("vposer") / "run"
    summary = train_vposer(vposer_config("tiny"), cmu["train"].evenly_spaced(4096), cmu["val"], out, progress=False)
    return out, summary


def test_vposer_training_lowers_validation_loss(vposer_run, cmu):
    out, summary = vposer_run
    rows = metrics(out)
    print("vposer tiny val loss:", [round(r["val_loss"], 3) for r in rows], f"{summary['train_seconds']} s")
    assert summary["best_val_loss"] < 0.8 * rows[0]["val_loss"]
    assert rows[-1]["val_geodesic_deg"] < rows[0]["val_geodesic_deg"]
    assert json.loads((out / "config.json").read_text())["model"] == "vposer"
    assert json.loads((out / "summary.json").read_text())["best_val_loss"] == summary["best_val_loss"]
    for name in ("best.pt", "last.pt"):  # plain tensors and values only
        ckpt = torch.load(out / name, weights_only=True)
        assert ckpt["data_sha256"]["cmu_pose/train.npz"] == next(iter(cmu["train"].files.values()))
        resume_only = {"optimizer", "rng", "torch_rng"}  # last.pt resumes; best.pt is the weights only
        assert {"model", "config", "state"} <= set(ckpt) and (resume_only <= set(ckpt)) == (name == "last.pt")


def test_vposer_decodes_rotations_and_samples(vposer_run, cmu):
    model, ckpt = load_vposer(vposer_run[0])
    assert not model.training and ckpt["config"]["model"] == "vposer"
    aa = torch.from_numpy(cmu["val"].rotations[:50])
    q = model.encode(aa)
    assert q.loc.shape == q.scale.shape == (50, 16) and (q.scale > 0).all()
    R, d6 = model.decode(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)) * 2)
    assert R.shape == (50, 21, 3, 3) and d6.shape == (50, 21, 6)
    eye = torch.eye(3).expand_as(R)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(50, 21), atol=1e-5)
    assert torch.equal(d6, matrix_to_6d(R))  # our layout: first two columns, contiguous
    s1 = model.sample(7, torch.Generator().manual_seed(3))
    s2 = model.sample(7, torch.Generator().manual_seed(3))
    assert s1.shape == (7, 21, 6) and torch.equal(s1, s2)
    z = torch.tensor([[1.0, 2.0] + [0.0] * 14])
    assert VPoser.latent_penalty(z).item() == pytest.approx(5.0)


def test_vposer_resume_continues_exactly(cmu, tmp_path):
    cfg = vposer_config("tiny")
    cfg.epochs, cfg.patience = 4, 100
    tr, va = cmu["train"].evenly_spaced(1024), cmu["val"].evenly_spaced(256)
    train_vposer(cfg, tr, va, tmp_path / "full", progress=False)
    train_vposer(cfg, tr, va, tmp_path / "cut", max_steps=8, progress=False)  # 4 steps per epoch: stop after 2
    assert len(metrics(tmp_path / "cut")) == 2
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # an epoch logged after the last checkpoint
        f.write(json.dumps({"epoch": 3, "val_loss": 0.0}) + "\n")
    train_vposer(cfg, tr, va, tmp_path / "cut", resume=True, progress=False)
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["epoch"] for r in cut] == [1, 2, 3, 4]
    for r1, r2 in zip(full, cut):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-9)
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], abs=1e-9)
    cfg.kl_weight = 0.5
    with pytest.raises(ValueError, match="different config"):
        train_vposer(cfg, tr, va, tmp_path / "cut", resume=True, progress=False)


# --- GMM ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gmm_run(cmu, tmp_path_factory):
    out = tmp_path_factory.mktemp("gmm") / "run"
    cfg = gmm_config("paper")
    cfg.max_iter = 30
    train = cmu["train"].evenly_spaced(4000)
    summary = fit_gmm(cfg, train, cmu["val"], out, progress=False)
    return out, summary, train


def test_gmm_em_is_monotone(gmm_run):
    out, summary, _ = gmm_run
    ll = np.array([r["train_log_p"] for r in metrics(out)])
    print("gmm train log p:", ll[[0, 1, 2, -1]].round(3), "val", summary["val_log_p"])
    assert len(ll) >= 10 and ll[-1] > ll[0] + 1
    assert (np.diff(ll) > -1e-9).all(), np.diff(ll).min()
    assert summary["train_log_p"] == ll[-1] and json.loads((out / "config.json").read_text())["model"] == "gmm"
    assert sum(summary["weights"]) == pytest.approx(1.0, abs=1e-3) and len(summary["weights"]) == 8


def test_gmm_log_prob_matches_scipy(gmm_run, cmu):
    gmm, ckpt = load_gmm(gmm_run[0] / "best.pt")  # loads with weights_only=True
    assert ckpt["config"]["model"] == "gmm"
    w, mu, cov = (t.numpy() for t in (gmm.weights, gmm.means, gmm.covs))
    x = np.concatenate([cmu["val"].rotations[::200], gmm_run[2].rotations[::1000]]).reshape(-1, 63).astype(np.float64)
    comp = np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(len(w))], 1)
    ours = gmm.log_prob(torch.from_numpy(x)).numpy()
    assert np.abs(ours - logsumexp(comp, 1)).max() < 1e-6
    # the penalty: min_k [ 1/2 (x-mu_k)^T Sigma_k^-1 (x-mu_k) - log w_k + 1/2 log det Sigma_k ]
    terms = np.stack(
        [
            0.5 * np.einsum("bi,ij,bj->b", x - mu[k], np.linalg.inv(cov[k]), x - mu[k])
            - np.log(w[k])
            + 0.5 * np.linalg.slogdet(cov[k])[1]
            for k in range(len(w))
        ],
        1,
    )
    assert np.abs(gmm.penalty(torch.from_numpy(x)).numpy() - terms.min(1)).max() < 1e-6
    # = min_k -log(w_k N(x; k)) - d/2 log(2 pi)
    assert np.abs(terms.min(1) - (-comp.max(1) - 31.5 * np.log(2 * np.pi))).max() < 1e-6


def test_gmm_penalty_is_differentiable_in_float32(gmm_run, cmu):
    gmm = load_gmm(gmm_run[0])[0].float()
    aa = torch.from_numpy(cmu["val"].rotations[:8]).requires_grad_()
    p = gmm.penalty(aa)
    assert p.dtype == torch.float32 and p.shape == (8,)
    p.sum().backward()
    assert torch.isfinite(aa.grad).all() and aa.grad.abs().sum() > 0


def test_gmm_samples_match_the_data_loosely(gmm_run):
    gmm, _ = load_gmm(gmm_run[0])
    s = gmm.sample(20000, 0)
    assert s.shape == (20000, 21, 3) and torch.equal(s, gmm.sample(20000, torch.Generator().manual_seed(0)))
    x = gmm_run[2].rotations.reshape(-1, 63).astype(np.float64)
    s = s.reshape(-1, 63).numpy()
    assert np.abs(s.mean(0) - x.mean(0)).max() < 0.03  # radians
    cx, cs = np.cov(x.T), np.cov(s.T)
    assert np.linalg.norm(cs - cx) < 0.1 * np.linalg.norm(cx)


# --- CLI ---------------------------------------------------------------------------------------------------------
def poseprior(*args):
    return subprocess.run([sys.executable, "-m", "train.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_trains_gmm_end_to_end(shared_data, tmp_path):
    out = tmp_path / "gmm"
    r = poseprior(
        "train", "--model", "gmm", "--data", shared_data / "cmu_pose", "--out", out, "--config", "tiny", "--quiet"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "gmm" and summary["n_train"] == 26592 and summary["iterations"] >= 1
    assert load_gmm(out)[0].log_prob(torch.zeros(2, 21, 3)).shape == (2,)
    r = poseprior(
        "train", "--model", "gmm", "--data", shared_data / "cmu_pose", "--out", tmp_path / "x", "--max-steps", "3"
    )
    assert r.returncode != 0 and "do not apply to --model gmm" in r.stderr and not (tmp_path / "x").exists()


def test_cli_trains_and_resumes_vposer(shared_data, tmp_path):
    out = tmp_path / "vposer"
    r = poseprior(
        "train",
        "--model",
        "vposer",
        "--data",
        shared_data / "cmu_pose",
        "--out",
        out,
        "--config",
        "tiny",
        "--max-steps",
        "3",
        "--set",
        "max_val=200",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["max_val"] == 200
    r = poseprior("train", "--model", "flow", "--data", shared_data / "cmu_pose", "--out", out, "--resume")
    assert r.returncode != 0 and "vposer run" in r.stderr
    r = poseprior("train", "--data", shared_data / "cmu_pose", "--out", out, "--resume", "--max-steps", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert [m["step"] for m in metrics(out)] == [3, 5]
