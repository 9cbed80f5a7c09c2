"""Thread counts that fit the machine: torch's intra-op threads and XLA's CPU devices.

On a shared machine torch's default (one thread per core) makes a training run fight every other
job for the same cores; on the 2-core machine this project is developed on, two torch threads
beside two CPU-bound jobs trained 5-9x slower than one thread (``README.md``, "Threads").
:func:`choose_threads` therefore counts the cores that are actually free: the cores this process
may run on (``os.sched_getaffinity``) less the 1-minute load average (``os.getloadavg``),
rounded, at least 1. A count asked for explicitly wins, in this order:

1. ``glsbi --threads N`` (the ``requested`` argument);
2. the environment variable ``GLSBI_THREADS``;
3. ``OMP_NUM_THREADS`` if you set it (torch reads it too);
4. the free cores.

The count sets torch's intra-op threads (at most :data:`TORCH_MAX`: the project's networks gain
nothing beyond) and the number of XLA CPU devices, ``--xla_force_host_platform_device_count``,
which is how many cores a sharded JAX simulation uses. XLA reads its flags once, when JAX starts,
so :func:`configure_xla` must run before ``jax`` is imported; the ``glsbi`` command does that
before any handler imports anything heavy. An XLA device count you put in ``XLA_FLAGS`` yourself
is kept unless ``--threads``/``GLSBI_THREADS`` is given.

:func:`cpu_only_platform` sets ``JAX_PLATFORMS=cpu`` when no accelerator plugin is installed and
you have not set it, so JAX does not try (and log that it failed to load) a TPU or GPU backend.

Nothing here imports torch or JAX at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterator, MutableMapping

logger = logging.getLogger(__name__)

#: Environment variable that fixes the thread count (below ``--threads``).
ENV_VAR = "GLSBI_THREADS"
#: At most this many torch intra-op threads (the project's networks are small).
TORCH_MAX = 4
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
#: ``XLA_FLAGS`` as this process found it, before ``glsbi_plugin._env`` adds its device count
#: (``glsbi_plugin/__init__.py`` imports this module first).
_XLA_FLAGS_AT_START = os.environ.get("XLA_FLAGS", "")


@dataclasses.dataclass(frozen=True)
class ThreadPlan:
    """The chosen thread counts and why.

    Attributes:
        torch: torch intra-op threads.
        xla_devices: XLA CPU devices (cores a sharded JAX simulation uses).
        cores: Cores this process may run on.
        load: 1-minute load average when chosen (``None`` where the OS does not report one).
        source: What fixed the count: ``"--threads"``, ``"GLSBI_THREADS"``, ``"OMP_NUM_THREADS"`` or
            ``"free cores"``.
    """

    torch: int
    xla_devices: int
    cores: int
    load: float | None
    source: str

    def describe(self) -> str:
        """One line for the user, e.g. ``torch 1 thread, XLA 1 CPU device (free cores: 2 cores, load 1.40)``."""
        load = "n/a" if self.load is None else f"{self.load:.2f}"
        return (f"torch {self.torch} thread{'s' * (self.torch != 1)}, XLA {self.xla_devices} CPU "
                f"device{'s' * (self.xla_devices != 1)} ({self.source}: {self.cores} cores, load {load})")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def free_cores(cores: int, load: float | None) -> int:
    """Cores not taken by other runnable processes: ``round(cores - load)``, between 1 and ``cores``.

    Examples:
        >>> free_cores(2, 0.1), free_cores(2, 0.6), free_cores(2, 7.5), free_cores(16, 3.2)
        (2, 1, 1, 13)
    """
    if load is None:
        return cores
    return int(min(cores, max(1, int(cores - load + 0.5))))


def parse_threads(text: str, where: str) -> int:
    """A positive thread count from ``text`` (``where`` names its origin for the message).

    Raises:
        ValueError: If ``text`` is not an integer >= 1.
    """
    try:
        n = int(text.strip())
    except ValueError:
        raise ValueError(f"{where}={text!r}: expected a whole number of threads >= 1") from None
    if n < 1:
        raise ValueError(f"{where}={text!r}: expected a whole number of threads >= 1")
    return n


def choose_threads(
    requested: int | None = None,
    *,
    environ: MutableMapping[str, str] | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> ThreadPlan:
    """The thread plan: ``requested``, else ``GLSBI_THREADS``, else ``OMP_NUM_THREADS``, else the free cores.

    Args:
        requested: An explicit count (``glsbi --threads N``), or ``None``.
        environ: The environment to read (default ``os.environ``).
        cores: Usable cores (default :func:`usable_cores`).
        load: Load average (default :func:`load_average`).

    Raises:
        ValueError: If ``requested`` or a variable is not a whole number >= 1.

    Examples:
        >>> choose_threads(None, environ={}, cores=2, load=0.2)
        ThreadPlan(torch=2, xla_devices=2, cores=2, load=0.2, source='free cores')
        >>> choose_threads(None, environ={"GLSBI_THREADS": "1"}, cores=2, load=0.2).torch
        1
        >>> choose_threads(3, environ={"GLSBI_THREADS": "1"}, cores=16, load=9.0).xla_devices
        3
    """
    env = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    load = load_average() if load is None else load
    if requested is not None:
        n, source = parse_threads(str(requested), "--threads"), "--threads"
    elif env.get(ENV_VAR, "").strip():
        n, source = parse_threads(env[ENV_VAR], ENV_VAR), ENV_VAR
    elif env.get("OMP_NUM_THREADS", "").strip():
        n, source = parse_threads(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    else:
        n, source = free_cores(cores, load), "free cores"
    return ThreadPlan(torch=min(n, TORCH_MAX), xla_devices=n, cores=cores, load=load, source=source)


def configure_xla(
    plan: ThreadPlan, environ: MutableMapping[str, str] | None = None, *, user_flags: str | None = None
) -> bool:
    """Set XLA's CPU device count in ``XLA_FLAGS`` to ``plan.xla_devices``; call before importing jax.

    A device count the user set in ``XLA_FLAGS`` before this process started is kept unless the plan
    comes from ``--threads`` or ``GLSBI_THREADS``.

    Args:
        plan: The thread plan.
        environ: The environment to write (default ``os.environ``).
        user_flags: ``XLA_FLAGS`` as the user set them (default: as this process started).

    Returns:
        Whether the flag was written (``False`` when jax is already imported, so XLA would not see it,
        or the user's own count is kept).
    """
    env = os.environ if environ is None else environ
    if environ is None and "jax" in sys.modules:
        logger.debug("jax is already imported: XLA keeps its CPU device count")
        return False
    user_flags = _XLA_FLAGS_AT_START if user_flags is None else user_flags
    if _DEVICE_FLAG in user_flags and plan.source not in ("--threads", ENV_VAR):
        return False
    flags = re.sub(rf"\s*{_DEVICE_FLAG}=\S*", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={plan.xla_devices}".strip()
    return True


def configure_torch(plan: ThreadPlan, environ: MutableMapping[str, str] | None = None) -> None:
    """Give torch ``plan.torch`` intra-op threads: now if torch is imported, else through
    ``OMP_NUM_THREADS``, which torch (and the processes this one starts, e.g. Dask workers) read
    when they start."""
    if environ is None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(plan.torch)
        return
    env = os.environ if environ is None else environ
    env["OMP_NUM_THREADS"] = str(plan.torch)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads and restore the count after, e.g. one thread
    while JAX simulates or while a grid posterior (latency-bound) is evaluated."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accelerator_installed() -> bool:
    """Whether a JAX accelerator backend could load: a ``jax_plugins`` entry point (CUDA, ROCm, METAL
    plugins register one) or ``libtpu``."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    if find_spec("libtpu") is not None:
        return True
    if list(entry_points(group="jax_plugins")):
        return True
    with contextlib.suppress(ImportError, ValueError):
        import jax_plugins  # noqa: F401 - the namespace package of the older plugins

        return True
    return False


def cpu_only_platform(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``JAX_PLATFORMS=cpu`` when it is unset and no accelerator is installed; returns whether it did.

    Without it JAX probes every platform it knows and logs ``Unable to initialize backend 'tpu'`` (at
    INFO, so any program that turns on INFO logging shows it) on machines that have none. Call it
    before JAX initialises a backend (its first computation or ``jax.devices()``); if jax is already
    imported, its ``jax_platforms`` option is set too.
    """
    env = os.environ if environ is None else environ
    if "JAX_PLATFORMS" in env or accelerator_installed():
        return False
    env["JAX_PLATFORMS"] = "cpu"
    if environ is None and "jax" in sys.modules:  # imported, but no backend yet: jax reads its config then
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    return True
