"""poseprior.repair in real Blender: the flagged frames of a real Daz take rise (nearly all) above the threshold,
keys outside the repaired frames stay bit-identical, only the changed bones' rotation channels are keyed."""

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import runtime.blender.addon as addon  # noqa: E402


def _keys(ob):
    return {
        (fc.data_path, fc.array_index): np.array(
            [tuple(k.co) + tuple(k.handle_left) + tuple(k.handle_right) for k in fc.keyframe_points], np.float32
        )
        for fc in ob.animation_data.action.fcurves
    }


def test_repair_flagged(shared_data):
    addon.register()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.import_anim.bvh(
            filepath=str(shared_data / "cmu_extra" / "bvh_daz_style" / "11_01.bvh"),
            update_scene_fps=True,
            update_scene_duration=True,
        )
        ob = bpy.context.object
        assert bpy.ops.poseprior.score() == {"FINISHED"}
        flagged = list(ob["poseprior_flagged"])
        assert flagged
        before = _keys(ob)
        assert bpy.ops.poseprior.repair() == {"FINISHED"}
        after = _keys(ob)
        repaired = set(ob["poseprior_repaired"])
        assert repaired == set(flagged)
        for k, a in before.items():
            diff = np.flatnonzero((a != after[k]).any(1))
            assert all(a[i, 0] in repaired for i in diff), k  # other keys bit-identical
            assert not len(diff) or k[0].endswith("rotation_euler"), k
        lp = np.array(ob["poseprior_log_p"])
        rows = np.array(flagged) - int(ob["poseprior_frame_start"])
        # measured: 65 of 67 flagged frames above the threshold after repair
        assert (lp[rows] >= ob["poseprior_threshold"]).mean() > 0.9
    finally:
        addon.unregister()
