"""Training streams its data (issue 21, "Scale"): the statistics it needs come from blocks of the memory-mapped
arrays, never a full-size copy. That the committed runs still retrain bit for bit needs `make data` and their
checkpoints, so it is `make check-runs` (tests/committed_runs_check.py), not part of the suite."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from train.augment import Augmentation, degenerate_joints
from train.config import Config, load_config
from train.data import PoseSet
from train.moments import Moments, blocks, column_moments
from train.rotations import JOINT_NAMES
from train.trainer import build_flow, check_no_constant_joints, normalization, training_poses


def augmentation(cfg: Config) -> Augmentation:
    widen = tuple((j, tuple(map(float, s))) for j, s in cfg.widen.items())
    return Augmentation(cfg.alpha, cfg.beta, cfg.noise, cfg.joint_noise, (), widen, cfg.part_mix)


def test_moments_of_blocks_equal_the_moments_of_the_whole(cmu):
    """Chan's combination over uneven blocks = numpy's float64 mean and variance of the whole array (real poses,
    shifted far from 0, where a naive sum of squares would lose every digit)."""
    a = cmu["train"].rotations.astype(np.float64) + 1e4
    for size in (1, 7, 1000, len(a)):
        m = Moments()
        for s in blocks(len(a), size):
            m.add(a[s])
        assert m.n == len(a)
        np.testing.assert_allclose(m.mean, a.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.var(ddof=1), a.var(0, ddof=1), rtol=1e-9, atol=1e-11)
    sizes = [s.stop - s.start for s in blocks(10, 4)]
    assert sizes == [3, 3, 4] and list(blocks(0, 4)) == [slice(0, 0)]
    np.testing.assert_allclose(
        column_moments(cmu["train"].rotations, 4096).std(), cmu["train"].rotations.astype(np.float64).std(0)
    )
    with pytest.raises(ValueError, match="ddof"):
        Moments().add(a[:1]).var(ddof=1)


def test_mirrored_training_poses_are_the_concatenated_sets_6d(cmu):
    """The mirrored set streams from a temporary memory-mapped file and holds exactly the numbers the in-memory
    concatenation gave (40,000 poses: a conversion block straddles the originals and their mirror images)."""
    s = cmu["train"].evenly_spaced(20000)
    x = training_poses(s, mirror=True)
    assert isinstance(x, np.memmap) and x.shape == (40000, 21, 6)
    assert np.array_equal(x, PoseSet.concat([s, s.mirrored()]).to_6d().numpy())
    assert np.array_equal(training_poses(s, mirror=False), s.to_6d().numpy())


def test_normalization_in_blocks(cmu):
    """One block: torch's float32 mean and std of the whole augmented set (what training always computed).
    Several: the float64 moments of the same blocks' augmentations, to float32 precision."""
    cfg = load_config("smpl")
    x = cmu["train"].to_6d()[:9000]
    flow, aug = build_flow(cfg), augmentation(cfg)
    mean, std = normalization(flow, x, aug, torch.Generator().manual_seed(1))
    v = flow.to_vec(aug(x, torch.Generator().manual_seed(1)))
    assert torch.equal(mean, v.mean(0)) and torch.equal(std, v.std(0))
    mean, std = normalization(flow, x, aug, torch.Generator().manual_seed(1), whole=8999, block=4000)
    gen = torch.Generator().manual_seed(1)
    v = torch.cat([flow.to_vec(aug(x[s], gen)) for s in blocks(len(x), 4000)]).double()
    torch.testing.assert_close(mean, v.mean(0).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std, v.std(0).float(), rtol=1e-6, atol=1e-7)


def test_constant_joint_check_reads_blocks(cmu):
    """The check's float64 spread comes from blockwise moments and still finds a constant joint."""
    cfg = load_config("tiny")
    check_no_constant_joints(cmu["train"], cfg)
    rot = cmu["train"].rotations.copy()
    rot[:, 5] = 0.1
    s = cmu["train"]
    with pytest.raises(ValueError, match="left_knee|constant"):
        check_no_constant_joints(PoseSet(rot, s.sequence, s.sequence_names, s.subject), cfg)


