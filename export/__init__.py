"""Export a trained pose prior: six ONNX graphs sharing one weights file, a manifest, and torch-native copies
(``.pt2``, TorchScript). Needs torch; the runtime that loads the result (``runtime``) does not.

    from export import export_model
    export_model("runs/smpl", "models/smpl")      # or: poseprior export runs/smpl --out models/smpl

Without torch ``import export`` raises ImportError saying what to install.
"""

try:
    import torch  # noqa: F401
except ImportError:
    from runtime.extras import TRAIN_EXTRA_HINT

    raise ImportError(f"poseprior's export package {TRAIN_EXTRA_HINT}", name="torch") from None

from train.loading import load_flow  # re-exported: the way back from an exported model to its torch flow

from .exporter import export_model
from .graphs import LatentForward, LatentVJP, LogProb, LogProbGrad, Sample, latent_vjp_autograd, log_prob_and_grad

__all__ = [
    "export_model",
    "load_flow",
    "LogProb",
    "Sample",
    "LatentForward",
    "LogProbGrad",
    "LatentVJP",
    "log_prob_and_grad",
    "latent_vjp_autograd",
]
