"""BVH motion files <-> ``Motion``.

Parsing (``read_bvh``): the HIERARCHY (one ROOT; JOINT / End Site blocks with OFFSET and CHANNELS) and the
MOTION section (``Frames:``, ``Frame Time:``, one line of numbers per frame). Rotation channels are Euler angles
in degrees applied intrinsically in the listed order: channels ``Zrotation Xrotation Yrotation`` give
``R = Rz(z) Rx(x) Ry(y)`` (``motion.euler_matrix``). The root's position is ``OFFSET + (Xposition, Yposition,
Zposition)`` (``Motion.trans``); a non-root joint's position channels must be constant over the take (they are then
folded into its offset; ``Motion`` holds constant bone offsets). In the zero pose (all channels 0) every joint
frame is world-aligned, as ``Motion`` wants. End Sites become ``Motion.end_sites`` (the first one of a joint).

Units: BVH has none. ``unit_m`` (metres per file unit) is taken, in this order, from the argument, from the
skeleton's documented unit when ``joint_maps.skeleton_of`` recognises its joint names (``joint_maps.UNITS_M``:
cgspeed's 0.0254 / 0.45 m, Daz 0.01 m...), or by the one candidate of ``CANDIDATE_UNITS_M`` that makes the zero
pose's height (highest minus lowest joint / end site along Y) an adult's 1.0-2.3 m; otherwise a FormatError asks
for ``unit_m``. World up is +Y (``Motion.up = "y"``).

Frame 0 of cgspeed's MotionBuilder- and Daz-friendly CMU files is a synthetic rest pose added by the converter
(``joint_maps.SYNTHETIC_FRAME0``); ``read_bvh`` keeps it (drop it with ``dataclasses.replace`` when it matters).

``write_bvh`` writes a ``Motion`` back: root ``Xposition Yposition Zposition`` plus every joint's rotation as
Euler angles in ``axes`` order (``motion.matrix_to_euler``), offsets divided by ``unit_m``, joints nested
depth-first. ``read_bvh`` of the written file gives the same ``Motion`` to the printed precision, with its joints
in depth-first order (the same order when ``m`` came from a BVH file; tested).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from .joint_maps import UNITS_M, skeleton_of
from .motion import FormatError, Motion, check_fps, euler_matrix, matrix_to_euler

#: metres per unit tried for a skeleton that ``skeleton_of`` does not know: m, cm, mm, inch, cgspeed (1/0.45 inch)
CANDIDATE_UNITS_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cgspeed": 0.0254 / 0.45}
#: largest |channel value| of a frame (degrees, or file units for positions): beyond it a value is corrupt
MAX_CHANNEL = 1e7
#: adult zero-pose heights (m) accepted when guessing the unit
HEIGHT_RANGE_M = (1.0, 2.3)


class _Tokens:
    """Whitespace tokens of the HIERARCHY section with their line numbers."""

    def __init__(self, lines: list[str], source: str):
        self.items = [(tok, i + 1) for i, line in enumerate(lines) for tok in line.split()]
        self.pos = 0
        self.source = source

    def error(self, msg: str) -> FormatError:
        line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 1
        return FormatError(f"{self.source}: line {line}: {msg}")

    def next(self, what: str) -> str:
        if self.pos >= len(self.items):
            raise self.error(f"HIERARCHY ends early, expected {what}")
        self.pos += 1
        return self.items[self.pos - 1][0]

    def expect(self, word: str) -> None:
        tok = self.next(repr(word))
        if tok != word:
            self.pos -= 1
            raise self.error(f"expected {word!r}, found {tok!r}")

    def number(self, what: str) -> float:
        tok = self.next(what)
        try:
            value = float(tok)
        except ValueError:
            self.pos -= 1
            raise self.error(f"expected a number for {what}, found {tok!r}") from None
        if not np.isfinite(value):
            self.pos -= 1
            raise self.error(f"{what} is {tok}")
        return value


class _Hierarchy:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.parents: list[int] = []
        self.offsets: list[list[float]] = []
        self.channels: list[tuple[str, ...]] = []
        self.end_sites: dict[str, list[float]] = {}


def _parse_hierarchy(tok: _Tokens) -> _Hierarchy:
    """The joints in file order, parsed with an explicit stack (no recursion: any nesting depth reads)."""
    h = _Hierarchy()

    def header(parent: int) -> int:  # NAME { OFFSET x y z CHANNELS n ...
        name = tok.next("a joint name")
        if name in h.names:
            raise tok.error(f"joint name {name!r} used twice")
        index = len(h.names)
        h.names.append(name)
        h.parents.append(parent)
        tok.expect("{")
        tok.expect("OFFSET")
        h.offsets.append([tok.number(f"OFFSET of {name}") for _ in range(3)])
        tok.expect("CHANNELS")
        count = tok.number(f"channel count of {name}")
        if count != int(count) or not 0 <= count <= 6:
            raise tok.error(f"channel count of {name} is {count:g}, expected 0..6")
        chans = tuple(tok.next(f"a channel of {name}") for _ in range(int(count)))
        for c in chans:
            if len(c) != 9 or c[0].lower() not in "xyz" or c[1:].lower() not in ("position", "rotation"):
                raise tok.error(f"unknown channel {c!r} of {name} (expected X/Y/Z + position/rotation)")
        if len({c.lower() for c in chans}) != len(chans):
            raise tok.error(f"repeated channel in {name}: {' '.join(chans)}")
        h.channels.append(chans)
        return index

    tok.expect("HIERARCHY")
    tok.expect("ROOT")
    open_joints = [header(-1)]  # the joints whose '}' is still to come
    while open_joints:
        index = open_joints[-1]
        name = h.names[index]
        word = tok.next(f"JOINT, End Site or '}}' in {name}")
        if word == "}":
            open_joints.pop()
        elif word == "JOINT":
            open_joints.append(header(index))
        elif word == "End":
            tok.expect("Site")
            tok.expect("{")
            tok.expect("OFFSET")
            site = [tok.number(f"End Site OFFSET in {name}") for _ in range(3)]
            h.end_sites.setdefault(name, site)
            tok.expect("}")
        else:
            tok.pos -= 1
            raise tok.error(f"expected JOINT, End Site or '}}' in {name}, found {word!r}")
    if tok.pos < len(tok.items):
        raise tok.error(f"unexpected {tok.items[tok.pos][0]!r} after the ROOT joint (one ROOT supported)")
    return h


class _Frames:
    """The MOTION section read line by line from the open file, ``BLOCK_FRAMES`` frames at a time: only one block
    of channel values exists at once, so reading takes the ``Motion``'s own arrays and little more."""

    def __init__(self, f, line_no: int, src: str):
        self.f, self.line_no, self.src = f, line_no, src

    def lines(self):
        """(line number, text) of every non-empty line left."""
        for line in self.f:
            self.line_no += 1
            if line.strip():
                yield self.line_no, line


