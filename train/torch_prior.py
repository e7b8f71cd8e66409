"""``TorchPrior``: an exported model directory as a differentiable torch module (no checkpoint, no retraining).

``TorchPrior.load(model_dir=None)`` (None: the model shipped in the package, ``runtime/models/default``) rebuilds the
flow (``train.flow.PoseFlow``) from the model's own files:

* ``manifest.json``: the architecture (``training.config``: ``num_layers``, ``hidden``, ``depth``, ``scale_clamp``,
  ``activation``; ``masked_joints``), validated by ``runtime.manifest`` like the runtime does, and the sha256 of
  every file read;
* ``weights.bin``: every tensor of >= 1 KB, read at the offsets that ``log_prob.onnx`` records for it (the export
  writes each weight once into ``weights.bin``; ``export.onnx_export.share_weights``);
* ``log_prob.onnx``: the tensors under 1 KB that stay inline in the graph (each hypernet's output bias, the
  normalisation ``shift``, and ``exp(-log_scale)``, the constant the density multiplies by; ``log_scale`` is its
  negative log).

With f the flow (latent -> pose), z ~ N(0, I_D):

    log p(x) = log N(f^-1(x); 0, I) + log|det d f^-1 / dx|,     log p(f(z)) = log N(z) - log|det df/dz|,

the same functions as the runtime's graphs (``runtime.PosePrior``), in torch: differentiable with autograd, on any
device (``.to(device)``, or ``load(..., device=)``), float32 by default (``.double()`` works too).

Poses are 21 local joint rotations in SMPL body order, in the representation ``rep`` (never guessed):

* ``"6d"`` (default): (B, 21, 6), the first two COLUMNS of R, ``[R00 R10 R20 R01 R11 R21]``, used as given;
* ``"matrix"``: (B, 21, 3, 3) (its first two columns are read);
* ``"axis_angle"``: (B, 21, 3) or (B, 63) rotation vectors (smplx ``body_pose``; Rodrigues);
* ``"6d_rows"``: (B, 21, 6), PyTorch3D's ``matrix_to_rotation_6d`` (the first two ROWS ``[R00 R01 R02 R10 R11 R12]``),
  made a rotation by PyTorch3D's ``rotation_6d_to_matrix`` (Gram-Schmidt on the rows). Rows passed as ``"6d"``
  are read as the inverse rotations and real poses score far lower: nothing can detect that mistake.

A single pose (no batch axis) gives a scalar. Inputs are not range-checked as the runtime's are (they are tensors
inside an optimisation); shapes and ``rep`` are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from runtime.manifest import WEIGHTS_FILE, ModelError, read_manifest, verify_files
from runtime.prior import DEFAULT_MODEL_DIR, GRAPHS, REPS

from .flow import PoseFlow
from .rotations import NUM_JOINTS, axis_angle_to_matrix, gram_schmidt, matrix_to_6d

#: the graph whose initializers name the weights (``flow.<state_dict key>``) and hold the small ones inline
LAYOUT_GRAPH = "log_prob"
_ARCH = ("num_layers", "hidden", "depth", "scale_clamp", "activation")


def rows_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """PyTorch3D's ``rotation_6d_to_matrix``: rows ``b1 = a1/|a1|``, ``b2 = normalize(a2 - (b1.a2) b1)``,
    ``b3 = b1 x b2`` of R from (a1, a2) = (d6[..., :3], d6[..., 3:]), i.e. ``gram_schmidt(d6)^T``."""
    return gram_schmidt(d6).transpose(-1, -2)


def matrix_to_6d_rows(R: torch.Tensor) -> torch.Tensor:
    """PyTorch3D's ``matrix_to_rotation_6d``: ``[R00 R01 R02 R10 R11 R12]``."""
    return torch.cat([R[..., 0, :], R[..., 1, :]], dim=-1)


def to_6d(poses: torch.Tensor, rep: str = "6d") -> tuple[torch.Tensor, bool]:
    """Poses in ``rep`` -> ((B, 21, 6) model 6D (columns), whether a single pose was given). Differentiable."""
    if not isinstance(rep, str) or rep not in REPS:
        raise ValueError(f"rep must be one of {REPS}, got {rep!r}"[:200])
    x = poses if isinstance(poses, torch.Tensor) else torch.as_tensor(np.asarray(poses))
    if not x.is_floating_point():
        raise ValueError(f"poses must be a floating-point tensor, got dtype {x.dtype}")
    J = NUM_JOINTS
    if rep == "axis_angle" and x.shape[-1:] == (3 * J,) and x.ndim in (1, 2):
        x = x.reshape(x.shape[:-1] + (J, 3))
    per_joint = {"6d": (6,), "6d_rows": (6,), "matrix": (3, 3), "axis_angle": (3,)}[rep]
    k = len(per_joint)
    if tuple(x.shape[-k:]) != per_joint or x.ndim not in (k + 1, k + 2) or x.shape[-k - 1] != J:
        raise ValueError(
            f"poses (rep={rep!r}): shape {tuple(x.shape)}, expected (B, {J}, "
            f"{', '.join(map(str, per_joint))}){' or (B, 63)' if rep == 'axis_angle' else ''}"
        )
    single = x.ndim == k + 1
    if single:
        x = x[None]
    if rep == "matrix":
        x = matrix_to_6d(x)
    elif rep == "axis_angle":
        x = matrix_to_6d(axis_angle_to_matrix(x))
    elif rep == "6d_rows":
        x = matrix_to_6d(rows_6d_to_matrix(x))
    if len(x) == 0:
        raise ValueError(f"poses: empty batch (shape {tuple(poses.shape)})")
    return x, single


