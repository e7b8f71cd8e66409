"""Data-parallel training on ``torch.distributed`` (launched by ``torchrun``; gloo on CPU, NCCL on CUDA).

Scheme (exact with respect to one process, up to the order of floating-point sums):

* every rank draws the WHOLE global batch from the shared seeded generator (permutation and augmentation noise:
  all ranks hold the same generator state, so the draws are identical and each pose's noise is that of its
  position in the global batch, never of the rank), then keeps only its contiguous slice ``shard(B)``:
  rank r of W keeps positions ``[r B // W, (r + 1) B // W)``;
* rank r's loss is its shard mean weighted by ``w_r = W n_r / B`` (``n_r`` its shard size), so DDP's gradient
  average ``(1/W) sum_r w_r grad(mean_r) = (1/B) grad(sum of the B per-pose losses)`` is the one-process mean,
  also when B does not divide by W (``weighted``);
* validation runs on rank 0 and is broadcast (``from_main``), so every rank takes the same early-stopping and
  time-limit decision; rank 0 alone writes the run directory (``is_main``);
* the data set and the training array are built once per machine by local rank 0, saved as ``.npy`` in a
  temporary folder and memory-mapped by every rank of that machine (``per_machine``, ``shared_dataset``); their
  pages are shared through the page cache and read on demand, so an array larger than memory streams from disk.

With one process and no ``torchrun`` nothing here does anything: training is bit-identical to before.
Under ``torchrun`` the process group is created by ``init`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); the device is ``cuda:LOCAL_RANK`` with NCCL when CUDA is
present, else the CPU with gloo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
TIMEOUT = timedelta(minutes=60)  # a collective waits this long for a rank (local rank 0 loading a large data set)


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (torch.distributed.run) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def init() -> None:
    """Join the process group torchrun set up (idempotent; a no-op outside torchrun). Backend NCCL with device
    ``cuda:LOCAL_RANK`` when CUDA is available, else gloo on the CPU; collectives time out after ``TIMEOUT``."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    signal.signal(signal.SIGTERM, _stopped)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", int(os.environ["LOCAL_RANK"])))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)


