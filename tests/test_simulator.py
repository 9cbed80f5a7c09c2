"""The sbi-facing simulator and prior: contract, reproducibility, sbi utilities, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glsbi_plugin import make_prior, make_simulator
from glsbi_plugin.physics import Measurement, TDGLConfig, presets

CFG = TDGLConfig(shape=(16, 16), steps=60)
BOUNDS = {"eta": (0.0, 0.3), "field": (0.1, 0.4)}


@pytest.fixture(scope="module")
def sim():
    return make_simulator(config=CFG, bounds=BOUNDS, batch_size=4)


def test_default_objects_import_and_match():
    from glsbi_plugin import prior, simulator

    assert simulator.config.shape == (64, 64) and simulator.names == ("eta", "field")
    theta = prior.sample((5,))
    assert theta.shape == (5, 2) and theta.dtype == torch.float32
    assert torch.all(prior.support.check(theta))
    np.testing.assert_allclose(prior.base_dist.low.numpy(), simulator.low)


def test_shapes_dtype_and_seeding(sim):
    theta = make_prior(bounds=BOUNDS).sample((6,))  # 6 = one full batch of 4 + a padded one
    x = sim(theta, seed=1)
    assert x.shape == (6, 2, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sim(theta, seed=1))
    assert not torch.equal(x, sim(theta, seed=2))
    torch.manual_seed(5)
    a = sim(theta)
    torch.manual_seed(5)
    assert torch.equal(a, sim(theta))
    g = torch.Generator().manual_seed(3)
    b = sim(theta, generator=g)
    assert torch.equal(b, sim(theta, generator=torch.Generator().manual_seed(3)))
    # per-sample seeds: a row's image depends on its own θ and seed only, not on the batch
    seeds = np.arange(6)
    full = sim.simulate_seeds(theta, seeds)
    np.testing.assert_allclose(full[2:3], sim.simulate_seeds(theta[2:3], seeds[2:3]), atol=1e-5)


def test_works_in_sbi_utilities(sim):
    from sbi.inference import simulate_for_sbi
    from sbi.utils.user_input_checks import process_prior, process_simulator

    prior, _, _ = process_prior(make_prior(bounds=BOUNDS))
    wrapped = process_simulator(sim, prior, False)
    theta, x = simulate_for_sbi(wrapped, prior, 5, simulation_batch_size=5, show_progress_bar=False)
    assert theta.shape == (5, 2) and x.shape == (5, 2, 16, 16)


def test_three_parameters_and_measurement():
    sim = make_simulator(
        ("eta", "field", "nu"),
        config=CFG,
        bounds=BOUNDS,
        channels=("rho1", "bz", "winding1"),
        measurement=Measurement(psf_sigma=1.0, downsample=2, noise_std=0.01),
    )
    prior = make_prior(("eta", "field", "nu"), bounds=BOUNDS)
    x = sim(prior.sample((2,)), seed=0)
    assert x.shape == (2, 3, 8, 8) == (2, *sim.x_shape)


def test_bad_theta_names_the_problem(sim):
    with pytest.raises(ValueError, match=r"shape \(n, 2\) .* got \(3, 3\)"):
        sim(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="floating"):
        sim(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"theta\[1, 1\] = 0.9 \(field\) is outside the prior support \[0.1, 0.4\]"):
        sim(torch.tensor([[0.1, 0.2], [0.1, 0.9]]))
    with pytest.raises(ValueError, match="NaN"):
        sim(torch.tensor([[float("nan"), 0.2]]))
    with pytest.raises(ValueError, match="unknown parameter names"):
        make_simulator(("eta", "mass"), config=CFG)
    with pytest.raises(ValueError, match="N_phi = 0"):
        make_simulator(config=CFG, bounds={"field": (0.001, 0.4)})


def test_every_corner_of_the_prior_box_is_checked():
    """(η = 0.3, e = 0.36) alone violates the explicit-Euler bound for A at dt = 0.08 (σ = 10)."""
    with pytest.raises(ValueError, match="bound for A"):
        make_simulator(("eta", "e"), config=CFG, bounds={"eta": (0.0, 0.3), "e": (0.36, 0.7), "field": (0.1, 0.4)})


def test_small_batches_reuse_power_of_two_programs(sim):
    from glsbi_plugin.sbi_simulator import _image_rows, _quench_rows

    theta = make_prior(bounds=BOUNDS).sample((4,))
    _quench_rows._clear_cache()
    _image_rows._clear_cache()
    for n in (1, 2, 3, 4, 3, 2, 1):
        assert sim(theta[:n], seed=0).shape[0] == n
    assert _quench_rows._cache_size() == _image_rows._cache_size() == 3  # widths 1, 2, 4
    # another prior box, base and observation on the same config: the quench is not compiled again
    other = make_simulator(config=CFG, bounds={"eta": (0.1, 0.2), "field": (0.2, 0.3)}, base=presets.type15(e=0.5),
                           channels=("rho2",), batch_size=4)
    x = other(other.prior().sample((4,)), seed=1)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()
    assert _quench_rows._cache_size() == 3 and _image_rows._cache_size() == 4
