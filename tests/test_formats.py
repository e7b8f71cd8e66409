"""runtime.formats: every real motion file loads with plausible, constant bones; ASF/AMC against an independent
implementation of the Acclaim formula; BVH write/read round trip and Euler orders vs scipy; bad input."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from runtime.formats import (
    JOINT_MAPS,
    LACKS,
    LEFT_SIGN,
    SYNTHETIC_FRAME0,
    UNITS_M,
    FormatError,
    Motion,
    detect_skeleton,
    euler_matrix,
    forward_kinematics,
    joint_positions,
    matrix_to_euler,
    read_amass,
    read_amc,
    read_asf,
    read_bvh,
    read_motion,
    write_bvh,
)

EXTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_extra"
EXTRA_FILES = sorted(p.relative_to(EXTRA).as_posix() for p in EXTRA.rglob("*") if p.suffix in (".bvh", ".amc"))
SKELETON = {"bvh_3dsmax": "cgspeed_3dsmax", "bvh_daz_style": "cgspeed_daz", "asf_amc": "cmu_asf"}
SHARED_NPZ = [f"{d}/{s}.npz" for d in ("cmu_pose", "bandai_pose") for s in ("train", "val", "test")]


def raises_at(path, where):
    """``pytest.raises(FormatError)`` whose message names the file and ``where`` (e.g. 'line 12', 'frame 3')."""
    return pytest.raises(FormatError, match=re.escape(str(path)) + r".*" + re.escape(where))


def check_skeleton(m: Motion, skeleton: str) -> dict:
    """Bones constant over frames, adult legs in metres, left = +x at rest; returns the SMPL joint positions."""
    G, P = forward_kinematics(m)
    bones = np.linalg.norm(P[:, 1:] - P[:, m.parents[1:]], axis=-1)  # (T, J-1)
    np.testing.assert_allclose(bones, np.broadcast_to(np.linalg.norm(m.offsets[1:], axis=-1), bones.shape), atol=1e-9)
    pos = joint_positions(m, JOINT_MAPS[skeleton])
    for side in ("left", "right"):
        leg = sum(
            np.linalg.norm(pos[f"{side}_{a}"] - pos[f"{side}_{b}"], axis=-1)
            for a, b in (("hip", "knee"), ("knee", "ankle"))
        )
        assert 0.7 < leg.min() and leg.max() < 1.0, (m.source, side, leg.min(), leg.max())
    rest = {
        k: v[0]
        for k, v in joint_positions(
            replace(m, rotations=np.broadcast_to(np.eye(3), (1,) + m.rotations.shape[1:]), trans=np.zeros((1, 3))),
            JOINT_MAPS[skeleton],
        ).items()
    }
    hip = rest["left_hip"] - rest["pelvis"]
    assert np.sign(hip[0]) == LEFT_SIGN and abs(hip[0]) > 0.03, (m.source, hip)
    for side in ("left", "right"):  # facing +z (toes ahead of the ankle), Y up: so +x is the character's left
        foot = rest[f"{side}_foot"] - rest[f"{side}_ankle"]
        assert foot[2] > 0.05 and rest["head"][1] - rest[f"{side}_ankle"][1] > 1.0, (m.source, side, foot)
    return pos


# --- every real file -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXTRA_FILES)
def test_cmu_extra_file_loads(shared_data, name):
    m = read_motion(shared_data / "cmu_extra" / name)
    skeleton = SKELETON[name.split("/")[0]]
    assert detect_skeleton(m) == skeleton and m.fps == pytest.approx(120.0, rel=1e-4) and m.up == "y"
    assert not any(j in JOINT_MAPS[skeleton] for j in LACKS[skeleton])
    pos = check_skeleton(m, skeleton)
    # Y up, feet on the ground: the lowest foot joint per frame stays near y = 0, the head far above it
    low = np.min([pos[k][:, 1] for k in ("left_ankle", "right_ankle", "left_foot", "right_foot")], axis=0)
    assert -0.03 < np.percentile(low, 5) < 0.10 and np.median(low) < 0.15, (name, np.percentile(low, [5, 50]))
    if "backflip" not in name:
        assert np.median(pos["head"][:, 1] - low) > 1.1
    if name.endswith(".bvh"):  # a synthetic frame 0 jumps to frame 1; captured frames move a few degrees
        step = (
            np.degrees(
                Rotation.from_matrix(
                    (np.swapaxes(m.rotations[:-1], -1, -2) @ m.rotations[1:]).reshape(-1, 3, 3)
                ).magnitude()
            )
            .reshape(len(m) - 1, -1)
            .max(1)
        )
        assert (step[0] > 15 and np.median(step[1:]) < 5) == (skeleton in SYNTHETIC_FRAME0), (name, step[:3])


def test_cmu_pose_npz_as_motions(shared_data):
    """The shared format: one Motion per sequence, SMPL names; FK equals the README's formula with scipy."""
    ms = read_motion(shared_data / "cmu_pose" / "val.npz")
    d = np.load(shared_data / "cmu_pose" / "val.npz")
    assert len(ms) == len(d["sequence_names"]) and sum(len(m) for m in ms) == len(d["rotations"])
    m = ms[3]
    idx = np.flatnonzero(d["sequence"] == 3)
    assert m.sequence == str(d["sequence_names"][3]) and m.subject == "8" and m.fps == 30.0
    assert detect_skeleton(m) == "smpl"
    _, P = forward_kinematics(m)
    off = d["seq_offsets"][3].astype(np.float64)
    G = [Rotation.from_rotvec(d["root_orient"][idx].astype(np.float64)).as_matrix()]
    p = [d["trans"][idx].astype(np.float64)]
    for k in range(1, 22):
        par = int(d["parents"][k])
        p.append(p[par] + G[par] @ off[k])
        G.append(G[par] @ Rotation.from_rotvec(d["rotations"][idx, k - 1].astype(np.float64)).as_matrix())
    np.testing.assert_allclose(P, np.stack(p, 1), atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [n for n in SHARED_NPZ if n != "bandai_pose/train.npz"]
    + [pytest.param("bandai_pose/train.npz", marks=pytest.mark.slow)],
)
def test_shared_npz_loads(shared_data, name):
    ms = read_motion(shared_data / name)
    assert all(detect_skeleton(m) == "smpl" for m in ms)
    for m in ms[:: max(1, len(ms) // 5)]:
        check_skeleton(m, "smpl")


def test_amass_reader(shared_data, tmp_path):
    d = read_amass(shared_data / "smpl_reference" / "amass_dev_sample.npz")
    raw = np.load(shared_data / "smpl_reference" / "amass_dev_sample.npz")
    assert d["poses"].shape == (500, 72) and d["mocap_framerate"] == 120.0 and d["gender"] == "female"
    np.testing.assert_array_equal(d["poses"][:, :66], raw["poses"][:, :66])
    assert not d["poses"][:, 66:].any() and d["trans"].shape == (500, 3) and d["betas"].shape == (16,)
    with pytest.raises(FormatError, match="read_amass"):
        read_motion(shared_data / "smpl_reference" / "amass_dev_sample.npz")
    bad = tmp_path / "nan_amass.npz"
    poses = raw["poses"][:8].copy()
    poses[5, 40] = np.nan
    np.savez(bad, poses=poses, trans=raw["trans"][:8], mocap_framerate=120.0)
    with raises_at(bad, "frame 5"):
        read_amass(bad)


# --- ASF/AMC: an independent implementation of the Acclaim formula ----------------------------------------------
def independent_asf(text):
    """{bone: (direction, length, axis angles, dof)} and {parent: children} read with regular expressions."""
    bones = {}
    for block in re.findall(r"begin(.*?)end", text.split(":bonedata")[1].split(":hierarchy")[0], re.S):
        name = re.search(r"name\s+(\S+)", block).group(1)
        direction = np.array(re.search(r"direction\s+(\S+)\s+(\S+)\s+(\S+)", block).groups(), float)
        direction /= np.linalg.norm(direction)  # the format's unit vector
        length = float(re.search(r"length\s+(\S+)", block).group(1))
        axis = np.array(re.search(r"axis\s+(\S+)\s+(\S+)\s+(\S+)\s+XYZ", block).groups(), float)
        dof = re.search(r"dof\s+([rxyz ]+)\n", block)
        bones[name] = (direction, length, axis, dof.group(1).split() if dof else [])
    tree = {}
    for line in text.split(":hierarchy")[1].split("begin")[1].split("end")[0].strip().splitlines():
        parent, *children = line.split()
        tree[parent] = children
    return bones, tree


def independent_amc_positions(asf_text, amc_text, frames):
    """Tip of every bone (inches x 1/0.45) at AMC frames (1-based): tip_b = tip_p + L G_b d_b, G_b = G_p C M C^-1,
    with scipy's extrinsic (fixed-axis) Euler angles in the listed order."""
    bones, tree = independent_asf(asf_text)
    blocks = re.split(r"^(\d+)\s*$", amc_text, flags=re.M)
    data = {int(blocks[i]): blocks[i + 1] for i in range(1, len(blocks), 2)}
    out = []
    for f in frames:
        values = {line.split()[0]: np.array(line.split()[1:], float) for line in data[f].strip().splitlines()}
        root = values["root"]
        G = {"root": Rotation.from_euler("xyz", root[3:], degrees=True).as_matrix()}
        tip = {"root": root[:3]}
        stack = ["root"]
        while stack:
            parent = stack.pop()
            for b in tree.get(parent, []):
                direction, length, axis, dof = bones[b]
                C = Rotation.from_euler("xyz", axis, degrees=True).as_matrix()
                M = (
                    Rotation.from_euler("".join(d[1] for d in dof), values[b], degrees=True).as_matrix()
                    if dof
                    else np.eye(3)
                )
                G[b] = G[parent] @ C @ M @ C.T
                tip[b] = tip[parent] + length * G[b] @ direction
                stack.append(b)
        out.append(tip)
    return out


@pytest.mark.parametrize("stem, asf", [("35_01", "35"), ("backflip", "backflip"), ("lambada", "lambada")])
def test_amc_matches_independent_formula(shared_data, stem, asf):
    folder = shared_data / "cmu_extra" / "asf_amc"
    m = read_motion(folder / f"{stem}.amc")
    assert m.source.endswith(f"{stem}.amc")
    _, P = forward_kinematics(m)
    frames = [1, len(m) // 2, len(m)]
    ref = independent_amc_positions((folder / f"{asf}.asf").read_text(), (folder / f"{stem}.amc").read_text(), frames)
    unit = 0.0254 / 0.45
    for f, tips in zip(frames, ref):
        for j, name in enumerate(m.names):
            if j:  # a Motion joint sits at its bone's base = its parent's tip
                want = tips[m.names[m.parents[j]]] * unit
                assert np.abs(P[f - 1, j] - want).max() < 1e-9, (stem, f, name)
        for name, site in m.end_sites.items():  # leaf tips
            G, P2 = forward_kinematics(m)
            assert np.abs(P2[f - 1, m.index(name)] + G[f - 1, m.index(name)] @ site - tips[name] * unit).max() < 1e-9


def test_asf_zero_pose_bones_follow_direction(shared_data, tmp_path):
    """An AMC of all zeros: identity rotations and every bone along its ASF direction, of its ASF length."""
    asf_path = shared_data / "cmu_extra" / "asf_amc" / "49.asf"
    asf = read_asf(asf_path)
    bones, _ = independent_asf(asf_path.read_text())
    lines = [":FULLY-SPECIFIED", ":DEGREES", "1"] + [
        f"{n} " + " ".join("0" for _ in d) for n, d in zip(asf.names, asf.dofs) if d
    ]
    (tmp_path / "zero.amc").write_text("\n".join(lines) + "\n")
    m = read_amc(tmp_path / "zero.amc", asf)
    np.testing.assert_allclose(m.rotations, np.broadcast_to(np.eye(3), m.rotations.shape), atol=1e-12)
    _, P = forward_kinematics(m)
    for j, name in enumerate(m.names):
        children = [c for c in range(len(m.names)) if m.parents[c] == j]
        tip = P[0, children[0]] if children else P[0, j] + m.end_sites[name]
        if j:
            direction, length, _, _ = bones[name]
            bone = tip - P[0, j]
            np.testing.assert_allclose(bone, length * direction / np.linalg.norm(direction) * 0.0254 / 0.45, atol=1e-12)


def foot_skate(m: Motion) -> float:
    """Mean over both feet of the median toe-joint speed (m/s) in the frames where that toe is lowest (bottom 20 %):
    a foot on the ground should be still."""
    pos = joint_positions(m, JOINT_MAPS[detect_skeleton(m)])
    speeds = []
    for side in ("left", "right"):
        p = pos[f"{side}_foot"]
        v = np.linalg.norm(np.diff(p, axis=0), axis=-1) * m.fps
        speeds.append(np.median(v[p[1:, 1] < np.percentile(p[:, 1], 20)]))
    return float(np.mean(speeds))


@pytest.mark.parametrize(
    "name", ["asf_amc/35_01.amc", "asf_amc/zombie.amc", "bvh_3dsmax/131_02.bvh", "bvh_daz_style/11_01.bvh"]
)
def test_rotation_order_keeps_stance_feet_still(shared_data, monkeypatch, name):
    """The Euler conventions checked on real motion: with the readers' order (ASF: fixed axes, M = Rz Ry Rx for
    ``rx ry rz``; BVH: the listed order, intrinsic) feet on the ground stand still; the reversed convention
    (a negative control, patched in) makes them slide at least twice as fast."""
    import runtime.formats.asf as asf_module
    import runtime.formats.bvh as bvh_module

    path = shared_data / "cmu_extra" / name
    right = foot_skate(read_motion(path))
    if name.endswith(".amc"):
        monkeypatch.setattr(asf_module, "_fixed_axes", lambda a, order: euler_matrix(np.asarray(a), order.lower()))
    else:
        monkeypatch.setattr(
            bvh_module, "euler_matrix", lambda a, axes: euler_matrix(np.asarray(a)[..., ::-1], axes[::-1])
        )
    wrong = foot_skate(read_motion(path))
    assert right < 0.4 and right < 0.5 * wrong, (name, right, wrong)


# --- BVH: Euler orders, round trip --------------------------------------------------------------------------------
@pytest.mark.parametrize("axes", ["xyz", "xzy", "yxz", "yzx", "zxy", "zyx"])
def test_euler_orders_vs_scipy(axes):
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, (200, 3))
    angles[:, 1] /= 2  # the middle angle's range
    R = euler_matrix(angles, axes)
    np.testing.assert_allclose(R, Rotation.from_euler(axes.upper(), angles).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(R, axes), angles, atol=1e-9)
    lock = euler_matrix(np.array([[0.3, np.pi / 2, -0.4]]), axes)  # gimbal lock: another triple, same R
    np.testing.assert_allclose(euler_matrix(matrix_to_euler(lock, axes), axes), lock, atol=1e-9)


def test_bvh_channel_orders_vs_scipy(tmp_path):
    """Per-joint channel orders of a hand-written BVH are applied in the listed order (scipy intrinsic)."""
    orders = ["Zrotation Xrotation Yrotation", "Xrotation Yrotation Zrotation", "Yrotation Zrotation Xrotation"]
    rng = np.random.default_rng(1)
    vals = np.round(rng.uniform(-170, 170, (4, 12)), 4)
    vals[:, :3] = np.round(rng.normal(size=(4, 3)) * 30, 4)
    text = (
        "HIERARCHY\nROOT hips\n{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition "
        + orders[0]
        + "\n JOINT a\n {\n  OFFSET 0 10 0\n  CHANNELS 3 "
        + orders[1]
        + "\n  JOINT b\n  {\n   OFFSET 5 0 0\n"
        "   CHANNELS 3 " + orders[2] + "\n   End Site\n   {\n    OFFSET 0 0 2\n   }\n  }\n }\n}\nMOTION\n"
        "Frames: 4\nFrame Time: 0.01\n" + "\n".join(" ".join(map(str, r)) for r in vals) + "\n"
    )
    path = tmp_path / "orders.bvh"
    path.write_text(text)
    m = read_bvh(path, unit_m=0.01)
    for j, order in enumerate(orders):
        axes = "".join(c[0] for c in order.split())
        want = Rotation.from_euler(axes, vals[:, 3 + 3 * j : 6 + 3 * j], degrees=True).as_matrix()
        np.testing.assert_allclose(m.rotations[:, j], want, atol=1e-12)
    np.testing.assert_allclose(m.trans, vals[:, :3] * 0.01)
    assert m.fps == 100.0 and m.end_sites["b"].tolist() == [0, 0, 0.02] and m.offsets[2].tolist() == [0.05, 0, 0]


MB_NAMES = {"pelvis": "Hips", **{k: v for k, v in JOINT_MAPS["cgspeed_motionbuilder"].items() if k != "pelvis"}}


def permuted(m: Motion, names) -> Motion:
    """``m`` with its joints in the order ``names`` (parents stay before children in a BFS-like SMPL order)."""
    idx = [m.names.index(n) for n in names]
    parents = [-1] + [idx.index(m.parents[i]) for i in idx[1:]]
    return replace(
        m, names=tuple(names), parents=np.array(parents), offsets=m.offsets[idx], rotations=m.rotations[:, idx]
    )


def test_write_bvh_round_trip(shared_data, tmp_path):
    """cmu_pose (converted from cgspeed MotionBuilder BVH) written as a MotionBuilder-named BVH reads back as the
    same Motion, detected as that skeleton in its unit; a real 3dsMax take round-trips in another Euler order."""
    m = read_motion(shared_data / "cmu_pose" / "test.npz")[0]
    mb = replace(m, names=tuple(MB_NAMES[n] for n in m.names), end_sites={"Head": np.array([0.0, 0.1, 0.0])})
    path = write_bvh(mb, tmp_path / "03_01_mb.bvh")
    text = path.read_text()
    back = read_bvh(path)
    assert detect_skeleton(back) == "cgspeed_motionbuilder" and set(back.names) == set(mb.names)
    back = permuted(back, mb.names)  # BVH nests joints depth-first
    assert f"OFFSET {mb.offsets[4][0] / UNITS_M['cgspeed_motionbuilder']:.9f}" in text  # written in cgspeed units
    np.testing.assert_allclose(back.offsets, mb.offsets, atol=1e-9)
    np.testing.assert_allclose(back.rotations, mb.rotations, atol=1e-8)
    np.testing.assert_allclose(back.trans, mb.trans, atol=1e-9)
    np.testing.assert_allclose(back.end_sites["Head"], [0, 0.1, 0], atol=1e-12)
    assert back.fps == pytest.approx(30.0, rel=1e-8)
    check_skeleton(back, "cgspeed_motionbuilder")

    full = read_bvh(shared_data / "cmu_extra" / "bvh_3dsmax" / "131_02.bvh")
    take = full.subsample(30)  # 120 Hz -> frames 0, 4, 8, ...
    np.testing.assert_array_equal(take.rotations, full.rotations[::4])
    assert take.fps == pytest.approx(30.0, rel=1e-4) and full.subsample(None) is full
    back = read_bvh(write_bvh(take, tmp_path / "131_02.bvh", axes="xzy"))
    assert back.names == take.names and back.parents.tolist() == take.parents.tolist()  # file order kept
    for a in ("offsets", "rotations", "trans"):
        np.testing.assert_allclose(getattr(back, a), getattr(take, a), atol=1e-8)
    assert set(back.end_sites) == set(take.end_sites) and len(back) == len(take) == 312


def test_unknown_skeleton_units_and_names(tmp_path):
    """A skeleton no map knows: the unit is guessed from an adult height or refused; detect_skeleton lists the
    closest map's missing joints and the unknown ones."""

    def write(path, scale):
        path.write_text(
            f"HIERARCHY\nROOT pelvis_x\n{{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition "
            f"Zrotation Yrotation Xrotation\n JOINT thigh_l\n {{\n  OFFSET {10 * scale} {-90 * scale} 0\n"
            f"  CHANNELS 3 Zrotation Yrotation Xrotation\n  End Site\n  {{\n   OFFSET 0 {-80 * scale} 0\n"
            f"  }}\n }}\n}}\nMOTION\nFrames: 1\nFrame Time: 0.033333\n0 {90 * scale} 0 0 0 0 0 0 0\n"
        )
        return path

    cm = read_bvh(write(tmp_path / "cm.bvh", 1.0))  # 170 units tall: only cm fits
    assert cm.offsets[1].tolist() == pytest.approx([0.1, -0.9, 0])
    with raises_at(tmp_path / "tiny.bvh", "pass unit_m"):
        read_bvh(write(tmp_path / "tiny.bvh", 1e-4))
    with pytest.raises(FormatError, match=r"cm\.bvh.*skeleton not recognised.*thigh_l"):
        detect_skeleton(cm)
    with pytest.raises(FormatError, match="cm.bvh.*not below"):  # a user map: left_knee above left_hip
        joint_positions(cm, {"pelvis": "pelvis_x", "left_hip": "thigh_l", "left_knee": "pelvis_x"})
    for bad in (
        {"left_hip": "thigh_l"},
        {"pelvis": "pelvis_x", "left_thigh": "thigh_l"},
        {"pelvis": ("pelvis_x",)},
        {"pelvis": "pelvis_x", "left_hip": "thigh_r"},
    ):
        with pytest.raises(FormatError, match=r"cm\.bvh.*joint map"):
            joint_positions(cm, bad)
    with pytest.raises(
        FormatError, match=r"cm\.bvh: skeleton not recognised.*needs joints thigh_r.*does not map: thigh_l"
    ):
        detect_skeleton(cm, {"mine": {"pelvis": "pelvis_x", "left_hip": "thigh_r"}})
    assert detect_skeleton(cm, {"mine": {"pelvis": "pelvis_x", "left_hip": "thigh_l"}}) == "mine"
    pos = joint_positions(cm, {"pelvis": "pelvis_x", "left_hip": "thigh_l", "left_knee": "thigh_l/end"})
    assert pos["left_knee"][0].tolist() == pytest.approx([0.1, 0.9 - 0.9 - 0.8, 0])


# --- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture
def small_bvh(shared_data, tmp_path):
    """The first 6 frames of a real 3dsMax take: (path, lines, index of the MOTION line)."""
    lines = (shared_data / "cmu_extra" / "bvh_3dsmax" / "131_01.bvh").read_text().splitlines()
    motion = lines.index("MOTION")
    lines = lines[: motion + 1] + ["Frames: 6", lines[motion + 2]] + lines[motion + 3 : motion + 9]
    return lines, motion


def _replace_value(line, k, value):
    v = line.split()
    v[k] = value
    return " ".join(v)


BVH_CASES = {  # name -> (edit of (lines, motion), expected place in the message: a line number or a phrase)
    "cut mid-hierarchy": (lambda L, m: L[:60], "line 60: HIERARCHY ends early"),
    "cut mid-frame": (lambda L, m: L[:-1] + [" ".join(L[-1].split()[:20])], "line {last}"),
    "wrong channel count": (
        lambda L, m: [l.replace("CHANNELS 3", "CHANNELS 7", 1) if i == 8 else l for i, l in enumerate(L)],
        "line 9",
    ),
    "bad number": (lambda L, m: L[: m + 5] + [_replace_value(L[m + 5], 7, "1.2.3")] + L[m + 6 :], "line {m6}"),
    "nan": (lambda L, m: L[: m + 4] + [_replace_value(L[m + 4], 10, "nan")] + L[m + 5 :], "line {m5}"),
    "inf": (lambda L, m: L[: m + 4] + [_replace_value(L[m + 4], 1, "-inf")] + L[m + 5 :], "line {m5}"),
    "inf offset": (lambda L, m: [l.replace("OFFSET 2.49329", "OFFSET inf") for l in L], "line 16"),
    "missing MOTION": (lambda L, m: L[:m], "line {m}: no MOTION section"),
    "frame count": (lambda L, m: [l.replace("Frames: 6", "Frames: 7") for l in L], "declares 7 frames"),
    "moving joint": (
        lambda L, m: [
            l.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 3 Xposition Yrotation Xrotation", 1)
            if i == 12
            else l
            for i, l in enumerate(L)
        ],
        "joint LeftHip translates",
    ),
}


@pytest.mark.parametrize("case", sorted(BVH_CASES))
def test_bad_bvh(small_bvh, tmp_path, case):
    lines, motion = small_bvh
    edit, where = BVH_CASES[case]
    out = edit(lines, motion)
    path = tmp_path / f"bad_{case.replace(' ', '_')}.bvh"
    path.write_text("\n".join(out) + "\n")
    with raises_at(path, where.format(last=len(out), m=motion, m5=motion + 5, m6=motion + 6)):
        read_bvh(path)


def test_small_bvh_itself_reads(small_bvh, tmp_path):
    """The unedited fixture of test_bad_bvh is a valid file (so each bad case fails for its own edit)."""
    lines, _ = small_bvh
    (tmp_path / "ok.bvh").write_text("\n".join(lines) + "\n")
    assert len(read_motion(tmp_path / "ok.bvh")) == 6


@pytest.fixture
def small_amc(shared_data, tmp_path):
    """49.asf and the first 3 frames of 49_18.amc, copied to tmp_path: (asf path, amc lines)."""
    folder = shared_data / "cmu_extra" / "asf_amc"
    asf = tmp_path / "49.asf"
    asf.write_text((folder / "49.asf").read_text())
    lines = (folder / "49_18.amc").read_text().splitlines()
    return asf, lines[: lines.index("4")]


AMC_CASES = {
    "unknown bone": (lambda L: L[:10] + ["lpinky 1 2"] + L[10:], "line 11: frame 1: unknown bone 'lpinky'"),
    "wrong value count": (lambda L: [l + " 0.5" if l.startswith("ltibia") else l for l in L], "line {ltibia}"),
    "bad number": (lambda L: [l.replace("lfemur ", "lfemur x", 1) for l in L], "line {lfemur}"),
    "nan": (
        lambda L: [("rtibia nan" if l.startswith("rtibia ") else l) for l in L],
        "line {rtibia}: frame 1: bone 'rtibia' holds NaN",
    ),
    "cut mid-frame": (lambda L: L[:-5], "frame 3"),
    "frame count mismatch": (lambda L: [("5" if l == "3" else l) for l in L], "frame number 5, expected 3"),
    "empty": (lambda L: L[:3], "no frames"),
}


@pytest.mark.parametrize("case", sorted(AMC_CASES))
def test_bad_amc(small_amc, tmp_path, case):
    asf, lines = small_amc
    assert len(read_motion(_write(tmp_path / "49_ok.amc", lines))) == 3
    edit, where = AMC_CASES[case]
    out = edit(lines)
    first = (
        {b: 1 + next(i for i, l in enumerate(out) if l.startswith(b + " ")) for b in ("ltibia", "lfemur", "rtibia")}
        if len(out) > 10
        else {}
    )
    path = _write(tmp_path / f"49_{case.replace(' ', '_')}.amc", out)
    with raises_at(path, where.format(**first)):
        read_motion(path)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


ASF_CASES = {
    "cut mid-bonedata": (lambda t: t[: t.index("name lfoot")], "ends inside the bone block"),
    "bad number": (lambda t: t.replace("length 7.41015", "length seven"), "line {length}"),
    "nan direction": (lambda t: t.replace("direction 0.34202 -0.939693 0 ", "direction nan -0.939693 0 ", 1), "NaN"),
    "no hierarchy": (lambda t: t[: t.index(":hierarchy")], "no complete ':hierarchy'"),
    "unknown bone in hierarchy": (lambda t: t.replace("lfemur ltibia", "lfemur lshin"), "unknown bone 'lshin'"),
}


@pytest.mark.parametrize("case", sorted(ASF_CASES))
def test_bad_asf(shared_data, tmp_path, case):
    text = (shared_data / "cmu_extra" / "asf_amc" / "35.asf").read_text()
    assert "direction 0.34202 -0.939693 0 " in text and "length 7.41015" in text
    edit, where = ASF_CASES[case]
    out = edit(text)
    path = tmp_path / f"bad_{case.replace(' ', '_')}.asf"
    path.write_text(out)
    length_line = 1 + next((i for i, l in enumerate(out.splitlines()) if "length seven" in l), -1)
    with raises_at(path, where.format(length=length_line)):
        read_asf(path)


def test_readers_import_neither_torch_nor_scipy(shared_data):
    """What a studio with the plain (torch-free, scipy-free) install needs: the readers and FK."""
    code = (
        "import sys; from runtime.formats import read_motion, forward_kinematics; "
        f"forward_kinematics(read_motion({str(shared_data / 'cmu_extra' / 'bvh_daz_style' / '11_01.bvh')!r})); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'train')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_bad_npz_and_paths(shared_data, tmp_path):
    d = dict(np.load(shared_data / "cmu_pose" / "val.npz"))
    d["rotations"] = d["rotations"].copy()
    d["rotations"][17, 3, 1] = np.inf
    np.savez(tmp_path / "inf.npz", **d)
    with raises_at(tmp_path / "inf.npz", "frame 17: rotations"):
        read_motion(tmp_path / "inf.npz")
    (tmp_path / "take.fbx").write_text("x")
    with raises_at(tmp_path / "take.fbx", "unknown motion file type"):
        read_motion(tmp_path / "take.fbx")
    with raises_at(tmp_path / "none.bvh", "not found"):
        read_motion(tmp_path / "none.bvh")
    (tmp_path / "a.amc").write_text("1\nroot 0 0 0 0 0 0\n")
    with raises_at(tmp_path / "a.amc", "pass skeleton_file"):
        read_motion(tmp_path / "a.amc")
    for key, value in (("fps", np.array([30.0, 60.0])), ("fps", np.array("thirty"))):
        np.savez(tmp_path / "fps.npz", **{**dict(np.load(shared_data / "cmu_pose" / "val.npz")), key: value})
        with raises_at(tmp_path / "fps.npz", "fps"):
            read_motion(tmp_path / "fps.npz")
    m = read_motion(shared_data / "cmu_pose" / "val.npz")[0]
    R = m.rotations.copy()
    R[4, 7] *= 1.01  # scaled: not a rotation
    with raises_at(m.source, "frame 4: rotation of joint left_ankle is not a rotation"):
        replace(m, rotations=R)
    R[4, 7] = np.diag([1.0, 1.0, -1.0])  # a reflection
    with raises_at(m.source, "frame 4: rotation of joint left_ankle"):
        replace(m, rotations=R)
    with raises_at(m.source, "cannot be written to BVH"):
        write_bvh(replace(m, names=("pelvis bone",) + m.names[1:]), tmp_path / "space.bvh")
    assert not (tmp_path / "space.bvh").exists()
    (tmp_path / "empty.bvh").write_text("")
    with raises_at(tmp_path / "empty.bvh", "line 1: HIERARCHY ends early"):
        read_motion(tmp_path / "empty.bvh")
    (tmp_path / "binary.bvh").write_bytes(bytes(range(256)))
    with raises_at(tmp_path / "binary.bvh", "cannot read BVH"):
        read_motion(tmp_path / "binary.bvh")
