"""PosePrior for Blender: score, repair and complete the poses of the active armature's action with the prior.

The take is every frame of the action's keys (``scene.action_frames``), less the converter's T-pose of the
cgspeed MotionBuilder/Daz files (their first key; ``scene.synthetic_frame0``), read by stepping the scene and
converted by ``runtime.convert`` as ``poseprior score`` converts the whole file; the frames in the scene's range
are the ones reported and keyed. Operators (each undoable, with a progress indicator, one-line error reports on
bad input):

* ``poseprior.score``: log p of every frame of the scene's range. Stores on the armature object
  ``poseprior_log_p`` (one value per frame from ``poseprior_frame_start``), ``poseprior_flagged`` (the flagged
  frame numbers: log p below the threshold ``poseprior_threshold``, or, with a model calibrated by ``poseprior
  calibrate``, the take-QA detector's: ``runtime.takes.score``), ``poseprior_rig`` (how the rig was
  recognised), ``poseprior_dropped`` (the frame left out, "" when none) and ``poseprior_model``; marks each flagged span with timeline markers
  (``poseprior A-B`` at its first frame, ``poseprior A-B end`` at its last).
* ``poseprior.repair``: ``runtime.takes`` repair of the flagged frames (or of a frame range), keyed on the bones it
  changed only; every other key is left as it was. Then scores again; ``poseprior_repaired`` lists the frames.
* ``poseprior.complete``: at the current frame, the selected bones are replaced by the prior's most likely
  completion given the other bones (``runtime.fit.complete``), and keyed.

The sidebar panel (View3D > Sidebar > PosePrior) shows the current frame's log p. Preferences: the model
directory (empty: the model shipped in the package) and a joint map JSON for rigs the add-on does not know; each
operator's ``model_dir`` / ``joint_map`` override them for one run.
"""

from __future__ import annotations

import time

import bpy
import numpy as np
from bpy.props import EnumProperty, IntProperty, StringProperty

from ...formats import FormatError
from ...prior import ModelError
from .. import adapter, rig
from . import scene as sc

MARKER = "poseprior "
#: the add-on's module name (what Blender keys its preferences by): the extension's package
#: (``bl_ext.<repo>.poseprior``) when installed from the zip, this package when registered from a checkout
ADDON = __package__.removesuffix(".runtime.blender.addon")


# --- preferences -----------------------------------------------------------------------------------------------------
class PosePriorPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    model_dir: StringProperty(
        name="Model directory",
        subtype="DIR_PATH",
        default="",
        description="An exported SMPL prior (empty: the model shipped with the add-on)",
    )
    joint_map: StringProperty(
        name="Joint map (JSON)",
        subtype="FILE_PATH",
        default="",
        description="{SMPL joint: bone name or null} for rigs the add-on does not recognise",
    )

    def draw(self, context):
        self.layout.prop(self, "model_dir")
        self.layout.prop(self, "joint_map")


def prefs(context) -> tuple[str, str]:
    """(model directory, joint map path) from the add-on preferences ("" when not installed as an add-on)."""
    addon = context.preferences.addons.get(ADDON)
    if addon is None or addon.preferences is None:
        return "", ""
    return addon.preferences.model_dir, addon.preferences.joint_map


class _Progress:
    def __init__(self, context, total: int):
        self.wm, self.total = context.window_manager, max(int(total), 1)
        self.wm.progress_begin(0, self.total)

    def __call__(self, done, total):
        self.wm.progress_update(min(int(done * self.total / max(total, 1)), self.total))

    def end(self):
        self.wm.progress_end()


class _Op:
    """Shared by the operators: loading the prior and the take, reporting errors in one line."""

    joint_map: StringProperty(
        name="Joint map",
        subtype="FILE_PATH",
        default="",
        description="Joint map JSON for this run (empty: the preferences')",
    )

    model_dir: StringProperty(
        name="Model directory",
        subtype="DIR_PATH",
        default="",
        description="Model directory for this run (empty: the preferences')",
    )

    def setup(self, context):
        ob = sc.check_armature(context)
        model_dir, jm = prefs(context)
        prior = adapter.load_prior(self.model_dir or model_dir or None)
        ob["poseprior_model"] = str(prior.path)
        return ob, prior, self.joint_map or jm

    def fail(self, e) -> set:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        self.report({"ERROR"}, msg if msg.startswith("PosePrior") else f"PosePrior: {msg}")
        return {"CANCELLED"}


