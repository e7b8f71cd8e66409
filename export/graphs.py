"""The six graphs a model ships, as torch modules around a trained ``PoseFlow`` (docs/design.md §3, §6).

With f the flow (latent -> pose), z ~ N(0, I_D), D = 6 x (number of modelled joints):

* ``LogProb``:       poses x (B, 21, 6) -> log p(x) (B,),
                     ``log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1/dx|``.
* ``Sample``:        z (B, D) -> raw poses f(z) (B, 21, 6), not orthonormalised (Gram-Schmidt them before use
                     as rotations; the runtime does).
* ``LatentForward``: z (B, D) -> (poses f(z), log p(f(z))) in one pass, ``log p(f(z)) = log N(z) - log|det df/dz|``.
* ``LogProbGrad``:   poses -> (log p(x), d log p(x) / dx) (B,), (B, 21, 6).
* ``LatentVJP``:     (z (B, D), grad_poses g (B, 21, 6)) -> (poses f(z), log p(f(z)), d log p(f(z)) / dz,
                     (df/dz)^T g): one forward and one reverse pass, so that the gradient of any data term in pose
                     space becomes a latent gradient.
* ``Encode``:        poses x (B, 21, 6) -> (z = f^-1(x) (B, D), log p(x) (B,)): the density's pass, keeping the
                     latent (the exact inverse; latent-space fits start from it).

The two gradient graphs contain no autograd (no exporter traces it; docs/design.md §6): their reverse pass is written
out by hand over the coupling stack and reuses the forward pass's activations. For one coupling in the latent ->
pose direction, ``y_a = a, y_b = b * e^s + t`` with ``s = c tanh(r / c)``, ``(r, t) = net(a)``, and an objective
L = <g_y, y> + w * sum(s) (w = -1 where L is log p, whose Jacobian term is -sum s; 0 for a plain VJP):

    g_b = g_yb * e^s,   g_s = g_yb * b e^s + w,   g_r = g_s * (1 - (s/c)^2),   g_t = g_yb,
    g_a = g_ya + net^T [g_r, g_t];

in the pose -> latent direction (the density), ``b = (y_b - t) e^-s`` and log p gets -sum s:

    g_yb = g_b * e^-s,   g_s = -g_b * b - 1,   g_r = g_s * (1 - (s/c)^2),   g_t = -g_yb,
    g_ya = g_a + net^T [g_r, g_t].

The hypernet MLP h_{i+1} = act(W_i h_i + b_i), out = W_L h_L + b_L has the vector-Jacobian product
``net^T g = W_0^T (... (W_{L-1}^T ((W_L^T g) * act'(p_{L-1}))) ...) * act'(p_0))`` with p_i the saved
pre-activations. ``log_prob_and_grad`` (torch autograd) is the reference the tests and ``make bench`` compare with.

What keeps the graphs cheap in onnxruntime (each measured against the previous form, ``make bench``): the flow
vector is carried as its two halves through the stack (no Split/Concat per layer); the density's MLP cotangent
is negated, ``g_ya = g_a - net^T [-g_r, -g_t]`` with ``-g_r = (g_b * b + 1) * (1 - (s/c)^2)``, which saves
two Neg nodes per layer; SiLU's derivative is ``sig (1 + p - h)`` and runs in the forward pass (``_act_vjp``).

Poses are in the user layout (B, 21, 6): per joint the first two columns of R, ``[R00 R10 R20 R01 R11 R21]``.
Masked joints are ignored by the density (zero gradient) and come out of the sampler as the identity.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from train.coupling import AffineCoupling
from train.flow import PoseFlow
from train.rotations import NUM_JOINTS, from_flow_layout


def log_prob_and_grad(
    log_prob: Callable[[torch.Tensor], torch.Tensor], poses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x), d log p(x)/dx) by autograd; rows are independent, so the gradient of sum(log p) is per pose."""
    with torch.enable_grad():
        x = poses.detach().requires_grad_(True)
        log_p = log_prob(x)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return log_p.detach(), grad


