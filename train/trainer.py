"""The training loop: maximise mean log p of inverse-Gram-Schmidt-augmented batches with Adam, early
stopping on the validation mean log p (validation augmented once with a fixed seed, docs/design.md §3).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``best.pt`` (weights with the
best validation log p) and ``last.pt`` (everything needed to resume: weights, optimizer, epoch, RNG state,
early-stopping state). Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from runtime.atomic import atomic_write, atomic_write_text
from runtime.rotations import mirror_axis_angle

from . import distributed
from .augment import Augmentation, degenerate_joints
from .config import Config
from .data import PoseSet
from .flow import PoseFlow
from .moments import Moments, blocks, column_moments
from .rotations import JOINT_NAMES, NUM_JOINTS, axis_angle_to_6d

CHECKPOINT_FORMAT = 1


def build_flow(cfg: Config) -> PoseFlow:
    return PoseFlow(cfg.num_layers, cfg.hidden, cfg.depth, cfg.scale_clamp, cfg.activation, tuple(cfg.masked_joints))


def read_checkpoint(path: str | Path, model: str = "flow") -> dict:
    """The checkpoint dict of a ``model`` ("flow", "vposer", "gmm") run: ``path`` is a ``.pt`` file or a run
    directory (its ``best.pt``). Loaded with ``weights_only=True``; a missing, corrupt or foreign file is refused."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise ValueError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if (
        not isinstance(ckpt, dict)
        or ckpt.get("format") != CHECKPOINT_FORMAT
        or not isinstance(ckpt.get("config"), dict)
        or ckpt["config"].get("model", "flow") != model
    ):
        raise ValueError(f"{path}: not a poseprior {model} checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def model_only(ckpt: dict) -> dict:
    """A checkpoint without what only resuming needs (optimizer state, RNG states): ``best.pt`` is written so,
    a third of ``last.pt``'s size; runs resume from ``last.pt``."""
    return {k: v for k, v in ckpt.items() if k not in ("optimizer", "rng", "torch_rng")}


#: what a flow checkpoint must hold besides ``format`` and ``config`` (``load_checkpoint``)
FLOW_CHECKPOINT_KEYS = {"model": dict, "state": dict, "config_sha256": str, "data_sha256": dict}
STATE_KEYS = ("epoch", "step", "best_epoch", "best_val")


def load_checkpoint(path: str | Path) -> tuple[PoseFlow, dict]:
    """Rebuild the flow from a checkpoint (``best.pt`` or ``last.pt``); returns (flow in eval mode, checkpoint).

    Refused with a ValueError naming the file: missing keys, a config that is not a valid flow config, weights
    that do not match it (names or shapes), and non-finite weights."""
    ckpt = read_checkpoint(path)
    path = Path(path) / "best.pt" if Path(path).is_dir() else Path(path)
    for key, kind in FLOW_CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind):
            raise ValueError(f"{path}: checkpoint has no {key!r} {kind.__name__} (got {type(ckpt.get(key)).__name__})")
    missing = [k for k in STATE_KEYS if k not in ckpt["state"]]
    if missing:
        raise ValueError(f"{path}: checkpoint 'state' lacks {missing}")
    try:
        cfg = Config.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    weights = ckpt["model"]
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: 'model' entries {bad[:3]} are not tensors")
    flow = build_flow(cfg)
    try:
        flow.load_state_dict(weights)
    except RuntimeError as e:  # missing / unexpected keys, wrong shapes
        raise ValueError(
            f"{path}: the weights do not match the checkpoint's config ({' '.join(str(e).split())[:300]})"
        ) from None
    nonfinite = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise ValueError(f"{path}: non-finite (NaN or inf) weights in {nonfinite[:3]}: not exporting a broken model")
    return flow.eval(), ckpt


def _replace_via_tmp(path: Path, write: Callable[[Path], None]) -> None:
    """``runtime.atomic.atomic_write(path, write)``, with a failed write (a full disk, a file size limit) raised as
    one ``OSError`` naming ``path`` (torch reports a failed write as a ``RuntimeError``): nothing is left behind and
    ``path`` stays as it was, so the run stays resumable from its previous checkpoint."""
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as e:
        why = " ".join(str(e).split())[:200]
        raise OSError(
            f"{path}: cannot write it ({type(e).__name__}: {why}; a full disk?); nothing was half-written: "
            f"the checkpoints already there are intact (a run with one continues with --resume)"
        ) from None


def atomic_save(obj, path: Path) -> None:
    _replace_via_tmp(path, lambda tmp: torch.save(obj, tmp))


