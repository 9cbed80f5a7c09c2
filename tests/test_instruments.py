"""Instruments (STM, SQUID, Decoration): the physics of each measurement on synthetic fields, the
pixel grid, nuisance ranges, serialisation, and the end-to-end forward model.

Most tests call ``measure`` on fields built here (a flux tube, a density pattern, a winding map):
no simulation is needed. Conventions (``_instruments``): sites sit at ``i h`` (cell
``[(i-1/2)h, (i+1/2)h)``), plaquettes are ``[i h, (i+1) h)`` with centre ``(i+1/2) h``.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import (
    SQUID,
    STM,
    Decoration,
    Observation,
    Range,
    TDGLConfig,
    forward,
    length_scales,
    make_observation,
    observation_from_dict,
    observe,
    presets,
    simulate,
)
from glsbi_plugin.physics._instruments import FIELDS, _resample_matrix, instrument_from_dict
from glsbi_plugin.sbi_simulator import TDGLSimulator

INF = float("inf")
H = 0.5
N = 32
CFG = TDGLConfig(shape=(N, N), h=H, steps=1)
P = presets.type15()  # λ = 1.06 (e = 0.45)
P_LONDON0 = presets.type15(e=1e4)  # λ = 7e-5: q/(q+k) = 1 to 6e-4 on the whole grid


def key(i: int) -> jax.Array:
    return jax.random.key(i)


def cfg_n(n: int, h: float = H) -> TDGLConfig:
    return TDGLConfig(shape=(n, n), h=h, steps=1)


def delta_tube(n: int, i: int, j: int, h: float = H) -> np.ndarray:
    """B_z of one flux quantum (flux 2π) through plaquette (i, j)."""
    b = np.zeros((n, n))
    b[i, j] = 2 * np.pi / h**2
    return b


def gauss_tube(n: int, i: int, j: int, width: float, h: float = H) -> np.ndarray:
    """A periodic Gaussian flux tube centred on plaquette (i, j), total flux exactly 2π."""
    c = (np.arange(n) + 0.5) * h
    L = n * h
    dx = (c - c[i] + L / 2) % L - L / 2
    dy = (c - c[j] + L / 2) % L - L / 2
    g = np.exp(-0.5 * (dx[:, None] ** 2 + dy[None, :] ** 2) / width**2)
    return g * (2 * np.pi / (g.sum() * h**2))


def smooth_field(n: int, seed: int, corr: float = 2.0, h: float = H) -> np.ndarray:
    """A smooth random positive density on the torus (Gaussian-filtered white noise)."""
    rng = np.random.default_rng(seed)
    k = 2 * np.pi * np.fft.fftfreq(n, d=h)
    kk = k[:, None] ** 2 + k[None, :] ** 2
    f = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.exp(-0.5 * corr**2 * kk)))
    return 1.0 + 0.5 * f / f.std()


def squid_image(inst: SQUID, bz: np.ndarray, params=P, cfg: TDGLConfig = CFG, k: int = 0) -> np.ndarray:
    return np.asarray(inst.measure({"bz": jnp.asarray(bz)}, params, cfg, key(k)))


def periodic_monopole(n: int, i: int, j: int, z: float, h: float = H, images: int = 4) -> np.ndarray:
    r"""Σ over torus images of :math:`z / (2\pi (r^2 + z^2)^{3/2})` (unit flux, per unit area) at plaquette centres."""
    L = n * h
    c = (np.arange(n) + 0.5) * h
    X, Y = np.meshgrid(c - c[i], c - c[j], indexing="ij")
    return sum(
        z / (2 * np.pi * ((X + a * L) ** 2 + (Y + b * L) ** 2 + z**2) ** 1.5)
        for a in range(-images, images + 1)
        for b in range(-images, images + 1)
    )


# ============================================================================ SQUID
def test_squid_keeps_the_mean_flux_exactly():
    """k = 0 passes unchanged: mean(B/2π) × area = N_φ, at any height, loop and λ, resampled or not."""
    bz = gauss_tube(N, 5, 7, 0.6) + gauss_tube(N, 20, 9, 1.0) + gauss_tube(N, 12, 28, 0.8)  # N_φ = 3
    area = (N * H) ** 2
    for inst in [
        SQUID(height=0.0, loop=0.0, snr=INF),
        SQUID(height=1.5, loop=0.7, snr=INF),
        SQUID(height=4.0, loop=0.3, snr=INF, pixels=8),  # area-weighted pixels over the whole sample
        SQUID(height=2.0, loop=0.0, snr=INF, pixels=12),  # pixels not commensurate with the cells
    ]:
        x = squid_image(inst, bz)
        assert x.mean() * area == pytest.approx(3.0, rel=2e-5), inst
    # with a wrong normalisation (e.g. not /2π) the integral would not be the number of quanta
    assert squid_image(SQUID(height=1.0, snr=INF), delta_tube(N, 3, 3)).mean() * area == pytest.approx(1.0, rel=2e-5)


def test_squid_at_zero_height_and_zero_lambda_is_the_bulk_map():
    """z = 0, point probe, λ → 0: the transfer function is 1 and the image is B_bulk / 2π."""
    bz = 3.0 * smooth_field(N, 1, corr=0.5) + delta_tube(N, 10, 4)
    x = squid_image(SQUID(height=0.0, loop=0.0, snr=INF), bz, params=P_LONDON0)[0]
    np.testing.assert_allclose(x, bz / (2 * np.pi), rtol=0, atol=2e-3 * np.abs(bz / (2 * np.pi)).max())
    # at finite λ the surface sees q/(q+k) < 1 at high k: the delta tube's peak is lower
    x_lam = squid_image(SQUID(height=0.0, loop=0.0, snr=INF), bz, params=P)[0]
    assert x_lam[10, 4] < 0.8 * x[10, 4]


def test_squid_contrast_falls_monotonically_with_height():
    bz = gauss_tube(N, 16, 16, 0.5)
    contrast = []
    for z in [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]:
        x = squid_image(SQUID(height=z, loop=0.3, snr=INF), bz)[0]
        contrast.append(x.max() / x.mean())
    assert np.all(np.diff(contrast) < 0), contrast
    assert contrast[0] > 5 * contrast[-1]


def test_squid_far_from_a_london_free_tube_sees_a_monopole():
    r"""λ → 0, point probe: the image of a flux quantum at height z is the monopole field
    :math:`z / 2\pi(r^2+z^2)^{3/2}` (periodised): peak :math:`1/2\pi z^2`, half width at half
    maximum :math:`z\sqrt{2^{2/3}-1} = 0.766\,z`."""
    n, i0 = 64, 20
    cfg = cfg_n(n)
    hwhm_factor = math.sqrt(2 ** (2 / 3) - 1)
    assert hwhm_factor == pytest.approx(0.7664, abs=1e-4)
    for z in [2.0, 3.0]:
        x = squid_image(SQUID(height=z, loop=0.0, snr=INF), delta_tube(n, i0, i0), params=P_LONDON0, cfg=cfg)[0]
        mono = periodic_monopole(n, i0, i0, z)
        np.testing.assert_allclose(x, mono, rtol=0, atol=3e-3 * mono.max())
        assert np.unravel_index(x.argmax(), x.shape) == (i0, i0)
        assert x.max() == pytest.approx(1 / (2 * np.pi * z**2), rel=0.01)
        prof = x[i0:, i0]
        half = prof[0] / 2
        k = int(np.argmax(prof < half))
        hwhm = H * (k - 1 + (prof[k - 1] - half) / (prof[k - 1] - prof[k]))  # linear interpolation
        assert hwhm == pytest.approx(hwhm_factor * z, rel=0.03)


def test_squid_far_field_of_a_vortex_is_a_monopole_a_penetration_depth_below_the_surface():
    """At z ≫ λ, q/(q+k) ≈ 1 − kλ ≈ e^{−kλ}: the source looks like a monopole at depth λ
    (λ = 1/m_A of the parameters, ``length_scales``), not at the surface."""
    n, i0, z = 128, 40, 8.0
    lam = length_scales(P).lam
    assert lam == pytest.approx(1.06, abs=0.01)
    x = squid_image(SQUID(height=z, loop=0.0, snr=INF), delta_tube(n, i0, i0), cfg=cfg_n(n))[0]
    err = {zz: np.abs(x - periodic_monopole(n, i0, i0, zz)).max() / x.max() for zz in (z, z + lam)}
    assert err[z + lam] < 0.07 and err[z] > 3 * err[z + lam], err


@pytest.mark.parametrize("e", [0.45, 0.9])
def test_squid_multiplies_each_fourier_mode_by_the_surface_transfer_function(e):
    r"""A field mode :math:`\cos(k x)` comes out times :math:`\frac{q}{q+k} e^{-kz} e^{-\sigma^2k^2/2}`,
    :math:`q = \sqrt{k^2 + \lambda^{-2}}`, with λ = 1/m_A of ``length_scales`` (Kogan's surface
    field of a London superconductor), for kλ from 0.24 to 3.8."""
    p = presets.type15(eta=0.1, e=e)
    lam = length_scales(p).lam
    z, loop = 0.7, 0.4
    x_pos = np.arange(N) * H
    for m in (1, 2, 4, 8):
        k = 2 * np.pi * m / (N * H)
        mode = np.cos(k * x_pos)[:, None] * np.ones(N)[None, :]
        out = squid_image(SQUID(height=z, loop=loop, snr=INF), 0.3 + mode, params=p)[0]
        amp = (out * mode).sum() / (mode * mode).sum() * 2 * np.pi  # back in units of B
        q = math.sqrt(k**2 + lam**-2)
        expected = q / (q + k) * math.exp(-k * z - 0.5 * loop**2 * k**2)
        assert amp == pytest.approx(expected, rel=2e-4), (m, k * lam, amp, expected)


def test_squid_standardise_and_noise_level():
    bz = gauss_tube(N, 8, 8, 0.6) + gauss_tube(N, 22, 18, 0.6)
    n64 = 64
    bz64 = gauss_tube(n64, 8, 8, 0.6) + gauss_tube(n64, 40, 30, 0.6) + gauss_tube(n64, 20, 50, 0.6)
    x = squid_image(SQUID(height=1.0, snr=5.0, standardise=True), bz, k=3)[0]
    assert abs(x.mean()) < 1e-5 and x.std() == pytest.approx(1.0, abs=1e-5)
    # standardising is the last step: the same key gives the standardised raw map
    raw = squid_image(SQUID(height=1.0, snr=5.0), bz, k=3)[0]
    np.testing.assert_allclose(x, (raw - raw.mean()) / raw.std(), atol=1e-4)
    # noise: std(noisy − clean) / std(clean) = 1/snr (clean and noisy share the height/loop draws)
    clean = squid_image(SQUID(height=1.0, snr=INF), bz64, cfg=cfg_n(n64), k=4)[0]
    for snr in (2.0, 8.0):
        noisy = squid_image(SQUID(height=1.0, snr=snr), bz64, cfg=cfg_n(n64), k=4)[0]
        ratio = (noisy - clean).std() / clean.std()
        assert ratio == pytest.approx(1 / snr, rel=0.08), (snr, ratio)
    # without noise the key does not matter
    np.testing.assert_array_equal(
        squid_image(SQUID(height=1.0, snr=INF), bz, k=1), squid_image(SQUID(height=1.0, snr=INF), bz, k=2)
    )


# ============================================================================ STM
def stm_image(inst: STM, rho1: np.ndarray, rho2: np.ndarray | None = None, cfg=CFG, k: int = 0) -> np.ndarray:
    fields = {"rho1": jnp.asarray(rho1)}
    if rho2 is not None:
        fields["rho2"] = jnp.asarray(rho2)
    return np.asarray(inst.measure(fields, P, cfg, key(k)))


def test_stm_is_blind_to_offset_and_gain_and_is_standardised():
    r1, r2 = smooth_field(N, 2), smooth_field(N, 3, corr=1.0)
    both = (1, 2)
    nuisance = STM(bands=both, blur=Range(0.2, 1.5), snr=Range(2.0, 20.0), pixels=12)
    for inst in [STM(bands=both, blur=0.7, snr=5.0), nuisance]:
        x = stm_image(inst, r1, r2, k=5)
        y = stm_image(inst, 3.7 * r1 - 1.2, 0.2 * r2 + 4.0, k=5)
        np.testing.assert_allclose(x, y, atol=2e-4)
        np.testing.assert_allclose(x.mean(axis=(1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=(1, 2)), 1.0, atol=1e-5)
        assert not np.allclose(x, stm_image(inst, r1, r2, k=6), atol=1e-2)  # noise is drawn from the key
    # a negative gain inverts the contrast (the map is not |.|-ed)
    clean = STM(bands=(1, 2), blur=0.7, snr=INF)
    np.testing.assert_allclose(stm_image(clean, -r1, r2)[0], -stm_image(clean, r1, r2)[0], atol=1e-5)


def test_stm_blur_is_a_gaussian_of_width_sigma():
    """ρ = 2 + cos(2πx/L) + 0.3 (−1)^{i+j}: the blur multiplies each Fourier mode by exp(−σ²k²/2),
    so the checkerboard (k² = 2π²/h²) is damped against the long wave; σ ≥ h flattens it."""
    i = np.arange(N)
    cos = np.cos(2 * np.pi * i / N)[:, None] * np.ones(N)[None, :]
    cb = (-1.0) ** (i[:, None] + i[None, :])
    rho = 2.0 + cos + 0.3 * cb
    k1, kcb = (2 * np.pi / (N * H)) ** 2, 2 * (np.pi / H) ** 2

    def amplitudes(x):
        return (x * cos).sum() / (cos * cos).sum(), (x * cb).sum() / (cb * cb).sum()

    a1, acb = amplitudes(stm_image(STM(bands=(1,), blur=0.0, snr=INF), rho)[0])
    assert acb / a1 == pytest.approx(0.3, rel=1e-4)
    for sigma in (0.2, 0.3):
        b1, bcb = amplitudes(stm_image(STM(bands=(1,), blur=sigma, snr=INF), rho)[0])
        assert bcb / b1 == pytest.approx(0.3 * math.exp(-0.5 * sigma**2 * (kcb - k1)), rel=2e-3)
    x = stm_image(STM(bands=(1,), blur=H, snr=INF), rho)[0]
    b1, bcb = amplitudes(x)
    assert abs(bcb / b1) < 1e-4  # e^{-π²} × 0.3 = 1.6e-5
    # what remains is the long wave alone, standardised
    np.testing.assert_allclose(x, cos / cos.std(), atol=1e-3)


def test_stm_noise_follows_one_over_snr():
    """The clean part of the noisy map is the clean map: corr(noisy, clean) = 1/√(1 + 1/snr²)."""
    n = 64
    r = smooth_field(n, 7, corr=1.5)
    clean = stm_image(STM(bands=(1,), blur=0.5, snr=INF), r, cfg=cfg_n(n))[0]
    for snr in (1.5, 4.0):
        noisy = stm_image(STM(bands=(1,), blur=0.5, snr=snr), r, cfg=cfg_n(n), k=9)[0]
        rho = np.corrcoef(noisy.ravel(), clean.ravel())[0, 1]
        est = math.sqrt(1 - rho**2) / rho  # noise std / signal std
        assert est == pytest.approx(1 / snr, rel=0.08), (snr, est)
    # a flat density (a normal-state sample) has no contrast: zeros, not amplified round-off
    flat = stm_image(STM(bands=(1,), blur=1.0, snr=INF), np.full((N, N), 0.7))
    np.testing.assert_array_equal(flat, 0.0)


def test_stm_bands_select_the_density_read():
    r1, r2 = smooth_field(N, 11), smooth_field(N, 12)
    inst2 = STM(bands=(2,), blur=0.6, snr=3.0)
    assert inst2.channel_names == ("stm2",) and inst2.x_shape(CFG) == (1, N, N)
    # rho1 is not read at all (not even needed in the fields) ...
    x = np.asarray(inst2.measure({"rho2": jnp.asarray(r2)}, P, CFG, key(4)))
    poisoned = {"rho1": jnp.asarray(np.full((N, N), np.nan)), "rho2": jnp.asarray(r2)}
    y = np.asarray(inst2.measure(poisoned, P, CFG, key(4)))
    np.testing.assert_array_equal(x, y)
    # ... and band 2 is imaged exactly as band 1 would be
    np.testing.assert_allclose(x, stm_image(STM(bands=(1,), blur=0.6, snr=3.0), r2, k=4), atol=1e-6)
    both = stm_image(STM(bands=(1, 2), blur=0.6, snr=INF), r1, r2)
    np.testing.assert_allclose(both[1], stm_image(STM(bands=(2,), blur=0.6, snr=INF), r1 * np.nan, r2)[0], atol=1e-6)
    assert not np.allclose(both[0], both[1], atol=0.1)


# ============================================================================ pixel grid
def test_resample_matrix_is_an_area_mean():
    for n, fov, p in [(32, 16.0, 8), (32, 16.0, 12), (32, 7.3, 5), (20, 10.0, 7)]:
        for offset in (0.0, -H / 2):
            r = _resample_matrix(n, H, offset, fov, p)
            np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-12)  # each pixel: a mean
            if fov == n * H:  # the whole sample: every cell counted with the same total weight
                np.testing.assert_allclose(r.sum(axis=0), p / n, atol=1e-12)
    # a smooth field's mean is kept over the whole field of view (sites, incommensurate pixels)
    f = smooth_field(N, 5)
    r = _resample_matrix(N, H, -H / 2, N * H, 12)
    assert (r @ f @ r.T).mean() == pytest.approx(f.mean(), rel=1e-12)


def test_half_field_of_view_at_cell_size_is_the_quarter_of_the_sample():
    """fov = L/2 with pixels = n/2: pixel edges are cell edges, so each pixel is one cell (sites
    0..n/2−1 for STM, plaquettes 0..n/2−1 for SQUID and Decoration); pixels = n/4 gives 2×2 means."""
    half, q = N * H / 2, N // 2
    rho = smooth_field(N, 8, corr=0.7)
    x = stm_image(STM(bands=(1,), blur=0.0, snr=INF, field_of_view=half, pixels=q), rho)[0]
    quarter = rho[:q, :q]
    np.testing.assert_allclose(x, (quarter - quarter.mean()) / quarter.std(), atol=2e-5)
    x4 = stm_image(STM(bands=(1,), blur=0.0, snr=INF, field_of_view=half, pixels=q // 2), rho)[0]
    blocks = quarter.reshape(q // 2, 2, q // 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(x4, (blocks - blocks.mean()) / blocks.std(), atol=2e-5)
    # plaquettes (SQUID at z = 0, λ → 0: the identity up to 6e-4 at the highest k)
    bz = 2.0 * smooth_field(N, 9, corr=0.7)
    xs = squid_image(SQUID(height=0.0, loop=0.0, snr=INF, field_of_view=half, pixels=q), bz, params=P_LONDON0)[0]
    np.testing.assert_allclose(xs, bz[:q, :q] / (2 * np.pi), rtol=0, atol=1e-3 * bz.max() / (2 * np.pi))
    # Decoration: pixel centres are the plaquette centres of the window
    w = np.zeros((N, N))
    w[3, 5], w[12, 14], w[25, 2] = 1, -1, 1
    fields = {"winding1": jnp.asarray(w), "winding2": jnp.zeros((N, N))}
    full = np.asarray(Decoration(blob=0.8).measure(fields, P, CFG, key(0)))[0]
    win = np.asarray(Decoration(blob=0.8, field_of_view=half, pixels=q).measure(fields, P, CFG, key(0)))[0]
    np.testing.assert_allclose(win, full[:q, :q], atol=1e-6)


def test_pixel_grid_limits_are_refused_with_their_range():
    side = N * H
    for inst in [STM(field_of_view=side + 1.0), SQUID(field_of_view=17.5), Decoration(field_of_view=100.0)]:
        with pytest.raises(ValueError, match=r"field_of_view=.* exceeds the sample .*allowed \(0, 16\]"):
            inst.check(CFG)
    STM(field_of_view=side).check(CFG)  # the whole sample is allowed
    assert STM(bands=(1, 2), field_of_view=4.0).x_shape(CFG) == (2, 8, 8)  # default pixels: the cell size
    assert SQUID(pixels=10).x_shape(CFG) == (1, 10, 10)
    for bad in (3, 0, -8, 2.5, True):
        with pytest.raises(ValueError, match=r"pixels=.*integer >= 4"):
            STM(pixels=bad)
    with pytest.raises(ValueError, match="field_of_view"):
        SQUID(field_of_view=0.0)
    with pytest.raises(ValueError, match="field_of_view must be fixed"):
        Decoration(field_of_view=Range(4.0, 8.0))
    # the simulator refuses it at construction (it checks its observation against its config)
    with pytest.raises(ValueError, match="exceeds the sample"):
        make_simulator(config=cfg_n(16), bounds={"field": (0.1, 0.3)}, observation=STM(field_of_view=9.0))


# ============================================================================ Decoration
def deco_image(inst: Decoration, w: np.ndarray, cfg=CFG, k: int = 0, band: int = 1) -> np.ndarray:
    other = np.zeros_like(w)
    fields = {"winding1": jnp.asarray(w if band == 1 else other), "winding2": jnp.asarray(other if band == 1 else w)}
    return np.asarray(inst.measure(fields, P, cfg, key(k)))[0]


def test_decoration_positions_are_the_rendered_ones():
    """Decoration.positions gives the jittered coordinates that measure renders with the same key:
    a blob rendered alone at each returned position reproduces the image."""
    w = np.zeros((N, N))
    w[4, 4], w[10, 25], w[20, 8] = 1, -1, 2
    inst = Decoration(jitter=0.4, blob=0.8)
    pos = inst.positions({"winding1": w}, CFG, key(3))
    assert pos.shape == (3, 3) and sorted(pos[:, 2].tolist()) == [-1.0, 1.0, 2.0]
    L = N * H
    assert ((pos[:, :2] >= 0) & (pos[:, :2] < L)).all()
    centres = (np.argwhere(w != 0) + 0.5) * H
    shift = pos[:, :2] - centres[np.argsort(np.argsort(np.ravel_multi_index(np.argwhere(w != 0).T, w.shape)))]
    shift -= L * np.round(shift / L)
    assert 0 < np.abs(shift).max() < 4 * 0.4  # jittered, by a few standard deviations at most
    x = deco_image(inst, w, k=3)
    c = (np.arange(N) + 0.5) * H
    expected = np.zeros((N, N))
    for px, py, n in pos:
        dx = c - px
        dy = c - py
        dx -= L * np.round(dx / L)
        dy -= L * np.round(dy / L)
        s2w = math.sqrt(2) * 0.8
        gx = np.array([math.erf((d + H / 2) / s2w) - math.erf((d - H / 2) / s2w) for d in dx])
        gy = np.array([math.erf((d + H / 2) / s2w) - math.erf((d - H / 2) / s2w) for d in dy])
        expected += abs(n) * np.outer(gx, gy) * (math.sqrt(math.pi / 2) * 0.8 / H) ** 2  # pixel means
    np.testing.assert_allclose(x, expected, atol=2e-5)


def test_decoration_keeps_its_integral_on_coarse_pixels():
    """A pixel is the blob's mean over its area: the integral Σ|n| 2πw² holds on any pixel grid."""
    w = np.zeros((N, N))
    w[3, 5], w[17, 20], w[25, 9] = 1, 1, 1
    for pixels in (N, 12, 8, 5):
        x = deco_image(Decoration(blob=0.3, pixels=pixels), w)
        assert x.sum() * (N * H / pixels) ** 2 == pytest.approx(3 * 2 * np.pi * 0.3**2, rel=1e-4)


