"""BVH motion files -> ``PoseSet`` of SMPL-ordered local rotations, through a joint map.

Parsing is ``runtime.formats.read_bvh`` (torch-free; a ``Motion`` in metres with its Euler channels and forward
kinematics documented there); ``read_bvh`` here is the same with the cgspeed unit and ``DataError``.

Conversion (``bvh_to_smpl``). A joint map sends ``"pelvis"`` and each SMPL body joint (``JOINT_NAMES``) to a
tuple of BVH joint names: the first one gives the SMPL joint's position, the last one its orientation. With
``G_k`` the BVH global rotation of the last joint of SMPL joint k and ``p(k)`` its SMPL parent,

    r_k = G_p(k)^T G_k,

so the rotations of every BVH joint in between -- the rest of the tuple, and dropped joints such as
LHipJoint -- are composed in. Orientations are exact. Positions follow from constant rest offsets only when
no dropped joint moves a kept one relative to its SMPL parent's frame (true for the CMU cgspeed files: their
LHipJoint/RHipJoint channels are 0, and Neck and the collars sit on Spine1 with zero offset);
``bvh_to_smpl`` measures that and warns when a bone drifts by more than ``POSITION_TOL_M``.

Canonical rest frames (``canonical=True``): SMPL's rest pose is a T-pose -- Y up, the character's left +X,
facing +Z, legs straight down, spine and neck up, arms horizontal along +-X (``CANONICAL_BONES``). For each
joint k with a canonical bone k -> child, ``C_k`` is the minimal (swing, no twist) rotation taking the canonical
direction ``c_k`` onto the BVH zero-pose direction ``d_k`` of that bone (world = joint frame at zero pose);
``C_k = I`` for other joints. Then

    G'_k = G_k C_k,    r'_k = C_p^T r_k C_k,    o'_k = C_p^T (p_k - p_p)_rest,

so FK is unchanged, the canonical T-pose has identity rotations and its bones point along ``c_k``. A BVH whose
zero pose is already such a T-pose loads its zero pose as identity rotations.

Relation to ``../shared/data/cmu_pose``: that set was made from the same cgspeed BVH files with this map and
canonicalisation, but its arm chains were additionally twisted by about 35 degrees about the arm axis (so
the elbow hinges about -+Y). This loader does not do that twist, so rotations from a BVH file and from the
shared npz of the same take differ by a constant per-joint rotation at the arms; joint positions agree.
Also, frame 0 of every cgspeed file is a synthetic T-pose which the shared set dropped; ``load_bvh`` keeps it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.convert import swing
from runtime.formats import JOINT_MAPS, UNITS_M, Motion, forward_kinematics
from runtime.formats import read_bvh as _read_bvh
from runtime.rotations import matrix_to_axis_angle

from .data import DataError, PoseSet, as_data_error, check_rotations, sha256_file
from .rotations import JOINT_NAMES, PARENTS

SMPL_NAMES = ("pelvis",) + tuple(JOINT_NAMES)  # index k matches PARENTS[k]

#: CMU "MotionBuilder-friendly" cgspeed BVH (31 joints) -> SMPL; see ../shared/data/cmu_pose/README.md. Positions
#: are ``runtime.formats.JOINT_MAPS["cgspeed_motionbuilder"]``; spine3 and the wrists also compose the next joint's
#: rotation (Neck, the finger base), as the shared npz does.
CMU_JOINT_MAP: dict[str, tuple[str, ...]] = {k: (v,) for k, v in JOINT_MAPS["cgspeed_motionbuilder"].items()} | {
    "spine3": ("Spine1", "Neck"),
    "left_wrist": ("LeftHand", "LeftFingerBase"),
    "right_wrist": ("RightHand", "RightFingerBase"),
}
#: metres per cgspeed BVH unit: the CMU ASF files declare ``length 0.45``, i.e. 1 unit = 1/0.45 inch
CMU_UNIT_M = UNITS_M["cgspeed_motionbuilder"]

_UP, _DOWN, _LEFT, _RIGHT = (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)
#: SMPL joint -> (SMPL child, direction of the bone joint -> child in the canonical T-pose)
CANONICAL_BONES = {
    "spine1": ("spine2", _UP),
    "spine2": ("spine3", _UP),
    "spine3": ("neck", _UP),
    "neck": ("head", _UP),
    "left_hip": ("left_knee", _DOWN),
    "right_hip": ("right_knee", _DOWN),
    "left_knee": ("left_ankle", _DOWN),
    "right_knee": ("right_ankle", _DOWN),
    "left_shoulder": ("left_elbow", _LEFT),
    "right_shoulder": ("right_elbow", _RIGHT),
    "left_elbow": ("left_wrist", _LEFT),
    "right_elbow": ("right_wrist", _RIGHT),
}
#: largest allowed change (m) of a kept bone, seen in its SMPL parent's frame, before ``bvh_to_smpl`` warns
POSITION_TOL_M = 1e-4


def read_bvh(path: str | Path, unit_m: float = CMU_UNIT_M) -> Motion:
    """``runtime.formats.read_bvh`` in ``unit_m`` metres per unit (default cgspeed's), raising ``DataError``."""
    with as_data_error():
        return _read_bvh(path, unit_m=unit_m)


@dataclass
class SmplMotion:
    """``bvh_to_smpl`` output, float64; FK: ``G_0 = R(root_orient)``, ``p_0 = trans``,
    ``G_k = G_p R(rotations[k-1])``, ``p_k = p_p + G_p offsets[k]``."""

    rotations: np.ndarray  # (F, 21, 3) axis-angle, SMPL body order
    root_orient: np.ndarray  # (F, 3) axis-angle global pelvis orientation
    trans: np.ndarray  # (F, 3) pelvis position (m)
    offsets: np.ndarray  # (22, 3) rest offset of each joint from its parent, in the parent frame (m)


def _map_indices(bvh: Motion, joint_map: dict[str, tuple[str, ...]]) -> tuple[list[int], list[int]]:
    """BVH indices of the first (position) and last (orientation) joint of every SMPL joint, validated."""
    missing = [k for k in SMPL_NAMES if k not in joint_map]
    extra = [k for k in joint_map if k not in SMPL_NAMES]
    if missing or extra:
        raise DataError(f"{bvh.source}: joint map lacks {missing} / has unknown SMPL joints {extra}")
    index = {n: i for i, n in enumerate(bvh.names)}

    def is_below(child: int, ancestor: int) -> bool:
        while child >= 0 and child != ancestor:
            child = bvh.parents[child]
        return child == ancestor

    first, last = [], []
    for k, smpl in enumerate(SMPL_NAMES):
        chain = tuple(joint_map[smpl])
        absent = [n for n in chain if n not in index]
        if not chain or absent:
            raise DataError(
                f"{bvh.source}: joint map entry {smpl} = {chain}: "
                f"{'no joints in BVH file: ' + ', '.join(absent) if absent else 'empty'}"
            )
        ids = [index[n] for n in chain]
        if not all(is_below(b, a) for a, b in zip(ids, ids[1:])):
            raise DataError(f"{bvh.source}: joint map entry {smpl} = {chain} is not a chain down the hierarchy")
        if k and not (ids[0] != first[PARENTS[k]] and is_below(ids[0], first[PARENTS[k]])):
            raise DataError(
                f"{bvh.source}: {smpl} ({chain[0]}) is not below its SMPL parent "
                f"{SMPL_NAMES[PARENTS[k]]} ({joint_map[SMPL_NAMES[PARENTS[k]]][0]}) in the BVH hierarchy"
            )
        first.append(ids[0])
        last.append(ids[-1])
    return first, last


def bvh_to_smpl(
    bvh: Motion, joint_map: dict[str, tuple[str, ...]] = CMU_JOINT_MAP, canonical: bool = True
) -> SmplMotion:
    """All frames of ``bvh`` (a ``Motion`` from ``read_bvh``) as SMPL rotations, root and rest offsets (formulas
    in the module docstring)."""
    first, last = _map_indices(bvh, joint_map)
    G_all, P_all = forward_kinematics(bvh)
    rest = bvh.rest_positions()[first]  # (22, 3)
    G = G_all[:, last]  # (F, 22, 3, 3)
    pos = P_all[:, first]  # (F, 22, 3)

    C = np.broadcast_to(np.eye(3), (len(SMPL_NAMES), 3, 3)).copy()
    if canonical:
        for smpl, (child, direction) in CANONICAL_BONES.items():
            k, ch = SMPL_NAMES.index(smpl), SMPL_NAMES.index(child)
            d = rest[ch] - rest[k]
            if np.linalg.norm(d) > 1e-9:  # a zero-length bone has no direction to align
                C[k] = swing(np.array(direction), d)
    Gc = G @ C  # G'_k = G_k C_k
    par = np.array(PARENTS[1:])
    local = np.swapaxes(Gc[:, par], -1, -2) @ Gc[:, 1:]  # r'_k = G'_p^T G'_k
    offsets = np.zeros((len(SMPL_NAMES), 3))
    offsets[1:] = np.einsum("kba,kb->ka", C[par], rest[1:] - rest[par])  # C_p^T (p_k - p_p)

    # positions from constant offsets: bone p_k - p_p must equal G'_p o'_k in every frame
    drift = np.linalg.norm(pos[:, 1:] - pos[:, par] - np.einsum("fkab,kb->fka", Gc[:, par], offsets[1:]), axis=-1)
    if drift.size and drift.max() > POSITION_TOL_M:
        k = int(np.argmax(drift.max(axis=0)))
        warnings.warn(
            f"{bvh.source}: {JOINT_NAMES[k]} moves up to {drift.max() * 1e3:.2f} mm in its SMPL parent's "
            f"frame (a dropped joint in between rotates or translates): rotations are exact, but FK "
            f"with constant offsets does not reproduce the BVH joint positions",
            stacklevel=2,
        )
    return SmplMotion(matrix_to_axis_angle(local), matrix_to_axis_angle(Gc[:, 0]), pos[:, 0], offsets)


def load_bvh(
    path: str | Path,
    joint_map: dict[str, tuple[str, ...]] = CMU_JOINT_MAP,
    fps: float | None = None,
    canonical: bool = True,
    unit_m: float = CMU_UNIT_M,
) -> PoseSet:
    """One BVH file as a single sequence named after the file stem (subject -1), with its rest offsets.

    Source rate ``1 / Frame Time``; with ``fps`` every ``frame_stride(...)``-th frame is kept, from frame 0
    (``Motion.subsample``).
    """
    path = Path(path)
    bvh = read_bvh(path, unit_m)
    with as_data_error():
        bvh = bvh.subsample(fps)
    smpl = bvh_to_smpl(bvh, joint_map, canonical)
    rot = check_rotations(smpl.rotations, str(path))
    n = len(rot)
    return PoseSet(
        rot,
        np.zeros(n, np.int64),
        [path.stem],
        np.full(n, -1, np.int64),
        smpl.offsets.astype(np.float32),
        {str(path): sha256_file(path)},
    )
