"""``atomic_write``: the one way the project writes a file — to a hidden partial file beside it, renamed onto it.

A write either replaces ``path`` whole or leaves it as it was. The partial file of ``path`` is
``.NAME.partial-PID.SUFFIX`` (``partial_path``), in the same directory, so the rename is atomic on one file system
and the suffix stays (``np.save``, ``savefig`` pick the format from it).
"""

from __future__ import annotations

import glob
import os
import signal
import threading
from pathlib import Path
from typing import Callable


def partial_path(path: str | Path, pid: int | None = None) -> Path:
    """The partial file that process ``pid`` (default: this one) writes before renaming it onto ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid() if pid is None else pid}{path.suffix}")


def is_partial(p: str | Path) -> bool:
    """Whether ``p`` is named as the partial file of some ``atomic_write`` (``.NAME.partial-PID.SUFFIX``)."""
    name = Path(p).name
    if not name.startswith(".") or ".partial-" not in name:
        return False
    target, _, rest = name[1:].rpartition(".partial-")
    suffix = Path(target).suffix
    return bool(target) and rest.endswith(suffix) and rest[: len(rest) - len(suffix)].isdigit()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (someone else's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove the partial files of ``path`` that ``atomic_write``s killed outright (SIGKILL, a power cut) left
    beside it: those whose PID no longer runs. Returns what was removed."""
    path = Path(path)
    removed = []
    prefix = f".{path.name}.partial-"
    for p in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(path.suffix)}"):
        pid = p.name[len(prefix) : len(p.name) - len(path.suffix)]
        if pid.isdigit() and p.is_file() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to the partial file ``tmp`` of ``path``, then rename it onto ``path``; returns ``path``.

    A failed or interrupted write leaves nothing behind and ``path`` as it was. Interrupted means an exception,
    Ctrl-C (SIGINT) or SIGTERM: while it writes, in the main thread, a SIGTERM that would kill the process outright
    raises ``SystemExit(143)`` instead, so the partial file is removed. What a SIGKILL leaves is removed by the next
    write of the same ``path`` (``remove_stale_partials``)."""
    path = Path(path)
    remove_stale_partials(path)
    tmp = partial_path(path)
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