def test_decoration_integral_counts_vortices_with_their_winding_magnitude():
    w = np.zeros((N, N))
    w[4, 4], w[10, 25], w[20, 8], w[27, 19] = 1, -1, 2, 1  # Σ|n| = 5 (an antivortex, a doubly quantised one)
    for blob in (0.6, 1.0):
        x = deco_image(Decoration(blob=blob), w)
        assert x.sum() * H**2 == pytest.approx(5 * 2 * np.pi * blob**2, rel=1e-4)
        assert x.min() >= 0
        # jitter = 0: each blob peaks at its plaquette centre with height |n| times the Gaussian's mean
        # over that pixel, (√(2π) (w/H) erf(H / (2√2 w)))² (the image is a pixel average)
        peak = (math.sqrt(2 * math.pi) * blob / H * math.erf(H / (2 * math.sqrt(2) * blob))) ** 2
        assert x[20, 8] == pytest.approx(2.0 * peak, abs=1e-4) and x[10, 25] == pytest.approx(peak, abs=1e-4)
        assert np.unravel_index(x.argmax(), x.shape) == (20, 8)
    # band 2 reads winding2 only
    assert deco_image(Decoration(band=2, blob=1.0), w, band=1).max() == 0.0
    np.testing.assert_allclose(deco_image(Decoration(band=2, blob=1.0), w, band=2), deco_image(Decoration(blob=1.0), w))


