"""Rotation conventions in torch (differentiable); the numpy twin is ``runtime/rotations.py``.

6D = first two COLUMNS of R, contiguous ``[R00 R10 R20 R01 R11 R21]``; Gram-Schmidt
``e1 = b1/|b1|, e2 = normalize(b2 - (e1.b2) e1), e3 = e1 x e2``; half-split flow layout
``(B, J, 6) -> (B, J, 2, 3) -> (B, 2, J, 3) -> (B, 6J)``. See docs/design.md §1.
"""

from __future__ import annotations

import torch

from runtime.rotations import JOINT_NAMES, NUM_JOINTS, PARENTS  # noqa: F401  (one source of names)

_EPS = 1e-8


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues ``R = I + A [w]x + B [w]x^2``, ``A = sin t/t``, ``B = (1-cos t)/t^2``; smooth at t = 0."""
    t2 = (aa * aa).sum(-1)[..., None, None]
    small = t2 < 1e-8
    t2s = torch.where(small, torch.ones_like(t2), t2)
    t = t2s.sqrt()
    a = torch.where(small, 1.0 - t2 / 6.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2s)
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation vector (angle in [0, pi]) via Shepperd's quaternion."""
    m = R.reshape(R.shape[:-2] + (9,)).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    q2 = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    qa = q2.clamp_min(0).sqrt()
    cands = (
        torch.stack(
            [
                torch.stack([q2[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
                torch.stack([m21 - m12, q2[..., 1], m10 + m01, m02 + m20], -1),
                torch.stack([m02 - m20, m10 + m01, q2[..., 2], m12 + m21], -1),
                torch.stack([m10 - m01, m20 + m02, m21 + m12, q2[..., 3]], -1),
            ],
            -2,
        )
        / (2.0 * qa.clamp_min(0.1))[..., None]
    )
    best = qa.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, q[..., :1])
    ratio = torch.where(s > 1e-6, angle / s.clamp_min(1e-12), 2.0 / q[..., :1].clamp_min(1e-12))
    return v * ratio


def matrix_to_6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): first two columns, contiguous."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def gram_schmidt(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotation with columns ``[e1, e2, e1 x e2]``."""
    b1, b2 = d6[..., :3], d6[..., 3:]
    e1 = b1 / b1.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    u2 = b2 - (e1 * b2).sum(-1, keepdim=True) * e1
    e2 = u2 / u2.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-1)


def orthonormalize_6d(d6: torch.Tensor) -> torch.Tensor:
    return matrix_to_6d(gram_schmidt(d6))


def axis_angle_to_6d(aa: torch.Tensor) -> torch.Tensor:
    return matrix_to_6d(axis_angle_to_matrix(aa))


def sixd_to_axis_angle(d6: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(gram_schmidt(d6))


def to_flow_layout(x: torch.Tensor) -> torch.Tensor:
    """(B, J, 6) -> (B, 6J): all joints' first columns, then all second columns."""
    b, j = x.shape[0], x.shape[1]
    return x.reshape(b, j, 2, 3).transpose(1, 2).reshape(b, 6 * j)


def from_flow_layout(v: torch.Tensor) -> torch.Tensor:
    """(B, 6J) -> (B, J, 6); inverse of ``to_flow_layout``."""
    b, j = v.shape[0], v.shape[1] // 6
    return v.reshape(b, 2, j, 3).transpose(1, 2).reshape(b, j, 6)
