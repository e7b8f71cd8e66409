"""``poseprior``: the command line (click). Each subcommand is a thin shell over a module."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import click


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Neural human pose prior: train, export, evaluate."""


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with train and val splits (train.npz/val.npz, or train/ and val/ folders of AMASS npz or BVH).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to create (or resume).")
@click.option("--config", "config_spec", default=None, help="Preset name (paper, tiny) or JSON file of overrides.")
@click.option("--epochs", type=int, default=None, help="Override the config's epoch limit.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps.")
@click.option("--max-minutes", type=float, default=None, help="Stop (at an epoch boundary) after this many minutes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value (JSON value).")
@click.option("--fps", type=float, default=None, help="Subsample AMASS/BVH sources to this frame rate.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data_dir, out, config_spec, epochs, max_steps, max_minutes, resume, overrides, fps, quiet):
    """Train the RealNVP pose prior."""
    from .config import Config, load_config
    from .data import DataError, load_dataset
    from .trainer import train as run_training

    try:
        if resume:
            if not (out / "last.pt").is_file():
                _fail(f"{out}: nothing to resume (no last.pt)")
            cfg = Config.from_dict(json.loads((out / "config.json").read_text()))
        else:
            cfg = load_config(config_spec)
            for kv in overrides:
                key, _, value = kv.partition("=")
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError:
                    parsed = value
                cfg = Config.from_dict({**dataclasses.asdict(cfg), key: parsed})
            if epochs is not None:
                cfg.epochs = epochs
            if out.exists() and any(out.iterdir()):
                _fail(f"{out}: run directory exists and is not empty (use --resume, or another --out)")
        data = load_dataset(data_dir, fps=fps)
    except (DataError, ValueError) as e:
        _fail(str(e))
    click.echo(f"train {len(data['train'])} poses, val {len(data['val'])} poses; config sha256 {cfg.sha256()[:12]}")
    fresh = not resume
    try:
        summary = run_training(cfg, data["train"], data["val"], out, resume=resume, max_steps=max_steps,
                               max_minutes=max_minutes, progress=not quiet)
    except BaseException as e:
        # a fresh run that never wrote a checkpoint is not a run: leave nothing behind that looks like one
        if fresh and not (out / "best.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, (ValueError, FloatingPointError)):
            _fail(str(e))
        raise
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
