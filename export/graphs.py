"""The four graphs a model ships, as torch modules around a trained ``PoseFlow`` (DESIGN §3, §6).

With f the flow (latent -> pose), z ~ N(0, I_D), D = 6 x (number of modelled joints):

* ``LogProb``:       poses x (B, 21, 6) -> log p(x) (B,),
                     ``log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1/dx|``.
* ``Sample``:        z (B, D) -> raw poses f(z) (B, 21, 6), not orthonormalised (Gram-Schmidt them before use
                     as rotations; the runtime does).
* ``LatentForward``: z (B, D) -> (poses f(z), log p(f(z))) in one pass, ``log p(f(z)) = log N(z) - log|det df/dz|``.
* ``LogProbGrad``:   poses -> (log p(x), d log p(x) / dx) (B,), (B, 21, 6).

Exporters cannot trace ``torch.autograd.grad`` (DESIGN §6), so ``LogProbGrad`` first traces ``log_prob_and_grad``
(log p and its autograd gradient) with ``make_fx`` into a plain graph of core aten ops, batch size symbolic; that
graph then exports like any other module.

Poses are in the user layout (B, 21, 6): per joint the first two columns of R, ``[R00 R10 R20 R01 R11 R21]``.
Masked joints are ignored by the density (zero gradient) and come out of the sampler as the identity.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from train.flow import PoseFlow
from train.rotations import NUM_JOINTS


def log_prob_and_grad(log_prob: Callable[[torch.Tensor], torch.Tensor], poses: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x), d log p(x)/dx) by autograd; rows are independent, so the gradient of sum(log p) is per pose."""
    with torch.enable_grad():
        x = poses.detach().requires_grad_(True)
        log_p = log_prob(x)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return log_p.detach(), grad


class LogProb(nn.Module):
    """poses (B, 21, 6) -> log p (B,)."""

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(poses)


class Sample(nn.Module):
    """z (B, D) -> raw poses f(z) (B, 21, 6)."""

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow(z)[0]


class LatentForward(nn.Module):
    """z (B, D) -> (poses f(z) (B, 21, 6), log p(f(z)) (B,)) in one pass."""

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.latent_forward(z)


class LogProbGrad(nn.Module):
    """poses (B, 21, 6) -> (log p (B,), d log p/d poses (B, 21, 6)), as a traced graph without autograd.

    ``self.graph`` is ``log_prob_and_grad`` traced by ``make_fx(tracing_mode="symbolic")`` (batch size symbolic,
    autograd's backward written out as aten ops) as a function of the poses AND the flow's tensors; ``forward``
    feeds it the flow's own parameters and buffers, so exporters see (and name) the same weights as in the other
    graphs, and the module follows later changes to ``flow``.
    """

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow
        log_prob = LogProb(flow)
        self.names = [name for name, _ in log_prob.named_parameters()] + [name for name, _ in log_prob.named_buffers()]

        def traced(poses: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            state = dict(zip(self.names, tensors))
            return log_prob_and_grad(lambda x: torch.func.functional_call(log_prob, state, (x,)), poses)

        example = torch.zeros(2, NUM_JOINTS, 6)
        self.graph = make_fx(traced, tracing_mode="symbolic", decomposition_table=core_aten_decompositions())(
            example, *(t.detach() for t in self._tensors()))

    def _tensors(self) -> list[torch.Tensor]:
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return [tensors[name] for name in self.names]

    def forward(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p, grad = self.graph(poses, *self._tensors())
        return log_p, grad
