"""``poseprior``: the command line. Torch-free: the plain install (``pip install .``) runs it.

The group holds the torch-free commands directly (``demo``, ``convert``, ``score``, ``repair``; add one with ``@main.command()`` here). The
commands that need torch (``train``, ``export``, ``evaluate``, ...) live in ``train/cli.py`` and ``export/cli.py``
(gathered in ``export.cli.main``) and are listed in
``TORCH_COMMANDS`` with their one-line help: ``poseprior --help`` shows them without importing torch, and
``export.cli`` is imported only when one of them is invoked. Without the training extra that import fails and the
command says in one line what to install, exit code 2.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from .extras import TRAIN_EXTRA_HINT, TRAIN_EXTRA_MODULES  # noqa: F401  (re-exported: tests, train, export)

#: commands of ``export.cli.main``, name -> one-line help (tests/test_cli.py checks it against export.cli)
TORCH_COMMANDS = {
    "train": "Train the RealNVP pose prior (or, with --model, a baseline).",
    "export": "Export a trained flow: ONNX graphs + shared weights + manifest (and .pt2, TorchScript).",
    "evaluate": "Evaluate an exported flow and the baselines: KS, FID, APD, NN distance, figures.",
    "fit-bench": "Downstream fitting benchmark: part completion, sparse-effector IK, denoising.",
    "bench": "Median latency of every graph: onnxruntime vs torch eager.",
}


MAP_HELP = (
    "Joint map {SMPL joint: source joint} as JSON (runtime.formats.joint_maps), for a rig poseprior does not know."
)


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


def hold_out(out: Path, command: str) -> None:
    """Take ``out``'s lock until the command ends (``runtime.locking.hold``; released when its click context
    closes, or at the latest when the process exits); exit 2 when another process holds it, so two runs never
    write one output."""
    from .locking import OutputLocked, hold

    try:
        lock = hold(out, command)
    except OutputLocked as e:
        fail(str(e))
    click.get_current_context().call_on_close(lock.release)


def check_not_source(out: Path, sources, option: str = "--out") -> None:
    """Refuse an output that is one of the input files (the same path, or the same file through a link): writing
    it would destroy what the user gave (exit 2, naming ``option``)."""
    import os

    for src in sources:
        same = out.resolve() == Path(src).resolve()
        if not same and out.exists() and Path(src).exists():
            try:
                same = os.path.samefile(out, src)
            except OSError:
                pass
        if same:
            fail(f"{option} {out}: it is the input file {src}; write the output to another file")


def missing_train_extra(e: ImportError) -> bool:
    """Whether ``e`` is the training extra being absent (not a bug inside the package)."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    return name in TRAIN_EXTRA_MODULES or TRAIN_EXTRA_HINT in str(e)


