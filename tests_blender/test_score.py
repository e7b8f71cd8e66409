"""poseprior.score in real Blender equals `poseprior score` (the CLI, run as a command) on the same BVH within 1e-3,
on armatures imported by Blender's own BVH importer from every skeleton runtime.formats knows (cgspeed
MotionBuilder / 3dsMax / Daz, SMPL-named), an SMPL armature with an SMPL add-on's bone names, a rig read through a
user joint map, and a rig whose bone rolls were changed (same visual animation); an incomplete joint map is
refused in one line naming every unmapped SMPL joint."""

import json

import numpy as np
import pytest

from conftest import SMPL_ADDON

bpy = pytest.importorskip("bpy")
import mathutils  # noqa: E402

from runtime.formats import SMPL_NAMES  # noqa: E402

TOL = 1e-3


def _check(ob, cli: dict, how: str):
    lp = np.array(ob["poseprior_log_p"])
    ref = np.array(cli["log_prob"])
    assert ob["poseprior_rig"] == how
    assert len(lp) == len(ref), (len(lp), len(ref))
    # the CLI numbers frames as in the file (0-based); Blender's importer keys file frame i at scene frame i + 1
    assert int(ob["poseprior_frame_start"]) == cli["source_frame"][0] + 1
    d = np.abs(lp - ref)
    assert d.max() < TOL, (d.max(), int(d.argmax()))
    assert [f - 1 for f in ob["poseprior_flagged"]] == cli["flagged"]
    print(f"{how}: {len(lp)} frames, max |log p - CLI| = {d.max():.2e}")


@pytest.mark.parametrize("kind", ["cgspeed_daz", "cgspeed_3dsmax", "cgspeed_motionbuilder", "smpl"])
def test_score_matches_cli(addon, bvh_files, import_bvh, cli_score, kind):
    path = bvh_files[kind]
    ob = import_bvh(path)
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    cli = cli_score(path)
    _check(ob, cli, kind)
    # the converter's T-pose (file frame 0 of the MotionBuilder and Daz files) is left out, as the CLI does
    assert bool(ob["poseprior_dropped"]) == bool(cli["dropped"])
    # the sidebar's text: the stored log p of the current frame
    start, lp = int(ob["poseprior_frame_start"]), ob["poseprior_log_p"]
    assert addon.current_log_p_text(ob, start + 10) == f"frame {start + 10}: log p {lp[10]:.1f}" + (
        " (flagged)" if start + 10 in ob["poseprior_flagged"] else ""
    )
    if cli["dropped"]:
        assert "left out" in addon.current_log_p_text(ob, start - 1)


def test_smpl_addon_names(bvh_files, import_bvh, cli_score):
    """Bones renamed to the SMPL add-on convention (m_avg_L_Hip, ...): Blender renames the action's channels too."""
    ob = import_bvh(bvh_files["smpl"])
    for smpl, name in SMPL_ADDON.items():
        ob.data.bones[smpl].name = "m_avg_" + name
    assert "m_avg_L_Shoulder" in ob.pose.bones and "left_shoulder" not in ob.pose.bones
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    _check(ob, cli_score(bvh_files["smpl"]), "smpl (add-on bone names)")


def test_user_joint_map(bvh_files, import_bvh, cli_score, tmp_path):
    """An unknown rig (bones named b00..b21) through a user joint map = the CLI with the same map on the source."""
    path = bvh_files["smpl"]
    ob = import_bvh(path)
    rename = {n: f"b{k:02d}" for k, n in enumerate(SMPL_NAMES)}
    for n, b in rename.items():
        ob.data.bones[n].name = b
    with pytest.raises(RuntimeError, match="rig not recognised"):  # bpy.ops: an ERROR report -> RuntimeError
        bpy.ops.poseprior.score()

    user = tmp_path / "rig.json"
    user.write_text(json.dumps(rename))
    assert bpy.ops.poseprior.score(joint_map=str(user)) == {"FINISHED"}
    src_map = tmp_path / "src.json"
    src_map.write_text(json.dumps({n: n for n in SMPL_NAMES}))
    _check(ob, cli_score(path, "--map", str(src_map)), "user joint map")

    partial = {k: v for k, v in rename.items() if k not in ("left_elbow", "right_wrist")}
    user.write_text(json.dumps(partial))
    with pytest.raises(RuntimeError) as e:
        bpy.ops.poseprior.score(joint_map=str(user))
    msg = str(e.value).strip().splitlines()
    assert len(msg) == 1 and "left_elbow, right_wrist" in msg[0] and "does not map" in msg[0], msg


