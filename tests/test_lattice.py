"""Discrete energy and forces: forces = −grad E, gauge invariance, energy descent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glsbi_plugin.physics import (
    State,
    TDGLConfig,
    field_map,
    free_energy,
    integrate,
    presets,
    simulate,
    winding,
)
from glsbi_plugin.physics._lattice import forces, gauge_transform

BOUNDARIES = ["periodic", "open", ("open", "periodic"), ("periodic", "open")]


def random_state(cfg: TDGLConfig, seed: int = 0, amp_a: float = 0.3) -> State:
    rng = np.random.default_rng(seed)
    nx, ny = cfg.shape
    shape = (cfg.components, nx, ny)
    psi = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    return State(
        jnp.asarray(psi), jnp.asarray(amp_a * rng.normal(size=(nx, ny))), jnp.asarray(amp_a * rng.normal(size=(nx, ny)))
    )


def params_for(components: int, field: float = 0.9):
    if components == 1:
        return presets.single_component(field=field, e=0.6)
    return presets.type15(eta=0.3, nu=0.2, field=field, e=0.6)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("components", [1, 2])
def test_forces_are_minus_grad_energy(boundary, components):
    cfg = TDGLConfig(shape=(7, 6), components=components, boundary=boundary, dtype="float64", dt=0.01)
    p = params_for(components).astype(jnp.float64)
    s = random_state(cfg)
    f = forces(s, p, cfg)
    g = jax.grad(free_energy)(s, p, cfg)
    # E is real, psi complex: JAX's grad is 2 dE/dpsi conjugated, and -h^-2 dE/dpsi* = F_psi
    np.testing.assert_allclose(f.psi, -np.conj(g.psi) / (2 * cfg.h**2), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.a_x, -g.a_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.a_y, -g.a_y, rtol=1e-10, atol=1e-10)


def test_frozen_gauge_has_no_link_force():
    cfg = TDGLConfig(shape=(6, 6), gauge="frozen", dtype="float64")
    p = params_for(2).astype(jnp.float64)
    f = forces(random_state(cfg), p, cfg)
    assert float(jnp.abs(f.a_x).max()) == 0.0 and float(jnp.abs(f.a_y).max()) == 0.0


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_gauge_invariance(boundary):
    cfg = TDGLConfig(shape=(12, 10), boundary=boundary, dtype="float64", steps=300, dt=0.05)
    p = presets.type15(eta=0.2, field=0.55, e=0.6).astype(jnp.float64)
    s = simulate(p, jax.random.key(3), cfg)  # a state with vortices
    chi = jnp.asarray(np.random.default_rng(1).uniform(-np.pi, np.pi, size=cfg.shape))
    t = gauge_transform(s, chi)
    assert abs(float(free_energy(t, p, cfg) - free_energy(s, p, cfg))) < 1e-9 * abs(float(free_energy(s, p, cfg)))
    np.testing.assert_allclose(jnp.abs(t.psi), jnp.abs(s.psi), atol=1e-12)
    np.testing.assert_allclose(field_map(t, p, cfg), field_map(s, p, cfg), atol=1e-10)
    np.testing.assert_array_equal(winding(t, p, cfg), winding(s, p, cfg))
    # covariance: the forces transform like the fields
    ft, fs = forces(t, p, cfg), forces(s, p, cfg)
    np.testing.assert_allclose(ft.psi, fs.psi * jnp.exp(1j * chi), atol=1e-10)
    np.testing.assert_allclose(ft.a_x, fs.a_x, atol=1e-10)
    assert int(jnp.abs(winding(s, p, cfg)).sum()) > 0, "the test state should hold vortices"


@pytest.mark.parametrize("boundary", ["periodic", "open"])
@pytest.mark.parametrize("gauge", ["dynamic", "frozen"])
def test_energy_decreases_monotonically_at_zero_temperature(boundary, gauge):
    cfg = TDGLConfig(shape=(16, 16), boundary=boundary, gauge=gauge, dtype="float64", thermal=False, dt=0.05)
    p = presets.type15(eta=0.2, field=0.3, e=0.6, T=0.0).astype(jnp.float64)
    s0 = simulate(p, jax.random.key(0), cfg.replace(steps=0))
    _, saved = integrate(s0, p, jax.random.key(1), cfg, 600, save_every=1)
    energies = np.asarray(jax.vmap(lambda s: free_energy(s, p, cfg))(saved))
    steps = np.diff(energies)
    assert energies[-1] < energies[0] - 1.0, "the quench should lower the energy substantially"
    assert steps.max() <= 1e-9 * np.abs(energies).max(), f"energy rose by {steps.max():g}"