def store_score(context, at: sc.ArmatureTake, log_p: np.ndarray, flagged: np.ndarray, tau: float) -> list:
    """Custom properties and timeline markers of a score; returns the flagged spans (first, last frame)."""
    ob, frames, rows = at.ob, at.frames, at.scored
    inside = np.zeros(len(frames), bool)
    inside[rows] = True
    flagged = np.asarray(flagged, int)[inside[np.asarray(flagged, int)]] if len(flagged) else np.zeros(0, int)
    ob["poseprior_log_p"] = [float(v) for v in log_p[rows]]
    ob["poseprior_frame_start"] = int(frames[rows[0]])
    ob["poseprior_flagged"] = [int(frames[i]) for i in flagged]
    ob["poseprior_threshold"] = float(tau)
    ob["poseprior_rig"] = at.how
    ob["poseprior_dropped"] = at.dropped
    markers = context.scene.timeline_markers
    for mk in [m for m in markers if m.name.startswith(MARKER)]:
        markers.remove(mk)
    spans = []
    f = [int(frames[i]) for i in flagged]
    for i, x in enumerate(f):
        if i == 0 or x != f[i - 1] + 1:
            spans.append([x, x])
        else:
            spans[-1][1] = x
    for a, b in spans:
        markers.new(f"{MARKER}{a}-{b}", frame=a)
        if b > a:
            markers.new(f"{MARKER}{a}-{b} end", frame=b)
    return spans


def score_armature(context, ob, prior, joint_map: str, progress=None):
    at = sc.read_take(context, ob, joint_map, adapter.rest_joints(prior), progress)
    log_p, flagged, tau = adapter.score(prior, at.poses, at.fps, ob.name)
    spans = store_score(context, at, log_p, flagged, tau)
    return at, log_p, flagged, tau, spans


def _frames(ob) -> int:
    """How many frames reading the take steps through (the progress indicator's unit)."""
    return len(sc.action_frames(ob.animation_data.action))


def _how_flagged(prior, tau: float) -> str:
    return f"motion detector or log p < {tau:.1f}" if adapter.has_detector(prior) else f"log p < {tau:.1f}"


class POSEPRIOR_OT_score(_Op, bpy.types.Operator):
    """Score every frame of the scene range of the active armature's action under the pose prior (the whole action is
    converted, as the CLI converts the whole file)"""

    bl_idname = "poseprior.score"
    bl_label = "Score poses"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        t0 = time.perf_counter()
        progress = None
        try:
            ob, prior, jm = self.setup(context)
            progress = _Progress(context, _frames(ob))
            at, log_p, flagged, tau, spans = score_armature(context, ob, prior, jm, progress)
        except (rig.RigError, FormatError, ModelError, ValueError, OSError) as e:
            return self.fail(e)
        finally:
            if progress:
                progress.end()
        self.report(
            {"INFO"},
            f"PosePrior: {len(at.scored)} frames ({at.how}), median log p {np.median(log_p[at.scored]):.1f}; "
            f"{len(ob['poseprior_flagged'])} flagged ({_how_flagged(prior, tau)}) in {len(spans)} spans "
            f"({time.perf_counter() - t0:.2f} s)",
        )
        return {"FINISHED"}


def _selected_joints(at: sc.ArmatureTake, selected: set[str]) -> list[str]:
    """SMPL joints whose orienting bone (or mapped bone) is among the ``selected`` bone names."""
    orient = rig.orienting_joints(at.motion, at.joint_map)
    out = []
    for k, j in orient.items():
        if k and at.bone_names[at.bone_of_joint[j]] in selected:
            out.append(rig.SMPL_NAMES[k])
    return out


def _apply(at: sc.ArmatureTake, prior, rows: np.ndarray, body: np.ndarray, mask: np.ndarray):
    local, moved, err = rig.bones_for_smpl(
        at.motion, adapter.rest_joints(prior), rows, body[rows].reshape(len(rows), 21, 3), mask[rows], at.joint_map
    )
    return sc.write_rotations(at, rows, local, moved), err


