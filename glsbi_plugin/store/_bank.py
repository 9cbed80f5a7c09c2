r"""``SimulationBank``: a resumable, checksummed Zarr store of (θ, x) simulations.

Layout (a Zarr v3 group; ``K`` = chunk size, ``m`` = number of chunks)::

    theta     (n, d)        float32   chunks (K, d)
    seeds     (n,)          int64     chunks (K,)
    x         (n, C, H, W)  float32   chunks (K, C, H, W)
    checksum  (m, 32)       uint8     chunks (1, 32)   sha256 of a chunk's θ, seeds and x
    filled    (m,)          bool      chunks (1,)      written last: a crash leaves it unset

The group attributes hold the simulator description (JSON), its config hash, the prior bounds and
names, the bank seed, the chunk and batch sizes, and the package version. A chunk is written whole
(θ, seeds, x, checksum, then ``filled``), by one writer, into its own files, so workers never share a
file and a killed fill leaves every chunk either complete and marked or unmarked.

Bit-identity: XLA on CPU gives bit-identical rows for the same θ, seed and *vmapped batch width*
(row position and process do not matter; the width does, by ~4e-8). The bank therefore fixes the
width at creation (``batch_size``, default the chunk size) and always simulates full chunks.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .._validation import check_count
from ._meta import FORMAT_VERSION, canonical, canonical_json, chunk_digest, chunk_inputs, config_hash
from ._meta import description_diff as _diff
from ._read import BankReader

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FillReport:
    """Outcome of :meth:`SimulationBank.fill`: the chunks simulated (repaired ones included)."""

    simulated: list[int]
    repaired: list[int]
    n_simulations: int
    seconds: float

    @property
    def sims_per_second(self) -> float:
        return self.n_simulations / self.seconds if self.seconds > 0 else 0.0


@functools.lru_cache(maxsize=8)
def _simulator_from_json(description_json: str, batch_size: int) -> Any:
    """One compiled simulator per (description, width) and process (dask workers reuse it)."""
    from ..sbi_simulator import TDGLSimulator

    return TDGLSimulator.from_description(json.loads(description_json), batch_size=batch_size)


class SimulationBank(BankReader):
    """A bank of simulations on a Zarr directory; create with :meth:`create`, reopen with :meth:`open`.

    Example::

        bank = SimulationBank.create("bank.zarr", simulator, n=1024, chunk_size=64, seed=0)
        bank.fill()                                  # resumable; scheduler="local" for dask
        theta, x = bank.to_torch()                   # for sbi's append_simulations
    """

    def __init__(self, path: str | Path, group: zarr.Group, simulator: Any | None = None) -> None:
        super().__init__(path, group)
        attrs = self.attrs
        self.seed: int = int(attrs["seed"])
        self.batch_size: int = int(attrs["batch_size"])
        self.description: dict[str, Any] = attrs["simulator"]
        self.config_hash: str = attrs["config_hash"]
        if simulator is not None:
            _check_same(self.description, self.config_hash, simulator, "opening")
            if simulator.batch_size != self.batch_size:  # the width sets the bits: use the bank's
                simulator = None
        self._simulator = simulator

    @property
    def simulator(self) -> Any:
        """The bank's :class:`TDGLSimulator` (rebuilt from the description on first use)."""
        if self._simulator is None:
            self._simulator = _simulator_from_json(canonical_json(self.description), self.batch_size)
        return self._simulator

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        simulator: Any,
        n: int,
        *,
        chunk_size: int = 64,
        seed: int | None = None,
        batch_size: int | None = None,
        exist_ok: bool = False,
    ) -> SimulationBank:
        """Create an empty bank of ``n`` samples for ``simulator`` (a :class:`TDGLSimulator`).

        Args:
            path: Directory of the Zarr store (must not exist, or be an empty directory).
            simulator: The simulator whose description, bounds and names the bank records.
            n: Number of samples.
            chunk_size: Samples per chunk (the unit of filling, checksumming and dask tasks).
            seed: Bank seed (an int >= 0); ``None`` draws one from OS entropy (recorded).
            batch_size: Vmapped width of each JAX call; default ``chunk_size``. Fixed for the
                bank's life because the width changes the floating-point bits.
            exist_ok: Reopen an existing bank instead of refusing, if its simulator, ``n``,
                ``chunk_size``, ``seed`` and ``batch_size`` agree (ValueError otherwise).

        Raises:
            ValueError: bad counts, an existing bank (without ``exist_ok``) or a non-bank path.
            OSError: the directory cannot be created (e.g. its parent is a file or read-only).
        """
        n, chunk_size = check_count("n", n), check_count("chunk_size", chunk_size)
        batch_size = chunk_size if batch_size is None else check_count("batch_size", batch_size)
        seed = None if seed is None else check_count("seed", seed, 0)
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not exist_ok:
                raise ValueError(f"{path} already exists; open it with SimulationBank.open (or pass exist_ok=True)")
            bank = cls.open(path, simulator)
            given_seed = bank.seed if seed is None else seed  # no seed given: any recorded one will do
            want = {"n": n, "chunk_size": chunk_size, "seed": given_seed, "batch_size": batch_size}
            have = {"n": bank.n, "chunk_size": bank.chunk_size, "seed": bank.seed, "batch_size": bank.batch_size}
            bad = [f"{k}: {have[k]} (bank) vs {want[k]} (given)" for k in want if have[k] != want[k]]
            if bad:
                raise ValueError(f"existing bank {path} differs: " + "; ".join(bad))
            return bank
        if seed is None:  # a fresh random bank seed, recorded in the bank
            seed = int(np.random.SeedSequence().entropy % 2**63)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise type(e)(f"cannot create bank at {path}: {e.strerror or e}") from e
        description = canonical(simulator.describe())
        d, (C, H, W), m = simulator.theta_dim, simulator.x_shape, math.ceil(n / chunk_size)
        group = zarr.open_group(store=str(path), mode="w")
        group.create_array("theta", shape=(n, d), chunks=(chunk_size, d), dtype="float32", fill_value=0.0)
        group.create_array("seeds", shape=(n,), chunks=(chunk_size,), dtype="int64", fill_value=-1)
        group.create_array("x", shape=(n, C, H, W), chunks=(chunk_size, C, H, W), dtype="float32", fill_value=0.0)
        group.create_array("checksum", shape=(m, 32), chunks=(1, 32), dtype="uint8", fill_value=0)
        group.create_array("filled", shape=(m,), chunks=(1,), dtype="bool", fill_value=False)
        from .. import __version__

        group.attrs.update(  # last: a bank without these attributes is refused by open()
            {
                "glsbi_bank": FORMAT_VERSION,
                "simulator": description,
                "config_hash": config_hash(description),
                "names": list(simulator.names),
                "low": list(simulator.low),
                "high": list(simulator.high),
                "x_shape": [C, H, W],
                "n": n,
                "chunk_size": chunk_size,
                "batch_size": batch_size,
                "seed": seed,
                "package_version": __version__,
                "zarr_version": zarr.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        logger.info("created bank %s: %d samples in %d chunks of %d, seed %d", path, n, m, chunk_size, seed)
        return cls(path, group, simulator)

    @classmethod
    def open(cls, path: str | Path, simulator: Any | None = None, *, read_only: bool = False) -> SimulationBank:
        """Open an existing bank.

        Args:
            path: The bank directory.
            simulator: If given, it must match the bank's recorded description (else ValueError
                naming the differing fields); ``None`` rebuilds the simulator from the bank.
            read_only: Open the store read-only (reading, verifying).

        Raises:
            FileNotFoundError: nothing at ``path``.
            ValueError: ``path`` is not a glsbi bank, or ``simulator`` differs from the bank's.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no bank at {path}: the path does not exist")
        try:
            group = zarr.open_group(store=str(path), mode="r" if read_only else "r+")
        except Exception as e:  # zarr raises several types for "not a zarr group"
            raise ValueError(f"{path} is not a glsbi simulation bank (no Zarr group: {e})") from e
        attrs = dict(group.attrs)
        if attrs.get("glsbi_bank") != FORMAT_VERSION:
            found = attrs.get("glsbi_bank", "missing")
            raise ValueError(f"{path} is not a glsbi simulation bank (format attribute: {found})")
        missing = [k for k in ("theta", "seeds", "x", "checksum", "filled") if k not in group]
        if missing:
            raise ValueError(f"{path} is an incomplete bank: arrays {missing} are missing")
        return cls(path, group, simulator)

    def extend(self, n: int, simulator: Any | None = None) -> None:
        """Grow the bank to ``n`` samples (new chunks start unfilled; existing ones are untouched).

        Raises:
            ValueError: ``n`` not larger than now, a partial last chunk, or ``simulator`` made with
                another configuration than the bank's.
        """
        if simulator is not None:
            _check_same(self.description, self.config_hash, simulator, "appending to")
        n = check_count("n", n, self.n + 1)
        if self.n % self.chunk_size:
            raise ValueError(f"cannot extend a bank whose last chunk is partial (n={self.n}, chunk={self.chunk_size})")
        m = math.ceil(n / self.chunk_size)
        for name, shape in (("theta", (n, self.theta_dim)), ("seeds", (n,)), ("x", (n, *self.x_shape))):
            self.group[name].resize(shape)
        self.group["checksum"].resize((m, 32))
        self.group["filled"].resize((m,))
        self.group.attrs["n"] = n
        self._refresh()

    # -- deterministic inputs ---------------------------------------------------------------
    def chunk_inputs(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """θ ``(K, d)`` float32 and seeds ``(K,)`` int64 of a full chunk (pure in seed, chunk)."""
        return chunk_inputs(self.seed, chunk, self.chunk_size, self.low, self.high)

    # -- filling ----------------------------------------------------------------------------
    def fill(
        self,
        n: int | None = None,
        *,
        batch_size: int | None = None,
        progress: bool = True,
        scheduler: Any = None,
        repair: bool = False,
        chunks: Iterable[int] | None = None,
        n_workers: int = 2,
    ) -> FillReport:
        """Simulate the missing chunks (those covering the first ``n`` samples; all by default).

        Filled chunks are never rewritten, except corrupt ones with ``repair=True``. The result is
        bit-identical however the bank is filled (one go, resumed, several workers).

        Args:
            n: Fill at least the first ``n`` samples (whole chunks); ``None``: the whole bank.
            batch_size: Must be ``None`` or the bank's width (``self.batch_size``).
            progress: Show a tqdm bar (simulations per second); otherwise log at INFO.
            scheduler: ``None`` (in this process), ``"local"`` (a new dask ``LocalCluster`` of
                ``n_workers`` single-threaded processes), ``"tcp://HOST:PORT"`` (an existing
                dask scheduler sharing this filesystem), or a ``distributed.Client``.
            repair: First :meth:`verify`, then re-simulate the corrupt chunks.
            chunks: Restrict to these chunk indices (to split work by hand).
            n_workers: Workers of ``scheduler="local"``.

        Raises:
            ValueError: bad ``n``/``batch_size``/``chunks``, or an unknown ``scheduler``.
        """
        if batch_size is not None and check_count("batch_size", batch_size) != self.batch_size:
            raise ValueError(
                f"batch_size={batch_size}: this bank is simulated with batch_size={self.batch_size} (fixed at "
                "creation, because the vmapped width changes the floating-point bits)"
            )
        m = self.n_chunks if n is None else math.ceil(check_count("n", n) / self.chunk_size)
        if n is not None and n > self.n:
            raise ValueError(f"n={n} exceeds the bank's {self.n} samples (use extend() to grow it)")
        wanted = range(m) if chunks is None else sorted({int(c) for c in chunks})
        if any(not 0 <= c < self.n_chunks for c in wanted):
            raise ValueError(f"chunks must lie in [0, {self.n_chunks}), got {list(wanted)}")
        local = scheduler is None or scheduler in ("inprocess", "sync")
        if not local:
            from ._dask import check_scheduler

            check_scheduler(scheduler, n_workers)
        if local and self.description["config"].get("dtype") == "float64":
            import jax

            if not jax.config.jax_enable_x64:
                raise ValueError("this bank's config uses float64: enable jax_enable_x64 before filling")
        t0 = time.perf_counter()
        repaired: list[int] = []
        if repair:
            report = self.verify(stray_cleanup=True)
            repaired = [c for c in report.corrupt if c in set(wanted)]
            for c in repaired:
                logger.warning("re-simulating corrupt chunk %d (%s)", c, report.corrupt[c])
                self.group["filled"][c] = False
        filled = self.filled_mask()
        todo = [c for c in wanted if not filled[c]]
        total = sum(self.chunk_len(c) for c in todo)
        logger.info("filling %d chunks (%d simulations) of %s", len(todo), total, self.path)
        if todo and local:
            self._fill_here(todo, total, progress)
        elif todo:
            from ._dask import fill_distributed

            fill_distributed(self, todo, total, scheduler=scheduler, progress=progress, n_workers=n_workers)
        report = FillReport(todo, repaired, total, time.perf_counter() - t0)
        logger.info("filled %d chunks: %.2f simulations/s", len(todo), report.sims_per_second)
        return report

    def _fill_here(self, todo: list[int], total: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="sim", desc=f"fill {self.path.name}", disable=not progress) as bar:
            for i, c in enumerate(todo):
                self.simulate_chunk(c)
                bar.update(self.chunk_len(c))
                if not progress:
                    logger.info("chunk %d done (%d/%d)", c, i + 1, len(todo))

    def simulate_chunk(self, chunk: int) -> bool:
        """Simulate and write chunk ``chunk`` unless it is marked filled; True if it was written."""
        if self.is_filled(chunk):
            logger.info("chunk %d is already filled; left as it is", chunk)
            return False
        import torch

        theta, seeds = self.chunk_inputs(chunk)  # always a full chunk: one compiled width
        # one device per chunk: bit-identical whatever the process's device count (see simulate_seeds)
        x = self.simulator.simulate_seeds(torch.from_numpy(theta), seeds, shard=False).numpy()
        k = self.chunk_len(chunk)
        self._write_chunk(chunk, theta[:k], seeds[:k], np.ascontiguousarray(x[:k]))
        return True

    def _write_chunk(self, chunk: int, theta: np.ndarray, seeds: np.ndarray, x: np.ndarray) -> None:
        s, e = self.chunk_slice(chunk)
        self.group["theta"][s:e] = theta
        self.group["seeds"][s:e] = seeds
        self.group["x"][s:e] = x
        self.group["checksum"][chunk] = chunk_digest(theta, seeds, x)
        self.group["filled"][chunk] = True  # last: the commit point of the chunk


def _upgraded(description: dict[str, Any], simulator: Any) -> dict[str, Any]:
    """The bank's description as the current package writes it: a bank written before a config
    field existed (e.g. ``scheme``, whose default is the scheme such banks were simulated with)
    still matches the same simulator. Unchanged when it cannot be rebuilt."""
    rebuild = getattr(type(simulator), "from_description", None)
    if rebuild is None:
        return description
    try:
        return canonical(rebuild(description).describe())
    except (TypeError, ValueError, KeyError):
        return description


def _check_same(description: dict[str, Any], bank_hash: str, simulator: Any, action: str) -> None:
    """ValueError naming the differing fields unless ``simulator`` matches the bank description."""
    given = canonical(simulator.describe())
    if config_hash(given) == bank_hash:
        return
    upgraded = _upgraded(description, simulator)
    if config_hash(given) == config_hash(upgraded):
        return
    diffs = _diff(upgraded, given) or [f"config hash {bank_hash[:12]} (bank) vs {config_hash(given)[:12]} (given)"]
    raise ValueError(f"{action} a bank with another simulator configuration: " + "; ".join(diffs))
