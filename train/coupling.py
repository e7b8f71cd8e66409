"""Affine coupling layer of RealNVP (Dinh et al. 2017), with a bounded scale.

Forward (latent -> pose direction), with x = (x_a, x_b) split by the layer's parity:

    y_a = x_a,    y_b = x_b * exp(s(x_a)) + t(x_a),    s = c * tanh(s_raw / c),

so ``log|det dy/dx| = sum(s)``. The inverse is ``x_b = (y_b - t(y_a)) * exp(-s(y_a))``. The hypernet's last
layer starts at zero, so an untrained layer is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def hypernet(d_in: int, d_out: int, hidden: int, depth: int, activation: str) -> nn.Sequential:
    """MLP with ``depth`` hidden layers of width ``hidden``; the output layer is zero-initialised."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), ACTIVATIONS[activation]()]
        d = hidden
    out = nn.Linear(d, d_out)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


class AffineCoupling(nn.Module):
    """One coupling layer on a vector of ``dim`` numbers split into two halves.

    ``parity = 0`` conditions on the first half and transforms the second; ``parity = 1`` the reverse
    (this is the "halves swap before each layer" of docs/design.md §3).
    """

    def __init__(self, dim: int, parity: int, hidden: int, depth: int, scale_clamp: float, activation: str):
        super().__init__()
        self.half = dim // 2
        self.parity = parity
        self.scale_clamp = scale_clamp
        self.net = hypernet(self.half, 2 * self.half, hidden, depth, activation)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, : self.half], x[:, self.half :]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=1) if self.parity == 0 else torch.cat([b, a], dim=1)

    def _scale_shift(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s_raw, t = self.net(a).chunk(2, dim=1)
        c = self.scale_clamp
        return c * torch.tanh(s_raw / c), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent side -> pose side; returns (y, log|det dy/dx|) per row."""
        a, b = self._split(x)
        s, t = self._scale_shift(a)
        return self._join(a, b * torch.exp(s) + t), s.sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pose side -> latent side; returns (x, log|det dx/dy|) = (x, -sum s)."""
        a, b = self._split(y)
        s, t = self._scale_shift(a)
        return self._join(a, (b - t) * torch.exp(-s)), -s.sum(1)