class PosePriorGroup(click.Group):
    """A click group whose torch commands are imported from ``export.cli`` only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *TORCH_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in TORCH_COMMANDS:
            return super().get_command(ctx, name)
        try:
            from export.cli import main as torch_commands  # the one upward edge (.importlinter)
        except ImportError as e:
            if not missing_train_extra(e):
                raise
            fail(f"poseprior {name} {TRAIN_EXTRA_HINT}")
        return torch_commands.get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (
                name,
                TORCH_COMMANDS[name]
                if name in TORCH_COMMANDS
                else super(PosePriorGroup, self).get_command(ctx, name).get_short_help_str(80),
            )
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=PosePriorGroup)
def main() -> None:
    """Neural human pose prior: demo, convert, score, repair (torch-free); train, export, evaluate, ... (need
    poseprior[train])."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
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
@click.option(
    "--to",
    "target",
    type=click.Choice(["smpl"]),
    default="smpl",
    show_default=True,
    help="Target convention: SMPL body_pose (runtime.convert).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="AMASS-style .npz to write.")
@click.option(
    "--skeleton",
    type=click.Path(path_type=Path),
    default=None,
    help="The .asf of an .amc take (default: found beside it).",
)
@click.option(
    "--rest",
    type=click.Path(path_type=Path),
    default=None,
    help="SMPL rest joints: a model directory or an .npz with rest_joints (default: the shipped model's).",
)
@click.option("--fps", type=float, default=None, help="Subsample to about this frame rate.")
@click.option("--map", "map_file", type=click.Path(path_type=Path), default=None, help=MAP_HELP)
def convert(
    src: Path,
    target: str,
    out: Path,
    skeleton: Path | None,
    rest: Path | None,
    fps: float | None,
    map_file: Path | None,
) -> None:
    """Convert a take (BVH, ASF/AMC, shared npz, AMASS) to SMPL body_pose: an AMASS-style npz."""
    from .convert import convert as convert_take
    from .convert import load_rest_joints
    from .formats import FormatError
    from .formats.joint_maps import load_joint_map

    _check_file_out(out, "--out", (".npz",))
    check_not_source(out, [src])
    _check_skeleton(src, skeleton)
    if fps is not None and not fps > 0:
        fail(f"--fps {fps}: must be a positive number")
    try:
        joint_map = None if map_file is None else load_joint_map(map_file)
        summary = convert_take(src, out, load_rest_joints(rest), skeleton, fps, joint_map)
    except (FormatError, ValueError, OSError) as e:
        fail(str(e))
    click.echo(
        f"{summary['source']}: {summary['takes']} take(s), {summary['frames']} frames at "
        f"{summary['fps']:.1f} fps -> {out} (SMPL body_pose, conversion {summary['conversion']})"
    )


# --- take tools: score and repair (runtime.takes) ---------------------------------------------------------------
def _take_options(f):
    """The options every take command shares: the model, the .asf of an .amc take, subsampling, a joint map."""
    f = click.option("--map", "map_file", type=click.Path(path_type=Path), default=None, help=MAP_HELP)(f)
    f = click.option("--fps", type=float, default=None, help="Subsample the take to about this frame rate.")(f)
    f = click.option(
        "--skeleton",
        type=click.Path(path_type=Path),
        default=None,
        help="The .asf of an .amc take (default: found beside it).",
    )(f)
    f = click.option(
        "--model",
        type=click.Path(path_type=Path),
        default=None,
        help="Model directory (default: the one shipped in the package).",
    )(f)
    return f


def _check_file_out(path: Path | None, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file with the wrong suffix, that is a directory, or whose folder does not exist."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        fail(f"{option} {path}: must end in {' or '.join(suffixes)}")
    if path.is_dir() or not path.parent.is_dir():
        fail(f"{option} {path}: {'is a directory' if path.is_dir() else f'folder {path.parent} does not exist'}")


def _check_skeleton(src: Path, skeleton: Path | None) -> None:
    """``--skeleton`` belongs to an .amc take and must exist (exit 2 otherwise: it is never ignored)."""
    if skeleton is None:
        return
    if src.suffix.lower() != ".amc":
        fail(f"--skeleton {skeleton}: only an .amc take reads a separate skeleton (.asf); {src} is not an .amc file")
    if not skeleton.is_file():
        fail(f"--skeleton {skeleton}: file not found")


def _check_plot(path: Path | None) -> None:
    _check_file_out(path, "--plot", (".png", ".pdf", ".svg"))
    if path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            fail("--plot needs matplotlib: pip install 'poseprior[plot]'")


class _Progress:
    """A ``runtime.takes`` progress callback drawn as a click progress bar on stderr (a bar on a terminal,
    the label once otherwise)."""

    def __init__(self, label: str, min_total: int = 0):
        self.label, self.min_total, self.bar, self.shown = label, min_total, None, 0

    def __call__(self, done: int, total: int) -> None:
        if total < self.min_total:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _load_prior(model: Path | None, fps: float | None, map_file: Path | None = None):
    """(prior, rest joints, joint map): the model (its conversion-version note on stderr), the skeleton takes
    convert to, and the source rig's joint map of ``map_file`` (None: the built-in skeletons)."""
    from .convert import load_rest_joints
    from .formats.joint_maps import load_joint_map
    from .prior import PosePrior
    from .takes import check_smpl_prior

    if fps is not None and not fps > 0:
        fail(f"--fps {fps}: must be a positive number")
    prior = PosePrior.load(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_smpl_prior(prior)
    for w in caught:
        click.echo(f"note: {w.message}", err=True)
    warnings.filterwarnings("ignore", message=".*trained on takes converted by")  # said once, as a note
    return prior, load_rest_joints(prior.path), None if map_file is None else load_joint_map(map_file)


def _load_take(src: Path, model: Path | None, skeleton: Path | None, fps: float | None, map_file: Path | None = None):
    """(prior, take, rest joints): the model, and ``src`` converted on its skeleton (with the joint map of
    ``map_file`` when given)."""
    from .takes import read_take

    _check_skeleton(src, skeleton)
    prior, rest, joint_map = _load_prior(model, fps, map_file)
    return prior, read_take(src, rest, skeleton, fps, joint_map), rest


#: what a folder given to ``score`` / ``repair`` contributes: its take files, recursively
TAKE_SUFFIXES = (".bvh", ".amc", ".npz")


def _take_files(paths: tuple[Path, ...]) -> list[Path]:
    """The take files of ``paths``: files as given, folders as their ``TAKE_SUFFIXES`` files (recursively, sorted)."""
    files = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in TAKE_SUFFIXES and f.is_file())
            if not found:
                fail(f"{p}: a folder with no takes ({', '.join(TAKE_SUFFIXES)} files)")
            files += found
        else:
            files.append(p)
    return files


def _per_file(files: list[Path], out: Path | None, suffix: str, option: str) -> list[Path] | None:
    """With ``out`` an existing directory: one output per take file, ``out/<stem><suffix>`` (refused when two
    inputs share a stem); else None."""
    if out is None or not out.is_dir():
        return None
    paths = [out / f"{f.stem}{suffix}" for f in files]
    seen: dict[Path, Path] = {}
    for f, o in zip(files, paths):
        if o in seen:
            fail(f"{option} {out}: {seen[o]} and {f} would both write {o.name}; give them separately")
        seen[o] = f
        check_not_source(o, files, option)
    return paths


def _plot(s, path: Path, repaired=None) -> None:
    """The score's figure: the detector's timeline (``runtime.qaplot``) when it ran, else log p over time."""
    from . import takes

    if s.detection is not None:
        from .qaplot import plot_timeline

        plot_timeline(s, path, repaired=repaired)
    else:
        takes.plot_score(s, path, repaired=repaired)


def _spans_text(spans: list[tuple[int, int]], limit: int = 12) -> str:
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:limit])
    return text + (f", ... ({len(spans)} runs)" if len(spans) > limit else "")


