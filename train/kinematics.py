"""Forward kinematics in torch (differentiable); see ``runtime/kinematics.py`` for the formula."""

from __future__ import annotations

import torch

from .rotations import PARENTS


def forward_kinematics(
    rotmats: torch.Tensor,
    offsets: torch.Tensor,
    root_orient: torch.Tensor | None = None,
    trans: torch.Tensor | None = None,
) -> torch.Tensor:
    """Joint positions (B, 22, 3): ``G_k = G_parent R_k``, ``p_k = p_parent + G_parent o_k``."""
    b = rotmats.shape[0]
    offsets = offsets.to(rotmats.dtype).expand(b, len(PARENTS), 3)
    eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device).expand(b, 3, 3)
    G = [eye if root_orient is None else root_orient]
    p = [rotmats.new_zeros(b, 3) if trans is None else trans]
    for k in range(1, len(PARENTS)):
        parent = PARENTS[k]
        p.append(p[parent] + (G[parent] @ offsets[:, k, :, None])[..., 0])
        G.append(G[parent] @ rotmats[:, k - 1])
    return torch.stack(p, dim=1)