def _key_world_pose(ob, frames, P, root_t):
    """Key ``ob``'s bones (quaternions, root location) so that each bone's armature-space rotation is ``P[t, b]``
    and the root's head is at ``root_t[t]``, on the bones' current rest (``Q_b``):
    basis_b = (Q_p^T Q_b)^T (P_p^T P_b), root location = Q_root^T (t - head)."""
    bones = list(ob.data.bones)
    Q = np.array([np.array(b.matrix_local)[:3, :3] for b in bones])
    act = ob.animation_data.action
    act.fcurves.clear()
    for i, b in enumerate(bones):
        pb = ob.pose.bones[b.name]
        pb.rotation_mode = "QUATERNION"
        if b.parent is None:
            rel, rest = P[:, i], Q[i]
        else:
            p = bones.index(b.parent)
            rel, rest = np.swapaxes(P[:, p], -1, -2) @ P[:, i], Q[p].T @ Q[i]
        basis = rest.T[None] @ rel
        quats = [np.array(mathutils.Matrix(m.tolist()).to_quaternion()) for m in basis]
        chans = [("rotation_quaternion", np.array(quats))]
        if b.parent is None:
            loc = (root_t - np.array(b.head_local)) @ Q[i]
            chans.append(("location", loc))
        for path, vals in chans:
            for c in range(vals.shape[1]):
                fc = act.fcurves.new(f'pose.bones["{b.name}"].{path}', index=c, action_group=b.name)
                fc.keyframe_points.add(len(frames))
                co = np.stack([frames, vals[:, c]], 1).astype(np.float32).ravel()
                fc.keyframe_points.foreach_set("co", co)
                fc.keyframe_points.foreach_set("interpolation", [0] * len(frames))  # CONSTANT
                fc.update()


def _world(ob, frames):
    scene = bpy.context.scene
    P, heads = [], []
    for f in frames:
        scene.frame_set(int(f))
        P.append([np.array(pb.matrix)[:3, :3] for pb in ob.pose.bones])
        heads.append([np.array(pb.head) for pb in ob.pose.bones])
    return np.array(P), np.array(heads)


def test_bone_roll_does_not_change_the_score(bvh_files, import_bvh):
    """Every bone's roll turned (edit mode) and the take keyed again to the same world-space bone axes and heads:
    the score is unchanged (within float32 noise, measured < 1e-4)."""
    ob = import_bvh(bvh_files["cgspeed_3dsmax"])
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    before = np.array(ob["poseprior_log_p"])
    frames = np.arange(1, len(before) + 1)  # the whole action: it is what is converted
    names = [pb.name for pb in ob.pose.bones]
    assert names == [b.name for b in ob.data.bones]
    P, heads = _world(ob, frames)
    Q0 = np.array([np.array(b.matrix_local)[:3, :3] for b in ob.data.bones])
    bpy.ops.object.mode_set(mode="EDIT")
    rng = np.random.default_rng(0)
    for eb in ob.data.edit_bones:
        eb.roll += float(rng.uniform(0.5, 2.5))
    bpy.ops.object.mode_set(mode="OBJECT")
    Q1 = np.array([np.array(b.matrix_local)[:3, :3] for b in ob.data.bones])
    turn = np.degrees(np.arccos(np.clip((np.trace(np.swapaxes(Q0, 1, 2) @ Q1, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert turn.min() > 25  # every bone's rest frame turned about its own axis
    # the same visual pose: each bone's world axes turned by the same roll as its rest
    _key_world_pose(ob, frames, P @ np.swapaxes(Q0, 1, 2)[None] @ Q1[None], heads[:, 0])
    P2, heads2 = _world(ob, frames)
    np.testing.assert_allclose(heads2, heads, atol=1e-4)
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    d = np.abs(np.array(ob["poseprior_log_p"]) - before)
    print(f"rolls turned {turn.min():.0f}-{turn.max():.0f} deg: max |d log p| = {d.max():.2e}")
    assert d.max() < 1e-3, d.max()


def test_importer_defaults_scene_range(bvh_files, import_bvh, cli_score):
    """Imported with the importer's defaults (the scene keeps 24 fps and frames 1-250): the frames reported are
    those of the scene range, and they equal the CLI's on the whole file (the whole action is converted; converting
    only frames 1-250 of the Daz take was 3.6 nats off)."""
    path = bvh_files["cgspeed_daz"]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_anim.bvh(filepath=str(path))
    ob = bpy.context.object
    assert (bpy.context.scene.frame_start, bpy.context.scene.frame_end) == (1, 250)
    assert bpy.ops.poseprior.score() == {"FINISHED"}
    lp = np.array(ob["poseprior_log_p"])
    cli = cli_score(path)
    assert int(ob["poseprior_frame_start"]) == 2 and len(lp) == 249  # frame 1 is the converter's T-pose
    d = np.abs(lp - np.array(cli["log_prob"])[:249])
    print(f"importer defaults (scene 1-250): max |log p - CLI| = {d.max():.2e}")
    assert d.max() < TOL
    assert [f - 1 for f in ob["poseprior_flagged"]] == [f for f in cli["flagged"] if f <= 249]
