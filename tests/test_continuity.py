"""Continuity of the conversion to SMPL (runtime.continuity, runtime.convert's "Continuity"): on every file of
../shared/data, no converted joint turns between two frames more than the source's own rotations allow."""

from dataclasses import replace

import numpy as np
import pytest

from runtime import rotations
from runtime.continuity import CONTINUITY_EPS, CONTINUITY_K, check, jumps, support
from runtime.convert import (
    KNEE_TWIST_SHARE,
    SWING_FULL,
    TWIST_FULL,
    about,
    convert_file,
    load_rest_joints,
    shared_twist,
    twist_angle,
    twist_lipschitz,
)
from runtime.formats import SYNTHETIC_FRAME0, detect_skeleton, read_amass, read_motion, read_shared_npz
from runtime.rotations import axis_angle_to_matrix


@pytest.fixture(scope="module")
def rest(shared_data):
    return load_rest_joints(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")


def _sources(shared_data):
    extra = shared_data / "cmu_extra"
    for f in sorted(extra.glob("*/*.bvh")) + sorted(extra.glob("asf_amc/*.amc")):
        yield f.name, read_motion(f)
    for name in ("cmu_pose", "bandai_pose"):
        for split in ("train", "val", "test"):
            for m in read_shared_npz(shared_data / name / f"{split}.npz"):
                yield f"{name}/{split}:{m.sequence}", m


def _violations(m, rest):
    c = check(m, rest)
    bad = c["change"] > c["allowed"]
    return int(bad.sum()), c


def test_bound_holds_on_every_file_of_shared(shared_data, rest, report):
    """dr_k <= K sum_{S(k)} dL + EPS for every joint and every pair of consecutive frames of every BVH, ASF/AMC and
    shared-npz take (as ``convert_file`` converts them: the synthetic frame 0 dropped), extreme poses included
    (backflip, the broken-wrist take 08_10); the AMASS sample passes through unchanged (S(k) = {k}, K >= 1)."""
    pairs, worst, conv90, src90 = 0, 0.0, 0, 0
    for name, m in _sources(shared_data):
        if detect_skeleton(m) in SYNTHETIC_FRAME0:
            m = replace(m, rotations=m.rotations[1:], trans=m.trans[1:])
        n, c = _violations(m, rest)
        assert n == 0, f"{name}: {n} joint-frame pairs break the continuity bound"
        s = (c["allowed"] - CONTINUITY_EPS) / CONTINUITY_K
        ratio = np.where(s > np.radians(0.5), c["change"] / np.maximum(s, 1e-12), 0.0)
        pairs, worst = pairs + len(c["change"]), max(worst, float(ratio.max()))
        conv90, src90 = conv90 + jumps(c["change"]), src90 + jumps(c["source"][:, 1:])
    src = shared_data / "smpl_reference" / "amass_dev_sample.npz"
    if src.is_file():
        out = convert_file(src, rest)[0]["poses"]
        np.testing.assert_array_equal(out[:, 3:66], read_amass(src)["poses"][:, 3:66])
    report(
        "conversion continuity on every shared take",
        [
            f"frame pairs {pairs}; bound K={CONTINUITY_K} EPS={np.degrees(CONTINUITY_EPS):.3f} deg: 0 violations",
            f"largest dr_k / sum_S(k) dL (where the sum > 0.5 deg): {worst:.3f}",
            f"frame pairs with a joint turning > 90 deg: converted {conv90}, source {src90}",
        ],
    )


def _extreme(m, joint: str, axis: np.ndarray, start_deg: float, stop_deg: float):
    """``m``'s first frame held still, but ``joint``'s local rotation a twist about ``axis`` sweeping start..stop,
    1 degree a frame: the source moves by 1 degree a frame, at that joint only."""
    n = int(abs(stop_deg - start_deg)) + 1
    m = replace(m, rotations=np.repeat(m.rotations[:1], n, 0), trans=np.repeat(m.trans[:1], n, 0))
    m.rotations[:, m.index(joint)] = about(axis, np.radians(np.linspace(start_deg, stop_deg, n)))
    return m


@pytest.mark.parametrize(
    "joint,axis,parent",
    [
        ("left_wrist", np.array([1.0, 0, 0]), "left_elbow"),
        ("right_wrist", np.array([-1.0, 0, 0]), "right_elbow"),
        ("left_ankle", np.array([0, -1.0, 0]), "left_knee"),
    ],
)
def test_extreme_child_twist_does_not_flip_the_parent(shared_data, rest, joint, axis, parent):
    """Regression (issue 18): a wrist (ankle) twisted through 180 degrees about its bone, 1 degree a frame, flipped
    the elbow (knee) of smpl-segments-2 by about 180 degrees between two frames (half of the wrapped twist). Now
    the elbow turns at most K * 1 degree a frame and the bound holds."""
    m = _extreme(read_shared_npz(shared_data / "cmu_pose" / "val.npz")[0], joint, axis, 150.0, 210.0)
    n, c = _violations(m, rest)
    k = rotations.JOINT_NAMES.index(parent)
    np.testing.assert_allclose(np.degrees(c["source"]).sum(1), 1.0, atol=1e-4)
    assert n == 0
    assert np.degrees(c["change"][:, k]).max() <= CONTINUITY_K * 1.0 + 0.01
    assert jumps(c["change"], 3.0) == 0


def test_shared_twist_is_the_share_where_it_can_be_and_lipschitz():
    rng = np.random.default_rng(0)
    ax = np.array([0.0, -1.0, 0.0])
    phi = rng.uniform(-TWIST_FULL, TWIST_FULL, 500)
    sw_axis = np.cross(ax, rng.normal(size=(500, 3)))
    sw_axis /= np.linalg.norm(sw_axis, axis=1, keepdims=True)
    sigma = rng.uniform(0, SWING_FULL, (500, 1))
    R = axis_angle_to_matrix(sw_axis * sigma) @ about(ax, phi)
    np.testing.assert_allclose(shared_twist(R, ax, KNEE_TWIST_SHARE), KNEE_TWIST_SHARE * twist_angle(R, ax), atol=1e-9)
    # continuous through the wrap and the half-turn swing; Lipschitz with K_TWIST on random close pairs
    A = axis_angle_to_matrix(rng.normal(size=(20000, 3)) * 2)
    B = A @ axis_angle_to_matrix(rng.normal(size=(20000, 3)) * 0.01)
    theta = np.radians(rotations.geodesic_deg(A, B))
    df = np.abs(shared_twist(A, ax, KNEE_TWIST_SHARE) - shared_twist(B, ax, KNEE_TWIST_SHARE))
    assert (df <= twist_lipschitz(KNEE_TWIST_SHARE) * theta + 1e-9).all(), (df / theta).max()
    assert shared_twist(about(ax, np.pi - 1e-9), ax, 0.5) == pytest.approx(0.0, abs=1e-8)


def test_support_of_the_forearm_is_the_arm_below_the_shoulder(shared_data):
    """S(k) for the Daz rig: the elbow's local rotation can change only with lShldr, lForeArm, lHand's rotations
    (the shoulder's orientation joint, its own, and the wrist's for the twist share)."""
    m = read_motion(shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh")
    s = support(m)
    names = {rotations.JOINT_NAMES[k]: sorted(m.names[j] for j in s[k]) for k in range(21)}
    assert names["left_elbow"] == sorted(["lForeArm", "lHand"]), names["left_elbow"]
    assert "lShldr" not in names["left_elbow"] and names["left_hip"]