def test_decoration_wraps_periodically():
    """A vortex at the edge: its image is the centred vortex's image translated on the torus."""
    centred = np.zeros((N, N))
    centred[16, 16] = 1
    edge = np.zeros((N, N))
    edge[0, 31] = 1
    x_c, x_e = deco_image(Decoration(blob=1.2), centred), deco_image(Decoration(blob=1.2), edge)
    np.testing.assert_allclose(x_e, np.roll(x_c, (-16, 15), axis=(0, 1)), atol=1e-6)
    assert x_e[N - 1, 31] == pytest.approx(x_e[1, 31], rel=1e-6)  # both neighbours across the edge
    assert x_e[0, 0] == pytest.approx(x_e[0, 30], rel=1e-6)
    assert x_e[N - 1, 31] > 0.8 and x_e[0, 0] > 0.8
    assert x_e.sum() == pytest.approx(x_c.sum(), rel=1e-5)


def test_decoration_jitter_has_the_stated_standard_deviation():
    """Centroids of well-separated blobs (w = h: centroid exact to e^{-2π²}) over 16 keys: the
    displacement has mean 0 and standard deviation ``jitter`` per axis."""
    n, h, jitter, spacing, r = 64, 1.0, 0.7, 16, 7
    cfg = cfg_n(n, h)
    w = np.zeros((n, n))
    sites = [(a, b) for a in range(8, n, spacing) for b in range(8, n, spacing)]
    for a, b in sites:
        w[a, b] = 1
    fields = {"winding1": jnp.asarray(w), "winding2": jnp.zeros((n, n))}
    inst = Decoration(blob=1.0, jitter=jitter)
    images = np.asarray(jax.vmap(lambda k: inst.measure(fields, P, cfg, k))(jax.random.split(key(21), 16)))[:, 0]
    off = np.arange(-r, r + 1) * h
    d = []
    for img in images:
        for a, b in sites:
            patch = img[a - r : a + r + 1, b - r : b + r + 1]
            d.append([(patch.sum(1) * off).sum() / patch.sum(), (patch.sum(0) * off).sum() / patch.sum()])
    d = np.asarray(d).ravel()  # 512 displacement components
    assert abs(d.mean()) < 4 * jitter / math.sqrt(d.size)
    assert d.std() == pytest.approx(jitter, rel=0.12)
    # jitter = 0: every centroid is the plaquette centre
    still = deco_image(Decoration(blob=1.0), w, cfg=cfg)
    for a, b in sites:
        patch = still[a - r : a + r + 1, b - r : b + r + 1]
        assert abs((patch.sum(1) * off).sum() / patch.sum()) < 1e-4


