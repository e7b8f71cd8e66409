"""Any source skeleton's take -> SMPL ``body_pose`` (numpy only): segment-orientation matching on SMPL's rest skeleton.

A smplx ``body_pose`` rotation of joint k is a local rotation about SMPL's joint centre, in frames that are
world-aligned in SMPL's rest pose (Y up, the character's left +X, facing +Z). SMPL's rest skeleton
(``rest_joints``, 22 or 24 x 3, from the model's manifest or ``../shared/data/smpl_skeleton``) is not a mocap
skeleton: its joint centres come from a regressor on the body surface. So rotations cannot be copied joint by
joint; ``to_smpl`` (``CONVERSION_VERSION``) matches *segments* instead, in five steps.

1. **Source globals.** FK of the take (``runtime.formats.forward_kinematics``); the joint map sends every SMPL joint
   to the source joint at its centre. Position ``p_k`` = that joint's position; orientation ``G_k`` = the global
   rotation of the source joint that moves the segment k -> child (the parent, in the source hierarchy, of the
   child's source joint; the joint itself for SMPL's leaf joints). SMPL joints the source lacks (``LACKS``) get
   the identity local rotation.
2. **Canonical frames** (as ``../shared/data/cmu_pose`` was made): the source world is turned so that up is +Y and
   the zero pose's left hip lies at +X (``W``), and every segment with a T-pose direction ``c_k``
   (``T_POSE``: spine and neck up, legs down, arms along +-X) gets ``S_k``, the minimal rotation taking ``c_k``
   onto its zero-pose direction, and every other joint its parent's ``S`` (it keeps its zero-pose orientation relative
   to the parent: the feet and hands of a skeleton whose zero pose splays the legs or drops the arms then turn
   with the leg and arm): ``G'_k = W G_k W^T S_k``, so the T-pose has identity rotations. Then the knee
   and elbow flexion axes are aligned (``_align_hinges``): the take's dominant knee (elbow) flexion axis ``h`` --
   the principal axis of its local rotation vectors, in the parent's frame -- is turned about the bone onto +X
   (knees) or -+Y (left / right elbow, the forearm bending forward), and the same constant twist ``D`` is applied
   to every frame below the hip (shoulder): ``G'_j <- G'_j D``. It fixes the arm twist that differs between BVH
   conventions (cmu_pose's arms were twisted by about 35 degrees by hand for this; here it is measured).
3. **SMPL's leg frames.** SMPL's rest feet point outwards (toe-out ``psi`` = 12.5 / 11.6 degrees left / right,
   measured on ``rest_joints``): the whole leg's flexion plane is turned outwards by ``psi``. Every leg frame gets
   the constant ``L = R_y(-+psi)``: ``G'_j <- G'_j L`` for hip, knee, ankle, foot (the knee then flexes about
   ``R_y(psi) x`` in SMPL's thigh frame, as real SMPL fits do). Then half of the ankle's axial twist (the foot's
   turn about the shank, ``phi``) moves to the knee (``KNEE_TWIST_SHARE``): SMPL fits carry tibial rotation in
   the knee, which a hinge knee cannot. ``G'_knee <- G'_knee R_shank(f)``, ``f = shared_twist(r_ankle, shank,
   share)`` (``share * phi`` where |phi| <= 90 and the ankle's swing <= 90 degrees, tapered to 0 at phi = +-180
   and at a half-turn swing; ``smpl-segments-2`` used ``share * phi`` itself, which jumps by 180 degrees where phi
   wraps). The same for the elbow: ``ELBOW_TWIST_SHARE`` of the wrist's turn about the forearm.
4. **Segment directions.** For the limbs and feet, with ``u_k`` SMPL's rest direction of segment
   k -> child and ``d_k`` the source's (``p_child - p_k``), ``G^smpl_k = swing(G'_k u_k -> d_k) G'_k``: the
   source's direction exactly, its twist about the segment kept. The collars (``REST_RELATIVE``) are not matched
   by direction: they keep the canonical source's rotation, i.e. their turn away from the source's zero pose. A
   rig's collar bone is a modelling choice, not anatomy: SMPL's rises 18 degrees from the collar joint to the
   shoulder, the cgspeed 3dsMax rig's 25, CMU's ASF clavicle 16, and the Daz rig's falls 12. Matching the
   absolute direction (``smpl-segments-1``) copied that geometry into every frame: the Daz takes' collars came out
   a constant 35 degrees from every other skeleton's (their BVH collars never move), and completing their arms
   with the prior did worse than the mean pose. SMPL's vertebrae and neck joint are not where a
   mocap spine's are (spine2 -> spine3 leans 25 degrees forward at rest, neck -> head 38 degrees), so the trunk and
   neck are matched as chains: the local rotations of spine1..3 and neck stay the canonical source's, then one
   swing at spine1 (about its centre) puts spine3 on the ray pelvis -> source spine3, and one at the neck puts the
   head on (near, where the ray grazes SMPL's neck sphere: ``_chain_swing``'s ``CHAIN_SOFT``) the ray spine3 ->
   source head, and what the neck does not reach is turned at spine3, so spine3 -> head is the source's direction;
   the head's global orientation stays the source's.
5. **Locals.** ``r_k = G_parent^T G_k``; the root orientation is the source pelvis's canonical orientation,
   ``trans`` the source pelvis position (metres, Y up).

**Where each joint's twist comes from** (its turn about its own segment; SMPL joint k's global ``Gs_k``, local
``r_k = Gs_parent^T Gs_k``; ``o_k`` = the source joint that orients k, ``source_joints``):

* hips, shoulders, ankles: the source's ``o_k`` (step 4a's swing only changes the segment's direction);
* knees: ``o_knee`` (the source's shin) turned by ``shared_twist`` of the ankle's turn about the shank; the ankle
  keeps the rest (step 3); elbows: ``o_elbow`` (the forearm) turned by ``shared_twist`` of the wrist's turn about
  the forearm, the wrist keeps the rest. The twist of a knee or elbow therefore depends on its child segment only
  through ``shared_twist``, which is continuous and Lipschitz (``twist_lipschitz``);
* wrists: the source's hand (``HAND``: the joint after the wrist where the wrist joint only twists the forearm);
  feet, head: their source joint; collars: the canonical source's (``REST_RELATIVE``);
* spine1..3, neck: the canonical source's locals, turned by the chain swings of step 4b (a swing adds no twist
  about the swung segment: it is the minimal rotation).

**Continuity** (``runtime.continuity``; ``tests/test_continuity.py`` on every take of ``../shared/data``). For two
consecutive frames, with ``dL_x`` the geodesic angle between the source joint x's local rotations and ``dr_k``
that of SMPL joint k's converted local rotation:

    dr_k <= K * sum_{x in S(k)} dL_x + EPS,     K = 2.5, EPS = 0.01 degrees,

``S(k)`` (``runtime.continuity.support``) the source joints whose rotations can change r_k at all (those between
the source joints the conversion of k and its parent reads; a turn of a joint above all of them moves them
rigidly, and the conversion is equivariant under that). Why it holds: where a segment's source direction is
rigid with its orientation joint (every built-in map), step 4a's swing is the constant ``swing(u_k, v_k)`` in the
segment's frame, so ``Gs_k = G'_k C_k``, and the change of a product of rotations is at most the sum of the
changes of its factors (geodesic distance is bi-invariant): ``dr_k <= sum dL`` exactly (K = 1). The knee and
elbow add ``shared_twist``'s change, at most ``twist_lipschitz(0.5) = 1.26`` times the child's (the child's source
joints are in S(k)). The chain swings of step 4b are continuous (``CHAIN_SOFT``), but their factor depends on the
skeleton's geometry: it is checked on every shared file, not proven; K = 2.5 covers both. (An axis-angle vector
flips sign at 180 degrees; the bound is about the rotations, not their axis-angle numbers.)

Checked (``tests/test_convert.py``): FK of the result on ``rest_joints`` reproduces the source's thigh, shank,
foot, upper-arm and forearm directions exactly and the trunk (pelvis -> spine3) and neck (spine3 -> head) chains
to within a degree. Measured on ``../shared/data/smpl_reference`` (median nearest-neighbour geodesic distance per
joint from its frames to the converted CMU train split; the table of docs/conversion.md), each step was kept only if it
brought real SMPL frames closer: step 4's literal swing for the trunk and neck made them 8-34 degrees worse (so
chains); ``L`` took the knees from 17 to 13 degrees; the twist share from 13 to 7-10 (all of it: ankles 26 degrees
worse; none: knees 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .formats import JOINT_MAPS, FormatError, Motion, detect_skeleton, forward_kinematics, frame_stride, read_motion
from .formats.joint_maps import END, SMPL_NAMES, validate_joint_map
from .formats.npz import RATE_KEYS, read_npz, write_npz
from .kinematics import forward_kinematics as smpl_forward_kinematics
from .rotations import PARENTS, axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion

CONVERSION_VERSION = "smpl-segments-3"
KNEE_TWIST_SHARE = 0.5
ELBOW_TWIST_SHARE = 0.5
IDX = {n: i for i, n in enumerate(SMPL_NAMES)}
_UP, _DOWN, _X = np.array([0.0, 1.0, 0.0]), np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0])
#: SMPL joint -> (the child that ends its segment, the segment's direction in the T-pose)
T_POSE = {
    "spine1": ("spine2", _UP),
    "spine2": ("spine3", _UP),
    "spine3": ("neck", _UP),
    "neck": ("head", _UP),
    "left_hip": ("left_knee", _DOWN),
    "right_hip": ("right_knee", _DOWN),
    "left_knee": ("left_ankle", _DOWN),
    "right_knee": ("right_ankle", _DOWN),
    "left_shoulder": ("left_elbow", _X),
    "right_shoulder": ("right_elbow", -_X),
    "left_elbow": ("left_wrist", _X),
    "right_elbow": ("right_wrist", -_X),
}
#: segments matched by direction in step 4 (joint -> child)
LIMBS = {
    "left_hip": "left_knee",
    "right_hip": "right_knee",
    "left_knee": "left_ankle",
    "right_knee": "right_ankle",
    "left_ankle": "left_foot",
    "right_ankle": "right_foot",
    "left_collar": "left_shoulder",
    "right_collar": "right_shoulder",
    "left_shoulder": "left_elbow",
    "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist",
    "right_elbow": "right_wrist",
}
#: segments of LIMBS not matched by direction in step 4: they keep the canonical source's rotation (module docstring)
REST_RELATIVE = ("left_collar", "right_collar")
#: hinge joint -> (its flexion axis in SMPL's canonical T-pose frame, the joints below it that move with its twist)
HINGES = {
    "left_knee": (_X, ("left_hip", "left_knee", "left_ankle", "left_foot")),
    "right_knee": (_X, ("right_hip", "right_knee", "right_ankle", "right_foot")),
    "left_elbow": (-_UP, ("left_shoulder", "left_elbow", "left_wrist")),
    "right_elbow": (_UP, ("right_shoulder", "right_elbow", "right_wrist")),
}
_PAR = np.array(PARENTS)
#: source joint whose rotation orients SMPL's wrist (the hand segment), where it is not the wrist joint itself:
#: the joint after the wrist that carries the hand's flexion (CMU ASF's lwrist carries only the forearm's twist)
HAND = {
    "cgspeed_motionbuilder": {"left_wrist": "LeftFingerBase", "right_wrist": "RightFingerBase"},
    "cgspeed_3dsmax": {"left_wrist": "lhand", "right_wrist": "rhand"},
    "cmu_asf": {"left_wrist": "lhand", "right_wrist": "rhand"},
}


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 1e-12, n, 1.0)


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotations taking unit vectors ``a`` onto ``b`` (..., 3) -> (..., 3, 3):
    ``I + [v]x + [v]x^2 / (1 + c)`` with ``v = a x b``, ``c = a . b``; for opposite vectors the half turn
    ``2 n n^T - I`` about an axis ``n`` perpendicular to ``a``."""
    a, b = np.broadcast_arrays(_unit(np.asarray(a, float)), _unit(np.asarray(b, float)))
    v, c = np.cross(a, b), np.sum(a * b, axis=-1)
    K = np.zeros(v.shape + (3,))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    opposite = c < -1.0 + 1e-9
    R = np.eye(3) + K + K @ K / np.maximum(1.0 + c, 1e-9)[..., None, None]
    if opposite.any():
        n = _unit(np.cross(a, np.where(np.abs(a[..., :1]) < 0.9, _X, _UP)))
        half = 2.0 * n[..., :, None] * n[..., None, :] - np.eye(3)
        R = np.where(opposite[..., None, None], half, R)
    return R


