"""Filling a bank on a dask cluster: one task per chunk, written by the worker itself.

Each task opens the bank by path, checks the config hash, simulates its whole chunk and writes θ,
seeds, x, the checksum and finally the ``filled`` flag, exactly as an in-process fill does
(:meth:`SimulationBank.simulate_chunk`). Chunks live in separate files, so workers never write the
same file, and a worker killed mid-chunk leaves that chunk unmarked (dask reruns the task). The
result is bit-identical to an in-process fill because every chunk is simulated at the bank's fixed
vmapped width; XLA's thread count does not change the bits (checked), so workers run JAX on one
intra-op thread each to avoid oversubscribing the cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._bank import SimulationBank

logger = logging.getLogger(__name__)

#: XLA flags for local workers: one CPU device and no Eigen thread pool per single-threaded worker
#: process (the parent's one-device-per-core flag from ``glsbi_plugin._env`` is replaced).
WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_force_host_platform_device_count=1"


def worker_env() -> dict[str, str]:
    """Environment for ``LocalCluster`` workers (keeps the parent's other XLA flags)."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(
        ("--xla_force_host_platform_device_count", "--xla_cpu_multi_thread_eigen"))]
    flags = " ".join([*kept, WORKER_XLA_FLAGS])
    return {
        "XLA_FLAGS": flags,
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def fill_chunk_task(path: str, chunk: int, expected_hash: str, x64: bool = False) -> tuple[int, bool, float]:
    """Worker side: simulate and write one chunk. Returns ``(chunk, written, seconds)``.

    Args:
        path: Absolute path of the bank (a filesystem shared with the client).
        chunk: Chunk index.
        expected_hash: The client's config hash (guards against a bank replaced meanwhile).
        x64: The client's ``jax_enable_x64``; the worker follows it, so that it runs the very same
            XLA program as an in-process fill (float32 results do not depend on it; float64 banks
            need it).

    Raises:
        ValueError: the bank at ``path`` is no longer the one the client submitted for.
    """
    import jax

    from ._bank import SimulationBank

    t0 = time.perf_counter()
    bank = SimulationBank.open(path)
    if bank.config_hash != expected_hash:
        raise ValueError(f"bank {path} has config hash {bank.config_hash[:12]}, expected {expected_hash[:12]}")
    x64 = x64 or bank.description["config"].get("dtype") == "float64"
    if jax.config.jax_enable_x64 != x64:
        jax.config.update("jax_enable_x64", x64)
    written = bank.simulate_chunk(chunk)
    return chunk, written, time.perf_counter() - t0


def check_scheduler(scheduler: Any, n_workers: int = 2) -> None:
    """ValueError unless ``scheduler`` is ``"local"``, an address ``"proto://host:port"`` or a Client."""
    if scheduler == "local":
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers={n_workers!r}: must be an integer >= 1")
        return
    if isinstance(scheduler, str) and "://" in scheduler and scheduler.split("://", 1)[1]:
        return
    if type(scheduler).__name__ == "Client" and hasattr(scheduler, "submit"):
        return
    raise ValueError(
        f"scheduler={scheduler!r}: use None (this process), 'local' (a dask LocalCluster), "
        "'tcp://HOST:PORT' (an existing dask scheduler) or a distributed.Client"
    )


def _connect(scheduler: Any, n_workers: int) -> tuple[Any, list[Any]]:
    """A ``distributed.Client`` for ``scheduler`` and the objects to close afterwards."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - the extra is installed in the dev environment
        raise ImportError("scheduler= needs dask.distributed: pip install 'glsbi[distributed]'") from e
    if isinstance(scheduler, Client):
        return scheduler, []
    check_scheduler(scheduler, n_workers)
    if scheduler == "local":
        # the worker processes start with SIGINT ignored (inherited): a Ctrl-C in the terminal reaches
        # the whole process group, and only this process should act on it (cleanly, see fill_distributed)
        with _sigint_ignored(), _quiet_worker_logs():
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=worker_env(),
                silence_logs=logging.WARNING,
            )
        try:
            client = Client(cluster)
        except Exception:
            cluster.close()
            raise
        return client, [client, cluster]
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as e:  # includes TimeoutError
        raise ValueError(f"cannot reach the dask scheduler at {scheduler}: {e}") from e
    return client, [client]


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while the body runs (only in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet_worker_logs() -> Iterator[None]:
    """Worker processes spawned in the body configure dask's loggers at ERROR (they read the config
    from the environment at import, before the nanny applies ``env``): a Ctrl-C that cancels their
    running task does not print a warning per worker. Task errors still reach the client."""
    key = "DASK_LOGGING__DISTRIBUTED"
    saved = os.environ.get(key)
    os.environ.setdefault(key, "error")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _quiet_dask_info() -> Iterator[None]:
    """dask's loggers at WARNING while a fill runs, unless this process logs at INFO or below
    (its scheduler and nannies otherwise print a dozen start-up lines through the root handler)."""
    import distributed  # noqa: F401 - its import configures the levels of its loggers

    quiet = logging.getLogger().getEffectiveLevel() >= logging.WARNING
    names = [n for n in logging.Logger.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names if quiet else ():
        logging.getLogger(n).setLevel(max(saved[n], logging.WARNING))
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def fill_distributed(
    bank: SimulationBank,
    todo: list[int],
    total: int,
    *,
    scheduler: Any,
    progress: bool,
    n_workers: int = 2,
    written: list[int] | None = None,
) -> list[int]:
    """Fill chunks ``todo`` of ``bank`` on a dask cluster (see module docstring).

    The progress bar appears before the cluster starts and says every second what it waits for.
    On Ctrl-C the pending tasks are cancelled and the client (and a ``"local"`` cluster) closed with
    dask's shutdown chatter silenced; chunks already committed stay, the rest stay unmarked.

    Args:
        bank: The (client-side) bank; workers open it again by its absolute path.
        todo: Chunk indices to simulate.
        total: Simulations in ``todo`` (for the progress bar).
        scheduler: ``"local"``, a scheduler address, or a ``distributed.Client``.
        progress: Show a tqdm bar.
        n_workers: Workers of a ``"local"`` cluster.
        written: A list to append each chunk to as soon as a worker has written it (so that an
            interrupted fill can say what it did); a new one by default.

    Returns:
        The chunks the workers simulated and wrote (not those found filled already).
    """
    import jax
    from tqdm.auto import tqdm

    from ._progress import heartbeat

    written = [] if written is None else written
    if not todo:
        return written
    to_close: list[Any] = []
    futures: list[Any] = []
    desc = f"fill {bank.path.name} (dask)"
    with tqdm(total=total, unit="sim", desc=desc, disable=not progress) as bar, _quiet_dask_info():
        try:
            start = "starting a LocalCluster" if scheduler == "local" else "connecting to the scheduler"
            with heartbeat(bar, start, progress):
                client, to_close = _connect(scheduler, n_workers)
            from distributed import as_completed

            logger.info("dask: %d chunks on %s", len(todo), client.scheduler.address)
            x64 = bool(jax.config.jax_enable_x64)
            futures = [client.submit(fill_chunk_task, str(bank.path), c, bank.config_hash, x64, pure=False)
                       for c in todo]
            label = f"{len(todo)} chunks on the workers (the first also compiles)"
            with heartbeat(bar, label, progress):
                for done, fut in enumerate(as_completed(futures), 1):
                    chunk, was_written, seconds = fut.result()
                    if was_written:
                        written.append(chunk)
                    bar.update(bank.chunk_len(chunk))
                    if not progress:
                        logger.info("chunk %d %s in %.2f s (%d/%d)", chunk, "written" if was_written else
                                    "was filled", seconds, done, len(todo))
        except KeyboardInterrupt:
            _quiet_close(futures, to_close)
            to_close = []
            raise
        finally:
            for obj in to_close:
                obj.close()
    missing = [c for c in todo if not bank.is_filled(c)]
    if missing:  # a worker returned without committing: should not happen
        raise RuntimeError(f"dask fill finished but chunks {missing} are not marked filled")
    return written


def _quiet_close(futures: list[Any], to_close: list[Any]) -> None:
    """Close the client/cluster with dask's loggers silenced (a Ctrl-C otherwise prints dozens of
    shutdown lines and tornado tracebacks). The futures are released with the client, not
    cancelled one by one (each cancellation makes a running worker log a warning)."""
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado", "asyncio")]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL + 1)
    try:
        for obj in to_close:
            with contextlib.suppress(Exception, KeyboardInterrupt):
                obj.close()
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
