"""Progress while a chunk runs: a heartbeat on the fill's tqdm bar (or the log)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("glsbi_plugin.store._bank")


@contextlib.contextmanager
def heartbeat(bar: Any, label: str, progress: bool, every: float = 1.0) -> Iterator[None]:
    """While the body runs, show that it does: the bar's postfix says what runs and for how long
    (every ``every`` s), or, without a bar, an INFO log line after 5 s and then every 30 s."""
    stop = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        next_log = 5.0
        while not stop.wait(every):
            elapsed = time.perf_counter() - t0
            if progress:
                bar.set_postfix_str(f"{label}: {elapsed:.0f} s", refresh=True)
            elif elapsed >= next_log:
                logger.info("still simulating %s: %.0f s", label, elapsed)
                next_log += 30.0

    if progress:
        bar.set_postfix_str(f"{label}: started", refresh=True)
    thread = threading.Thread(target=beat, name="glsbi-fill-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
