r"""``SimulationBank``: a resumable, checksummed Zarr store of (θ, x) simulations.

Layout (a Zarr v3 group; ``K`` = chunk size, ``m`` = number of chunks)::

    theta     (n, d)        float32   chunks (K, d)
    seeds     (n,)          int64     chunks (K,)
    x         (n, C, H, W)  float32   chunks (K, C, H, W)
    checksum  (m, 32)       uint8     chunks (1, 32)   sha256 of a chunk's θ, seeds and x
    filled    (m,)          bool      chunks (1,)      written last: a crash leaves it unset

The group attributes hold the simulator description (JSON), its config hash, the prior bounds and
names, the bank seed, the chunk and batch sizes, and the package version, plus ``integrity``: a
digest of every attribute that decides a chunk's contents, which :meth:`SimulationBank.open`
recomputes (an edit is refused naming the field). A recorded copy of the attributes sits in
``theta``'s attributes (:mod:`._integrity`); repairs restore lost or edited metadata from it. A
chunk is written whole (θ, seeds, x, checksum), read back and verified, then marked ``filled``, by
one writer (a file lock, :mod:`._lock`), into its own files, so workers never share a file and a
killed fill leaves every chunk either complete and marked or unmarked. Every read verifies.

Banks written before the integrity digest open as they are (the config hash, the layout and the
first filled chunk's θ and seeds are checked against the attributes instead); their first fill adds
the digest and the recorded copy, never touching the data.

Bit-identity: XLA on CPU gives bit-identical rows for the same θ, seed and *vmapped batch width*
(row position and process do not matter; the width does, by ~4e-8), with one version of the
forward model's compiled programs (a version that compiles them differently may change the last
bits, ~1e-6 relative; rows already stored are never rewritten). The bank therefore fixes the
width at creation (``batch_size``, default the chunk size) and always simulates full chunks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .._validation import check_count
from ._integrity import (
    ARRAYS,
    RECORD_KEY,
    BankDamagedError,
    _array_meta_problem,
    array_metadata,
    array_specs,
    classify,
    inspect_bank,
    layout_problems,
    read_json,
    remove_created,
    remove_half_created,
    repair_hint,
    write_json_atomic,
)
from ._lock import writer_lock
from ._meta import (
    FORMAT_VERSION,
    canonical,
    canonical_json,
    chunk_digest,
    chunk_inputs,
    config_hash,
    integrity_record,
)
from ._meta import description_diff as _diff
from ._progress import heartbeat
from ._read import BankReader

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FillReport:
    """Outcome of :meth:`SimulationBank.fill`, counting only what this call did.

    Attributes:
        simulated: Chunks this process (or its dask workers) simulated and wrote, repaired ones
            included; chunks another writer had filled meanwhile are not counted.
        repaired: Chunks that failed verification and were re-simulated.
        n_simulations: Simulations in ``simulated``.
        seconds: Wall time of the call.
        recovered: Intact chunks that had lost their ``filled`` flag, marked again without simulating.
    """

    simulated: list[int]
    repaired: list[int]
    n_simulations: int
    seconds: float
    recovered: list[int] = dataclasses.field(default_factory=list)

    @property
    def sims_per_second(self) -> float:
        return self.n_simulations / self.seconds if self.seconds > 0 else 0.0


class FillInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`SimulationBank.fill`: its message is the one line to show (what was
    filled, and that the bank is consistent and resumes with ``glsbi bank fill PATH``)."""


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

    def __init__(
        self,
        path: str | Path,
        group: zarr.Group | None,
        simulator: Any | None = None,
        *,
        attrs: dict[str, Any] | None = None,
        damage: Iterable[str] = (),
        legacy: bool = False,
    ) -> None:
        super().__init__(path, group, dict(group.attrs) if attrs is None else attrs, list(damage))  # type: ignore[union-attr]
        attrs = self.attrs
        self.batch_size: int = int(attrs["batch_size"])
        self.description: dict[str, Any] = attrs["simulator"]
        self.config_hash: str = attrs["config_hash"]
        self._legacy = legacy  # written before the integrity digest: upgraded by the first fill
        self._lock_depth = 0
        self._recovered_now: list[int] = []  # chunks simulate_chunk re-marked without simulating
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

    @contextlib.contextmanager
    def _writing(self, action: str, wait: float | None = 0.0) -> Iterator[None]:
        """Hold the bank's writer lock (re-entrant within this object)."""
        if self._lock_depth:
            yield
            return
        with writer_lock(self.path, wait=wait, action=action):
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1

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
        overwrite: bool = False,
    ) -> SimulationBank:
        """Create an empty bank of ``n`` samples for ``simulator`` (a :class:`TDGLSimulator`).

        A directory left half-created by an interrupted ``create`` (only metadata, nothing
        simulated) is replaced, with a warning. A failed creation (e.g. a full disk) removes what it
        wrote.

        Args:
            path: Directory of the Zarr store (must not exist, or be an empty directory).
            simulator: The simulator whose description, bounds and names the bank records.
            n: Number of samples.
            chunk_size: Samples per chunk (the unit of filling, checksumming and dask tasks).
            seed: Bank seed (an int in ``[0, 2**63 - 1]``); ``None`` draws one from OS entropy (recorded).
            batch_size: Vmapped width of each JAX call; default ``chunk_size``. Fixed for the
                bank's life because the width changes the floating-point bits.
            exist_ok: Reopen an existing bank instead of refusing, if its simulator, ``n``,
                ``chunk_size``, ``seed`` and ``batch_size`` agree (ValueError otherwise).
            overwrite: Delete an existing bank at ``path`` (and everything simulated in it) and
                create a new one (the CLI's ``--force``). Never deletes a directory that is not a bank.

        Raises:
            ValueError: bad counts, an existing bank (without ``exist_ok``/``overwrite``; the message
                says how to complete it or start afresh) or a non-bank path.
            OSError: the directory cannot be created or written (e.g. read-only or a full disk).
        """
        n, chunk_size = check_count("n", n), check_count("chunk_size", chunk_size)
        batch_size = chunk_size if batch_size is None else check_count("batch_size", batch_size)
        seed = None if seed is None else _check_bank_seed(seed)
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            kind = classify(path)
            if kind == "half-created":
                logger.warning("replacing the half-created bank at %s (its creation was interrupted; it held no "
                               "simulations)", path)
                remove_half_created(path)
            elif kind == "other":
                raise ValueError(f"{path} exists and is not a glsbi simulation bank (nor an empty directory); "
                                 "choose another path")
            elif overwrite:
                with writer_lock(path, action="overwrite"):
                    logger.warning("overwrite: deleting the existing bank at %s", path)
                    shutil.rmtree(path)
            elif not exist_ok:
                raise ValueError(
                    f"{path} already exists and holds a simulation bank; to complete it run `glsbi bank fill {path}` "
                    "(SimulationBank.open(path).fill()), to use it as it is open it (SimulationBank.open), "
                    "or to start afresh choose another path or pass --force (overwrite=True), which deletes it"
                )
            else:
                return cls._reopen_matching(path, simulator, n, chunk_size, seed, batch_size)
        if seed is None:  # a fresh random bank seed, recorded in the bank
            seed = int(np.random.SeedSequence().entropy % 2**63)
        made_dir = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise type(e)(f"cannot create bank at {path}: {e.strerror or e}") from e
        description = canonical(simulator.describe())
        from .. import __version__

        attrs: dict[str, Any] = {
            "glsbi_bank": FORMAT_VERSION,
            "simulator": description,
            "config_hash": config_hash(description),
            "names": list(simulator.names),
            "low": list(simulator.low),
            "high": list(simulator.high),
            "x_shape": list(simulator.x_shape),
            "n": n,
            "chunk_size": chunk_size,
            "batch_size": batch_size,
            "seed": seed,
            "package_version": __version__,
            "zarr_version": zarr.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        attrs["integrity"] = integrity_record(attrs)
        try:
            with writer_lock(path, action="create"):
                group = zarr.open_group(store=str(path), mode="w")
                for name, spec in array_specs(attrs).items():
                    group.create_array(name, **spec)
                group["theta"].attrs[RECORD_KEY] = attrs  # the recorded copy, in another file
                group.attrs.update(attrs)  # last: the commit point; without it the bank is half-created
        except BaseException as e:
            remove_created(path, made_dir)
            if isinstance(e, OSError):
                raise type(e)(f"cannot create bank at {path}: {e.strerror or e}; nothing was left behind") from e
            raise
        logger.info("created bank %s: %d samples in %d chunks of %d, seed %d", path, n,
                    math.ceil(n / chunk_size), chunk_size, seed)
        return cls(path, group, simulator, attrs=attrs)

    @classmethod
    def _reopen_matching(
        cls, path: Path, simulator: Any, n: int, chunk_size: int, seed: int | None, batch_size: int
    ) -> SimulationBank:
        bank = cls.open(path, simulator)
        given_seed = bank.seed if seed is None else seed  # no seed given: any recorded one will do
        want = {"n": n, "chunk_size": chunk_size, "seed": given_seed, "batch_size": batch_size}
        have = {"n": bank.n, "chunk_size": bank.chunk_size, "seed": bank.seed, "batch_size": bank.batch_size}
        bad = [f"{k}: {have[k]} (bank) vs {want[k]} (given)" for k in want if have[k] != want[k]]
        if bad:
            raise ValueError(f"existing bank {path} differs: " + "; ".join(bad))
        return bank

    @classmethod
    def open(cls, path: str | Path, simulator: Any | None = None, *, read_only: bool = False) -> SimulationBank:
        """Open an existing bank, checking its metadata.

        The integrity digest of the attributes is recomputed: an edited attribute is named (with the
        recorded value). Damage that a repair can undo (lost or edited metadata, array metadata
        that disagree with the attributes) is recorded in :attr:`damage`: a read-only open refuses
        at once; otherwise every read and fill refuses until ``fill(repair=True)``.

        Args:
            path: The bank directory.
            simulator: If given, it must match the bank's recorded description (else ValueError
                naming the differing fields); ``None`` rebuilds the simulator from the bank.
            read_only: Open the store read-only (reading, verifying).

        Raises:
            FileNotFoundError: nothing at ``path``.
            ValueError: ``path`` is not a glsbi bank, was half-created, is damaged beyond repair or
                (read-only) damaged (:class:`BankDamagedError`), or ``simulator`` differs.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no bank at {path}: the path does not exist")
        if not path.is_dir():
            raise ValueError(f"{path} is not a glsbi simulation bank (not a directory)")
        attrs, damage, legacy = inspect_bank(path)
        group = None
        if not any(d.startswith("the root metadata") for d in damage):
            try:
                group = zarr.open_group(store=str(path), mode="r" if read_only else "r+")
            except Exception as e:  # zarr raises several types for "not a zarr group"
                raise ValueError(f"{path} is not a glsbi simulation bank (no Zarr group: {e})") from e
        if damage and read_only:
            raise BankDamagedError(f"{path} is damaged: {'; '.join(damage)}; {repair_hint(path)}")
        if damage:
            logger.warning("bank %s is damaged: %s; %s", path, "; ".join(damage), repair_hint(path))
        bank = cls(path, group, simulator, attrs=attrs, damage=damage, legacy=legacy)
        if legacy and not damage:
            bank._check_legacy_inputs()
        return bank

    def _check_legacy_inputs(self) -> None:
        """A bank without the integrity digest: its first filled chunk's θ and seeds must derive
        from the recorded seed, chunk size and box (an edited seed or box shows here)."""
        try:
            filled = np.flatnonzero(np.asarray(self.group["filled"][:], dtype=bool))  # type: ignore[index]
        except Exception:
            return  # an unreadable flag: verify() and repair deal with it
        if filled.size == 0:
            return
        c = int(filled[0])
        s, e = self.chunk_slice(c)
        try:
            theta, seeds = self.group["theta"][s:e], self.group["seeds"][s:e]  # type: ignore[index]
        except Exception:
            return  # a garbled chunk: verify() names it
        want_theta, want_seeds = self.chunk_inputs(c)
        if not (np.array_equal(theta, want_theta[: e - s]) and np.array_equal(seeds, want_seeds[: e - s])):
            raise BankDamagedError(
                f"{self.path}: the θ and seeds stored in chunk {c} do not derive from the recorded seed "
                f"{self.seed}, chunk_size {self.chunk_size} and box {list(self.low)}-{list(self.high)}: the "
                "attributes in zarr.json were edited; restore them (this bank predates the recorded copy "
                "that a repair would restore them from)"
            )

    def extend(self, n: int, simulator: Any | None = None, *, wait: float | None = 0.0) -> None:
        """Grow the bank to ``n`` samples (new chunks start unfilled; existing ones are untouched).

        Args:
            n: The new number of samples.
            simulator: If given, it must match the bank's configuration.
            wait: Seconds to wait for another writer's lock (:class:`~glsbi_plugin.store.BankLockedError`).

        Raises:
            ValueError: ``n`` not larger than now, a partial last chunk, or ``simulator`` made with
                another configuration than the bank's.
        """
        self._require_intact()
        if simulator is not None:
            _check_same(self.description, self.config_hash, simulator, "appending to")
        n = check_count("n", n, self.n + 1)
        if self.n % self.chunk_size:
            raise ValueError(f"cannot extend a bank whose last chunk is partial (n={self.n}, chunk={self.chunk_size})")
        with self._writing("extend"):
            self._upgrade()
            attrs = {**self.attrs, "n": n}
            attrs["integrity"] = integrity_record(attrs)
            group = self.group
            assert group is not None
            group["theta"].attrs[RECORD_KEY] = attrs  # the record first, the commit point last
            for name, spec in array_specs(attrs).items():
                group[name].resize(spec["shape"])
            group.attrs.update(attrs)
            self._refresh(attrs)

    # -- deterministic inputs ---------------------------------------------------------------
    def chunk_inputs(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """θ ``(K, d)`` float32 and seeds ``(K,)`` int64 of a full chunk (pure in seed, chunk)."""
        return chunk_inputs(self.seed, chunk, self.chunk_size, self.low, self.high)

    # -- metadata repair and upgrade ----------------------------------------------------------
    def _upgrade(self) -> None:
        """Add the integrity digest and the recorded copy to a bank written without them, and
        rewrite a missing or stale recorded copy (attributes only; the data are never touched)."""
        group = self.group
        assert group is not None
        if self._legacy:
            attrs = {**self.attrs}
            attrs["integrity"] = integrity_record(attrs)
            group["theta"].attrs[RECORD_KEY] = attrs
            group.attrs["integrity"] = attrs["integrity"]
            self._legacy = False
            self._refresh(attrs)
            logger.info("upgraded %s: added the integrity digest of its metadata (data untouched)", self.path)
        elif group["theta"].attrs.get(RECORD_KEY) != self.attrs:
            group["theta"].attrs[RECORD_KEY] = self.attrs
            logger.info("%s: rewrote the recorded copy of its metadata", self.path)

    def _repair_metadata(self) -> list[str]:
        """Restore lost or edited metadata from the verified attributes; returns what was done."""
        if not self.damage:
            return []
        done = list(self.damage)
        attrs = self.attrs
        root = read_json(self.path / "zarr.json")
        if not isinstance(root, dict) or root.get("attributes") != attrs:
            write_json_atomic(self.path / "zarr.json", {"attributes": attrs, "zarr_format": 3, "node_type": "group"})
        specs = array_specs(attrs)
        for name in ARRAYS:
            if _array_meta_problem(self.path, name, specs[name]) is None:
                continue
            meta = array_metadata(name, specs[name], self.path)
            if name == "theta":
                meta.setdefault("attributes", {})[RECORD_KEY] = attrs
            (self.path / name).mkdir(exist_ok=True)
            write_json_atomic(self.path / name / "zarr.json", meta)
        left = layout_problems(self.path, attrs)
        if left:  # pragma: no cover - the rebuild writes exactly what the check expects
            raise BankDamagedError(f"{self.path}: could not repair the metadata: {'; '.join(left)}")
        self.group = zarr.open_group(store=str(self.path), mode="r+")
        self.damage = []
        self._upgrade()
        logger.warning("repaired the metadata of %s: %s", self.path, "; ".join(done))
        return done

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
        wait: float | None = 0.0,
    ) -> FillReport:
        """Simulate the missing chunks (those covering the first ``n`` samples; all by default).

        Filled chunks are never rewritten, except those that fail verification with
        ``repair=True``; a chunk whose bytes verify keeps its flag. The result is bit-identical
        however the bank is filled (one go, resumed, several workers). One writer at a time: the
        bank's lock is held throughout. Progress shows at once and is refreshed every second while
        a chunk runs (the first chunk also compiles the forward model).

        Args:
            n: Fill at least the first ``n`` samples (whole chunks); ``None``: the whole bank.
            batch_size: Must be ``None`` or the bank's width (``self.batch_size``).
            progress: Show a tqdm bar (simulations per second); otherwise log at INFO.
            scheduler: ``None`` (in this process), ``"local"`` (a new dask ``LocalCluster`` of
                ``n_workers`` single-threaded processes), ``"tcp://HOST:PORT"`` (an existing
                dask scheduler sharing this filesystem), or a ``distributed.Client``.
            repair: First restore damaged metadata (from the recorded copy), verify every chunk,
                re-simulate the corrupt ones and re-mark intact chunks that lost their flag.
            chunks: Restrict to these chunk indices (to split work by hand).
            n_workers: Workers of ``scheduler="local"``.
            wait: Seconds to wait while another process holds the bank's writer lock; ``0``
                (default) leaves at once, ``None`` waits as long as it takes.

        Raises:
            ValueError: bad ``n``/``batch_size``/``chunks``, an unknown ``scheduler``, or damaged
                metadata without ``repair`` (:class:`~glsbi_plugin.store.BankDamagedError`).
            BankLockedError: another process is writing the bank (an ``OSError``).
            FillInterrupted: Ctrl-C (a ``KeyboardInterrupt`` whose message is the one line to show).
        """
        if batch_size is not None and check_count("batch_size", batch_size) != self.batch_size:
            raise ValueError(
                f"batch_size={batch_size}: this bank is simulated with batch_size={self.batch_size} (fixed at "
                "creation, because the vmapped width changes the floating-point bits)"
            )
        m = self.n_chunks if n is None else math.ceil(check_count("n", n) / self.chunk_size)
        if n is not None and n > self.n:
            raise ValueError(f"n={n} exceeds the bank's {self.n} samples (use extend() to grow it)")
        if chunks is not None:
            chunks = list(chunks)
            if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in chunks):
                raise ValueError(f"chunks must be integers in [0, {self.n_chunks}), got {chunks}")
        wanted = range(m) if chunks is None else sorted({int(c) for c in chunks})
        if any(not 0 <= c < self.n_chunks for c in wanted):
            raise ValueError(f"chunks must lie in [0, {self.n_chunks}), got {list(wanted)}")
        if not isinstance(repair, bool):
            raise ValueError(f"repair={repair!r}: must be True or False")
        local = scheduler is None or scheduler in ("inprocess", "sync")
        if not local:
            from ._dask import check_scheduler

            check_scheduler(scheduler, n_workers)
        if local and self.description["config"].get("dtype") == "float64":
            import jax

            if not jax.config.jax_enable_x64:
                raise ValueError("this bank's config uses float64: enable jax_enable_x64 before filling")
        if not repair:
            self._require_intact()
        t0 = time.perf_counter()
        written: list[int] = []
        self._recovered_now = []
        with self._writing("fill", wait):
            try:
                repaired, recovered = self._repair(set(wanted), written) if repair else ([], [])
                self._require_intact()
                self._upgrade()
                filled = self.filled_mask()
                todo = [c for c in wanted if not filled[c]]
                total = sum(self.chunk_len(c) for c in todo)
                logger.info("filling %d chunks (%d simulations) of %s", len(todo), total, self.path)
                if todo and local:
                    self._fill_here(todo, total, progress, written)
                elif todo:
                    from ._dask import fill_distributed

                    fill_distributed(self, todo, total, scheduler=scheduler, progress=progress, n_workers=n_workers,
                                     written=written)
            except KeyboardInterrupt:
                raise FillInterrupted(self._interrupted_message(written)) from None
        recovered += self._recovered_now
        self._recovered_now = []
        written.sort()
        report = FillReport(written, repaired, sum(self.chunk_len(c) for c in written), time.perf_counter() - t0,
                            sorted(set(recovered)))
        logger.info("simulated %d chunks: %.2f simulations/s", len(written), report.sims_per_second)
        return report

    def _interrupted_message(self, written: list[int]) -> str:
        try:
            done = f"{len(self.filled_chunks())}/{self.n_chunks} chunks filled"
        except Exception:  # pragma: no cover - the flags are readable during a fill
            done = "the filled chunks are intact"
        return (f"fill of {self.path} interrupted after simulating {len(written)} chunks ({done}; every filled "
                f"chunk is complete and verified): resume with `glsbi bank fill {self.path}`")

    def _repair(self, wanted: set[int], written: list[int]) -> tuple[list[int], list[int]]:
        """Metadata first, then chunks: re-simulate those that fail verification (transactionally,
        one at a time) and re-mark intact chunks whose flag was lost. Returns (repaired, recovered)."""
        self._repair_metadata()
        self._require_intact()
        report = self.verify(stray_cleanup=True)
        recovered = [c for c in report.recoverable if c in wanted]
        for c in recovered:
            self.group["filled"][c] = True  # type: ignore[index]
        repaired = [c for c in sorted(report.corrupt) if c in wanted]
        for c in repaired:
            logger.warning("re-simulating corrupt chunk %d (%s)", c, report.corrupt[c])
            self._resimulate(c)
            written.append(c)
        return repaired, recovered

    def _resimulate(self, chunk: int) -> None:
        """Simulate ``chunk`` again and rewrite only the arrays whose stored bytes differ (an intact
        chunk file is never rewritten), then its checksum; unmarked until it verifies."""
        theta, seeds, x = self._simulate_inputs(chunk)
        s, e = self.chunk_slice(chunk)
        group = self.group
        assert group is not None
        with contextlib.suppress(Exception):
            group["filled"][chunk] = False  # the chunk is being rewritten: unmarked until committed
        for name, value in (("theta", theta), ("seeds", seeds), ("x", x)):
            try:
                same = np.array_equal(group[name][s:e], value) and self._chunk_file(name, chunk).exists()
            except Exception:  # an undecodable chunk file
                same = False
            if not same:
                group[name][s:e] = value
        group["checksum"][chunk] = chunk_digest(theta, seeds, x)
        self._commit(chunk)

    def _fill_here(self, todo: list[int], total: int, progress: bool, written: list[int]) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="sim", desc=f"fill {self.path.name}", disable=not progress) as bar:
            for i, c in enumerate(todo):
                note = " (includes compiling the forward model)" if i == 0 else ""
                with heartbeat(bar, f"chunk {c} ({i + 1}/{len(todo)}){note}", progress):
                    if self.simulate_chunk(c):
                        written.append(c)
                bar.update(self.chunk_len(c))
                if not progress:
                    logger.info("chunk %d done (%d/%d)", c, i + 1, len(todo))

    def simulate_chunk(self, chunk: int) -> bool:
        """Simulate and write chunk ``chunk`` unless it is marked filled; True if it was written.

        An unmarked chunk whose stored bytes verify against its checksum (a lost flag) is marked
        again instead of simulated (returns False).
        """
        if self.is_filled(chunk):
            logger.info("chunk %d is already filled; left as it is", chunk)
            return False
        if self._chunk_file("checksum", chunk).exists() and self._check_chunk(chunk) is None:
            self._commit(chunk)
            self._recovered_now.append(chunk)
            logger.info("chunk %d was intact but unmarked: marked filled without simulating", chunk)
            return False
        self._write_chunk(chunk, *self._simulate_inputs(chunk))
        return True

    def _simulate_inputs(self, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        theta, seeds = self.chunk_inputs(chunk)  # always a full chunk: one compiled width
        # one device per chunk: bit-identical whatever the process's device count (see simulate_seeds)
        x = self.simulator.simulate_seeds(torch.from_numpy(theta), seeds, shard=False).numpy()
        k = self.chunk_len(chunk)
        return theta[:k], seeds[:k], np.ascontiguousarray(x[:k])

    def _write_chunk(self, chunk: int, theta: np.ndarray, seeds: np.ndarray, x: np.ndarray) -> None:
        s, e = self.chunk_slice(chunk)
        group = self.group
        assert group is not None
        group["theta"][s:e] = theta
        group["seeds"][s:e] = seeds
        group["x"][s:e] = x
        group["checksum"][chunk] = chunk_digest(theta, seeds, x)
        self._commit(chunk)

    def _commit(self, chunk: int) -> None:
        """Read the chunk back, verify it, then set its ``filled`` flag (the commit point)."""
        reason = self._check_chunk(chunk)
        if reason is not None:
            raise OSError(f"{self.path}: chunk {chunk} did not read back as written ({reason}); it was left "
                          "unmarked: check the disk, then fill again")
        self.group["filled"][chunk] = True  # type: ignore[index]


def _check_bank_seed(seed: Any) -> int:
    """A bank seed: an integer in ``[0, 2**63 - 1]`` (no bool, float or string)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r}: the bank seed must be an integer in [0, 2**63 - 1]")
    return int(seed)


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
