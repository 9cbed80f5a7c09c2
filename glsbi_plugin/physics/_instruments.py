r"""Observations as instruments make them: STM conductance maps, scanning-SQUID field maps and
Bitter decoration, the last stage of the forward model.

Every instrument reads the physical fields of the final state — :math:`\rho_a = |\psi_a|^2` on
sites, :math:`B_z` and the winding maps on plaquettes (:data:`FIELDS`) — and returns a float32
image ``(C, P, P)`` on its own pixel grid. They are frozen, hashable dataclasses (static under
``jit``), so :func:`~glsbi_plugin.physics.forward` takes any of them as its ``observation``, and
they are pure functions of the fields and a PRNG key (``measure``), so an instrument can also be
applied to stored fields after the fact.

- :class:`STM`: the local density of the chosen bands as a zero-bias conductance map in arbitrary
  units, :math:`g = a + b\,(G_\sigma * \rho) + \text{noise}`. The unknown offset a and gain b are
  removed by standardising each map (zero mean, unit variance), the tip blur is a Gaussian
  :math:`G_\sigma`, and the noise has standard deviation :math:`\mathrm{std}(G_\sigma*\rho)/\mathrm{SNR}`.
- :class:`SQUID`: :math:`B_z` at height z above the surface. From the bulk field on the torus,

  .. math::
      B_\text{surf}(\mathbf k) = B_\text{bulk}(\mathbf k)\,\frac{q}{q + k}\,e^{-kz}\,
      e^{-\sigma_\ell^2 k^2/2}, \qquad q = \sqrt{k^2 + \lambda^{-2}},

  with :math:`\lambda = 1/m_A` of the parameters (:func:`~glsbi_plugin.physics.length_scales`)
  and a Gaussian pick-up loop of width :math:`\sigma_\ell`; reported in flux quanta per unit area
  (:math:`B/2\pi`; the mean is the applied field, which an experiment knows) or standardised,
  plus noise at a stated SNR.
- :class:`Decoration`: the vortices of one band (where :math:`n \ne 0`, weighted by :math:`|n|`),
  each displaced by Gaussian jitter, rendered as Gaussian blobs of width w on the instrument
  grid, periodically; the positions themselves are :func:`~glsbi_plugin.physics.winding_positions`
  of the winding map (:mod:`glsbi_plugin.physics.summaries` turns them into statistics).

Pixel grid: ``pixels`` per side over a square ``field_of_view`` (length units, at most the sample;
a window of the torus starting at its origin cell). Each instrument pixel is the area-weighted mean
of the simulation cells it overlaps (sites own the cell :math:`[(i-\tfrac12)h, (i+\tfrac12)h)`,
plaquettes :math:`[ih, (i+1)h)`). Default: the simulation grid itself.

Settings marked :data:`Setting` are fixed numbers or a :class:`Range`: a nuisance parameter drawn
uniformly per simulation from the measurement key, marginalised by simulation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar, Union

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from ._config import TDGLConfig, TDGLParams
from ._lattice import State
from ._length_scales import ground_state
from ._observables import observe

__all__ = ["FIELDS", "INSTRUMENTS", "SQUID", "STM", "Decoration", "Range", "instrument_from_dict"]

#: The physical fields an instrument may read, in the order :func:`fields_of` stacks them.
FIELDS = ("rho1", "rho2", "bz", "winding1", "winding2")


@dataclasses.dataclass(frozen=True)
class Range:
    """A nuisance setting: drawn uniformly from ``[low, high]`` for every simulation.

    Example:
        >>> from glsbi_plugin.physics import STM, Range
        >>> STM(snr=Range(3.0, 30.0)).snr
        Range(low=3.0, high=30.0)
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        lo, hi = float(self.low), float(self.high)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"Range({self.low!r}, {self.high!r}): need finite low <= high")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)


#: A fixed instrument setting or a nuisance :class:`Range`.
Setting = Union[float, Range]  # noqa: UP007 - a runtime alias


