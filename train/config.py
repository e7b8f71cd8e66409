"""Training configuration: one dataclass, named presets, JSON files.

``paper`` is the architecture (12 couplings, hypernets 4 x 256; docs/design.md §3) with 6D noise; ``smpl`` is the
shipped default's recipe (runs/smpl3-nowiden/config.json: ``paper`` with ``part_mix=0.5``), ``smpl-widen`` adds
widening (the default before conversion smpl-segments-3). ``tiny`` is the small preset the tests and CI train.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from runtime.rotations import JOINT_NAMES

#: fields (of any config that has them) that must be > 0, and those that must be >= 0
POSITIVE = {
    "num_layers",
    "hidden",
    "depth",
    "scale_clamp",
    "lr",
    "batch_size",
    "epochs",
    "patience",
    "grad_clip",
    "max_val",
    "latent",
    "n_components",
    "max_iter",
}
NON_NEGATIVE = {
    "alpha",
    "beta",
    "noise",
    "joint_noise",
    "weight_decay",
    "dropout",
    "kl_weight",
    "reg_covar",
    "tol",
    "kmeans_iter",
    "part_mix",
}
#: the hypernets' activations (train.coupling.ACTIVATIONS, which needs torch.nn)
ACTIVATIONS = ("relu", "silu", "gelu", "tanh")


def _type_ok(value, hint) -> bool:
    """``value`` is a ``hint`` (int, float, bool, str, list[...] or dict[str, ...]) as JSON gives it: an int is a
    float, a bool is neither an int nor a float."""
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_type_ok(k, key) and _type_ok(v, item) for k, v in value.items())
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


class ConfigBase:
    """JSON, hashing and checked construction shared by the configs of the flow and of the baselines. Every
    construction (``from_dict``, ``dataclasses.replace``, the presets) checks each field's type and range and
    raises ValueError naming the field."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            v, hint = getattr(self, f.name), hints[f.name]
            if not _type_ok(v, hint):
                want = getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)
                raise ValueError(f"config: {f.name}={v!r} is not of type {want}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"config: {f.name}={v!r} is not finite")
            if (f.name in POSITIVE and v <= 0) or (f.name in NON_NEGATIVE and v < 0):
                raise ValueError(f"config: {f.name}={v!r} must be {'> 0' if f.name in POSITIVE else '>= 0'}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}; known keys are {sorted(names)}")
        model = getattr(cls, "model", None)
        if model is not None and d.get("model", model) != model:
            raise ValueError(f"config: 'model' is {d['model']!r}, expected {model!r}")
        return cls(**d)

    def differences(self, other: "ConfigBase") -> list[str]:
        """``"key a -> b"`` for every field where ``other`` differs from ``self``."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return [f"{k} {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


def load_preset(presets: dict, spec: str | None, kind: str = "flow"):
    """``spec`` is a preset name, a JSON file of overrides on a preset (key ``preset``, default ``paper``), or
    None (``paper``); returns a fresh config."""
    if spec is None or spec in presets:
        return dataclasses.replace(presets[spec or "paper"])
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"config: {spec!r} is neither a {kind} preset ({', '.join(presets)}) nor a JSON file")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"config: {path} is not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"config: {path} holds a JSON {type(d).__name__}, expected an object of config keys")
    preset = d.pop("preset", "paper")
    if not isinstance(preset, str) or preset not in presets:
        raise ValueError(f'config: {path}: unknown "preset" {preset!r}; {kind} presets are {", ".join(presets)}')
    try:
        return type(presets[preset]).from_dict({**dataclasses.asdict(presets[preset]), **d})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@dataclass
class Config(ConfigBase):
    # model (docs/design.md §3)
    num_layers: int = 12
    hidden: int = 256
    depth: int = 4
    scale_clamp: float = 3.0
    activation: str = "silu"
    normalize: bool = True  # fixed elementwise affine normalisation from training statistics
    masked_joints: list[str] = field(default_factory=list)  # joints not modelled (e.g. bandai's virtual spine2)
    # inverse Gram-Schmidt augmentation (docs/design.md §2)
    alpha: float = 0.1
    beta: float = 0.1
    noise: float = 0.0  # isotropic 6D dequantisation noise on every joint (train/augment.py)
    joint_noise: float = 0.0  # rotation noise (radians) on the data's hinge / duplicated joints only
    widen: dict[str, list[float]] = field(default_factory=dict)  # joint -> rotation noise (rad) per local axis
    # x, y, z: directions real SMPL fits use and the source's hinges lack
    part_mix: float = 0.0  # probability per pose and body part of taking that part from another
    # pose of the batch (train/augment.py PARTS): unseen combinations
    mirror: bool = False  # add the left-right mirror image of every training pose
    # optimisation
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10  # early stopping: epochs without a better validation log p
    early_stopping: bool = True  # False: train all `epochs` and keep the last (the epoch budget is then
    # the hyper-parameter, chosen on validation by the sweep)
    grad_clip: float = 10.0
    seed: int = 0
    val_seed: int = 1234  # fixed augmentation of the validation set
    max_val: int = 20000  # at most this many validation poses (a fixed, seeded subset)

    def check(self) -> None:
        super().check()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"config: activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        unknown = [j for j in self.masked_joints if j not in JOINT_NAMES]
        if unknown or len(set(self.masked_joints)) != len(self.masked_joints):
            raise ValueError(
                f"config: masked_joints={self.masked_joints!r}: unknown or repeated joint names "
                f"{unknown}; joints are runtime.rotations.JOINT_NAMES"
            )
        if len(self.masked_joints) >= len(JOINT_NAMES):
            raise ValueError("config: masked_joints masks every joint; nothing left to model")
        for joint, sigma in self.widen.items():
            if joint not in JOINT_NAMES or len(sigma) != 3 or not all(math.isfinite(v) and v >= 0 for v in sigma):
                raise ValueError(
                    f"config: widen[{joint!r}]={sigma!r}: expected a joint of runtime.rotations."
                    f"JOINT_NAMES and 3 finite standard deviations >= 0 (radians, local x, y, z)"
                )
        if self.part_mix > 1:
            raise ValueError(f"config: part_mix={self.part_mix} is a probability (0..1)")


#: the widening of the shipped model: rotation noise (rad, local x, y, z) on SMPL's 3-DoF knees, elbows and feet,
#: which CMU's hinge joints leave singular
SMPL_WIDEN = {
    side + joint: sigma
    for side in ("left_", "right_")
    for joint, sigma in {"knee": [0.0, 0.15, 0.15], "elbow": [0.3, 0.0, 0.25], "foot": [0.0, 0.2, 0.2]}.items()
}

PRESETS = {
    # the architecture of docs/design.md §3 (12 couplings, hypernets 4 x 256) with 6D dequantisation noise 0.02 on
    # every joint; the base the SMPL presets add to
    "paper": Config(noise=0.02),
    # Bandai Namco data (CC BY-NC 4.0, non-commercial): its spine2 is a constant virtual joint, not modelled
    "paper-bandai": Config(masked_joints=["spine2"], noise=0.02),
    # the shipped default's recipe (runs/smpl3-nowiden/config.json): paper + part mixing, no widening, trained on
    # the SMPL conversion of the CMU train split (make data; make train)
    "smpl": Config(noise=0.02, part_mix=0.5),
    # the widened candidate (runs/smpl3-widen/config.json; the default before conversion smpl-segments-3)
    "smpl-widen": Config(noise=0.02, widen=SMPL_WIDEN, part_mix=0.5),
    # the non-commercial CMU + Bandai model (make noncommercial): smpl with Bandai's constant spine2 masked
    "smpl-bandai": Config(noise=0.02, part_mix=0.5, masked_joints=["spine2"]),
    # tests and CI: the paper preset's dequantisation on a small net
    "tiny": Config(
        num_layers=4, hidden=128, depth=2, batch_size=256, epochs=8, patience=3, lr=2e-3, max_val=2000, noise=0.02
    ),
}


def load_config(spec: str | None) -> Config:
    """``spec`` is a preset name, a path to a JSON file of overrides on a preset, or None (``paper``)."""
    return load_preset(PRESETS, spec)
