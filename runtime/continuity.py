"""Continuity of ``runtime.convert.to_smpl``: how far each converted joint may turn between two frames, given how far
the source's joints turned.

For consecutive frames t, t+1 let ``dL_x`` be the geodesic angle between the source joint x's local rotations
(``Motion.rotations``) and ``dr_k`` that of SMPL body joint k's converted local rotation. The **bound**
(``runtime.convert``'s docstring, "Continuity") is

    dr_k  <=  K * sum_{x in S(k)} dL_x  +  EPS,       K = CONTINUITY_K, EPS = CONTINUITY_EPS (radians),

where ``S(k)`` (``support``) is the set of source joints whose local rotations can change joint k's converted local
rotation at all. The conversion of r_k = Gs_parent(k)^T Gs_k reads a few source quantities (``reads``): the global
orientation of some source joints and the position of others. A local rotation L_x influences an orientation read
of joint a when x is a or one of its ancestors, and a position read of a when x is a strict ancestor of a (or a
itself, for an End Site's tip). A joint x that influences every read, or whose read is x's own position (its
centre), turns them all together: one left-multiplied rotation about x's centre. ``to_smpl`` reads positions only as
differences and is equivariant under that, so r_k does not change; hence

    S(k) = (union of the sets of joints that change k's reads) - (the joints that turn all of them rigidly).

``check`` measures both sides on a take; ``jumps`` counts frame pairs with a large joint jump (the measure of
issue 18: converted vs source frames with a joint turning more than 90 degrees between frames).
"""

from __future__ import annotations

import numpy as np

from . import rotations
from .convert import HAND, IDX, LIMBS, REST_RELATIVE, source_joints, to_smpl
from .formats import JOINT_MAPS, Motion, detect_skeleton
from .formats.joint_maps import SMPL_NAMES
from .rotations import PARENTS

#: the bound's factor (runtime.convert's docstring, "Continuity"): 1 for rigid segments, ``twist_lipschitz`` (1.26) for
#: the twist share, and the chain swings of step 4b (checked on every shared file, not proven)
CONTINUITY_K = 2.5
#: the bound's additive slack, radians (0.01 degrees: float64 round-off of FK, swings and axis-angle round trips)
CONTINUITY_EPS = np.radians(0.01)
_TRUNK1 = (("o", "pelvis"), ("o", "spine1"), ("o", "spine2"), ("p", "pelvis"), ("p", "spine3"))
_TRUNK2 = _TRUNK1 + (("o", "spine3"), ("o", "neck"), ("p", "spine3"), ("p", "head"))


def reads(name: str) -> tuple[tuple[str, str], ...]:
    """What ``to_smpl`` reads of the source to orient SMPL joint ``name`` (its global ``Gs``): ``("o", j)`` the
    orientation of SMPL joint j's orientation joint, ``("p", j)`` the position of its position joint."""
    if name in ("spine1", "spine2"):
        return _TRUNK1  # step 4b: one swing at spine1 puts spine3 on the source's ray
    if name in ("spine3", "neck"):
        return _TRUNK2  # ... then one at the neck (and the rest at spine3) for the head
    out = [("o", name)]
    if name in LIMBS and name not in REST_RELATIVE:
        out += [("p", name), ("p", LIMBS[name])]  # step 4a: the segment's direction
    side = name.split("_")[0]
    if name.endswith("_knee"):
        out.append(("o", f"{side}_ankle"))  # step 3: the knee's share of the ankle's twist
    if name.endswith("_elbow"):
        out.append(("o", f"{side}_wrist"))  # ... and the elbow's of the wrist's
    return tuple(out)


def support(m: Motion, joint_map: dict[str, str] | None = None) -> list[np.ndarray]:
    """``S(k)`` for the 21 SMPL body joints k = 1..21 (module docstring): arrays of source joint indices."""
    orient = None
    if joint_map is None:
        skeleton = detect_skeleton(m)
        joint_map, orient = JOINT_MAPS[skeleton], HAND.get(skeleton)
    pos, end, ori = source_joints(m, joint_map, orient)
    for k in range(1, 22):  # joints the source lacks read their parent's (identity local)
        if pos[k] < 0:
            pos[k], end[k], ori[k] = pos[PARENTS[k]], end[PARENTS[k]], ori[PARENTS[k]]

    def chain(j: int) -> set[int]:
        out = set()
        while j >= 0:
            out.add(int(j))
            j = m.parents[j]
        return out

    def influence(kind: str, name: str) -> tuple[set[int], set[int]]:
        """(the joints whose rotation changes this read, those that turn it with everything below them)"""
        k = IDX[name]
        if kind == "o" or end[k]:
            return chain(ori[k] if kind == "o" else pos[k]), chain(ori[k] if kind == "o" else pos[k])
        return chain(pos[k]) - {int(pos[k])}, chain(pos[k])  # a joint's own turn leaves its centre in place

    out = []
    for k in range(1, 22):
        sets = [influence(*r) for r in reads(SMPL_NAMES[PARENTS[k]]) + reads(SMPL_NAMES[k])]
        out.append(np.array(sorted(set.union(*(c for c, _ in sets)) - set.intersection(*(r for _, r in sets))), int))
    return out


def local_changes(R: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between consecutive frames' rotations: (T, J, 3, 3) -> (T-1, J)."""
    return np.radians(rotations.geodesic_deg(R[1:], R[:-1]))


def check(m: Motion, rest_joints: np.ndarray, poses: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Both sides of the bound on take ``m`` (converted by ``to_smpl`` unless ``poses`` (T, 72) are given):
    ``change`` (T-1, 21) the converted joints' dr_k, ``allowed`` (T-1, 21) ``K sum_{S(k)} dL + EPS``, and
    ``source`` (T-1, J) the source's dL (radians)."""
    if poses is None:
        poses = to_smpl(m, rest_joints)["poses"]
    R = rotations.axis_angle_to_matrix(np.asarray(poses, float)[:, 3:66].reshape(-1, 21, 3))
    dr = local_changes(R)
    dL = local_changes(m.rotations)
    allowed = np.stack([CONTINUITY_K * dL[:, s].sum(1) for s in support(m)], 1) + CONTINUITY_EPS
    return {"change": dr, "allowed": allowed, "source": dL}


def jumps(change: np.ndarray, limit_deg: float = 90.0) -> int:
    """The number of frame pairs in which some joint turns more than ``limit_deg`` (``change``: (T-1, J) radians)."""
    return int((np.asarray(change).max(1) > np.radians(limit_deg)).sum()) if len(change) else 0
