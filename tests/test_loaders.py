"""Data loaders: AMASS npz, the shared npz format, and what they refuse (malformed BVH; a BVH take given to the npz
split loader)."""

import re

import numpy as np
import pytest

from runtime.convert import T_POSE
from runtime.formats import FormatError, read_bvh
from runtime.formats.joint_maps import SMPL_NAMES
from train.amass import load_amass
from train.data import DataError, load_npz, load_split


def raises_naming(path):
    """``pytest.raises(DataError)`` whose message must name the file."""
    return pytest.raises(DataError, match=re.escape(path.name))


# --- AMASS --------------------------------------------------------------------------------------------------------
def write_amass(path, frames=12, width=156, rate_key="mocap_framerate", seed=0, **extra):
    poses = np.random.default_rng(seed).normal(scale=0.6, size=(frames, width))
    np.savez(
        path,
        poses=poses,
        trans=np.zeros((frames, 3)),
        betas=np.zeros(16),
        gender=np.array("male"),
        **{rate_key: np.array(120.0)},
        **extra,
    )
    return poses


@pytest.mark.parametrize(
    "width, rate_key", [(156, "mocap_framerate"), (165, "mocap_frame_rate"), (72, "mocap_framerate")]
)
def test_amass_body_joints_and_subsampling(tmp_path, width, rate_key):
    path = tmp_path / f"take_{width}.npz"
    poses = write_amass(path, width=width, rate_key=rate_key)
    ps = load_amass(path)
    assert ps.rotations.dtype == np.float32 and ps.rotations.shape == (12, 21, 3)
    np.testing.assert_array_equal(ps.rotations, poses[:, 3:66].reshape(-1, 21, 3).astype(np.float32))
    assert ps.sequence_names == [path.stem] and (ps.sequence == 0).all() and (ps.subject == -1).all()
    assert ps.offsets is None and list(ps.files) == [str(path)] and len(ps.files[str(path)]) == 64
    sub = load_amass(path, fps=30)  # 120 Hz -> every 4th frame from frame 0
    np.testing.assert_array_equal(sub.rotations, ps.rotations[::4])
    assert len(load_amass(path, fps=240)) == 12  # never upsampled


