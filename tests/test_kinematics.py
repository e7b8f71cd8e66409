"""Forward kinematics (numpy vs torch vs the data's own README convention) and left-right mirroring."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

import runtime.kinematics as nk
import runtime.rotations as nr
import train.kinematics as tk
from train.data import load_npz


def test_fk_numpy_matches_torch_and_a_hand_chain(shared_data):
    d = load_npz(shared_data / "cmu_pose" / "val.npz")
    with np.load(shared_data / "cmu_pose" / "val.npz") as f:
        root, trans = f["root_orient"][:50].astype(np.float64), f["trans"][:50].astype(np.float64)
    R = nr.axis_angle_to_matrix(d.rotations[:50].astype(np.float64))
    G0 = nr.axis_angle_to_matrix(root)
    p = nk.forward_kinematics(R, d.offsets.astype(np.float64), G0, trans)
    pt = tk.forward_kinematics(
        torch.from_numpy(R), torch.from_numpy(d.offsets), torch.from_numpy(G0), torch.from_numpy(trans)
    ).numpy()
    assert np.abs(p - pt).max() < 1e-12
    # left wrist by hand along its chain pelvis-spine1-spine2-spine3-left_collar-left_shoulder-left_elbow-left_wrist
    chain = [0, 3, 6, 9, 13, 16, 18, 20]
    G, pos = G0, trans.copy()
    for parent, child in zip(chain, chain[1:]):
        pos = pos + np.einsum("bij,j->bi", G, d.offsets[child])
        G = G @ R[:, child - 1]
    assert np.abs(pos - p[:, 20]).max() < 1e-12
    # bone lengths are preserved by any pose
    lengths = np.linalg.norm(p[:, 1:] - p[:, list(nr.PARENTS[1:])], axis=-1)
    assert np.allclose(lengths, np.linalg.norm(d.offsets[1:], axis=-1)[None], atol=1e-6)


def test_mirror_reflects_joint_positions(shared_data):
    d = load_npz(shared_data / "cmu_pose" / "train.npz")
    flip = np.array([-1.0, 1.0, 1.0])
    off = d.offsets.astype(np.float64)
    sym = 0.5 * (off + off[[0] + [1 + j for j in nr.MIRROR_JOINTS]] * flip)  # a left-right symmetric skeleton
    aa = d.rotations[::97].astype(np.float64)
    p = nk.forward_kinematics(nr.axis_angle_to_matrix(aa), sym)
    pm = nk.forward_kinematics(nr.axis_angle_to_matrix(nr.mirror_axis_angle(aa)), sym)
    swap = [0] + [1 + j for j in nr.MIRROR_JOINTS]
    assert np.abs(pm - (p * flip)[:, swap]).max() < 1e-9
    assert np.array_equal(nr.mirror_axis_angle(nr.mirror_axis_angle(aa)), aa)
    assert (
        np.abs(
            Rotation.from_rotvec(aa[:, 2]).as_matrix()
            - np.diag(flip) @ Rotation.from_rotvec(nr.mirror_axis_angle(aa)[:, 2]).as_matrix() @ np.diag(flip)
        ).max()
        < 1e-9
    )
