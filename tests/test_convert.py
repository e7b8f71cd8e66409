"""Conversion of every source skeleton to SMPL body_pose (runtime.convert): geometry, invariances, formats.

Real files from ../shared/data; the SMPL rest skeleton from ../shared/data/smpl_skeleton.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from runtime import rotations
from runtime.convert import (
    IDX,
    _source_globals,
    _unit,
    _world_alignment,
    about,
    convert,
    load_rest_joints,
    save_amass,
    smpl_positions,
    swing,
    to_smpl,
    twist_angle,
)
from runtime.formats import JOINT_MAPS, FormatError, detect_skeleton, read_amass, read_motion, read_shared_npz

#: the segments the issue names, each checked on both sides; trunk and neck are chains (module docstring, step 4)
SEGMENTS = {
    "thigh": ("hip", "knee"),
    "shank": ("knee", "ankle"),
    "foot": ("ankle", "foot"),
    "upper arm": ("shoulder", "elbow"),
    "forearm": ("elbow", "wrist"),
}
CHAINS = {"trunk": ("pelvis", "spine3"), "neck": ("spine3", "head")}


@pytest.fixture(scope="module")
def rest(shared_data):
    return load_rest_joints(shared_data / "smpl_skeleton" / "smpl_neutral_rest.npz")


def _takes(shared_data):
    extra = shared_data / "cmu_extra"
    files = sorted(extra.glob("*/*.bvh")) + sorted(extra.glob("asf_amc/*.amc"))
    motions = [read_motion(f) for f in files]
    for split in ("train", "val", "test"):
        motions += read_shared_npz(shared_data / "cmu_pose" / f"{split}.npz")[::10]
    motions += read_shared_npz(shared_data / "bandai_pose" / "val.npz")[::40]
    return motions


def segment_errors(m, out, rest) -> dict[str, np.ndarray]:
    """Per segment, the angle (deg, per frame) between the source's direction and FK of the SMPL result."""
    jm = JOINT_MAPS[detect_skeleton(m)]
    p, _, has, p0 = _source_globals(m, jm)
    p = p @ _world_alignment(p0, m.up).T
    q = smpl_positions(out["poses"], rest)
    pairs = {
        f"{side} {name}": (f"{side}_{a}", f"{side}_{b}")
        for name, (a, b) in SEGMENTS.items()
        for side in ("left", "right")
    } | CHAINS
    errs = {}
    for name, (a, b) in pairs.items():
        if has[IDX[a]] and has[IDX[b]]:
            u, v = _unit(p[:, IDX[b]] - p[:, IDX[a]]), _unit(q[:, IDX[b]] - q[:, IDX[a]])
            errs[name] = np.degrees(np.arccos(np.clip(np.sum(u * v, -1), -1, 1)))
    return errs


def test_every_source_converts_and_reproduces_segment_directions(shared_data, rest, report):
    """FK of the converted poses on SMPL's rest skeleton: the source's limb directions exactly, trunk and neck
    chains to a median <= 3 degrees, on every BVH / ASF-AMC file and samples of the npz sets."""
    worst: dict[str, float] = {}
    for m in _takes(shared_data):
        out = to_smpl(m, rest)
        assert out["poses"].shape == (len(m), 72) and np.isfinite(out["poses"]).all(), m.source
        for name, e in segment_errors(m, out, rest).items():
            limit = 1e-3 if name not in CHAINS else 3.0
            assert np.median(e) <= limit, f"{m.source}: {name} median {np.median(e):.3f} deg"
            worst[name] = max(worst.get(name, 0.0), float(np.median(e)))
    report(
        "conversion to SMPL: worst per-file median segment-direction error (deg)",
        [f"{k:18s} {v:8.4f}" for k, v in worst.items()],
    )


