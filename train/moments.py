"""Means and variances of arrays too large to copy: accumulated block by block, combined exactly.

A block of n_b rows has float64 mean m_b and sum of squared deviations M2_b = sum_i (x_i - m_b)^2 (per column).
Two sets combine without revisiting their rows (Chan, Golub & LeVeque 1979):

    n = n_a + n_b,   d = m_b - m_a,   m = m_a + d n_b / n,   M2 = M2_a + M2_b + d^2 n_a n_b / n,

and the variance is var = M2 / (n - ddof). Only one block is ever in memory (as float64), so the moments of a
memory-mapped array are computed in memory proportional to the block, not to the array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

#: rows per block of ``column_moments``
BLOCK_ROWS = 65536


@dataclass
class Moments:
    """Running count, mean and M2 of rows (per column, float64); ``add`` a block, read ``mean`` / ``var``."""

    n: int = 0
    mean: np.ndarray | float = 0.0
    m2: np.ndarray | float = 0.0

    def add(self, block: np.ndarray) -> "Moments":
        """Fold in ``block`` (n_b, ...) (rows along axis 0); an empty block changes nothing."""
        x = np.asarray(block, dtype=np.float64)
        nb = len(x)
        if nb == 0:
            return self
        mb = x.mean(axis=0)
        m2b = np.square(x - mb).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return self
        n = self.n + nb
        d = mb - self.mean
        self.mean = self.mean + d * (nb / n)
        self.m2 = self.m2 + m2b + np.square(d) * (self.n * nb / n)
        self.n = n
        return self

    def var(self, ddof: int = 0) -> np.ndarray:
        if self.n - ddof <= 0:
            raise ValueError(f"variance of {self.n} rows with ddof={ddof}: not defined")
        return np.asarray(self.m2) / (self.n - ddof)

    def std(self, ddof: int = 0) -> np.ndarray:
        return np.sqrt(self.var(ddof))


def blocks(n: int, size: int = BLOCK_ROWS) -> Iterator[slice]:
    """``ceil(n / size)`` consecutive slices covering ``range(n)``, of equal length up to one row."""
    k = max(1, -(-n // size))
    for i in range(k):
        yield slice(i * n // k, (i + 1) * n // k)


def column_moments(a: np.ndarray, size: int = BLOCK_ROWS) -> Moments:
    """The moments of array ``a`` (N, ...) over its rows, read ``size`` rows at a time (a memory-mapped ``a`` is
    never copied whole)."""
    m = Moments()
    for s in blocks(len(a), size):
        m.add(a[s])
    return m
