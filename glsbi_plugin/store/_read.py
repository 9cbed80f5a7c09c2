"""Reading a bank: layout properties, filled masks, integrity checks, train/validation/test splits,
tensors for sbi and a chunk-by-chunk loader that never holds the whole bank in memory.

Every chunk a reader serves (:meth:`BankReader.to_torch`, :meth:`BankReader.loader`, in worker
processes too) is read whole and checked against its checksum first: a flipped bit raises
:class:`~glsbi_plugin.store.CorruptChunkError` naming the chunk and the repair command; the bytes
are never returned."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from torch.utils.data import IterableDataset

from ._integrity import BankDamagedError, ChunkVerifier, repair_hint

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class VerifyReport:
    """Outcome of :meth:`SimulationBank.verify`.

    Attributes:
        n_chunks: Chunks in the bank.
        filled: Chunks marked filled.
        corrupt: ``{chunk: reason}`` for filled chunks that fail their checksum or cannot be read.
        stray_files: Leftover ``*.partial`` temporary files of interrupted writes (harmless).
        recoverable: Chunks not marked filled whose stored bytes verify against their checksum
            (a lost flag): the next fill marks them without simulating.
    """

    n_chunks: int
    filled: list[int]
    corrupt: dict[int, str]
    stray_files: int = 0
    recoverable: list[int] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no filled chunk is corrupt."""
        return not self.corrupt

    def summary(self) -> str:
        """One line: filled/total, corrupt chunks and why."""
        s = f"{len(self.filled)}/{self.n_chunks} chunks filled, {len(self.corrupt)} corrupt"
        if self.corrupt:
            s += ": " + "; ".join(f"chunk {c}: {r}" for c, r in sorted(self.corrupt.items()))
        if self.recoverable:
            s += f"; {len(self.recoverable)} intact chunks lost their flag (the next fill restores them)"
        return s + (f" ({self.stray_files} stray .partial files)" if self.stray_files else "")


