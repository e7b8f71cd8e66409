"""The torch ``PoseFlow`` behind an exported model: for fine-tuning, for checking the exported artifacts against
torch, and for the torch rows of the benchmarks (``poseprior bench``, ``poseprior fit-bench``).

An exported model directory (``poseprior export``) records the flow's config in ``manifest.json``
(``training.config``) and, unless exported ``--onnx-only``, its weights in ``pt2/log_prob.pt2``; its training run
(``training.run``, ``training.checkpoint``) may still hold the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from runtime import PosePrior

from .config import Config
from .trainer import build_flow, load_checkpoint


def load_flow(model_dir: str | Path) -> torch.nn.Module:
    """Rebuild the torch ``PoseFlow`` (eval mode) of an exported model: its config from ``manifest.json``, its
    weights from ``pt2/log_prob.pt2`` (the ``flow.``-prefixed state of the exported program)."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    flow = build_flow(Config.from_dict(manifest["training"]["config"]))
    state = torch.export.load(model_dir / "pt2" / "log_prob.pt2").state_dict
    flow.load_state_dict({name.removeprefix("flow."): t for name, t in state.items()})
    return flow.eval()


def torch_flow(prior: PosePrior, runs_dir: Path = Path("runs")) -> tuple[torch.nn.Module, str]:
    """The model's torch flow and where its weights came from: its .pt2, else its training checkpoint
    (``runs_dir / training.run / training.checkpoint``), else the same architecture with fresh weights (timing is
    the same; the second element says so)."""
    if (prior.path / "pt2" / "log_prob.pt2").is_file():
        return load_flow(prior.path), "weights from the model's .pt2"
    training = prior.manifest["training"]
    ckpt = runs_dir / training["run"] / training["checkpoint"]
    if ckpt.is_file():
        return load_checkpoint(ckpt)[0], f"weights from {ckpt}"
    return build_flow(Config.from_dict(training["config"])).eval(), "same architecture, untrained weights"
