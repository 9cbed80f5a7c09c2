"""The potential's gradient and Hessian in the amplitudes (written once, in ``_length_scales``) against
``jax.grad``/``jax.hessian`` of the lattice's own potential density, and the two eager users of the
Hessian (``stability_bounds``, ``length_scales``) against the same autodiff reference."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glsbi_plugin.physics import TDGLConfig, TDGLParams, ground_state, length_scales, presets, stability_bounds
from glsbi_plugin.physics._lattice import _potential_density
from glsbi_plugin.physics._length_scales import potential_gradient, potential_hessian

CASES = [(0.0, 0.0), (0.2, 0.0), (0.4, 0.3), (-0.3, 0.1), (0.05, -0.02), (-1.5, 0.5)]


def _density(params: TDGLParams, components: int):
    """V(u): the lattice potential density at the real amplitudes ψ_a = u_a (one site)."""
    cfg = TDGLConfig(shape=(4, 4), components=components)
    p = jax.tree_util.tree_map(jnp.asarray, params)

    def v(u: jax.Array) -> jax.Array:
        return _potential_density(u.astype(jnp.complex128)[:, None, None], p, cfg).sum()

    return v


def _autodiff(params: TDGLParams, u: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    v = _density(params, components)
    u = jnp.asarray(u, jnp.float64)
    return np.asarray(jax.grad(v)(u)), np.asarray(jax.hessian(v)(u))


@pytest.mark.parametrize("eta,nu", CASES)
def test_two_band_derivatives_match_autodiff_of_the_lattice_potential(eta, nu):
    p = presets.type15(eta=eta, nu=nu)
    rng = np.random.default_rng(0)
    for u in [*rng.uniform(0.0, 1.5, (4, 2)), np.asarray(ground_state(p), np.float64)]:
        g, h = _autodiff(p, u, 2)
        # signed η: V at real amplitudes of either sign, as the lattice sees it
        np.testing.assert_allclose(potential_gradient(u, p.alpha, p.beta, p.eta, p.nu), g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(potential_hessian(u, p.alpha, p.beta, p.eta, p.nu), h, rtol=1e-12, atol=1e-14)


def test_one_band_derivatives_match_autodiff():
    for alpha, beta in [(-1.0, 1.0), (-0.5, 2.0), (0.3, 1.0)]:
        p = presets.single_component(alpha=alpha, beta=beta)
        for u in (np.array([0.0]), np.array([0.7]), np.asarray(ground_state(p), np.float64)):
            g, h = _autodiff(p, u, 1)
            np.testing.assert_allclose(potential_gradient(u, p.alpha, p.beta), g, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(potential_hessian(u, p.alpha, p.beta), h, rtol=1e-12, atol=1e-14)
            assert potential_hessian(u, p.alpha, p.beta).shape == (1, 1)


def test_batched_shapes_and_broadcasting():
    p = presets.type15()
    u = np.random.default_rng(1).uniform(0, 1, (3, 5, 2))
    eta = np.linspace(-0.5, 0.5, 5)
    nu = np.linspace(0.0, 0.3, 5)
    h = potential_hessian(u, p.alpha, p.beta, eta, nu)
    g = potential_gradient(u, p.alpha, p.beta, eta, nu)
    assert h.shape == (3, 5, 2, 2) and g.shape == (3, 5, 2)
    np.testing.assert_array_equal(h, np.swapaxes(h, -1, -2))
    for i in range(3):
        for j in range(5):
            q = dataclasses.replace(p, eta=np.float64(eta[j]), nu=np.float64(nu[j]))
            ga, ha = _autodiff(q, u[i, j], 2)
            np.testing.assert_allclose(h[i, j], ha, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(g[i, j], ga, rtol=1e-12, atol=1e-14)


def _true_minimum(p: TDGLParams) -> np.ndarray:
    """The lattice potential's real minimiser: ψ₂ = sign(η)·u₂ (the phases lock at 0 or π)."""
    u = np.array(length_scales(p).u)
    if u.size == 2 and float(p.eta) < 0:
        u[1] = -u[1]
    return u


@pytest.mark.parametrize("eta,nu", CASES)
@pytest.mark.parametrize("e", [0.45, 0.7])
def test_length_scales_masses_are_the_autodiff_curvature(eta, nu, e):
    """m±² = eig(diag(2K)^-1 Hess V) at the true minimum (with the signed η), so the |η| convention
    of length_scales is checked against the lattice potential rather than against itself."""
    p = presets.type15(eta=eta, nu=nu, e=e)
    ls = length_scales(p)
    g, h = _autodiff(p, _true_minimum(p), 2)
    np.testing.assert_allclose(g, 0.0, atol=1e-12)  # a stationary point of the lattice potential
    d = 1 / np.sqrt(2 * np.asarray(p.K))
    m2 = np.clip(np.linalg.eigvalsh(d[:, None] * h * d[None, :]), 0, None)
    np.testing.assert_allclose([ls.m_minus, ls.m_plus], np.sqrt(m2), rtol=1e-10, atol=1e-12)


def test_single_component_length_scales_curvature():
    p = presets.single_component(alpha=-0.5, beta=2.0, K=0.25)
    ls = length_scales(p)
    _, h = _autodiff(p, _true_minimum(p), 1)
    np.testing.assert_allclose(ls.m_minus, np.sqrt(h[0, 0] / (2 * 0.25)), rtol=1e-12)
    assert ls.m_minus == ls.m_plus


def _gershgorin_dt_psi(p: TDGLParams, cfg: TDGLConfig) -> float:
    """The ψ Euler bound of stability_bounds with the Hessian from autodiff, one parameter set."""
    _, h = _autodiff(p, _true_minimum(p), cfg.components)
    rows = np.abs(h).sum(axis=-1)
    return float(np.min(2 * np.asarray(p.gamma) / (8 * np.asarray(p.K) / cfg.h**2 + rows / 2)))


@pytest.mark.parametrize("eta,nu", CASES)
@pytest.mark.parametrize("field", [0.05, 0.2])
def test_stability_bounds_use_the_autodiff_curvature(eta, nu, field):
    cfg = TDGLConfig(shape=(16, 16))
    p = presets.type15(eta=eta, nu=nu, field=field)
    dt_psi, _ = stability_bounds(p, cfg)
    assert dt_psi == pytest.approx(_gershgorin_dt_psi(p, cfg), rel=1e-6)  # ground_state is a JAX estimate


def test_stability_bounds_single_component_and_batch():
    cfg1 = TDGLConfig(shape=(16, 16), components=1)
    for alpha in (-1.0, -2.0, 0.3):
        p = presets.single_component(alpha=alpha)
        assert stability_bounds(p, cfg1)[0] == pytest.approx(_gershgorin_dt_psi(p, cfg1), rel=1e-6)
    # a batch is bounded by its worst member
    cfg = TDGLConfig(shape=(16, 16))
    etas, nus = np.array([0.0, -0.4, 1.5]), np.array([0.0, 0.3, -0.02])
    members = [presets.type15(eta=a, nu=b) for a, b in zip(etas, nus, strict=True)]
    batch = dataclasses.replace(members[0], eta=etas, nu=nus, field=np.full(3, 0.08))
    expected = [stability_bounds(q, cfg) for q in members]
    assert stability_bounds(batch, cfg) == pytest.approx(tuple(np.min(expected, axis=0)), rel=1e-12)
