"""Implausible copies of real poses, the negatives of the demo and the plausibility report: capture-glitch-like
rotations of a few joints, knees bent backwards, uniformly random rotations. Axis-angle in, axis-angle out,
(N, 21, 3) body rotations in ``rotations.JOINT_NAMES`` order.
"""

from __future__ import annotations

import numpy as np

from . import rotations

#: both knees bent 80 degrees the wrong way: R = exp([(-1.4, 0, 0)]x) (SMPL's knees bend about +x)
KNEES_BACKWARDS = (-1.4, 0.0, 0.0)


def corrupt(aa: np.ndarray, rng: np.random.Generator, joints: int, degrees: float) -> np.ndarray:
    """Every pose with ``joints`` distinct random joints rotated by ``degrees`` about uniform random axes:
    R_j' = exp([degrees * u]x) R_j, u uniform on the sphere (``rng``'s draws, pose by pose)."""
    out = aa.copy()
    for i in range(len(aa)):
        for j in rng.choice(aa.shape[1], joints, replace=False):
            axis = rng.normal(size=3)
            glitch = rotations.axis_angle_to_matrix(axis / np.linalg.norm(axis) * np.radians(degrees))
            out[i, j] = rotations.matrix_to_axis_angle(glitch @ rotations.axis_angle_to_matrix(aa[i, j]))
    return out


def knees_backwards(aa: np.ndarray) -> np.ndarray:
    """``aa`` with both knees set to ``KNEES_BACKWARDS``."""
    out = aa.copy()
    for name in ("left_knee", "right_knee"):
        out[:, rotations.JOINT_NAMES.index(name)] = KNEES_BACKWARDS
    return out


def random_rotations(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Rotations exp([w]x), w ~ N(0, 4 I_3), wrapped to angles in [0, pi]: (..., 3) axis-angle of ``shape``."""
    return rotations.matrix_to_axis_angle(rotations.axis_angle_to_matrix(rng.normal(size=shape) * 2.0))