class BankReader:
    """Read-side of :class:`~glsbi_plugin.store.SimulationBank` (layout, masks, splits, loaders)."""

    def __init__(
        self, path: str | Path, group: zarr.Group | None, attrs: dict[str, Any], damage: Sequence[str] = ()
    ) -> None:
        self.path = Path(path).resolve()
        self.group = group  # None while the root metadata are damaged (until a repair)
        #: What is wrong with the bank's metadata (empty: intact); reads refuse until a repair.
        self.damage: list[str] = list(damage)
        self._refresh(attrs)

    def _refresh(self, attrs: dict[str, Any] | None = None) -> None:
        """Re-read the attributes (the verified ``attrs`` when given)."""
        self.attrs: dict[str, Any] = dict(self.group.attrs) if attrs is None else dict(attrs)
        self.n: int = int(self.attrs["n"])
        self.seed: int = int(self.attrs["seed"])
        self.chunk_size: int = int(self.attrs["chunk_size"])
        self.names: tuple[str, ...] = tuple(self.attrs["names"])
        self.low: tuple[float, ...] = tuple(self.attrs["low"])
        self.high: tuple[float, ...] = tuple(self.attrs["high"])
        self.x_shape: tuple[int, int, int] = tuple(self.attrs["x_shape"])  # type: ignore[assignment]

    def _require_intact(self) -> None:
        """BankDamagedError (naming what is wrong and the repair) while the metadata are damaged."""
        if self.damage:
            raise BankDamagedError(f"{self.path} is damaged: {'; '.join(self.damage)}; {repair_hint(self.path)}")

    @property
    def verifier(self) -> ChunkVerifier:
        """The checksum check every chunk read goes through."""
        return ChunkVerifier(self.path, seed=self.seed, chunk_size=self.chunk_size, low=self.low, high=self.high,
                             n=self.n)

    # -- layout -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    @property
    def theta_dim(self) -> int:
        return len(self.names)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk_size)

    def chunk_slice(self, chunk: int) -> tuple[int, int]:
        """Sample range ``[start, stop)`` of a chunk."""
        if not 0 <= chunk < self.n_chunks:
            raise IndexError(f"chunk {chunk} outside [0, {self.n_chunks})")
        return chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n)

    def chunk_len(self, chunk: int) -> int:
        s, e = self.chunk_slice(chunk)
        return e - s

    def _chunk_file(self, name: str, chunk: int) -> Path:
        """File of chunk ``chunk`` of array ``name`` (Zarr v3 default key encoding ``c/i/0/..``)."""
        ndim = {"theta": 2, "seeds": 1, "x": 4, "checksum": 2, "filled": 1}[name]
        return self.path.joinpath(name, "c", str(chunk), *(["0"] * (ndim - 1)))

    # -- masks ------------------------------------------------------------------------------
    def filled_mask(self) -> np.ndarray:
        """Bool array ``(n_chunks,)``: which chunks are marked filled.

        Raises:
            ValueError: a garbled flag (run :meth:`verify`, then ``fill(repair=True)``), or damaged
                metadata (:class:`~glsbi_plugin.store.BankDamagedError`).
        """
        self._require_intact()
        try:
            return np.asarray(self.group["filled"][:], dtype=bool)
        except Exception:  # find the culprits for a useful message
            bad = []
            for c in range(self.n_chunks):
                try:
                    self.is_filled(c)
                except Exception:
                    bad.append(c)
            if not bad:
                raise
            raise ValueError(f"{self.path}: the filled flags of chunks {bad} are unreadable; repair with "
                             "fill(repair=True) (glsbi bank fill --repair)") from None

    def is_filled(self, chunk: int) -> bool:
        return bool(self.group["filled"][chunk])

    def filled_chunks(self) -> list[int]:
        return np.flatnonzero(self.filled_mask()).tolist()

    @property
    def n_filled(self) -> int:
        """Number of samples in filled chunks."""
        return sum(self.chunk_len(c) for c in self.filled_chunks())

    def info(self) -> dict[str, Any]:
        """Summary for humans and the CLI (counts, seed, hash, simulator description)."""
        filled = self.filled_chunks()
        keys = ("seed", "batch_size", "config_hash", "package_version", "zarr_version", "created")
        return {
            "path": str(self.path),
            "n": self.n,
            "chunk_size": self.chunk_size,
            "chunks_total": self.n_chunks,
            "chunks_filled": len(filled),
            "samples_filled": sum(self.chunk_len(c) for c in filled),
            "names": list(self.names),
            "low": list(self.low),
            "high": list(self.high),
            "x_shape": list(self.x_shape),
            **{k: self.attrs.get(k) for k in keys},
            "simulator": self.attrs["simulator"],
        }

    # -- integrity ---------------------------------------------------------------------------
    def verify(self, *, stray_cleanup: bool = False) -> VerifyReport:
        """Re-read every filled chunk and compare its sha256 with the stored one; also find
        unflagged chunks whose bytes verify (a lost ``filled`` flag).

        Args:
            stray_cleanup: Also delete ``*.partial`` temporary files left by killed writes
                (only safe when no other process is filling this bank).

        Raises:
            BankDamagedError: the metadata are damaged (the message says how to repair).
        """
        self._require_intact()
        filled, corrupt, recoverable = [], {}, []
        for c in range(self.n_chunks):
            try:
                flag = self.is_filled(c)
            except Exception as e:  # an unreadable flag counts as a corrupt chunk
                corrupt[c] = f"filled flag unreadable ({type(e).__name__})"
                continue
            if flag:
                filled.append(c)
                reason = self._check_chunk(c)
                if reason:
                    corrupt[c] = reason
            elif self._chunk_file("checksum", c).exists() and self._check_chunk(c) is None:
                recoverable.append(c)
        stray = sorted(self.path.rglob("*.partial"))
        if stray_cleanup:
            for p in stray:
                p.unlink(missing_ok=True)
        report = VerifyReport(self.n_chunks, filled, corrupt, len(stray), recoverable)
        (logger.warning if corrupt else logger.info)("verify %s: %s", self.path, report.summary())
        return report

    def _check_chunk(self, chunk: int) -> str | None:
        if getattr(self, "_verifier", None) is None or self._verifier_key != (self.n, self.seed, self.chunk_size):
            self._verifier, self._verifier_key = self.verifier, (self.n, self.seed, self.chunk_size)
        reason, _ = self._verifier.check(self.group, chunk)
        if reason is None:
            return None
        missing = [name for name in ("theta", "seeds", "x", "checksum") if not self._chunk_file(name, chunk).exists()]
        return f"{reason} (chunk file of {', '.join(missing)} missing)" if missing else reason

    # -- splits -----------------------------------------------------------------------------
    def split_indices(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, by: str = "chunk"
    ) -> dict[str, np.ndarray]:
        """Disjoint train/validation/test sample indices (sorted int64), filled samples only.

        The assignment is a seeded permutation of *all* chunks (``by="chunk"``) or samples
        (``by="sample"``) of the bank, cut at the cumulative fractions, so a sample keeps its split
        while the bank fills; unfilled samples are then dropped. Splitting by chunk keeps whole
        chunks together (cheap to read, no near-duplicate leakage between splits).

        Args:
            fractions: Three non-negative numbers summing to 1 (train, validation, test).
            seed: Seed of the permutation.
            by: ``"chunk"`` or ``"sample"``.
        """
        f = np.asarray(fractions, dtype=np.float64)
        if f.shape != (3,) or not np.all(np.isfinite(f)) or (f < 0).any() or abs(f.sum() - 1) > 1e-6:
            raise ValueError(f"fractions={tuple(fractions)}: need three non-negative numbers summing to 1")
        if by not in ("chunk", "sample"):
            raise ValueError(f"by={by!r}: use 'chunk' or 'sample'")
        units = self.n_chunks if by == "chunk" else self.n
        perm = np.random.default_rng(np.random.SeedSequence(int(seed))).permutation(units)
        cuts = np.round(np.cumsum(f) * units).astype(int)
        cuts[-1] = units
        parts = np.split(perm, cuts[:-1])
        filled = np.repeat(self.filled_mask(), self.chunk_size)[: self.n]
        out = {}
        for name, part in zip(SPLITS, parts, strict=True):
            if by == "chunk":
                part = np.concatenate([np.arange(*self.chunk_slice(int(c))) for c in part] or [np.zeros(0, int)])
            part = np.sort(part.astype(np.int64))
            out[name] = part[filled[part]]
        return out

    def _select(self, split: str | None, **split_kwargs: Any) -> np.ndarray:
        if "split_seed" in split_kwargs:
            split_kwargs["seed"] = split_kwargs.pop("split_seed")
        if split is None or split == "all":
            return np.flatnonzero(np.repeat(self.filled_mask(), self.chunk_size)[: self.n]).astype(np.int64)
        split = {"val": "validation", "valid": "validation"}.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: use one of {SPLITS} or 'all'")
        return self.split_indices(**split_kwargs)[split]

    # -- tensors ----------------------------------------------------------------------------
    def to_torch(
        self, split: str | None = None, *, observation: Any = None, verify: bool = True, **split_kwargs: Any
    ) -> tuple[Any, Any]:
        """``(theta, x)`` torch tensors of the filled samples (or of one split), for sbi's
        ``append_simulations``. Reads chunk by chunk; the result holds the selection in memory.

        Args:
            split: ``None``/``"all"`` (every filled sample) or a split name of :meth:`split_indices`.
            observation: Derive the images of this observation of :mod:`glsbi_plugin.physics`
                (e.g. ``STM(...)``) from the stored fields, with each row's own measurement noise
                (:meth:`~glsbi_plugin.sbi_simulator.TDGLSimulator.derive`): one bank of the physical
                fields serves every instrument. ``None``: the stored images.
            verify: Check every chunk against its checksum before using it (default; the cost is
                in ``benchmarks/results/bank_fill.md``). ``False`` only to time the check.
            **split_kwargs: ``fractions``, ``split_seed`` (or ``seed``) and ``by`` of :meth:`split_indices`.

        Raises:
            CorruptChunkError: a chunk fails its checksum (a ``ValueError`` naming the chunk and
                the repair command); nothing is returned.
            BankDamagedError: the bank's metadata are damaged.
        """
        import torch

        idx = self._select(split, **split_kwargs)
        thetas, xs = [], []
        verifier = self.verifier if verify else None
        for theta, x, seeds in _read_rows(self.group, idx, self.chunk_size, seeds=observation is not None,
                                          verifier=verifier):
            if observation is not None:
                x = self.simulator.derive(observation, torch.from_numpy(theta), seeds, torch.from_numpy(x)).numpy()
            thetas.append(theta)
            xs.append(x)
        if not thetas:
            shape = self.x_shape if observation is None else observation.x_shape(self.simulator.config)
            return torch.zeros((0, self.theta_dim)), torch.zeros((0, *shape))
        return torch.from_numpy(np.concatenate(thetas)), torch.from_numpy(np.concatenate(xs))

    def loader(
        self,
        batch_size: int,
        split: str | None = "train",
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        verify: bool = True,
        **split_kwargs: Any,
    ) -> Any:
        """A torch ``DataLoader`` of ``(theta, x)`` batches read chunk by chunk.

        Memory holds at most one chunk plus one batch. Shuffling permutes the chunk order and the
        rows within each chunk, anew every epoch (seeded by ``seed`` and the epoch number).

        Args:
            batch_size: Rows per batch.
            split: ``"train"``, ``"validation"``, ``"test"`` or ``None``/``"all"``.
            shuffle: Default True for ``"train"``, False otherwise.
            seed: Shuffling seed.
            drop_last: Drop a final short batch.
            num_workers: DataLoader worker processes (chunks are dealt out among them).
            verify: Check every chunk against its checksum as it is read (default); a corrupt
                chunk raises :class:`~glsbi_plugin.store.CorruptChunkError` during iteration.
            **split_kwargs: ``fractions``, ``split_seed`` (the ``seed`` of :meth:`split_indices`) and ``by``.
        """
        from torch.utils.data import DataLoader

        idx = self._select(split, **split_kwargs)
        shuffle = (split == "train") if shuffle is None else shuffle
        ds = _ChunkDataset(str(self.path), idx, self.chunk_size, int(batch_size), shuffle, seed, drop_last,
                           self.verifier if verify else None)
        # spawned workers: forking a process that runs JAX's threads can deadlock
        context = "spawn" if num_workers else None
        return DataLoader(ds, batch_size=None, num_workers=num_workers, multiprocessing_context=context)


