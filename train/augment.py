"""Inverse Gram-Schmidt augmentation (DESIGN §2), training only.

For every joint's orthonormal pair (a1, a2) draw eps ~ N(0, I_3) and replace it by

    b1 = s1 a1,   b2 = s2 a2 + t a1,   s_i = exp(alpha eps_i),   t = beta eps_3,

so Gram-Schmidt maps (b1, b2) back to (a1, a2) exactly, while the 3 numbers (s1, s2, t) together with the
3 degrees of freedom of the rotation fill a full-dimensional region of R^6: the flow then has a density to model.
"""
from __future__ import annotations

import torch


def lift(x: torch.Tensor, eps: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The deterministic map (a1, a2), eps -> (b1, b2) above; x (..., 6) orthonormal, eps (..., 3)."""
    s1 = torch.exp(alpha * eps[..., 0:1])
    s2 = torch.exp(alpha * eps[..., 1:2])
    t = beta * eps[..., 2:3]
    a1, a2 = x[..., :3], x[..., 3:]
    return torch.cat([s1 * a1, s2 * a2 + t * a1], dim=-1)


def augment(x: torch.Tensor, alpha: float, beta: float, generator: torch.Generator | None = None,
            noise: float = 0.0) -> torch.Tensor:
    """Orthonormal 6D poses (B, J, 6) -> augmented (B, J, 6) with fresh eps; ``alpha = beta = 0`` returns x.

    ``noise > 0`` also adds isotropic Gaussian noise N(0, noise^2 I_6) to every joint's 6D (dequantisation). Real
    mocap skeletons have hinge joints (CMU knees and toes rotate about x only, so a1 = (s1, 0, 0) exactly even
    after the lift) and duplicated joints; without noise those directions have zero width, the density is
    singular there, and log p of a slightly off-hinge pose is astronomically low. With noise GS(b) is no longer
    exactly a, but within about ``noise`` radians of it.
    """
    eps = torch.randn(x.shape[:-1] + (3,), generator=generator, dtype=x.dtype, device=x.device)
    b = lift(x, eps, alpha, beta)
    if noise > 0:
        b = b + noise * torch.randn(b.shape, generator=generator, dtype=x.dtype, device=x.device)
    return b
