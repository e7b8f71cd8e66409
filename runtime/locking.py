"""One writer per output: an exclusive, advisory lock on a path that a command writes (a run directory, a model
directory, a calibration file), held for the command's whole life. Torch-free (stdlib only).

    from runtime.locking import hold, OutputLocked
    hold(out, "train")        # OutputLocked if another process holds it; released when the process ends

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the hidden file ``.<name>.lock`` beside the path (beside, not
inside: an export replaces its whole output directory, and a refused run must not touch the one that runs). The
kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a stale lock file left by a
killed process locks nothing: the next command takes it. A released lock removes its file; to make that safe,
a holder checks after locking that the path still names the file it locked (another holder may have removed it
in between) and tries again otherwise. The record in the file (pid, command) is only for the message.
On systems without ``fcntl`` (Windows) ``hold`` does nothing.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class OutputLocked(OSError):
    """Another process is writing the same output; the message names the path, that process and its command."""


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` in its folder."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.lock")


class Lock:
    """A held lock (``hold``); ``release()`` unlocks and removes the lock file (also done at exit)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody else holds this file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(target: str | Path, command: str) -> Lock:
    """Take the exclusive lock of ``target`` for ``command`` (released by ``Lock.release`` or at process exit);
    ``OutputLocked`` naming ``target`` when another live process holds it. Creates ``target``'s folder if
    needed (the command would create it anyway)."""
    path = lock_path(target)
    if fcntl is None:  # pragma: no cover
        return Lock(path, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            except OSError:
                who = "another process"
            os.close(fd)
            raise OutputLocked(
                f"{target}: in use by {who}: one {command} at a time writes it (wait for it to "
                f"finish, or choose another --out)"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
            lock = Lock(path, fd)
            atexit.register(lock.release)
            return lock
        os.close(fd)  # we locked a file its last holder had just removed: take the new one
    raise OutputLocked(f"{target}: cannot take its lock {path} (it keeps being replaced)")
