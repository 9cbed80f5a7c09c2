"""The forward model's one home: ``physics.forward`` is what the sbi simulator, the CLI and the demo
compute; ``presets.forward_model`` is the one source of the default numerics; the simulator carries
its prior."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import (
    Measurement,
    Observation,
    TDGLConfig,
    TDGLConfigError,
    forward,
    forward_in_segments,
    forward_keys,
    observe,
    presets,
    simulate,
)

CFG = TDGLConfig(shape=(16, 16), steps=24, dt=0.3125, scheme="skrock", stages=2)
BOUNDS = {"field": (0.1, 0.4)}  # a 16² torus needs B >= 0.1 for a few flux quanta
OBS = Observation(channels=("rho1", "rho2", "bz"), measurement=Measurement(psf_sigma=0.5, noise_std=0.05))


def test_forward_is_the_quench_then_the_instrument() -> None:
    """forward = split the key once, quench with the simulation key, observe with the measurement key."""
    p = presets.type15(eta=0.12, field=0.25)
    key = jax.random.key(7)
    x = np.asarray(jax.jit(forward, static_argnums=(2, 3))(p, key, CFG, OBS))
    k_sim, k_meas = jax.random.split(key)
    state = simulate(p, k_sim, CFG)
    manual = observe(state, p.astype(CFG.real_dtype), CFG, OBS.channels, measurement=OBS.measurement, key=k_meas)
    np.testing.assert_allclose(x, np.asarray(manual), rtol=1e-5, atol=1e-6)
    assert x.dtype == np.float32 and x.shape == OBS.x_shape(CFG) == (3, 16, 16)
    # the measurement noise is on: another measurement key changes the image, not the state
    keys = forward_keys(key)
    assert np.array_equal(np.asarray(jax.random.key_data(keys.measure)), np.asarray(jax.random.key_data(k_meas)))


def test_sbi_simulator_images_are_forward_images() -> None:
    sim = make_simulator(config=CFG, bounds=BOUNDS, channels=OBS.channels, measurement=OBS.measurement)
    theta = torch.tensor([[0.05, 0.2], [0.25, 0.35]])
    seeds = [3, 11]
    x = sim.simulate_seeds(theta, seeds, shard=False).numpy()
    fwd = jax.jit(forward, static_argnums=(2, 3))
    for row, seed, img in zip(theta.tolist(), seeds, x, strict=True):
        p = presets.type15(eta=row[0], field=row[1])
        np.testing.assert_allclose(img, np.asarray(fwd(p, jax.random.key(seed), CFG, OBS)), rtol=1e-4, atol=1e-5)
    assert sim.observation == OBS and sim.x_shape == OBS.x_shape(CFG)


def test_segments_give_the_same_image_and_report_progress() -> None:
    p = presets.type15(eta=0.2, field=0.25)
    key = jax.random.key(5)
    done: list[int] = []
    state, x = forward_in_segments(p, key, CFG, OBS, segments=5, on_segment=done.append)
    assert done == [6, 12, 18, 24]  # 5 does not divide 24: the largest divisor below it, 4 pieces
    whole_state, whole = jax.jit(forward, static_argnums=(2, 3), static_argnames="return_state")(
        p, key, CFG, OBS, return_state=True
    )
    np.testing.assert_allclose(np.asarray(x), np.asarray(whole), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(state.psi), np.asarray(whole_state.psi), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="segments=0"):
        forward_in_segments(p, key, CFG, OBS, segments=0)
    with pytest.raises(ValueError, match="N_phi = 0"):  # checked first: eager entry point
        forward_in_segments(presets.type15(field=0.001), key, CFG, OBS)


def test_presets_forward_model_is_the_default_numerics() -> None:
    from glsbi_plugin import DEFAULT_CONFIG

    cfg = presets.forward_model()
    assert cfg == DEFAULT_CONFIG
    assert (cfg.shape, cfg.h, cfg.scheme, cfg.stages, cfg.dt, cfg.steps) == ((64, 64), 0.5, "skrock", 2, 0.3125, 640)
    assert cfg.t_final == presets.T_FINAL == 200.0
    euler = presets.forward_model(scheme="euler")
    assert (euler.stages, euler.dt, euler.steps, euler.t_final) == (1, 0.08, 2500, 200.0)
    small = presets.small_forward_model()
    assert (small.shape, small.steps, small.t_final, small.dt) == ((48, 48), 256, presets.T_SMALL, cfg.dt)
    assert presets.small_forward_model(steps=10).steps == 10
    assert presets.forward_model(32, t_final=50, dt=0.25, stages=3).steps == 200
    for kwargs, match in [
        (dict(t_final=10, steps=5), "not both"),
        (dict(dt=0.0), "dt=0.0"),
        (dict(dt=float("nan")), "dt=nan"),
        (dict(t_final=-1.0), "t_final=-1.0"),
        (dict(scheme="rk4"), "scheme='rk4'"),
        (dict(scheme="euler", stages=2), "one stage"),
        (dict(size=2), "each side must be >= 4"),
    ]:
        with pytest.raises(TDGLConfigError, match=match):
            presets.forward_model(**kwargs)


def test_simulator_carries_its_prior() -> None:
    import glsbi_plugin

    sim = make_simulator(("eta", "field", "nu"), config=CFG, bounds=BOUNDS)
    prior = sim.prior()
    support = prior.support.base_constraint
    assert support.lower_bound.tolist() == pytest.approx(list(sim.low))
    assert support.upper_bound.tolist() == pytest.approx(list(sim.high))
    assert sim.check_theta(prior.sample((64,))).shape == (64, 3)  # every draw is accepted
    default = glsbi_plugin.prior.support.base_constraint
    assert default.lower_bound.tolist() == pytest.approx(list(glsbi_plugin.simulator.low))
    assert default.upper_bound.tolist() == pytest.approx(list(glsbi_plugin.simulator.high))


def test_observation_refuses_what_it_cannot_produce() -> None:
    with pytest.raises(ValueError, match="sequence of channel names"):
        Observation(channels="rho1")
    with pytest.raises(ValueError, match="rho3"):
        Observation(channels=("rho3",))
    with pytest.raises(ValueError, match="downsample=3 does not divide the grid 16x16"):
        Observation(measurement=Measurement(downsample=3)).check(CFG)
    with pytest.raises(ValueError, match="rho2"):
        Observation(channels=("rho2",)).check(TDGLConfig(shape=(16, 16), components=1))
    assert Observation(measurement=Measurement(downsample=4)).x_shape(CFG) == (2, 4, 4)
    assert hash(OBS) == hash(Observation(channels=OBS.channels, measurement=OBS.measurement))  # static under jit


def test_old_physics_name_still_imports_with_a_warning() -> None:
    import glsbi_plugin.simulators as old
    from glsbi_plugin.physics import plaquette_flux

    with pytest.warns(DeprecationWarning, match="glsbi_plugin.physics.TDGLConfig"):
        assert old.TDGLConfig is TDGLConfig
    with pytest.warns(DeprecationWarning, match="plaquette_flux"):
        assert old.theta is plaquette_flux
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_name"):
            old.no_such_name  # noqa: B018