def write_metrics(out: Path, rows: list[dict]) -> None:
    """``metrics.jsonl``: one JSON line per epoch, written atomically (never a partial line)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def metrics_before(out: Path, epoch: int) -> list[dict]:
    """The rows of ``metrics.jsonl`` up to ``epoch``: the history of a checkpoint written before checkpoints held
    their own (those runs appended a line after each checkpoint)."""
    path = out / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    return [r for r in rows if r["epoch"] <= epoch]


def check_resumable(out: Path, cfg, saved_cfg, saved_data: dict | None, data_sha: dict | None) -> None:
    """Refuse to resume run ``out`` with another config or other data files; the message names the differences."""
    if saved_cfg != cfg:  # keys added since the run started take defaults
        raise ValueError(
            f"{out}: --resume with a different config than the run's own: {'; '.join(saved_cfg.differences(cfg))}"
        )
    if saved_data is not None and saved_data != data_sha:
        changed = sorted(k for k in {*saved_data, *data_sha} if saved_data.get(k) != data_sha.get(k))
        raise ValueError(f"{out}: --resume with different data files than the run was started on: {', '.join(changed)}")


#: a joint is constant when its spread is below this fraction of the data's scale (``check_no_constant_joints``)
CONSTANT_JOINT_RTOL = 1e-4


def check_no_constant_joints(data: PoseSet, cfg: Config) -> None:
    """A joint whose rotation never changes is a degenerate dimension (log p -> inf): it must be masked.

    Spread of joint j: s_j = max over the 3 axis-angle components of their standard deviation over the poses
    (in float64: float32 accumulation alone gives a constant 0.1 rad a std of 3e-6). The data's scale is the
    median s_j over all joints; joint j is constant when s_j <= CONSTANT_JOINT_RTOL * median_k s_k.
    Computed block by block (``train.moments``): the poses are never copied whole.
    """
    spread = column_moments(data.rotations).std().max(axis=1)
    threshold = CONSTANT_JOINT_RTOL * float(np.median(spread))
    constant = [
        JOINT_NAMES[j] for j in range(NUM_JOINTS) if spread[j] <= threshold and JOINT_NAMES[j] not in cfg.masked_joints
    ]
    if constant:
        raise ValueError(
            f"training data: joint(s) {constant} have a constant rotation (a virtual joint?); a flow "
            f"must not be trained on them: add them to the config's masked_joints "
            f"(e.g. --config paper-bandai, or --set 'masked_joints=[\"spine2\"]')"
        )


@torch.no_grad()
def mean_log_prob(flow: PoseFlow, x: torch.Tensor, batch: int = 4096) -> float:
    return float(torch.cat([flow.log_prob(x[i : i + batch]) for i in range(0, len(x), batch)]).double().mean())


#: training sets of up to this many poses are augmented whole for the normalisation statistics (``normalization``),
#: as training always did: every run committed so far (26,592 poses, 53,184 mirrored) retrains bit for bit
NORM_WHOLE = 65536
#: poses per block of the normalisation statistics of a larger set
NORM_BLOCK = 8192
#: poses per block of the 6D conversion (``PoseSet.to_6d``'s chunks: the same numbers)
CONVERT_BLOCK = 32768


def training_poses(train_set: PoseSet, mirror: bool) -> np.ndarray:
    """The 6D training poses (N, 21, 6) float32 that batches index: ``train_set.to_6d()`` (no copy of a
    memory-mapped ``six_d``); with ``mirror`` (2N, 21, 6): the N poses, then their N mirror images
    (``runtime.rotations.mirror_axis_angle``), converted from axis-angle in blocks of ``CONVERT_BLOCK`` poses
    (the blocks of ``PoseSet.to_6d`` on the concatenated set: the same numbers) into a temporary memory-mapped
    file in ``$TMPDIR``, unlinked at once (its pages live as long as the array and are read from disk on
    demand)."""
    if not mirror:
        return train_set.to_6d().numpy()
    rot, n = train_set.rotations, len(train_set)
    folder = tempfile.mkdtemp(prefix="poseprior-mirror-")
    try:
        out = np.lib.format.open_memmap(os.path.join(folder, "x.npy"), "w+", np.float32, (2 * n, NUM_JOINTS, 6))
    finally:
        shutil.rmtree(folder)
    for a in range(0, 2 * n, CONVERT_BLOCK):
        b = min(2 * n, a + CONVERT_BLOCK)
        aa = np.concatenate([rot[a : min(b, n)], mirror_axis_angle(rot[max(a, n) - n : max(b, n) - n])])
        out[a:b] = axis_angle_to_6d(torch.from_numpy(aa).double()).float().numpy()
    return out


@torch.no_grad()
def normalization(
    flow: PoseFlow,
    x: torch.Tensor,
    aug: Augmentation,
    generator: torch.Generator,
    whole: int = NORM_WHOLE,
    block: int = NORM_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow's normalisation: mean and standard deviation (n - 1) of ``flow.to_vec(aug(x))`` over the training
    poses ``x`` (N, 21, 6). Up to ``whole`` poses: the set augmented as a whole from ``generator``, torch's float32
    mean and std of it (what training always computed). More: ``ceil(N / block)`` equal blocks in order, each
    augmented as a whole from ``generator`` (part mixing takes its donors within the block), their float64
    moments combined exactly (``train.moments.Moments``); memory is one block's augmentation, not the set's."""
    if len(x) <= whole:
        v = flow.to_vec(aug(x, generator))
        return v.mean(0), v.std(0)
    m = Moments()
    for s in blocks(len(x), block):
        m.add(flow.to_vec(aug(x[s], generator)).double().numpy())
    return torch.from_numpy(m.mean).float(), torch.from_numpy(m.std(ddof=1)).float()