def _check_setting(name: str, value: Setting, *, minimum: float, strict: bool, inf: bool = False) -> Setting:
    lo, hi = (value.low, value.high) if isinstance(value, Range) else (value, value)
    finite = (math.isfinite(lo) or (inf and lo == math.inf)) if isinstance(lo, numbers.Real) else False
    if isinstance(lo, bool) or not finite or not (math.isfinite(hi) or (inf and hi == math.inf)):
        raise ValueError(f"{name}={value!r}: must be a {'' if inf else 'finite '}number or a Range")
    if (lo <= minimum) if strict else (lo < minimum):
        raise ValueError(f"{name}={value!r}: must be {'>' if strict else '>='} {minimum:g}")
    return value if isinstance(value, Range) else float(value)


def _draw(value: Setting, key: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """The setting's value for one simulation (a fixed value, or uniform on its range)."""
    if isinstance(value, Range):
        return (value.low + (value.high - value.low) * jax.random.uniform(key, (), jnp.float32)).astype(dtype)
    return jnp.asarray(value, dtype)


# ---------------------------------------------------------------------------------- pixel grid
@functools.cache
def _resample_matrix(n: int, h: float, offset: float, fov: float, pixels: int) -> np.ndarray:
    """``(pixels, n)`` area weights: instrument pixel a = mean over the cells it overlaps.

    Cell k covers ``[k h + offset, (k+1) h + offset)``; the window ``[offset, offset + fov)``."""
    edges = offset + np.arange(n + 1) * h
    pix = offset + np.arange(pixels + 1) * (fov / pixels)
    lo = np.maximum(pix[:-1, None], edges[None, :-1])
    hi = np.minimum(pix[1:, None], edges[None, 1:])
    return (np.clip(hi - lo, 0.0, None) / (fov / pixels)).astype(np.float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Instrument:
    """Shared pixel grid, checks and (de)serialisation of the instruments."""

    name: ClassVar[str]
    #: Where the fields it reads live: ``"sites"`` (densities) or ``"plaquettes"`` (B_z, windings).
    grid: ClassVar[str] = "sites"
    pixels: int | None = None
    field_of_view: float | None = None

    def __post_init__(self) -> None:
        if self.pixels is not None and (
            isinstance(self.pixels, bool) or not isinstance(self.pixels, (int, np.integer)) or self.pixels < 4
        ):
            raise ValueError(f"pixels={self.pixels!r}: must be an integer >= 4 (or None: the simulation grid)")
        if self.pixels is not None:
            object.__setattr__(self, "pixels", int(self.pixels))
        if self.field_of_view is not None:
            _check_setting("field_of_view", self.field_of_view, minimum=0.0, strict=True)
            if isinstance(self.field_of_view, Range):
                raise ValueError("field_of_view must be fixed: it sets the image's geometry")

    @property
    def needs(self) -> tuple[str, ...]:
        """The fields of :data:`FIELDS` the instrument reads."""
        raise NotImplementedError

    # -- geometry ------------------------------------------------------------------------------
    def _window(self, cfg: TDGLConfig) -> tuple[float, int, int] | None:
        """``(fov, px, py)`` of a resampled grid, or None for the simulation grid itself."""
        if self.pixels is None and self.field_of_view is None:
            return None
        nx, ny = cfg.shape
        side = min(nx, ny) * cfg.h
        fov = side if self.field_of_view is None else float(self.field_of_view)
        p = self.pixels if self.pixels is not None else max(4, round(fov / cfg.h))
        return fov, int(p), int(p)

    def check(self, cfg: TDGLConfig) -> None:
        """Refuse a config the instrument cannot observe, naming the value and the allowed range."""
        missing = [f for f in self.needs if f.endswith("2") and cfg.components < 2]
        if missing:
            raise ValueError(f"{self.name} reads {missing}, which a {cfg.components}-band config does not have")
        if self.field_of_view is not None:
            side = min(cfg.shape) * cfg.h
            if self.field_of_view > side * (1 + 1e-9):
                raise ValueError(
                    f"field_of_view={self.field_of_view:g} exceeds the sample ({side:g} = {min(cfg.shape)} sites x "
                    f"h={cfg.h:g}); allowed (0, {side:g}]"
                )

    def extent(self, cfg: TDGLConfig) -> tuple[float, float, float, float]:
        """``(x0, x1, y0, y1)`` of the image in length units (an ``imshow`` extent): the window, or the
        sample's cells (sites own ``[(i-½)h, (i+½)h)``, plaquettes ``[ih, (i+1)h)``)."""
        offset = -cfg.h / 2 if self.grid == "sites" else 0.0
        win = self._window(cfg)
        lx, ly = (cfg.shape[0] * cfg.h, cfg.shape[1] * cfg.h) if win is None else (win[0], win[0])
        return (offset, offset + lx, offset, offset + ly)

    def x_shape(self, cfg: TDGLConfig) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image on ``cfg``'s sample."""
        win = self._window(cfg)
        px, py = cfg.shape if win is None else win[1:]
        return (len(self.channel_names), px, py)

    @property
    def channel_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _resample(self, image: jax.Array, cfg: TDGLConfig) -> jax.Array:
        """``(C, nx, ny)`` → ``(C, px, py)`` by area weights over the cells of :attr:`grid`."""
        win = self._window(cfg)
        if win is None:
            return image
        fov, px, py = win
        offset = -cfg.h / 2 if self.grid == "sites" else 0.0
        rx = jnp.asarray(_resample_matrix(cfg.shape[0], cfg.h, offset, fov, px), image.dtype)
        ry = jnp.asarray(_resample_matrix(cfg.shape[1], cfg.h, offset, fov, py), image.dtype)
        return jnp.einsum("ai,cij,bj->cab", rx, image, ry)

    # -- running -------------------------------------------------------------------------------
    def __call__(self, state: State, params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None) -> jax.Array:
        """The float32 image of ``state`` (:meth:`measure` of its :data:`FIELDS`)."""
        p = params.astype(cfg.real_dtype)
        fields = dict(zip(self.needs, observe(state, p, cfg, self.needs), strict=True))
        return self.measure(fields, params, cfg, key)

    def measure(
        self, fields: Mapping[str, jax.Array], params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None
    ) -> jax.Array:
        """The float32 image from the physical fields ``{name: (nx, ny)}`` (at least :attr:`needs`)."""
        raise NotImplementedError

    # -- description ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with ``"name"`` (``Range`` as ``{"low": ..., "high": ...}``)."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Range):
                v = {"low": v.low, "high": v.high}
            elif isinstance(v, float) and math.isinf(v):
                v = "inf" if v > 0 else "-inf"  # JSON has no infinity (and bank hashes refuse it)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def _standardise(image: jax.Array) -> jax.Array:
    """Each channel to zero mean and unit variance (a flat channel to zeros)."""
    mean = image.mean(axis=(1, 2), keepdims=True)
    std = image.std(axis=(1, 2), keepdims=True)
    return (image - mean) / jnp.maximum(std, jnp.asarray(1e-12, image.dtype))


def _wavenumbers(cfg: TDGLConfig, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    nx, ny = cfg.shape
    kx = 2 * jnp.pi * jnp.fft.fftfreq(nx, d=cfg.h).astype(dtype)
    ky = 2 * jnp.pi * jnp.fft.fftfreq(ny, d=cfg.h).astype(dtype)
    return kx[:, None], ky[None, :]


def _filter(image: jax.Array, transfer: jax.Array) -> jax.Array:
    """Periodic convolution of ``(C, nx, ny)`` with the kernel whose Fourier transform is ``transfer``."""
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(image) * transfer)).astype(image.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class STM(_Instrument):
    r"""Zero-bias STM/STS conductance maps of the chosen bands, in arbitrary units (module docstring).

    Attributes:
        bands: Bands whose density is imaged: ``(2,)`` (default: the weak band, whose large cores
            zero-bias STM resolves, as in MgB₂'s π band, Eskildsen et al., PRL 89, 187003 (2002)),
            ``(1,)`` or ``(1, 2)``.
        blur: Tip point-spread width σ (length units; 0: none).
        snr: Signal-to-noise ratio: std of the blurred map over std of the noise (``inf``: none).
        pixels: Instrument pixels per side (default: the simulation grid over the field of view).
        field_of_view: Side of the square window imaged (length units; default the whole sample).

    Example:
        >>> import jax
        >>> from glsbi_plugin.physics import STM, TDGLConfig, forward, presets
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> stm = STM(bands=(2,), blur=1.0, snr=10.0, pixels=8)
        >>> x = forward(presets.type15(field=0.2), jax.random.key(0), cfg, stm)
        >>> x.shape, round(float(x.mean()), 5), round(float(x.std()), 3)
        ((1, 8, 8), 0.0, 1.0)
    """

    name: ClassVar[str] = "stm"
    bands: tuple[int, ...] = (2,)
    blur: Setting = 1.0
    snr: Setting = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        bands = tuple(self.bands) if not isinstance(self.bands, int) else (self.bands,)
        if not bands or any(b not in (1, 2) for b in bands) or len(set(bands)) != len(bands):
            raise ValueError(f"bands={self.bands!r}: choose (1,), (2,) or (1, 2)")
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "blur", _check_setting("blur", self.blur, minimum=0.0, strict=False))
        object.__setattr__(self, "snr", _check_setting("snr", self.snr, minimum=0.0, strict=True, inf=True))

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(f"stm{b}" for b in self.bands)

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(f"rho{b}" for b in self.bands)

    def check(self, cfg: TDGLConfig) -> None:
        if cfg.components < max(self.bands):
            raise ValueError(f"bands={self.bands}: a {cfg.components}-band config has no band {max(self.bands)}")
        super().check(cfg)

    def measure(
        self, fields: Mapping[str, jax.Array], params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None
    ) -> jax.Array:
        dt = cfg.real_dtype
        image = jnp.stack([jnp.asarray(fields[f"rho{b}"], dt) for b in self.bands])
        image = image - image.mean(axis=(1, 2), keepdims=True)  # the offset is unknown anyway; keeps float32 digits
        k_blur, k_snr, k_noise = jax.random.split(_need_key(key), 3)
        sigma = _draw(self.blur, k_blur, dt)
        kx, ky = _wavenumbers(cfg, dt)
        image = _filter(image, jnp.exp(-0.5 * sigma**2 * (kx**2 + ky**2)))
        image = _standardise(self._resample(image, cfg))
        snr = _draw(self.snr, k_snr, dt)
        image = image + jax.random.normal(k_noise, image.shape, dt) / snr
        return _standardise(image).astype(jnp.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SQUID(_Instrument):
    r"""Scanning-SQUID (or Hall-probe) maps of :math:`B_z` at a height above the surface (module docstring).

    Attributes:
        height: Height z of the pick-up loop above the surface (length units).
        loop: Gaussian width of the pick-up loop's point-spread function (0: a point probe).
        snr: Std of the noiseless map over std of the noise (``inf``: none). The noise thus scales
            with each map's contrast; a probe's fixed flux noise in flux quanta per area is
            ``std(map)/snr`` of a typical map.
        standardise: Report each map with zero mean and unit variance instead of flux quanta per
            unit area (:math:`B/2\pi`).
        pixels: Instrument pixels per side (default: the simulation grid over the field of view).
        field_of_view: Side of the square window imaged (length units; default the whole sample).

    Example:
        >>> import jax
        >>> from glsbi_plugin.physics import SQUID, TDGLConfig, forward, presets
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> x = forward(presets.type15(field=0.2), jax.random.key(0), cfg, SQUID(height=1.0, snr=float("inf")))
        >>> x.shape, round(float(x.mean()) * 8**2, 3)   # flux quanta per area x area (8 x 8) = N_phi
        ((1, 16, 16), 2.0)
    """

    name: ClassVar[str] = "squid"
    grid: ClassVar[str] = "plaquettes"
    height: Setting = 1.0
    loop: Setting = 0.5
    snr: Setting = 20.0
    standardise: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "height", _check_setting("height", self.height, minimum=0.0, strict=False))
        object.__setattr__(self, "loop", _check_setting("loop", self.loop, minimum=0.0, strict=False))
        object.__setattr__(self, "snr", _check_setting("snr", self.snr, minimum=0.0, strict=True, inf=True))
        if not isinstance(self.standardise, bool):
            raise ValueError(f"standardise={self.standardise!r}: must be True or False")

    @property
    def channel_names(self) -> tuple[str, ...]:
        return ("squid",)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("bz",)

    def measure(
        self, fields: Mapping[str, jax.Array], params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None
    ) -> jax.Array:
        dt = cfg.real_dtype
        k_z, k_loop, k_snr, k_noise = jax.random.split(_need_key(key), 4)
        p = params.astype(dt)
        u = ground_state(p)
        inv_lam2 = p.e**2 * jnp.sum(2 * p.K * u**2)  # m_A² = 1/λ²
        kx, ky = _wavenumbers(cfg, dt)
        k = jnp.sqrt(kx**2 + ky**2)
        q = jnp.sqrt(k**2 + inv_lam2)
        z, loop = _draw(self.height, k_z, dt), _draw(self.loop, k_loop, dt)
        transfer = q / (q + k) * jnp.exp(-k * z - 0.5 * loop**2 * k**2)
        b = _filter(jnp.asarray(fields["bz"], dt)[None] / (2 * jnp.pi), transfer)
        b = self._resample(b, cfg)
        snr = _draw(self.snr, k_snr, dt)
        b = b + jax.random.normal(k_noise, b.shape, dt) * b.std(axis=(1, 2), keepdims=True) / snr
        return (_standardise(b) if self.standardise else b).astype(jnp.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decoration(_Instrument):
    r"""Bitter decoration / MFM: the vortices of one band as Gaussian blobs (module docstring).

    Attributes:
        band: Band whose windings mark the vortices (1: the strong band; composite vortices
            carry flux in both).
        jitter: Standard deviation of each vortex's positional error (length units).
        blob: Gaussian width w of a decorated vortex (length units, > 0).
        pixels: Instrument pixels per side (default: the simulation grid over the field of view).
        field_of_view: Side of the square window imaged (length units; default the whole sample).

    The image is :math:`\sum_v |n_v| \exp(-|\mathbf r - \mathbf r_v - \delta_v|^2 / 2w^2)` with
    minimum-image distances on the torus, :math:`\delta_v \sim N(0, \text{jitter}^2)`, averaged
    over each pixel's area exactly (differences of :math:`\operatorname{erf}` at the pixel edges),
    so a blob keeps its integral :math:`2\pi w^2|n_v|` on any pixel grid. :meth:`positions` gives
    the same jittered positions as coordinates.

    Example:
        >>> import jax
        >>> from glsbi_plugin.physics import Decoration, TDGLConfig, forward, presets
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> x = forward(presets.type15(field=0.2), jax.random.key(0), cfg, Decoration(blob=0.5))
        >>> x.shape, bool(x.min() >= 0)
        ((1, 16, 16), True)
    """

    name: ClassVar[str] = "decoration"
    grid: ClassVar[str] = "plaquettes"
    band: int = 1
    jitter: Setting = 0.0
    blob: Setting = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.band not in (1, 2) or isinstance(self.band, bool):
            raise ValueError(f"band={self.band!r}: choose 1 or 2")
        object.__setattr__(self, "jitter", _check_setting("jitter", self.jitter, minimum=0.0, strict=False))
        object.__setattr__(self, "blob", _check_setting("blob", self.blob, minimum=0.0, strict=True))

    @property
    def channel_names(self) -> tuple[str, ...]:
        return (f"decoration{self.band}",)

    @property
    def needs(self) -> tuple[str, ...]:
        return (f"winding{self.band}",)

    def check(self, cfg: TDGLConfig) -> None:
        if cfg.components < self.band:
            raise ValueError(f"band={self.band}: a {cfg.components}-band config has no band {self.band}")
        super().check(cfg)

    def _jittered(self, cfg: TDGLConfig, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(vx, vy, w)``: every plaquette centre displaced by its jitter draw, and the blob width."""
        dt = cfg.real_dtype
        k_jit, k_blob, k_pos = jax.random.split(_need_key(key), 3)
        nx, ny = cfg.shape
        i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        d = jax.random.normal(k_pos, (2, nx * ny), dt) * _draw(self.jitter, k_jit, dt)
        vx = jnp.asarray((i.reshape(-1) + 0.5) * cfg.h, dt) + d[0]
        vy = jnp.asarray((j.reshape(-1) + 0.5) * cfg.h, dt) + d[1]
        return vx, vy, _draw(self.blob, k_blob, dt)

    def positions(self, fields: Mapping[str, Any], cfg: TDGLConfig, key: jax.Array) -> np.ndarray:
        """The decorated vortices as coordinates: a ``(k, 3)`` float64 array of ``(x, y, n)``, the
        jittered positions (wrapped onto the torus) that :meth:`measure` renders with the same key."""
        vx, vy, _ = self._jittered(cfg, key)
        n = np.asarray(fields[f"winding{self.band}"]).reshape(-1)
        keep = np.nonzero(np.rint(n))[0]
        lx, ly = cfg.shape[0] * cfg.h, cfg.shape[1] * cfg.h
        x = np.mod(np.asarray(vx, np.float64)[keep], lx)
        y = np.mod(np.asarray(vy, np.float64)[keep], ly)
        return np.stack([x, y, np.rint(n[keep])], axis=1)

    def measure(
        self, fields: Mapping[str, jax.Array], params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None
    ) -> jax.Array:
        dt = cfg.real_dtype
        n = jnp.abs(jnp.asarray(fields[f"winding{self.band}"], dt)).reshape(-1)
        vx, vy, w = self._jittered(cfg, key)
        nx, ny = cfg.shape
        win = self._window(cfg)
        lx, ly, px, py = (nx * cfg.h, ny * cfg.h, nx, ny) if win is None else (win[0], win[0], win[1], win[2])
        cx = jnp.asarray((np.arange(px) + 0.5) * (lx / px), dt)  # pixel centres (plaquette centres by default)
        cy = jnp.asarray((np.arange(py) + 0.5) * (ly / py), dt)
        gx = _pixel_gauss(cx[:, None] - vx[None, :], lx / px, nx * cfg.h, w)
        gy = _pixel_gauss(cy[:, None] - vy[None, :], ly / py, ny * cfg.h, w)
        return jnp.einsum("ap,p,bp->ab", gx, n, gy)[None].astype(jnp.float32)


def _pixel_gauss(d: jax.Array, width: float, length: float, w: jax.Array) -> jax.Array:
    """Mean of :math:`e^{-u^2/2w^2}` over a pixel of ``width`` centred at minimum-image offset ``d``."""
    d = d - length * jnp.round(d / length)
    s = jnp.sqrt(jnp.asarray(2.0, d.dtype)) * w
    half = jnp.asarray(width / 2, d.dtype)
    erf = jax.scipy.special.erf
    return (erf((d + half) / s) - erf((d - half) / s)) * (s * jnp.sqrt(jnp.pi) / 4) / half


def _need_key(key: jax.Array | None) -> jax.Array:
    if key is None:
        raise ValueError("an instrument needs a PRNG key for its noise and nuisance settings")
    return key


#: Instruments by name (the ideal observation, :class:`~glsbi_plugin.physics.Observation`, is ``"ideal"``).
INSTRUMENTS: dict[str, type[_Instrument]] = {"stm": STM, "squid": SQUID, "decoration": Decoration}


def _decode(v: Any) -> Any:
    if isinstance(v, Mapping):
        return Range(**v)
    if isinstance(v, list):
        return tuple(v)
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    return v


def check_settings(name: str, settings: Mapping[str, Any]) -> None:
    """Refuse settings that instrument ``name`` does not have, naming them and the allowed ones."""
    fields = {f.name for f in dataclasses.fields(INSTRUMENTS[name])}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(f"{name}: unknown settings {unknown}; allowed: {sorted(fields)}")


def instrument_from_dict(d: Mapping[str, Any]) -> _Instrument:
    """Rebuild an instrument from :meth:`to_dict`'s output."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {name!r}; known: {sorted(INSTRUMENTS)}")
    cls = INSTRUMENTS[name]
    check_settings(name, d)
    kwargs = {k: _decode(v) for k, v in d.items()}
    return cls(**kwargs)
