r"""Integrity of a bank: verified chunk reads, the expected array layout, the recorded metadata copy,
and rebuilding array metadata.

- **Chunks.** A chunk is served only if the sha256 of its θ, seeds and x bytes equals its stored
  checksum (:class:`ChunkVerifier`); otherwise :class:`CorruptChunkError` names the chunk and the
  repair command. Whole chunks are read (a Zarr chunk file is read whole anyway), so the cost is one
  sha256 over the chunk's bytes (measured in ``benchmarks/results/bank_fill.md``).
- **Layout.** The five arrays must have exactly the shapes, chunkings, dtypes and fill values that
  the (verified) attributes imply (:func:`array_specs`, :func:`layout_problems`).
- **Recorded metadata.** ``create`` stores a second copy of the bank's attributes, with their
  digest, in the attributes of the ``theta`` array (:data:`RECORD_KEY`): a Zarr-native place, in
  another file than the root ``zarr.json``. It names (and restores) the recorded value of an edited
  attribute and restores a lost root ``zarr.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._meta import FORMAT_VERSION, chunk_digest, chunk_inputs, config_hash, integrity_diff

#: Arrays of a bank, in commit order.
ARRAYS = ("theta", "seeds", "x", "checksum", "filled")
#: Key of the recorded copy of the bank's attributes in ``theta``'s attributes.
RECORD_KEY = "glsbi_bank_record"


class CorruptChunkError(ValueError):
    """A chunk fails its checksum or cannot be decoded: it is refused, never served."""


class BankDamagedError(ValueError):
    """The bank's metadata are missing, edited or inconsistent with its arrays (see the message)."""


def repair_hint(path: Path) -> str:
    return f"repair with `glsbi bank fill {path} --repair` (SimulationBank.open(path).fill(repair=True))"