def data_checksums(train_set: PoseSet, val_set: PoseSet) -> dict:
    """sha256 of the data files, keyed by "<folder>/<file>" so the record names the data set without the build
    machine's paths."""
    return {"/".join(Path(k).parts[-2:]): v for k, v in sorted({**train_set.files, **val_set.files}.items())}


@dataclass(frozen=True)
class Run:
    """What one run trains: its directory ``out`` (``config.json``, ``metrics.jsonl``, ``best.pt``, ``last.pt``),
    config ``cfg`` (a ``Config`` or a baseline's), ``model`` and its optimizer ``opt``, the seeded generator
    ``gen`` that draws every permutation and batch noise, the data's checksums and the number ``n`` of
    training poses; ``extra_ckpt``: more entries for every checkpoint (the flow's noisy joints)."""

    out: Path
    cfg: Any
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    data_sha: dict
    n: int
    extra_ckpt: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """How a model learns and is scored. ``batch_loss(indices, shard)`` draws the noise of the whole batch
    ``indices`` from ``Run.gen`` and returns the mean loss over positions ``shard`` of it (the whole batch with one
    process, this rank's slice with several: ``train.distributed``); ``validate()`` -> metric fields, of which
    field ``score`` is better when higher (``higher_is_better``) or lower; ``train_field = (name, sign)``: each
    metrics line holds name = sign * the epoch's mean batch loss."""

    batch_loss: Callable[[torch.Tensor, slice], torch.Tensor]
    validate: Callable[[], dict]
    score: str
    higher_is_better: bool
    train_field: tuple[str, float]


@dataclass(frozen=True)
class Limits:
    """How a run starts and when it stops besides ``cfg.epochs``: ``resume`` from ``last.pt``; ``max_steps``
    optimiser steps, ``max_minutes`` (checked at epoch boundaries); ``early_stopping`` after ``cfg.patience`` epochs
    without a better score (False: every epoch counts as the best, so all ``cfg.epochs`` run and ``best.pt`` is the
    last); ``progress``: a bar within each epoch and one line per epoch."""

    resume: bool = False
    max_steps: int | None = None
    max_minutes: float | None = None
    early_stopping: bool = True
    progress: bool = True


def fresh_state(higher_is_better: bool) -> dict:
    """The state of a run before its first epoch."""
    return {
        "epoch": 0,
        "step": 0,
        "best_val": -math.inf if higher_is_better else math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "seconds": 0.0,
        "best": {},
    }


def start(run: Run, objective: Objective, resume: bool) -> tuple[dict, list[dict]]:
    """(state, metrics history) to continue from: the run's ``last.pt`` when resuming (weights, optimizer, RNG
    states restored), else a fresh state; a fresh run writes ``config.json`` and an empty ``metrics.jsonl``. A run
    killed before its first checkpoint starts again from scratch (it is seeded: the same run). Refuses to resume
    with another config or other data (``check_resumable``)."""
    out, cfg = run.out, run.cfg
    state, history = fresh_state(objective.higher_is_better), []
    if resume and (out / "last.pt").is_file():
        ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        check_resumable(out, cfg, type(cfg).from_dict(ckpt["config"]), ckpt["data_sha256"], run.data_sha)
        run.model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = {"best": {}, **ckpt["state"]}
        history = ckpt["metrics"] if "metrics" in ckpt else metrics_before(out, state["epoch"])
    elif resume:
        if not (out / "config.json").is_file():
            raise ValueError(f"{out}: nothing to resume (no config.json, no last.pt)")
        check_resumable(out, cfg, type(cfg).from_dict(json.loads((out / "config.json").read_text())), None, None)
    elif distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    if distributed.is_main():
        write_metrics(out, history)
    return state, history


