"""poseprior.score in real Blender on BVH files imported by Blender's own importer equals `poseprior score`."""

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import runtime.blender.addon as addon  # noqa: E402
from runtime import takes  # noqa: E402
from runtime.blender import adapter  # noqa: E402
from runtime.formats import SYNTHETIC_FRAME0, detect_skeleton, read_bvh  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered():
    addon.register()
    yield
    addon.unregister()


@pytest.mark.parametrize("rel", ["bvh_daz_style/11_01.bvh", "bvh_3dsmax/131_01.bvh"])
def test_score_matches_cli(shared_data, rel):
    path = shared_data / "cmu_extra" / rel
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True, update_scene_duration=True)
    ob = bpy.context.object
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    lp = np.array(ob["poseprior_log_p"])
    prior = adapter.load_prior()
    s = takes.score(prior, takes.read_take(path, adapter.rest_joints(prior)))
    off = 1 if detect_skeleton(read_bvh(path)) in SYNTHETIC_FRAME0 else 0  # the CLI drops the converter's T-pose
    d = np.abs(lp[off : off + len(s.log_prob)] - s.log_prob)
    assert d.max() < 1e-3, d.max()
    assert list(ob["poseprior_flagged"]) == [int(f) for f in np.flatnonzero(lp < s.threshold) + 1]
