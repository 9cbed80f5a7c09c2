"""Solver contract: NumPy reference agreement, determinism, vmap, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glsbi_plugin.physics import (
    State,
    TDGLConfig,
    TDGLConfigError,
    observe,
    presets,
    simulate,
    simulate_batch,
    stability_bounds,
)
from glsbi_plugin.physics._forward import _simulate_batch, broadcast_params
from glsbi_plugin.physics._reference import NumpyTDGL
from glsbi_plugin.physics._solver import euler_step


@pytest.mark.parametrize("boundary", ["periodic", "open", ("open", "periodic")])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("gauge", ["dynamic", "frozen"])
def test_numpy_reference_step_agrees(boundary, dtype, tol, gauge):
    cfg = TDGLConfig(shape=(12, 10), dtype=dtype, boundary=boundary, gauge=gauge)
    p = presets.type15(eta=0.25, nu=0.1, field=0.3, T=0.01, e=0.6, sigma=10.0)
    rng = np.random.default_rng(0)
    psi = rng.normal(size=(2, 12, 10)) + 1j * rng.normal(size=(2, 12, 10))
    a_x, a_y = 0.3 * rng.normal(size=(2, 12, 10))
    noise = rng.normal(size=(6, 12, 10))
    s = State(jnp.asarray(psi, cfg.complex_dtype), jnp.asarray(a_x, cfg.real_dtype), jnp.asarray(a_y, cfg.real_dtype))
    step = jax.jit(euler_step, static_argnames="cfg")
    new = step(s, p.astype(cfg.real_dtype), cfg=cfg, noise=jnp.asarray(noise, cfg.real_dtype))
    ref = NumpyTDGL(cfg).step(
        np.asarray(s.psi, np.complex128), np.asarray(s.a_x, float), np.asarray(s.a_y, float), p, noise
    )
    for got, want in zip((new.psi, new.a_x, new.a_y), ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=tol * max(1.0, np.abs(want).max()))


def test_float32_is_default_and_kept():
    cfg = TDGLConfig(shape=(8, 8), steps=3)
    s = simulate(presets.type15(field=0.8), jax.random.key(0), cfg)
    assert s.psi.dtype == jnp.complex64 and s.a_x.dtype == jnp.float32
    assert observe(s, presets.type15(field=0.8), cfg).dtype == jnp.float32


def test_same_seed_same_image_different_seed_differs():
    cfg = TDGLConfig(shape=(16, 16), steps=50)
    p = presets.type15(eta=0.2, field=0.4)
    a = observe(simulate(p, jax.random.key(7), cfg), p, cfg)
    b = observe(simulate(p, jax.random.key(7), cfg), p, cfg)
    c = observe(simulate(p, jax.random.key(8), cfg), p, cfg)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-3


def test_batch_equals_single_runs_and_compiles_once():
    cfg = TDGLConfig(shape=(12, 12), steps=30)
    base = presets.type15(field=0.5)
    etas = jnp.asarray([0.0, 0.1, 0.3])
    params = broadcast_params(base, 3).replace(eta=etas)
    keys = jax.random.split(jax.random.key(0), 3)
    compiled = _simulate_batch._cache_size()  # other tests of the session compile other configs
    batch = simulate_batch(params, keys, cfg)
    assert _simulate_batch._cache_size() == compiled + 1
    for i in range(3):
        single = simulate(base.replace(eta=float(etas[i])), keys[i], cfg)
        np.testing.assert_allclose(batch.psi[i], single.psi, rtol=1e-5, atol=1e-6)
    simulate_batch(params.replace(eta=etas + 0.01), keys, cfg)  # new values: no recompilation
    assert _simulate_batch._cache_size() == compiled + 1


def test_parameters_change_the_image():
    cfg = TDGLConfig(shape=(16, 16), steps=200)
    imgs = [
        observe(simulate(presets.type15(eta=eta, field=0.4), jax.random.key(0), cfg), None, cfg) for eta in (0.0, 0.4)
    ]
    assert float(jnp.abs(imgs[0] - imgs[1]).mean()) > 0.05


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(shape=(0, 16)), r"shape=\(0, 16\).*>= 4"),
        (dict(shape=(16,)), "two integers"),
        (dict(h=-0.5), "h=-0.5"),
        (dict(dt=0.0), "dt=0.0"),
        (dict(steps=-1), "steps=-1"),
        (dict(components=3), "components=3"),
        (dict(boundary="mirror"), "boundary='mirror'"),
        (dict(gauge="coulomb"), "gauge='coulomb'"),
        (dict(dtype="float16"), "dtype='float16'"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TDGLConfig(**kwargs)


def test_bad_params_are_refused_with_the_bound():
    cfg = TDGLConfig(shape=(16, 16), steps=1, dt=0.2)
    with pytest.raises(TDGLConfigError, match=r"dt=0.2 exceeds .*psi.*0\.125"):
        simulate(presets.type15(field=0.4), jax.random.key(0), cfg)
    cfg = TDGLConfig(shape=(16, 16), steps=1, dt=0.1)
    with pytest.raises(TDGLConfigError, match=r"bound for A, .* \(σ e² h²/4 = 0\.01266"):
        simulate(presets.type15(field=0.4, sigma=1.0), jax.random.key(0), cfg)
    with pytest.raises(TDGLConfigError, match="params.eta contains non-finite"):
        simulate(presets.type15(eta=float("nan"), field=0.4), jax.random.key(0), cfg)
    with pytest.raises(TDGLConfigError, match=r"field=0.001 gives N_phi = 0 .* must be >= 0\.04909"):
        simulate(presets.type15(field=0.001), jax.random.key(0), cfg)
    with pytest.raises(TDGLConfigError, match=r"params.K has shape \(2,\); expected \(\.\.\., 1\)"):
        simulate(presets.type15(field=0.4), jax.random.key(0), cfg.replace(components=1))
    with pytest.raises(TDGLConfigError, match="params.beta=-1: must be > 0"):
        simulate(presets.type15(field=0.4, beta=(-1.0, 1.0)), jax.random.key(0), cfg)


def test_stability_bound_includes_the_potential_curvature():
    """At η = 0.8 the strong band's amplitude mode makes dt = 0.1 unstable although
    dt < Γh²/(4K) = 0.125: the check refuses it, and a run just above the bound blows up."""
    p = presets.type15(eta=0.8, field=0.3)
    cfg = TDGLConfig(shape=(16, 16), steps=400, dt=0.1, thermal=False)
    dt_psi, _ = stability_bounds(p, cfg)
    assert 0.08 < dt_psi < 0.09
    with pytest.raises(TDGLConfigError, match=r"dt=0.1 exceeds the explicit-Euler bound for psi.* = 0\.086"):
        simulate(p, jax.random.key(0), cfg)
    from glsbi_plugin.physics._forward import _simulate

    unstable = _simulate(p, jax.random.key(0), cfg.replace(dt=1.15 * dt_psi))  # unchecked
    stable = simulate(p, jax.random.key(0), cfg.replace(dt=0.95 * dt_psi))
    rough = lambda s: float(jnp.abs(jnp.diff(jnp.abs(s.psi[0]), axis=0)).mean())  # noqa: E731
    assert not (rough(unstable) < 0.1) and rough(stable) < 0.1


def test_float64_without_x64_is_refused():
    cfg = TDGLConfig(shape=(8, 8), steps=1, dtype="float64")
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            simulate(presets.type15(field=0.8), jax.random.key(0), cfg)


def test_bad_channel_is_refused():
    cfg = TDGLConfig(shape=(8, 8), steps=1, components=1)
    p = presets.single_component(field=0.8)
    s = simulate(p, jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="channels=.*rho2"):
        observe(s, p, cfg, channels=("rho2",))
