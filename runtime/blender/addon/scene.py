"""Blender side of the add-on: read an armature's action as a take, write rotations back as keys (needs ``bpy``).

``read_take(context, ob, joint_map_path)`` steps the scene through every frame of the action's keys
(``action_frames``; ``scene.frame_set``, so constraints and drivers count, as they do in the viewport; the rows in
the scene's frame range, ``scene_rows``, are the ones reported and keyed), reads every pose bone's armature-space matrix
(``foreach_get``), and builds the ``runtime.formats.Motion`` of ``runtime.blender.rig`` and its SMPL conversion
(``runtime.convert.to_smpl``, the CLI's). ``write_rotations`` keys bone basis rotations on the bones' existing
rotation channels, changing only the keys of the given (frame, bone) pairs: keys are edited in place
(``foreach_set`` of the unchanged values elsewhere, no handle recalculation), missing keys inserted with ``FAST``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import bpy
import mathutils
import numpy as np

from ...convert import to_smpl
from ...formats import SYNTHETIC_FRAME0, FormatError
from .. import rig


@dataclass
class ArmatureTake:
    ob: object
    frames: np.ndarray  # (T,) scene frame numbers
    motion: object  # runtime.formats.Motion of the pelvis subtree
    bone_of_joint: list[int]  # Motion joint -> bone index
    bone_names: list[str]
    rest_world: np.ndarray  # (J_bones, 4, 4)
    how: str
    joint_map: dict | None
    poses: np.ndarray  # (T, 72) SMPL
    fps: float
    dropped: str = ""  # what was left out of the action, as ``poseprior score`` does ("" when nothing)
    scored: np.ndarray | None = None  # rows of ``frames`` in the scene's frame range (what is reported and keyed)


def user_error(msg: str) -> rig.RigError:
    return rig.RigError(msg)


def check_armature(context) -> object:
    ob = context.object
    if ob is None or ob.type != "ARMATURE":
        raise user_error("PosePrior: the active object is not an armature (select an armature)")
    ad = ob.animation_data
    if ad is None or ad.action is None:
        raise user_error(f"PosePrior: armature {ob.name!r} has no action (nothing to score)")
    if not len(ad.action.fcurves):
        raise user_error(f"PosePrior: the action {ad.action.name!r} of {ob.name!r} is empty (no keys)")
    scene = context.scene
    if scene.frame_end < scene.frame_start:
        raise user_error("PosePrior: the scene's frame range is empty")
    return ob


def load_joint_map(path: str) -> dict | None:
    """The user's joint map JSON at ``path`` ("": none)."""
    if not path:
        return None
    p = Path(bpy.path.abspath(path))
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise user_error(f"PosePrior: joint map {p}: cannot read it as JSON ({type(e).__name__}: {e})") from None


def _matrices(coll, n: int, key: str = "matrix") -> np.ndarray:
    buf = np.empty(n * 16, np.float32)
    coll.foreach_get(key, buf)
    return buf.reshape(n, 4, 4).transpose(0, 2, 1)  # RNA matrices are column-major


def read_take(context, ob, joint_map_path: str, rest_joints, progress=None) -> ArmatureTake:
    """``ob``'s action as a Motion and its SMPL conversion, with the rows in the scene's frame range (module
    docstring)."""
    scene = context.scene
    bones = ob.data.bones
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    leaves = [b.name for b in bones if not b.children]
    how, jm, rename = rig.resolve(names, leaves, load_joint_map(joint_map_path))
    Mw = np.array(ob.matrix_world, np.float64)
    rest_local = _matrices(bones, len(names), "matrix_local").astype(np.float64)
    rest_world = Mw @ rest_local
    tails = np.array([list(b.tail_local) + [1.0] for b in bones]) @ Mw.T
    pose_order = [index[pb.name] for pb in ob.pose.bones]
    frames = action_frames(ob.animation_data.action)
    frames, dropped = synthetic_frame0(how, jm, ob.animation_data.action, frames)
    scored = scene_rows(scene, ob.animation_data.action, frames)
    pose = np.empty((len(frames), len(names), 4, 4), np.float64)
    current = scene.frame_current
    try:
        for t, f in enumerate(frames):
            scene.frame_set(int(f))
            pose[t, pose_order] = _matrices(ob.pose.bones, len(names))
            if progress and t % 100 == 0:
                progress(t, len(frames))
    finally:
        scene.frame_set(current)
    pose = Mw @ pose
    fps = scene.render.fps / scene.render.fps_base
    root = rig.pelvis_bone(how, jm, rename)
    try:
        m, idx = rig.motion_from_bones(names, parents, rest_world, pose, fps, ob.name, root, rename, tails[:, :3])
        poses = to_smpl(m, rest_joints, jm)["poses"]
    except FormatError as e:
        raise user_error(f"PosePrior: {e}") from None
    return ArmatureTake(ob, frames, m, idx, names, rest_world, how, jm, poses, fps, dropped, scored)


def action_frames(action) -> np.ndarray:
    """The take: every whole frame of the action's keyed range (``action.frame_range``). The whole action is
    converted, whatever the scene range, as ``poseprior score`` converts the whole file: the conversion estimates
    the knee and elbow hinge axes over the take (``runtime.convert`` step 2), so converting only part of it would
    change every frame's log p (on CMU 11_01, Daz, by up to 3.6 nats for the importer's default range 1-250)."""
    a, b = action.frame_range
    return np.arange(int(np.ceil(a - 1e-6)), int(np.floor(b + 1e-6)) + 1)


