"""Bank metadata: canonical simulator descriptions, config hashes, field-by-field diffs, and the
deterministic per-chunk inputs (θ rows and simulation seeds) drawn from the bank seed.

Every chunk is a pure function of ``(bank seed, chunk index)``: chunk ``c`` draws its θ rows and
seeds from ``numpy.random.Generator(PCG64(SeedSequence(bank_seed, spawn_key=(c,))))``, always for a
full chunk of ``chunk_size`` rows (the last chunk of a bank is truncated afterwards), so sample ``i``
does not depend on the bank's length, on the fill order, or on which process simulated it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Version of the on-disk layout (``attrs["glsbi_bank"]``).
FORMAT_VERSION = 1


def canonical(value: Any) -> Any:
    """A JSON-ready copy in which integral floats are ints (so ``h=1`` and ``h=1.0`` hash alike).

    Tuples become lists and mapping keys strings; bools, strings and None pass through.
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not np.isfinite(f):
            raise ValueError(f"simulator description holds a non-finite number ({f}); cannot hash it")
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot put {type(value).__name__} into a bank description")


def canonical_json(description: Mapping[str, Any]) -> str:
    """Canonical JSON text (sorted keys, no spaces) of a simulator description."""
    return json.dumps(canonical(description), sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(description: Mapping[str, Any]) -> str:
    """``sha256`` (hex) of :func:`canonical_json` of a simulator description."""
    return hashlib.sha256(canonical_json(description).encode()).hexdigest()


def description_diff(bank: Any, given: Any, prefix: str = "") -> list[str]:
    """Differing fields of two descriptions, e.g. ``["config.steps: 2000 (bank) vs 500 (given)"]``.

    Dicts are compared key by key (dotted paths), lists of dicts/lists element by element
    (``[i]``); any other value, including a list of numbers, is compared whole.
    """
    bank, given = canonical(bank), canonical(given)
    if isinstance(bank, dict) and isinstance(given, dict):
        out: list[str] = []
        for key in sorted(set(bank) | set(given)):
            path = f"{prefix}.{key}" if prefix else key
            if key not in bank:
                out.append(f"{path}: absent (bank) vs {_fmt(given[key])} (given)")
            elif key not in given:
                out.append(f"{path}: {_fmt(bank[key])} (bank) vs absent (given)")
            else:
                out.extend(description_diff(bank[key], given[key], path))
        return out
    nested = isinstance(bank, list) and isinstance(given, list) and len(bank) == len(given)
    if nested and any(isinstance(v, (dict, list)) for v in bank + given):
        pairs = enumerate(zip(bank, given, strict=True))
        return [d for i, (a, b) in pairs for d in description_diff(a, b, f"{prefix}[{i}]")]
    return [] if bank == given else [f"{prefix or '<root>'}: {_fmt(bank)} (bank) vs {_fmt(given)} (given)"]


def _fmt(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def chunk_rng(bank_seed: int, chunk: int) -> np.random.Generator:
    """The generator of chunk ``chunk``: ``PCG64(SeedSequence(bank_seed, spawn_key=(chunk,)))``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(bank_seed, spawn_key=(chunk,))))


def chunk_inputs(
    bank_seed: int, chunk: int, chunk_size: int, low: Sequence[float], high: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """θ rows (``(chunk_size, d)`` float32, uniform in ``[low, high]``) and seeds (int64) of a chunk.

    Always a full chunk; callers truncate the last chunk of a bank.
    """
    rng = chunk_rng(bank_seed, chunk)
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    theta = (lo + (hi - lo) * rng.random((chunk_size, lo.size))).astype(np.float32)
    theta = np.clip(theta, lo.astype(np.float32), hi.astype(np.float32))  # float32 rounding stays in the box
    seeds = rng.integers(0, 2**31 - 1, size=chunk_size, dtype=np.int64)
    return theta, seeds


def chunk_digest(theta: np.ndarray, seeds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sha256`` of a chunk's θ, seeds and x bytes (little-endian, C order) as 32 uint8."""
    h = hashlib.sha256()
    for arr, dtype in ((theta, "<f4"), (seeds, "<i8"), (x, "<f4")):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


#: Attributes covered by the metadata digest (``attrs["integrity"]``): everything that decides
#: which θ, seeds and images a chunk holds. ``package_version``, ``zarr_version`` and ``created``
#: are informational and left out.
COVERED = ("glsbi_bank", "simulator", "config_hash", "names", "low", "high", "x_shape", "n", "chunk_size",
           "batch_size", "seed")


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_leaves(value[k], f"{prefix}.{k}"))
        return out
    return {prefix: value}


def integrity_record(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata digest of a bank's attributes: ``{"sha256": ..., "fields": {path: digest}}``.

    ``sha256`` covers the canonical JSON of the :data:`COVERED` attributes; ``fields`` holds a short
    digest of every leaf (dotted paths, e.g. ``simulator.config.steps``) so that an edit can be
    named. A missing covered attribute counts as ``null``.
    """
    covered = {k: canonical(attrs.get(k)) for k in COVERED}
    leaves: dict[str, Any] = {}
    for k in COVERED:
        leaves.update(_leaves(covered[k], k))
    fields = {p: hashlib.sha256(f"{p}={json.dumps(v, sort_keys=True)}".encode()).hexdigest()[:16]
              for p, v in leaves.items()}
    whole = hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {"sha256": whole, "fields": fields}


def integrity_diff(attrs: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the covered attributes that differ from the digest ``record`` (empty: intact).

    Raises nothing: a malformed ``record`` is reported as ``["integrity"]``.
    """
    try:
        want = dict(record["fields"])
        whole = str(record["sha256"])
    except (KeyError, TypeError, ValueError):
        return ["integrity"]
    try:
        have = integrity_record(attrs)
    except (TypeError, ValueError):  # a value that cannot even be canonicalised
        return [k for k in COVERED if k in attrs] or ["<attributes>"]
    if have["sha256"] == whole:
        return []
    changed = sorted(p for p in set(want) | set(have["fields"]) if want.get(p) != have["fields"].get(p))
    return changed or ["<attributes>"]