class POSEPRIOR_OT_repair(_Op, bpy.types.Operator):
    """Repair the flagged frames (or a frame range) with the prior; keys only the bones it changes"""

    bl_idname = "poseprior.repair"
    bl_label = "Repair poses"
    bl_options = {"REGISTER", "UNDO"}

    mode: EnumProperty(
        name="Frames",
        items=[
            (
                "FLAGGED",
                "Flagged frames",
                "The flagged frames: each detector span's suspect joints, "
                "the worst joints of frames below the threshold",
            ),
            (
                "RANGE",
                "Frame range",
                "Frames frame_start..frame_end: the selected bones' joints in every frame, or "
                "(no bone selected) the worst joints of the flagged ones",
            ),
        ],
        default="FLAGGED",
    )
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=1)

    def execute(self, context):
        t0 = time.perf_counter()
        progress = None
        try:
            ob, prior, jm = self.setup(context)
            progress = _Progress(context, 3 * _frames(ob))
            at = sc.read_take(context, ob, jm, adapter.rest_joints(prior), progress)
            n = len(at.frames)
            rows, joints = at.scored, None  # the flagged frames in the scene's range (the whole action is scored)
            if self.mode == "RANGE":
                if self.frame_end < self.frame_start:
                    raise ValueError(f"frame range {self.frame_start}-{self.frame_end} is empty")
                rows = np.flatnonzero((at.frames >= self.frame_start) & (at.frames <= self.frame_end))
                if not len(rows):
                    raise ValueError(
                        f"frames {self.frame_start}-{self.frame_end} lie outside the action's frames "
                        f"{at.frames[0]}-{at.frames[-1]}"
                    )
                sel = {pb.name for pb in ob.pose.bones if pb.bone.select}
                joints = _selected_joints(at, sel) or None
            body, mask = adapter.repair(
                prior,
                at.poses,
                at.fps,
                rows,
                joints,
                ob.name,
                progress=lambda d, t: progress(n + d * n / max(t, 1), 3 * n),
            )
            fixed = np.flatnonzero(mask.any(1))
            keyed, err = _apply(at, prior, fixed, body, mask) if len(fixed) else (set(), 0.0)
            progress(2 * n, 3 * n)
            score_armature(context, ob, prior, jm)
        except (rig.RigError, FormatError, ModelError, ValueError, OSError) as e:
            return self.fail(e)
        finally:
            if progress:
                progress.end()
        ob["poseprior_repaired"] = [int(at.frames[i]) for i in fixed]
        self.report(
            {"INFO"},
            f"PosePrior: repaired {len(fixed)} frames, keyed {len(keyed)} bones "
            f"({', '.join(sorted(keyed)) or 'none'}); {len(ob['poseprior_flagged'])} frames flagged now "
            f"({time.perf_counter() - t0:.1f} s, round-trip error {np.degrees(err):.2g} deg)",
        )
        return {"FINISHED"}


class POSEPRIOR_OT_complete(_Op, bpy.types.Operator):
    """Replace the selected bones at the current frame by the prior's most likely completion given the others"""

    bl_idname = "poseprior.complete"
    bl_label = "Complete selected bones"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        progress = None
        try:
            ob, prior, jm = self.setup(context)
            progress = _Progress(context, 2 * _frames(ob))
            frame = context.scene.frame_current
            at = sc.read_take(context, ob, jm, adapter.rest_joints(prior), progress)
            rows = np.flatnonzero(at.frames == frame)
            if not len(rows):
                raise ValueError(
                    f"the current frame {frame} is outside the action's frames {at.frames[0]}-{at.frames[-1]}"
                )
            sel = {pb.name for pb in ob.pose.bones if pb.bone.select}
            free = _selected_joints(at, sel)
            if not free:
                raise ValueError(
                    "select the bones to complete (e.g. an arm's upper arm, forearm and hand) in pose mode"
                )
            body = at.poses[:, 3:66].copy()
            body[rows[0]] = adapter.complete(prior, at.poses[rows[0]], free)
            mask = np.zeros((len(at.frames), 21), bool)
            mask[rows[0]] = [n in free for n in prior.joint_names]
            keyed, err = _apply(at, prior, rows, body, mask)
            _, log_p, *_ = score_armature(context, ob, prior, jm)
        except (rig.RigError, FormatError, ModelError, ValueError, OSError) as e:
            return self.fail(e)
        finally:
            if progress:
                progress.end()
        self.report(
            {"INFO"},
            f"PosePrior: completed {', '.join(free)} at frame {frame}; log p "
            f"{log_p[rows[0]]:.1f} (keyed {', '.join(sorted(keyed))})",
        )
        return {"FINISHED"}


class POSEPRIOR_PT_panel(bpy.types.Panel):
    bl_label = "PosePrior"
    bl_idname = "POSEPRIOR_PT_panel"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PosePrior"

    def draw(self, context):
        layout = self.layout
        ob = context.object
        text = current_log_p_text(ob, context.scene.frame_current)
        layout.label(text=text)
        layout.operator("poseprior.score")
        layout.operator("poseprior.repair")
        layout.operator("poseprior.complete")


def current_log_p_text(ob, frame: int) -> str:
    """What the panel shows: the stored log p of ``frame`` and whether it is flagged."""
    if ob is None or "poseprior_log_p" not in ob:
        return "not scored (Score poses)"
    lp, start = ob["poseprior_log_p"], int(ob["poseprior_frame_start"])
    i = frame - start
    if i == -1 and ob.get("poseprior_dropped"):
        return f"frame {frame}: left out (converter's T-pose)"
    if not 0 <= i < len(lp):
        return f"frame {frame}: not scored"
    flagged = frame in set(ob["poseprior_flagged"])
    return f"frame {frame}: log p {lp[i]:.1f}" + (" (flagged)" if flagged else "")


CLASSES = (PosePriorPreferences, POSEPRIOR_OT_score, POSEPRIOR_OT_repair, POSEPRIOR_OT_complete, POSEPRIOR_PT_panel)


def register():
    for c in CLASSES:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
