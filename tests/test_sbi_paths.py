"""sbi's own paths take the simulator unchanged: numpy θ, joblib workers, process_simulator, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import TDGLConfig

CFG = TDGLConfig(shape=(8, 8), steps=8)
BOUNDS = {"field": (0.4, 0.9)}


@pytest.fixture(scope="module")
def sim():
    return make_simulator(config=CFG, bounds=BOUNDS, batch_size=4)


class _Repeat:
    """A proposal that always proposes the same θ row: equal rows must still get their own seeds."""

    def __init__(self, row: torch.Tensor) -> None:
        self.row = row

    def sample(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.row.expand(*shape, -1).clone()


def test_numpy_theta_is_accepted_and_equals_the_tensor_path(sim):
    theta = sim.prior().sample((3,))
    from_numpy = sim(theta.numpy(), seed=4)
    assert torch.equal(from_numpy, sim(theta, seed=4))
    assert torch.equal(sim.simulate_seeds(theta.numpy().astype(np.float64), [1, 2, 3]),
                       sim.simulate_seeds(theta, [1, 2, 3]))
    with pytest.raises(ValueError, match="must be a floating tensor"):
        sim(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="got ndarray"):  # an integer array is not θ
        sim(np.zeros((2, 2), dtype=np.int64))


def test_simulator_pickles_after_use(sim):
    theta = sim.prior().sample((2,))
    x = sim(theta, seed=1)  # compiles: the jitted program must not travel
    clone = pickle.loads(pickle.dumps(sim))
    assert "_run" not in clone.__dict__
    assert torch.equal(clone(theta, seed=1), x)


def test_simulate_for_sbi_with_two_workers_keeps_seeds_distinct(sim):
    from sbi.inference import simulate_for_sbi

    row = sim.prior().sample((1,))[0]
    theta, x = simulate_for_sbi(sim, _Repeat(row), 4, num_workers=2, simulation_batch_size=2, seed=3,
                                show_progress_bar=False)
    assert theta.shape == (4, 2) and x.shape == (4, 2, 8, 8) and torch.isfinite(x).all()
    assert torch.equal(theta[0], theta[3])
    rows = {x[i].numpy().tobytes() for i in range(4)}
    assert len(rows) == 4, "the same θ in two workers gave the same image: the seeds were not distinct"
    again = simulate_for_sbi(sim, _Repeat(row), 4, num_workers=2, simulation_batch_size=2, seed=3,
                             show_progress_bar=False)[1]
    assert torch.equal(again, x), "simulate_for_sbi(seed=...) is reproducible across worker processes"


def test_process_simulator_both_ways(sim):
    from sbi.inference import simulate_for_sbi
    from sbi.utils.user_input_checks import process_prior, process_simulator

    prior, _, _ = process_prior(sim.prior())
    for is_numpy in (False, True):
        wrapped = process_simulator(sim, prior, is_numpy)
        torch.manual_seed(0)
        theta, x = simulate_for_sbi(wrapped, prior, 3, simulation_batch_size=3, show_progress_bar=False)
        assert theta.shape == (3, 2) and x.shape == (3, 2, 8, 8) and x.dtype == torch.float32
