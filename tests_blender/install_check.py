"""Run by test_install.py in a bare bpy (no poseprior, no onnxruntime), with a fresh user profile
(BLENDER_USER_RESOURCES) and, where the machine allows, no network: install the extension zip, enable it, import a
BVH with Blender's importer, score it; with a model directory set in the add-on preferences, score again.
Writes a JSON report to argv[4]. Usage: python install_check.py ZIP BVH MODEL_DIR REPORT"""

import importlib.util
import json
import sys

import bpy

zip_path, bvh, model_dir, report = sys.argv[1:5]
out = {
    "fresh": {m: importlib.util.find_spec(m) is None for m in ("onnxruntime", "runtime")},
    "online_access": bpy.app.online_access,
}
bpy.ops.wm.read_factory_settings(use_empty=True)
res = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
addon = "bl_ext.user_default.poseprior"
out["install"] = sorted(res)
out["enabled"] = addon in bpy.context.preferences.addons
bpy.ops.import_anim.bvh(filepath=bvh, update_scene_fps=True, update_scene_duration=True)
ob = bpy.context.object
out["score"] = sorted(bpy.ops.poseprior.score())
out["log_p"] = list(ob["poseprior_log_p"])
out["model_default"] = ob["poseprior_model"]
out["onnxruntime"] = sys.modules["onnxruntime"].__file__
out["runtime"] = sys.modules[addon + ".runtime"].__file__
bpy.context.preferences.addons[addon].preferences.model_dir = model_dir
out["score_prefs"] = sorted(bpy.ops.poseprior.score())
out["model_prefs"] = ob["poseprior_model"]
out["flagged_prefs"] = list(ob["poseprior_flagged"])
with open(report, "w") as f:
    json.dump(out, f)