def _motion_header(frames: _Frames, start: int, n_chan: int, size: int) -> tuple[int, float, int]:
    """(frames declared, frame time (s), the header's last line) from 'Frames: <n>' and 'Frame Time: <s>'."""
    src = frames.src
    rows = []
    for line_no, line in frames.lines():
        rows.append((line_no, line.split()))
        if len(rows) == 2:
            break
    if len(rows) < 2 or rows[0][1][:1] != ["Frames:"] or rows[1][1][:2] != ["Frame", "Time:"]:
        raise FormatError(f"{src}: line {start + 2}: MOTION must start with 'Frames: <n>' and 'Frame Time: <seconds>'")
    try:
        (_, (_, n)), (_, (_, _, ft)) = rows[:2]
        n_frames, frame_time = int(n), float(ft)
    except ValueError:
        raise FormatError(
            f"{src}: line {rows[0][0]}-{rows[1][0]}: bad 'Frames:' / 'Frame Time:' "
            f"({' '.join(rows[0][1])!r}, {' '.join(rows[1][1])!r})"
        ) from None
    if n_frames <= 0 or not (np.isfinite(frame_time) and frame_time > 0):
        raise FormatError(
            f"{src}: line {rows[0][0]}-{rows[1][0]}: Frames {n_frames} and Frame Time {frame_time} must be > 0"
        )
    try:
        check_fps(1.0 / frame_time, src, f"line {rows[1][0]}: Frame Time {frame_time:g} s gives a frame rate of")
    except (OverflowError, ZeroDivisionError):
        raise FormatError(f"{src}: line {rows[1][0]}: Frame Time {frame_time:g} s is not a usable frame time") from None
    most = size // max(2, 2 * n_chan) + 1  # a frame line holds n_chan values: at least 2 n_chan bytes
    if n_frames > most:
        raise FormatError(
            f"{src}: line {rows[0][0]}: MOTION declares {n_frames} frames, more than the file's "
            f"{size} bytes can hold ({n_chan} channels a frame)"
        )
    return n_frames, frame_time, rows[1][0]


def _zero_pose_height(h: _Hierarchy) -> float:
    P = np.zeros((len(h.names), 3))
    for j, p in enumerate(h.parents):
        P[j] = (P[p] if p >= 0 else 0.0) + np.array(h.offsets[j])
    tips = [P[h.names.index(k)] + np.array(v) for k, v in h.end_sites.items()]
    y = np.concatenate([P[:, 1], [t[1] for t in tips]])
    return float(y.max() - y.min())


