"""The training-side torch commands of ``poseprior`` (click): ``train``, ``evaluate``, ``fit-bench``. Each
subcommand is a thin shell over a module.

The ``poseprior`` command is ``runtime.cli.main`` (torch-free), which loads the torch commands from
``export.cli.main`` (these plus ``export`` and ``bench``) only when one is invoked; a new command here must also be
listed in ``runtime.cli.TORCH_COMMANDS``. Every user error exits with code 2 and one line naming the argument or file
(``runtime.cli.fail``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import click

from runtime.atomic import is_partial
from runtime.cli import check_out
from runtime.cli import fail as _fail
from runtime.cli import hold_out as _hold


@click.group()
def main() -> None:
    """Neural human pose prior: the commands that need torch (run them through ``poseprior``)."""


def _overridden(cfg, overrides: tuple[str, ...], epochs: int | None):
    """``cfg`` with every ``--set KEY=VALUE`` (VALUE parsed as JSON, else taken as a string) and ``--epochs``
    applied; exit 2 naming the first bad one."""
    for kv in overrides:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            _fail(f"--set {kv!r}: expected KEY=VALUE (e.g. --set lr=0.001)")
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            parsed = value
        try:
            cfg = type(cfg).from_dict({**dataclasses.asdict(cfg), key: parsed})
        except (TypeError, ValueError) as e:
            _fail(f"--set {kv}: {e}")
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    return cfg


def _leftovers(out: Path) -> list[Path]:
    """What ``out`` holds besides the partial files of atomic writes a kill interrupted (``runtime.atomic``'s, and
    the ``*.tmp`` of the trainer's checkpoint writes)."""
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if not (p.is_file() and (p.suffix == ".tmp" or is_partial(p)))]


