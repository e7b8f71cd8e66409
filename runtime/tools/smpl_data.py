"""``make data``: every source in ../shared/data converted to SMPL ``body_pose`` (``runtime.convert``), as the
training, validation and reporting sets (numpy only; written under ``build/``, never committed).

Layout of ``OUT`` (default ``build/smpl``), each file AMASS-style (``poses`` (N, 72) float32 SMPL axis-angle,
``trans``, ``mocap_framerate`` 30, ``sequence`` (N,) into ``sequence_names``, ``subject`` (N,), ``rest_joints``):

=========================== ======================================================================= ==========
folder / file               contents                                                                 use
=========================== ======================================================================= ==========
``cmu/train.npz``           cmu_pose train (subjects 01 02 07 10 60)                                 training
``cmu/val.npz``             cmu_pose val (08, walking) + cmu_extra/asf_amc (35, 49, backflip,        choosing
                            charleston, lambada, zombie), 120 -> 30 fps
``cmu/test.npz``            cmu_pose test (03)                                                       reporting
``cmu/bvh_takes.npz``       cmu_extra's BVH takes (subjects 11, 14, 131; Daz and 3dsMax skeletons)    reporting
``cmu_bandai/train.npz``    cmu/train + bandai_pose train (non-commercial)                            training
``cmu_bandai/val.npz``      the same file as cmu/val (one validation for both models)                choosing
``MANIFEST.json``           sha256 of every source and output file, the conversion's version
=========================== ======================================================================= ==========

Subject numbers: CMU's own; the renamed ASF/AMC takes get -1; Bandai's actors are unknown (-1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from runtime.convert import CONVERSION_VERSION, load_rest_joints, named_takes, save_amass
from runtime.prior import sha256_file

FPS = 30.0
VAL_ASF = ("35_01", "49_18", "49_19", "49_20", "backflip", "charleston1", "charleston2", "lambada", "zombie")


def build(shared: Path, out: Path, skeleton: Path | None = None, bandai: bool = True) -> dict:
    """Convert every source (see the module docstring) into ``out``; returns the manifest written there."""
    skeleton = skeleton or shared / "smpl_skeleton" / "smpl_neutral_rest.npz"
    rest = load_rest_joints(skeleton)
    cmu, extra = shared / "cmu_pose", shared / "cmu_extra"
    sources: list[Path] = []

    def takes(p: Path) -> list:
        sources.append(p)
        return named_takes(p, rest, fps=FPS)

    splits = {
        "cmu/train.npz": takes(cmu / "train.npz"),
        "cmu/val.npz": takes(cmu / "val.npz") + sum((takes(extra / "asf_amc" / f"{n}.amc") for n in VAL_ASF), []),
        "cmu/test.npz": takes(cmu / "test.npz"),
        "cmu/bvh_takes.npz": sum(
            (
                takes(p)
                for p in sorted((extra / "bvh_daz_style").glob("*.bvh")) + sorted((extra / "bvh_3dsmax").glob("*.bvh"))
            ),
            [],
        ),
    }
    if bandai:
        splits["cmu_bandai/train.npz"] = splits["cmu/train.npz"] + takes(shared / "bandai_pose" / "train.npz")
        splits["cmu_bandai/val.npz"] = splits["cmu/val.npz"]
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for rel, tk in splits.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            save_amass(tk, rest, staging / rel)
        manifest = {
            "conversion": CONVERSION_VERSION,
            "fps": FPS,
            "skeleton": str(skeleton),
            "skeleton_sha256": sha256_file(skeleton),
            "sources": {str(p.relative_to(shared)): sha256_file(p) for p in sources},
            "outputs": {
                rel: {
                    "sha256": sha256_file(staging / rel),
                    "sequences": len(tk),
                    "poses": int(sum(len(t["poses"]) for _, _, t in tk)),
                }
                for rel, tk in splits.items()
            },
        }
        (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("build/smpl"))
    ap.add_argument("--no-bandai", action="store_true", help="skip the non-commercial Bandai set")
    a = ap.parse_args()
    m = build(a.shared, a.out, bandai=not a.no_bandai)
    for rel, o in m["outputs"].items():
        print(f"{rel:24s} {o['poses']:8d} poses  {o['sequences']:5d} takes  sha256 {o['sha256'][:12]}")


if __name__ == "__main__":
    main()