PEAK = """
import re, sys, numpy as np, torch
from train.augment import Augmentation, degenerate_joints
from train.config import load_config
from train.trainer import build_flow, normalization
x = torch.from_numpy(np.load(sys.argv[1], mmap_mode="c"))
cfg = load_config("smpl")
flow = build_flow(cfg)
aug = Augmentation(cfg.alpha, cfg.beta, cfg.noise, 0.0, (), tuple((j, tuple(s)) for j, s in cfg.widen.items()), 0.5)
hwm = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
before = hwm()  # VmHWM: this process's own peak (ru_maxrss would carry over the parent's from before exec)
normalization(flow, x, aug, torch.Generator().manual_seed(1), whole=0, block=int(sys.argv[2]))
print(before, hwm())
"""


def test_normalization_memory_is_one_block_not_the_set(cmu, tmp_path):
    """Peak RSS of the statistics over 160,000 memory-mapped poses (real CMU poses, tiled) in blocks of 8,192:
    the mapped array's pages plus one block's augmentation (measured: +137 MB for the 81 MB array; the whole set
    augmented at once, as before: +675 MB)."""
    x = np.concatenate([cmu["train"].to_6d().numpy()] * 7)[:160000]
    np.save(tmp_path / "x.npy", x)
    nbytes = x.nbytes
    del x
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path / "x.npy"), "8192"], capture_output=True, text=True, check=True
    ).stdout.split()
    before, peak = map(int, out)
    print(f"array {nbytes / 1e6:.0f} MB; peak RSS {before / 1e6:.0f} MB before, {peak / 1e6:.0f} MB after")
    assert peak - before < nbytes + 10_000 * 8192  # the pages, one block's augmentation (~7.5 kB a pose)


def test_degenerate_joints_in_blocks_find_what_the_whole_array_did(cmu):
    """The blockwise hinge / duplicate test agrees with the whole-array one it replaced (SVD of the centred float64
    poses, max |difference| of every earlier joint) on real CMU poses tiled past two blocks."""
    rot = np.concatenate([cmu["train"].rotations] * 6)  # 159,552 poses: three blocks
    whole = []
    for j in range(rot.shape[1]):
        r = rot[:, j].astype(np.float64)
        spread = np.linalg.svd(r - r.mean(0), compute_uv=False)[-1] / np.sqrt(len(r))
        if spread < 1e-3 or any(np.abs(r - rot[:, k]).max() < 1e-3 for k in range(j)):
            whole.append(j)
    found = degenerate_joints(rot)
    print("degenerate CMU joints:", found)
    assert found == [JOINT_NAMES[j] for j in whole] and found


def test_scalebench_subsets_are_the_first_poses_and_train_through_the_ingest(cmu, tmp_path):
    """``make train-scale``'s subsets: the first N poses of an AMASS-style converted file (every per-pose array cut,
    the rest kept), read back by the ingest path with exactly those poses; the RSS line fits a + b n."""
    from train import ingest, scalebench

    rot = cmu["train"].rotations
    n = len(rot)
    poses = np.zeros((n, 72), np.float32)
    poses[:, 3:66] = rot.reshape(n, 63)
    src = tmp_path / "train.npz"
    np.savez(
        src,
        poses=poses,
        trans=np.zeros((n, 3), np.float32),
        mocap_framerate=np.float64(30.0),
        sequence=cmu["train"].sequence.astype(np.int32),
        sequence_names=np.array(cmu["train"].sequence_names),
        subject=cmu["train"].subject.astype(np.int32),
    )
    cut = scalebench.subset(src, 1000, tmp_path)
    d = np.load(cut)
    assert d["poses"].shape == (1000, 72) and d["sequence"].shape == (1000,) and float(d["mocap_framerate"]) == 30.0
    assert len(d["sequence_names"]) == len(cmu["train"].sequence_names)
    sets, _ = ingest.load_takes([cut], [src], cache=tmp_path / "cache", progress=False)
    assert len(sets["train"]) == 1000 and np.array_equal(sets["train"].rotations, rot[:1000])
    a, b = scalebench.fit([{"n": 0, "rss": 5e8}, {"n": 1000, "rss": 5e8 + 756e3}, {"n": 2000, "rss": 5e8 + 1512e3}])
    assert a == pytest.approx(5e8) and b == pytest.approx(756)
