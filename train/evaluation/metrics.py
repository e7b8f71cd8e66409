"""Sample-quality metrics of a pose prior, in numpy/scipy (no torch, no model): each a formula on arrays.

* **KS** (two-sample Kolmogorov-Smirnov, ``scipy.stats.ks_2samp``): ``D = sup_t |F_a(t) - F_b(t)|`` of the two
  empirical CDFs. Rank-based, so extreme values (log p of -1e15) are harmless. Under H0 (same distribution) and
  sizes n, m, ``E[D] ~= sqrt(pi/2) ln 2 * sqrt((n + m) / (n m))`` (the mean of the Kolmogorov distribution,
  0.8687, times the scale): ``expected_null``, the figure a perfect prior would score at these sizes.
* **Noise floor**: KS between two disjoint random halves of one data set (and, where the data have several
  sequences, between two halves made of whole sequences: frames of one sequence are strongly correlated, so
  random halves of frames understate the between-recording variation).
* **FID** on joint positions: with means mu_i and covariances S_i of two sets of vectors,
  ``FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``, computed as
  ``Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = sum_i sqrt(lambda_i)``, lambda_i the eigenvalues of
  the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (stable, no complex sqrtm). Units: those of the vectors
  squared.
* **APD** (average pairwise distance) of positions p (n, J, 3):
  ``APD = mean_{i<j} (1/J) sum_k |p_ik - p_jk|``, the mean over all unordered pairs of the mean per-joint
  Euclidean distance.
* **Nearest-neighbour geodesic distance** of a pose Q (J rotations) to a reference set {R^m}:
  ``d(Q) = min_m (1/J) sum_k angle(Q_k^T R^m_k)``, ``angle(A) = arccos((tr A - 1) / 2)`` in degrees, where
  ``tr(Q_k^T R_k) = <vec Q_k, vec R_k>``: one matrix product per joint, chunked over the queries.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import ks_2samp

KS_NULL_MEAN = math.sqrt(math.pi / 2.0) * math.log(2.0)  # 0.8687: mean of the Kolmogorov distribution


def expected_ks_null(n: int, m: int) -> float:
    """Expected two-sample KS statistic of samples of sizes n, m from one distribution (asymptotic)."""
    return KS_NULL_MEAN * math.sqrt((n + m) / (n * m))


def ks(a: np.ndarray, b: np.ndarray) -> dict:
    """Two-sample KS of a vs b: statistic, p-value, both sizes and the H0 expectation at those sizes.

    NaN (a failed density) counts as -inf: the lowest possible log p.
    """
    a = np.nan_to_num(np.asarray(a, np.float64), nan=-np.inf)
    b = np.nan_to_num(np.asarray(b, np.float64), nan=-np.inf)
    r = ks_2samp(a, b)
    return {
        "ks": float(r.statistic),
        "p_value": float(r.pvalue),
        "n_a": len(a),
        "n_b": len(b),
        "expected_null": expected_ks_null(len(a), len(b)),
    }


def random_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random index sets of sizes floor(n/2) each (sorted)."""
    perm = rng.permutation(n)
    h = n // 2
    return np.sort(perm[:h]), np.sort(perm[h : 2 * h])


def sequence_halves(sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Two disjoint index sets, each made of whole sequences, balanced by count (greedy: largest sequence first
    into the smaller half). None when the data have fewer than two sequences."""
    ids, counts = np.unique(sequence, return_counts=True)
    if len(ids) < 2:
        return None
    groups: tuple[list, list] = ([], [])
    sizes = [0, 0]
    for i in np.argsort(-counts, kind="stable"):
        g = int(sizes[1] < sizes[0])
        groups[g].append(ids[i])
        sizes[g] += counts[i]
    return tuple(np.flatnonzero(np.isin(sequence, g)) for g in groups)  # type: ignore[return-value]


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) (unbiased, float64) of vectors x (n, d)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.mean(0), np.cov(x, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (module docstring); >= 0 up to rounding."""
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum()
    d = mu1 - mu2
    return float(max(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * cross, 0.0))


def fid(x1: np.ndarray, x2: np.ndarray) -> float:
    """FID between two sets of vectors (n, ...) and (m, ...), flattened per item."""
    return fid_from_stats(*gaussian_stats(x1), *gaussian_stats(x2))


def apd(positions: np.ndarray) -> float:
    """``mean_{i<j} (1/J) sum_k |p_ik - p_jk|`` over all unordered pairs of positions (n, J, 3) (exact: one
    ``scipy.spatial.distance.pdist`` per joint)."""
    p = np.asarray(positions, np.float64)
    if len(p) < 2:
        raise ValueError("apd: needs at least two items")
    return float(np.mean([pdist(p[:, k]).mean() for k in range(p.shape[1])]))


def nearest_geodesic(query: np.ndarray, reference: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query pose (n, J, 3, 3), the reference pose (m, J, 3, 3) with the smallest mean per-joint
    geodesic angle: returns (that mean angle in degrees (n,), its index (n,)).

    Traces in float64, arccos in float32 (resolution ~0.02 deg near 0; exact 0 for identical rotations).
    """
    q = np.asarray(query, np.float64).reshape(len(query), -1, 9)
    # (tr - 1) / 2 = <vec Q, vec R / 2> - 1/2: the 1/2 folded into the reference
    ref = 0.5 * np.asarray(reference, np.float64).reshape(len(reference), -1, 9).transpose(1, 2, 0)  # (J, 9, m)
    J, m = q.shape[1], ref.shape[2]
    dist, idx = np.empty(len(q)), np.empty(len(q), np.int64)
    for i in range(0, len(q), chunk):
        c = min(chunk, len(q) - i)
        cos, cos32, acc = np.empty((c, m)), np.empty((c, m), np.float32), np.zeros((c, m), np.float32)
        for k in range(J):
            np.matmul(q[i : i + c, k], ref[k], out=cos)
            cos -= 0.5
            np.clip(cos, -1.0, 1.0, out=cos)
            cos32[...] = cos
            acc += np.arccos(cos32, out=cos32)
        j = acc.argmin(1)
        idx[i : i + c] = j
        dist[i : i + c] = np.degrees(acc[np.arange(c), j].astype(np.float64) / J)
    return dist, idx


def fraction_above(raw: np.ndarray, ortho: np.ndarray) -> float:
    """The share of samples whose log p rises under Gram-Schmidt: mean(log p(GS(x)) > log p(x)) (the ablation)."""
    return float(np.mean(ortho > raw))