# ============================================================================ nuisance ranges
def test_range_settings_are_drawn_per_key_within_their_bounds():
    # Decoration: the integral of one blob reveals its width, w = sqrt(Σ h² / 2π)
    w = np.zeros((N, N))
    w[10, 10] = 1
    inst = Decoration(blob=Range(0.6, 1.2))
    widths = np.array([math.sqrt(deco_image(inst, w, k=k).sum() * H**2 / (2 * np.pi)) for k in range(24)])
    assert widths.min() >= 0.6 - 1e-4 and widths.max() <= 1.2 + 1e-4
    assert widths.min() < 0.75 and widths.max() > 1.05 and len(np.unique(widths.round(5))) == 24
    np.testing.assert_array_equal(deco_image(inst, w, k=3), deco_image(inst, w, k=3))
    # SQUID: the peak of a flux quantum is monotone in the height; invert it on a table of fixed heights
    bz = delta_tube(N, 16, 16)
    table_z = np.linspace(1.3, 3.2, 39)
    table_peak = np.array(
        [squid_image(SQUID(height=z, loop=0.0, snr=INF), bz, params=P_LONDON0).max() for z in table_z]
    )
    assert np.all(np.diff(table_peak) < 0)
    ranged = SQUID(height=Range(1.5, 3.0), loop=0.0, snr=INF)
    peaks = np.array([squid_image(ranged, bz, params=P_LONDON0, k=k).max() for k in range(16)])
    heights = np.interp(-peaks, -table_peak, table_z)
    assert heights.min() >= 1.5 - 1e-3 and heights.max() <= 3.0 + 1e-3, heights
    assert heights.min() < 1.9 and heights.max() > 2.6, heights
    # STM: a ranged SNR shows as a key-dependent noise level inside the range
    r = smooth_field(64, 13)
    clean = stm_image(STM(bands=(1,), snr=INF), r, cfg=cfg_n(64))[0]
    est = []
    for k in range(6):
        noisy = stm_image(STM(bands=(1,), snr=Range(2.0, 6.0)), r, cfg=cfg_n(64), k=k)[0]
        rho = np.corrcoef(noisy.ravel(), clean.ravel())[0, 1]
        est.append(rho / math.sqrt(1 - rho**2))  # the SNR of this draw
    assert min(est) > 2.0 * 0.88 and max(est) < 6.0 * 1.12 and max(est) - min(est) > 1.0, est
    with pytest.raises(ValueError, match="finite low <= high"):
        Range(2.0, 1.0)
    with pytest.raises(ValueError, match="snr=.*must be > 0"):
        STM(snr=Range(0.0, 5.0))
    with pytest.raises(ValueError, match="height=.*must be >= 0"):
        SQUID(height=Range(-1.0, 1.0))


