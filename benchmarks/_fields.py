"""The fields banks the inference benchmarks share: ρ₁, ρ₂, B_z of the main job's forward model, from
which every observation's images are derived (``SimulationBank.to_torch(observation=...)``).

``observation_models.py``, ``nre_vs_npe.py`` and ``calibration_recipe.py`` read the same two banks
(``fields_<size>_train_seed<s>.zarr``, ``fields_<size>_test_seed<s>.zarr``), so simulations made
for one are reused by the others.
"""

from __future__ import annotations

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
    config = presets.small_forward_model(size=size, steps=steps)
    simulator = make_simulator(NAMES, config=config, channels=FIELDS, batch_size=chunk_size)
    out, info = [], {}
    for name, (n, seed) in (("train", train), ("test", test)):
        path = Path(bank_dir) / f"fields_{size}_{name}_seed{seed}.zarr"
        t0 = time.perf_counter()
        if path.exists():
            bank = SimulationBank.open(path, simulator)  # refuses another forward model
            if bank.n < n:
                bank.extend(n)
        else:
            bank = SimulationBank.create(path, simulator, n, chunk_size=chunk_size, seed=seed)
        report = bank.fill(n, progress=False)
        info[name] = {"path": str(path), "n": n, "seed": seed, "simulated_now": report.n_simulations,
                      "fill_s": time.perf_counter() - t0, "config_hash": bank.config_hash}
        print(f"{name} bank {path}: {n} rows ({report.n_simulations} simulated now)", flush=True)
        out.append(bank)
    info["config"] = {**config.to_dict(), "t_final": config.t_final}
    return out[0], out[1], info