def test_conversion_is_deterministic_and_round_trips_through_the_file(shared_data, rest, tmp_path):
    m = read_motion(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh")
    a, b = to_smpl(m, rest), to_smpl(m, rest)
    np.testing.assert_array_equal(a["poses"], b["poses"])
    summary = convert(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh", tmp_path / "o.npz", rest, fps=30)
    assert summary["takes"] == 1 and summary["frames"] == len(m.subsample(30))  # 3dsMax: no synthetic frame 0
    back = read_amass(tmp_path / "o.npz")
    np.testing.assert_allclose(back["poses"], to_smpl(m.subsample(30), rest)["poses"], atol=1e-6)
    assert back["mocap_framerate"] == pytest.approx(30.0, rel=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["o.npz"]  # no partial file left behind


def test_invariant_to_the_source_arm_twist(shared_data, rest):
    """The elbow's hinge alignment (step 2) makes the result independent of how a BVH chose the arm's joint
    frames: a constant twist D about the upper arm applied to the shoulder, elbow and wrist frames moves no joint,
    and must not change the converted poses."""
    m = read_shared_npz(shared_data / "cmu_pose" / "val.npz")[0]
    R = m.rotations.copy()
    for side, x in (("left", 1.0), ("right", -1.0)):
        D = about(np.array([x, 0.0, 0.0]), np.radians(35.0))
        s, e, w = (m.index(f"{side}_{j}") for j in ("shoulder", "elbow", "wrist"))
        R[:, s] = R[:, s] @ D
        R[:, e] = D.T @ R[:, e] @ D
        R[:, w] = D.T @ R[:, w] @ D
    twisted = replace(m, rotations=R)
    a, b = to_smpl(m, rest)["poses"], to_smpl(twisted, rest)["poses"]
    Ra = rotations.axis_angle_to_matrix(a[:, 3:66].reshape(-1, 21, 3))
    Rb = rotations.axis_angle_to_matrix(b[:, 3:66].reshape(-1, 21, 3))
    assert rotations.geodesic_deg(Ra, Rb).max() < 0.5


def test_collars_do_not_copy_the_rig_collar_bone(shared_data, rest):
    """The collar bone's rest direction is the rig's choice (step 4): tilting the Daz rig's shoulder offsets by 30
    degrees up or down (same length) must leave the converted collars as they are, and the Daz takes' static
    collars must land where the training skeleton's collars are (smpl-segments-1 put them 35 degrees away)."""
    m = read_motion(shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh").subsample(4)
    off = m.offsets.copy()
    for name, sign in (("lShldr", 1.0), ("rShldr", -1.0)):
        off[m.index(name)] = about(np.array([0.0, 0.0, 1.0]), sign * np.radians(30.0)) @ off[m.index(name)]
    a, b = to_smpl(m, rest)["poses"], to_smpl(replace(m, offsets=off), rest)["poses"]
    Ra = rotations.axis_angle_to_matrix(a[:, 3:66].reshape(-1, 21, 3))
    Rb = rotations.axis_angle_to_matrix(b[:, 3:66].reshape(-1, 21, 3))
    collars = [rotations.JOINT_NAMES.index(n) for n in ("left_collar", "right_collar")]
    assert rotations.geodesic_deg(Ra[:, collars], Rb[:, collars]).max() < 1e-3
    train = to_smpl(read_shared_npz(shared_data / "cmu_pose" / "train.npz")[0], rest)["poses"]
    Rt = rotations.axis_angle_to_matrix(train[:, 3:66].reshape(-1, 21, 3))[:, collars]
    gap = rotations.geodesic_deg(np.broadcast_to(Ra[1, collars], Rt.shape), Rt)  # frame 0 is synthetic
    assert np.median(gap) < 15.0, np.median(gap)


def test_amass_passes_through(shared_data, rest, tmp_path):
    src = shared_data / "smpl_reference" / "amass_dev_sample.npz"
    if not src.is_file():
        pytest.skip(f"{src} absent (AMASS licence: evaluation data, not on every machine)")
    convert(src, tmp_path / "o.npz", rest)
    with np.load(src) as z, np.load(tmp_path / "o.npz") as o:
        np.testing.assert_allclose(o["poses"][:, :66], z["poses"][:, :66], atol=1e-6)


def test_swing_and_twist_against_scipy():
    rng = np.random.default_rng(0)
    a, b = _unit(rng.normal(size=(200, 3))), _unit(rng.normal(size=(200, 3)))
    S = swing(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", S, a), b, atol=1e-9)
    axis = Rotation.from_matrix(S).as_rotvec()
    np.testing.assert_allclose(np.sum(axis * a, -1), 0.0, atol=1e-9)  # minimal: the axis is perpendicular to a
    np.testing.assert_allclose(swing(a, -a) @ a[..., None], -a[..., None], atol=1e-9)
    # twist: R = swing . twist(axis, phi) with the swing's axis perpendicular to ``axis``
    ax = np.array([0.0, -1.0, 0.0])
    phi = rng.uniform(-3, 3, 200)
    sw_axis = _unit(np.cross(ax, rng.normal(size=(200, 3))))
    R = Rotation.from_rotvec(sw_axis * rng.uniform(0, 2, (200, 1))).as_matrix() @ about(ax, phi)
    np.testing.assert_allclose(twist_angle(R, ax), phi, atol=1e-9)


def test_bad_input_names_the_file(tmp_path, rest):
    bad = tmp_path / "bad.bvh"
    bad.write_text(
        "HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation\n"
    )
    with pytest.raises(FormatError, match="bad.bvh"):
        convert(bad, tmp_path / "o.npz", rest)
    assert not (tmp_path / "o.npz").exists()
    with pytest.raises(FormatError, match="nothing to write"):
        save_amass([], rest, tmp_path / "o.npz")
    with pytest.raises(FormatError, match="rest_joints"):
        np.savez(tmp_path / "s.npz", other=np.zeros(3))
        load_rest_joints(tmp_path / "s.npz")
    assert not list(Path(tmp_path).glob(".*partial*"))
