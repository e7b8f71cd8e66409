"""An armature as a ``runtime.formats.Motion`` and back, numpy only (no ``bpy``: the add-on passes arrays).

Reading (``motion_from_bones``). For bone b with world rest rotation ``Q_b`` (the rotation part of
``matrix_world @ bone.matrix_local``) and world pose rotation ``P_b(t)`` (of ``matrix_world @ pose_bone.matrix``):

    G_b(t) = P_b(t) Q_b^T              (the bone's turn away from the rest pose, world frame)
    R_b(t) = G_parent(b)(t)^T G_b(t)    (the Motion's local rotation: world-aligned in the rest pose)

so the rest pose is the Motion's zero pose, and a bone's roll (``Q_b -> Q_b Ry(roll)`` with the same visual pose,
``P_b -> P_b Ry(roll)``) cancels. Offsets are the rest heads' differences, end sites the leaf bones' rest tails
(``tail - head``: Blender's BVH importer puts a leaf bone's tail on the BVH End Site), ``trans`` the world head of
the subtree's root bone; the world's up axis is Blender's +Z. Only the subtree of the bone mapped to SMPL's pelvis
is read. Units are Blender's (the conversion uses directions only, so log p does not depend on them).

The rig's joint map (``resolve``): a user map ``{SMPL joint: bone or null}`` (every SMPL joint must be given,
null for one the rig lacks), else the first built-in skeleton of ``runtime.formats.JOINT_MAPS`` whose joints are
all bones (then ``runtime.convert.to_smpl`` detects it itself, as the CLI does), else SMPL add-on bone names
(``smpl_name``: ``pelvis``/``left_hip`` ..., ``Pelvis``/``L_Hip`` ..., with an optional ``m_avg_``/``f_avg_``
prefix), renamed to SMPL's.

Writing back (``bones_for_smpl``): the conversion is not linear, so SMPL rotations are put on the bones by a fixed
point iteration. With ``Gs`` the converted take's SMPL globals, ``Gs*`` the target's (FK of the target locals),
``W`` the canonical world alignment of the conversion (up -> +Y, the rest pose's left hip -> +X) and ``o(k)`` the
bone that orients SMPL joint k (the conversion's choice: the parent of the child's mapped bone, or the hand bone):

    G_o(k) <- W^T (Gs*_k Gs_k^T) W G_o(k)    for every SMPL joint k whose local rotation changes,

then the changed bones' locals ``R = G_parent^T G``, every other bone's local kept as it was, and the take
converted again; repeated until the changed joints' globals are within ``tol`` radians. The whole take is
converted each round (the conversion's hinge axes are estimated per take). Bone basis rotations are then
``B_b = Q_b^T R_b Q_b`` (``basis_rotations``): a bone's pose in its parent's rest-relative frame.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from ..convert import HAND, LIMBS, T_POSE, to_smpl
from ..formats import JOINT_MAPS, Motion, forward_kinematics
from ..formats.joint_maps import END, SMPL_NAMES, skeleton_of
from ..kinematics import chain
from ..rotations import PARENTS, axis_angle_to_matrix, geodesic_deg


class RigError(ValueError):
    """The armature cannot be read as a body: the message is one line for the user."""


_SIDE = re.compile(r"^(?:[mf]_avg_)?(?:(l|r)_)?(.+)$", re.IGNORECASE)


def smpl_name(bone: str) -> str | None:
    """The SMPL joint an SMPL add-on bone name stands for (``Pelvis``, ``L_Hip``, ``m_avg_L_Hip``, ``left_hip``),
    else None."""
    if bone in SMPL_NAMES:
        return bone
    m = _SIDE.match(bone)
    side, rest = m.group(1), m.group(2).lower()
    name = rest if side is None else ("left_" if side.lower() == "l" else "right_") + rest
    return name if name in SMPL_NAMES else None


def resolve(bones, leaves, user_map: dict | None = None) -> tuple[str, dict[str, str] | None, dict[str, str]]:
    """(how the rig was recognised, the joint map to pass to ``to_smpl`` (None: the built-in detection),
    bone -> joint name in the Motion (a renaming, identity but for SMPL add-on names)).

    ``bones``: the armature's bone names; ``leaves``: the bones without children (their tails are end sites)."""
    bones = list(bones)
    if user_map is not None:
        if not isinstance(user_map, dict):
            raise RigError("joint map: a JSON object {SMPL joint: bone name or null}")
        unknown = [k for k in user_map if k not in SMPL_NAMES]
        missing = [k for k in SMPL_NAMES if k not in user_map]
        absent = [
            f"{k}={v!r}"
            for k, v in user_map.items()
            if v is not None and (not isinstance(v, str) or (v[: -len(END)] if v.endswith(END) else v) not in bones)
        ]
        if unknown or missing or absent or user_map.get("pelvis") is None:
            parts = (
                (
                    [f"SMPL joints it does not map (give a bone, or null if the rig has none): {', '.join(missing)}"]
                    if missing
                    else []
                )
                + ([f"keys that are not SMPL joints: {', '.join(unknown)}"] if unknown else [])
                + ([f"bones the armature lacks: {', '.join(absent)}"] if absent else [])
                + (["pelvis must be a bone"] if "pelvis" in user_map and user_map["pelvis"] is None else [])
            )
            raise RigError("joint map: " + "; ".join(parts))
        return "user joint map", {k: v for k, v in user_map.items() if v is not None}, {b: b for b in bones}
    found = skeleton_of(bones, leaves)
    if found is not None:
        return found, None, {b: b for b in bones}
    alias = {}
    for b in bones:
        s = smpl_name(b)
        if s is not None and s not in alias.values():
            alias[b] = s
    if len(set(alias.values())) == len(SMPL_NAMES):
        return (
            "smpl (add-on bone names)",
            None,
            {b: alias.get(b, b if b not in SMPL_NAMES else b + ".src") for b in bones},
        )
    # not recognised: name the SMPL joints without a bone under the closest interpretation
    cands = {
        name: [k for k, v in jm.items() if (v[: -len(END)] if v.endswith(END) else v) not in bones]
        for name, jm in JOINT_MAPS.items()
        if name != "smpl"
    }
    cands["smpl add-on names"] = [k for k in SMPL_NAMES if k not in alias.values()]
    best = min(cands, key=lambda k: len(cands[k]))
    raise RigError(
        f"rig not recognised (closest: {best}); SMPL joints with no bone: {', '.join(cands[best])}. "
        f"Give a joint map JSON {{SMPL joint: bone}} in the add-on preferences"
    )


