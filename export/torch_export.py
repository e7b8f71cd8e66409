"""Torch-native artifacts of the graphs (for torch and libtorch users); the way back to a ``PoseFlow`` is
``train.loading.load_flow``.

* ``.pt2`` (``torch.export``; load with ``torch.export.load(path).module()``): the successor format; the
  ExportedProgram is the same one the ONNX graph was converted from.
* TorchScript (``torch.jit.trace``; load with ``torch.jit.load``, also from C++): deprecated in torch 2.13 (it
  warns) but still the simplest way into libtorch. Traced with a batch of 3; the batch size stays dynamic.

Both formats record source file paths of the build machine (stack traces in ``.pt2`` node metadata,
``*.debug_pkl`` entries in TorchScript archives); they are removed: the debug entries are optional.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

BATCH = torch.export.Dim("batch")


def export_program(module: nn.Module, *examples: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with one dynamic batch (axis 0 of every input), build paths removed."""
    program = torch.export.export(module.eval(), tuple(examples), dynamic_shapes=tuple({0: BATCH} for _ in examples))
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    return program


def save_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    with warnings.catch_warnings():  # torch-internal pytree deprecation noise
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        torch.export.save(program, path)


def save_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    tmp = path.with_suffix(".full")
    with warnings.catch_warnings():
        # "torch.jit.trace/save is deprecated": known, and this artifact is wanted. The identity rotation of
        # masked joints is a constant, as the TracerWarning about torch.tensor assumes.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r"torch\.tensor results are registered as constants", category=torch.jit.TracerWarning
        )
        traced = torch.jit.trace(module.eval(), (example,))
        torch.jit.save(traced, str(tmp))
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info.filename))
    tmp.unlink()
