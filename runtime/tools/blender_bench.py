"""Timing of ``poseprior.score`` in Blender against ``poseprior score`` on the same take (``make bench-blender``).

Run in a Python with ``bpy`` (``.venv-blender``): ``python -m runtime.tools.blender_bench [--frames 5000] [--repeats 5]``.
The take: the cgspeed 3dsMax files of ../shared/data/cmu_extra/bvh_3dsmax (real 120 Hz capture) one after the other,
cut to ``--frames`` frames, written as one BVH (``runtime.formats.write_bvh``). Measured, ``--repeats`` times each
(medians, wall-clock seconds):

* ``poseprior score TAKE --out x.json``: the CLI as a command (a fresh process: start, read, convert, score, write);
* the same work in-process (``takes.read_take`` + ``takes.score``, the prior loaded once);
* ``bpy.ops.poseprior.score()`` on the armature Blender's own importer made of the file: frame stepping
  (``scene.frame_set`` of every frame, the pose bones' matrices read), conversion and scoring; the first call
  also loads the model (reported apart as ``cold``);
* the frame stepping alone (what Blender adds: ``scene.frame_set`` + ``foreach_get`` of every frame).

Prints a table and the ratio add-on / CLI command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import bpy
import numpy as np

from runtime import takes
from runtime.blender import adapter
from runtime.blender import addon as addon_module
from runtime.formats import read_bvh, write_bvh

ROOT = Path(__file__).resolve().parents[2]


def make_take(shared: Path, frames: int, out: Path) -> Path:
    """The 3dsMax takes of ``shared`` concatenated (repeated as needed) and cut to ``frames`` frames, as one BVH."""
    files = sorted((shared / "cmu_extra" / "bvh_3dsmax").glob("*.bvh"))
    ms = [read_bvh(f) for f in files]
    rot, tr, n = [], [], 0
    while n < frames:
        for m in ms:
            rot.append(m.rotations)
            tr.append(m.trans)
            n += len(m)
    m = replace(ms[0], rotations=np.concatenate(rot)[:frames], trans=np.concatenate(tr)[:frames])
    return write_bvh(m, out)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="poseprior-bench-"))
    path = make_take(a.shared, a.frames, tmp / "take.bvh")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli():
        cmd = [sys.executable, "-m", "runtime.cli", "score", str(path), "--out", str(tmp / "cli.json")]
        subprocess.run(cmd, check=True, env=env, capture_output=True)

    prior = adapter.load_prior()
    rest = adapter.rest_joints(prior)
    adapter._PRIORS.clear()  # the add-on's first call loads the model
    addon_module.register()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True, update_scene_duration=True)
        ob = bpy.context.object
        cold = timed(bpy.ops.poseprior.score, 1)[0]
        n = len(ob["poseprior_log_p"])
        scene = bpy.context.scene
        buf = np.empty(len(ob.pose.bones) * 16, np.float32)

        def step():
            for f in range(scene.frame_start, scene.frame_end + 1):
                scene.frame_set(f)
                ob.pose.bones.foreach_get("matrix", buf)

        runs = {"cli": [], "inproc": [], "warm": [], "step": []}
        for _ in range(a.repeats):  # interleaved, so a change of the machine's load hits every row alike
            runs["cli"] += timed(cli, 1)
            runs["inproc"] += timed(lambda: takes.score(prior, takes.read_take(path, rest)), 1)
            runs["warm"] += timed(bpy.ops.poseprior.score, 1)
            runs["step"] += timed(step, 1)
    finally:
        addon_module.unregister()
    cli, inproc, warm, stepping = runs["cli"], runs["inproc"], runs["warm"], runs["step"]
    med = {k: float(np.median(v)) for k, v in (("cli", cli), ("inproc", inproc), ("warm", warm), ("step", stepping))}
    rows = [
        ("poseprior score (command)", med["cli"], cli),
        ("takes.read_take + takes.score (in-process)", med["inproc"], inproc),
        ("poseprior.score in Blender (warm)", med["warm"], warm),
        ("poseprior.score in Blender (first call, loads the model)", cold, [cold]),
        ("  of it: frame stepping (frame_set + matrices)", med["step"], stepping),
    ]
    print(
        f"take: {path.name}, {n} frames scored, {a.repeats} repeats, medians (s); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"| {'what':<58} | median s | runs |")
    print(f"|{'-' * 60}|----------|------|")
    for name, m, runs in rows:
        print(f"| {name:<58} | {m:8.2f} | {' '.join(f'{r:.2f}' for r in runs)} |")
    print(f"add-on / CLI command: warm {med['warm'] / med['cli']:.2f}x, first call {cold / med['cli']:.2f}x")


if __name__ == "__main__":
    main()