def _stopped(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: torchrun stops every rank when one fails (or the job was cancelled). Say so in one
    line, then unwind as an exit (the CLI removes a fresh run directory that has no checkpoint yet)."""
    print(
        f"error: rank {rank()} of {world()}: stopped by SIGTERM (torchrun stops every rank when one fails; its "
        f"report names the rank that failed first); --resume continues from the last finished epoch",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(128 + signum)


def teardown() -> None:
    """Leave the process group: a barrier first, so that no rank destroys it while another still has a
    collective in flight, then ``destroy_process_group``. Without the barrier a gloo worker thread sometimes
    outlived its work and the process aborted at exit ("terminate called without an active exception", 1 in
    5-20 two-process runs of ``tests/ddp_grad_worker.py``), after a run that had succeeded."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes the run directory and prints progress."""
    return rank() == 0


def device() -> torch.device:
    """Where this rank trains: ``cuda:LOCAL_RANK`` in an NCCL group, else the CPU (also without torchrun)."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(n: int) -> slice:
    """This rank's contiguous slice of a global batch of ``n``: ``[r n // W, (r + 1) n // W)``."""
    r, w = rank(), world()
    return slice(r * n // w, (r + 1) * n // w)


def weighted(loss: torch.Tensor, n_shard: int, n: int) -> torch.Tensor:
    """A rank's shard-mean ``loss`` times ``W n_shard / n``, so that DDP's gradient average is the gradient of the
    mean over the whole global batch of ``n``; an empty shard (``n < W``) contributes zero. ``loss`` itself with
    one process."""
    if world() == 1:
        return loss
    return loss.nan_to_num() * (world() * n_shard / n)


def all_sum(x: float) -> float:
    """Sum of ``x`` over all ranks (float64)."""
    if world() == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return float(t.item())


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 only and broadcast (pickled) to every rank."""
    if world() == 1:
        return fn()
    box = [fn() if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=device())
    return box[0]


def rank_seed(seed: int, epoch: int) -> None:
    """With several ranks, seed torch's global RNG (dropout of the VPoser baseline; the flow does not use it) from
    (seed, epoch, rank): the ranks' streams differ and a resumed run draws the same ones, with any number of
    processes. A no-op with one process, whose global RNG state is saved in and restored from ``last.pt``."""
    if world() > 1:
        torch.manual_seed((seed * 1_000_003 + epoch) * 65_537 + rank())


class _Step(nn.Module):
    """``fn(*args)`` as the forward of a module owning ``model``'s parameters, so DDP sees the call."""

    def __init__(self, model: nn.Module, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Any) -> torch.Tensor:
        return self.fn(*args)


def parallel(model: nn.Module, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` (a batch loss on ``model``) run through DistributedDataParallel with several ranks, so backward
    all-reduces (averages) the gradients; ``fn`` itself with one process. The module's parameters and buffers
    are broadcast from rank 0 once, here; buffers are not re-broadcast at every step (they are fixed)."""
    if world() == 1:
        return fn
    return nn.parallel.DistributedDataParallel(_Step(model, fn), forward_sync_buffers=False)


def per_machine(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``make()`` (names -> numpy arrays or JSON values) evaluated once per machine, by local rank 0; every rank
    of the machine gets the arrays memory-mapped from one ``.npy`` file each and the other values from JSON.

    The files are written to ``$TMPDIR/poseprior-<job id>-<machine>/`` and unlinked as soon as every rank has mapped them
    (the mappings keep them alive; nothing is left behind). Mapped copy-on-write: writable for numpy and torch,
    shared through the page cache until written, read from disk on demand (an array larger than memory streams).
    With one process: ``make()`` itself."""
    if world() == 1:
        return make()
    job = from_main(lambda: uuid.uuid4().hex)  # GROUP_RANK (torchrun's machine index): a $TMPDIR shared by machines
    folder = Path(tempfile.gettempdir()) / f"poseprior-{job}-{os.environ.get('GROUP_RANK', '0')}"
    if local_rank() == 0:
        values = make()
        folder.mkdir(parents=True)
        for name, v in values.items():
            if isinstance(v, np.ndarray):
                with open(folder / f"{name}.tmp", "wb") as f:
                    np.save(f, np.ascontiguousarray(v))
                os.replace(folder / f"{name}.tmp", folder / f"{name}.npy")
        meta = {k: v for k, v in values.items() if not isinstance(v, np.ndarray)}
        (folder / "values.tmp").write_text(json.dumps(meta))
        os.replace(folder / "values.tmp", folder / "values.json")
        del values
    barrier()
    out = {p.stem: np.load(p, mmap_mode="c") for p in folder.glob("*.npy")}
    out.update(json.loads((folder / "values.json").read_text()))
    barrier()
    if local_rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def shared_dataset(load: Callable[[], dict]) -> dict:
    """``load()`` (split -> ``PoseSet``, e.g. ``data.load_dataset``) run once per machine (``per_machine``): the
    other ranks neither parse nor checksum the files, and every rank's pose arrays are the one mapped copy."""
    if world() == 1:
        return load()
    from .data import PoseSet

    names = [f.name for f in dataclasses.fields(PoseSet)]
    flat = per_machine(lambda: {f"{split}.{n}": getattr(ps, n) for split, ps in load().items() for n in names})
    splits = sorted({k.split(".", 1)[0] for k in flat})
    return {s: PoseSet(**{n: flat[f"{s}.{n}"] for n in names}) for s in splits}


def lost_peer(e: BaseException) -> str | None:
    """A one-line message when ``e`` is a collective that failed because another rank of the run died or hung up
    (several ranks only); None for any other error."""
    text = str(e)
    if (
        world() == 1
        or not isinstance(e, RuntimeError)
        or not (
            isinstance(e, dist.DistError)
            or any(k in text for k in ("gloo", "NCCL", "Connection reset", "Connection closed"))
        )
    ):
        return None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return (
        f"rank {rank()} of {world()}: another rank of the run stopped ({type(e).__name__}: {first[:200]}); "
        f"torchrun stops the others and reports which rank failed first"
    )


def launch(nproc: int, argv: list[str]) -> int:
    """``torchrun --standalone --nproc-per-node NPROC -m train.cli train ARGV...`` (one machine); its exit code.
    torchrun sets OMP_NUM_THREADS=1 in every worker unless it is already set."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "train.cli",
        "train",
        *argv,
    ]
    return subprocess.call(cmd)
