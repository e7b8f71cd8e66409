"""``poseprior``: the command line. Torch-free: the plain install (``pip install .``) runs it.

The group holds the torch-free commands directly (``demo``, ``convert``; add one with ``@main.command()`` here). The
commands that need torch (``train``, ``export``, ``evaluate``, ...) live in ``train/cli.py`` and are listed in
``TORCH_COMMANDS`` with their one-line help: ``poseprior --help`` shows them without importing torch, and
``train.cli`` is imported only when one of them is invoked. Without the training extra that import fails and the
command says in one line what to install, exit code 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

#: what the torch commands need; ``import train`` / ``import export`` without it raise ImportError with this hint
TRAIN_EXTRA_HINT = "needs the training extra (torch): pip install 'poseprior[train]'"
#: the distributions of the training extra (an ImportError naming one of them means: the extra is missing)
TRAIN_EXTRA_MODULES = ("torch", "scipy", "tqdm", "onnx", "onnxscript", "matplotlib")

#: commands of ``train.cli.main``, name -> one-line help (tests/test_cli.py checks it against train.cli)
TORCH_COMMANDS = {
    "train": "Train the RealNVP pose prior (or, with --model, a baseline).",
    "export": "Export a trained flow: ONNX graphs + shared weights + manifest (and .pt2, TorchScript).",
    "evaluate": "Evaluate an exported flow and the baselines: KS, FID, APD, NN distance, figures.",
    "fit-bench": "Downstream fitting benchmark: part completion, sparse-effector IK, denoising.",
    "sweep": "Ablations + hyper-parameter sweep judged on validation.",
    "bench": "Median latency of every graph: onnxruntime vs torch eager.",
}


def fail(msg: str) -> None:
    """A user error: one line on stderr, exit code 2 (every command's way to refuse its input)."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def check_out(path: Path, option: str = "--out") -> None:
    """Refuse an output directory that is a file, or lies below one (exit 2, naming ``option``)."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                fail(f"{option} {path}: {'it' if p == path else p} is a file, not a directory")
            return


def missing_train_extra(e: ImportError) -> bool:
    """Whether ``e`` is the training extra being absent (not a bug inside the package)."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    return name in TRAIN_EXTRA_MODULES or TRAIN_EXTRA_HINT in str(e)


class PosePriorGroup(click.Group):
    """A click group whose torch commands are imported from ``train.cli`` only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *TORCH_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in TORCH_COMMANDS:
            return super().get_command(ctx, name)
        try:
            from train.cli import main as torch_commands
        except ImportError as e:
            if not missing_train_extra(e):
                raise
            fail(f"poseprior {name} {TRAIN_EXTRA_HINT}")
        return torch_commands.get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, TORCH_COMMANDS[name] if name in TORCH_COMMANDS else
                 super(PosePriorGroup, self).get_command(ctx, name).get_short_help_str(80))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=PosePriorGroup)
def main() -> None:
    """Neural human pose prior: demo, convert (torch-free); train, export, evaluate, ... (need poseprior[train])."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo(args: tuple[str, ...]) -> None:
    """Run the shipped default model: sample, score real and corrupted poses, write demo.png (--help: options)."""
    from . import demo as demo_module
    from .prior import ModelError

    try:
        demo_module.main(list(args))
    except (ModelError, ValueError, OSError) as e:
        fail(str(e))


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(["smpl"]), default="smpl", show_default=True,
              help="Target convention: SMPL body_pose (runtime.convert).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="AMASS-style .npz to write.")
@click.option("--skeleton", type=click.Path(path_type=Path), default=None,
              help="The .asf of an .amc take (default: found beside it).")
@click.option("--rest", type=click.Path(path_type=Path), default=None,
              help="SMPL rest joints: a model directory or an .npz with rest_joints (default: the shipped model's).")
@click.option("--fps", type=float, default=None, help="Subsample to about this frame rate.")
def convert(src: Path, target: str, out: Path, skeleton: Path | None, rest: Path | None, fps: float | None) -> None:
    """Convert a take (BVH, ASF/AMC, shared npz, AMASS) to SMPL body_pose: an AMASS-style npz."""
    from .convert import convert as convert_take, load_rest_joints
    from .formats import FormatError

    if out.suffix != ".npz":
        fail(f"--out {out}: the output is an .npz file")
    if out.is_dir() or not out.parent.is_dir():
        fail(f"--out {out}: {'is a directory' if out.is_dir() else f'folder {out.parent} does not exist'}")
    if fps is not None and not fps > 0:
        fail(f"--fps {fps}: must be a positive number")
    try:
        summary = convert_take(src, out, load_rest_joints(rest), skeleton, fps)
    except (FormatError, ValueError, OSError) as e:
        fail(str(e))
    click.echo(f"{summary['source']}: {summary['takes']} take(s), {summary['frames']} frames at "
               f"{summary['fps']:.1f} fps -> {out} (SMPL body_pose, conversion {summary['conversion']})")


if __name__ == "__main__":
    main()