def stop_reason(cfg, state: dict, limits: Limits, deadline: float | None) -> str | None:
    """Why the run stops before its next epoch (``early_stopping``, ``max_steps``, ``max_minutes``), or None. The
    clock is rank 0's, so every rank stops together."""
    if state["bad_epochs"] >= cfg.patience:
        return "early_stopping"
    if limits.max_steps is not None and state["step"] >= limits.max_steps:
        return "max_steps"
    if deadline is not None and distributed.from_main(lambda: time.monotonic() > deadline):
        return "max_minutes"
    return None


def train_epoch(run: Run, step: Callable, state: dict, limits: Limits, progress: bool) -> tuple[float, int]:
    """One epoch of Adam steps over a permutation of the ``n`` poses drawn from ``run.gen``, each on
    ``step(indices, shard)`` (the objective's batch loss, through DDP with several ranks), gradients clipped at
    ``cfg.grad_clip``; stops early at ``limits.max_steps``. Returns (this rank's sum of shard-weighted losses,
    the poses seen); a non-finite loss raises FloatingPointError."""
    cfg, model, opt = run.cfg, run.model, run.opt
    model.train()
    distributed.rank_seed(cfg.seed, state["epoch"])
    perm = torch.randperm(run.n, generator=run.gen)
    total, count = 0.0, 0
    steps = math.ceil(run.n / cfg.batch_size)
    bar = tqdm(range(steps), desc=f"epoch {state['epoch'] + 1}", disable=not progress, leave=False)
    for i in bar:
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        shard = distributed.shard(len(idx))
        n_shard = len(range(len(idx))[shard])
        loss = step(idx, shard)
        if n_shard and not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss {loss.item()} at step {state['step']}")
        opt.zero_grad(set_to_none=True)
        distributed.weighted(loss, n_shard, len(idx)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] += 1
        total += loss.item() * n_shard if n_shard else 0.0
        count += len(idx)
        bar.set_postfix(loss=f"{total / count:.4f}")
        if limits.max_steps is not None and state["step"] >= limits.max_steps:
            break
    return total, count


def score_epoch(objective: Objective, limits: Limits, state: dict) -> tuple[dict, bool]:
    """Validate (rank 0, broadcast), count the epoch, and update the best score or the epochs without one;
    returns (the validation fields, whether this epoch is the new best)."""
    val = distributed.from_main(objective.validate)
    state["epoch"] += 1
    better = (
        val[objective.score] > state["best_val"]
        if objective.higher_is_better
        else val[objective.score] < state["best_val"]
    )
    improved = not limits.early_stopping or better
    if improved:
        state.update(best_val=val[objective.score], best_epoch=state["epoch"], bad_epochs=0, best=val)
    else:
        state["bad_epochs"] += 1
    return val, improved


