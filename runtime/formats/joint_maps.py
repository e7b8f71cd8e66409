"""Joint maps: which joint of a source skeleton sits at each SMPL joint centre, per known skeleton.

A joint map is ``{SMPL name: source joint}`` over ``SMPL_NAMES`` (``"pelvis"`` + ``runtime.rotations.JOINT_NAMES``).
The source joint is the one whose POSITION (``forward_kinematics(m)[1]``) is that SMPL joint's centre, i.e. the
joint at the START of the SMPL joint's segment (``left_hip`` -> the joint at the top of the left thigh), so that a
segment direction is ``P[map[child]] - P[map[joint]]``. A value ``"<joint>/end"`` names the End Site (bone tip) of
``<joint>`` (``Motion.end_sites``). ``"pelvis"`` is required; an SMPL joint the source cannot provide is left out
of the map (``LACKS`` lists them for the built-in skeletons). Users pass their own map in the same form to
``detect_skeleton(m, {"mine": {...}})`` / ``validate_joint_map``.

Built-in skeletons (``JOINT_MAPS``; ``UNITS_M``: metres per file unit, checked on ../shared/data/cmu_extra: hip-knee-
ankle legs of adult length, the lowest foot joint near y = 0; world up +Y, facing +Z, the character's left = +X in
the zero pose for all of them, i.e. the left hip's x relative to the pelvis is positive: ``LEFT_SIGN``):

* ``cgspeed_motionbuilder`` -- cgspeed's "MotionBuilder-friendly" CMU BVH (Hips, LHipJoint, LeftUpLeg, ...; the
  source of ``cmu_pose``; the same correspondence as ../shared/data/cmu_pose/README.md). Unit 0.0254/0.45 m (legs
  0.79-0.86 m per the cmu_pose README).
  Source joints SMPL lacks: LHipJoint/RHipJoint (pelvis -> hip, no rotation in the data), Neck (zero offset on
  Spine1, the neck base; SMPL's ``neck`` is taken at Neck1, the next joint up), LeftFingerBase/LeftHandIndex1/
  LThumb (hands).
* ``cgspeed_3dsmax`` -- cgspeed's "3dsMax-friendly" CMU BVH (Hips, LHipJoint, LeftHip, LeftKnee, ...). Unit
  0.0254/0.45 m (subject 131: legs 0.80 m, head joint 1.31-1.34 m above the ground). Source joints SMPL lacks:
  LHipJoint/RHipJoint, lowerneck (zero offset on Chest2; ``neck`` = Neck above it), lhand/LFingers/LThumb. Its
  zero pose has the arms hanging down (not a T-pose).
* ``cgspeed_daz`` -- cgspeed's older "Daz-friendly" CMU BVH (hip, abdomen, chest, neck, head, lCollar, lShldr,
  lForeArm, lHand, lButtock, lThigh, lShin, lFoot). Unit 0.01 m (cm: legs 0.82 m, head joint 1.42 m above the
  ground). Both files here carry the same skeleton offsets (one Daz figure, not each subject's). It has only two spine
  joints and no toes: SMPL ``spine2`` is not provided (left out; spine1 = abdomen, spine3 = chest, so the
  spine1 segment runs abdomen -> chest), and ``left_foot`` / ``right_foot`` are the End Site of lFoot/rFoot (the
  toe TIP, not the ball of the foot), so the ankle segment has a direction but no toe rotation exists. Daz's
  ``neck`` joint is at the neck base (the cgspeed/ASF maps use the upper-neck joint). Extra joints: lButtock/
  rButtock (pelvis -> hip), eyes, fingers.
* ``cmu_asf`` -- CMU's own ASF/AMC skeleton (root, lhipjoint, lfemur, ltibia, lfoot, ltoes, lowerback, upperback,
  thorax, lowerneck, upperneck, head, lclavicle, lhumerus, lradius, lwrist, ...). A ``Motion`` joint of an ASF
  bone sits at the bone's BASE (``asf`` module), so ``left_hip`` = lfemur, ``left_knee`` = ltibia. The unit comes
  from the ASF file (CMU: ``length 0.45`` = 0.0254/0.45 m; legs 0.75-0.88 m over the six skeletons here). Source
  joints SMPL lacks: lhipjoint/rhipjoint, lowerneck
  (``neck`` = upperneck, as in cgspeed, which was converted from these files), lhand/lfingers/lthumb.
* ``smpl`` -- the 22 SMPL body joints themselves (the shared npz format of ``cmu_pose`` / ``bandai_pose``). Metres.

Every built-in map sends spine1 to a joint at (or very near) the pelvis in the cgspeed and ASF skeletons
(LowerBack / lowerback have zero offset from the root), as ../shared/data/cmu_pose does.
"""

from __future__ import annotations

import numpy as np

from ..rotations import JOINT_NAMES, PARENTS
from .motion import FormatError, Motion, forward_kinematics

SMPL_NAMES: tuple[str, ...] = ("pelvis",) + tuple(JOINT_NAMES)  # index k matches runtime.rotations.PARENTS[k]
END = "/end"
LEFT_SIGN = 1.0  # sign of (left hip - pelvis) . x in the zero pose, for every built-in skeleton