# ============================================================================ serialisation
INSTRUMENTS = [
    STM(bands=(2,), blur=Range(0.5, 1.0), snr=INF, pixels=8, field_of_view=4.0),
    STM(),
    SQUID(height=Range(0.5, 2.0), loop=0.3, snr=Range(5.0, 50.0), standardise=True, pixels=12),
    Decoration(band=2, jitter=Range(0.0, 0.4), blob=0.7, field_of_view=6.0),
]


@pytest.mark.parametrize("inst", INSTRUMENTS, ids=lambda i: i.name)
def test_to_dict_round_trips_through_json(inst):
    d = json.loads(json.dumps(inst.to_dict()))
    assert d["name"] == inst.name
    for back in (instrument_from_dict(d), observation_from_dict(d)):
        assert back == inst and hash(back) == hash(inst) and type(back) is type(inst)
    settings = {f: getattr(inst, f) for f in d if f != "name"}
    assert make_observation(inst.name, **settings) == inst
    ideal = Observation(channels=("rho2", "bz"))
    assert observation_from_dict(json.loads(json.dumps(ideal.to_dict()))) == ideal


def test_unknown_instruments_and_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown instrument 'afm'.*decoration.*squid.*stm"):
        instrument_from_dict({"name": "afm", "height": 1.0})
    with pytest.raises(ValueError, match=r"unknown instrument 'afm'"):
        observation_from_dict({"name": "afm"})
    with pytest.raises(ValueError, match=r"squid: unknown settings \['bands', 'tip'\]"):
        instrument_from_dict({"name": "squid", "height": 1.0, "tip": 2, "bands": [1]})
    with pytest.raises(ValueError, match=r"observation='afm'"):
        make_observation("afm")


