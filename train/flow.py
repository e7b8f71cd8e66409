"""The pose prior: a RealNVP normalizing flow on 6D joint rotations (docs/design.md §3).

Directions: ``forward`` maps latent z ~ N(0, I_D) to a pose x (sampling); ``inverse`` maps a pose to z
(density). With the layer stack f = L_K o ... o L_1 o N^-1 (N the fixed elementwise normalisation
``n(x) = (x - mu) / sigma``),

    log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1 / dx|
             = log N(z) - sum_k sum s_k - sum log sigma.

Poses enter and leave in the user layout (B, 21, 6); the half-split transposition (all first columns, then all
second columns) happens inside. Joints listed in ``masked_joints`` (e.g. a data set's constant virtual joint)
are not modelled: they are ignored by ``log_prob`` and come out as the identity rotation from ``forward``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .coupling import AffineCoupling
from .rotations import JOINT_NAMES, NUM_JOINTS, from_flow_layout, to_flow_layout

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class PoseFlow(nn.Module):
    def __init__(
        self,
        num_layers: int = 12,
        hidden: int = 256,
        depth: int = 4,
        scale_clamp: float = 3.0,
        activation: str = "silu",
        masked_joints: tuple[str, ...] = (),
    ):
        super().__init__()
        unknown = set(masked_joints) - set(JOINT_NAMES)
        if unknown:
            raise ValueError(f"masked_joints: unknown joint names {sorted(unknown)}; expected names from {JOINT_NAMES}")
        active = [j for j, name in enumerate(JOINT_NAMES) if name not in masked_joints]
        self.register_buffer("active", torch.tensor(active, dtype=torch.long), persistent=False)
        self.dim = 6 * len(active)
        self.register_buffer("shift", torch.zeros(self.dim))
        self.register_buffer("log_scale", torch.zeros(self.dim))
        self.layers = nn.ModuleList(
            AffineCoupling(self.dim, k % 2, hidden, depth, scale_clamp, activation) for k in range(num_layers)
        )

    # --- normalisation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, x: torch.Tensor) -> None:
        """Fix the elementwise normalisation to the mean and std of (augmented) poses x (B, 21, 6)."""
        v = self.to_vec(x)
        self.set_moments(v.mean(0), v.std(0))

    @torch.no_grad()
    def set_moments(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the normalisation to ``mu = mean``, ``sigma = max(std, 1e-3)`` (D,) of the flow's vectors
        (``to_vec``; ``train.trainer.normalization`` computes them in blocks)."""
        self.shift.copy_(mean)
        self.log_scale.copy_(std.clamp_min(1e-3).log())

    # --- layouts -------------------------------------------------------------------------------------------
    def to_vec(self, x: torch.Tensor) -> torch.Tensor:
        """Poses (B, 21, 6) -> the flow's vector (B, D): the modelled joints in the coupling layout
        (``to_flow_layout``), before normalisation."""
        return to_flow_layout(x.index_select(1, self.active))

    def from_vec(self, v: torch.Tensor) -> torch.Tensor:
        """The inverse of ``to_vec``: (B, D) -> poses (B, 21, 6), masked joints at the identity rotation."""
        if self.dim == 6 * NUM_JOINTS:
            return from_flow_layout(v)
        x = torch.tensor(IDENTITY_6D, dtype=v.dtype, device=v.device).repeat(v.shape[0], NUM_JOINTS, 1)
        return x.index_copy(1, self.active, from_flow_layout(v))

    # --- the two directions --------------------------------------------------------------------------------
    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose (B, 21, 6) -> (z (B, D), log|det dz/dx|)."""
        v = (self.to_vec(x) - self.shift) * torch.exp(-self.log_scale)
        logdet = (-self.log_scale.sum()).expand(v.shape[0])
        for layer in reversed(self.layers):
            v, ld = layer.inverse(v)
            logdet = logdet + ld
        return v, logdet

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent (B, D) -> (pose (B, 21, 6), log|det dx/dz|)."""
        v = z
        logdet = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            v, ld = layer(v)
            logdet = logdet + ld
        v = v * torch.exp(self.log_scale) + self.shift
        return self.from_vec(v), logdet + self.log_scale.sum()

    # --- densities -----------------------------------------------------------------------------------------
    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) = -|z|^2 / 2 - D/2 log(2 pi)."""
        return -0.5 * (z * z).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(z) + log|det dz/dx| for poses (B, 21, 6)."""
        z, logdet = self.inverse(x)
        return self.base_log_prob(z) + logdet

    def latent_forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass z -> (x, log p(x)) with log p(x) = log N(z) - log|det dx/dz|."""
        x, logdet = self.forward(z)
        return x, self.base_log_prob(z) - logdet

    def sample(
        self,
        n: int | None = None,
        generator: torch.Generator | None = None,
        z: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Raw samples (B, 21, 6) from z = temperature * N(0, I), or from the given z."""
        if z is None:
            if n is None:
                raise ValueError("sample: give n or z")
            p = self.shift
            z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype, device=p.device) * temperature
        return self.forward(z)[0]
