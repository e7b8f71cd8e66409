"""Inverse Gram-Schmidt augmentation (docs/design.md §2) and dequantisation of degenerate joints, training only.

For every joint's orthonormal pair (a1, a2) draw eps ~ N(0, I_3) and replace it by

    b1 = s1 a1,   b2 = s2 a2 + t a1,   s_i = exp(alpha eps_i),   t = beta eps_3,

so Gram-Schmidt maps (b1, b2) back to (a1, a2) exactly, while the 3 numbers (s1, s2, t) together with the
3 degrees of freedom of the rotation fill a full-dimensional region of R^6: the flow then has a density to model.

That holds only where the rotations themselves fill 3 dimensions. Real mocap skeletons have hinge joints (CMU
knees and toes rotate about x only, elbows about two axes) and duplicated joints (CMU's left and right collars are
equal in every frame): there the data has zero width in some directions, the density is singular, and log p of a
pose slightly off the hinge is astronomically low. Two dequantisations give those directions a width:

* ``joint_noise`` (radians, the one the presets use): ``R -> R exp([sigma xi]x)``, ``xi ~ N(0, I_3)`` on the
  degenerate joints only (``degenerate_joints`` finds them in the training data). Samples keep this noise on
  those joints; every other joint is modelled exactly as the paper does.
* ``noise``: isotropic ``N(0, noise^2 I_6)`` added to every joint's 6D after the lift. Simple, but the noise then
  stays in every joint of the samples (GS removes scale and shear, not rotation noise).

Widening (``widen``: joint -> (sigma_x, sigma_y, sigma_z) radians): ``R -> R exp([sigma * xi]x)`` with a standard
deviation per local axis. A source skeleton whose knees are hinges and whose elbows have no twist cannot show the
tibial rotation, forearm twist and off-axis flexion of real SMPL fits (docs/design.md §1c); a prior trained on it
calls those real poses implausible. Widening gives exactly those directions of exactly those joints a width, sized
by the spread real SMPL fits show, and leaves the directions the data do constrain (the knee's flexion) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .moments import blocks, column_moments
from .rotations import JOINT_NAMES, axis_angle_to_matrix, gram_schmidt, matrix_to_6d


def lift(x: torch.Tensor, eps: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The deterministic map (a1, a2), eps -> (b1, b2) above; x (..., 6) orthonormal, eps (..., 3)."""
    s1 = torch.exp(alpha * eps[..., 0:1])
    s2 = torch.exp(alpha * eps[..., 1:2])
    t = beta * eps[..., 2:3]
    a1, a2 = x[..., :3], x[..., 3:]
    return torch.cat([s1 * a1, s2 * a2 + t * a1], dim=-1)


def augment(
    x: torch.Tensor, alpha: float, beta: float, generator: torch.Generator | None = None, noise: float = 0.0
) -> torch.Tensor:
    """Orthonormal 6D poses (B, J, 6) -> augmented (B, J, 6) with fresh eps; ``alpha = beta = 0`` returns x.
    ``noise > 0`` adds isotropic 6D noise after the lift (see the module docstring)."""
    eps = torch.randn(x.shape[:-1] + (3,), generator=generator, dtype=x.dtype, device=x.device)
    b = lift(x, eps, alpha, beta)
    if noise > 0:
        b = b + noise * torch.randn(b.shape, generator=generator, dtype=x.dtype, device=x.device)
    return b