def _unit(h: _Hierarchy, unit_m: float | None, src: str) -> float:
    if unit_m is not None:
        if not (np.isfinite(unit_m) and unit_m > 0):
            raise FormatError(f"{src}: unit_m {unit_m} must be a positive number")
        return float(unit_m)
    skeleton = skeleton_of(h.names, h.end_sites)
    if skeleton is not None:
        return UNITS_M[skeleton]
    height = _zero_pose_height(h)
    fits = {k: u for k, u in CANDIDATE_UNITS_M.items() if HEIGHT_RANGE_M[0] <= height * u <= HEIGHT_RANGE_M[1]}
    if len(fits) != 1:
        raise FormatError(
            f"{src}: unknown skeleton and its zero pose is {height:g} units tall, which "
            f"{'fits no' if not fits else 'fits several'} of the units {', '.join(fits or CANDIDATE_UNITS_M)}"
            f" for an adult ({HEIGHT_RANGE_M[0]}-{HEIGHT_RANGE_M[1]} m): pass unit_m"
        )
    return next(iter(fits.values()))


#: frames parsed at a time by ``read_bvh`` (the channel values of one block are its only temporary)
BLOCK_FRAMES = 1024


def read_bvh(path: str | Path, unit_m: float | None = None) -> Motion:
    """A BVH file as a ``Motion`` in metres (units as in the module docstring); problems raise ``FormatError``
    naming the file and the line. The MOTION section is read ``BLOCK_FRAMES`` lines at a time into the
    ``Motion``'s arrays, so memory does not grow with the file beyond them."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, encoding="utf-8-sig") as f:
            return _read_bvh(f, path, size, unit_m)
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read BVH file ({type(e).__name__}: {e})") from None


def _read_bvh(f, path: Path, size: int, unit_m: float | None) -> Motion:
    src = str(path)
    head = []
    for line in f:
        if line.split()[:1] == ["MOTION"]:
            break
        head.append(line)
    else:
        _parse_hierarchy(_Tokens(head, src))  # a file cut in its HIERARCHY fails here
        raise FormatError(f"{src}: line {len(head)}: no MOTION section after the HIERARCHY")
    h = _parse_hierarchy(_Tokens(head, src))
    start = len(head)  # the MOTION line's index
    n_chan = sum(len(c) for c in h.channels)
    frames = _Frames(f, start + 1, src)
    T, frame_time, last = _motion_header(frames, start, n_chan, size)
    unit = _unit(h, unit_m, src)

    J = len(h.names)
    rotations = np.empty((T, J, 3, 3))
    offsets = np.array(h.offsets, dtype=np.float64)
    trans = np.broadcast_to(offsets[0], (T, 3)).copy()
    offsets[0] = 0.0
    joints, col = [], 0  # per joint: (rotation columns, their axes, position channels)
    for j, chans in enumerate(h.channels):
        rot = [(c[0].lower(), col + i) for i, c in enumerate(chans) if c[1:].lower() == "rotation"]
        pos = [("xyz".index(c[0].lower()), col + i, c) for i, c in enumerate(chans) if c[1:].lower() == "position"]
        joints.append(([c for _, c in rot], "".join(a for a, _ in rot), pos))
        col += len(chans)
    first: dict[int, float] = {}  # non-root position channel -> its value in frame 0
    block = np.empty((min(BLOCK_FRAMES, T), n_chan))
    block_lines: list[int] = []
    done = 0

    def flush() -> None:
        nonlocal done
        n = len(block_lines)
        v = block[:n]
        finite = np.isfinite(v).all(axis=1)
        if not finite.all():
            k = int(np.argmin(finite))
            raise FormatError(f"{src}: line {block_lines[k]}: frame {done + k} holds NaN or inf")
        big = (np.abs(v) > MAX_CHANNEL).any(axis=1)
        if big.any():
            k = int(np.argmax(big))
            raise FormatError(
                f"{src}: line {block_lines[k]}: frame {done + k} holds "
                f"{v[k][np.argmax(np.abs(v[k]))]:.4g}, beyond the +-{MAX_CHANNEL:g} (degrees or file "
                f"units) a channel may hold: a corrupt value"
            )
        rows = slice(done, done + n)
        for j, (rcols, axes, pos) in enumerate(joints):
            rotations[rows, j] = euler_matrix(np.radians(v[:, rcols]), axes)
            for axis, c, name in pos:
                if j == 0:
                    trans[rows, axis] += v[:, c]
                    continue
                v0 = first.setdefault(c, float(v[0, c]))
                tol = 1e-9 * max(1.0, abs(v0), float(np.abs(v[:, c]).max()))
                moved = np.abs(v[:, c] - v0) > tol
                if moved.any():
                    k = int(np.argmax(moved))
                    raise FormatError(
                        f"{src}: line {block_lines[k]}: frame {done + k}: joint {h.names[j]} "
                        f"translates ({name} changes); only the root may move, bones have constant "
                        f"offsets"
                    )
        done += n
        block_lines.clear()

    seen = 0
    for line_no, line in frames.lines():
        if seen == T:  # more lines than declared: count them for the message
            extra = 1 + sum(1 for _ in frames.lines())
            raise FormatError(
                f"{src}: line {frames.line_no}: MOTION declares {T} frames but holds {T + extra} lines of numbers"
            )
        values = line.split()
        if len(values) != n_chan:
            raise FormatError(
                f"{src}: line {line_no}: frame {seen} has {len(values)} values, expected {n_chan} channels"
            )
        try:
            block[len(block_lines)] = values
        except ValueError:
            raise FormatError(f"{src}: line {line_no}: frame {seen} holds a non-numeric value") from None
        block_lines.append(line_no)
        seen += 1
        last = line_no
        if len(block_lines) == len(block):
            flush()
    if block_lines:
        flush()
    if seen != T:
        raise FormatError(f"{src}: line {last}: MOTION declares {T} frames but holds {seen} lines of numbers")
    for j, (_, _, pos) in enumerate(joints):
        for axis, c, _ in pos:
            if j:
                offsets[j, axis] += first[c]
    sites = {k: np.array(v) * unit for k, v in h.end_sites.items()}
    trans *= unit
    return Motion(
        tuple(h.names),
        np.array(h.parents),
        offsets * unit,
        rotations,
        trans,
        1.0 / frame_time,
        src,
        up="y",
        sequence=path.stem,
        end_sites=sites,
    )


def write_bvh(m: Motion, path: str | Path, unit_m: float | None = None, axes: str = "zyx") -> Path:
    """Write ``m`` as BVH (module docstring); ``unit_m`` defaults to the unit ``read_bvh`` will assume for these
    joint names (``UNITS_M`` of the recognised skeleton, else 1 m). The file appears whole or not at all."""
    path = Path(path)
    if m.up != "y":
        raise FormatError(f"{m.source}: BVH is Y-up; this motion's up axis is {m.up!r}")
    if sorted(axes.lower()) != ["x", "y", "z"]:
        raise ValueError(f"axes {axes!r}: need an order of x, y, z (e.g. 'zyx')")
    bad = [n for n in m.names if not n or any(c.isspace() for c in n) or n in ("{", "}")]
    if bad:
        raise FormatError(f"{m.source}: joint names {bad} cannot be written to BVH (whitespace or braces)")
    if unit_m is None:
        skeleton = skeleton_of(m.names, m.end_sites)
        unit_m = UNITS_M[skeleton] if skeleton is not None else 1.0
    chans = " ".join(f"{a.upper()}rotation" for a in axes.lower())
    children: dict[int, list[int]] = {j: [] for j in range(len(m.names))}
    for j, p in enumerate(m.parents[1:], 1):
        children[int(p)].append(j)
    lines = ["HIERARCHY"]
    order: list[int] = []  # joints in file (depth-first) order

    stack = [(0, 0, False)]  # (joint, depth, its closing brace), no recursion
    while stack:
        j, depth, closing = stack.pop()
        pad = "  " * depth
        if closing:
            lines.append(pad + "}")
            continue
        order.append(j)
        off = m.offsets[j] / unit_m
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {m.names[j]}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {off[0]:.9f} {off[1]:.9f} {off[2]:.9f}")
        lines.append(
            f"{pad}  CHANNELS {6 if j == 0 else 3} {'Xposition Yposition Zposition ' if j == 0 else ''}{chans}"
        )
        if m.names[j] in m.end_sites:
            e = m.end_sites[m.names[j]] / unit_m
            lines.extend(
                [f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET {e[0]:.9f} {e[1]:.9f} {e[2]:.9f}", pad + "  }"]
            )
        stack.append((j, depth, True))
        stack.extend((c, depth + 1, False) for c in reversed(children[j]))

    angles = np.degrees(matrix_to_euler(m.rotations[:, order], axes))  # (T, J, 3), file order
    values = np.concatenate([m.trans[:, None] / unit_m, angles], axis=1).reshape(len(m), -1)
    lines += ["MOTION", f"Frames: {len(m)}", f"Frame Time: {1.0 / m.fps:.15g}"]
    lines += [" ".join(f"{v:.9f}" for v in row) for row in values]
    text = "\n".join(lines) + "\n"
    return atomic_write_text(path, text)
