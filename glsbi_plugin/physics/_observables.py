r"""Observables: densities, field map, supercurrent vorticity, gauge-invariant windings, vortex
positions, measurement model.

Winding of component a on plaquette ij (an exact integer):

.. math::
    n_{ij} = \frac{1}{2\pi}\big[\chi^x_{ij} + \chi^y_{i+1,j} - \chi^x_{i,j+1} - \chi^y_{ij}
             + \theta_{ij}\big], \qquad \chi = \arg(\psi_i^* U \psi_j) \in (-\pi, \pi],

masked (set to 0) where all four corners have :math:`|\psi_a| <` ``threshold`` :math:`\cdot u_a`,
so that a vanished condensate does not produce spurious windings. :math:`n_1 \ne n_2` on a
plaquette marks a fractional vortex. With no mask, :math:`\sum n = N_\phi` on the torus.

Supercurrent vorticity on plaquette ij (the original project's third channel, ``"curlj"``):

.. math::
    (\nabla\times J)_z = \frac{1}{h^2}\big[I^x_{ij} + I^y_{i+1,j} - I^x_{i,j+1} - I^y_{ij}\big],

the circulation of :math:`J = I/h` around the plaquette over its area, with the link supercurrents
:math:`I = -\partial E_{kin}/\partial a` (``_lattice.link_currents``, the drag's cross term
included). It sums to zero over the torus (a lattice Stokes theorem), and in a stationary state
Ampère's law :math:`J = e^{-2}\nabla\times B` makes it :math:`-e^{-2}\Delta B_z` exactly on the
lattice: positive at the cores of vortices carrying positive flux, negative in the ring around them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._config import TDGLConfig, TDGLParams
from ._lattice import State, X, Y, _curl, geometry, link_currents, link_variables, plaquette_flux
from ._length_scales import ground_state

CHANNELS = ("rho1", "rho2", "bz", "curlj", "winding1", "winding2")


def check_channels(channels: Sequence[str], components: int) -> tuple[str, ...]:
    """The channels as a tuple, or a ValueError listing the allowed ones for ``components``."""
    allowed = [c for c in CHANNELS if components == 2 or not c.endswith("2")]
    bad = [c for c in channels if c not in allowed]
    if bad or not channels:
        raise ValueError(f"channels={tuple(channels)!r}: each must be one of {allowed}")
    return tuple(channels)


def densities(state: State) -> jax.Array:
    r""":math:`\rho_a = |\psi_a|^2`, shape ``(components, nx, ny)``."""
    return jnp.real(state.psi) ** 2 + jnp.imag(state.psi) ** 2


def field_map(state: State, params: TDGLParams, cfg: TDGLConfig) -> jax.Array:
    r""":math:`B_z = \Phi_{ij}/h^2` on plaquettes (:math:`\Phi_{ij}`: :func:`plaquette_flux`), shape
    ``(nx, ny)`` (outside an open sample: H)."""
    return plaquette_flux(state, params, cfg) / cfg.h**2


def current_vorticity(state: State, params: TDGLParams, cfg: TDGLConfig) -> jax.Array:
    r"""Supercurrent vorticity :math:`(\nabla\times J)_z` on plaquettes (module docstring), shape
    ``(nx, ny)``; zero on the plaquettes outside an open sample."""
    i_x, i_y = link_currents(state, params, cfg)
    curl = _curl(i_x, i_y) / cfg.h**2
    if cfg.torus:
        return curl
    return curl * geometry(cfg).m_p.astype(curl.dtype)


def winding(state: State, params: TDGLParams, cfg: TDGLConfig, threshold: float = 0.1) -> jax.Array:
    """Per-plaquette winding numbers, int32, shape ``(components, nx, ny)`` (module docstring).

    Args:
        threshold: Mask plaquettes whose four corners all have ``|psi_a| < threshold * u_a``
            (``u_a`` the ground-state amplitude). 0 disables the mask.
    """
    psi = state.psi
    u_x, u_y = link_variables(state, params, cfg)
    g = geometry(cfg)
    chi_x = jnp.angle(jnp.conj(psi) * u_x * jnp.roll(psi, -1, X))
    chi_y = jnp.angle(jnp.conj(psi) * u_y * jnp.roll(psi, -1, Y))
    th = plaquette_flux(state, params, cfg)
    circ = chi_x + jnp.roll(chi_y, -1, X) - jnp.roll(chi_x, -1, Y) - chi_y + th
    n = jnp.round(circ / (2 * jnp.pi)).astype(jnp.int32)
    keep = jnp.asarray(g.m_p > 0)
    if threshold > 0:
        amp = jnp.abs(psi)
        corner = jnp.maximum(
            jnp.maximum(amp, jnp.roll(amp, -1, X)),
            jnp.maximum(jnp.roll(amp, -1, Y), jnp.roll(jnp.roll(amp, -1, X), -1, Y)),
        )
        u = ground_state(params)[:, None, None]
        keep = keep & (corner >= threshold * u)
    return jnp.where(keep, n, 0)


def vortex_positions(
    state: State, params: TDGLParams, cfg: TDGLConfig, component: int = 0, threshold: float = 0.1
) -> np.ndarray:
    """Vortex positions of one component as a numpy array ``(k, 3)`` of ``(x, y, n)``.

    ``x, y`` are plaquette centres ``((i + 1/2) h, (j + 1/2) h)``; ``n`` the winding (±1, ±2, ...).
    """
    return winding_positions(np.asarray(winding(state, params, cfg, threshold)[component]), cfg.h)


def winding_positions(winding_map: np.ndarray, h: float) -> np.ndarray:
    """The non-zero plaquettes of one band's ``(nx, ny)`` winding map (:func:`winding`) as a
    ``(k, 3)`` float64 array of ``(x, y, n)`` at plaquette centres ``((i + 1/2) h, (j + 1/2) h)``."""
    n = np.asarray(winding_map)
    i, j = np.nonzero(n)
    return np.stack([(i + 0.5) * h, (j + 0.5) * h, n[i, j]], axis=1).astype(np.float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    r"""Instrument model applied to a clean image: PSF blur, down-sampling, additive noise.

    Attributes:
        psf_sigma: Gaussian point-spread width in length units (0: none); applied by FFT, i.e.
            periodically, as befits the torus.
        downsample: Integer factor of block averaging (1: none); must divide the grid.
        noise_std: Standard deviation of additive Gaussian noise, in the image's own units
            (0: none). Needs a ``key``.
    """

    psf_sigma: float = 0.0
    downsample: int = 1
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.psf_sigma) and self.psf_sigma >= 0):
            raise ValueError(f"psf_sigma={self.psf_sigma!r}: must be finite and >= 0")
        if isinstance(self.downsample, bool) or int(self.downsample) != self.downsample or self.downsample < 1:
            raise ValueError(f"downsample={self.downsample!r}: must be an integer >= 1")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std={self.noise_std!r}: must be finite and >= 0")

    def apply(self, image: jax.Array, h: float, key: jax.Array | None) -> jax.Array:
        """Blur, down-sample and add noise to a ``(C, nx, ny)`` image."""
        C, nx, ny = image.shape
        if self.psf_sigma > 0:
            kx = 2 * jnp.pi * jnp.fft.fftfreq(nx, d=h)
            ky = 2 * jnp.pi * jnp.fft.fftfreq(ny, d=h)
            kernel = jnp.exp(-0.5 * self.psf_sigma**2 * (kx[:, None] ** 2 + ky[None, :] ** 2))
            image = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(image) * kernel)).astype(image.dtype)
        f = int(self.downsample)
        if f > 1:
            if nx % f or ny % f:
                raise ValueError(f"downsample={f} does not divide the grid {nx}x{ny}")
            image = image.reshape(C, nx // f, f, ny // f, f).mean(axis=(2, 4))
        if self.noise_std > 0:
            if key is None:
                raise ValueError("Measurement.noise_std > 0 needs a PRNG key")
            image = image + self.noise_std * jax.random.normal(key, image.shape, image.dtype)
        return image


def observe(
    state: State,
    params: TDGLParams,
    cfg: TDGLConfig,
    channels: Sequence[str] = ("rho1", "rho2"),
    *,
    measurement: Measurement | None = None,
    key: jax.Array | None = None,
    threshold: float = 0.1,
) -> jax.Array:
    """Channel-first float image ``(C, nx, ny)`` (``nx//f, ny//f`` after down-sampling).

    Args:
        channels: Any of ``"rho1"``, ``"rho2"`` (:math:`|\\psi_a|^2`), ``"bz"`` (:math:`B_z`),
            ``"curlj"`` (:math:`(\\nabla\\times J)_z`, :func:`current_vorticity`),
            ``"winding1"``, ``"winding2"`` (masked winding maps, as floats).
        measurement: Optional :class:`Measurement` (blur, down-sampling, noise).
        key: PRNG key for the measurement noise.
        threshold: Winding mask threshold (see :func:`winding`).
    """
    check_channels(channels, cfg.components)
    rho = densities(state)
    out = []
    wind = None
    for c in channels:
        if c.startswith("rho"):
            out.append(rho[int(c[-1]) - 1])
        elif c == "bz":
            out.append(field_map(state, params, cfg))
        elif c == "curlj":
            out.append(current_vorticity(state, params, cfg))
        else:
            if wind is None:
                wind = winding(state, params, cfg, threshold)
            out.append(wind[int(c[-1]) - 1].astype(cfg.real_dtype))
    image = jnp.stack(out).astype(cfg.real_dtype)
    if measurement is not None:
        image = measurement.apply(image, cfg.h, key)
    return image
