"""One bank of the physical fields serves every instrument: derived images equal simulated ones; a bank
records its instrument and refuses another."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import FIELDS, SQUID, STM, Decoration, Observation, Range, TDGLConfig
from glsbi_plugin.store import SimulationBank

CFG = TDGLConfig(shape=(16, 16), steps=30, dt=0.3125, scheme="skrock", stages=2)
BOUNDS = {"field": (0.1, 0.3)}
INSTRUMENTS = [
    STM(bands=(2,), snr=Range(3.0, 30.0), pixels=8),
    SQUID(height=Range(0.5, 2.0)),
    Decoration(jitter=0.3, field_of_view=6.0),
    Observation(channels=("rho2", "winding1")),
]


@pytest.fixture(scope="module")
def fields_bank(tmp_path_factory: pytest.TempPathFactory) -> SimulationBank:
    sim = make_simulator(config=CFG, bounds=BOUNDS, channels=FIELDS, batch_size=4)
    bank = SimulationBank.create(tmp_path_factory.mktemp("banks") / "fields.zarr", sim, 8, chunk_size=4, seed=3)
    bank.fill()
    return bank


@pytest.mark.parametrize("observation", INSTRUMENTS, ids=lambda o: o.name)
def test_derived_images_are_the_simulated_ones(fields_bank: SimulationBank, observation: object) -> None:
    theta, x = fields_bank.to_torch(observation=observation)
    seeds = np.asarray(fields_bank.group["seeds"][:])
    direct = make_simulator(config=CFG, bounds=BOUNDS, observation=observation, batch_size=4)
    expected = direct.simulate_seeds(theta, seeds, shard=False)
    assert x.shape == expected.shape == (8, *observation.x_shape(CFG))
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-6)
    # each row has its own measurement noise: rows at the same θ would still differ
    assert not torch.equal(x[0], x[1])


def test_derive_refuses_what_the_fields_lack() -> None:
    densities = make_simulator(config=CFG, bounds=BOUNDS, channels=("rho1", "rho2"))
    theta = densities.prior().sample((2,))
    x = densities.simulate_seeds(theta, [0, 1])
    with pytest.raises(ValueError, match=r"squid reads \['bz'\]"):
        densities.derive(SQUID(), theta, [0, 1], x)
    stm = make_simulator(config=CFG, bounds=BOUNDS, observation=STM())
    with pytest.raises(ValueError, match="without instrument"):
        stm.derive(STM(), theta, [0, 1], stm.simulate_seeds(theta, [0, 1]))


def test_a_bank_records_its_instrument(tmp_path) -> None:  # noqa: ANN001
    stm = make_simulator(config=CFG, bounds=BOUNDS, observation=STM(bands=(2,), snr=5.0))
    bank = SimulationBank.create(tmp_path / "stm.zarr", stm, 4, chunk_size=4, seed=0)
    assert bank.simulator.observation == STM(bands=(2,), snr=5.0)  # rebuilt from the stored description
    other = make_simulator(config=CFG, bounds=BOUNDS, observation=STM(bands=(2,), snr=10.0))
    with pytest.raises(ValueError, match="observation"):
        SimulationBank.open(tmp_path / "stm.zarr", other)
    with pytest.raises(ValueError, match="observation"):
        SimulationBank.open(tmp_path / "stm.zarr", make_simulator(config=CFG, bounds=BOUNDS))
    # an ideal simulator's description is what it was before instruments existed (old banks keep their hash)
    assert "observation" not in make_simulator(config=CFG, bounds=BOUNDS).describe()