def latent_vjp_autograd(
    flow: PoseFlow, z: torch.Tensor, grad_poses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference of ``LatentVJP`` by torch autograd: (f(z), log p(f(z)), d log p(f(z))/dz, (df/dz)^T g)."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        x, log_p = flow.latent_forward(zz)
        (grad_z,) = torch.autograd.grad(log_p.sum(), zz, retain_graph=True)
        (vjp_z,) = torch.autograd.grad(x, zz, grad_outputs=grad_poses)
    return x.detach(), log_p.detach(), grad_z, vjp_z


# --- the hypernet MLP with its saved activations -----------------------------------------------------------------
def _act_forward(activation: nn.Module, p: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(act(p), what act'(p) needs)."""
    if isinstance(activation, nn.SiLU):
        sig = torch.sigmoid(p)
        h = p * sig
        return h, (p, sig, h)
    if isinstance(activation, nn.ReLU):
        return torch.relu(p), (p,)
    if isinstance(activation, nn.Tanh):
        h = torch.tanh(p)
        return h, (h,)
    if isinstance(activation, nn.GELU) and activation.approximate == "none":
        cdf = 0.5 * (1.0 + torch.erf(p * (1.0 / math.sqrt(2.0))))
        return p * cdf, (p, cdf)
    raise ValueError(f"no hand-derived backward for activation {activation!r}")


def _act_vjp(activation: nn.Module, saved: tuple[torch.Tensor, ...], g: torch.Tensor) -> torch.Tensor:
    """g * act'(p): SiLU sig (1 + p - h) (h = p sig; = sig + h (1 - sig)), ReLU [p > 0], tanh 1 - h^2,
    GELU Phi(p) + p phi(p).

    Written here, in the reverse code right before its use, and not in ``_act_forward``: onnxruntime's default
    execution order (a depth-first walk back from the outputs) then runs act'(p) in the forward pass right
    after act(p), while p is in cache, and frees p, sig and h there, so the reverse pass reads one tensor per
    activation. Written in the forward code, the same nodes are deferred to the reverse pass, which then reads
    p, sig and h back from memory (slower; the figure: ``reports/design-measurements.md``).
    """
    if isinstance(activation, nn.SiLU):
        p, sig, h = saved
        return g * (sig * ((p - h) + 1.0))
    if isinstance(activation, nn.ReLU):
        (p,) = saved
        return torch.where(p > 0, g, torch.zeros_like(g))
    if isinstance(activation, nn.Tanh):
        (h,) = saved
        return g * (1.0 - h * h)
    p, cdf = saved
    return g * (cdf + p * torch.exp(-0.5 * p * p) * (1.0 / math.sqrt(2.0 * math.pi)))


def _linears(net: nn.Sequential) -> tuple[list[nn.Linear], list[nn.Module]]:
    mods = list(net)
    return mods[0::2], mods[1::2]  # Linear, act, Linear, act, ..., Linear


def _mlp_forward(net: nn.Sequential, a: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(net(a), what each hidden layer's act'(p_i) needs)."""
    linears, acts = _linears(net)
    saved = []
    h = a
    for lin, act in zip(linears[:-1], acts):
        h, s = _act_forward(act, nn.functional.linear(h, lin.weight, lin.bias))
        saved.append(s)
    return nn.functional.linear(h, linears[-1].weight, linears[-1].bias), saved


def _mlp_vjp(net: nn.Sequential, saved: list, g: torch.Tensor) -> torch.Tensor:
    """net^T g: (..., B, d_out) -> (..., B, d_in); g @ W is W^T g per row (no transposed copy of W)."""
    linears, acts = _linears(net)
    g = g @ linears[-1].weight
    for lin, act, s in zip(reversed(linears[:-1]), reversed(acts), reversed(saved)):
        g = _act_vjp(act, s, g) @ lin.weight
    return g


# --- one coupling, both directions, with the tape its reverse pass reads -----------------------------------------
# The flow vector is carried as its two halves (lo, hi) = (v[:, :D/2], v[:, D/2:]), never concatenated inside the
# stack: parity 0 conditions on lo and transforms hi, parity 1 the reverse.
def _get(layer: AffineCoupling, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditioning half a, transformed half b)."""
    return (lo, hi) if layer.parity == 0 else (hi, lo)


def _put(layer: AffineCoupling, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) from (a, b)."""
    return (a, b) if layer.parity == 0 else (b, a)


def _scale_shift(
    layer: AffineCoupling, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(th, ds, t, saved): s = c th with th = tanh(r / c), ds/dr = 1 - th^2, and what the MLP's reverse pass needs."""
    out, saved = _mlp_forward(layer.net, a)
    r, t = out[:, : layer.half], out[:, layer.half :]
    th = torch.tanh(r * (1.0 / layer.scale_clamp))
    return th, 1.0 - th * th, t, saved


def _coupling_forward(
    layer: AffineCoupling, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """latent side -> pose side: (y_b, th, tape); y_a = a, s = c th (the caller sums every layer's th at once)."""
    th, ds, t, saved = _scale_shift(layer, a)
    s = th * layer.scale_clamp
    e = torch.exp(s)
    be = b * e
    return be + t, th, (saved, ds, e, be)


def _coupling_forward_vjp(
    layer: AffineCoupling, tape: tuple, ga: torch.Tensor, gyb: torch.Tensor, w: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_a, g_b) of the layer's input from (g_ya, g_yb) (..., B, D/2) of its output and weight w on sum(s)."""
    saved, ds, e, be = tape
    gr = (gyb * be + w) * ds
    ga = ga + _mlp_vjp(layer.net, saved, torch.cat([gr, gyb], dim=-1))
    return ga, gyb * e


def _coupling_inverse(
    layer: AffineCoupling, a: torch.Tensor, yb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """pose side -> latent side: (b, th, tape); log|det dx/dy| = -sum s = -c sum th (summed by the caller)."""
    th, ds, t, saved = _scale_shift(layer, a)
    neg_s = th * -layer.scale_clamp
    e_inv = torch.exp(neg_s)
    b = (yb - t) * e_inv
    return b, th, (saved, ds, e_inv, b)


def _coupling_inverse_vjp(
    layer: AffineCoupling, tape: tuple, ga: torch.Tensor, gb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_a, g_yb) of the inverse's input from (g_a, g_b) of its output, for L = <g_x, x> - sum(s).

    The MLP's cotangent [g_r, g_t] = -[q_r, q_t] with q_r = (g_b b + 1) ds/dr, q_t = g_yb; its pullback is
    linear, so g_a - net^T [q_r, q_t] saves the two negations.
    """
    saved, ds, e_inv, b = tape
    gyb = gb * e_inv
    q_r = (gb * b + 1.0) * ds
    return ga - _mlp_vjp(layer.net, saved, torch.cat([q_r, gyb], dim=-1)), gyb


def _sum_s(layers: list[AffineCoupling], ths: list[torch.Tensor]) -> torch.Tensor:
    """sum_k sum_i s_k,i (B,) from each layer's th_k (B, D/2) (``ths[k]`` of ``layers[k]``), s_k = c_k th_k: one
    Concat and one ReduceSum in the graph rather than a ReduceSum and an Add per layer."""
    c = {layer.scale_clamp for layer in layers}
    if len(c) == 1:
        return torch.cat(ths, dim=1).sum(1) * c.pop()
    return torch.cat([th * layer.scale_clamp for th, layer in zip(ths, layers)], dim=1).sum(1)


def _vec_to_poses_vjp(flow: PoseFlow, g_vec: torch.Tensor) -> torch.Tensor:
    """Cotangent of poses (B, 21, 6) from that of the flow-layout vector (B, D): masked joints get 0."""
    g = from_flow_layout(g_vec)
    if flow.dim == 6 * NUM_JOINTS:
        return g
    return torch.zeros(g.shape[0], NUM_JOINTS, 6, dtype=g.dtype, device=g.device).index_copy(1, flow.active, g)


# --- the graphs ----------------------------------------------------------------------------------------------------
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
    """poses (B, 21, 6) -> (log p (B,), d log p/d poses (B, 21, 6)): the density's pass, then its reverse.

    Forward: u = (x - mu) e^-log_sigma, then the couplings' inverses (last layer first), z = the result,
    log p = log N(z) - sum_k sum s_k - sum log_sigma. Reverse: g_z = -z, through each inverse coupling (module
    docstring) back to g_u, and d log p/dx = g_u e^-log_sigma.
    """

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow, half = self.flow, self.flow.dim // 2
        inv_scale = torch.exp(-flow.log_scale)
        v = (flow.to_vec(poses) - flow.shift) * inv_scale
        lo, hi = v[:, :half], v[:, half:]
        ths, tapes = [], []
        for layer in reversed(flow.layers):
            a, yb = _get(layer, lo, hi)
            b, th, tape = _coupling_inverse(layer, a, yb)
            lo, hi = _put(layer, a, b)
            ths.append(th)
            tapes.append(tape)
        z = torch.cat([lo, hi], dim=1)
        log_p = flow.base_log_prob(z) - _sum_s(list(reversed(flow.layers)), ths) - flow.log_scale.sum()
        g_lo, g_hi = -lo, -hi
        for layer, tape in zip(flow.layers, reversed(tapes)):
            ga, gb = _get(layer, g_lo, g_hi)
            g_lo, g_hi = _put(layer, *_coupling_inverse_vjp(layer, tape, ga, gb))
        return log_p, _vec_to_poses_vjp(flow, torch.cat([g_lo, g_hi], dim=1) * inv_scale)


class LatentVJP(nn.Module):
    """(z (B, D), grad_poses (B, 21, 6)) -> (poses f(z), log p(f(z)), d log p(f(z))/dz, (df/dz)^T grad_poses).

    Forward: the couplings in order, u = v e^log_sigma + mu, poses = u in the user layout (masked joints: the
    identity, which does not depend on z). Reverse, for both cotangents at once as a stack of two (the same
    activations, one matrix product per weight for both): row 0 is log p (g_x = 0, weight -1 on each sum s),
    row 1 the VJP (g_x = grad_poses, weight 0); at the end d log p/dz = g_0 - z (from log N(z)), VJP = g_1.
    """

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(
        self, z: torch.Tensor, grad_poses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        flow, half = self.flow, self.flow.dim // 2
        lo, hi = z[:, :half], z[:, half:]
        ths, tapes = [], []
        for layer in flow.layers:
            a, b = _get(layer, lo, hi)
            yb, th, tape = _coupling_forward(layer, a, b)
            lo, hi = _put(layer, a, yb)
            ths.append(th)
            tapes.append(tape)
        scale = torch.exp(flow.log_scale)
        poses = flow.from_vec(torch.cat([lo, hi], dim=1) * scale + flow.shift)
        log_p = flow.base_log_prob(z) - _sum_s(list(flow.layers), ths) - flow.log_scale.sum()

        g_u = flow.to_vec(grad_poses) * scale  # masked joints: no path to z
        g = torch.stack([torch.zeros_like(g_u), g_u])  # (2, B, D)
        g_lo, g_hi = g[..., :half], g[..., half:]
        w = torch.tensor([-1.0, 0.0], dtype=z.dtype, device=z.device).reshape(2, 1, 1)
        for layer, tape in zip(reversed(flow.layers), reversed(tapes)):
            ga, gyb = _get(layer, g_lo, g_hi)
            g_lo, g_hi = _put(layer, *_coupling_forward_vjp(layer, tape, ga, gyb, w))
        g = torch.cat([g_lo, g_hi], dim=-1)
        return poses, log_p, g[0] - z, g[1]


class Encode(nn.Module):
    """poses (B, 21, 6) -> (z = f^-1(x) (B, D), log p(x) (B,)): ``log p(x) = log N(z) + log|det dz/dx|``, one
    pass of the couplings' inverses (the ``LogProb`` graph's, keeping z)."""

    def __init__(self, flow: PoseFlow):
        super().__init__()
        self.flow = flow

    def forward(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet = self.flow.inverse(poses)
        return z, self.flow.base_log_prob(z) + logdet