def _dropped_text(take) -> str | None:
    notes = [f"{n}: {d}" if len(take.names) > 1 else d for n, d in zip(take.names, take.dropped) if d]
    return f"note: {take.source}: left out {'; '.join(notes)}; frame numbers are the source file's" if notes else None


@main.command()
@click.argument("take", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the per-frame scores: .json (log_prob, threshold, flagged, ...) or .csv (a row per frame); "
    "an existing folder: one .json per take file.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Plot log p over time with the flagged frames marked (.png/.pdf/.svg; needs matplotlib); an "
    "existing folder: one .png per take file.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Flag frames with log p below this (default: the model's recorded tau).",
)
@click.option("--progress", is_flag=True, help="Show a progress bar (default: only for takes over 20,000 frames).")
@_take_options
def score(
    take: tuple[Path, ...],
    out: Path | None,
    plot: Path | None,
    threshold: float | None,
    progress: bool,
    model: Path | None,
    skeleton: Path | None,
    fps: float | None,
    map_file: Path | None,
) -> None:
    """Score every frame of takes (BVH, ASF/AMC, AMASS or shared npz files, or folders of them) and flag the
    implausible ones. Frames are numbered as in the source file."""
    import numpy as np

    from . import takes
    from .formats import FormatError
    from .prior import ModelError

    files = _take_files(take)
    for f in files:
        _check_skeleton(f, skeleton)
    outs, plots = _per_file(files, out, ".json", "--out"), _per_file(files, plot, ".png", "--plot")
    if outs is None:
        _check_file_out(out, "--out", takes.SCORE_SUFFIXES)
    if plots is None:
        if plot is not None and len(files) > 1:
            fail(f"--plot {plot}: with several take files, give an existing folder (one plot per file)")
        _check_plot(plot)
    elif plot is not None:
        _check_plot(plots[0])
    scores = []
    try:
        prior, rest, joint_map = _load_prior(model, fps, map_file)
        for f in files:
            bar = _Progress(f"scoring {f.name}", min_total=0 if progress else 20_000)  # long takes only
            try:
                scores.append(
                    takes.score(prior, takes.read_take(f, rest, skeleton, fps, joint_map), threshold, progress=bar)
                )
            finally:
                bar.close()
        if outs is not None:
            for s, o in zip(scores, outs):
                takes.write_score(s, o)
        elif out is not None:
            takes.write_scores(scores, out)
        for s, o in zip(scores, plots or [plot] * len(scores)):
            if o is not None:
                _plot(s, o)
    except (FormatError, ModelError, ValueError, OSError, ImportError) as e:
        fail(str(e))
    for f, s in zip(files, scores):
        tk = s.take
        n, flagged = len(s.log_prob), s.flagged
        rate = f"{tk.fps:.1f} fps" if tk.fps == tk.fps else "no frame rate"
        worst = int(s.log_prob.argmin())
        for note in s.notes:
            click.echo(f"note: {note}", err=True)
        note = _dropped_text(tk)
        if note:
            click.echo(note)
        click.echo(
            f"{f}: {n} frames ({len(tk.names)} take{'s' if len(tk.names) > 1 else ''}, {rate}); log p median "
            f"{float(np.median(s.log_prob)):.1f}, lowest {float(s.log_prob[worst]):.4g} at frame "
            f"{int(tk.frames[worst])}"
        )
        if s.detection is None:
            spans = [(int(tk.frames[a]), int(tk.frames[b])) for a, b in s.flagged_spans()]
            click.echo(
                f"threshold {s.threshold:.4g} ({s.threshold_source}): {len(flagged)} frames flagged "
                f"({len(flagged) / n:.1%})" + (f": {_spans_text(spans)}" if len(flagged) else "")
            )
            if "detector" not in prior.manifest:
                click.echo(
                    "note: per-frame log p only; `poseprior calibrate` on your own clean takes adds the "
                    "motion-aware detector (spans and suspect joints)",
                    err=True,
                )
        else:
            spans = s.detection.spans
            click.echo(
                f"detector (motion + log p < {s.threshold:.4g}): {len(flagged)} frames flagged "
                f"({len(flagged) / n:.1%}) in {len(spans)} spans" + (":" if spans else "")
            )
            for a, b, js in spans[:12]:
                click.echo(
                    f"  {int(tk.frames[a])}-{int(tk.frames[b - 1])}: "
                    f"{', '.join(prior.joint_names[j] for j in js) or '(log p only)'}"
                )
            if len(spans) > 12:
                click.echo(f"  ... ({len(spans) - 12} more spans: --out writes them all)")
    for path in (outs or [out]) + (plots or [plot]):
        if path is not None:
            click.echo(f"wrote {path}")


