"""ExportedProgram -> ONNX graph, ready to ship (docs/design.md §6).

* ``to_onnx``: ``torch.onnx.export`` (dynamo), opset ``OPSET``, then onnxscript's optimizer with one change: no
  node reading a weight (>= ``INLINE_LIMIT`` bytes) is constant-folded. By default a Transpose of a weight is
  folded into a transposed copy, which would give each graph its own copy instead of one shared tensor.
  The batch axis is named ``batch``; the node metadata the exporter writes (source file paths, stack traces,
  fx node names, about half the file) is removed.
* ``share_weights``: every tensor of >= ``INLINE_LIMIT`` bytes of all graphs goes into ONE external file,
  stored once per distinct content (several graphs, or several equal tensors, point at the same bytes);
  smaller tensors stay inline (shape inference reads them). The offsets are written by hand:
  ``onnx.save(save_as_external_data=True)`` appends to an existing file and dedups by name, not content.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from pathlib import Path

import onnx
import torch
from onnx.external_data_helper import set_external_data
from onnxscript import ir
from onnxscript.optimizer import optimize_ir

from runtime.prior import Graph

OPSET = 18  # 17 gave an invalid model without an error (docs/design.md §6)
INLINE_LIMIT = 1024  # bytes: smaller tensors stay inside the .onnx file
ALIGN = 64  # byte alignment of each tensor in the weights file
BATCH = "batch"


def to_onnx(program: torch.export.ExportedProgram, graph: Graph) -> onnx.ModelProto:
    """Convert one exported graph (dynamic batch on axis 0 of its input) to an optimised, stripped ModelProto."""
    with _quiet_exporter():
        onnx_program = torch.onnx.export(
            program,
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            opset_version=OPSET,
            optimize=False,
            verbose=False,
        )
    model = onnx_program.model

    def keep_weights(node: ir.Node) -> bool | None:
        reads_weight = any(
            v is not None and v.const_value is not None and v.const_value.nbytes >= INLINE_LIMIT for v in node.inputs
        )
        return False if reads_weight else None

    optimize_ir(model, should_fold=keep_weights)
    proto = ir.serde.serialize_model(model)
    strip_build_metadata(proto)
    _name_batch_axis(proto)
    return proto


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's noise that says nothing about this model ("torchvision is not installed. Skipping
    torchvision::nms", torch-internal pytree deprecations)."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        registry_log.setLevel(level)


def _subgraphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _subgraphs(g)


def strip_build_metadata(model: onnx.ModelProto) -> None:
    """Drop doc strings and metadata_props everywhere (they hold the build machine's paths and fx names)."""
    model.doc_string = ""
    del model.metadata_props[:]
    for graph in _subgraphs(model.graph):
        graph.doc_string = ""
        del graph.metadata_props[:]
        for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            item.doc_string = ""
            del item.metadata_props[:]
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]


def _name_batch_axis(model: onnx.ModelProto) -> None:
    """Rename the exporter's symbol for the batch size (e.g. ``s35``) to ``batch`` in every shape."""
    symbol = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        raise ValueError("exported graph has a fixed batch size; expected a dynamic axis 0")
    pattern = re.compile(rf"\b{re.escape(symbol)}\b")
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(BATCH, dim.dim_param)


def share_weights(models: dict[str, onnx.ModelProto], path: Path) -> None:
    """Move the large initializers of all ``models`` into ``path`` (created), each distinct content once.

    The .onnx files must be saved into ``path``'s folder: locations are relative (``path.name``).
    """
    stored: dict[tuple, tuple[int, int]] = {}  # (dtype, dims, sha256) -> (offset, length)
    with open(path, "wb") as f:
        for model in models.values():
            for tensor in model.graph.initializer:
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    raise ValueError(f"initializer {tensor.name}: already external")
                if not tensor.HasField("raw_data"):  # typed fields (float_data, ...) -> raw bytes
                    tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name))
                data = tensor.raw_data
                if len(data) < INLINE_LIMIT:
                    continue
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest())
                if key not in stored:
                    f.write(b"\0" * (-f.tell() % ALIGN))
                    stored[key] = (f.tell(), len(data))
                    f.write(data)
                offset, length = stored[key]
                set_external_data(tensor, location=path.name, offset=offset, length=length)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                tensor.ClearField("raw_data")


def set_metadata(model: onnx.ModelProto, props: dict[str, str], doc: str) -> None:
    """Replace the model's ``metadata_props`` by ``props`` (strings) and set its doc string."""
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = doc