def test_simulator_describes_its_instrument_and_rebuilds_it():
    cfg = TDGLConfig(shape=(16, 16), steps=20, dt=0.3125, scheme="skrock", stages=2)
    bounds = {"field": (0.1, 0.3)}
    ideal = make_simulator(config=cfg, bounds=bounds)
    assert "observation" not in ideal.describe()  # old banks keep their hash
    assert "observation" not in make_simulator(config=cfg, bounds=bounds, observation="ideal").describe()
    inst = SQUID(height=Range(0.5, 2.0), snr=30.0, pixels=8)
    sim = make_simulator(config=cfg, bounds=bounds, observation=inst)
    d = sim.describe()
    assert d["observation"] == inst.to_dict() and d["channels"] == ["squid"]
    back = TDGLSimulator.from_description(json.loads(json.dumps(d)))
    assert back.instrument == inst and back.observation == inst and back.x_shape == (1, 8, 8)
    assert back.describe() == d
    by_name = make_simulator(config=cfg, bounds=bounds, observation="decoration")
    assert by_name.instrument == Decoration() and by_name.channels == ("decoration1",)
    with pytest.raises(ValueError, match="channels/measurement apply to the ideal observation"):
        make_simulator(config=cfg, bounds=bounds, observation=inst, channels=("rho2",))


