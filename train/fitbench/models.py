"""The priors of the benchmark, each behind the ``train.fit`` prior interface: none, the GMM, VPoser, the flow in
torch (ambient, latent, latent with ‖z‖²/2) and the flow through the torch-free runtime (ambient, latent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime import PosePrior
from runtime import fit as rfit

from .. import fit as F
from ..gmm import load_gmm
from ..loading import torch_flow
from ..vposer import load_vposer

ROWS = {  # prior name -> table label
    "none": "no prior",
    "gmm": "GMM (axis-angle, ambient)",
    "vposer": "VPoser (‖z‖², latent)",
    "flow_ambient": "ours, ambient",
    "flow_latent": "ours, latent (-log p, Jacobian)",
    "flow_latent_z2": "ours, latent ‖z‖²/2 (ablation)",
    "runtime_ambient": "ours, ambient, runtime (numpy + onnxruntime)",
    "runtime_latent": "ours, latent (-log p, Jacobian), runtime",
}


class RuntimePrior:
    """The flow through the torch-free runtime (``runtime.fit``, onnxruntime graphs, numpy data terms) in one
    space, with the SAME problems, budgets and starts as the torch rows: the torch data terms are rebuilt as their
    numpy twins (``Denoise``, ``Effectors``), fixed joints become ``free = ~mask`` (latent: the same anchor). The
    fitting itself never calls torch; tensors are converted at this boundary only."""

    def __init__(self, prior, space: str):
        self.prior, self.space, self.name = prior, space, f"runtime_{space}"
        self._latents = {}  # start poses (bytes) -> encode(start): the lam grid re-fits the same starts

    def _init_z(self, x0):
        if self.space != "latent":
            return None
        key = x0.tobytes()
        if key not in self._latents:
            self._latents[key] = rfit.encode(self.prior, x0)[0]
        return self._latents[key]

    def fit(self, init, data, lam, fixed, fixed_weight, iters) -> F.FitResult:
        x0 = init.numpy()
        free = None
        if fixed is not None:
            mask = fixed[0].expand(len(x0), -1).numpy()
            x0, free = np.where(mask[..., None], fixed[1].numpy(), x0), ~mask
        term = None
        if isinstance(data, F.Denoise):
            term = rfit.Denoise(data.observed.numpy(), data.weight)
        elif isinstance(data, F.Effectors):
            term = rfit.Effectors(
                data.targets.numpy(),
                data.joints,
                data.offsets.numpy(),
                data.sigma,
                None if data.trans is None else data.trans.numpy(),
            )
        elif data is not None:
            raise TypeError(f"no runtime twin for the data term {type(data).__name__}")
        r = rfit.fit(
            self.prior,
            x0,
            term,
            lam,
            free,
            space=self.space,
            init_z=self._init_z(x0),
            fixed_weight=fixed_weight,
            iters=iters,
        )
        t = {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in dict(
                poses=r.poses, raw=r.raw, params=r.params, loss=r.loss, data=r.data, prior=r.neg_log_p
            ).items()
        }
        return F.FitResult(t["poses"], t["raw"], t["params"], t["loss"], t["data"], t["prior"], r.seconds)


def load_priors(
    model_dir: Path, vposer_path: Path, gmm_path: Path, check_poses: torch.Tensor, only: tuple = ()
) -> tuple[dict, str]:
    """The prior adapters (all of ``ROWS``, or the names in ``only``; the runtime latent row only for models with
    latent_vjp); the flow is the model's (.pt2, else its training checkpoint under runs/), checked against the
    model's ONNX log_prob on ``check_poses``. VPoser and the GMM are loaded only when asked for."""
    onnx_prior = PosePrior.load(model_dir, intra_op_num_threads=1, allow_spinning=False)
    flow, origin = torch_flow(onnx_prior)
    if "untrained" in origin:
        t = onnx_prior.manifest["training"]
        raise FileNotFoundError(
            f"{model_dir}: no .pt2, and its training checkpoint runs/{t['run']}/{t['checkpoint']} "
            f"is not here: the torch fitting needs the flow's weights"
        )
    flow.requires_grad_(False)
    with torch.no_grad():
        diff = np.abs(flow.log_prob(check_poses).numpy() - onnx_prior.log_prob(check_poses.numpy())).max()
    if diff > 1e-2:
        raise ValueError(f"{model_dir}: torch flow ({origin}) and ONNX log p differ by {diff:.3g}: not the same model")
    unknown = set(only) - set(ROWS)
    if unknown:
        raise ValueError(f"--priors: unknown {sorted(unknown)}; choose from {list(ROWS)}")
    wanted = set(only or ROWS)
    priors = {"none": F.NoPrior()}
    if "gmm" in wanted:
        priors["gmm"] = F.GMMPrior(load_gmm(gmm_path)[0])
    if "vposer" in wanted:
        priors["vposer"] = F.VPoserLatent(load_vposer(vposer_path)[0].requires_grad_(False))
    priors |= {
        "flow_ambient": F.FlowAmbient(flow),
        "flow_latent": F.FlowLatent(flow, True),
        "flow_latent_z2": F.FlowLatent(flow, False),
        "runtime_ambient": RuntimePrior(onnx_prior, "ambient"),
    }
    if rfit.has_latent_space(onnx_prior):  # models exported before latent_vjp get no runtime latent row
        priors["runtime_latent"] = RuntimePrior(onnx_prior, "latent")
    priors = {k: v for k, v in priors.items() if k in wanted}
    return priors, f"{origin} (torch vs ONNX log p max diff {diff:.2g})"