def pelvis_bone(how: str, joint_map: dict[str, str] | None, rename: dict[str, str]) -> str:
    """The bone mapped to SMPL's pelvis."""
    if joint_map is not None:
        return joint_map["pelvis"]
    if how in JOINT_MAPS:
        return JOINT_MAPS[how]["pelvis"]
    return next(b for b, n in rename.items() if n == "pelvis")


def subtree(names, parents, root: str) -> list[int]:
    """Indices of ``root`` and its descendants, parents before children (depth, then the given order)."""
    names = list(names)
    r = names.index(root)
    depth = {r: 0}
    changed = True
    while changed:
        changed = False
        for i, p in enumerate(parents):
            if i not in depth and p is not None and p >= 0 and p in depth:
                depth[i] = depth[p] + 1
                changed = True
    return sorted(depth, key=lambda i: (depth[i], i))


def _rotations(M: np.ndarray) -> np.ndarray:
    """Rotation part of (..., 4, 4) or (..., 3, 3) matrices with scale removed (columns normalised)."""
    R = np.asarray(M, np.float64)[..., :3, :3]
    return R / np.linalg.norm(R, axis=-2, keepdims=True)


def motion_from_bones(
    names,
    parents,
    rest_world,
    pose_world,
    fps: float,
    source: str,
    root: str,
    rename: dict[str, str] | None = None,
    rest_tails=None,
) -> tuple[Motion, list[int]]:
    """(Motion of the subtree of bone ``root``, the bone index of each Motion joint); module docstring.

    ``names`` (J,), ``parents`` (J,) bone index or -1, ``rest_world`` (J, 4, 4) world rest matrices, ``pose_world``
    (T, J, 4, 4) world pose matrices, ``rest_tails`` (J, 3) world rest tails (end sites of the leaf bones)."""
    idx = subtree(names, parents, root)
    pos = {b: k for k, b in enumerate(idx)}
    Q = _rotations(np.asarray(rest_world)[idx])  # (J', 3, 3)
    P = _rotations(np.asarray(pose_world)[:, idx])  # (T, J', 3, 3)
    G = P @ np.swapaxes(Q, -1, -2)[None]
    par = np.array([-1] + [pos[parents[b]] for b in idx[1:]])
    R = G.copy()
    R[:, 1:] = np.swapaxes(G[:, par[1:]], -1, -2) @ G[:, 1:]
    R = nearest_rotation(R)  # Blender's matrices are float32
    heads = np.asarray(rest_world, np.float64)[idx, :3, 3]
    offsets = heads - heads[par.clip(0)]
    offsets[0] = 0.0
    rename = rename or {}
    jn = [rename.get(names[b], names[b]) for b in idx]
    ends = {}
    if rest_tails is not None:
        has_child = set(par[1:].tolist())
        for k, b in enumerate(idx):
            if k not in has_child:
                ends[jn[k]] = np.asarray(rest_tails, np.float64)[b] - heads[k]
    trans = np.asarray(pose_world, np.float64)[:, idx[0], :3, 3]
    m = Motion(tuple(jn), par, offsets, R, trans, fps, source, up="z", end_sites=ends)
    return m, idx


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """Near-orthonormal (..., 3, 3) matrices (float32 products, error e ~ 1e-7) made orthonormal to float64 precision by
    one Newton step of the polar decomposition, ``R <- (3 R - R R^T R) / 2`` (error ~ e^2; as the polar factor it
    commutes with rotations on either side, so a bone's roll still cancels). Six times faster than an SVD per
    matrix, which the 5,000-frame timing needs."""
    R = np.asarray(R, np.float64)
    return 1.5 * R - 0.5 * R @ np.swapaxes(R, -1, -2) @ R


