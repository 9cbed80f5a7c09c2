"""SK-ROCK (``scheme="skrock"``): coefficients, loop form = reference step, convergence order,
energy descent, stability bound, fluctuation–dissipation, and quench statistics vs Euler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glsbi_plugin.physics import (
    TDGLConfig,
    TDGLConfigError,
    densities,
    free_energy,
    initial_state,
    integrate,
    presets,
    simulate,
    simulate_batch,
    stability_bounds,
    winding,
)
from glsbi_plugin.physics._forward import _simulate
from glsbi_plugin.physics._lattice import link_variables
from glsbi_plugin.physics._skrock import SKROCK_DAMPING, skrock_coefficients, skrock_stability
from glsbi_plugin.physics._solver import _noise, skrock_step


def scalar_step(stages: int, p: float, x: float, q: float) -> float:
    """One SK-ROCK step of dX = λX dt + dW on a scalar (p = λ dt, q = the noise increment)."""
    (mu1, nu1, kappa1), *rest = skrock_coefficients(stages)
    k_prev, k = x, x + mu1 * p * (x + nu1 * q) + kappa1 * q
    for mu, nu, kappa in rest:
        k_prev, k = k, mu * p * k + nu * k + kappa * k_prev
    return k


def chebyshev_t(s: int, x: float) -> float:
    return float(np.polynomial.chebyshev.chebval(x, [0] * s + [1]))


@pytest.mark.parametrize("stages", [1, 2, 3, 5, 10])
def test_stability_polynomial_is_the_damped_chebyshev_one(stages):
    """R(p) = T_s(ω0 + ω1 p)/T_s(ω0); |R| <= 1 on [-L_s, 0], > 1 a little beyond; L_s ≈ (2-4ε/3)s²."""
    w0 = 1 + SKROCK_DAMPING / stages**2
    w1 = skrock_coefficients(stages)[0][0] * w0
    L = skrock_stability(stages)
    for p in np.linspace(-L, 0, 201):
        r = scalar_step(stages, p, 1.0, 0.0)
        assert r == pytest.approx(chebyshev_t(stages, w0 + w1 * p) / chebyshev_t(stages, w0), abs=1e-12)
        assert abs(r) <= 1 + 1e-12
    assert abs(scalar_step(stages, -1.05 * L, 1.0, 0.0)) > 1  # L_s: where the argument reaches -1
    assert (2 - 4 * SKROCK_DAMPING / 3) * stages**2 <= L <= 2 * stages**2
    assert scalar_step(stages, -1e-4, 1.0, 0.0) == pytest.approx(np.exp(-1e-4), abs=1e-8), "consistent"


@pytest.mark.parametrize("gauge,thermal", [("dynamic", True), ("dynamic", False), ("frozen", True)])
@pytest.mark.parametrize(
    "stages,num_steps,save_every,start",
    [(1, 6, 0, 0), (2, 6, 0, 0), (3, 6, 0, 0), (5, 6, 0, 0), (1, 7, 3, 2), (3, 7, 3, 2), (3, 0, 0, 5)],
)
def test_loop_form_equals_the_reference_step(stages, gauge, thermal, num_steps, save_every, start):
    """``integrate`` (one scan iteration per stage, carried W, noise drawn two steps ahead) =
    ``skrock_step`` applied step by step with the noise of step ``start + k``, also when the run
    is cut into ``save_every`` chunks (each chunk re-primes the noise) or takes no step."""
    cfg = TDGLConfig(
        shape=(12, 10),
        dt=0.05 * stages**2,
        scheme="skrock",
        stages=stages,
        dtype="float64",
        gauge=gauge,
        thermal=thermal,
    )
    p = presets.type15(eta=0.2, field=0.3, T=0.01).astype(jnp.float64)
    x0 = initial_state(p, jax.random.key(0), cfg)
    key = jax.random.key(3)
    fast, saved = integrate(x0, p, key, cfg, num_steps, save_every=save_every, start=start)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    ref, links, refs = x0, link_variables(x0, p, cfg), []
    for k in range(num_steps):
        noise = _noise(key, seed, jnp.asarray(start + k), cfg) if thermal else None
        ref = skrock_step(ref, p, cfg, noise, links)
        if save_every and (k + 1) % save_every == 0:
            refs.append(ref)
    np.testing.assert_allclose(np.asarray(fast.psi), np.asarray(ref.psi), atol=1e-12)
    np.testing.assert_allclose(np.asarray(fast.a_x), np.asarray(ref.a_x), atol=1e-12)
    if save_every:
        assert saved.psi.shape[0] == len(refs) == num_steps // save_every
        for got, want in zip(saved.psi, refs, strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want.psi), atol=1e-12)
    if num_steps:
        assert float(jnp.abs(fast.psi - x0.psi).max()) > 1e-3, "the state should have moved"
    else:
        assert fast.psi.tobytes() == x0.psi.tobytes()


def test_first_order_convergence_to_the_fine_euler_solution():
    """T = 0, t = 4 from a noisy normal state: the error against Euler at dt = 0.0025 halves with dt
    (measured: 0.043, 0.020, 0.0093 at dt = 0.2, 0.1, 0.05; Euler at the same dt: 1.5x larger)."""
    base = TDGLConfig(shape=(16, 16), dtype="float64", thermal=False)
    p = presets.type15(eta=0.2, field=0.3).astype(jnp.float64)
    x0 = initial_state(p, jax.random.key(0), base.replace(init_noise=0.3))
    ref, _ = integrate(x0, p, jax.random.key(1), base.replace(dt=0.0025), 1600)
    errors = []
    for dt in (0.2, 0.1, 0.05):
        cfg = base.replace(dt=dt, scheme="skrock", stages=3)
        x, _ = integrate(x0, p, jax.random.key(1), cfg, round(4 / dt))
        errors.append(float(jnp.linalg.norm(x.psi - ref.psi) / jnp.linalg.norm(ref.psi)))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert errors[-1] < 0.015
    for r in ratios:
        assert 1.6 < r < 2.6, f"errors {errors}: not first order"


@pytest.mark.parametrize("gauge", ["dynamic", "frozen"])
def test_energy_decreases_at_zero_temperature_with_a_long_step(gauge):
    """Gradient flow: at T = 0 and dt 0.8x the SK-ROCK bound (about 7x Euler's) E never rises."""
    p = presets.type15(eta=0.2, field=0.3, e=0.6, T=0.0).astype(jnp.float64)
    cfg = TDGLConfig(shape=(16, 16), gauge=gauge, dtype="float64", thermal=False, scheme="skrock", stages=3)
    euler = min(stability_bounds(p, cfg)) if gauge == "dynamic" else stability_bounds(p, cfg)[0]
    cfg = cfg.replace(dt=0.8 * euler * skrock_stability(3) / 2)
    assert cfg.dt > 6 * euler
    s0 = simulate(p, jax.random.key(0), cfg.replace(steps=0))
    _, saved = integrate(s0, p, jax.random.key(1), cfg, 150, save_every=1)
    energies = np.asarray(jax.vmap(lambda s: free_energy(s, p, cfg))(saved))
    assert energies[-1] < energies[0] - 1.0
    assert np.diff(energies).max() <= 1e-9 * np.abs(energies).max()


def test_stability_bound_is_checked_and_real():
    """dt above (L_s/2)·dt_Euler is refused with the number of stages that would do; a run just
    above it blows up, one just below stays smooth."""
    p = presets.type15(eta=0.8, field=0.3)
    cfg = TDGLConfig(shape=(16, 16), steps=200, thermal=False, scheme="skrock", stages=2)
    euler = min(stability_bounds(p, cfg))
    bound = euler * skrock_stability(2) / 2
    with pytest.raises(TDGLConfigError, match=r"SK-ROCK bound for psi with stages=2.*use stages >= 3"):
        simulate(p, jax.random.key(0), cfg.replace(dt=1.05 * bound))
    unstable = _simulate(p, jax.random.key(0), cfg.replace(dt=1.15 * bound))  # unchecked
    stable = simulate(p, jax.random.key(0), cfg.replace(dt=0.95 * bound))
    rough = lambda s: float(jnp.abs(jnp.diff(jnp.abs(s.psi[0]), axis=0)).mean())  # noqa: E731
    assert not (rough(unstable) < 0.1) and rough(stable) < 0.1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stages=2), "scheme='euler' has one stage"),
        (dict(scheme="skrock", stages=0), r"stages=0: must be an integer in \[1, 64\]"),
        (dict(scheme="skrock", stages=True), r"stages=True: must be an integer"),
        (dict(scheme="rk4"), "scheme='rk4': allowed values are"),
    ],
)
def test_bad_scheme_options_are_refused(kwargs, match):
    with pytest.raises(TDGLConfigError, match=match):
        TDGLConfig(**kwargs)


