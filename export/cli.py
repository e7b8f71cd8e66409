"""The torch commands of ``poseprior``, in the top layer: ``train.cli``'s (``train``, ``evaluate``, ``fit-bench``)
plus ``export`` and ``bench``, which need this package.

``runtime.cli`` (the ``poseprior`` command, torch-free) imports ``main`` here only when one of these is invoked;
a new command must also be listed in ``runtime.cli.TORCH_COMMANDS``. Every user error exits with code 2 and one
line naming the argument or file (``runtime.cli.fail``).
"""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli import check_out, hold_out
from runtime.cli import fail as _fail
from train.cli import main as train_commands

from .bench import main as bench
from .exporter import export_model

main = click.Group(commands=dict(train_commands.commands), help=train_commands.help)


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Model directory to write (an existing model directory there is replaced).",
)
@click.option(
    "--which",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Checkpoint of the run to export.",
)
@click.option("--onnx-only", is_flag=True, help="Only what the runtime reads (no .pt2 / TorchScript): for shipping.")
def export_command(run_dir, out, which, onnx_only):
    """Export a trained flow: ONNX graphs + shared weights + manifest (and .pt2, TorchScript) for the runtime."""
    check_out(out)
    hold_out(out, "export")
    try:
        manifest = export_model(run_dir, out, which, torch_artifacts=not onnx_only)
    except (OSError, ValueError) as e:
        _fail(str(e))
    for name, f in manifest["files"].items():
        click.echo(f"{f['bytes'] / 1e6:9.3f} MB  {name}")
    t = manifest["training"]
    click.echo(
        f"exported {run_dir}/{which}.pt (epoch {t['epoch']}, val log p {t['val_log_p']}) to {out} "
        f"in {manifest['export_seconds']} s"
    )


@main.command("bench")
@click.argument("model_dir", required=False, type=click.Path(path_type=Path))
@click.option("--reps", type=int, default=20, show_default=True, help="Timed calls per cell (after warm-up).")
@click.option("--threads", type=int, default=None, help="Threads for onnxruntime and torch (default: all cores).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON.")
def bench_command(model_dir, reps, threads, out):
    """Median latency of every graph at batch 1, 64, 4096: onnxruntime vs torch eager (default model if none)."""
    if reps < 1 or (threads is not None and threads < 1):
        _fail("--reps and --threads must be at least 1")
    if out is not None:
        check_out(out.parent, "--out")
    try:
        bench(model_dir, out=out, reps=reps, threads=threads)
    except (OSError, ValueError) as e:
        _fail(str(e))
