"""Reader and writer of the consumers' binary files (the format is documented in pp_io.h and README.md).

By hand::

    python bindings_tests/ppbin.py write in.bin --batch 7          # real CMU val poses + seeded z
    bindings_tests/build/ort_c MODEL_DIR in.bin out.bin
    python bindings_tests/ppbin.py read out.bin                   # names, shapes, first values
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

IN_MAGIC, OUT_MAGIC, VERSION = b"PPIN", b"PPOT", 1
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_pose"


def write_input(path: Path, poses: np.ndarray, z: np.ndarray) -> None:
    poses = np.ascontiguousarray(poses, dtype="<f4")
    z = np.ascontiguousarray(z, dtype="<f4")
    if poses.ndim != 3 or z.ndim != 2 or poses.shape[0] != z.shape[0]:
        raise ValueError(f"need poses (B, J, C) and z (B, D), got {poses.shape} and {z.shape}")
    b, j, c = poses.shape
    header = IN_MAGIC + struct.pack("<5I", VERSION, b, j, c, z.shape[1])
    Path(path).write_bytes(header + poses.tobytes() + z.tobytes())


def read_output(path: Path) -> dict[str, np.ndarray]:
    """{"graph/output": array} in file order."""
    buf = Path(path).read_bytes()
    if buf[:4] != OUT_MAGIC:
        raise ValueError(f"{path}: not an output file")
    version, count = struct.unpack_from("<2I", buf, 4)
    if version != VERSION:
        raise ValueError(f"{path}: unsupported version {version}")
    arrays, at = {}, 12
    for _ in range(count):
        (name_len,) = struct.unpack_from("<I", buf, at)
        name = buf[at + 4 : at + 4 + name_len].decode()
        at += 4 + name_len
        (ndim,) = struct.unpack_from("<I", buf, at)
        dims = struct.unpack_from(f"<{ndim}q", buf, at + 4)
        at += 4 + 8 * ndim
        n = int(np.prod(dims))
        arrays[name] = np.frombuffer(buf, "<f4", n, at).reshape(dims).copy()
        at += 4 * n
    if at != len(buf):
        raise ValueError(f"{path}: {len(buf) - at} trailing bytes")
    return arrays


def real_poses(n: int) -> np.ndarray:
    """n real poses (CMU val, then test), (n, 21, 6) float32 in the model's 6D convention."""
    from runtime.rotations import axis_angle_to_6d

    aa = np.concatenate([np.load(DATA / f"{split}.npz")["rotations"] for split in ("val", "test")])
    if n > len(aa):
        raise ValueError(f"only {len(aa)} poses in CMU val + test")
    return axis_angle_to_6d(aa[:n].astype(np.float64)).astype(np.float32)


def seeded_z(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="an input file of real poses and seeded latents")
    w.add_argument("path")
    w.add_argument("--batch", type=int, default=7)
    w.add_argument("--dim", type=int, default=126)
    w.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("read", help="list an output file")
    r.add_argument("path")
    args = parser.parse_args(argv)
    if args.cmd == "write":
        write_input(Path(args.path), real_poses(args.batch), seeded_z(args.batch, args.dim, args.seed))
    else:
        for name, a in read_output(Path(args.path)).items():
            print(f"{name:28s} {str(a.shape):14s} {a.reshape(-1)[:3]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
