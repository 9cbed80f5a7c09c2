"""The fields banks the inference benchmarks share: ρ₁, ρ₂, B_z of the main job's forward model, from
which every observation's images are derived (``SimulationBank.to_torch(observation=...)``).

``observation_models.py``, ``nre_vs_npe.py`` and ``calibration_recipe.py`` read the same two banks
(``fields_<size>_train_seed<s>.zarr``, ``fields_<size>_test_seed<s>.zarr``), so simulations made
for one are reused by the others.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import FIELDS, presets
from glsbi_plugin.store import SimulationBank

NAMES = ("eta", "field")


def fields_banks(
    bank_dir: str | Path, *, size: int, steps: int | None = None, chunk_size: int = 50, train: tuple[int, int],
    test: tuple[int, int],
) -> tuple[SimulationBank, SimulationBank, dict[str, Any]]:
    """The training and held-out banks of the fields, opened, extended, created and filled as needed.

    Args:
        bank_dir: Folder of the banks.
        size: Torus side of ``presets.small_forward_model``.
        steps: Its time steps (``None``: the preset's).
        chunk_size: Samples per chunk of a new bank.
        train: ``(rows, bank seed)`` of the training bank.
        test: ``(rows, bank seed)`` of the held-out bank.

    Returns:
        ``(train_bank, test_bank, info)``; ``info`` records paths, seeds, what was simulated now and
        the forward model's configuration.
    """
    info: dict[str, Any] = {}
    out = [fields_bank(bank_dir, name, n, seed, size=size, steps=steps, chunk_size=chunk_size, info=info)
           for name, (n, seed) in (("train", train), ("test", test))]
    return out[0], out[1], info


def fields_bank(
    bank_dir: str | Path, name: str, n: int, seed: int, *, size: int, steps: int | None = None, chunk_size: int = 50,
    info: dict[str, Any] | None = None,
) -> SimulationBank:
    """One fields bank ``fields_<size>_<name>_seed<seed>.zarr`` with at least ``n`` filled rows.

    A bank that is already complete is only opened (several benchmarks can then read it at once; a
    fill would take its writer lock). ``info``, if given, receives ``info[name]`` (path, rows, seed,
    what was simulated now) and ``info["config"]``.
    """
    config = presets.small_forward_model(size=size, steps=steps)
    simulator = make_simulator(NAMES, config=config, channels=FIELDS, batch_size=chunk_size)
    path = Path(bank_dir) / f"fields_{size}_{name}_seed{seed}.zarr"
    t0 = time.perf_counter()
    if path.exists():
        bank = SimulationBank.open(path, simulator)  # refuses another forward model
        if bank.n < n:
            bank.extend(n)
    else:
        bank = SimulationBank.create(path, simulator, n, chunk_size=chunk_size, seed=seed)
    complete = set(range(math.ceil(n / bank.chunk_size))) <= set(bank.filled_chunks())
    simulated = 0 if complete else bank.fill(n, progress=False).n_simulations
    if info is not None:
        info[name] = {"path": str(path), "n": n, "seed": seed, "simulated_now": simulated,
                      "fill_s": time.perf_counter() - t0, "config_hash": bank.config_hash}
        info["config"] = {**config.to_dict(), "t_final": config.t_final}
    print(f"{name} bank {path}: {n} rows ({simulated} simulated now)", flush=True)
    return bank


def add_cache_options(p: argparse.ArgumentParser) -> None:
    """``--bank-dir`` (these banks) and ``--cache`` (``nre_vs_npe.py``'s trained estimators): the
    options of the scripts that judge that benchmark's estimators again."""
    p.add_argument("--bank-dir", default=str(Path.home() / ".cache" / "glsbi" / "observation_models"),
                   help="where the fields banks live")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "glsbi" / "nre_vs_npe",
                   help="nre_vs_npe.py's cache of trained estimators")


def judging_banks(bank_dir: str | Path, info: dict[str, Any]) -> tuple[SimulationBank, SimulationBank]:
    """The held-out bank (300 simulations, seed 1) and the recalibration bank (1000, seed 2) of
    ``nre_vs_npe.py`` on the 48² torus, which the scripts that judge its estimators again share."""
    return (fields_bank(bank_dir, "test", 300, 1, size=48, info=info),
            fields_bank(bank_dir, "recal", 1000, 2, size=48, info=info))
