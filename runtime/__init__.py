"""Pose-prior runtime: numpy + onnxruntime, no torch.

    from runtime import PosePrior
    prior = PosePrior.load("models/smpl")               # or PosePrior.load() for the model inside the package
    log_p = prior.log_prob(body_pose, rep="axis_angle")   # (B, 63) smplx body_pose -> (B,)
    poses = prior.sample(16, seed=0)                      # (16, 21, 6) orthonormal 6D

``rotations`` holds the numpy conversions (axis-angle, matrices, 6D, Gram-Schmidt) and ``JOINT_NAMES``.
"""

from . import rotations
from .prior import DEFAULT_MODEL_DIR, FORMAT_VERSION, GRAPHS, REPS, ModelError, PosePrior
from .rotations import JOINT_NAMES

__all__ = [
    "PosePrior",
    "ModelError",
    "rotations",
    "JOINT_NAMES",
    "REPS",
    "GRAPHS",
    "FORMAT_VERSION",
    "DEFAULT_MODEL_DIR",
]