def scene_rows(scene, action, frames: np.ndarray) -> np.ndarray:
    """The rows of ``frames`` in the scene's frame range: the frames reported and keyed (frames past the action's
    keys only hold its first or last key, and Blender's BVH importer ends the scene one frame after the last)."""
    rows = np.flatnonzero((frames >= scene.frame_start) & (frames <= scene.frame_end))
    if not len(rows):
        raise user_error(
            f"PosePrior: the scene range {scene.frame_start}-{scene.frame_end} holds no frame of the action "
            f"{action.name!r} (frames {frames[0] if len(frames) else '-'}-{frames[-1] if len(frames) else '-'})"
        )
    return rows


def synthetic_frame0(how: str, joint_map, action, frames: np.ndarray) -> tuple[np.ndarray, str]:
    """(the frames to convert, a note of the one left out): the action's first key frame is the converter's T-pose
    on the cgspeed MotionBuilder and Daz skeletons (``runtime.formats.SYNTHETIC_FRAME0``), not capture; the CLI
    drops it (``runtime.convert.convert_file``), and so does the add-on. It
    matters beyond that frame: the conversion estimates the knee and elbow hinge axes over the whole take
    (``runtime.convert`` step 2), so converting it with the rest changes every frame's log p. As the CLI, a user
    joint map turns this off."""
    first = int(round(action.frame_range[0]))
    if joint_map is None and how in SYNTHETIC_FRAME0 and len(frames) > 1 and frames[0] == first:
        return frames[1:], f"frame {first} (the {how} converter's T-pose, not capture; as poseprior score)"
    return frames, ""


def _channels(pb, basis: np.ndarray, old) -> tuple[str, list[float]]:
    M = mathutils.Matrix(basis.tolist())
    mode = pb.rotation_mode
    if mode == "QUATERNION":
        q = M.to_quaternion()
        if old is not None and mathutils.Quaternion(old).dot(q) < 0:
            q.negate()
        return "rotation_quaternion", list(q)
    if mode == "AXIS_ANGLE":
        axis, angle = M.to_quaternion().to_axis_angle()
        return "rotation_axis_angle", [angle, *axis]
    e = M.to_euler(mode, mathutils.Euler(old, mode)) if old is not None else M.to_euler(mode)
    return "rotation_euler", list(e)


_PATH_LEN = {"rotation_quaternion": 4, "rotation_axis_angle": 4, "rotation_euler": 3}


def write_rotations(at: ArmatureTake, frames_rows: np.ndarray, local: np.ndarray, moved: np.ndarray) -> set[str]:
    """Key Motion local rotations ``local`` (F, J, 3, 3) of the take rows ``frames_rows`` on the bones where
    ``moved`` (F, J) is set; returns the names of the keyed bones."""
    ob = at.ob
    action = ob.animation_data.action
    fcurves = action.fcurves
    edits: dict[tuple[str, int], dict[float, float]] = {}
    keyed = set()
    for j in np.flatnonzero(moved.any(0)):
        b = at.bone_of_joint[j]
        name = at.bone_names[b]
        pb = ob.pose.bones[name]
        basis = rig.basis_rotations(local[:, j], at.rest_world[b][None, :3, :3])
        for r in np.flatnonzero(moved[:, j]):
            frame = float(at.frames[frames_rows[r]])
            path = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(
                pb.rotation_mode, "rotation_euler"
            )
            dp = f'pose.bones["{bpy.utils.escape_identifier(name)}"].{path}'
            old = []
            for i in range(_PATH_LEN[path]):
                fc = fcurves.find(dp, index=i)
                old.append(fc.evaluate(frame) if fc is not None else getattr(pb, path)[i])
            _, values = _channels(pb, basis[r], old if path != "rotation_axis_angle" else None)
            for i, v in enumerate(values):
                edits.setdefault((dp, i, name), {})[frame] = v
        keyed.add(name)
    for (dp, i, name), new in edits.items():
        fc = fcurves.find(dp, index=i) or fcurves.new(dp, index=i, action_group=name)
        kp = fc.keyframe_points
        n = len(kp)
        co = np.empty(2 * n, np.float32)
        hl, hr = np.empty(2 * n, np.float32), np.empty(2 * n, np.float32)
        if n:
            kp.foreach_get("co", co)
            kp.foreach_get("handle_left", hl)
            kp.foreach_get("handle_right", hr)
        x = co[0::2]
        at_key = {float(f): k for k, f in enumerate(x)}
        missing = {f: v for f, v in new.items() if f not in at_key}
        if any(f in at_key for f in new):
            for f, v in new.items():
                if f in at_key:
                    k = at_key[f]
                    d = np.float32(v) - co[2 * k + 1]
                    co[2 * k + 1] = v
                    hl[2 * k + 1] += d
                    hr[2 * k + 1] += d
            kp.foreach_set("co", co)
            kp.foreach_set("handle_left", hl)
            kp.foreach_set("handle_right", hr)
        for f, v in missing.items():
            kp.insert(f, v, options={"FAST"})
    ob.update_tag(refresh={"OBJECT", "DATA", "TIME"})
    return keyed