def _architecture(manifest: dict, path: Path) -> dict:
    config = (manifest.get("training") or {}).get("config")
    if not isinstance(config, dict) or any(k not in config for k in _ARCH):
        raise ModelError(
            f"{path / 'manifest.json'}: field ['training']['config'] must give the flow's "
            f"{', '.join(_ARCH)} (a model exported by `poseprior export`)"
        )
    return {k: config[k] for k in _ARCH}


def read_weights(model_dir: Path, manifest: dict) -> dict[str, np.ndarray]:
    """The flow's tensors by ``state_dict`` name: ``log_prob.onnx``'s initializers named ``flow.*`` (their bytes
    from ``weights.bin`` at the recorded offset and length, or inline), plus ``log_scale`` from the constant the
    graph multiplies the shifted poses by (``(x - shift) * exp(-log_scale)``)."""
    graph_path = model_dir / GRAPHS[LAYOUT_GRAPH].file
    model = onnx.load(str(graph_path), load_external_data=False)
    blob = np.fromfile(model_dir / WEIGHTS_FILE, dtype=np.uint8)
    inits = {t.name: t for t in model.graph.initializer}

    def array(t: onnx.TensorProto) -> np.ndarray:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(t)
        ext = {e.key: e.value for e in t.external_data}
        if ext.get("location") != WEIGHTS_FILE:
            raise ModelError(f"{graph_path}: tensor {t.name} is stored in {ext.get('location')!r}, not {WEIGHTS_FILE}")
        offset, length = int(ext.get("offset", 0)), int(ext["length"])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        if offset + length > blob.size or length != int(np.prod(t.dims)) * dtype.itemsize:
            raise ModelError(
                f"{model_dir / WEIGHTS_FILE}: tensor {t.name} (bytes {offset}..{offset + length}) does "
                f"not fit the file ({blob.size} bytes) or its shape {list(t.dims)}"
            )
        return blob[offset : offset + length].view(dtype).reshape(tuple(t.dims)).copy()

    weights = {name[len("flow.") :]: array(t) for name, t in inits.items() if name.startswith("flow.")}
    # the normalisation's scale: Sub(poses in flow layout, flow.shift) -> Mul(., exp(-log_scale))
    sub = next((n.output[0] for n in model.graph.node if n.op_type == "Sub" and "flow.shift" in n.input), None)
    mul = next((n for n in model.graph.node if n.op_type == "Mul" and sub in n.input), None)
    other = None if mul is None else next((i for i in mul.input if i != sub), None)
    if other not in inits or "shift" not in weights:
        raise ModelError(
            f"{graph_path}: no normalisation (x - flow.shift) * exp(-log_scale) found: not a graph "
            f"exported by this package's `poseprior export`"
        )
    inv_scale = array(inits[other]).astype(np.float64)
    weights["log_scale"] = (-np.log(inv_scale)).astype(np.float32)
    return weights


