"""Checks with known answers: flux quantisation, lattice Hc2, Meissner decay, equipartition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit

from glsbi_plugin.physics import (
    State,
    TDGLConfig,
    densities,
    field_map,
    flux_quanta,
    free_energy,
    integrate,
    length_scales,
    presets,
    simulate,
    winding,
)
from glsbi_plugin.physics._lattice import initial_links


@pytest.mark.parametrize("n_phi", [3, 5])
def test_total_winding_equals_flux_quanta_for_surviving_components(n_phi):
    nx = 32
    h = 0.5
    field = 2 * np.pi * n_phi / (nx * nx * h * h)
    cfg = TDGLConfig(shape=(nx, nx), steps=2000, dt=0.1, thermal=False)
    p = presets.type15(eta=0.2, field=field, e=0.45, sigma=10.0)
    assert int(flux_quanta(p.field, cfg)) == n_phi
    s = simulate(p, jax.random.key(n_phi), cfg)
    u = length_scales(p).u
    rho = np.asarray(densities(s)).mean(axis=(1, 2))
    w = np.asarray(winding(s, p, cfg))
    for a in range(2):
        assert rho[a] > 0.25 * u[a] ** 2, f"component {a + 1} should survive at this field"
        assert w[a].sum() == n_phi
        assert (w[a] > 0).sum() == n_phi, "each flux quantum should be one +1 vortex"
    # the flux itself is quantised: mean B is exactly 2π Nφ / area
    np.testing.assert_allclose(float(field_map(s, p, cfg).mean()) * (nx * h) ** 2, 2 * np.pi * n_phi, rtol=1e-5)


@pytest.mark.parametrize("ratio,sign", [(1.02, +1), (0.98, -1)])
def test_normal_state_grows_below_and_decays_above_lattice_hc2(ratio, sign):
    """Single band on the torus: linear growth rate of ψ is -(α + K ε(B))/Γ with
    ε(B) = B - B²h²/8; we set α so that Hc2,lat = ratio · B."""
    nx, h, n_phi, K = 24, 0.5, 4, 0.5
    B = 2 * np.pi * n_phi / (nx * nx * h * h)
    hc2_lat = ratio * B
    hc2 = hc2_lat - hc2_lat**2 * h * h / 8  # continuum Hc2 whose lattice value is hc2_lat
    p = presets.single_component(K=K, alpha=-K * hc2, field=B)
    assert abs(length_scales(p).hc2_lattice(h) / hc2_lat - 1) < 1e-12
    cfg = TDGLConfig(shape=(nx, nx), steps=0, dt=0.1, components=1, thermal=False, gauge="frozen", init_noise=1e-6)
    s0 = simulate(p, jax.random.key(0), cfg)
    s1, _ = integrate(s0, p, jax.random.key(1), cfg, 1000)  # higher Landau levels die out
    s2, _ = integrate(s1, p, jax.random.key(1), cfg, 1000)
    rate = np.log(float(jnp.linalg.norm(s2.psi)) / float(jnp.linalg.norm(s1.psi))) / 100.0
    expected = K * (hc2 - (B - B * B * h * h / 8))
    assert np.sign(rate) == sign
    assert abs(rate - expected) < 0.05 * abs(expected)


def test_meissner_profile_decays_with_lambda():
    """Open slab (x open, y periodic), κ = 5.7, H ≪ Hc1: B(x) = H cosh((x-L/2)/λ)/cosh(L/2λ).

    The applied field sits on the outside plaquettes, whose centres lie h/2 beyond the outermost
    sites: x is measured from there, and the slab is L = nx·h wide."""
    e, h, H = 0.25, 0.5, 0.01
    nx = 64
    cfg = TDGLConfig(
        shape=(nx, 4), h=h, dt=0.05, components=1, boundary=("open", "periodic"), thermal=False, dtype="float64"
    )
    p = presets.single_component(K=0.5, alpha=-1.0, beta=1.0, field=H, e=e, sigma=25.0)
    lam = length_scales(p).lam
    assert lam == pytest.approx(4.0)
    a_x, a_y = initial_links(p, cfg)
    s = State(jnp.ones((1, nx, 4), jnp.complex128), a_x, a_y)  # field fully penetrated at t = 0
    s, _ = integrate(s, p, jax.random.key(0), cfg, 6000)
    b = np.asarray(field_map(s, p, cfg))[:-1, 0]  # inside plaquettes
    x = (np.arange(nx - 1) + 1.0) * h
    L = nx * h

    def profile(x, lam_fit, b0):
        return b0 * np.cosh((x - L / 2) / lam_fit) / np.cosh(L / (2 * lam_fit))

    (lam_fit, b0), _ = curve_fit(profile, x, b, p0=(2.0, H))
    assert abs(lam_fit / lam - 1) < 0.05
    assert abs(b0 / H - 1) < 0.05
    assert np.all(np.diff(b[: nx // 2 - 1]) < 0), "B must fall monotonically into the sample"


@pytest.mark.parametrize("noise", ["hash", "threefry"])
def test_psi_noise_obeys_fluctuation_dissipation(noise):
    """Normal metal (α > 0, tiny K): Euler–Maruyama stationary ⟨|ψ|²⟩ = 2s²/(1-(1-αdt/Γ)²),
    s² = T dt/(Γh²), which tends to the Boltzmann value T/(h²α) as dt → 0."""
    T, alpha, h, dt = 0.01, 1.0, 0.5, 0.05
    cfg = TDGLConfig(shape=(16, 16), h=h, dt=dt, components=1, gauge="frozen", noise=noise, dtype="float64")
    p = presets.single_component(K=1e-4, alpha=alpha, beta=1e-6, field=0.1, T=T).astype(jnp.float64)
    s0 = simulate(p, jax.random.key(0), cfg.replace(steps=200))
    _, saved = integrate(s0, p, jax.random.key(5), cfg, 8000, save_every=20)
    mean_rho = float(jnp.mean(densities(saved)))
    s2 = T * dt / h**2
    exact = 2 * s2 / (1 - (1 - alpha * dt) ** 2)
    assert abs(mean_rho / exact - 1) < 0.03
    assert abs(mean_rho / (T / (h**2 * alpha)) - 1) < 0.05


@pytest.mark.parametrize("noise", ["hash", "threefry"])
def test_link_noise_obeys_fluctuation_dissipation(noise):
    """ψ = 0 on the torus: the magnetic energy's transverse modes k ≠ 0 have Hessian eigenvalues
    λ_k = (4 - 2cos kx - 2cos ky)/(e²h²); Euler–Maruyama gives ⟨E_mag⟩ = Σ_k T/(2 - dt λ_k/σ)."""
    T, e, h, sigma, n = 0.02, 1.0, 0.5, 1.0, 12
    dt = 0.25 * sigma * e**2 * h**2 / 4
    cfg = TDGLConfig(shape=(n, n), h=h, dt=dt, components=1, noise=noise, dtype="float64")
    p = presets.single_component(K=0.5, alpha=1.0, field=2 * np.pi / (n * n * h * h), T=T, e=e, sigma=sigma)
    p = p.astype(jnp.float64)
    zero = jnp.zeros((n, n))
    s0 = State(jnp.zeros((1, n, n), jnp.complex128), zero, zero)
    _, saved = integrate(s0, p, jax.random.key(2), cfg, 20000, save_every=10)
    # ψ stays ~0 (normal state, α > 0): subtract its tiny energy by zeroing it
    saved = State(jnp.zeros_like(saved.psi), saved.a_x, saved.a_y)
    e_mag = np.asarray(jax.vmap(lambda s: free_energy(s, p, cfg))(saved))[200:]
    k = 2 * np.pi * np.fft.fftfreq(n)
    lam_k = (4 - 2 * np.cos(k)[:, None] - 2 * np.cos(k)[None, :]).ravel()[1:] / (e**2 * h**2)
    expected = np.sum(T / (2 - dt * lam_k / sigma))
    assert abs(e_mag.mean() / expected - 1) < 0.03


def test_hash_noise_is_white_and_unit_variance():
    from glsbi_plugin.physics._solver import hash_uniform

    seed = jnp.asarray([12345, 678], jnp.uint32)
    draws = np.stack([np.asarray(hash_uniform(seed, k, (6, 64, 64), jnp.float64)) for k in range(40)])
    assert abs(draws.mean()) < 0.01 and abs(draws.var() - 1) < 0.01
    assert np.abs(draws).max() < np.sqrt(3)
    flat = draws.reshape(40, -1)
    assert abs(np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]) < 0.01  # step to step
    assert abs(np.corrcoef(draws[:, :, :-1].ravel(), draws[:, :, 1:].ravel())[0, 1]) < 0.01  # neighbours
    other = np.asarray(hash_uniform(jnp.asarray([12346, 678], jnp.uint32), 0, (6, 64, 64), jnp.float64))
    assert abs(np.corrcoef(other.ravel(), draws[0].ravel())[0, 1]) < 0.01  # seeds


@pytest.mark.parametrize("drag", [None, 0.4])
def test_current_vorticity_obeys_stokes_and_ampere_and_marks_vortex_cores(drag):
    """The "curlj" channel (∇×J)_z: its integral over the torus vanishes (lattice Stokes), in a
    relaxed state it equals −ΔB/e² (Ampère, the drag's cross current included) and its largest values
    sit on the vortex plaquettes, with a negative ring around them."""
    from glsbi_plugin.physics import current_vorticity, observe

    nx, h, n_phi = 24, 0.5, 3
    field = 2 * np.pi * n_phi / (nx * nx * h * h)
    cfg = TDGLConfig(shape=(nx, nx), steps=2300, dt=0.07, thermal=False, dtype="float64")
    p = presets.type15(eta=0.3, field=field, drag=drag, T=0.0).astype(jnp.float64)
    s = simulate(p, jax.random.key(1), cfg)
    cj = np.asarray(current_vorticity(s, p, cfg))
    np.testing.assert_array_equal(np.asarray(observe(s, p, cfg, ("curlj",)))[0], cj)
    assert abs(cj.sum() * h * h) < 1e-10 * np.abs(cj).max()
    b = np.asarray(field_map(s, p, cfg))
    lap_b = (np.roll(b, 1, 0) + np.roll(b, -1, 0) + np.roll(b, 1, 1) + np.roll(b, -1, 1) - 4 * b) / h**2
    ampere = -lap_b / float(p.e) ** 2
    assert np.abs(cj - ampere).max() < 0.01 * np.abs(cj).max()
    if drag is not None:  # without the cross current Ampère fails: the channel must include it
        bare = np.asarray(current_vorticity(s, p.replace(drag=0.0), cfg))
        assert np.abs(bare - ampere).max() > 0.1 * np.abs(cj).max()
    w = np.asarray(winding(s, p, cfg))[0]
    assert (w > 0).sum() == n_phi
    top = set(map(tuple, np.argwhere(cj >= np.sort(cj.ravel())[-n_phi])))
    assert top == set(map(tuple, np.argwhere(w > 0))), "the vorticity peaks on the vortex cores"
    assert cj.min() < -0.02 * cj.max()