def _sides(common: dict[str, str], left: dict[str, str], right_of) -> dict[str, str]:
    out = dict(common)
    for smpl, src in left.items():
        out[smpl] = src
        out[smpl.replace("left_", "right_")] = right_of(src)
    return {k: out[k] for k in SMPL_NAMES if k in out}


JOINT_MAPS: dict[str, dict[str, str]] = {
    "cgspeed_motionbuilder": _sides(
        {
            "pelvis": "Hips",
            "spine1": "LowerBack",
            "spine2": "Spine",
            "spine3": "Spine1",
            "neck": "Neck1",
            "head": "Head",
        },
        {
            "left_hip": "LeftUpLeg",
            "left_knee": "LeftLeg",
            "left_ankle": "LeftFoot",
            "left_foot": "LeftToeBase",
            "left_collar": "LeftShoulder",
            "left_shoulder": "LeftArm",
            "left_elbow": "LeftForeArm",
            "left_wrist": "LeftHand",
        },
        lambda s: s.replace("Left", "Right"),
    ),
    "cgspeed_3dsmax": _sides(
        {
            "pelvis": "Hips",
            "spine1": "lowerback",
            "spine2": "Chest",
            "spine3": "Chest2",
            "neck": "Neck",
            "head": "Head",
        },
        {
            "left_hip": "LeftHip",
            "left_knee": "LeftKnee",
            "left_ankle": "LeftAnkle",
            "left_foot": "LeftToe",
            "left_collar": "LeftCollar",
            "left_shoulder": "LeftShoulder",
            "left_elbow": "LeftElbow",
            "left_wrist": "LeftWrist",
        },
        lambda s: s.replace("Left", "Right"),
    ),
    "cgspeed_daz": _sides(
        {"pelvis": "hip", "spine1": "abdomen", "spine3": "chest", "neck": "neck", "head": "head"},
        {
            "left_hip": "lThigh",
            "left_knee": "lShin",
            "left_ankle": "lFoot",
            "left_foot": "lFoot" + END,
            "left_collar": "lCollar",
            "left_shoulder": "lShldr",
            "left_elbow": "lForeArm",
            "left_wrist": "lHand",
        },
        lambda s: "r" + s[1:],
    ),
    "cmu_asf": _sides(
        {
            "pelvis": "root",
            "spine1": "lowerback",
            "spine2": "upperback",
            "spine3": "thorax",
            "neck": "upperneck",
            "head": "head",
        },
        {
            "left_hip": "lfemur",
            "left_knee": "ltibia",
            "left_ankle": "lfoot",
            "left_foot": "ltoes",
            "left_collar": "lclavicle",
            "left_shoulder": "lhumerus",
            "left_elbow": "lradius",
            "left_wrist": "lwrist",
        },
        lambda s: "r" + s[1:],
    ),
    "smpl": {k: k for k in SMPL_NAMES},
}
#: metres per file unit (``cmu_asf``: what CMU's ASF files declare; the ASF reader uses the file's own ``length``)
UNITS_M: dict[str, float] = {
    "cgspeed_motionbuilder": 0.0254 / 0.45,
    "cgspeed_3dsmax": 0.0254 / 0.45,
    "cgspeed_daz": 0.01,
    "cmu_asf": 0.0254 / 0.45,
    "smpl": 1.0,
}
#: skeletons whose frame 0 is a synthetic rest pose added by the converter, not capture (cgspeed's MotionBuilder files:
#: ../shared/data/cmu_pose/README.md; Daz files here: frame 0 -> 1 jumps 23 degrees, later frames move 1-8 degrees;
#: the 3dsMax files start with captured motion). ``read_bvh`` keeps it; drop it where it matters.
SYNTHETIC_FRAME0: frozenset[str] = frozenset({"cgspeed_motionbuilder", "cgspeed_daz"})
#: SMPL joints a built-in map provides only approximately: skeleton -> {SMPL joint: what stands in for it}
APPROXIMATED: dict[str, dict[str, str]] = {
    "cgspeed_daz": {
        "left_foot": "toe tip (End Site of lFoot), not the ball of the foot; no toe joint",
        "right_foot": "toe tip (End Site of rFoot), not the ball of the foot; no toe joint",
    },
}
#: SMPL joints each built-in skeleton cannot provide (left out of its map)
LACKS: dict[str, tuple[str, ...]] = {k: tuple(n for n in SMPL_NAMES if n not in v) for k, v in JOINT_MAPS.items()}


def _source_joint(value: str) -> str:
    return value[: -len(END)] if value.endswith(END) else value


def _fits(names, end_sites, joint_map: dict[str, str]) -> list[str]:
    """The map's source joints (or end sites) that ``names`` / ``end_sites`` lack."""
    missing = []
    for value in joint_map.values():
        joint = _source_joint(value)
        if joint not in names or (value.endswith(END) and joint not in end_sites):
            missing.append(value)
    return missing