def array_specs(attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Shape, chunks, dtype and fill value of every array, as the attributes imply."""
    n, k, d = int(attrs["n"]), int(attrs["chunk_size"]), len(attrs["names"])
    c, h, w = (int(v) for v in attrs["x_shape"])
    m = math.ceil(n / k)
    return {
        "theta": {"shape": (n, d), "chunks": (k, d), "dtype": "float32", "fill_value": 0.0},
        "seeds": {"shape": (n,), "chunks": (k,), "dtype": "int64", "fill_value": -1},
        "x": {"shape": (n, c, h, w), "chunks": (k, c, h, w), "dtype": "float32", "fill_value": 0.0},
        "checksum": {"shape": (m, 32), "chunks": (1, 32), "dtype": "uint8", "fill_value": 0},
        "filled": {"shape": (m,), "chunks": (1,), "dtype": "bool", "fill_value": False},
    }


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _array_meta_problem(path: Path, name: str, spec: Mapping[str, Any]) -> str | None:
    meta = read_json(path / name / "zarr.json")
    if not isinstance(meta, dict) or meta.get("node_type") != "array":
        state = "missing" if not (path / name / "zarr.json").exists() else "unreadable"
        return f"array {name!r}: metadata {name}/zarr.json {state}"
    try:
        shape = tuple(meta["shape"])
        chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        dtype, fill = meta["data_type"], meta["fill_value"]
    except (KeyError, TypeError):
        return f"array {name!r}: metadata {name}/zarr.json lacks shape, chunks or dtype"
    for what, have, want in (("shape", shape, spec["shape"]), ("chunks", chunks, spec["chunks"]),
                             ("dtype", dtype, spec["dtype"]), ("fill value", fill, spec["fill_value"]),
                             ("chunk key encoding", meta.get("chunk_key_encoding"), _KEY_ENCODING),
                             ("zarr format", meta.get("zarr_format"), 3)):
        if have != want:
            return f"array {name!r}: {what} {have} in {name}/zarr.json, but the bank's attributes give {want}"
    try:  # the codecs must be ones zarr can decode with
        from zarr.core.metadata.v3 import ArrayV3Metadata

        ArrayV3Metadata.from_dict({k: v for k, v in meta.items() if k != "attributes"})
    except Exception as e:  # zarr raises several types for bad metadata
        return f"array {name!r}: metadata {name}/zarr.json does not parse ({type(e).__name__}: {str(e)[:60]})"
    return None


_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}


def layout_problems(path: Path, attrs: Mapping[str, Any]) -> list[str]:
    """What is wrong with the arrays' metadata given the attributes (empty: consistent)."""
    specs = array_specs(attrs)
    return [p for name in ARRAYS if (p := _array_meta_problem(path, name, specs[name])) is not None]


def array_metadata(name: str, spec: Mapping[str, Any], path: Path | None = None) -> dict[str, Any]:
    """The ``zarr.json`` for an array of ``spec``: as this zarr writes it (made in a scratch
    directory), with the codecs of an intact sibling array of the same byte layout in the bank at
    ``path`` if there is one (so a bank written by another zarr version keeps its codecs)."""
    import zarr

    with tempfile.TemporaryDirectory(prefix="glsbi-meta-") as tmp:
        group = zarr.open_group(store=tmp, mode="w")
        group.create_array(name, shape=spec["shape"], chunks=spec["chunks"], dtype=spec["dtype"],
                           fill_value=spec["fill_value"])
        meta = json.loads((Path(tmp) / name / "zarr.json").read_bytes())
    siblings = {"theta": ("x", "seeds"), "x": ("theta", "seeds"), "seeds": ("theta", "x"), "checksum": (),
                "filled": ()}[name]
    for other in siblings if path is not None else ():
        sib = read_json(path / other / "zarr.json")  # type: ignore[operator]
        if isinstance(sib, dict) and isinstance(sib.get("codecs"), list) and \
                [c.get("name") for c in sib["codecs"] if isinstance(c, dict)] == [c["name"] for c in meta["codecs"]]:
            meta["codecs"] = sib["codecs"]
            break
    return meta


def valid_record(attrs: Any) -> dict[str, Any] | None:
    """``attrs`` if they are a bank's attributes whose integrity digest matches, else None."""
    if not isinstance(attrs, dict) or "integrity" not in attrs:
        return None
    return attrs if not integrity_diff(attrs, attrs["integrity"]) else None


def recorded_copy(path: Path) -> dict[str, Any] | None:
    """The recorded copy of the attributes (from ``theta``'s metadata), if present and intact."""
    meta = read_json(path / "theta" / "zarr.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("attributes"), dict):
        return None
    return valid_record(meta["attributes"].get(RECORD_KEY))


def has_chunk_data(path: Path) -> bool:
    """Whether any array holds a chunk file (something simulated may be stored)."""
    return any((path / name / "c").exists() for name in ARRAYS)


class ChunkVerifier:
    """Checks a whole chunk's bytes against its stored checksum before anything is served.

    Args:
        path: The bank directory (for messages).
        seed, chunk_size, low, high, n: The bank's (verified) attributes: used to say whether a
            failing chunk's θ/seeds still derive from the bank seed (then its x or checksum changed).
    """

    def __init__(self, path: Path, *, seed: int, chunk_size: int, low: Any, high: Any, n: int) -> None:
        self.path, self.seed, self.chunk_size, self.n = Path(path), int(seed), int(chunk_size), int(n)
        self.low, self.high = tuple(low), tuple(high)
        self._opened: tuple[Any, dict[str, Any]] | None = None  # (group, its arrays), opened once

    def _arrays(self, group: Any) -> dict[str, Any]:
        if self._opened is None or self._opened[0] is not group:
            self._opened = (group, {name: group[name] for name in ("theta", "seeds", "x", "checksum")})
        return self._opened[1]

    def __getstate__(self) -> dict[str, Any]:  # travels to loader workers without open arrays
        return {**self.__dict__, "_opened": None}

    def read(self, group: Any, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(theta, seeds, x)`` of a whole chunk, verified.

        Raises:
            CorruptChunkError: a chunk file cannot be decoded, or the bytes fail the checksum.
        """
        reason, data = self.check(group, chunk)
        if reason is not None:
            s, e = chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n)
            raise CorruptChunkError(
                f"{self.path}: chunk {chunk} (samples {s}-{e - 1}) is corrupt ({reason}); it is not served. "
                f"{repair_hint(self.path).capitalize()}"
            )
        return data  # type: ignore[return-value]

    def check(self, group: Any, chunk: int) -> tuple[str | None, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """``(None, data)`` for an intact chunk, else ``(reason, None)``."""
        s, e = chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n)
        data = []
        try:
            arrays = self._arrays(group)
        except Exception as err:  # an array whose metadata do not open
            return f"unreadable: its arrays do not open ({type(err).__name__})", None
        for name in ("theta", "seeds", "x"):
            try:
                data.append(np.asarray(arrays[name][s:e]))
            except Exception as err:  # a garbled chunk file fails to decode (zarr raises several types)
                why = f"{type(err).__name__}: {str(err)[:80]}"
                return f"unreadable: its {name} chunk file does not decode ({why})", None
        try:
            stored = np.asarray(arrays["checksum"][chunk])
        except Exception as err:
            return f"unreadable: its checksum does not decode ({type(err).__name__})", None
        theta, seeds, x = data
        if np.array_equal(chunk_digest(theta, seeds, x), stored):
            return None, (theta, seeds, x)
        if not stored.any():
            return "checksum missing (never committed, or its checksum file was lost)", None
        want_theta, want_seeds = chunk_inputs(self.seed, chunk, self.chunk_size, self.low, self.high)
        k = e - s
        if np.array_equal(theta, want_theta[:k]) and np.array_equal(seeds, want_seeds[:k]):
            return "checksum mismatch: its images x (or its checksum) changed since it was written", None
        return "checksum mismatch: its θ or seeds no longer derive from the bank seed", None


def inspect_bank(path: Path) -> tuple[dict[str, Any], list[str], bool]:
    """The bank's verified attributes, the repairable damage found, and whether it predates the
    integrity digest. Raises ValueError for what is not a bank or cannot be repaired."""
    root = read_json(path / "zarr.json")
    attrs = root.get("attributes") if isinstance(root, dict) and root.get("node_type") == "group" else None
    record = recorded_copy(path)
    damage: list[str] = []
    legacy = False
    if isinstance(attrs, dict) and root.get("zarr_format") != 3 and record is not None:  # type: ignore[union-attr]
        attrs = None  # a damaged root whose attributes survived: restored whole from the record
    if not isinstance(attrs, dict) or "glsbi_bank" not in attrs:
        if record is None or not has_chunk_data(path):
            if classify(path) == "half-created":
                raise ValueError(
                    f"{path} is a half-created bank (its creation was interrupted; nothing was simulated): run the "
                    "same `glsbi bank create` again (SimulationBank.create), which replaces it"
                )
            fmt = (attrs or {}).get("glsbi_bank", "missing")
            found = "no zarr.json" if root is None else f"format attribute: {fmt}"
            raise ValueError(f"{path} is not a glsbi simulation bank ({found})")
        state = "missing" if not (path / "zarr.json").exists() else "unreadable or without the bank's attributes"
        damage.append(f"the root metadata zarr.json is {state} (the recorded copy restores it)")
        attrs = record
    elif attrs.get("glsbi_bank") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a glsbi simulation bank of format {FORMAT_VERSION} "
                         f"(format attribute: {attrs.get('glsbi_bank')!r})")
    elif "integrity" in attrs:
        changed = integrity_diff(attrs, attrs["integrity"])
        if changed and record is None:
            raise BankDamagedError(
                f"{path}: its metadata were edited after creation ({', '.join(changed)} changed) and no intact "
                "recorded copy is left to restore them from; undo the edit or create a new bank"
            )
        if changed:
            damage.append("its metadata were edited after creation (" + "; ".join(edits(attrs, record, changed))
                          + "); the repair restores the recorded values")
            attrs = record
    elif record is not None:  # the digest was removed: an edit like any other
        damage.append("its metadata were edited after creation (" + "; ".join(edits(attrs, record, ["integrity"]))
                      + "); the repair restores the recorded values")
        attrs = record
    else:
        legacy = True
        recomputed = config_hash(attrs.get("simulator") or {})
        if recomputed != attrs.get("config_hash"):
            raise BankDamagedError(
                f"{path}: config_hash {str(attrs.get('config_hash'))[:12]} does not match the recorded simulator "
                f"description (hash {recomputed[:12]}): zarr.json was edited; restore it"
            )
    assert attrs is not None
    problems = layout_problems(path, attrs)
    if problems and legacy:  # no verified attributes to rebuild from: say what disagrees
        raise BankDamagedError(f"{path}: " + "; ".join(problems) + " (zarr.json edited?); restore the original")
    return attrs, damage + problems, legacy


def edits(attrs: dict[str, Any], record: dict[str, Any], changed: list[str]) -> list[str]:
    def get(d: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return "absent"
            d = d[part]
        return d

    return [f"{p}: {json.dumps(get(attrs, p))} now vs {json.dumps(get(record, p))} recorded" for p in changed]


def classify(path: Path) -> str:
    """``"bank"`` (a bank, possibly damaged), ``"half-created"`` (metadata only, no bank attributes,
    nothing simulated) or ``"other"``."""
    root = read_json(path / "zarr.json")
    attrs = root.get("attributes") if isinstance(root, dict) else None
    if isinstance(attrs, dict) and "glsbi_bank" in attrs:
        return "bank"
    if recorded_copy(path) is not None and has_chunk_data(path):
        return "bank"
    if has_chunk_data(path):
        return "other"
    ours = {"zarr.json", *ARRAYS}
    for p in path.rglob("*"):
        rel = p.relative_to(path).parts
        if rel[0] not in ours or (p.is_file() and p.name != "zarr.json" and not p.name.endswith(".partial")):
            return "other"
    return "half-created" if (path / "zarr.json").exists() or any(path.iterdir()) else "other"


def remove_half_created(path: Path) -> None:
    """Delete what an interrupted ``create`` wrote (metadata files only; checked by :func:`_classify`)."""
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()


def remove_created(path: Path, made_dir: bool) -> None:
    """Remove what a failed ``create`` wrote (the directory was absent or empty before)."""
    if made_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        for p in list(path.iterdir()) if path.exists() else []:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