def test_noise_free_instrument_simulator_can_be_hashed_for_a_bank():
    from glsbi_plugin.store._meta import config_hash

    cfg = TDGLConfig(shape=(16, 16), steps=20, dt=0.3125, scheme="skrock", stages=2)
    sim = make_simulator(config=cfg, bounds={"field": (0.1, 0.3)}, observation=STM(snr=INF))
    assert len(config_hash(sim.describe())) == 64


@pytest.mark.parametrize("inst", [STM(bands=(1,)), Decoration(band=1)], ids=lambda i: i.name)
def test_band_one_instruments_accept_a_one_band_config(inst):
    inst.check(TDGLConfig(shape=(16, 16), components=1))


def test_missing_bands_are_refused():
    one = TDGLConfig(shape=(16, 16), components=1)
    with pytest.raises(ValueError, match="no band 2"):
        STM(bands=(2,)).check(one)
    with pytest.raises(ValueError, match="no band 2"):
        Decoration(band=2).check(one)
    SQUID().check(one)  # B_z exists in any model
    with pytest.raises(ValueError, match="bands="):
        STM(bands=(3,))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        STM().measure({"rho1": jnp.ones((N, N)), "rho2": jnp.ones((N, N))}, P, CFG, None)


# ============================================================================ end to end
E2E_CFG = TDGLConfig(shape=(16, 16), steps=20, dt=0.3125, scheme="skrock", stages=2)