@main.command()
@click.argument("take", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The repaired take: an .npz (an AMASS/SMPL-H/SMPL-X input keeps all its arrays; other sources: "
    "AMASS-style SMPL body_pose); an existing folder: one .npz per take file.",
)
@click.option("--joints", default=None, help="Fill these joints (comma-separated SMPL names) in every frame.")
@click.option("--flagged", is_flag=True, help="Fill the worst joints of the frames below the threshold.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="With --flagged: the log p below which frames are repaired (default: the model's tau).",
)
@click.option(
    "--max-joints",
    type=click.IntRange(1, 21),
    default=3,
    show_default=True,
    help="With --flagged: at most this many joints per frame.",
)
@click.option(
    "--space",
    type=click.Choice(["auto", "latent", "ambient"]),
    default="auto",
    show_default=True,
    help="Completion in the flow's latent space (with the Jacobian term) or on the 6D poses (faster); "
    "auto: ambient for --flagged with a calibrated detector (spans held by their neighbours), "
    "else latent.",
)
@click.option(
    "--smooth",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Weight of the squared joint velocity (s^2) in the temporal smoothness term; 0: frame by frame.",
)
@click.option(
    "--iters",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="L-BFGS iterations of each run of frames (the smoothing solve).",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Plot log p over time before and after the repair (.png/.pdf/.svg; needs matplotlib); an "
    "existing folder: one .png per take file.",
)
@_take_options
def repair(
    take: tuple[Path, ...],
    out: Path,
    joints: str | None,
    flagged: bool,
    threshold: float | None,
    max_joints: int,
    space: str,
    smooth: float,
    iters: int,
    plot: Path | None,
    model: Path | None,
    skeleton: Path | None,
    fps: float | None,
    map_file: Path | None,
) -> None:
    """Repair takes (files or folders): fill named joints, or the worst joints of implausible frames, with the
    prior. An AMASS/SMPL-H/SMPL-X npz is written back whole: only the repaired body joints change."""
    import numpy as np

    from . import takes
    from .formats import FormatError
    from .lossless import is_amass, write_repaired
    from .prior import ModelError

    if (joints is None) == (not flagged):
        fail("repair: give --joints NAMES or --flagged (one of the two)")
    if threshold is not None and not flagged:
        fail("--threshold: only with --flagged")
    files = _take_files(take)
    for f in files:
        _check_skeleton(f, skeleton)
    outs, plots = _per_file(files, out, ".npz", "--out"), _per_file(files, plot, ".png", "--plot")
    if outs is None:
        if len(files) > 1:
            fail(f"--out {out}: with several take files, give an existing folder (one .npz per file)")
        _check_file_out(out, "--out", (".npz",))
        check_not_source(out, files)
        outs = [out]
    if plots is None:
        if plot is not None and len(files) > 1:
            fail(f"--plot {plot}: with several take files, give an existing folder (one plot per file)")
        _check_plot(plot)
        plots = [plot]
    elif plot is not None:
        _check_plot(plots[0])
    names = None if joints is None else [n.strip() for n in joints.split(",") if n.strip()]
    done = []
    try:
        amass = [is_amass(f) for f in files]
        if fps is not None and any(amass):
            fail(
                f"--fps: {files[amass.index(True)]} is an AMASS npz, repaired at its own frame rate so that the "
                f"output keeps every frame"
            )
        prior, rest, joint_map = _load_prior(model, fps, map_file)
        if space == "auto":
            space = takes.default_space(prior, flagged)
        for f in files:
            tk = takes.read_take(f, rest, skeleton, fps, joint_map)
            bar = _Progress(f"repairing {f.name} ({space})")
            try:
                done.append(
                    takes.repair(
                        prior,
                        tk,
                        joints=names,
                        flagged=flagged,
                        threshold=threshold,
                        options=takes.RepairOptions(space=space, smooth=smooth, run_iters=iters, max_joints=max_joints),
                        progress=bar,
                    )
                )
            finally:
                bar.close()
        for f, r, o, p, whole in zip(files, done, outs, plots, amass):
            if whole:
                rows = r.repaired
                write_repaired(f, r.take.frames[rows], r.take.poses[rows, 3:66], o)
            else:
                takes.write_take(r.take, rest, o)
            if p is not None:
                s = takes.Score(
                    r.take,
                    r.log_prob_before,
                    r.threshold if flagged else float("nan"),
                    "",
                    str(prior.path),
                    r.detection,
                )
                _plot(s, p, repaired=r.log_prob_after)
    except (FormatError, ModelError, ValueError, OSError, ImportError) as e:
        fail(str(e))
    for f, r, o, p, whole in zip(files, done, outs, plots, amass):
        tk, fixed = r.take, r.repaired
        counts = dict(zip(*np.unique(np.array(prior.joint_names)[np.nonzero(r.mask)[1]], return_counts=True)))
        joints_text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
        head = (
            f"{len(r.detection.spans)} spans flagged by the detector"
            if r.detection is not None
            else f"{len(fixed)} of {len(tk.poses)} frames below {r.threshold:.4g}"
            if flagged
            else f"{', '.join(names)} in all {len(tk.poses)} frames"
        )
        note = _dropped_text(tk)
        if note:
            click.echo(note)
        click.echo(
            f"{f}: {head}; repaired {len(fixed)} frames in {space} space, {r.seconds:.1f} s "
            f"(joints freed: {joints_text})"
        )
        if len(fixed):
            b, a = r.log_prob_before[fixed], r.log_prob_after[fixed]
            still = f"; still below the threshold: {int((a < r.threshold).sum())}" if flagged else ""
            spans = [(int(tk.frames[x]), int(tk.frames[y])) for x, y in takes.runs(fixed, tk.starts)]
            click.echo(f"repaired frames: {_spans_text(spans)}")
            click.echo(
                f"log p of the repaired frames: median {float(np.median(b)):.1f} -> {float(np.median(a)):.1f}{still}"
            )
        kind = (
            "every array of the input, only the repaired body joints changed"
            if whole
            else "AMASS-style, SMPL body_pose, source_frame: the source's frame numbers"
        )
        click.echo(f"wrote {o} ({kind})" + (f" and {p}" if p else ""))


@main.command()
@click.argument("takes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The calibrated model directory to write (must not exist).",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Model directory to calibrate (default: the one shipped in the package).",
)
@click.option(
    "--false-flag-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="The fraction of these clean takes' frames to flag.",
)
@click.option(
    "--skeleton",
    type=click.Path(path_type=Path),
    default=None,
    help="The .asf of .amc takes (default: found beside each).",
)
@click.option("--fps", type=float, default=None, help="Subsample the takes to about this frame rate.")
def calibrate(
    takes: tuple[Path, ...],
    out: Path,
    model: Path | None,
    false_flag_rate: float,
    skeleton: Path | None,
    fps: float | None,
) -> None:
    """Calibrate a model's take-QA detector and tau on your own clean takes (files or folders): a new model dir."""
    from .calibrate import calibrate as run_calibration
    from .formats import FormatError
    from .prior import ModelError

    if not 0 < false_flag_rate < 0.5:
        fail(f"--false-flag-rate {false_flag_rate}: must be in (0, 0.5)")
    if fps is not None and not fps > 0:
        fail(f"--fps {fps}: must be a positive number")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = run_calibration(list(takes), out, model, false_flag_rate, fps, skeleton)
    except (FormatError, ModelError, ValueError, OSError) as e:
        fail(str(e))
    for w in caught:
        click.echo(f"note: {w.message}", err=True)
    for w in r["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"note: {r['checked']}", err=True)
    click.echo(
        f"calibrated on {r['files']} file(s), {r['frames']} frames"
        + (f" at {r['fps']:.4g} fps" if r["fps"] else "")
        + f": tau {r['tau']:.4g}, detector threshold {r['threshold']:.4g} (false flag rate {r['rate']:g})"
    )
    click.echo(f"wrote {out}")


@main.command("blender-addon")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The extension .zip to write.")
@click.option(
    "--wheels",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle the wheels of this folder (onnxruntime for Blender's Python 3.11 and platform; docs/blender.md).",
)
def blender_addon(out: Path, wheels: Path | None) -> None:
    """Build the Blender extension zip (runtime/blender): score, repair and complete an armature's poses."""
    from .blender.package import PackageError, build

    try:
        r = build(out, wheels)
    except (PackageError, OSError) as e:
        fail(str(e))
    extra = f", wheels: {', '.join(r['wheels'])} ({', '.join(r['platforms']) or 'any'})" if r["wheels"] else ""
    click.echo(f"wrote {r['path']} (PosePrior {r['version']}, {r['files']} files, {r['bytes'] / 1e6:.1f} MB{extra})")


if __name__ == "__main__":
    main()