@main.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Takes to train on (repeatable): folders (searched recursively) and files of any format "
    "poseprior convert reads (BVH, ASF/AMC, AMASS/SMPL-H/SMPL-X npz, shared npz), mixed; or one "
    "folder with train and val splits (train.npz/val.npz or train/, val/ of npz files), used as split.",
)
@click.option(
    "--val",
    "val_dir",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Validation takes (repeatable; folders or files): no split of --data then.",
)
@click.option(
    "--map",
    "map_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Joint map {SMPL joint: source joint} (JSON) for takes of a rig poseprior does not know.",
)
@click.option(
    "--cache",
    "cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Cache folder of converted takes (default $POSEPRIOR_CACHE or ~/.cache/poseprior).",
)
@click.option("--skip-bad", is_flag=True, help="Leave out takes that cannot be read (each named in one line).")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Processes converting takes (default: one per core)."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to create (or resume).")
@click.option(
    "--model",
    type=click.Choice(["flow", "vposer", "gmm"]),
    default=None,
    help="flow (default): the RealNVP prior; vposer, gmm: baselines (docs/design.md §5; --resume: the run's own).",
)
@click.option(
    "--config", "config_spec", default=None, help="Preset name of the model (paper, tiny) or JSON file of overrides."
)
@click.option("--epochs", type=int, default=None, help="Override the config's epoch limit.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimiser steps.")
@click.option("--max-minutes", type=float, default=None, help="Stop (at an epoch boundary) after this many minutes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value (JSON value).")
@click.option("--fps", type=float, default=None, help="Subsample AMASS/BVH sources to this frame rate.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=None,
    help="Data-parallel processes on this machine: runs torchrun --standalone --nproc-per-node N "
    "-m train.cli train (the other options); see docs/training.md, 'Training on several GPUs / machines'.",
)
def train(
    data_dir,
    val_dir,
    map_file,
    cache,
    skip_bad,
    jobs,
    out,
    model,
    config_spec,
    epochs,
    max_steps,
    max_minutes,
    resume,
    overrides,
    fps,
    quiet,
    nproc,
):
    """Train the RealNVP pose prior (or, with --model, a baseline)."""
    from runtime.formats import FormatError
    from runtime.formats.joint_maps import load_joint_map

    from . import config, distributed, gmm, ingest, trainer, vposer
    from .data import DataError, is_split_layout, load_dataset

    distributed.init()  # under torchrun: join the process group (a no-op otherwise)

    # --model: (config class, preset/JSON loader, training function); a run's config.json names its model
    models = {
        "flow": (config.Config, config.load_config, trainer.train),
        "vposer": (vposer.VPoserConfig, vposer.load_config, vposer.train_vposer),
        "gmm": (gmm.GMMConfig, gmm.load_config, gmm.fit_gmm),
    }
    for name, value, least in (("--epochs", epochs, 1), ("--max-steps", max_steps, 1)):
        if value is not None and value < least:
            _fail(f"{name} {value}: must be at least {least}")
    if max_minutes is not None and not max_minutes > 0:
        _fail(f"--max-minutes {max_minutes}: must be > 0")
    check_out(out)
    if nproc is None and distributed.is_main():  # one run per --out, for the run's whole life (rank 0 writes it)
        _hold(out, "train")
    try:
        if resume:
            if not (out / "config.json").is_file():
                _fail(f"--out {out}: nothing to resume (no config.json); start it without --resume")
            try:
                saved = json.loads((out / "config.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                _fail(f"{out / 'config.json'}: unreadable ({type(e).__name__}: {e})")
            if not isinstance(saved, dict) or saved.get("model", "flow") not in models:
                _fail(f"{out / 'config.json'}: not the config of a poseprior run")
            if model not in (None, saved.get("model", "flow")):
                _fail(f"{out}: --model {model}, but the run to resume is a {saved.get('model', 'flow')} run")
            model = saved.get("model", "flow")
            cfg = models[model][0].from_dict(saved)
            # what was given must be what the run was started with: a resumed run continues the same run
            given = _overridden(models[model][1](config_spec) if config_spec else cfg, overrides, epochs)
            changed = cfg.differences(given)
            if changed:
                _fail(
                    f"--resume: the arguments given differ from {out / 'config.json'}: {'; '.join(changed)} "
                    f"(leave them out to continue the run as it was, or train a new run into another --out)"
                )
        else:
            model = model or "flow"
            if model == "gmm" and (epochs, max_steps, max_minutes) != (None, None, None):
                _fail("--epochs, --max-steps and --max-minutes do not apply to --model gmm (EM: set max_iter, tol)")
            cfg = _overridden(models[model][1](config_spec), overrides, epochs)
            if _leftovers(out):
                _fail(f"--out {out}: run directory exists and is not empty (use --resume, or another --out)")
        if model == "gmm" and max(nproc or 1, distributed.world()) > 1:
            _fail("--model gmm fits in one process (EM); it takes no --nproc / torchrun")
        if nproc is not None and distributed.launched_by_torchrun():
            _fail("--nproc starts torchrun itself; under torchrun, give torchrun --nproc-per-node instead")
        if nproc is not None:  # the arguments are checked: start the workers, which run this command again
            sys.exit(distributed.launch(nproc, _without_nproc(sys.argv)))
        if fps is not None and not fps > 0:
            _fail(f"--fps {fps}: must be a positive number")
        joint_map = load_joint_map(map_file) if map_file is not None else None
        distributed.barrier()  # every rank has checked --out before rank 0 creates it
        record: dict = {}
        if len(data_dir) == 1 and not val_dir and joint_map is None and is_split_layout(data_dir[0]):
            how = f"{data_dir[0]}: its train and val splits, as given"
            data = distributed.shared_dataset(lambda: load_dataset(data_dir[0], fps=fps))  # once per machine
        else:

            def load():
                sets, rec = ingest.load_takes(
                    list(data_dir),
                    list(val_dir) or None,
                    cache,
                    fps,
                    joint_map,
                    jobs,
                    skip_bad,
                    progress=not quiet,
                    log=lambda m: click.echo(m, err=True),
                )
                record.update(rec)
                return sets

            data = distributed.shared_dataset(load)  # converted once per machine
            how = f"{len(record.get('sources', []))} take files, split {record.get('split')}"
    except (DataError, FormatError, ValueError) as e:
        _fail(str(e))
    if distributed.is_main():
        click.echo(
            f"train {len(data['train'])} poses, val {len(data['val'])} poses ({how}); config sha256 {cfg.sha256()[:12]}"
        )
        if record:
            click.echo(
                f"validation: {', '.join(record['units']['val'][:8])}"
                f"{' ...' if len(record['units']['val']) > 8 else ''}"
            )
    fresh = not resume
    try:
        limits = {} if model == "gmm" else {"resume": resume, "max_steps": max_steps, "max_minutes": max_minutes}
        summary = models[model][2](cfg, data["train"], data["val"], out, progress=not quiet, **limits)
    except BaseException as e:
        # a fresh run that never wrote a checkpoint is not a run: leave nothing behind that looks like one
        # (a SIGKILL cannot be caught: that run resumes with --resume, see train.trainer.run_epochs)
        if fresh and distributed.is_main() and not (out / "best.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, (ValueError, FloatingPointError, OSError)):
            _fail(str(e))
        if (peer := distributed.lost_peer(e)) is not None:  # a rank died: say so, and how to continue
            kept = (
                f"{out} keeps every finished epoch: continue with --resume (any number of processes)"
                if (out / "last.pt").exists()
                else "no epoch had finished: nothing is kept"
            )
            click.echo(f"error: {peer}; {kept}", err=True)
            sys.exit(1)
        raise
    main_rank = distributed.is_main()
    distributed.teardown()
    if main_rank:
        if record:  # the ingest: every source with its sha256, skeleton, conversion version, and the split
            (out / "data.json").write_text(json.dumps(record, indent=1) + "\n")
        best = summary.get("best_val_log_p", summary.get("best_val"))
        click.echo(
            f"done ({summary.get('stop_reason', 'fitted')}): {summary.get('epochs', '-')} epochs, best epoch "
            f"{summary.get('best_epoch', '-')}"
            + (f", val {best:.4g}" if isinstance(best, (int, float)) else "")
            + f"; {out / 'summary.json'}"
        )


def _without_nproc(argv: list[str]) -> list[str]:
    """The arguments after ``train`` in ``argv``, less ``--nproc N`` / ``--nproc=N``."""
    args = argv[argv.index("train") + 1 :]
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@main.command("evaluate")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="Held-out split, shared npz format (e.g. ../shared/data/cmu_pose/test.npz).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Report directory: metrics.json, timing.json, report.md, *.png.",
)
@click.option("--n", type=int, default=10000, show_default=True, help="Samples per prior.")
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Train split: KS against it, FID against it, nearest neighbours in it, and its skeleton for FK.",
)
@click.option(
    "--baselines",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A vposer/gmm run directory, or a folder of run directories (repeatable).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--ablation",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory of a flow trained without augmentation: adds its panel to ablation.png.",
)
@click.option(
    "--subset",
    type=int,
    default=2000,
    show_default=True,
    help="Samples and data poses used for APD and nearest-neighbour distances.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate_command(model_dir, data, out, n, train_path, baselines, seed, ablation, subset, quiet):
    """Evaluate an exported flow (through the runtime) and the baselines: KS, FID, APD, NN distance, figures."""
    from .data import DataError
    from .evaluation import evaluate

    if n < 2 or subset < 2:
        _fail("--n and --subset must be at least 2")
    check_out(out)
    try:
        m = evaluate(
            model_dir,
            data,
            out,
            n=n,
            train=train_path,
            baselines=list(baselines),
            seed=seed,
            ablation=ablation,
            subset=subset,
            progress=not quiet,
        )
    except (DataError, OSError, ValueError) as e:
        _fail(str(e))
    t = json.loads((out / "timing.json").read_text())
    rows = {k: v["table"] for k, v in m["ks"].items()}
    click.echo(
        f"wrote {out}/report.md in {t['total']:.1f} s; KS vs test: "
        + ", ".join(f"{k} {v['ks']:.3f}" for k, v in rows["test"].items())
    )


@main.command("fit-bench")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="Test split, shared npz format (e.g. ../shared/data/cmu_pose/test.npz).",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Report directory: metrics.json, report.md, fits.png."
)
@click.option("--n", type=int, default=500, show_default=True, help="Test poses (evenly spaced over the split).")
@click.option("--n-val", type=int, default=100, show_default=True, help="Validation poses for the prior-weight grid.")
@click.option(
    "--val",
    "val_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Validation split for tuning the prior weights (default: val.npz beside --data).",
)
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Train split, for the mean pose that starts completion and IK (default: train.npz beside --data).",
)
@click.option("--vposer", type=click.Path(path_type=Path), default=Path("runs/smpl3-vposer"), show_default=True)
@click.option("--gmm", type=click.Path(path_type=Path), default=Path("runs/smpl3-gmm"), show_default=True)
@click.option("--hypotheses", type=int, default=10, show_default=True, help="Completion starts per pose.")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch threads (1: on a shared CPU a bigger pool spins and runs many times slower).",
)
@click.option("--priors", multiple=True, help="Run only these rows (repeatable; default: all), e.g. runtime_latent.")
def fit_bench_command(model_dir, data, out, n, n_val, val_path, train_path, vposer, gmm, hypotheses, threads, priors):
    """Downstream fitting benchmark: part completion, sparse-effector IK, denoising; every prior, same budget."""
    from .data import DataError
    from .fitbench import BenchConfig, run

    if n < 1 or n_val < 1 or hypotheses < 1 or threads < 1:
        _fail("--n, --n-val, --hypotheses and --threads must be at least 1")
    check_out(out)
    try:
        report = run(
            model_dir,
            data,
            out,
            BenchConfig(n=n, n_val=n_val, hypotheses=hypotheses, priors=tuple(priors)),
            val_path=val_path,
            train_path=train_path,
            vposer_path=vposer,
            gmm_path=gmm,
            threads=threads,
            log=click.echo,
        )
    except (DataError, OSError, ValueError) as e:
        _fail(str(e))
    click.echo(f"wrote {out}/report.md, metrics.json, fits.png in {report['seconds']:.0f} s")


if __name__ == "__main__":  # python -m train.cli ...: the same as the poseprior command
    from runtime.cli import main as poseprior

    poseprior()
