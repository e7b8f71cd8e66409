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


def chain(
    rotmats: np.ndarray, offsets: np.ndarray, parents, trans: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations G (B, J, 3, 3) and positions P (B, J, 3) of any tree (``parents[j] < j``, ``parents[0]``
    unused) from local rotations (B, J, 3, 3) INCLUDING the root's, offsets (J, 3) or (B, J, 3) and the root
    position ``trans`` (B, 3) (default origin): ``G_0 = R_0``, ``P_0 = trans``, ``G_j = G_parent R_j``,
    ``P_j = P_parent + G_parent o_j``. The one numpy forward kinematics (``runtime.formats.forward_kinematics`` of
    a ``Motion`` and the SMPL ``forward_kinematics`` below are this with their arguments)."""
    B, J = rotmats.shape[:2]
    offsets = np.asarray(offsets)
    G = np.empty((B, J, 3, 3), rotmats.dtype)
    P = np.empty((B, J, 3), rotmats.dtype)
    G[:, 0] = rotmats[:, 0]
    P[:, 0] = 0.0 if trans is None else trans
    for j in range(1, J):
        p = parents[j]
        G[:, j] = G[:, p] @ rotmats[:, j]
        # matmul, not einsum: the same bits for shared (J, 3) and per-pose (B, J, 3) offsets, and the bits of the
        # conversion (runtime.convert) that ``make data``'s checksums record
        step = G[:, p] @ offsets[j] if offsets.ndim == 2 else (G[:, p] @ offsets[:, j, :, None])[..., 0]
        P[:, j] = P[:, p] + step
    return G, P


def _smpl_chain(rotmats: np.ndarray, offsets: np.ndarray, root_orient: np.ndarray | None, trans: np.ndarray | None):
    """``chain`` on the SMPL tree: body rotations (B, 21, 3, 3) behind ``root_orient`` (identity by default)."""
    b = rotmats.shape[0]
    root = np.broadcast_to(np.eye(3, dtype=rotmats.dtype), (b, 3, 3)) if root_orient is None else root_orient
    G, P = chain(np.concatenate([root[:, None].astype(rotmats.dtype), rotmats], axis=1), offsets, PARENTS, trans)
    return G, P, np.broadcast_to(offsets, (b, len(PARENTS), 3))


def forward_kinematics(
    rotmats: np.ndarray, offsets: np.ndarray, root_orient: np.ndarray | None = None, trans: np.ndarray | None = None
) -> np.ndarray:
    """Joint positions (B, 22, 3) from local rotations (B, 21, 3, 3) and offsets (22, 3) or (B, 22, 3).

    ``root_orient`` (B, 3, 3) defaults to the identity and ``trans`` (B, 3) to the origin.
    """
    return _smpl_chain(rotmats, offsets, root_orient, trans)[1]


def fk_vjp(
    rotmats: np.ndarray,
    offsets: np.ndarray,
    grad_positions: np.ndarray,
    root_orient: np.ndarray | None = None,
    trans: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(joint positions (B, 22, 3), dL/d rotmats (B, 21, 3, 3)) for a loss L whose gradient w.r.t. the positions
    is ``grad_positions`` (B, 22, 3). Reverse pass over the chain, children before parents:
    ``gG_par += gp_k o_k^T``, ``gp_par += gp_k``, ``gR_k = G_par^T gG_k``, ``gG_par += gG_k R_k^T``."""
    G, p, offsets = _smpl_chain(rotmats, offsets, root_orient, trans)
    gp = [grad_positions[:, k].copy() for k in range(len(PARENTS))]
    gG = [np.zeros_like(G[:, 0]) for _ in PARENTS]
    gR = np.zeros_like(rotmats)
    for k in range(len(PARENTS) - 1, 0, -1):
        parent = PARENTS[k]
        gR[:, k - 1] = np.swapaxes(G[:, parent], 1, 2) @ gG[k]
        gG[parent] = (
            gG[parent] + gG[k] @ np.swapaxes(rotmats[:, k - 1], 1, 2) + gp[k][:, :, None] * offsets[:, k][:, None, :]
        )
        gp[parent] = gp[parent] + gp[k]
    return p, gR