def test_psi_noise_obeys_the_discrete_fluctuation_dissipation_relation():
    """Normal metal (α > 0, tiny K), each site an Ornstein–Uhlenbeck process of rate α/Γ: SK-ROCK's
    stationary ⟨|ψ|²⟩ is 2s²·S²/(1-R²) (S, R: its response to the noise and to the state over one
    step, from the scalar recursion), which tends to T/(h²α) as dt → 0 (at λdt = 0.4, s = 2 it is
    0.942 of it: the discrete bias, asserted on its own)."""
    T, alpha, h, dt, stages = 0.01, 1.0, 0.5, 0.4, 2
    cfg = TDGLConfig(
        shape=(16, 16), h=h, dt=dt, components=1, gauge="frozen", dtype="float64", scheme="skrock", stages=stages
    )
    p = presets.single_component(K=1e-4, alpha=alpha, beta=1e-6, field=0.1, T=T).astype(jnp.float64)
    s0 = simulate(p, jax.random.key(0), cfg.replace(steps=50))
    _, saved = integrate(s0, p, jax.random.key(5), cfg, 4000, save_every=5)
    mean_rho = float(jnp.mean(densities(saved)))
    R = scalar_step(stages, -alpha * dt, 1.0, 0.0)
    S = scalar_step(stages, -alpha * dt, 0.0, 1.0)
    s2 = T * dt / h**2
    exact = 2 * s2 * S**2 / (1 - R**2)
    assert abs(mean_rho / exact - 1) < 0.03  # ~15 standard errors of the time average
    boltzmann = T / (h**2 * alpha)
    assert exact / boltzmann == pytest.approx(0.942, abs=0.001)  # SK-ROCK's O(dt) bias, deterministic
    assert 0.9 < mean_rho / boltzmann < 0.98


