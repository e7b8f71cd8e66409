"""Run by test_install.py in the bare bpy: install the extension zip built WITHOUT wheels, enable it, and try to
score an imported BVH. Writes a JSON report to argv[3]. Usage: python nowheels_check.py ZIP BVH REPORT"""

import importlib.util
import json
import sys

import bpy

zip_path, bvh, report = sys.argv[1:4]
out = {"onnxruntime_found": importlib.util.find_spec("onnxruntime") is not None}
bpy.ops.wm.read_factory_settings(use_empty=True)
out["install"] = sorted(
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
)
out["enabled"] = "bl_ext.user_default.poseprior" in bpy.context.preferences.addons
bpy.ops.import_anim.bvh(filepath=bvh, update_scene_fps=True, update_scene_duration=True)
try:
    out["score"] = sorted(bpy.ops.poseprior.score())
    out["log_p"] = list(bpy.context.object["poseprior_log_p"])
    out["onnxruntime"] = sys.modules["onnxruntime"].__file__
except RuntimeError as e:
    out["error"] = str(e).strip()
with open(report, "w") as f:
    json.dump(out, f)
