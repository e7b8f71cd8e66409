"""Forward kinematics of the 22-joint SMPL-order skeleton, in numpy (torch twin: ``train/kinematics.py``).

With local rotations R_k (k = 1..21), rest offsets o_k (child relative to parent, in the parent's frame, metres),
root orientation R_0 and root position p_0:

    G_0 = R_0,   G_k = G_parent(k) R_k,   p_k = p_parent(k) + G_parent(k) o_k.

This is the convention of ``../shared/data/*/README.md`` (the SMPL kinematic convention).
"""
from __future__ import annotations

import numpy as np

from .rotations import PARENTS


def forward_kinematics(rotmats: np.ndarray, offsets: np.ndarray, root_orient: np.ndarray | None = None,
                       trans: np.ndarray | None = None) -> np.ndarray:
    """Joint positions (B, 22, 3) from local rotations (B, 21, 3, 3) and offsets (22, 3) or (B, 22, 3).

    ``root_orient`` (B, 3, 3) defaults to the identity and ``trans`` (B, 3) to the origin.
    """
    b = rotmats.shape[0]
    offsets = np.broadcast_to(offsets, (b, len(PARENTS), 3))
    G = [np.broadcast_to(np.eye(3), (b, 3, 3)) if root_orient is None else root_orient]
    p = [np.zeros((b, 3)) if trans is None else trans]
    for k in range(1, len(PARENTS)):
        parent = PARENTS[k]
        p.append(p[parent] + np.einsum("bij,bj->bi", G[parent], offsets[:, k]))
        G.append(G[parent] @ rotmats[:, k - 1])
    return np.stack(p, axis=1)
