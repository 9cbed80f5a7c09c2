"""The drag (mixed-gradient) coupling ν_d Re[(Dψ₁)*·(Dψ₂)]: exact forces, gauge invariance, energy
descent, flux quantisation, the normal-state threshold and the penetration depth against their closed
forms with the kinetic matrix M = ((K₁, ν_d/2), (ν_d/2, K₂)), the NumPy reference step, the
stability bound, and the compatibility of parameter sets without drag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit

from glsbi_plugin.physics import (
    PARAM_NAMES,
    State,
    TDGLConfig,
    TDGLConfigError,
    TDGLParams,
    densities,
    field_map,
    flux_quanta,
    free_energy,
    ground_state,
    integrate,
    length_scales,
    presets,
    simulate,
    stability_bounds,
    winding,
)
from glsbi_plugin.physics._config import kinetic_matrix
from glsbi_plugin.physics._forward import _simulate
from glsbi_plugin.physics._lattice import forces, gauge_transform, initial_links
from glsbi_plugin.physics._reference import NumpyTDGL
from glsbi_plugin.physics._solver import euler_step

BOUNDARIES = ["periodic", "open", ("open", "periodic"), ("periodic", "open")]


def random_state(cfg: TDGLConfig, seed: int = 0, amp_a: float = 0.3) -> State:
    rng = np.random.default_rng(seed)
    nx, ny = cfg.shape
    psi = rng.normal(size=(2, nx, ny)) + 1j * rng.normal(size=(2, nx, ny))
    return State(
        jnp.asarray(psi), jnp.asarray(amp_a * rng.normal(size=(nx, ny))), jnp.asarray(amp_a * rng.normal(size=(nx, ny)))
    )


def _lattice_drag_energy(s: State, p: TDGLParams, cfg: TDGLConfig) -> float:
    """ν_d Σ_links w Re[(Uψ₁ⱼ − ψ₁ᵢ)*(Uψ₂ⱼ − ψ₂ᵢ)] from the full link angles, by explicit loops."""
    ref = NumpyTDGL(cfg)
    nx, ny = cfg.shape
    ax, ay, _ = ref.link_angles(np.asarray(s.a_x), np.asarray(s.a_y), float(p.field))
    psi = np.asarray(s.psi)
    total = 0.0
    for i in range(nx):
        for j in range(ny):
            for has, ang, (k, m) in ((ref.has_x, ax, ((i + 1) % nx, j)), (ref.has_y, ay, (i, (j + 1) % ny))):
                if has[i, j]:
                    u = np.exp(-1j * ang[i, j])
                    d1, d2 = u * psi[0, k, m] - psi[0, i, j], u * psi[1, k, m] - psi[1, i, j]
                    total += float(np.real(np.conj(d1) * d2))
    return float(p.drag) * total


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("drag", [0.37, -0.6])
def test_forces_are_minus_grad_energy_with_drag(boundary, drag):
    cfg = TDGLConfig(shape=(7, 6), boundary=boundary, dtype="float64", dt=0.01)
    p = presets.type15(eta=0.3, nu=0.2, field=0.9, e=0.6, drag=drag).astype(jnp.float64)
    s = random_state(cfg)
    # the energy holds exactly the written term: E(drag) − E(no drag) = ν_d Σ Re[D₁*D₂]
    no_drag = p.replace(drag=0.0)
    assert no_drag.drag is None
    diff = float(free_energy(s, p, cfg) - free_energy(s, no_drag, cfg))
    assert diff == pytest.approx(_lattice_drag_energy(s, p, cfg), rel=1e-11)
    f = forces(s, p, cfg)
    g = jax.grad(free_energy)(s, p, cfg)
    np.testing.assert_allclose(f.psi, -np.conj(g.psi) / (2 * cfg.h**2), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.a_x, -g.a_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f.a_y, -g.a_y, rtol=1e-10, atol=1e-10)
    # ψ₂ → −ψ₂ with (η, ν_d) → (−η, −ν_d) is a symmetry of the energy
    flipped = State(s.psi * jnp.asarray([1.0, -1.0])[:, None, None], s.a_x, s.a_y)
    mirror = p.replace(eta=-p.eta, drag=-p.drag)
    assert float(free_energy(flipped, mirror, cfg)) == pytest.approx(float(free_energy(s, p, cfg)), rel=1e-12)


@pytest.mark.parametrize("boundary", ["periodic", "open"])
def test_gauge_invariance_with_drag(boundary):
    cfg = TDGLConfig(shape=(12, 10), boundary=boundary, dtype="float64", steps=300, dt=0.05)
    p = presets.type15(eta=0.2, field=0.55, e=0.6, drag=0.4).astype(jnp.float64)
    s = simulate(p, jax.random.key(3), cfg)
    chi = jnp.asarray(np.random.default_rng(1).uniform(-np.pi, np.pi, size=cfg.shape))
    t = gauge_transform(s, chi)
    e_s = float(free_energy(s, p, cfg))
    assert abs(float(free_energy(t, p, cfg)) - e_s) < 1e-9 * abs(e_s)
    np.testing.assert_array_equal(winding(t, p, cfg), winding(s, p, cfg))
    ft, fs = forces(t, p, cfg), forces(s, p, cfg)
    np.testing.assert_allclose(ft.psi, fs.psi * jnp.exp(1j * chi), atol=1e-10)
    np.testing.assert_allclose(ft.a_x, fs.a_x, atol=1e-10)
    np.testing.assert_allclose(ft.a_y, fs.a_y, atol=1e-10)
    assert int(jnp.abs(winding(s, p, cfg)).sum()) > 0, "the test state should hold vortices"


@pytest.mark.parametrize("boundary", ["periodic", "open"])
def test_energy_decreases_monotonically_with_drag(boundary):
    cfg = TDGLConfig(shape=(16, 16), boundary=boundary, dtype="float64", thermal=False, dt=0.05)
    p = presets.type15(eta=0.2, field=0.3, e=0.6, T=0.0, drag=0.5).astype(jnp.float64)
    s0 = simulate(p, jax.random.key(0), cfg.replace(steps=0))
    _, saved = integrate(s0, p, jax.random.key(1), cfg, 600, save_every=1)
    energies = np.asarray(jax.vmap(lambda s: free_energy(s, p, cfg))(saved))
    assert energies[-1] < energies[0] - 1.0, "the quench should lower the energy substantially"
    assert np.diff(energies).max() <= 1e-9 * np.abs(energies).max(), f"energy rose by {np.diff(energies).max():g}"


def test_total_winding_equals_flux_quanta_with_drag():
    nx, h, n_phi = 32, 0.5, 3
    field = 2 * np.pi * n_phi / (nx * nx * h * h)
    cfg = TDGLConfig(shape=(nx, nx), steps=2500, dt=0.08, thermal=False)
    p = presets.type15(eta=0.2, field=field, drag=0.3)
    assert int(flux_quanta(p.field, cfg)) == n_phi
    s = simulate(p, jax.random.key(n_phi), cfg)
    u = length_scales(p).u
    rho = np.asarray(densities(s)).mean(axis=(1, 2))
    w = np.asarray(winding(s, p, cfg))
    for a in range(2):
        assert rho[a] > 0.25 * u[a] ** 2, f"component {a + 1} should survive at this field"
        assert w[a].sum() == n_phi
        assert (w[a] > 0).sum() == n_phi, "each flux quantum should be one +1 vortex"


@pytest.mark.parametrize("ratio,sign", [(1.04, +1), (0.96, -1)])
def test_normal_state_threshold_with_drag_matches_closed_form(ratio, sign):
    """Two bands, torus, linearised about ψ = 0: in the lowest lattice Landau level ε(B) = B − B²h²/8
    of −Δ_U (shared by both bands) ψ grows at rate −λ_min(A(ε)),
    A(ε) = ((α₁ + K₁ε, ν_dε/2 − η), (ν_dε/2 − η, α₂ + K₂ε)), so Hc2 is the largest B with
    (α₁ + K₁B)(α₂ + K₂B) = (η − ν_dB/2)². α₁ is set so that Hc2,lat = ratio·B; without the drag the
    same parameters would grow ~10x faster (Hc2,lat ≈ 1.3 B on both sides)."""
    nx, h, n_phi, K, eta, drag, a2 = 24, 0.5, 4, 0.5, 0.05, 0.6, -0.02
    B = 2 * np.pi * n_phi / (nx * nx * h * h)

    def eps(b: float) -> float:
        return b - b * b * h * h / 8

    ec = eps(ratio * B)
    a1 = (eta - drag * ec / 2) ** 2 / (a2 + K * ec) - K * ec
    p = presets.type15(eta=eta, field=B, alpha=(a1, a2), beta=(1.0, 1.0), T=0.0, drag=drag)
    assert length_scales(p).hc2_lattice(h) / (ratio * B) == pytest.approx(1.0, abs=1e-12)
    assert length_scales(p.replace(drag=0.0)).hc2_lattice(h) > 1.2 * B  # the drag moves the threshold
    A = np.array([[a1 + K * eps(B), drag * eps(B) / 2 - eta], [drag * eps(B) / 2 - eta, a2 + K * eps(B)]])
    expected = -np.linalg.eigvalsh(A)[0]
    cfg = TDGLConfig(shape=(nx, nx), steps=0, dt=0.07, thermal=False, gauge="frozen", init_noise=1e-6)
    s0 = simulate(p, jax.random.key(0), cfg)
    s1, _ = integrate(s0, p, jax.random.key(1), cfg, 1430)  # higher Landau levels and the other mode die out
    s2, _ = integrate(s1, p, jax.random.key(1), cfg, 1430)
    rate = np.log(float(jnp.linalg.norm(s2.psi)) / float(jnp.linalg.norm(s1.psi))) / (1430 * cfg.dt)
    assert np.sign(rate) == sign
    assert abs(rate - expected) < 0.02 * abs(expected), (rate, expected)


@pytest.mark.parametrize("eta", [0.2, -0.2])
def test_meissner_penetration_depth_with_drag(eta):
    """Open slab, κ ≫ 1, H ≪ Hc1: B(x) decays with λ = 1/m_A, m_A² = 2e²(K₁u₁² + K₂u₂² + sν_d u₁u₂),
    s = sign η (the locked relative phase): the drag stiffens (η > 0) or softens (η < 0) the screening."""
    e, h, H, nx, drag = 0.2, 0.5, 0.01, 64, 0.5
    p = presets.type15(eta=eta, drag=drag, e=e, field=H, alpha=(-1.0, -1.0), beta=(1.0, 1.0), sigma=25.0, T=0.0)
    cfg = TDGLConfig(shape=(nx, 4), h=h, dt=0.05, boundary=("open", "periodic"), thermal=False, dtype="float64")
    lam = length_scales(p).lam
    u = np.asarray(ground_state(p), np.float64)
    s_phase = np.sign(eta)
    stiffness = 0.5 * u[0] ** 2 + 0.5 * u[1] ** 2 + s_phase * drag * u[0] * u[1]
    assert lam == pytest.approx(1 / (e * np.sqrt(2 * stiffness)))
    assert abs(lam / length_scales(p.replace(drag=0.0)).lam - 1) > 0.15  # a test that can tell
    psi = np.ones((2, nx, 4)) * (u * np.array([1.0, s_phase]))[:, None, None]
    a_x, a_y = initial_links(p, cfg)
    s, _ = integrate(State(jnp.asarray(psi, jnp.complex128), a_x, a_y), p, jax.random.key(0), cfg, 6000)
    b = np.asarray(field_map(s, p, cfg))[:-1, 0]
    x = (np.arange(nx - 1) + 1.0) * h
    L = nx * h

    def profile(x, lam_fit, b0):
        return b0 * np.cosh((x - L / 2) / lam_fit) / np.cosh(L / (2 * lam_fit))

    (lam_fit, b0), _ = curve_fit(profile, x, b, p0=(2.0, H))
    assert abs(lam_fit / lam - 1) < 0.02
    assert abs(b0 / H - 1) < 0.02


@pytest.mark.parametrize("eta,drag", [(0.2, 0.5), (-0.2, 0.5), (0.1, -0.3), (0.0, 0.4)])
def test_density_mode_masses_from_the_lattice_hessian(eta, drag):
    """m±² of ``length_scales`` solve Hess V v = m²·2M_s v; the reference is the lattice energy's own
    Hessian in amplitude waves δψ_a = e^{iφ_a} c_a cos(kx) about the ground state: its k-dependence
    gives the kinetic matrix, its k = 0 part the potential, and m² = eig(kinetic⁻¹ · potential)."""
    p = presets.type15(eta=eta, drag=drag, nu=0.02).astype(jnp.float64)
    n, h = 8, 0.5
    cfg = TDGLConfig(shape=(n, 4), h=h, dtype="float64", components=2)
    u = np.asarray(length_scales(p).u)
    if eta != 0:
        phase = np.array([1.0, np.sign(eta)])
    else:  # free relative phase: length_scales takes the branch of the larger stiffness, s = sign ν_d
        phase = np.array([1.0, np.sign(drag)])
    x = np.arange(n)[:, None] * np.ones((1, 4))
    zero = jnp.zeros((n, 4))
    p0 = p.replace(field=0.0)  # N_φ = 0: U = 1

    @jax.jit
    def energy(c: jax.Array, k: jax.Array) -> jax.Array:
        amp = jnp.asarray(u)[:, None, None] + c[:, None, None] * jnp.cos(k * jnp.asarray(x))[None]
        psi = (jnp.asarray(phase)[:, None, None] * amp).astype(jnp.complex128)
        return free_energy(State(psi, zero, zero), p0, cfg)

    def hessian(k: float, d: float = 1e-4) -> np.ndarray:
        """Central second differences (jax.hessian of |D|² is 0 at D = 0, the uniform state)."""
        e = np.eye(2) * d
        f = lambda c: float(energy(jnp.asarray(c), jnp.float64(k)))  # noqa: E731
        return np.array(
            [[(f(e[a] + e[b]) - f(e[a] - e[b]) - f(e[b] - e[a]) + f(-e[a] - e[b])) / (4 * d * d) for b in range(2)]
             for a in range(2)]
        )

    k = 2 * np.pi / n
    hess_0, hess_k = hessian(0.0), hessian(k)
    # N = 4n sites: hess_0 = N h² Hess V (no kinetic term at k = 0); at k ≠ 0 the potential part is
    # halved (⟨cos²⟩ = ½) and the x-links add N (2 − 2cos k) M_s, so kin = N h² M_s, pot = N h² Hess V / 2
    pot = hess_0 / 2
    kin = (hess_k - pot) / ((2 - 2 * np.cos(k)) / h**2)
    m2_ref = np.sort(np.real(np.linalg.eigvals(np.linalg.solve(kin, pot))))
    ls = length_scales(p)
    np.testing.assert_allclose([ls.m_minus**2, ls.m_plus**2], m2_ref, rtol=1e-5)
    # and the kinetic matrix seen by the amplitudes is M with the off-diagonal times s
    s_phase = phase[1]
    m_s = kinetic_matrix(p) * np.array([[1.0, s_phase], [s_phase, 1.0]])
    np.testing.assert_allclose(kin / kin[0, 0], m_s / m_s[0, 0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("boundary", ["periodic", "open", ("open", "periodic")])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("gauge", ["dynamic", "frozen"])
def test_numpy_reference_step_agrees_with_drag(boundary, dtype, tol, gauge):
    cfg = TDGLConfig(shape=(12, 10), dtype=dtype, boundary=boundary, gauge=gauge, dt=0.05)
    p = presets.type15(eta=0.25, nu=0.1, field=0.3, T=0.01, e=0.6, sigma=10.0, drag=-0.45)
    rng = np.random.default_rng(0)
    psi = rng.normal(size=(2, 12, 10)) + 1j * rng.normal(size=(2, 12, 10))
    a_x, a_y = 0.3 * rng.normal(size=(2, 12, 10))
    noise = rng.normal(size=(6, 12, 10))
    s = State(jnp.asarray(psi, cfg.complex_dtype), jnp.asarray(a_x, cfg.real_dtype), jnp.asarray(a_y, cfg.real_dtype))
    step = jax.jit(euler_step, static_argnames="cfg")
    new = step(s, p.astype(cfg.real_dtype), cfg=cfg, noise=jnp.asarray(noise, cfg.real_dtype))
    fields = (np.asarray(s.psi, np.complex128), np.asarray(s.a_x, float), np.asarray(s.a_y, float))
    ref = NumpyTDGL(cfg).step(*fields, p, noise)
    no_drag = NumpyTDGL(cfg).step(*fields, p.replace(drag=0.0), noise)
    assert np.abs(ref[0] - no_drag[0]).max() > 0.01  # the drag is in the reference
    for got, want in zip((new.psi, new.a_x, new.a_y), ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=tol * max(1.0, np.abs(want).max()))


def test_stability_bound_with_drag_is_real():
    """The drag raises the checkerboard rate to 8λ_max(M)/h² (K₁ = K₂: λ_max = K + |ν_d|/2): a run
    at 0.9x the bound without drag blows up, one at 0.95x the bound with drag stays smooth, one at
    1.15x it blows up."""
    p = presets.type15(eta=0.0, field=0.3, drag=0.8)
    cfg = TDGLConfig(shape=(16, 16), steps=200, dt=0.05, thermal=False)
    dt_psi, _ = stability_bounds(p, cfg)
    dt_plain, _ = stability_bounds(p.replace(drag=0.0), cfg)
    assert dt_psi < 0.7 * dt_plain
    with pytest.raises(TDGLConfigError, match=r"explicit-Euler bound for psi, dt <= 2Γ/\(8\(K \+ \|drag\|/2\)/h²"):
        simulate(p, jax.random.key(0), cfg.replace(dt=1.05 * dt_psi))
    rough = lambda s: float(jnp.abs(jnp.diff(jnp.abs(s.psi[0]), axis=0)).mean())  # noqa: E731
    stable = simulate(p, jax.random.key(0), cfg.replace(dt=0.95 * dt_psi))
    assert rough(stable) < 0.1
    for dt in (1.15 * dt_psi, 0.9 * dt_plain):
        assert not (rough(_simulate(p, jax.random.key(0), cfg.replace(dt=dt))) < 0.1)  # unchecked


def test_drag_bound_and_one_component_are_refused():
    cfg = TDGLConfig(shape=(8, 8), steps=1, dt=0.01)
    with pytest.raises(TDGLConfigError, match=r"drag=1\.02.*positive definite, \|drag\| < 2·sqrt\(K1·K2\) = 1\b"):
        simulate(presets.type15(field=0.8, drag=1.02), jax.random.key(0), cfg)
    with pytest.raises(TDGLConfigError, match=r"\|drag\| < 2·sqrt\(K1·K2\) = 0\.4"):
        simulate(presets.type15(field=0.8, drag=-0.5, K=(0.2, 0.2)), jax.random.key(0), cfg)
    one = presets.single_component(field=0.8)
    with pytest.raises(TDGLConfigError, match="components=1 has no drag term"):
        simulate(one.replace(drag=0.1), jax.random.key(0), cfg.replace(components=1))
    np.testing.assert_allclose(kinetic_matrix(presets.type15(drag=0.3, K=(0.5, 0.2))), [[0.5, 0.15], [0.15, 0.2]])


def test_no_drag_keeps_descriptions_and_programs():
    """Parameter sets without drag describe (and hash) as before the term existed; a concrete zero is
    no drag (the same pytree, hence the same compiled program and bit-identical fields)."""
    p = presets.type15(eta=0.1, field=0.4)
    assert "drag" not in p.to_dict() and "drag" in PARAM_NAMES
    assert presets.type15(eta=0.1, field=0.4, drag=0.0).to_dict() == p.to_dict()
    assert p.replace(drag=0.0).drag is None and float(p.get("drag")) == 0.0
    with_drag = p.replace(drag=0.25)
    assert with_drag.to_dict()["drag"] == 0.25
    back = TDGLParams.from_dict(with_drag.to_dict())
    assert float(back.drag) == 0.25 and TDGLParams.from_dict(p.to_dict()).drag is None
    cfg = TDGLConfig(shape=(8, 8), steps=20)
    a = simulate(p, jax.random.key(4), cfg)
    b = simulate(presets.type15(eta=0.1, field=0.4, drag=0.0), jax.random.key(4), cfg)
    c = simulate(with_drag, jax.random.key(4), cfg)
    np.testing.assert_array_equal(np.asarray(a.psi), np.asarray(b.psi))
    assert float(jnp.abs(a.psi - c.psi).max()) > 1e-3
    # a traced drag (a θ column under vmap) runs the term; at 0 it agrees with no drag to rounding
    traced = jax.jit(lambda d: _simulate(p.replace(drag=d), jax.random.key(4), cfg))(jnp.float32(0.0))
    np.testing.assert_allclose(np.asarray(traced.psi), np.asarray(a.psi), atol=1e-4)
