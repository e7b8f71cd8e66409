"""docs/blender_repair.png: the add-on's stored log p over the timeline of a real take, glitched, scored and repaired
in Blender (``make blender-figure``; needs ``bpy`` and matplotlib: ``.venv-blender``).

The take: ../shared/data/cmu_extra/bvh_3dsmax/131_02.bvh imported by Blender's BVH importer; the left elbow
(``LeftElbow``) turned 90 degrees about its X axis at frames 400-404 (its keys edited, ``glitch``); the model:
the shipped default with the take-QA detector calibrated (``runtime.calibrate``) on 131_01 and 131_03. Then
``poseprior.score`` (log p before), ``poseprior.repair`` and the score it stores (log p after), plotted with the
threshold tau and the repaired frames.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import bpy
import mathutils
import numpy as np

from runtime.blender import addon as addon_module
from runtime.calibrate import calibrate

ROOT = Path(__file__).resolve().parents[2]


def glitch(ob, bone: str, frames, degrees: float = 90.0) -> None:
    """Turn ``bone`` by ``degrees`` about its local X at ``frames``: its euler keys edited in place (the handles move
    with their key); the BVH importer keys every frame."""
    pb = ob.pose.bones[bone]
    order = pb.rotation_mode
    fcs = [ob.animation_data.action.fcurves.find(f'pose.bones["{bone}"].rotation_euler', index=i) for i in range(3)]
    turn = mathutils.Matrix.Rotation(math.radians(degrees), 3, "X")
    for f in frames:
        ks = [next(k for k in fc.keyframe_points if k.co[0] == f) for fc in fcs]
        e = mathutils.Euler([k.co[1] for k in ks], order)
        new = (e.to_matrix() @ turn).to_euler(order, e)
        for k, v in zip(ks, new):
            d = v - k.co[1]
            k.co[1] += d
            k.handle_left[1] += d
            k.handle_right[1] += d


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "blender_repair.png")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = a.shared / "cmu_extra" / "bvh_3dsmax"
    model = Path(tempfile.mkdtemp(prefix="poseprior-fig-")) / "model"
    calibrate([d / "131_01.bvh", d / "131_03.bvh"], model)
    addon_module.register()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.import_anim.bvh(filepath=str(d / "131_02.bvh"), update_scene_fps=True, update_scene_duration=True)
        ob = bpy.context.object
        span = range(400, 405)
        glitch(ob, "LeftElbow", span)
        bpy.ops.poseprior.score(model_dir=str(model))
        start, tau = int(ob["poseprior_frame_start"]), float(ob["poseprior_threshold"])
        before = np.array(ob["poseprior_log_p"])
        flagged = list(ob["poseprior_flagged"])
        bpy.ops.poseprior.repair(model_dir=str(model))
        after = np.array(ob["poseprior_log_p"])
        repaired = list(ob["poseprior_repaired"])
    finally:
        addon_module.unregister()
    frames = np.arange(start, start + len(before))
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
    for ax, (lo, hi) in zip(axes, ((frames[0], frames[-1]), (360, 445))):
        sel = (frames >= lo) & (frames <= hi)
        ax.plot(frames[sel], before[sel], color="tab:red", lw=1, label="after poseprior.score (glitched)")
        ax.plot(frames[sel], after[sel], color="tab:blue", lw=1, label="after poseprior.repair")
        ax.axhline(tau, color="k", ls="--", lw=0.8, label=f"threshold tau = {tau:.1f}")
        for f in repaired:
            if lo <= f <= hi:
                ax.axvspan(f - 0.5, f + 0.5, color="tab:orange", alpha=0.3, lw=0)
        ax.set_xlim(lo, hi)
        ax.set_xlabel("frame")
    axes[0].set_ylabel('obj["poseprior_log_p"]')
    axes[0].set_title("131_02 (cgspeed 3dsMax), left elbow turned 90 deg at frames 400-404", fontsize=9)
    axes[1].set_title(f"frames 360-445: flagged {flagged[0]}-{flagged[-1]}, repaired: orange", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(
        f"wrote {a.out}: glitched frames log p {before[np.array(span) - start].round(1).tolist()} -> "
        f"{after[np.array(span) - start].round(1).tolist()}, tau {tau:.2f}; flagged {flagged}, repaired {repaired}"
    )


if __name__ == "__main__":
    main()