def test_forward_is_the_quench_then_the_instrument_on_stored_fields():
    """forward(key) = measure(fields of simulate(k_sim), k_meas): stored fields can be observed later."""
    p = presets.type15(eta=0.15, field=0.25)
    k = key(17)
    k_sim, k_meas = jax.random.split(k)
    state = simulate(p, k_sim, E2E_CFG)
    stacked = observe(state, p.astype(E2E_CFG.real_dtype), E2E_CFG, FIELDS)
    fields = dict(zip(FIELDS, stacked, strict=True))
    assert float(fields["bz"].mean()) * (16 * H) ** 2 / (2 * np.pi) == pytest.approx(3.0, abs=1e-3)  # N_φ = 3
    for inst in [STM(bands=(2,), pixels=8), SQUID(height=Range(0.5, 1.5), snr=10.0), Decoration(jitter=0.3)]:
        x = np.asarray(forward(p, k, E2E_CFG, inst))
        later = np.asarray(inst.measure(fields, p, E2E_CFG, k_meas))
        assert x.dtype == np.float32 and x.shape == inst.x_shape(E2E_CFG)
        np.testing.assert_allclose(x, later, rtol=1e-5, atol=1e-5)
    squid = np.asarray(forward(p, k, E2E_CFG, SQUID(height=1.0, snr=INF)))
    assert squid.mean() * (16 * H) ** 2 == pytest.approx(3.0, rel=1e-3)  # the applied N_φ


def test_simulator_with_an_instrument_is_reproducible_and_is_forward():
    inst = STM(bands=(2,), pixels=8)
    sim = make_simulator(config=E2E_CFG, bounds={"field": (0.1, 0.3)}, observation=inst, batch_size=2)
    assert sim.channels == ("stm2",) and sim.x_shape == (1, 8, 8)
    theta = torch.tensor([[0.05, 0.15], [0.25, 0.28]])
    x = sim(theta, seed=3)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sim(theta, seed=3))
    assert not torch.allclose(x, sim(theta, seed=4))
    seeds = [5, 9]
    xs = sim.simulate_seeds(theta, seeds, shard=False).numpy()
    for row, seed, img in zip(theta.tolist(), seeds, xs, strict=True):
        p = presets.type15(eta=row[0], field=row[1])
        np.testing.assert_allclose(img, np.asarray(forward(p, key(seed), E2E_CFG, inst)), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(img.mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(img.std(), 1.0, atol=1e-4)