@pytest.mark.slow  # ~45 s; `make test-all` runs it, benchmarks/scheme_agreement.py measures the same at t = 200
def test_default_step_resolves_the_quench():
    """Early in the quench (t = 20, η = 0.15, 1024 seeds) the default forward model's step leaves as
    many unannihilated vortex-antivortex pairs as Euler does, while a stable but longer step
    (SK-ROCK s = 3, dt = 0.625) leaves more. Measured: mean antivortex plaquettes per run 0.247
    (Euler 0.08), 0.227 (Euler 0.04), 0.265 (default), 0.341 (dt = 0.625), s.e. about 0.015."""
    from glsbi_plugin import DEFAULT_CONFIG

    p = presets.type15(eta=0.15, field=0.07)
    keys = jax.random.split(jax.random.key(99), 1024)
    base = TDGLConfig(shape=(48, 48))
    configs = {
        "euler": base.replace(steps=250),
        "default": DEFAULT_CONFIG.replace(shape=(48, 48), steps=round(20 / DEFAULT_CONFIG.dt)),
        "long": base.replace(scheme="skrock", stages=3, dt=0.625, steps=32),
    }
    mean, se = {}, {}
    for name, cfg in configs.items():
        w = np.asarray(jax.vmap(lambda s: winding(s, p, base))(simulate_batch(p, keys, cfg)))  # noqa: B023
        anti = (w[:, 0] < 0).sum(axis=(1, 2))
        mean[name], se[name] = anti.mean(), anti.std(ddof=1) / np.sqrt(len(anti))
    assert mean["euler"] > 0.1, "the test needs pairs to count"
    assert abs(mean["default"] - mean["euler"]) < 3 * np.hypot(se["default"], se["euler"]), mean
    assert mean["long"] - mean["euler"] > 3 * np.hypot(se["long"], se["euler"]), mean


def test_quench_statistics_agree_with_euler():
    """The default protocol at small size (32², t = 40, 16 seeds): SK-ROCK at 4x Euler's step gives the
    same vortex counts per band and, after a T = 0 relaxation, the same energy within noise."""
    p = presets.type15(eta=0.15, field=0.09)
    base = TDGLConfig(shape=(32, 32))
    configs = {
        "euler": base.replace(steps=500),
        "skrock": base.replace(dt=0.3125, steps=128, scheme="skrock", stages=2),
    }
    keys = jax.random.split(jax.random.key(7), 16)
    relax = base.replace(thermal=False)
    out = {}
    for name, cfg in configs.items():
        final = simulate_batch(p, keys, cfg)
        relaxed = jax.vmap(lambda s: integrate(s, p, jax.random.key(0), relax, 50)[0])(final)  # noqa: B023
        w = np.asarray(jax.vmap(lambda s: winding(s, p, base))(final))
        e = np.asarray(jax.vmap(lambda s: free_energy(s, p, base))(relaxed))
        out[name] = {"v1": (w[:, 0] != 0).sum(axis=(1, 2)), "v2": (w[:, 1] != 0).sum(axis=(1, 2)), "e": e}
    for stat in ("v1", "v2", "e"):
        a, b = out["euler"][stat].astype(float), out["skrock"][stat].astype(float)
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        tol = 4 * se + 1e-3 * abs(a.mean())
        assert abs(a.mean() - b.mean()) <= tol, f"{stat}: euler {a.mean():.4g} vs skrock {b.mean():.4g} (se {se:.2g})"
    assert out["euler"]["v1"].mean() >= 3, "the test should have vortices to count"