def skeleton_of(names, end_sites=(), maps: dict[str, dict[str, str]] | None = None) -> str | None:
    """The first map (of ``maps``, default ``JOINT_MAPS``) whose every source joint is in ``names``, else None."""
    for name, jm in (JOINT_MAPS if maps is None else maps).items():
        if not _fits(names, end_sites, jm):
            return name
    return None


def detect_skeleton(m: Motion, maps: dict[str, dict[str, str]] | None = None) -> str:
    """Which map of ``maps`` (default ``JOINT_MAPS``) fits ``m``'s joint names; FormatError otherwise, naming the
    closest map, the joints it misses and ``m``'s joints it does not know."""
    maps = JOINT_MAPS if maps is None else maps
    if not maps:
        raise FormatError(f"{m.source}: no joint maps to detect the skeleton with")
    for jm in maps.values():
        validate_keys(jm, m.source)
    found = skeleton_of(m.names, m.end_sites, maps)
    if found is not None:
        return found
    best = max(maps, key=lambda k: 1 - len(_fits(m.names, m.end_sites, maps[k])) / max(1, len(maps[k])))
    missing = _fits(m.names, m.end_sites, maps[best])
    known = {_source_joint(v) for v in maps[best].values()}
    unknown = [n for n in m.names if n not in known]
    raise FormatError(
        f"{m.source}: skeleton not recognised (known: {', '.join(maps)}); closest is {best!r}, "
        f"which needs joints {', '.join(missing)} that the file lacks; the file's joints it does not "
        f"map: {', '.join(unknown[:30])}{' ...' if len(unknown) > 30 else ''}. Pass a joint map "
        f"{{SMPL name: source joint}} (runtime.formats.joint_maps)"
    )


def validate_keys(joint_map: dict[str, str], source: str) -> None:
    """FormatError unless ``joint_map`` is a dict of SMPL joint names (``pelvis`` among them) to joint names."""
    if not isinstance(joint_map, dict):
        raise FormatError(
            f"{source}: a joint map is a dict {{SMPL name: source joint}}, got {type(joint_map).__name__}"
        )
    unknown = [k for k in joint_map if k not in SMPL_NAMES]
    if unknown or "pelvis" not in joint_map:
        raise FormatError(
            f"{source}: joint map keys must be SMPL joints ({', '.join(SMPL_NAMES)}) including "
            f"'pelvis'; unknown: {unknown}"
        )
    bad = {k: v for k, v in joint_map.items() if not isinstance(v, str) or not v}
    if bad:
        raise FormatError(f"{source}: joint map values must be source joint names (str), got {bad}")


def validate_joint_map(m: Motion, joint_map: dict[str, str]) -> None:
    """FormatError unless every key is an SMPL joint (``pelvis`` required), every source joint exists, and each
    mapped joint lies below the source joint of its nearest mapped SMPL ancestor in ``m``'s hierarchy."""
    validate_keys(joint_map, m.source)
    missing = _fits(m.names, m.end_sites, joint_map)
    if missing:
        raise FormatError(f"{m.source}: joint map names joints the file lacks: {', '.join(missing)}")

    def below(child: int, ancestor: int) -> bool:
        while child >= 0 and child != ancestor:
            child = int(m.parents[child])
        return child == ancestor

    for k, smpl in enumerate(SMPL_NAMES[1:], 1):
        if smpl not in joint_map:
            continue
        a = PARENTS[k]
        while SMPL_NAMES[a] not in joint_map:
            a = PARENTS[a]
        j, p = m.index(_source_joint(joint_map[smpl])), m.index(_source_joint(joint_map[SMPL_NAMES[a]]))
        if not below(j, p) or (j == p and not joint_map[smpl].endswith(END)):
            raise FormatError(
                f"{m.source}: joint map {smpl} = {joint_map[smpl]!r} is not below "
                f"{SMPL_NAMES[a]} = {joint_map[SMPL_NAMES[a]]!r} in the file's hierarchy"
            )


def joint_positions(m: Motion, joint_map: dict[str, str]) -> dict[str, np.ndarray]:
    """SMPL name -> (T, 3) world position of its mapped source joint (or end site), metres."""
    validate_joint_map(m, joint_map)
    G, P = forward_kinematics(m)
    out = {}
    for smpl, value in joint_map.items():
        j = m.index(_source_joint(value))
        out[smpl] = P[:, j] + G[:, j] @ m.end_sites[m.names[j]] if value.endswith(END) else P[:, j]
    return out


def load_joint_map(path) -> dict[str, str]:
    """A joint map from a JSON file ``{SMPL joint: source joint}`` (the ``--map FILE.json`` of the CLI), checked by
    ``validate_keys``; FormatError naming the file otherwise. Whether its joints exist is checked per take
    (``validate_joint_map``)."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        joint_map = json.loads(path.read_text())
    except OSError as e:
        raise FormatError(f"{path}: joint map cannot be read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path}: joint map is not valid JSON ({e})") from None
    validate_keys(joint_map, str(path))
    return joint_map
