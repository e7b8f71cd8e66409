"""Forward kinematics of the 22-joint SMPL-order skeleton, in numpy (torch twin: ``train/kinematics.py``).

With local rotations R_k (k = 1..21), rest offsets o_k (child relative to parent, in the parent's frame, metres),
root orientation R_0 and root position p_0:

    G_0 = R_0,   G_k = G_parent(k) R_k,   p_k = p_parent(k) + G_parent(k) o_k.

This is the convention of ``../shared/data/*/README.md`` (the SMPL kinematic convention). ``fk_vjp`` is its
reverse pass (for fitting joint positions without torch, ``runtime.fit.ik``).
"""
from __future__ import annotations

import numpy as np

from .rotations import PARENTS


def _chain(rotmats: np.ndarray, offsets: np.ndarray, root_orient: np.ndarray | None, trans: np.ndarray | None):
    b = rotmats.shape[0]
    offsets = np.broadcast_to(offsets, (b, len(PARENTS), 3))
    G = [np.broadcast_to(np.eye(3, dtype=rotmats.dtype), (b, 3, 3)) if root_orient is None else root_orient]
    p = [np.zeros((b, 3), rotmats.dtype) if trans is None else trans]
    for k in range(1, len(PARENTS)):
        parent = PARENTS[k]
        p.append(p[parent] + np.einsum("bij,bj->bi", G[parent], offsets[:, k]))
        G.append(G[parent] @ rotmats[:, k - 1])
    return G, p, offsets


def forward_kinematics(rotmats: np.ndarray, offsets: np.ndarray, root_orient: np.ndarray | None = None,
                       trans: np.ndarray | None = None) -> np.ndarray:
    """Joint positions (B, 22, 3) from local rotations (B, 21, 3, 3) and offsets (22, 3) or (B, 22, 3).

    ``root_orient`` (B, 3, 3) defaults to the identity and ``trans`` (B, 3) to the origin.
    """
    return np.stack(_chain(rotmats, offsets, root_orient, trans)[1], axis=1)


def fk_vjp(rotmats: np.ndarray, offsets: np.ndarray, grad_positions: np.ndarray,
           root_orient: np.ndarray | None = None, trans: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(joint positions (B, 22, 3), dL/d rotmats (B, 21, 3, 3)) for a loss L whose gradient w.r.t. the positions
    is ``grad_positions`` (B, 22, 3). Reverse pass over the chain, children before parents:
    ``gG_par += gp_k o_k^T``, ``gp_par += gp_k``, ``gR_k = G_par^T gG_k``, ``gG_par += gG_k R_k^T``."""
    G, p, offsets = _chain(rotmats, offsets, root_orient, trans)
    gp = [grad_positions[:, k].copy() for k in range(len(PARENTS))]
    gG = [np.zeros_like(G[0]) for _ in PARENTS]
    gR = np.zeros_like(rotmats)
    for k in range(len(PARENTS) - 1, 0, -1):
        parent = PARENTS[k]
        gR[:, k - 1] = np.swapaxes(G[parent], 1, 2) @ gG[k]
        gG[parent] = gG[parent] + gG[k] @ np.swapaxes(rotmats[:, k - 1], 1, 2) \
            + gp[k][:, :, None] * offsets[:, k][:, None, :]
        gp[parent] = gp[parent] + gp[k]
    return np.stack(p, axis=1), gR