def twist_angle(R: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Swing-twist decomposition ``R = swing . twist(axis, phi)``: ``phi = 2 atan2(q_v . axis, q_w)`` in (-pi, pi]."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    w = 0.5 * np.sqrt(np.maximum(1.0 + tr, 0.0))
    v = 0.5 * np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    phi = 2.0 * np.arctan2(v @ axis, 2.0 * w * w)  # v = sin(theta/2) n * 2w, so atan2(v.a, 2w^2) = atan2(sin.a, cos)
    return (phi + np.pi) % (2 * np.pi) - np.pi


#: ``shared_twist``'s taper: the share is exact for child twists up to ``TWIST_FULL`` and swings up to ``SWING_FULL``
TWIST_FULL = np.pi / 2
SWING_FULL = np.pi / 2


def shared_twist(R: np.ndarray, axis: np.ndarray, share: float) -> np.ndarray:
    """The part of a child rotation's twist that ``smpl_globals`` moves to its parent (the knee's share of the ankle's
    turn about the shank, the elbow's of the wrist's about the forearm), radians (...,):

        f(R) = share * w(sigma) * tent(phi),
        tent(phi) = phi                                           for |phi| <= TWIST_FULL,
                    sign(phi) TWIST_FULL (pi - |phi|) / (pi - TWIST_FULL)   beyond,
        w(sigma)  = min(1, cos(sigma / 2) / cos(SWING_FULL / 2)),

    with ``R = swing(sigma) . twist(axis, phi)`` (``twist_angle``; ``cos(sigma/2) = sqrt(q_w^2 + (q_v . axis)^2)``
    for R's unit quaternion q). ``share * phi`` itself is not a function on rotations that can be continuous: phi
    wraps from +pi to -pi (half of it then jumps by pi: the 180-degree elbow and knee flips of
    ``smpl-segments-2``), and near sigma = pi it is undefined (|d phi| <= d theta / cos(sigma / 2)). ``f`` is the
    same as ``share * phi`` wherever |phi| <= TWIST_FULL and sigma <= SWING_FULL, equal at phi = +-pi (both 0), 0
    at sigma = pi, and Lipschitz: for any two rotations at geodesic angle ``theta``,

        |f(R1) - f(R2)| <= K_TWIST theta,   K_TWIST = share (1 + TWIST_FULL / 2) / cos(SWING_FULL / 2)

    (along the geodesic, |d tent| <= max(1, TWIST_FULL / (pi - TWIST_FULL)) |d phi| = |d phi|, w |d phi| <=
    d theta / cos(SWING_FULL / 2), |tent| <= TWIST_FULL and |d w| <= d theta / (2 cos(SWING_FULL / 2)), because the
    unit quaternion moves by at most d theta / 2); 1.26 for share 0.5."""
    q = matrix_to_quaternion(np.asarray(R, float))  # (w, x, y, z), Shepperd's: accurate at half turns
    w, s = q[..., 0], q[..., 1:] @ _unit(np.asarray(axis, float))
    c = np.sqrt(w * w + s * s)  # cos(sigma / 2)
    phi = (2.0 * np.arctan2(s, w) + np.pi) % (2 * np.pi) - np.pi
    full = np.cos(SWING_FULL / 2)
    tent = np.where(
        np.abs(phi) <= TWIST_FULL, phi, np.sign(phi) * TWIST_FULL * (np.pi - np.abs(phi)) / (np.pi - TWIST_FULL)
    )
    return share * np.minimum(1.0, c / full) * tent


def twist_lipschitz(share: float) -> float:
    """``K_TWIST`` of ``shared_twist`` (its docstring): the most its output (radians) changes per radian of change
    of the child rotation."""
    return share * (1.0 + TWIST_FULL / 2) / np.cos(SWING_FULL / 2)


def about(axis: np.ndarray, angle) -> np.ndarray:
    """Rotation(s) by ``angle`` (radians, any shape) about the unit ``axis``."""
    return axis_angle_to_matrix(np.asarray(angle, float)[..., None] * _unit(np.asarray(axis, float)))


def load_rest_joints(source: str | Path | None = None) -> np.ndarray:
    """SMPL's rest joint centres (22, 3), metres, SMPL's canonical frame.

    ``source``: a model directory (its ``manifest.json`` records the skeleton it was trained on; default: the model
    shipped in the package) or an ``.npz`` with ``rest_joints`` (``../shared/data/smpl_skeleton``)."""
    import json

    from .prior import DEFAULT_MODEL_DIR

    path = Path(DEFAULT_MODEL_DIR if source is None else source)
    if path.suffix == ".npz":
        z = read_npz(path)  # FormatError naming the file for anything that is not an npz
        if "rest_joints" not in z:
            raise FormatError(f"{path}: no 'rest_joints' array")
        try:
            rest = np.asarray(z["rest_joints"], float)
        except (TypeError, ValueError):
            raise FormatError(f"{path}: rest_joints has dtype {z['rest_joints'].dtype}, expected numbers") from None
    else:
        try:
            skel = json.loads((path / "manifest.json").read_text())["skeleton"]
            rest = np.asarray(skel["rest_joints"], float)
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise FormatError(
                f"{path}: no SMPL skeleton recorded in manifest.json ({e}); pass rest_joints "
                f"explicitly (an .npz with 'rest_joints')"
            ) from None
    return check_rest_joints(rest, str(path))


#: shortest bone (m) of a rest skeleton: SMPL's shortest is about 5 cm (measured on the shipped model's); a bone
#: shorter than this has no direction, and every segment matched to it converts wrong without a word
MIN_BONE_M = 0.005


def check_rest_joints(rest, source: str) -> np.ndarray:
    """``rest`` (22+, 3) as float64 (22, 3), finite, every bone (joint k minus its parent, k = 1..21) at least
    ``MIN_BONE_M`` long; else a FormatError naming ``source`` and the bone."""
    rest = np.asarray(rest, float)
    if rest.ndim != 2 or rest.shape[0] < 22 or rest.shape[1] != 3 or not np.isfinite(rest).all():
        raise FormatError(f"{source}: rest_joints must be finite (22+, 3), got {rest.shape}")
    rest = rest[:22]
    length = np.linalg.norm(rest[1:] - rest[_PAR[1:]], axis=1)
    short = np.flatnonzero(length < MIN_BONE_M)
    if len(short):
        k = int(short[0]) + 1
        raise FormatError(
            f"{source}: rest_joints: the bone {SMPL_NAMES[PARENTS[k]]} -> {SMPL_NAMES[k]} is "
            f"{length[k - 1]:.3g} m long ({len(short)} bones under {MIN_BONE_M} m): not a skeleton"
        )
    return rest


def source_joints(
    m: Motion, joint_map: dict[str, str], orient: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which source joint step 1 reads for each SMPL joint k (22,) each: its position's joint (-1 where the source
    lacks k), whether that position is the joint's End Site (bool), and its orientation's joint ``o_k`` (the parent,
    in the source hierarchy, of the source joint of the child that ends segment k; the joint itself for leaves;
    ``orient`` overrides, ``HAND``)."""
    validate_joint_map(m, joint_map)
    pos, end, ori = np.full(22, -1), np.zeros(22, bool), np.full(22, -1)
    for k, name in enumerate(SMPL_NAMES):
        if name not in joint_map:
            continue
        value = joint_map[name]
        end[k] = value.endswith(END)
        pos[k] = ori[k] = m.index(value[: -len(END)] if end[k] else value)
        child = LIMBS.get(name) or (T_POSE[name][0] if name in T_POSE else None)
        if child and child in joint_map and not joint_map[child].endswith(END):
            c = m.index(joint_map[child])
            ori[k] = m.parents[c] if m.parents[c] >= 0 else ori[k]
        if orient and name in orient and orient[name] in m.names:
            ori[k] = m.index(orient[name])
    return pos, end, ori


def _source_globals(
    m: Motion, joint_map: dict[str, str], orient: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions p (T, 22, 3), orientations G (T, 22, 3, 3) of the mapped joints (step 1, ``source_joints``), which
    SMPL joints the source has (22,) bool, and the zero pose's positions (22, 3)."""
    pos, end, ori = source_joints(m, joint_map, orient)
    G_all, P_all = forward_kinematics(m)
    zero = Motion(
        m.names,
        m.parents,
        m.offsets,
        np.broadcast_to(np.eye(3), (1,) + m.rotations.shape[1:]),
        np.zeros((1, 3)),
        m.fps,
        m.source,
        m.up,
        end_sites=m.end_sites,
    )
    G0_all, P0_all = forward_kinematics(zero)
    T = len(m)
    p, p0 = np.zeros((T, 22, 3)), np.zeros((22, 3))
    G = np.broadcast_to(np.eye(3), (T, 22, 3, 3)).copy()
    has = pos >= 0
    for k in np.flatnonzero(has):
        j = pos[k]
        if end[k]:
            tip = m.end_sites[m.names[j]]
            p[:, k], p0[k] = P_all[:, j] + G_all[:, j] @ tip, P0_all[0, j] + G0_all[0, j] @ tip
        else:
            p[:, k], p0[k] = P_all[:, j], P0_all[0, j]
        G[:, k] = G_all[:, ori[k]]  # orientation: the source joint that moves segment k -> child
    for k in range(1, 22):  # joints the source lacks: follow their parent (identity local)
        if not has[k]:
            G[:, k] = G[:, PARENTS[k]]
            p[:, k], p0[k] = p[:, PARENTS[k]], p0[PARENTS[k]]
    return p, G, has, p0


def _world_alignment(p0: np.ndarray, up: str) -> np.ndarray:
    """``W`` (3, 3): the file's up axis -> +Y and the zero pose's left hip (relative to the right one) -> +X."""
    upv = np.eye(3)["xyz".index(up)]
    left = p0[IDX["left_hip"]] - p0[IDX["right_hip"]]
    left = left - (left @ upv) * upv
    if np.linalg.norm(left) < 1e-9:
        raise FormatError("the zero pose's hips coincide: cannot tell left from right")
    x = _unit(left)
    return np.stack([x, upv, np.cross(x, upv)])  # rows: the source's left, up and forward axes


def check_handedness(p0: np.ndarray, up: str, source: str) -> None:
    """Refuse a mirrored (left-handed) rig: with ``W`` (``_world_alignment``: the left hip at +X, up +Y, so the
    character faces +Z), the zero pose's toes (ankle -> foot) point forward, +Z, on every real skeleton (the unit
    direction's Z is 0.94-0.99 on all of ../shared/data); a rig whose X axis was flipped keeps its joint names, so
    its "left" leg lies on the character's right and both feet point backwards (Z < -0.5): FormatError."""
    W = _world_alignment(p0, up)
    fwd = []
    for side in ("left", "right"):
        t = (p0[IDX[f"{side}_foot"]] - p0[IDX[f"{side}_ankle"]]) @ W.T
        if np.linalg.norm(t) < 1e-3:
            return  # no feet to tell by
        fwd.append(t[2] / np.linalg.norm(t))
    if max(fwd) < -0.5:
        raise FormatError(
            f"{source}: the rig is mirrored (left-handed): its left joints lie on the character's "
            f"right (both feet point backwards once the left hip is at +X); flip its X axis back "
            f"(offsets, X positions, Y and Z rotations) before converting"
        )


def _canonical(
    p: np.ndarray, G: np.ndarray, has: np.ndarray, p0: np.ndarray, up: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: positions and orientations in the canonical T-pose convention."""
    W = _world_alignment(p0, up)
    p, p0 = p @ W.T, p0 @ W.T
    Gc = W @ G @ W.T
    S = np.broadcast_to(np.eye(3), (22, 3, 3)).copy()
    for k, name in enumerate(SMPL_NAMES):
        S[k] = S[PARENTS[k]] if k else np.eye(3)  # no T-pose direction: keep the zero-pose frame relative to the parent
        if name in T_POSE:
            child, c = T_POSE[name]
            d = p0[IDX[child]] - p0[k]
            if has[k] and has[IDX[child]] and np.linalg.norm(d) > 1e-6:
                S[k] = swing(c, d)
    Gc = Gc @ S
    for name, (target, chain) in HINGES.items():
        k = IDX[name]
        if not has[k]:
            continue
        parent = PARENTS[k]
        local = np.swapaxes(Gc[:, parent], -1, -2) @ Gc[:, k]
        aa = matrix_to_axis_angle(local)
        if np.median(np.linalg.norm(aa, axis=-1)) < np.radians(5):  # too little flexion to find the axis
            continue
        w, V = np.linalg.eigh(aa.T @ aa)
        h = V[:, -1] * np.sign(np.sum(aa @ V[:, -1]) or 1.0)  # the flexion axis, pointing along +angle
        bone = T_POSE[SMPL_NAMES[parent]][1]  # the parent segment's T-pose direction
        h_p, t_p = h - (h @ bone) * bone, target - (target @ bone) * bone
        if np.linalg.norm(h_p) < 0.3:  # flexion about the bone itself: leave it
            continue
        D = swing(t_p, h_p)  # a turn about the bone; local' = D^T r D then flexes about D^T h = target
        for j in chain:
            Gc[:, IDX[j]] = Gc[:, IDX[j]] @ D
    return p, Gc


#: ``_chain_swing``'s softening of the ray-sphere intersection, as a fraction of the squared radius (``delta^2 / r^2``)
CHAIN_SOFT = 0.2


def _chain_swing(
    G_pivot: np.ndarray, pivot: np.ndarray, end: np.ndarray, origin: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """The swing about ``pivot`` that puts the point ``end`` on (or, where the ray only grazes or misses the sphere,
    near) the ray ``origin + s d`` (s > 0), keeping ``|end - pivot| = r``: the target is ``origin + s d`` with

        s = -b + sqrt(soft(b^2 - c)),   b = d.(origin - pivot),   c = |origin - pivot|^2 - r^2,
        soft(x) = (x + sqrt(x^2 + delta^4)) / 2,   delta^2 = CHAIN_SOFT r^2.

    With ``soft(x) = max(x, 0)`` (``smpl-segments-2``) the target is the ray's far intersection with the sphere, its
    closest point where it misses; but ``d s / d x`` is infinite where the ray grazes the sphere, and SMPL's neck
    sits where real heads graze it: the neck turned up to 7 times as far between frames as the source's joints.
    ``soft`` is smooth, ``soft(x) >= max(x, 0)``, ``soft(x) - max(x, 0) <= delta^2 / 2``, and ``d sqrt(soft) / d x
    <= 1 / (sqrt(2) delta)``. ``smpl_globals`` corrects what this leaves off the ray by a swing of the next joint up,
    so the chain's end direction is the source's either way."""
    r2 = np.sum((end - pivot) ** 2, -1)
    o = origin - pivot
    b, c = np.sum(d * o, -1), np.sum(o * o, -1) - r2
    x, delta2 = b * b - c, CHAIN_SOFT * r2
    s = -b + np.sqrt(0.5 * (x + np.sqrt(x * x + delta2 * delta2)))
    target = origin + s[..., None] * d
    return swing(end - pivot, target - pivot)


def smpl_globals(p: np.ndarray, Gc: np.ndarray, rest_joints: np.ndarray, has: np.ndarray | None = None) -> np.ndarray:
    """Steps 3-4: SMPL global orientations (T, 22, 3, 3) from canonical source positions and orientations."""
    T = len(p)
    has = np.ones(22, bool) if has is None else has
    rest = np.asarray(rest_joints, float)[:22]
    ref = Gc.copy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        ankle, foot, knee = IDX[f"{side}_ankle"], IDX[f"{side}_foot"], IDX[f"{side}_knee"]
        toe = rest[foot] - rest[ankle]
        L = about(_UP, -np.arctan2(toe[0], toe[2]))  # step 3: SMPL's outward-turned leg frames
        for j in ("hip", "knee", "ankle", "foot"):
            ref[:, IDX[f"{side}_{j}"]] = ref[:, IDX[f"{side}_{j}"]] @ L
        if has[knee] and has[ankle]:
            r_ankle = np.swapaxes(ref[:, knee], -1, -2) @ ref[:, ankle]
            ref[:, knee] = ref[:, knee] @ about(_DOWN, shared_twist(r_ankle, _DOWN, KNEE_TWIST_SHARE))
        elbow, wrist = IDX[f"{side}_elbow"], IDX[f"{side}_wrist"]
        if has[elbow] and has[wrist]:
            arm = sign * _X
            r_wrist = np.swapaxes(ref[:, elbow], -1, -2) @ ref[:, wrist]
            ref[:, elbow] = ref[:, elbow] @ about(arm, shared_twist(r_wrist, arm, ELBOW_TWIST_SHARE))
    out = ref.copy()
    for name, child in LIMBS.items():  # step 4a: limbs and feet
        k, c = IDX[name], IDX[child]
        if name in REST_RELATIVE or not (has[k] and has[c]):
            continue
        d = p[:, c] - p[:, k]
        ok = np.linalg.norm(d, axis=-1) > 1e-6
        u = _unit(rest[c] - rest[k])
        S = swing(np.einsum("tij,j->ti", ref[:, k], u), d)
        out[:, k] = np.where(ok[:, None, None], S @ ref[:, k], ref[:, k])
    # step 4b: trunk and neck chains, with canonical local rotations and SMPL's offsets
    off = rest - rest[_PAR.clip(0)]
    pelvis, s1, s2, s3, neck, head = (IDX[n] for n in ("pelvis", "spine1", "spine2", "spine3", "neck", "head"))

    def pos(G, k):  # SMPL position of joint k (pelvis at the origin) under globals G
        x = np.zeros((T, 3))
        chain = []
        while k > 0:
            chain.append(k)
            k = PARENTS[k]
        for j in reversed(chain):
            x = x + np.einsum("tij,j->ti", G[:, PARENTS[j]], off[j])
        return x

    R = _chain_swing(out[:, s1], pos(out, s1), pos(out, s3), 0.0 * p[:, 0], _unit(p[:, s3] - p[:, pelvis]))
    out[:, s1], out[:, s2] = R @ out[:, s1], R @ out[:, s2]
    d_neck = _unit(p[:, head] - p[:, s3])
    R = _chain_swing(out[:, neck], pos(out, neck), pos(out, head), pos(out, s3), d_neck)
    out[:, neck] = R @ out[:, neck]
    # where the ray passes farther from SMPL's neck joint than the head offset reaches (the head bent far from the
    # chest), the rest of the turn is made at spine3 (the upper back), about its centre
    R = swing(pos(out, head) - pos(out, s3), d_neck)
    out[:, s3], out[:, neck] = R @ out[:, s3], R @ out[:, neck]
    return out


def to_smpl(m: Motion, rest_joints: np.ndarray, joint_map: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """One take as SMPL: ``{"poses": (T, 72) axis-angle (root first, then the 21 body joints, then two zero hand
    joints), "trans": (T, 3), "mocap_framerate": fps}`` (plus ``subject`` / ``sequence`` when the take has them).

    ``joint_map`` ({SMPL joint: source joint}, ``runtime.formats.joint_maps``) defaults to the built-in skeleton
    that fits the take's joint names. A take already on SMPL's skeleton (the ``smpl`` map: the shared npz format)
    is converted too: its rotations are CMU's or Bandai's, on their own rest skeleton, not SMPL's."""
    orient = None
    if joint_map is None:
        skeleton = detect_skeleton(m)
        joint_map, orient = JOINT_MAPS[skeleton], HAND.get(skeleton)
    p, G, has, p0 = _source_globals(m, joint_map, orient)
    check_handedness(p0, m.up, m.source)
    p, Gc = _canonical(p, G, has, p0, m.up, m.source)
    Gs = smpl_globals(p, Gc, rest_joints, has)
    local = np.swapaxes(Gs[:, _PAR[1:]], -1, -2) @ Gs[:, 1:]
    poses = np.zeros((len(m), 72))
    poses[:, :3] = matrix_to_axis_angle(Gs[:, 0])
    poses[:, 3:66] = matrix_to_axis_angle(local).reshape(len(m), 63)
    out = {"poses": poses, "trans": p[:, 0], "mocap_framerate": np.float64(m.fps)}
    if not np.isfinite(poses).all():
        bad = int(np.argmax(~np.isfinite(poses).all(axis=1)))
        raise FormatError(f"{m.source}: frame {bad}: conversion to SMPL gave non-finite rotations")
    for key in ("subject", "sequence"):
        if getattr(m, key) is not None:
            out[key] = np.array(getattr(m, key))
    return out


def smpl_positions(poses: np.ndarray, rest_joints: np.ndarray) -> np.ndarray:
    """FK of SMPL ``poses`` (T, 72 | 66) on ``rest_joints``, root at the origin: joint positions (T, 22, 3)."""
    T = len(poses)
    R = axis_angle_to_matrix(np.asarray(poses, float)[:, :66].reshape(T, 22, 3))
    off = np.asarray(rest_joints, float)[:22] - np.asarray(rest_joints, float)[:22][_PAR.clip(0)]
    return smpl_forward_kinematics(R[:, 1:], off, R[:, 0])


def convert_file(
    src: str | Path,
    rest_joints: np.ndarray,
    skeleton_file: str | Path | None = None,
    fps: float | None = None,
    joint_map: dict[str, str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Every take in ``src`` (BVH, AMC, shared npz: one per sequence) converted by ``to_smpl``, subsampled to
    ``fps`` first; frame 0 of the cgspeed MotionBuilder and Daz BVH files (their converter's T-pose,
    ``runtime.formats.SYNTHETIC_FRAME0``) is dropped. AMASS files are SMPL already and are read as they are, one
    take per ``sequence`` when they have one (``runtime.source_frames.amass_takes``; without ``trans`` the root
    stays at the origin; without a frame rate ``mocap_framerate`` is NaN: it can be scored, not written by
    ``save_amass``). Every take also has ``source_frames`` (T,), the source's number of each frame
    (``runtime.source_frames``), and ``dropped``, what was left out ("" when nothing). ``joint_map``: the source
    rig's ``{SMPL joint: source joint}`` (``runtime.formats.load_joint_map``) instead of the built-in skeleton
    detected."""
    from .formats.npz import npz_keys
    from .source_frames import amass_takes, take_rows

    path = Path(src)
    if path.suffix.lower() == ".npz" and path.is_file():
        if "poses" in npz_keys(path):
            return [_storable(t, str(path)) for t in amass_takes(path, fps)]
    from dataclasses import replace

    from .formats import SYNTHETIC_FRAME0

    motions = read_motion(path, skeleton_file)
    rows = (
        [r for *_, r in take_rows(read_npz(path), sum(map(len, motions)), str(path))]
        if isinstance(motions, list)
        else [np.arange(len(motions))]
    )
    motions = motions if isinstance(motions, list) else [motions]
    out = []
    for mm, frames in zip(motions, rows):
        dropped = ""
        skeleton = None if joint_map is not None else detect_skeleton(mm)
        if skeleton in SYNTHETIC_FRAME0 and len(mm) > 1:  # the converter's T-pose
            mm = replace(mm, rotations=mm.rotations[1:], trans=mm.trans[1:])
            dropped = f"frame {int(frames[0])} (the {skeleton} converter's T-pose, not capture)"
            frames = frames[1:]
        stride = frame_stride(mm.fps, fps, mm.source)
        try:
            t = _storable(to_smpl(mm.subsample(fps), rest_joints, joint_map), mm.source)
        except FormatError as e:  # every message names the file
            raise e if str(e).startswith(mm.source) else FormatError(f"{mm.source}: {e}") from None
        t["source_frames"], t["dropped"] = np.asarray(frames[::stride], np.int64), dropped
        out.append(t)
    return out


def _storable(take: dict, source: str) -> dict:
    """``take`` if its poses and trans are finite in float32 (as ``save_amass`` writes them), else a FormatError
    naming ``source`` and the first bad frame: nothing non-finite is ever written."""
    for key in ("poses", "trans"):
        a = np.asarray(take[key], np.float64)
        bad = ~(np.abs(a) <= np.finfo(np.float32).max).all(axis=1)
        if bad.any():
            f = int(np.argmax(bad))
            raise FormatError(
                f"{source}: frame {f}: the converted {key} are not finite in float32 ({int(bad.sum())} "
                f"frames): the source holds out-of-range values"
            )
    return take


def named_takes(
    src: str | Path,
    rest_joints: np.ndarray,
    skeleton_file: str | Path | None = None,
    fps: float | None = None,
    joint_map: dict[str, str] | None = None,
) -> list[tuple[str, int, dict]]:
    """``convert_file`` with a (sequence name, subject) for every take: the file's own (shared npz), else the file
    name and the number it starts with (CMU's ``SS_TT`` naming), else -1."""
    src = Path(src)
    converted = convert_file(src, rest_joints, skeleton_file, fps, joint_map)
    out = []
    for i, t in enumerate(converted):
        name = str(t.get("sequence", src.stem if len(converted) == 1 else f"{src.stem}_{i}"))
        subject = str(t.get("subject", name.split("_")[0]))
        out.append((name, int(subject) if subject.isdigit() else -1, t))
    return out


def save_amass(
    takes: list[tuple[str, int, dict]],
    rest_joints: np.ndarray,
    path: str | Path,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write converted takes ``(sequence name, subject, to_smpl output)`` as one AMASS-style npz: ``poses``
    (N, 72) float32, ``trans`` (N, 3), ``mocap_framerate``, ``sequence`` (N,) into ``sequence_names``, ``subject``
    (N,), ``rest_joints`` and ``conversion`` (``CONVERSION_VERSION``), then the arrays of ``extra``. Written
    atomically: a failed or interrupted write leaves no file behind."""
    path = Path(path)
    if not takes:
        raise FormatError(f"{path}: nothing to write (no takes)")
    rates = np.array([float(t["mocap_framerate"]) for _, _, t in takes])
    if not np.isfinite(rates).all():
        raise FormatError(
            f"{path}: the source has no frame rate ({' / '.join(RATE_KEYS)}): an AMASS-style file needs mocap_framerate"
        )
    if rates.max() > rates.min() * (1 + 1e-3):  # BVH rates are 1 / Frame Time, rounded in the file
        raise FormatError(f"{path}: takes at different frame rates {sorted(set(rates.round(3)))}: convert with one fps")
    poses = np.concatenate([t["poses"] for _, _, t in takes]).astype(np.float32)
    trans = np.concatenate([t["trans"] for _, _, t in takes]).astype(np.float32)
    seq = np.concatenate([np.full(len(t["poses"]), i, np.int32) for i, (_, _, t) in enumerate(takes)])
    subj = np.concatenate([np.full(len(t["poses"]), s, np.int32) for _, s, t in takes])
    arrays = {
        "poses": poses,
        "trans": trans,
        "mocap_framerate": np.float64(rates[0]),
        "sequence": seq,
        "sequence_names": np.array([n for n, _, _ in takes]),
        "subject": subj,
        "rest_joints": np.asarray(rest_joints, np.float64),
        "conversion": np.array(CONVERSION_VERSION),
    }
    arrays.update(extra or {})
    return atomic_write(path, lambda tmp: write_npz(tmp, arrays))


def convert(
    src: str | Path,
    out: str | Path,
    rest_joints: np.ndarray | None = None,
    skeleton_file: str | Path | None = None,
    fps: float | None = None,
    joint_map: dict[str, str] | None = None,
) -> dict:
    """``poseprior convert SRC --to smpl --out OUT.npz``: every take of ``src`` (``convert_file``) as one
    AMASS-style file (``save_amass``). ``rest_joints`` default: the skeleton recorded in the shipped model's
    manifest. Returns a summary (takes, frames, fps, the source skeleton)."""
    src = Path(src)
    rest = load_rest_joints() if rest_joints is None else check_rest_joints(rest_joints, "rest_joints")
    takes = named_takes(src, rest, skeleton_file, fps, joint_map)
    save_amass(takes, rest, out)
    return {
        "source": str(src),
        "out": str(out),
        "takes": len(takes),
        "frames": int(sum(len(t["poses"]) for *_, t in takes)),
        "fps": float(takes[0][2]["mocap_framerate"]),
        "conversion": CONVERSION_VERSION,
    }
