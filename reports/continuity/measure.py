"""Frame-to-frame joint jumps of the conversion to SMPL, this tree's ``runtime.convert`` against an older revision's.

    PYTHONPATH=. python reports/continuity/measure.py [--rev cda574c] [--fps 30]

Per group of ../shared/data takes (converted as ``convert_file`` does: the synthetic frame 0 dropped): frame pairs,
pairs with a source joint turning > 90 degrees, converted pairs with a joint turning > 90 degrees (all; and where no
source joint turned more than 45 degrees), and pairs that break ``runtime.continuity``'s bound. ``--rev``: also
convert with ``runtime/convert.py`` as it was at that git revision (loaded from ``git show``)."""

import argparse
import importlib.util
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.continuity import check, jumps
from runtime.convert import load_rest_joints
from runtime.formats import SYNTHETIC_FRAME0, detect_skeleton, read_motion, read_shared_npz

D = Path(__file__).resolve().parents[3] / "shared" / "data"


def old_converter(rev: str):
    src = subprocess.run(
        ["git", "show", f"{rev}:runtime/convert.py"], capture_output=True, text=True, check=True
    ).stdout
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("runtime._convert_" + rev, loader=None))
    mod.__package__ = "runtime"
    exec(compile(src, f"{rev}:runtime/convert.py", "exec"), mod.__dict__)
    return mod


def groups(fps):
    extra = D / "cmu_extra"
    yield (
        "cmu_extra",
        [read_motion(f).subsample(fps) for f in sorted(extra.glob("*/*.bvh")) + sorted(extra.glob("asf_amc/*.amc"))],
    )
    for name in ("cmu_pose", "bandai_pose"):
        yield name, [m for s in ("train", "val", "test") for m in read_shared_npz(D / name / f"{s}.npz")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default=None)
    ap.add_argument("--fps", type=float, default=None, help="subsample cmu_extra (120 Hz) to this rate first")
    a = ap.parse_args()
    rest = load_rest_joints(D / "smpl_skeleton" / "smpl_neutral_rest.npz")
    old = old_converter(a.rev) if a.rev else None
    cols = ["pairs", "source>90", "conv>90", "conv>90&src<45", "bound broken"]
    print("| group | conversion | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    for name, ms in groups(a.fps):
        rows = {"this tree": np.zeros(5, int)} | ({a.rev: np.zeros(5, int)} if old else {})
        for m in ms:
            if detect_skeleton(m) in SYNTHETIC_FRAME0:
                m = replace(m, rotations=m.rotations[1:], trans=m.trans[1:])
            for tag in rows:
                c = check(m, rest, None if tag == "this tree" else old.to_smpl(m, rest)["poses"])
                calm = c["source"][:, 1:].max(1) < np.radians(45)
                rows[tag] += [
                    len(c["change"]),
                    jumps(c["source"][:, 1:]),
                    jumps(c["change"]),
                    jumps(c["change"][calm]),
                    int((c["change"] > c["allowed"]).any(1).sum()),
                ]
        for tag, r in rows.items():
            print(f"| {name} | {tag} | " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