def test_amass_folder_via_load_split(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    a = write_amass(folder / "a.npz", frames=5, seed=1)
    b = write_amass(folder / "b.npz", frames=7, width=165, seed=2)
    ps = load_split(folder)
    assert ps.sequence_names == ["a", "b"] and ps.sequence.tolist() == [0] * 5 + [1] * 7
    np.testing.assert_array_equal(
        ps.rotations, np.concatenate([a[:, 3:66], b[:, 3:66]]).reshape(-1, 21, 3).astype(np.float32)
    )
    assert len(ps.files) == 2 and len(load_split(folder, fps=60)) == 3 + 4


@pytest.mark.parametrize("problem", ["width", "nan", "empty", "garbage", "truncated", "no poses", "fps without rate"])
def test_amass_bad_files(tmp_path, problem):
    path = tmp_path / f"bad_{problem.replace(' ', '_')}.npz"
    fps = None
    if problem == "width":
        write_amass(path, width=100)
    elif problem == "nan":
        poses = np.zeros((4, 156))
        poses[2, 10] = np.nan
        np.savez(path, poses=poses)
    elif problem == "empty":
        np.savez(path, poses=np.zeros((0, 156)))
    elif problem == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif problem == "truncated":
        write_amass(path)
        path.write_bytes(path.read_bytes()[:200])
    elif problem == "no poses":
        np.savez(path, betas=np.zeros(16))
    else:
        np.savez(path, poses=np.zeros((4, 156)))
        fps = 30
    with raises_naming(path):
        load_amass(path, fps=fps)


# --- BVH ----------------------------------------------------------------------------------------------------------
# cgspeed "MotionBuilder-friendly" skeleton (31 joints), offsets in BVH units close to CMU subject 01's:
# legs splayed ~20 degrees, spine slightly bent, upper arms raised -- not a T-pose.
SKELETON = (
    "Hips",
    (0, 0, 0),
    [
        (
            "LHipJoint",
            (0, 0, 0),
            [
                (
                    "LeftUpLeg",
                    (1.36, -1.79, 0.84),
                    [
                        (
                            "LeftLeg",
                            (2.45, -6.73, 0),
                            [("LeftFoot", (2.56, -7.04, 0), [("LeftToeBase", (0.16, -0.43, 2.32), [])])],
                        )
                    ],
                )
            ],
        ),
        (
            "RHipJoint",
            (0, 0, 0),
            [
                (
                    "RightUpLeg",
                    (-1.31, -1.79, 0.84),
                    [
                        (
                            "RightLeg",
                            (-2.54, -6.98, 0),
                            [("RightFoot", (-2.57, -7.06, 0), [("RightToeBase", (-0.15, -0.42, 2.29), [])])],
                        )
                    ],
                )
            ],
        ),
        (
            "LowerBack",
            (0, 0, 0),
            [
                (
                    "Spine",
                    (0.03, 2.04, -0.19),
                    [
                        (
                            "Spine1",
                            (0.06, 2.05, -0.04),
                            [
                                (
                                    "Neck",
                                    (0, 0, 0),
                                    [("Neck1", (-0.05, 1.75, 0.17), [("Head", (0.10, 1.76, -0.12), [])])],
                                ),
                                (
                                    "LeftShoulder",
                                    (0, 0, 0),
                                    [
                                        (
                                            "LeftArm",
                                            (3.36, 1.20, -0.31),
                                            [
                                                (
                                                    "LeftForeArm",
                                                    (4.98, 0.4, -0.2),
                                                    [
                                                        (
                                                            "LeftHand",
                                                            (3.48, -0.1, 0.3),
                                                            [
                                                                (
                                                                    "LeftFingerBase",
                                                                    (0.71, 0, 0),
                                                                    [("LeftHandIndex1", (0.57, 0, 0), [])],
                                                                ),
                                                                ("LThumb", (0, 0, 0), []),
                                                            ],
                                                        )
                                                    ],
                                                )
                                            ],
                                        )
                                    ],
                                ),
                                (
                                    "RightShoulder",
                                    (0, 0, 0),
                                    [
                                        (
                                            "RightArm",
                                            (-3.14, 1.37, -0.40),
                                            [
                                                (
                                                    "RightForeArm",
                                                    (-5.03, 0.3, 0.1),
                                                    [
                                                        (
                                                            "RightHand",
                                                            (-3.52, 0.2, -0.1),
                                                            [
                                                                (
                                                                    "RightFingerBase",
                                                                    (-0.70, 0, 0),
                                                                    [("RightHandIndex1", (-0.56, 0, 0), [])],
                                                                ),
                                                                ("RThumb", (0, 0, 0), []),
                                                            ],
                                                        )
                                                    ],
                                                )
                                            ],
                                        )
                                    ],
                                ),
                            ],
                        )
                    ],
                )
            ],
        ),
    ],
)


def flatten(node, parent=-1, out=None):
    """[(name, parent index, offset)] in file order."""
    out = [] if out is None else out
    name, offset, children = node
    out.append((name, parent, np.array(offset, dtype=float)))
    me = len(out) - 1
    for child in children:
        flatten(child, me, out)
    return out


def write_bvh(path, motion, frame_time=1 / 120):
    """Root: Xposition Yposition Zposition Zrotation Yrotation Xrotation; joints: Zrotation Yrotation Xrotation."""
    joints = flatten(SKELETON)
    lines = ["HIERARCHY"]

    def block(i, depth):
        name, _, off = joints[i]
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if i == 0 else 'JOINT'} {name}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        pos = "Xposition Yposition Zposition " if i == 0 else ""
        lines.append(f"{pad}  CHANNELS {6 if i == 0 else 3} {pos}Zrotation Yrotation Xrotation")
        children = [c for c, (_, p, _) in enumerate(joints) if p == i]
        for c in children:
            block(c, depth + 1)
        if not children:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0.000000 0.500000 0.000000", pad + "  }"])
        lines.append(pad + "}")

    block(0, 0)
    lines += ["MOTION", f"Frames: {len(motion)}", f"Frame Time: {frame_time:.7f}"]
    lines += [" ".join(f"{v:.4f}" for v in row) for row in motion]
    path.write_text("\n".join(lines) + "\n")
    return path


