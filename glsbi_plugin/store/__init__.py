"""Simulation banks: resumable, checksummed, deterministic Zarr stores of (θ, x) simulations.

Example::

    from glsbi_plugin import make_simulator
    from glsbi_plugin.store import SimulationBank

    bank = SimulationBank.create("bank.zarr", make_simulator(), n=4096, chunk_size=64, seed=0)
    bank.fill(scheduler="local")     # or None (this process), or "tcp://host:8786"; resumable
    assert bank.verify().ok
    theta, x = bank.to_torch()       # inference.append_simulations(theta, x)
    for theta_b, x_b in bank.loader(256, split="train"):
        ...

Every chunk served is verified against its checksum (:class:`CorruptChunkError` otherwise); the
metadata carry a digest that :meth:`SimulationBank.open` recomputes (:class:`BankDamagedError`
names an edited field); one process writes at a time (:class:`BankLockedError`); ``fill(repair=True)``
restores damaged metadata and re-simulates only chunks that fail verification.

The same from the shell: ``glsbi bank create bank.zarr --n 4096 --seed 0``, ``glsbi bank fill
bank.zarr --scheduler local``, ``glsbi bank info bank.zarr``.
"""

from __future__ import annotations

from ._bank import FillInterrupted, FillReport, SimulationBank
from ._integrity import BankDamagedError, CorruptChunkError
from ._lock import BankLockedError
from ._meta import FORMAT_VERSION, canonical_json, chunk_inputs, config_hash, description_diff
from ._read import VerifyReport

__all__ = [
    "SimulationBank",
    "FillReport",
    "VerifyReport",
    "BankDamagedError",
    "BankLockedError",
    "CorruptChunkError",
    "FillInterrupted",
    "FORMAT_VERSION",
    "canonical_json",
    "chunk_inputs",
    "config_hash",
    "description_diff",
]
