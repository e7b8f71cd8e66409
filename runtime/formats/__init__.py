"""Motion file readers, numpy only (no torch): BVH, ASF/AMC, the shared npz format and AMASS.

    from runtime.formats import read_motion, forward_kinematics, detect_skeleton, JOINT_MAPS
    m = read_motion("take.bvh")              # a Motion: names, parents, offsets (m), rotations (T, J, 3, 3), trans
    G, P = forward_kinematics(m)             # global rotations and joint positions (metres, Y up)
    smpl_map = JOINT_MAPS[detect_skeleton(m)]   # SMPL joint -> source joint at that joint centre

Modules: ``motion`` (``Motion``, FK, Euler angles, ``FormatError``), ``bvh``, ``asf``, ``npz``, ``joint_maps``
(the joint maps, units and what each skeleton lacks), ``read`` (``read_motion``).
"""

from .asf import AsfSkeleton, read_amc, read_asf
from .bvh import read_bvh, write_bvh
from .joint_maps import (
    APPROXIMATED,
    JOINT_MAPS,
    LACKS,
    LEFT_SIGN,
    SMPL_NAMES,
    SYNTHETIC_FRAME0,
    UNITS_M,
    detect_skeleton,
    joint_positions,
    validate_joint_map,
)
from .motion import (
    FormatError,
    Motion,
    end_site_positions,
    euler_matrix,
    forward_kinematics,
    frame_stride,
    matrix_to_euler,
)
from .npz import read_amass, read_shared_npz
from .read import read_motion

__all__ = [
    "FormatError",
    "Motion",
    "forward_kinematics",
    "end_site_positions",
    "euler_matrix",
    "matrix_to_euler",
    "frame_stride",
    "read_bvh",
    "write_bvh",
    "AsfSkeleton",
    "read_asf",
    "read_amc",
    "read_motion",
    "read_amass",
    "read_shared_npz",
    "APPROXIMATED",
    "JOINT_MAPS",
    "LACKS",
    "LEFT_SIGN",
    "SMPL_NAMES",
    "SYNTHETIC_FRAME0",
    "UNITS_M",
    "detect_skeleton",
    "joint_positions",
    "validate_joint_map",
]