def basis_rotations(local: np.ndarray, rest_rot: np.ndarray) -> np.ndarray:
    """Bone basis rotations ``Q^T R Q`` (..., 3, 3) of Motion locals ``R`` for bones with world rest rotation ``Q``."""
    Q = _rotations(rest_rot)
    return np.swapaxes(Q, -1, -2) @ local @ Q


# --- SMPL -> bones ---------------------------------------------------------------------------------------------------
def _map_of(m: Motion, joint_map: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    from ..formats import detect_skeleton

    if joint_map is not None:
        return joint_map, {}
    sk = detect_skeleton(m)
    return JOINT_MAPS[sk], HAND.get(sk, {})


def orienting_joints(m: Motion, joint_map: dict[str, str] | None = None) -> dict[int, int]:
    """SMPL joint index -> the Motion joint whose global rotation orients it in ``runtime.convert`` (step 1 of its
    docstring): the parent of the child's mapped joint for segments with a child, else the joint itself (or the
    hand joint of ``HAND``)."""
    jm, orient = _map_of(m, joint_map)
    out = {}
    for k, name in enumerate(SMPL_NAMES):
        if name not in jm:
            continue
        v = jm[name]
        j = m.index(v[: -len(END)] if v.endswith(END) else v)
        child = LIMBS.get(name) or (T_POSE[name][0] if name in T_POSE else None)
        if child and child in jm and not jm[child].endswith(END):
            c = m.index(jm[child])
            j = int(m.parents[c]) if m.parents[c] >= 0 else j
        if name in orient and orient[name] in m.names:
            j = m.index(orient[name])
        out[k] = j
    return out


def _alignment(m: Motion, jm: dict[str, str]) -> np.ndarray:
    """The conversion's ``W``: rows = the rest pose's left (hip to hip, horizontal), up, and forward axes."""
    rest = m.rest_positions()
    up = np.eye(3)["xyz".index(m.up)]
    left = rest[m.index(jm["left_hip"])] - rest[m.index(jm["right_hip"])]
    left = left - (left @ up) * up
    x = left / np.linalg.norm(left)
    return np.stack([x, up, np.cross(x, up)])


def smpl_globals(poses: np.ndarray) -> np.ndarray:
    """SMPL global rotations (T, 22, 3, 3) of axis-angle ``poses`` (T, 72 | 66): ``runtime.kinematics.chain``."""
    R = axis_angle_to_matrix(np.asarray(poses, float)[:, :66].reshape(len(poses), 22, 3))
    return chain(R, np.zeros((22, 3)), PARENTS)[0]


def bones_for_smpl(
    m: Motion,
    rest_joints: np.ndarray,
    frames,
    target_body: np.ndarray,
    changed: np.ndarray,
    joint_map: dict[str, str] | None = None,
    iters: int = 12,
    tol: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(Motion local rotations of ``frames`` (F, J, 3, 3), which Motion joints changed in each frame (F, J), the largest
    remaining error in radians) that make ``to_smpl`` of the take give the SMPL body rotations ``target_body``
    (F, 21, 3) axis-angle on the ``changed`` (F, 21) joints of ``frames``; module docstring. SMPL joints the rig
    lacks are left out (they have no bone)."""
    frames = np.asarray(frames, int)
    changed = np.asarray(changed, bool)
    jm, _ = _map_of(m, joint_map)
    W = _alignment(m, jm)
    orient = orienting_joints(m, joint_map)
    base = to_smpl(m, rest_joints, joint_map)["poses"]
    target = base[frames].copy()
    target[:, 3:66] = np.where(
        np.repeat(changed, 3, 1), np.asarray(target_body).reshape(len(frames), 63), target[:, 3:66]
    )
    Gt = smpl_globals(target)
    ks = [k for k in range(1, 22) if changed[:, k - 1].any() and k in orient]
    moved = np.zeros((len(frames), len(m.names)), bool)  # (F, J): the joints given new rotations per frame
    for k in ks:
        moved[changed[:, k - 1], orient[k]] = True
    local = m.rotations.copy()
    err = 0.0
    for _ in range(iters):
        cur = smpl_globals(to_smpl(replace(m, rotations=local), rest_joints, joint_map)["poses"][frames])
        errs = [np.radians(geodesic_deg(Gt[:, k], cur[:, k]))[changed[:, k - 1]] for k in ks]
        err = float(max((e.max() for e in errs if len(e)), default=0.0))
        if err < tol:
            break
        G, _ = forward_kinematics(replace(m, rotations=local[frames], trans=m.trans[frames]))
        newG = G.copy()
        for k in ks:
            rows = changed[:, k - 1]
            d = Gt[rows, k] @ np.swapaxes(cur[rows, k], -1, -2)
            newG[rows, orient[k]] = W.T @ d @ W @ G[rows, orient[k]]
        Gn = np.empty_like(G)  # FK: the moved joints' new globals, every other local kept
        sub = local[frames].copy()
        for j in range(len(m.names)):
            p = m.parents[j]
            mv = moved[:, j, None, None]
            rel = newG[:, j] if p < 0 else np.swapaxes(Gn[:, p], -1, -2) @ newG[:, j]
            sub[:, j] = np.where(mv, rel, sub[:, j])
            Gn[:, j] = np.where(mv, newG[:, j], sub[:, j] if p < 0 else Gn[:, p] @ sub[:, j])
        U, _, Vt = np.linalg.svd(sub)
        local[frames] = np.where(moved[..., None, None], U @ Vt, local[frames])
    return local[frames], moved, err