def _read_rows(
    group: zarr.Group,
    idx: np.ndarray,
    chunk_size: int,
    order: np.ndarray | None = None,
    *,
    seeds: bool = False,
    verifier: ChunkVerifier | None = None,
) -> Iterator:
    """Yield ``(theta, x, seeds)`` numpy blocks of the rows ``idx``, one chunk at a time (``seeds``
    is None unless asked for: the simulation seeds that derived observations need). With a
    ``verifier`` every chunk is read whole and checked against its checksum first."""
    idx = np.sort(idx)
    chunks = np.unique(idx // chunk_size) if order is None else order
    theta_arr, x_arr = group["theta"], group["x"]  # open the arrays once
    seeds_arr = group["seeds"] if seeds else None
    for c in chunks:
        lo, hi = np.searchsorted(idx, [c * chunk_size, (c + 1) * chunk_size])
        rows = idx[lo:hi]
        if rows.size == 0:
            continue
        if verifier is not None:
            theta_c, seeds_c, x_c = verifier.read(group, int(c))
            r = rows - int(c) * chunk_size
            yield theta_c[r], x_c[r], (seeds_c[r] if seeds else None)
            continue
        s, e = int(rows[0]), int(rows[-1]) + 1
        sd = None if seeds_arr is None else seeds_arr[s:e][rows - s]
        yield theta_arr[s:e][rows - s], x_arr[s:e][rows - s], sd


class _ChunkDataset(IterableDataset):
    """Iterable of ready-made ``(theta, x)`` batches (DataLoader uses ``batch_size=None``)."""

    def __init__(
        self,
        path: str,
        idx: np.ndarray,
        chunk_size: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        verifier: ChunkVerifier | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.path, self.idx, self.chunk_size, self.batch_size = path, idx, chunk_size, batch_size
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        self.verifier = verifier

    def __len__(self) -> int:
        return len(self.idx) // self.batch_size if self.drop_last else math.ceil(len(self.idx) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        # in worker processes ``self`` is a fresh copy each epoch (epoch stays 0): the loader's
        # per-epoch base seed (``info.seed - info.id``, the same in every worker) varies instead
        epoch = self.epoch if info is None else (info.seed - info.id) % 2**63
        rng = np.random.default_rng([self.seed, epoch])
        self.epoch += 1
        chunks = np.unique(self.idx // self.chunk_size)
        if self.shuffle:
            chunks = rng.permutation(chunks)
        if info is not None:
            chunks = chunks[info.id :: info.num_workers]
        group = zarr.open_group(store=self.path, mode="r")
        buf_t: list[np.ndarray] = []
        buf_x: list[np.ndarray] = []
        held = 0
        for theta, x, _ in _read_rows(group, self.idx, self.chunk_size, order=chunks, verifier=self.verifier):
            if self.shuffle:
                p = rng.permutation(len(theta))
                theta, x = theta[p], x[p]
            buf_t.append(theta)
            buf_x.append(x)
            held += len(theta)
            while held >= self.batch_size:
                t, xx = np.concatenate(buf_t), np.concatenate(buf_x)
                yield torch.from_numpy(t[: self.batch_size]), torch.from_numpy(xx[: self.batch_size])
                buf_t, buf_x, held = [t[self.batch_size :]], [xx[self.batch_size :]], held - self.batch_size
        if held and not self.drop_last:
            yield torch.from_numpy(np.concatenate(buf_t)), torch.from_numpy(np.concatenate(buf_x))
