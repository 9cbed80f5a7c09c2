"""One writer at a time: an OS lock (``fcntl.flock``) on the bank directory itself.

Every operation that writes a bank (:meth:`~glsbi_plugin.store.SimulationBank.fill`, ``extend``,
repairs, metadata upgrades) holds the lock; readers never take it (every chunk they read is
verified against its checksum, and a chunk becomes visible only once committed). The lock is
released by the kernel when its holder exits, so a killed fill never leaves a stale lock, and no
file is added to the Zarr hierarchy. A second writer waits up to ``wait`` seconds and then leaves with
:class:`BankLockedError`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer by convention
    fcntl = None  # type: ignore[assignment]

class BankLockedError(BlockingIOError):
    """Another process holds the bank's writer lock (an ``OSError``: the CLI prints it as one line)."""

    def __str__(self) -> str:  # BlockingIOError would print "[Errno ...]" for some argument lists
        return str(self.args[0]) if self.args else "bank locked"


@contextlib.contextmanager
def writer_lock(path: Path, *, wait: float | None = 0.0, action: str = "fill") -> Iterator[None]:
    """Hold the bank's writer lock for the body of the ``with`` block.

    Args:
        path: The bank directory.
        wait: Seconds to wait for a lock held elsewhere; ``0`` leaves at once, ``None`` waits forever.
        action: What the caller does, for the message.

    Raises:
        BankLockedError: the lock is still held by another process after ``wait`` seconds.
        ValueError: a negative or non-finite ``wait``.
    """
    number = isinstance(wait, (int, float)) and not isinstance(wait, bool)
    if wait is not None and not (number and 0 <= wait < float("inf")):
        raise ValueError(f"wait={wait!r}: must be a number of seconds >= 0, or None to wait as long as it takes")
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise BankLockedError(
                        f"cannot {action} {path}: another process is filling or repairing this bank{waited}; "
                        "let that run finish (or stop it), then run the command again"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