def rotation_noise(
    x: torch.Tensor, joints: list[int], sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``R_j -> R_j exp([sigma xi_j]x)``, ``xi_j ~ N(0, I_3)``, on joints ``joints`` of orthonormal 6D poses
    (B, J, 6); the other joints are returned unchanged."""
    if sigma <= 0 or not joints:
        return x
    xi = sigma * torch.randn(x.shape[:-2] + (len(joints), 3), generator=generator, dtype=x.dtype, device=x.device)
    out = x.clone()
    out[..., joints, :] = matrix_to_6d(gram_schmidt(x[..., joints, :]) @ axis_angle_to_matrix(xi))
    return out


def axis_noise(
    x: torch.Tensor, widen: dict[str, tuple[float, float, float]], generator: torch.Generator | None = None
) -> torch.Tensor:
    """``R_j -> R_j exp([sigma_j * xi_j]x)``, ``xi_j ~ N(0, I_3)``, ``sigma_j = widen[name_j]`` per local axis, on
    orthonormal 6D poses (B, J, 6); joints not in ``widen`` are returned unchanged."""
    if not widen:
        return x
    idx = [JOINT_NAMES.index(n) for n in widen]
    sigma = torch.tensor([widen[n] for n in widen], dtype=x.dtype, device=x.device)
    xi = sigma * torch.randn(x.shape[:-2] + (len(idx), 3), generator=generator, dtype=x.dtype, device=x.device)
    out = x.clone()
    out[..., idx, :] = matrix_to_6d(gram_schmidt(x[..., idx, :]) @ axis_angle_to_matrix(xi))
    return out


#: body parts that ``part_mix`` exchanges between poses: each a kinematic sub-chain, whose local rotations are
#: independent of the rest of the body's (a left arm from one pose on the trunk of another is still a real arm)
PARTS = {
    "left_arm": ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
    "right_arm": ("right_collar", "right_shoulder", "right_elbow", "right_wrist"),
    "left_leg": ("left_hip", "left_knee", "left_ankle", "left_foot"),
    "right_leg": ("right_hip", "right_knee", "right_ankle", "right_foot"),
    "spine_head": ("spine1", "spine2", "spine3", "neck", "head"),
}


def part_mix(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability ``p`` per pose and part (``PARTS``), that part's local rotations come from another pose
    of the batch (a random permutation): new combinations of real parts, which a few training subjects never
    show. x (B, J, 6) orthonormal 6D."""
    if p <= 0 or len(x) < 2:
        return x
    out = x.clone()
    for joints in PARTS.values():
        idx = torch.tensor([JOINT_NAMES.index(n) for n in joints], device=x.device)
        donor = torch.randperm(len(x), generator=generator).to(x.device)
        rows = (torch.rand(len(x), generator=generator) < p).nonzero().squeeze(1).to(x.device)
        out[rows[:, None], idx] = x[donor[rows]][:, idx]
    return out


def degenerate_joints(rotations: np.ndarray, tol: float = 1e-3) -> list[str]:
    """Joints of axis-angle training poses (N, J, 3) whose rotations do not fill 3 dimensions: a principal
    direction of the rotation vectors with standard deviation below ``tol`` radians (hinges), or rotations equal
    to an earlier joint's in every pose (duplicates). Constant joints count too (they belong in masked_joints).

    Principal standard deviations: ``sqrt(eig(S) / N)`` with ``S = sum_i (r_i - m)(r_i - m)^T`` (float64), the
    singular values of the centred poses over ``sqrt(N)``; ``m`` and ``S`` and the duplicate test are accumulated
    over blocks of ``train.moments.BLOCK_ROWS`` poses, so the poses are never copied whole."""
    n, joints = rotations.shape[:2]
    mean = column_moments(rotations).mean  # (J, 3)
    scatter = np.zeros((joints, 3, 3))
    gap = np.zeros((joints, joints))  # gap[j, k] = max over poses |r_j - r_k| (k < j)
    for s in blocks(n):
        r = np.asarray(rotations[s], np.float64)
        c = r - mean
        scatter += np.einsum("nja,njb->jab", c, c)
        for j in range(joints):
            gap[j, :j] = np.maximum(gap[j, :j], np.abs(r[:, j : j + 1] - r[:, :j]).max(axis=(0, 2), initial=0.0))
    spread = np.sqrt(np.clip(np.linalg.eigvalsh(scatter)[:, 0], 0.0, None) / n)
    return [JOINT_NAMES[j] for j in range(joints) if spread[j] < tol or (gap[j, :j] < tol).any()]


@dataclass(frozen=True)
class Augmentation:
    """Everything training does to a batch of orthonormal 6D poses, in order: rotation noise on the degenerate
    joints, the inverse-GS lift, 6D noise. One object, so training, validation, normalisation statistics and
    the evaluation's "augmented as in training" diagnostic all apply the same thing."""

    alpha: float
    beta: float
    noise: float = 0.0
    joint_noise: float = 0.0
    noisy_joints: tuple[str, ...] = ()
    widen: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    part_mix: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = [JOINT_NAMES.index(n) for n in self.noisy_joints]
        x = part_mix(x, self.part_mix, generator) if self.part_mix else x
        x = axis_noise(x, dict(self.widen), generator) if self.widen else x
        return augment(
            rotation_noise(x, idx, self.joint_noise, generator), self.alpha, self.beta, generator, self.noise
        )
