"""The torus symmetries that the training augmentation (``EmbeddingConfig(symmetry="torus")``) relies on.

The augmentation treats every circular shift, 90° rotation and reflection of an image as another
draw from p(x | θ). That holds if the solver is *covariant* under these maps, with a reflection
(which sends the applied field B to −B) followed by complex conjugation ψ → ψ*, A → −A (which
sends it back to +B without changing any density or the B_z map). These tests run the
deterministic (T = 0) solver from a state and from its image under the map, and compare the
gauge-invariant outputs: densities |ψ_a|² and the plaquette flux.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from glsbi_plugin.embeddings import EmbeddingConfig, torus_symmetry
from glsbi_plugin.physics import TDGLConfig, presets
from glsbi_plugin.physics._lattice import State, background, plaquette_flux
from glsbi_plugin.physics._solver import integrate

N = 12
STEPS = 40


def _config(scheme: str) -> TDGLConfig:
    cfg = presets.forward_model(N, steps=STEPS, scheme=scheme)
    return dataclasses.replace(cfg, thermal=False)


def _random_state(cfg: TDGLConfig, params) -> State:  # noqa: ANN001
    """A superconducting-ish state with vortices: random phases, |ψ| ~ 0.5, random links."""
    rng = np.random.default_rng(3)
    amp = 0.5 + 0.2 * rng.random((cfg.components, N, N))
    phase = rng.uniform(-np.pi, np.pi, (cfg.components, N, N))
    psi = jnp.asarray(amp * np.exp(1j * phase), jnp.complex64)
    a_x, a_y = (jnp.asarray(0.1 * rng.standard_normal((N, N)), jnp.float32) for _ in range(2))
    return State(psi, a_x, a_y)


def _total_links(state: State, params, cfg: TDGLConfig) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    a_x_bg, a_y_bg, _ = background(params, cfg)
    return (np.asarray(state.a_x + a_x_bg, np.float64), np.asarray(state.a_y + a_y_bg, np.float64))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _from_total(psi: np.ndarray, big_x: np.ndarray, big_y: np.ndarray, params, cfg: TDGLConfig) -> State:  # noqa: ANN001
    """The solver's representation (background + small dynamic links) of a configuration given by
    its total link angles: the difference to the background is a flat connection mod 2π, removed
    by a gauge transformation χ (integrated along a spanning tree: ψ -> ψ e^{-iχ}, A -> A - ∇χ);
    what remains (holonomies and the dynamic part) is wrapped to (-π, π]."""
    a_x_bg, a_y_bg, _ = (np.asarray(v, np.float64) for v in background(params, cfg))
    a_x_bg, a_y_bg = np.broadcast_to(a_x_bg, (N, N)), np.broadcast_to(a_y_bg, (N, N))
    d_x, d_y = _wrap(big_x - a_x_bg), _wrap(big_y - a_y_bg)
    chi = np.zeros((N, N))
    for i in range(N - 1):  # the tree: up column j = 0, then along every row
        chi[i + 1, 0] = chi[i, 0] + d_x[i, 0]
    for j in range(N - 1):
        chi[:, j + 1] = chi[:, j] + d_y[:, j]
    a_x = _wrap(d_x - (np.roll(chi, -1, 0) - chi))
    a_y = _wrap(d_y - (np.roll(chi, -1, 1) - chi))
    return State(
        jnp.asarray(psi * np.exp(-1j * chi)[None], jnp.complex64),
        jnp.asarray(a_x, jnp.float32),
        jnp.asarray(a_y, jnp.float32),
    )


def _shift(state: State, params, cfg: TDGLConfig, s: tuple[int, int]) -> State:  # noqa: ANN001
    big_x, big_y = _total_links(state, params, cfg)
    psi = np.roll(np.asarray(state.psi), s, axis=(1, 2))
    return _from_total(psi, np.roll(big_x, s, (0, 1)), np.roll(big_y, s, (0, 1)), params, cfg)


def _transpose_conjugate(state: State, params, cfg: TDGLConfig) -> State:  # noqa: ANN001
    """Reflection (i, j) -> (j, i) then ψ -> ψ*, A -> -A: U'_x(i,j) = conj(U_y(j,i)), so
    A'_x(i,j) = -A_y(j,i), A'_y(i,j) = -A_x(j,i); the plaquette flux maps to θ(j, i) (same B)."""
    big_x, big_y = _total_links(state, params, cfg)
    psi = np.conj(np.asarray(state.psi)).transpose(0, 2, 1)
    return _from_total(psi, -big_y.T, -big_x.T, params, cfg)


def _rotate_conjugate_free(state: State, params, cfg: TDGLConfig) -> State:  # noqa: ANN001
    """Rotation by 90°: (i, j) -> (j, -1 - i) ... built as a transpose-conjugate of a flip-conjugate."""
    big_x, big_y = _total_links(state, params, cfg)
    # flip along x with conjugation: site (i, j) -> (N-1-i, j); the x-bond i -> i+1 maps to the
    # bond N-1-i -> N-2-i, i.e. the reversed x-bond at N-2-i: A'_x(i', j) = +A_x(N-2-i', j) after
    # reversal (-1) and conjugation (-1); A'_y(i', j) = -A_y(N-1-i', j)
    psi = np.conj(np.asarray(state.psi))[:, ::-1, :]
    new_x = np.roll(big_x[::-1, :], -1, axis=0)
    new_y = -big_y[::-1, :]
    flipped = _from_total(psi.copy(), new_x, new_y, params, cfg)
    return _transpose_conjugate(flipped, params, cfg)  # two reflections: a rotation, no net conjugation


def _observables(state: State, params, cfg: TDGLConfig) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    return np.abs(np.asarray(state.psi)) ** 2, np.asarray(plaquette_flux(state, params, cfg))


@pytest.fixture(scope="module", params=["euler", "skrock"])
def run(request):  # noqa: ANN001, ANN201
    cfg = _config(request.param)
    params = presets.type15(eta=0.15, field=0.6)  # N_phi = 0.6 * (6)^2 / 2π ≈ 3 quanta on 12² at h = 0.5
    step = jax.jit(lambda s: integrate(s, params, jax.random.key(0), cfg, STEPS)[0])
    return cfg, params, step


def test_shift_covariance(run) -> None:  # noqa: ANN001
    cfg, params, step = run
    s0 = _random_state(cfg, params)
    rho, flux = _observables(step(s0), params, cfg)
    rho_s, flux_s = _observables(step(_shift(s0, params, cfg, (5, 2))), params, cfg)
    np.testing.assert_allclose(rho_s, np.roll(rho, (5, 2), axis=(1, 2)), atol=2e-4)
    np.testing.assert_allclose(flux_s, np.roll(flux, (5, 2), axis=(0, 1)), atol=2e-4)


def test_reflection_with_conjugation_keeps_the_field(run) -> None:  # noqa: ANN001
    cfg, params, step = run
    s0 = _random_state(cfg, params)
    rho, flux = _observables(step(s0), params, cfg)
    t0 = _transpose_conjugate(s0, params, cfg)
    np.testing.assert_allclose(_observables(t0, params, cfg)[1], flux_0 := _observables(s0, params, cfg)[1].T,
                               atol=1e-5)  # same B (not -B) before the run
    rho_t, flux_t = _observables(step(t0), params, cfg)
    np.testing.assert_allclose(rho_t, rho.transpose(0, 2, 1), atol=2e-4)
    np.testing.assert_allclose(flux_t, flux.T, atol=2e-4)
    assert float(flux_0.sum()) > 0  # the field points the same way


def test_rotation_covariance(run) -> None:  # noqa: ANN001
    cfg, params, step = run
    s0 = _random_state(cfg, params)
    rho, _ = _observables(step(s0), params, cfg)
    rho_r, _ = _observables(step(_rotate_conjugate_free(s0, params, cfg)), params, cfg)
    expected = np.conj(rho[:, ::-1, :]).transpose(0, 2, 1)  # flip along x, then transpose
    np.testing.assert_allclose(rho_r, expected, atol=2e-4)


def test_the_map_is_not_trivially_satisfied(run) -> None:  # noqa: ANN001
    """A reflection *without* conjugation reverses B: its run is not the reflected run."""
    cfg, params, step = run
    s0 = _random_state(cfg, params)
    rho, _ = _observables(step(s0), params, cfg)
    big_x, big_y = _total_links(s0, params, cfg)
    plain = _from_total(np.asarray(s0.psi).transpose(0, 2, 1), big_y.T, big_x.T, params, cfg)  # field -> -B
    rho_p, _ = _observables(step(plain), params, cfg)
    assert np.abs(rho_p - rho.transpose(0, 2, 1)).max() > 1e-2


def test_augmentation_draws_every_group_element() -> None:
    """``torus_symmetry`` permutes pixels and reaches all 8 point-group elements (with shifts)."""
    x = torch.arange(36.0).reshape(1, 1, 6, 6).repeat(4000, 1, 1, 1)  # P(an element unseen) ~ 1e-4
    y = torus_symmetry(x, torch.Generator().manual_seed(1))
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    seen = {tuple(img.flatten().tolist()) for img in y}
    assert len(seen) == 8 * 36  # 8 point-group elements x 36 shifts of a generic image
    net = EmbeddingConfig(features=3, widths=(4,), symmetry="torus").build(1)
    net.eval()
    assert torch.equal(net(x[:2]), net(x[:2]))  # eval: no augmentation
    net.train()
    assert not torch.equal(net(x[:50]), net(x[:50]))
