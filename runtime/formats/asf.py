"""Acclaim ASF skeletons and AMC motions (CMU's original mocap format) -> ``Motion``.

ASF (``read_asf``): ``:units`` (``length L``: file lengths are inches x L, so metres per unit = 0.0254 / L -- CMU
files declare ``length 0.45``; ``angle deg|rad``), ``:root`` (``order``: the root's AMC values, e.g.
``TX TY TZ RX RY RZ``; ``axis`` + ``orientation``: a constant root rotation; ``position``), ``:bonedata`` (per bone:
``name``, ``direction`` (unit vector, world frame of the zero pose), ``length``, ``axis a b c XYZ`` (the bone's
local frame C), ``dof`` (rotation channels in AMC order), ``limits`` ignored) and ``:hierarchy`` (parent children...).

Rotation order: ASF/AMC list rotations in the order they are applied about FIXED axes, so ``dof rx ry rz`` with
values (x, y, z) is ``M = Rz(z) Ry(y) Rx(x)`` and ``axis a b c XYZ`` is ``C = Rz(c) Ry(b) Rx(a)`` (the root's
``order`` likewise) -- the reverse of BVH's listed order. A bone's global rotation and tip position are

    G_b = G_parent(b) C_b M_b C_b^-1,     tip_b = tip_parent(b) + length_b G_b direction_b,   tip_root = trans

(the Acclaim definition ``L = C^-1 M C B`` for row vectors, written for column vectors; references:
research.cs.wisc.edu/graphics/Courses/cs-838-1999/Jeff/ASF-AMC.html, graphics.cs.cmu.edu/nsp/course/cs229/info/
ACCLAIMdef.html). As a ``Motion`` (``read_amc``) every bone is a joint placed at its BASE (its parent's tip), so

    R_b = C_b M_b C_b^-1,   offsets_b = length_parent direction_parent (0 for children of the root),
    R_0 = O M_root (O from ``orientation``),   trans = position + (TX, TY, TZ),   end_sites[leaf] = length direction.

The zero pose (all AMC values 0) has ``G = I`` and every bone along its ASF ``direction`` (tested). World up is
+Y. AMC files hold no frame rate: ``read_amc(..., fps=120)`` is CMU's capture rate. An AMC's angles are in the
unit of its header (``:DEGREES`` or ``:RADIANS``), else the ASF's ``angle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .motion import FormatError, Motion, euler_matrix, read_lines

INCH_M = 0.0254
#: AMC frame rate assumed when the caller gives none (CMU captures at 120 Hz)
CMU_FPS = 120.0
#: largest |value| of an AMC channel (degrees / radians, or file length units): beyond it a value is corrupt
MAX_VALUE = 1e7
_ROT = ("rx", "ry", "rz")
_TRANS = ("tx", "ty", "tz")


@dataclass(frozen=True)
class AsfSkeleton:
    """A parsed ASF file; joint 0 is the root, then the bones with parents before children."""

    source: str
    names: tuple[str, ...]
    parents: np.ndarray  # (J,) int64, -1 for the root
    direction: np.ndarray  # (J, 3) unit bone directions, world frame of the zero pose (root: 0)
    length: np.ndarray  # (J,) metres (root: 0)
    axis: np.ndarray  # (J, 3, 3) C of every bone (root: O from ``orientation``)
    dofs: tuple[tuple[str, ...], ...]  # per joint, lower-case AMC channels in file order (root: its ``order``)
    root_position: np.ndarray  # (3,) metres
    unit_m: float  # metres per file length unit
    angle_rad: float  # radians per file angle unit (pi/180 for ``angle deg``)


def _strip(line: str) -> list[str]:
    return line.split("#", 1)[0].replace(",", " ").replace("(", " ").replace(")", " ").split()


def _numbers(tokens: list[str], n: int, what: str, where: str) -> list[float]:
    if len(tokens) != n:
        raise FormatError(f"{where}: {what} needs {n} numbers, found {len(tokens)}")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise FormatError(f"{where}: {what}: not a number in {' '.join(tokens)!r}") from None
    if not np.isfinite(values).all():
        raise FormatError(f"{where}: {what} holds NaN or inf")
    return values


def _fixed_axes(angles: np.ndarray, order: str) -> np.ndarray:
    """Rotations applied in ``order`` about fixed axes: ``R = R_order[-1](a[-1]) ... R_order[0](a[0])``."""
    return euler_matrix(np.asarray(angles)[..., ::-1], order[::-1].lower())


def read_asf(path: str | Path) -> AsfSkeleton:
    """Parse an ASF file (module docstring); problems raise ``FormatError`` naming the file and the line."""
    path = Path(path)
    src = str(path)
    lines = read_lines(path, "ASF")
    section = None
    length_unit, angle_unit = 1.0, "deg"
    root = {"order": None, "axis": "XYZ", "position": [0.0] * 3, "orientation": [0.0] * 3}
    bones: dict[str, dict] = {}
    bone: dict | None = None
    children: dict[str, list[str]] = {}
    hierarchy_open = hierarchy_closed = False
    last_line = 0
    for i, raw in enumerate(lines, 1):
        tok = _strip(raw)
        if not tok:
            continue
        last_line = i
        where = f"{src}: line {i}"
        key = tok[0].lower()
        if key.startswith(":"):
            if bone is not None:
                raise FormatError(f"{where}: bone {bone.get('name')!r} has no 'end'")
            section = key
            continue
        if section == ":units":
            if key == "length":
                length_unit = _numbers(tok[1:], 1, "units length", where)[0]
                if length_unit <= 0:
                    raise FormatError(f"{where}: units length must be positive")
            elif key == "angle":
                if len(tok) != 2 or tok[1].lower() not in ("deg", "rad"):
                    raise FormatError(f"{where}: units angle must be 'deg' or 'rad'")
                angle_unit = tok[1].lower()
        elif section == ":root":
            if key == "order":
                root["order"] = tuple(t.lower() for t in tok[1:])
                bad = [t for t in root["order"] if t not in _ROT + _TRANS]
                if bad or len(set(root["order"])) != len(root["order"]):
                    raise FormatError(f"{where}: root order {' '.join(tok[1:])!r}: expected distinct TX TY TZ RX RY RZ")
            elif key == "axis":
                if len(tok) != 2 or sorted(tok[1].lower()) != ["x", "y", "z"]:
                    raise FormatError(f"{where}: root axis must be an order of X, Y, Z")
                root["axis"] = tok[1]
            elif key in ("position", "orientation"):
                root[key] = _numbers(tok[1:], 3, f"root {key}", where)
        elif section == ":bonedata":
            if key == "begin":
                if bone is not None:
                    raise FormatError(f"{where}: 'begin' inside bone {bone.get('name')!r}")
                bone = {"line": i, "dof": ()}
            elif key == "end":
                if bone is None:
                    raise FormatError(f"{where}: 'end' without 'begin'")
                for need in ("name", "direction", "length", "axis"):
                    if need not in bone:
                        raise FormatError(f"{src}: line {bone['line']}: bone {bone.get('name', '?')!r} has no {need!r}")
                if bone["name"] in bones or bone["name"] == "root":
                    raise FormatError(f"{where}: bone name {bone['name']!r} used twice")
                bones[bone["name"]] = bone
                bone = None
            elif bone is None:
                raise FormatError(f"{where}: {tok[0]!r} outside a begin/end bone block")
            elif key == "name":
                if len(tok) != 2:
                    raise FormatError(f"{where}: bone name must be one word")
                bone["name"] = tok[1]
            elif key == "direction":
                d = np.array(_numbers(tok[1:], 3, "bone direction", where))
                if np.linalg.norm(d) < 1e-9:
                    raise FormatError(f"{where}: bone direction is zero")
                bone["direction"] = d / np.linalg.norm(d)
            elif key == "length":
                bone["length"] = _numbers(tok[1:], 1, "bone length", where)[0]
                if bone["length"] < 0:
                    raise FormatError(f"{where}: bone length is negative")
            elif key == "axis":
                if len(tok) != 5 or sorted(tok[4].lower()) != ["x", "y", "z"]:
                    raise FormatError(f"{where}: bone axis needs 3 angles and an order such as XYZ")
                bone["axis"] = (_numbers(tok[1:4], 3, "bone axis", where), tok[4])
            elif key == "dof":
                dof = tuple(t.lower() for t in tok[1:])
                bad = [t for t in dof if t not in _ROT + _TRANS + ("l",)]
                if bad or len(set(dof)) != len(dof):
                    raise FormatError(f"{where}: dof {' '.join(tok[1:])!r}: expected distinct rx ry rz")
                if any(t not in _ROT for t in dof):
                    raise FormatError(
                        f"{where}: bone {bone.get('name')!r} has translation dofs "
                        f"({' '.join(tok[1:])}); only rotations are supported"
                    )
                bone["dof"] = dof
            # id, limits and their continuation lines, bodymass, cofmass: not needed
        elif section == ":hierarchy":
            if key == "begin":
                hierarchy_open = True
            elif key == "end":
                hierarchy_closed = True
            elif hierarchy_open and not hierarchy_closed:
                parent = tok[0]
                if parent != "root" and parent not in bones:
                    raise FormatError(f"{where}: hierarchy names unknown bone {parent!r}")
                for c in tok[1:]:
                    if c not in bones:
                        raise FormatError(f"{where}: hierarchy names unknown bone {c!r}")
                    if any(c in v for v in children.values()) or c == "root":
                        raise FormatError(f"{where}: bone {c!r} has two parents")
                    children.setdefault(parent, []).append(c)
    where = f"{src}: line {last_line}"
    if bone is not None:
        raise FormatError(f"{where}: file ends inside the bone block begun at line {bone['line']}")
    if root["order"] is None:
        raise FormatError(f"{where}: no ':root' section with an 'order' line")
    if not bones:
        raise FormatError(f"{where}: no ':bonedata' bones")
    if not (hierarchy_open and hierarchy_closed):
        raise FormatError(f"{where}: no complete ':hierarchy' begin ... end section")

    names, parents = ["root"], [-1]
    stack = [(c, 0) for c in reversed(children.get("root", []))]
    while stack:
        name, parent = stack.pop()
        names.append(name)
        parents.append(parent)
        stack.extend((c, len(names) - 1) for c in reversed(children.get(name, [])))
    unplaced = [b for b in bones if b not in names]
    if unplaced:
        raise FormatError(f"{where}: bones not reachable from the root in ':hierarchy': {', '.join(unplaced)}")
    unit = INCH_M / length_unit
    angle = np.pi / 180.0 if angle_unit == "deg" else 1.0
    J = len(names)
    direction, length, axis = np.zeros((J, 3)), np.zeros(J), np.empty((J, 3, 3))
    axis[0] = _fixed_axes(np.array(root["orientation"]) * angle, root["axis"])
    dofs = [root["order"]]
    for j, name in enumerate(names[1:], 1):
        b = bones[name]
        direction[j], length[j] = b["direction"], b["length"] * unit
        axis[j] = _fixed_axes(np.array(b["axis"][0]) * angle, b["axis"][1])
        dofs.append(b["dof"])
    return AsfSkeleton(
        src,
        tuple(names),
        np.array(parents, dtype=np.int64),
        direction,
        length,
        axis,
        tuple(dofs),
        np.array(root["position"]) * unit,
        unit,
        angle,
    )


def read_amc(path: str | Path, asf: AsfSkeleton | str | Path, fps: float = CMU_FPS) -> Motion:
    """An AMC motion on its ASF skeleton as a ``Motion`` (module docstring); problems raise ``FormatError``
    naming the file and the line (or frame)."""
    if not isinstance(asf, AsfSkeleton):
        asf = read_asf(asf)
    path = Path(path)
    src = str(path)
    lines = read_lines(path, "AMC")
    index = {n: j for j, n in enumerate(asf.names)}
    need = [n for n, d in zip(asf.names, asf.dofs) if d]  # bones every frame must list
    frames: list[dict[str, list[float]]] = []
    frame_line: list[int] = []

    def close(line: int) -> None:
        if frames:
            missing = [n for n in need if n not in frames[-1]]
            if missing:
                raise FormatError(
                    f"{src}: line {line}: frame {len(frames)} (from line {frame_line[-1]}) lacks "
                    f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
                )

    angle_rad = asf.angle_rad  # the AMC's own :DEGREES / :RADIANS header wins over the ASF's unit
    for i, raw in enumerate(lines, 1):
        tok = raw.split("#", 1)[0].split()
        if tok and tok[0].upper() in (":DEGREES", ":RADIANS") and not frames:
            angle_rad = 1.0 if tok[0].upper() == ":RADIANS" else np.pi / 180.0
            continue
        if not tok or tok[0].startswith(":"):
            continue
        where = f"{src}: line {i}"
        if len(tok) == 1 and tok[0].lstrip("+-").isdigit():
            close(i)
            number = int(tok[0])
            if number != len(frames) + 1:
                raise FormatError(
                    f"{where}: frame number {number}, expected {len(frames) + 1} (frames must be "
                    f"numbered 1, 2, ... without gaps)"
                )
            frames.append({})
            frame_line.append(i)
            continue
        if not frames:
            raise FormatError(f"{where}: {tok[0]!r} before the first frame number")
        name = tok[0]
        if name not in index:
            raise FormatError(f"{where}: frame {len(frames)}: unknown bone {name!r} (not in {asf.source})")
        if name in frames[-1]:
            raise FormatError(f"{where}: frame {len(frames)}: bone {name!r} listed twice")
        dof = asf.dofs[index[name]]
        try:
            values = [float(v) for v in tok[1:]]
        except ValueError:
            raise FormatError(
                f"{where}: frame {len(frames)}: bone {name!r}: not a number in {' '.join(tok[1:])!r}"
            ) from None
        if len(values) != len(dof):
            raise FormatError(
                f"{where}: frame {len(frames)}: bone {name!r} has {len(values)} values, its dof "
                f"line declares {len(dof)} ({' '.join(dof) or 'none'})"
            )
        if not np.isfinite(values).all():
            raise FormatError(f"{where}: frame {len(frames)}: bone {name!r} holds NaN or inf")
        if any(abs(v) > MAX_VALUE for v in values):
            raise FormatError(
                f"{where}: frame {len(frames)}: bone {name!r} holds a value beyond +-{MAX_VALUE:g}: a corrupt value"
            )
        frames[-1][name] = values
    close(len(lines))
    if not frames:
        raise FormatError(f"{src}: line {len(lines)}: no frames")

    T, J = len(frames), len(asf.names)
    rotations = np.empty((T, J, 3, 3))
    trans = np.broadcast_to(asf.root_position, (T, 3)).copy()
    offsets = np.zeros((J, 3))
    for j, (name, dof) in enumerate(zip(asf.names, asf.dofs)):
        values = np.array([f.get(name, [0.0] * len(dof)) for f in frames]).reshape(T, len(dof))
        rot = [k for k, d in enumerate(dof) if d in _ROT]
        M = _fixed_axes(values[:, rot] * angle_rad, "".join(dof[k][1] for k in rot))
        if j == 0:
            for k, d in enumerate(dof):
                if d in _TRANS:
                    trans[:, _TRANS.index(d)] += values[:, k] * asf.unit_m
            rotations[:, 0] = asf.axis[0] @ M
        else:
            C = asf.axis[j]
            rotations[:, j] = C @ M @ C.T
            p = asf.parents[j]
            offsets[j] = asf.length[p] * asf.direction[p]
    leaves = set(range(J)) - set(asf.parents.tolist())
    sites = {asf.names[j]: asf.length[j] * asf.direction[j] for j in sorted(leaves) if j}
    return Motion(
        asf.names, asf.parents, offsets, rotations, trans, fps, src, up="y", sequence=path.stem, end_sites=sites
    )
