"""Fault injection: flip a bit in, truncate, or delete every file of a bank in turn.

For each fault: a read either fails (a ValueError naming what is wrong) or returns exactly the
bytes that were written, never other data; ``fill(repair=True)`` then brings back the very bank
that was written (every array bit-identical); and no chunk file that verified before the fault is
rewritten (nothing already verified is lost or touched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import TDGLConfig
from glsbi_plugin.store import SimulationBank

K = 4
CFG = TDGLConfig(shape=(8, 8), steps=8)
ARRAYS = ("theta", "seeds", "x", "checksum", "filled")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    sim = make_simulator(config=CFG, bounds={"field": (0.4, 0.9)}, batch_size=K)
    bank = SimulationBank.create(tmp_path_factory.mktemp("fi") / "ref.zarr", sim, n=3 * K, chunk_size=K, seed=5)
    bank.fill(progress=False)
    return bank


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _snapshot(bank_path: Path) -> dict[str, np.ndarray]:
    bank = SimulationBank.open(bank_path, read_only=True)
    return {name: bank.group[name][:] for name in ARRAYS}


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


FAULTS = {"flip": _flip, "truncate": _truncate, "delete": Path.unlink}


def _chunk_stamps(path: Path) -> dict[str, tuple[bytes, int]]:
    return {f: ((path / f).read_bytes(), (path / f).stat().st_mtime_ns) for f in _files(path)
            if f.split("/")[0] in ("theta", "seeds", "x") and "/c/" in f"/{f}"}


def test_every_file_every_fault(ref, tmp_path):
    want = _snapshot(ref.path)
    theta_ref, x_ref = ref.to_torch()
    files = _files(ref.path)
    assert len(files) == 21  # the root and 5 array zarr.json, 3 chunk files per array
    outcomes = {"refused": 0, "served intact": 0}
    for i, name in enumerate(files):
        for fault, apply in FAULTS.items():
            path = tmp_path / f"{i}-{fault}.zarr"
            shutil.copytree(ref.path, path)
            stamps = _chunk_stamps(path)
            apply(path / name)
            case = f"{fault} {name}"
            # 1. a read fails with a message, or serves only what was written
            try:
                theta, x = SimulationBank.open(path, read_only=True).to_torch()
            except ValueError as e:
                assert str(e), case
                outcomes["refused"] += 1
            else:
                rows = [j for j in range(len(theta_ref)) if any(bool((theta[r] == theta_ref[j]).all())
                                                                for r in range(len(theta)))]
                assert len(rows) == len(theta), case
                assert x.numpy().tobytes() == x_ref[rows].numpy().tobytes(), f"{case}: served other data"
                outcomes["served intact"] += 1
            # 2. the repair brings back the bank that was written, bit for bit
            SimulationBank.open(path).fill(repair=True, progress=False)
            got = _snapshot(path)
            for arr in ARRAYS:
                assert got[arr].tobytes() == want[arr].tobytes(), f"{case}: {arr} differs after repair"
            assert SimulationBank.open(path, read_only=True).verify().ok, case
            # 3. chunk files that were intact are never rewritten
            after = _chunk_stamps(path)
            for f, stamp in stamps.items():
                if f != name:
                    assert after[f] == stamp, f"{case}: the intact {f} was rewritten"
            shutil.rmtree(path)
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 3 * len(files)