class TorchPrior(nn.Module):
    """The pose prior as a torch module: ``log_prob`` (also ``prior(poses, rep=...)``), ``sample``,
    ``latent_forward``, all differentiable (module docstring for the formulas and ``rep``).

    Attributes from the manifest: ``joint_names``, ``dim`` (D), ``masked_joints``, ``skeleton``, ``conversion``,
    ``threshold`` (the recorded tau, or None), ``path``. The weights are the parameters of ``flow``, frozen
    (``requires_grad=False``: the prior is a fixed term; the poses or latents carry the gradient)."""

    def __init__(self, flow: PoseFlow, manifest: dict, path: Path):
        super().__init__()
        self.flow = flow
        self.path = path
        self.manifest = manifest
        self.joint_names = tuple(manifest["joint_names"])
        self.dim = int(manifest["dim"])
        self.masked_joints = tuple(manifest["masked_joints"])
        skeleton = manifest.get("skeleton") or {}
        self.skeleton: str | None = skeleton.get("name")
        self.conversion: str | None = skeleton.get("conversion")
        tau = (manifest.get("plausibility") or {}).get("tau")
        self.threshold: float | None = None if tau is None else float(tau)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str | torch.device | None = None) -> "TorchPrior":
        """The model in ``model_dir`` (None: the shipped default), its files checked against the manifest's sha256;
        in eval mode, weights frozen, on ``device`` (default CPU). A missing, tampered or foreign model directory
        raises ``runtime.ModelError`` naming the file."""
        path = DEFAULT_MODEL_DIR if model_dir is None else Path(model_dir)
        if not path.is_dir():
            raise ModelError(f"{path}: no model directory here")
        manifest = read_manifest(path, GRAPHS.values())
        verify_files(path, manifest, [WEIGHTS_FILE, GRAPHS[LAYOUT_GRAPH].file])
        arch = _architecture(manifest, path)
        try:
            flow = PoseFlow(
                int(arch["num_layers"]),
                int(arch["hidden"]),
                int(arch["depth"]),
                float(arch["scale_clamp"]),
                str(arch["activation"]),
                tuple(manifest["masked_joints"]),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"{path / 'manifest.json'}: field ['training']['config']: {e}") from None
        if flow.dim != manifest["dim"]:
            raise ModelError(f"{path / 'manifest.json'}: dim {manifest['dim']} but the config gives {flow.dim}")
        weights = read_weights(path, manifest)
        state = flow.state_dict()
        missing = sorted(set(state) - set(weights))
        wrong = [k for k in state if k in weights and tuple(weights[k].shape) != tuple(state[k].shape)]
        if missing or wrong:
            raise ModelError(
                f"{path / GRAPHS[LAYOUT_GRAPH].file}: weights do not match the manifest's architecture "
                f"(missing {missing[:3]}, wrong shape {wrong[:3]})"
            )
        flow.load_state_dict({k: torch.from_numpy(np.array(weights[k])) for k in state})
        flow.requires_grad_(False)
        prior = cls(flow, manifest, path).eval()
        return prior.to(device) if device is not None else prior

    def __repr__(self) -> str:
        p = self.flow.shift
        return (
            f"TorchPrior({str(self.path)!r}, dim={self.dim}, skeleton={self.skeleton!r}, "
            f"conversion={self.conversion!r}, device={p.device}, dtype={p.dtype})"
        )

    @property
    def device(self) -> torch.device:
        return self.flow.shift.device

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        p = self.flow.shift
        return x.to(device=p.device, dtype=p.dtype)

    def log_prob(self, poses: torch.Tensor, rep: str = "6d") -> torch.Tensor:
        """log p of each pose (B,), a scalar for one pose; differentiable in ``poses`` (any ``rep``)."""
        x, single = to_6d(poses, rep)
        log_p = self.flow.log_prob(self._cast(x))
        return log_p[0] if single else log_p

    def forward(self, poses: torch.Tensor, rep: str = "6d") -> torch.Tensor:
        """``log_prob(poses, rep)``: ``-prior(body_pose, rep="axis_angle")`` is the pose term of a fit."""
        return self.log_prob(poses, rep)

    def latent_forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(poses f(z) raw (B, 21, 6), log p(f(z)) (B,)) in one pass; ``-log p`` is the latent-space loss (not
        |z|^2, which drops the Jacobian term)."""
        z = self._latent(z)
        single = z.ndim == 1
        x, log_p = self.flow.latent_forward(z[None] if single else z)
        return (x[0], log_p[0]) if single else (x, log_p)

    def _latent(self, z) -> torch.Tensor:
        z = self._cast(z if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z)))
        if z.shape[-1:] != (self.dim,) or z.ndim not in (1, 2) or (z.ndim == 2 and len(z) == 0):
            raise ValueError(f"z: shape {tuple(z.shape)}, expected (B, {self.dim}) or ({self.dim},)")
        return z

    def sample(
        self,
        n: int | None = None,
        generator: torch.Generator | None = None,
        z: torch.Tensor | None = None,
        temperature: float = 1.0,
        orthonormalize: bool = True,
    ) -> torch.Tensor:
        """Poses f(z) (n, 21, 6) with ``z = temperature * N(0, I)`` drawn from ``generator`` (on the module's
        device), or from the given ``z``; Gram-Schmidt per joint unless ``orthonormalize=False``. Differentiable
        in ``z``."""
        if z is None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"sample: n must be a positive int (or give z), got {n!r}"[:200])
            if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
                raise ValueError(f"sample: temperature must be a positive finite number, got {temperature!r}")
            p = self.flow.shift
            z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype, device=p.device) * temperature
        else:
            if n is not None or generator is not None or temperature != 1.0:
                raise ValueError("sample: z is used as given; do not pass n, generator or temperature with it")
            z = self._latent(z)
        single = z.ndim == 1
        x = self.flow.forward(z[None] if single else z)[0]
        if orthonormalize:
            x = matrix_to_6d(gram_schmidt(x))
        return x[0] if single else x