def checkpoint(run: Run, state: dict, history: list[dict]) -> dict:
    """``last.pt``'s contents: everything ``start`` needs to resume the run exactly."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "rng": run.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": asdict(run.cfg),
        "config_sha256": run.cfg.sha256(),
        "data_sha256": run.data_sha,
        **run.extra_ckpt,
        "state": dict(state),
        "metrics": history,
    }


def save_epoch(run: Run, state: dict, history: list[dict], improved: bool) -> None:
    """``best.pt`` (when ``improved``), ``last.pt`` and ``metrics.jsonl``, each written atomically, by rank 0 alone.
    Every state between two of these writes resumes to the same run: a ``best.pt`` of an epoch that ``last.pt``
    does not hold yet is rewritten when that epoch runs again; ``metrics.jsonl`` is rewritten from ``last.pt``'s
    history on resume."""
    if not distributed.is_main():
        return
    ckpt = checkpoint(run, state, history)
    if improved:
        atomic_save(model_only(ckpt), run.out / "best.pt")
    atomic_save(ckpt, run.out / "last.pt")
    write_metrics(run.out, history)


def run_epochs(run: Run, objective: Objective, limits: Limits = Limits()) -> tuple[dict, str]:
    """The one training loop (the flow's and the VPoser baseline's): ``start`` (fresh or resumed), then epochs
    until ``cfg.epochs`` or a ``stop_reason``: ``train_epoch``, ``score_epoch``, one ``metrics.jsonl`` line
    (epoch, step, the train field, the validation fields, lr, seconds, train_poses_per_s), ``save_epoch``, and with
    ``progress`` one printed line. Returns (state, stop reason). Several ranks (torchrun): rank 0 alone writes
    ``out``; validation and the time limit are rank 0's."""
    t_start = time.monotonic()
    state, history = start(run, objective, limits.resume)
    deadline = None if limits.max_minutes is None else t_start + 60.0 * limits.max_minutes
    step = distributed.parallel(run.model, objective.batch_loss)
    progress = limits.progress and distributed.is_main()
    reason = "epochs"
    while state["epoch"] < run.cfg.epochs:
        if (why := stop_reason(run.cfg, state, limits, deadline)) is not None:
            reason = why
            break
        t0 = time.monotonic()
        total, count = train_epoch(run, step, state, limits, progress)
        train_seconds = time.monotonic() - t0
        total = distributed.all_sum(total)
        run.model.eval()
        val, improved = score_epoch(objective, limits, state)
        seconds = time.monotonic() - t0
        state["seconds"] += seconds
        name, sign = objective.train_field
        row = {
            "epoch": state["epoch"],
            "step": state["step"],
            name: sign * total / count,
            **val,
            "lr": run.opt.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "train_poses_per_s": round(count / train_seconds, 1),
        }
        history.append(row)
        save_epoch(run, state, history, improved)
        if progress:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k == name or k in val)
            tqdm.write(f"epoch {row['epoch']:3d}  {shown}{'  *' if improved else ''}  ({seconds:.1f} s)")
    return state, reason


def train(
    cfg: Config,
    train_set: PoseSet,
    val_set: PoseSet,
    out: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict:
    """Train a flow into run directory ``out``; returns a summary dict (also written to ``summary.json``)."""
    out = Path(out)
    data_sha = data_checksums(train_set, val_set)
    check_no_constant_joints(train_set, cfg)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    # the poses batches index: a set's six_d as it is (the ingest cache's memory map, with several ranks the one
    # copy per machine that distributed.shared_dataset maps); else built once per machine (memory-mapped there)
    if train_set.six_d is not None and not cfg.mirror:
        x_train = torch.from_numpy(train_set.six_d)
    else:
        x_train = torch.from_numpy(
            distributed.per_machine(lambda: {"x_train": training_poses(train_set, cfg.mirror)})["x_train"]
        )
    vgen = torch.Generator().manual_seed(cfg.val_seed)
    x_val = val_set.to_6d()
    if len(x_val) > cfg.max_val:
        x_val = x_val[torch.randperm(len(x_val), generator=vgen)[: cfg.max_val]]
    noisy = [n for n in degenerate_joints(train_set.rotations) if n not in cfg.masked_joints] if cfg.joint_noise else []
    aug = Augmentation(
        cfg.alpha,
        cfg.beta,
        cfg.noise,
        cfg.joint_noise,
        tuple(noisy),
        tuple((j, tuple(map(float, s))) for j, s in cfg.widen.items()),
        cfg.part_mix,
    )
    x_val = aug(x_val, vgen)

    flow = build_flow(cfg)
    if cfg.normalize and distributed.is_main():  # other ranks receive it with the weights (DDP's first broadcast)
        norm_gen = torch.Generator().manual_seed(cfg.seed + 1)
        flow.set_moments(*normalization(flow, x_train, aug, norm_gen))
    dev = distributed.device()
    flow.to(dev)
    x_val = x_val.to(dev)
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state, stop_reason = run_epochs(
        Run(out, cfg, flow, opt, gen, data_sha, len(x_train), {"noisy_joints": noisy}),
        Objective(
            batch_loss=lambda idx, shard: -flow.log_prob(aug(x_train[idx], gen)[shard].to(dev)).mean(),
            validate=lambda: {"val_log_p": mean_log_prob(flow, x_val)},
            score="val_log_p",
            higher_is_better=True,
            train_field=("train_log_p", -1.0),
        ),
        Limits(resume, max_steps, max_minutes, cfg.early_stopping, progress),
    )
    summary = {
        "stop_reason": stop_reason,
        "epochs": state["epoch"],
        "steps": state["step"],
        "best_epoch": state["best_epoch"],
        "best_val_log_p": state["best_val"],
        "train_seconds": round(state["seconds"], 1),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "config_sha256": cfg.sha256(),
        "data_sha256": data_sha,
        "noisy_joints": noisy,
        "skeleton": train_set.skeleton,
    }
    if distributed.is_main():
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
