"""Rotation conventions of the pose prior, in numpy (the torch twin is ``train/rotations.py``).

Conventions (docs/design.md §1):

* A pose is 21 non-root joints in SMPL body order (``JOINT_NAMES``), each a local rotation.
* 6D of a rotation matrix R is its first two **columns**, contiguous: ``[R00 R10 R20 R01 R11 R21]``,
  so a batch of poses in 6D has shape ``(B, 21, 6)`` (``rep="6d"``).
* "6D rows" is PyTorch3D's ``matrix_to_rotation_6d``: the first two **rows**, ``[R00 R01 R02 R10 R11 R12]``
  (``rep="6d_rows"``; ``rows_6d_to_matrix`` is PyTorch3D's ``rotation_6d_to_matrix``: Gram-Schmidt on the rows).
  Rows are orthonormal too, so no check can tell them from columns: rows passed as ``rep="6d"`` are read as the
  transposed (inverse) rotations, and real poses then score far lower (the classic mistake).
* Gram-Schmidt maps any 6D pair (b1, b2) with b1, b2 independent to a rotation:
  ``e1 = b1/|b1|``, ``e2 = normalize(b2 - (e1.b2) e1)``, ``e3 = e1 x e2``, ``R = [e1 e2 e3]``.
* The flow's internal "half-split" layout views a pose as (21, 2, 3), transposes to (2, 21, 3) and flattens
  to 126 numbers: the first columns of every joint, then the second columns.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES = (
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
#: SMPL parents of [pelvis] + 21 joints (index 0 is the pelvis).
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
IDENTITY_6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
#: For each joint, its left/right twin (itself on the spine): the joint permutation of a mirrored pose.
MIRROR_JOINTS = tuple(
    JOINT_NAMES.index(n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")) for n in JOINT_NAMES
)

#: Gram-Schmidt refuses a 6D pair whose columns make an angle with sine <= this (no rotation is defined).
GS_PARALLEL_TOL = 1e-6
_EPS = 1e-8  # floor of the norms in gram_schmidt_vjp (its inputs are checked poses, never degenerate)


def skew(v: np.ndarray) -> np.ndarray:
    """The cross-product matrix ``[v]x`` (..., 3, 3) of vectors v (..., 3): ``[v]x u = v x u``."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([o, -z, y, z, o, -x, -y, x, o], axis=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: ``R = I + A [w]x + B [w]x^2`` with ``A = sin t / t``, ``B = (1 - cos t)/t^2``, ``t = |w|``."""
    aa = np.asarray(aa)
    t2 = np.sum(aa * aa, axis=-1)[..., None, None]
    small = t2 < 1e-8
    t = np.sqrt(np.where(small, 1.0, t2))
    a = np.where(small, 1.0 - t2 / 6.0, np.sin(t) / t)
    b = np.where(small, 0.5 - t2 / 24.0, (1.0 - np.cos(t)) / np.where(small, 1.0, t2))
    k = skew(aa)
    eye = np.broadcast_to(np.eye(3, dtype=aa.dtype), k.shape)
    return (eye + a * k + b * (k @ k)).astype(aa.dtype, copy=False)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Shepperd's method: (w, x, y, z) with w >= 0, built from the best-conditioned of four formulas."""
    R = np.asarray(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    q2 = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    qa = np.sqrt(np.maximum(q2, 0.0))
    cands = (
        np.stack(
            [
                np.stack([q2[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
                np.stack([m21 - m12, q2[..., 1], m10 + m01, m02 + m20], -1),
                np.stack([m02 - m20, m10 + m01, q2[..., 2], m12 + m21], -1),
                np.stack([m10 - m01, m20 + m02, m21 + m12, q2[..., 3]], -1),
            ],
            -2,
        )
        / (2.0 * np.maximum(qa, 0.1))[..., None]
    )
    best = np.argmax(qa, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


#: largest ``rotation_error`` (|R^T R - I|, a reflection counts >= 1) that ``matrix_to_axis_angle`` accepts
AXIS_ANGLE_TOL = 1e-3


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation vector ``w = angle * axis`` with angle in [0, pi], via the quaternion. Matrices that are not
    rotations (a reflection, det < 0, or ``|R^T R - I| > AXIS_ANGLE_TOL``) have no rotation vector: ``ValueError``
    naming the first (checked in blocks, so the check's temporaries stay small)."""
    R = np.asarray(R)
    flat = R.reshape(-1, 3, 3) if R.ndim >= 2 and R.shape[-2:] == (3, 3) else None
    if flat is None:
        raise ValueError(f"matrix_to_axis_angle: expected (..., 3, 3) matrices, got shape {R.shape}")
    for a in range(0, len(flat), 1 << 16):
        err = rotation_error(flat[a : a + (1 << 16)])
        bad = err > AXIS_ANGLE_TOL
        if bad.any():
            k = int(np.argmax(bad))
            idx = tuple(int(i) for i in np.unravel_index(a + k, R.shape[:-2]))
            what = "a reflection (det < 0)" if np.linalg.det(flat[a + k]) < 0 else f"|R^T R - I| = {err[k]:.3g}"
            raise ValueError(
                f"matrix_to_axis_angle: the matrix at {idx} is not a rotation ({what}): it has no rotation vector"
            )
    q = matrix_to_quaternion(R)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    ratio = np.where(s > 1e-6, angle / np.maximum(s, 1e-12), 2.0 / np.maximum(q[..., :1], 1e-12))
    return (v * ratio).astype(R.dtype, copy=False)


def matrix_to_6d(R: np.ndarray) -> np.ndarray:
    """First two columns, contiguous: (..., 3, 3) -> (..., 6) = ``[R00 R10 R20 R01 R11 R21]``."""
    R = np.asarray(R)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def matrix_to_6d_rows(R: np.ndarray) -> np.ndarray:
    """PyTorch3D's ``matrix_to_rotation_6d``: the first two rows, flattened: (..., 3, 3) -> (..., 6) =
    ``[R00 R01 R02 R10 R11 R12]``."""
    R = np.asarray(R)
    return np.concatenate([R[..., 0, :], R[..., 1, :]], axis=-1)


def rows_6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """PyTorch3D's ``rotation_6d_to_matrix``: Gram-Schmidt of the pair (a1, a2) = (d6[:3], d6[3:]) gives the
    ROWS ``b1 = a1/|a1|``, ``b2 = normalize(a2 - (b1.a2) b1)``, ``b3 = b1 x b2`` of R, i.e.
    ``R = gram_schmidt(d6)^T`` (same checks and errors as ``gram_schmidt``)."""
    return np.swapaxes(gram_schmidt(d6), -1, -2)


def rows_6d_to_6d(d6: np.ndarray) -> np.ndarray:
    """6D rows (PyTorch3D) -> the model's 6D columns: ``matrix_to_6d(rows_6d_to_matrix(d6))``."""
    return matrix_to_6d(rows_6d_to_matrix(d6))


def rows_6d_vjp(d6: np.ndarray, g6: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. 6D rows d6 (..., 6) of a function whose gradient w.r.t. the 6D columns of
    ``R = rows_6d_to_matrix(d6)`` is g6 (..., 6): with G = dL/dR = [g6[:3], g6[3:], 0] (columns) and
    R = gram_schmidt(d6)^T, the gradient is ``gram_schmidt_vjp(d6, G^T)``."""
    g6 = np.asarray(g6)
    G = np.stack([g6[..., :3], g6[..., 3:], np.zeros_like(g6[..., :3])], axis=-1)
    return gram_schmidt_vjp(d6, np.swapaxes(G, -1, -2))


def gram_schmidt(d6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt of 6D pairs to rotation matrices (..., 6) -> (..., 3, 3), columns ``[e1 e2 e1xe2]``:
    ``e1 = b1/|b1|``, ``e2 = u2/|u2|`` with ``u2 = b2 - (e1.b2) e1``.

    6D is scale-invariant, so each column is first divided by its largest |entry| and the rest runs in float64:
    any finite magnitude works (no overflow to a zero matrix). Pairs with no rotation raise ``ValueError``: a
    zero column, or b2 parallel to b1 (``|u2| <= GS_PARALLEL_TOL * |b2|``), or NaN/inf. The result has the
    input's floating dtype (float64 for integer input).
    """
    d6 = np.asarray(d6)
    if d6.ndim < 1 or d6.shape[-1] != 6:
        raise ValueError(f"gram_schmidt: 6D pairs must have shape (..., 6), got {d6.shape}")
    if d6.dtype.kind not in "fiu":
        raise ValueError(f"gram_schmidt: 6D pairs must be real numbers, got dtype {d6.dtype}")
    dtype = d6.dtype if d6.dtype.kind == "f" else np.dtype(np.float64)
    x = d6.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"gram_schmidt: 6D pairs contain NaN or inf (first at {_first(~np.isfinite(x).any(-1))})")
    b1, b2 = x[..., :3], x[..., 3:]
    s1, s2 = np.abs(b1).max(axis=-1, keepdims=True), np.abs(b2).max(axis=-1, keepdims=True)
    for s, which in ((s1, "first"), (s2, "second")):
        if (s == 0).any():
            raise ValueError(
                f"gram_schmidt: 6D pair at index {_first(s[..., 0] == 0)} has a zero {which} column: no rotation"
            )
    b1, b2 = b1 / s1, b2 / s2
    e1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    u2 = b2 - np.sum(e1 * b2, axis=-1, keepdims=True) * e1
    n2 = np.linalg.norm(u2, axis=-1, keepdims=True)
    parallel = n2[..., 0] <= GS_PARALLEL_TOL * np.linalg.norm(b2, axis=-1)
    if parallel.any():
        raise ValueError(
            f"gram_schmidt: 6D pair at index {_first(parallel)} has parallel columns (sine of their "
            f"angle <= {GS_PARALLEL_TOL:g}): no rotation"
        )
    e2 = u2 / n2
    return np.stack([e1, e2, np.cross(e1, e2)], axis=-1).astype(dtype, copy=False)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def sixd_to_matrix(d6: np.ndarray) -> np.ndarray:
    """6D -> rotation matrix (Gram-Schmidt; exact inverse of ``matrix_to_6d`` on rotations)."""
    return gram_schmidt(d6)


def orthonormalize_6d(d6: np.ndarray) -> np.ndarray:
    """Project 6D pairs onto the rotation manifold: ``matrix_to_6d(gram_schmidt(d6))``."""
    return matrix_to_6d(gram_schmidt(d6))


def axis_angle_to_6d(aa: np.ndarray) -> np.ndarray:
    return matrix_to_6d(axis_angle_to_matrix(aa))


def sixd_to_axis_angle(d6: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(gram_schmidt(d6))


def to_flow_layout(x: np.ndarray) -> np.ndarray:
    """(B, J, 6) -> (B, 6J): all first columns, then all second columns."""
    b, j = x.shape[0], x.shape[1]
    return x.reshape(b, j, 2, 3).transpose(0, 2, 1, 3).reshape(b, 6 * j)


def from_flow_layout(v: np.ndarray) -> np.ndarray:
    """(B, 6J) -> (B, J, 6); inverse of ``to_flow_layout``."""
    b, j = v.shape[0], v.shape[1] // 6
    return v.reshape(b, 2, j, 3).transpose(0, 2, 1, 3).reshape(b, j, 6)


def mirror_axis_angle(aa: np.ndarray) -> np.ndarray:
    """Left-right mirror image of poses (..., 21, 3) in the SMPL rest frame (left = +X).

    Reflecting the body in the x = 0 plane (M = diag(-1, 1, 1)) maps each local rotation R to M R M, i.e. the
    rotation vector (wx, wy, wz) to (wx, -wy, -wz), and moves every joint's rotation to its left/right twin.
    Exact for world-aligned rest frames and a symmetric skeleton.
    """
    return np.asarray(aa)[..., MIRROR_JOINTS, :] * np.array([1.0, -1.0, -1.0], dtype=np.asarray(aa).dtype)


#: the reflection of the body in the x = 0 plane (its sagittal plane in the SMPL rest frame)
MIRROR = np.diag([-1.0, 1.0, 1.0])


def mirror_matrix(R: np.ndarray) -> np.ndarray:
    """``M R M`` (M = ``MIRROR``): the mirror image of local rotations R (..., 3, 3), joint for joint (no left/right
    exchange; ``mirror_axis_angle`` does both)."""
    return MIRROR @ R @ MIRROR


def rotation_error(R: np.ndarray) -> np.ndarray:
    """Per-matrix distance from SO(3): ``max(|R^T R - I|)`` and the sign of det folded in (det<0 -> >= 1)."""
    R = np.asarray(R, dtype=np.float64)
    ortho = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-1, -2))
    return np.where(np.linalg.det(R) < 0, np.maximum(ortho, 1.0), ortho)


def geodesic_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle of ``R1^T R2`` in degrees."""
    tr = np.einsum("...ij,...ij->...", R1, R2)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def gram_schmidt_vjp(d6: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. the 6D pairs d6 (..., 6) of a function whose gradient w.r.t. ``R = gram_schmidt(d6)`` is
    G (..., 3, 3) (columns g1, g2, g3 for e1, e2, e3). Reverse of ``gram_schmidt``, step by step:
    e3 = e1 x e2: ``ge1 += e2 x g3``, ``ge2 += g3 x e1``; e2 = u2/|u2|: ``gu = (ge2 - (ge2.e2) e2) / |u2|``;
    u2 = b2 - (e1.b2) e1: ``gb2 = gu - (e1.gu) e1``, ``ge1 += -(e1.b2) gu - (e1.gu) b2``;
    e1 = b1/|b1|: ``gb1 = (ge1 - (ge1.e1) e1) / |b1|``."""
    d6, G = np.asarray(d6), np.asarray(G)
    b1, b2 = d6[..., :3], d6[..., 3:]
    n1 = np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), _EPS)
    e1 = b1 / n1
    c = np.sum(e1 * b2, axis=-1, keepdims=True)
    u2 = b2 - c * e1
    n2 = np.maximum(np.linalg.norm(u2, axis=-1, keepdims=True), _EPS)
    e2 = u2 / n2
    g1, g2, g3 = G[..., :, 0], G[..., :, 1], G[..., :, 2]
    ge1 = g1 + np.cross(e2, g3)
    ge2 = g2 + np.cross(g3, e1)
    gu = (ge2 - np.sum(ge2 * e2, axis=-1, keepdims=True) * e2) / n2
    egu = np.sum(e1 * gu, axis=-1, keepdims=True)
    gb2 = gu - egu * e1
    ge1 = ge1 - c * gu - egu * b2
    gb1 = (ge1 - np.sum(ge1 * e1, axis=-1, keepdims=True) * e1) / n1
    return np.concatenate([gb1, gb2], axis=-1)