def random_motion(frames, seed=0):
    """Channels of ``write_bvh``, rounded as written; hip joints (LHipJoint/RHipJoint) still."""
    rng = np.random.default_rng(seed)
    names = [j[0] for j in flatten(SKELETON)]
    m = rng.normal(scale=35.0, size=(frames, 3 + 3 * len(names)))
    m[:, :3] = rng.normal(scale=20.0, size=(frames, 3))  # root position
    m[:, 3:6] = rng.uniform(-180, 180, size=(frames, 3))  # root orientation
    for hip in ("LHipJoint", "RHipJoint"):
        col = 3 + 3 * names.index(hip)
        m[:, col : col + 3] = 0.0
    return np.round(m, 4)


def test_load_split_refuses_a_motion_take_with_a_pointer_to_ingest(tmp_path):
    """A BVH given to the npz split loader is not converted by the old CMU-canonical loader: the one conversion is
    runtime.convert, through train.ingest (`poseprior train --data FOLDER`)."""
    from train.data import DataError

    path = write_bvh(tmp_path / "walk.bvh", random_motion(9, seed=4))
    with pytest.raises(DataError, match="train.ingest"):
        load_split(path, fps=30)


def edit_last_frame(text, edit):
    lines = text.splitlines()
    lines[-1] = " ".join(edit(lines[-1].split()))
    return "\n".join(lines) + "\n"


MALFORMED = {
    "truncated motion line": lambda t: edit_last_frame(t, lambda v: v[:-3]),
    "non-numeric value": lambda t: edit_last_frame(t, lambda v: v[:5] + ["abc"] + v[6:]),
    "unknown channel": lambda t: t.replace("Zrotation Yrotation Xrotation", "Zrotation Yrotation Wrotation", 2),
    "frame count": lambda t: t.replace("Frames: 3", "Frames: 4"),
    "bad offset": lambda t: t.replace("OFFSET 0.000000 0.000000 0.000000", "OFFSET 0.000000 zero 0.000000", 1),
    "missing brace": lambda t: t.replace("}\nMOTION", "MOTION"),
    "no motion": lambda t: t.split("MOTION")[0],
}


@pytest.mark.parametrize("problem", sorted(MALFORMED))
def test_bvh_malformed(tmp_path, problem):
    """The one BVH parser (``runtime.formats.read_bvh``) refuses each malformed file naming it."""
    path = write_bvh(tmp_path / f"bad_{problem.replace(' ', '_')}.bvh", random_motion(3))
    path.write_text(MALFORMED[problem](path.read_text()))
    with pytest.raises(FormatError, match=re.escape(path.name)):
        read_bvh(path)


# --- shared npz format (real data) --------------------------------------------------------------------------------
def test_shared_cmu_val(shared_data):
    ps = load_npz(shared_data / "cmu_pose" / "val.npz")
    assert len(ps) == 891 and ps.rotations.shape == (891, 21, 3) and ps.offsets.shape == (22, 3)
    for joint, (child, direction) in T_POSE.items():  # the T-pose runtime.convert converts to
        o = ps.offsets[SMPL_NAMES.index(child)]
        assert np.dot(o / np.linalg.norm(o), direction) > 1 - 1e-6, (joint, child, o)
