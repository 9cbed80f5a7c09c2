r"""Posterior predictive check of one observed image, and the image-level statistics it compares.

:func:`posterior_predictive_check` draws :math:`\theta_i \sim p(\theta \mid x_o)`, simulates
:math:`x_i` at each, and compares statistics :math:`T(x_o)` with their predictive distribution
:math:`\{T(x_i)\}`. A statistic whose observed value lies in a tail of that distribution (small
predictive p-value) is one the fitted model does not reproduce.

The statistics (:func:`image_statistics`) are computed on the instrument's image itself, since a
measured map has no winding field: vortices are the local extrema of the smoothed, standardised
image (:func:`detect_vortices`; dips in an STM conductance map or a density, peaks in a SQUID or
decoration map), and their positions go through :mod:`glsbi_plugin.physics.summaries` on the
image's box, taken as periodic like the simulations':

- ``vortex_count``: detected vortices; ``nn_mean``: mean nearest-neighbour distance over the mean
  spacing :math:`\sqrt{A/N}` (Poisson ≈ 0.5, triangular lattice ≈ 1.07; 0 for N < 2);
- ``g_r``: pair correlation :math:`g(r)` on :data:`G_BINS` bins of :math:`[0, L/2]` (a vector);
- ``cluster_largest_fraction``: largest single-linkage cluster (radius :attr:`ImageScales.cluster_radius`) over N;
- ``pixel_histogram``: density of the standardised pixel values on :data:`HIST_EDGES` (a vector),
  ``pixel_skewness``, ``pixel_kurtosis`` (excess);
- ``noise_level``: :math:`1 - \bar c_1`, with :math:`\bar c_1` the lag-one autocorrelation of the
  standardised image averaged over both axes (0 for a smooth map, 1 for white noise);
- ``contrast``: mean height of the detected extrema above the median of the smoothed image, in
  units of the image's standard deviation; ``core_radius``: the half-height radius of the mean
  radial profile around the detected vortices (length units: the core size seen through the
  instrument's blur; 0 for no vortex); ``opposite_extrema``: extrema of the opposite sign found
  by the same rule (bright spots in a map of dark vortices: a vortex image has few, a random
  texture as many as it has "vortices"); ``image_mean``, ``image_std``: the raw level and scale
  (constant for a standardised instrument).

Predictive p-values: for a scalar statistic the two-sided
:math:`p = \min\{1, 2\min[(1 + \#\{T_i \le t_o\})/(n+1), (1 + \#\{T_i \ge t_o\})/(n+1)]\}`; for a
vector statistic the same one-sided rule on the discrepancy
:math:`D(t) = \frac1B\sum_b (t_b - \mu_b)^2/(\sigma_b^2 + \epsilon)` with the predictive mean and
standard deviation per bin (Gelman, Meng & Stern 1996, *Statistica Sinica* 6, 733).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from ..physics import summaries

__all__ = [
    "G_BINS",
    "HIST_EDGES",
    "SCALAR_STATISTICS",
    "VECTOR_STATISTICS",
    "ImageScales",
    "PredictiveCheck",
    "detect_vortices",
    "image_statistics",
    "posterior_predictive_check",
]

logger = logging.getLogger(__name__)

#: Number of g(r) bins of ``g_r``.
G_BINS = 8
#: Bin edges of ``pixel_histogram`` (standardised pixel values; values outside fall in the end bins).
HIST_EDGES = np.linspace(-4.0, 4.0, 17)
#: The scalar statistics of :func:`image_statistics`, in order.
SCALAR_STATISTICS = (
    "vortex_count",
    "nn_mean",
    "cluster_largest_fraction",
    "pixel_skewness",
    "pixel_kurtosis",
    "noise_level",
    "contrast",
    "core_radius",
    "opposite_extrema",
    "image_mean",
    "image_std",
)
#: The vector statistics of :func:`image_statistics`.
VECTOR_STATISTICS = ("g_r", "pixel_histogram")
# a detected vortex rises this many standard deviations above the median of the smoothed image
_PROMINENCE = 1.0
# vortices are dark where the channel is a density (an STM conductance map of ρ, |ψ|²)
_DARK_PREFIXES = ("rho", "stm")


@dataclasses.dataclass(frozen=True)
class ImageScales:
    """The lengths the image statistics need, in the model's length units.

    Attributes:
        pixel_size: Side of one pixel of the image, > 0.
        spacing: The smallest vortex spacing expected: the triangular lattice constant
            :math:`a = (4\\pi/\\sqrt3 B)^{1/2}` at the largest field of the prior, > 0.
        polarity: ``-1`` if vortices are dark (density, STM), ``+1`` if bright (SQUID, decoration).

    Example:
        >>> s = ImageScales(pixel_size=0.5, spacing=8.5, polarity=-1)
        >>> s.window_pixels, round(s.cluster_radius, 2)
        (5, 5.1)
    """

    pixel_size: float
    spacing: float
    polarity: int

    def __post_init__(self) -> None:
        for name in ("pixel_size", "spacing"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}={v!r}: must be finite and > 0")
        if self.polarity not in (-1, 1):
            raise ValueError(f"polarity={self.polarity!r}: must be -1 (dark vortices) or +1 (bright)")

    @property
    def window_pixels(self) -> int:
        """Radius (pixels) of the neighbourhood in which a detected vortex is the extremum: 0.3 a."""
        return max(1, round(0.3 * self.spacing / self.pixel_size))

    @property
    def cluster_radius(self) -> float:
        """Linkage radius of ``cluster_largest_fraction``: 0.6 a (length units)."""
        return 0.6 * self.spacing

    @classmethod
    def of(cls, simulator: Any) -> ImageScales:
        """The scales of a :class:`~glsbi_plugin.TDGLSimulator`'s images (its observation's grid, the
        prior's largest field, the polarity of its first channel)."""
        cfg = simulator.config
        x0, x1, _, _ = simulator.observation.extent(cfg)
        pixels = simulator.x_shape[1]
        names = tuple(simulator.names)
        field = simulator.high[names.index("field")] if "field" in names else float(simulator.base.field)
        spacing = math.sqrt(4 * math.pi / (math.sqrt(3) * float(field)))
        dark = str(simulator.channels[0]).startswith(_DARK_PREFIXES)
        return cls(pixel_size=(x1 - x0) / pixels, spacing=spacing, polarity=-1 if dark else 1)


def _standardised(image: np.ndarray) -> np.ndarray:
    std = image.std()
    return (image - image.mean()) / (std if std > 0 else 1.0)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def detect_vortices(image: ArrayLike, scales: ImageScales) -> tuple[np.ndarray, np.ndarray]:
    r"""Vortices of a 2-D image: extrema of the smoothed, standardised, polarity-corrected image.

    The image is standardised, multiplied by ``scales.polarity`` (vortices become maxima), smoothed
    by a Gaussian of one pixel (periodic edges), and a pixel is a vortex where it is the maximum of
    the disk of :attr:`ImageScales.window_pixels` around it and rises more than one standard
    deviation above the median.

    Args:
        image: ``(H, W)`` finite image.
        scales: Pixel size, vortex spacing and polarity.

    Returns:
        ``(positions, heights)``: ``(k, 2)`` coordinates (length units, the box ``[0, H p) × [0, W p)``):
        the pixel centre of each extremum, or the centre of a plateau of equal extrema, and the
        ``(k,)`` heights above the median (standard deviations).

    Raises:
        ValueError: If the image is not 2-D or not finite.

    Example:
        >>> yy, xx = np.mgrid[0:32, 0:32]
        >>> img = -np.exp(-((xx - 10.0) ** 2 + (yy - 20.0) ** 2) / 8.0)   # one dark core
        >>> pos, h = detect_vortices(img, ImageScales(pixel_size=1.0, spacing=16.0, polarity=-1))
        >>> pos.tolist()
        [[20.5, 10.5]]
    """
    z = np.asarray(image, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("image holds NaN or inf values")
    s = ndimage.gaussian_filter(_standardised(z) * scales.polarity, sigma=1.0, mode="wrap")
    height = s - np.median(s)
    peak = (s == ndimage.maximum_filter(s, footprint=_disk(scales.window_pixels), mode="wrap")) & (height > _PROMINENCE)
    # a plateau of equal maxima (a core centred between pixels) is one vortex, at the plateau's centre
    labels, k = ndimage.label(peak, structure=np.ones((3, 3)))
    if k == 0:
        return np.zeros((0, 2)), np.zeros(0)
    index = np.arange(1, k + 1)
    centres = np.asarray(ndimage.center_of_mass(peak, labels, index), dtype=np.float64).reshape(-1, 2)
    return (centres + 0.5) * scales.pixel_size, np.asarray(ndimage.maximum(height, labels, index), dtype=np.float64)


def _core_radius(smooth: np.ndarray, peaks: np.ndarray, scales: ImageScales) -> float:
    """Half-height radius (length units) of the mean radial profile of ``smooth`` around ``peaks`` (pixel indices)."""
    if len(peaks) == 0:
        return 0.0
    h, w = smooth.shape
    ii, jj = np.arange(h), np.arange(w)
    di = ii[None, :] - peaks[:, :1]
    dj = jj[None, :] - peaks[:, 1:]
    di = di - h * np.round(di / h)
    dj = dj - w * np.round(dj / w)
    r = np.hypot(di[:, :, None], dj[:, None, :])  # (k, h, w) pixels
    r_max = max(2.0, 0.5 * scales.spacing / scales.pixel_size)
    edges = np.arange(0.0, r_max + 0.5, 0.5)
    base = np.median(smooth)
    values = np.broadcast_to(smooth - base, r.shape)
    inside = r < edges[-1]
    counts = np.histogram(r[inside], edges)[0]
    sums = np.histogram(r[inside], edges, weights=values[inside])[0]
    profile = sums / np.maximum(counts, 1)
    centre = 0.5 * (edges[1:] + edges[:-1])
    ok = counts > 0
    profile, centre = profile[ok], centre[ok]
    below = np.nonzero(profile < 0.5 * profile[0])[0]
    if len(below) == 0:
        return float(centre[-1] * scales.pixel_size)
    b = int(below[0])
    if b == 0:
        return float(centre[0] * scales.pixel_size)
    f = (profile[b - 1] - 0.5 * profile[0]) / (profile[b - 1] - profile[b])
    return float((centre[b - 1] + f * (centre[b] - centre[b - 1])) * scales.pixel_size)


def _one_image(image: np.ndarray, scales: ImageScales) -> dict[str, Any]:
    z = _standardised(image)
    pos, height = detect_vortices(image, scales)
    box = (image.shape[0] * scales.pixel_size, image.shape[1] * scales.pixel_size)
    n = len(pos)
    out: dict[str, Any] = {"vortex_count": float(n)}
    if n >= 2:
        d = summaries.nearest_neighbour_distances(pos, box) / math.sqrt(box[0] * box[1] / n)
        out["nn_mean"] = float(d.mean())
        out["g_r"] = summaries.pair_correlation(pos, box, bins=G_BINS)[1]
    else:
        out["nn_mean"], out["g_r"] = 0.0, np.zeros(G_BINS)
    sizes = summaries.cluster_sizes(pos, box, scales.cluster_radius) if n else np.zeros(0, np.int64)
    out["cluster_largest_fraction"] = summaries.cluster_summary(sizes).largest_fraction
    hist, _ = np.histogram(np.clip(z, HIST_EDGES[0], HIST_EDGES[-1]), HIST_EDGES, density=True)
    out["pixel_histogram"] = hist
    out["pixel_skewness"] = float(np.mean(z**3))
    out["pixel_kurtosis"] = float(np.mean(z**4) - 3.0)
    c1 = [np.mean(z * np.roll(z, 1, axis=a)) for a in (0, 1)]
    out["noise_level"] = float(1.0 - np.mean(c1))
    out["contrast"] = float(height.mean()) if n else 0.0
    smooth = ndimage.gaussian_filter(z * scales.polarity, sigma=1.0, mode="wrap")
    out["core_radius"] = _core_radius(smooth, np.round(pos / scales.pixel_size - 0.5).astype(int), scales)
    opposite = dataclasses.replace(scales, polarity=-scales.polarity)
    out["opposite_extrema"] = float(len(detect_vortices(image, opposite)[0]))
    out["image_mean"], out["image_std"] = float(image.mean()), float(image.std())
    return out


def image_statistics(x: ArrayLike, scales: ImageScales, *, channel: int = 0) -> dict[str, np.ndarray]:
    """The statistics of the module docstring for each image of a batch (one channel).

    Args:
        x: Images ``(n, C, H, W)`` (or one ``(C, H, W)``), torch or NumPy, finite.
        scales: The images' :class:`ImageScales`.
        channel: Channel whose image is read.

    Returns:
        ``{name: array}``: ``(n,)`` float64 for :data:`SCALAR_STATISTICS`, ``(n, bins)`` for
        :data:`VECTOR_STATISTICS`.

    Raises:
        ValueError: A bad shape, a channel out of range, or non-finite values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> scales = ImageScales(pixel_size=0.5, spacing=8.0, polarity=-1)
        >>> stats = image_statistics(rng.normal(size=(2, 1, 32, 32)), scales)
        >>> stats["vortex_count"].tolist(), bool(stats["noise_level"].min() > 0.9)   # white noise: no vortex
        ([0.0, 0.0], True)
    """
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"x must have shape (n, C, H, W) or (C, H, W), got {arr.shape}")
    if not 0 <= channel < arr.shape[1]:
        raise ValueError(f"channel={channel}: the images have channels 0..{arr.shape[1] - 1}")
    rows = [_one_image(img[channel], scales) for img in arr]
    out = {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in SCALAR_STATISTICS}
    for k in VECTOR_STATISTICS:
        out[k] = np.asarray([r[k] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    return out


def predictive_p_values(observed: Mapping[str, np.ndarray], predictive: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Predictive p-values of each statistic (module docstring): ``observed[k]`` is ``()`` or ``(bins,)``,
    ``predictive[k]`` ``(n,)`` or ``(n, bins)``.

    Example:
        >>> pred = {"a": np.arange(99.0)}
        >>> [round(predictive_p_values({"a": np.array(t)}, pred)["a"], 2) for t in (49.0, 200.0)]
        [1.0, 0.02]
    """
    out = {}
    for k, sims in predictive.items():
        t, sims = np.asarray(observed[k], np.float64), np.asarray(sims, np.float64)
        n = sims.shape[0]
        if sims.ndim == 1:  # ties within float rounding count on both sides (a constant statistic: p = 1)
            tol = 1e-6 * (1.0 + np.abs(sims).max(initial=0.0))
            lo = (1 + np.sum(sims <= t + tol)) / (n + 1)
            hi = (1 + np.sum(sims >= t - tol)) / (n + 1)
            out[k] = float(min(1.0, 2 * min(lo, hi)))
        else:
            mu, var = sims.mean(0), sims.var(0) + 1e-6
            d_obs = np.mean((t - mu) ** 2 / var)
            d_sim = np.mean((sims - mu) ** 2 / var, axis=1)
            out[k] = float((1 + np.sum(d_sim >= d_obs)) / (n + 1))
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class PredictiveCheck:
    """Result of :func:`posterior_predictive_check`.

    Attributes:
        names: θ's parameter names.
        theta: The posterior draws ``(n, d)``.
        observed: Statistics of ``x_o`` (:func:`image_statistics`, one row).
        predictive: Statistics of the ``n`` predictive images.
        p_values: Predictive p-value per statistic (module docstring).
        x_o: The observation ``(C, H, W)``.
        examples: Up to 12 predictive images ``(k, C, H, W)`` (the first draws).
        seed: The seed of the draws and simulations.
    """

    names: tuple[str, ...]
    theta: np.ndarray
    observed: dict[str, np.ndarray]
    predictive: dict[str, np.ndarray]
    p_values: dict[str, float]
    x_o: np.ndarray
    examples: np.ndarray
    seed: int

    @property
    def n(self) -> int:
        """Number of predictive simulations."""
        return int(self.theta.shape[0])

    def worst(self) -> tuple[str, float]:
        """The statistic with the smallest p-value, and that p-value."""
        k = min(self.p_values, key=self.p_values.get)
        return k, self.p_values[k]

    def summary(self) -> str:
        """One line per statistic: observed value, predictive 5–95 % band, p-value."""
        lines = [f"posterior predictive check ({self.n} simulations at θ ~ p(θ | x_o)):"]
        for k, p in self.p_values.items():
            if k in SCALAR_STATISTICS:
                lo, hi = np.percentile(self.predictive[k], [5, 95])
                lines.append(f"  {k:<26} observed {float(self.observed[k]):8.3f}   predictive 90% [{lo:.3f}, {hi:.3f}]"
                             f"   p = {p:.3f}")
            else:
                lines.append(f"  {k:<26} (vector of {self.observed[k].size} bins)   p = {p:.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: p-values, observed values, predictive quantiles (5, 50, 95 %), θ draws' mean/sd."""
        pred = {k: np.percentile(v, [5, 50, 95], axis=0).tolist() for k, v in self.predictive.items()}
        return {
            "n": self.n,
            "seed": self.seed,
            "names": list(self.names),
            "theta_mean": self.theta.mean(0).tolist(),
            "theta_std": self.theta.std(0).tolist(),
            "p_values": self.p_values,
            "observed": {k: np.asarray(v).tolist() for k, v in self.observed.items()},
            "predictive_quantiles_5_50_95": pred,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def plot(self, path: str | Path, *, dpi: int = 60) -> Path:
        """The figure: the observation beside a grid of predictive images, and each statistic's
        predictive distribution (histogram or 5–95 % band) with the observed value."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(14, 5.2), constrained_layout=True)
        FigureCanvasAgg(fig)
        top, bottom = fig.subfigures(2, 1, height_ratios=(0.8, 1.0))
        k = min(len(self.examples), 8)
        axes = top.subplots(1, 1 + k, squeeze=False)[0]
        for a, x, t in [(axes[0], self.x_o[0], "observation x_o")] + [
            (axes[1 + i], self.examples[i][0], "θ = (" + ", ".join(f"{v:.3g}" for v in self.theta[i]) + ")")
            for i in range(k)
        ]:
            a.imshow(x.T, origin="lower", cmap="magma")
            a.set_title(t, fontsize=7, color="C3" if a is axes[0] else "k")
            a.set_xticks([])
            a.set_yticks([])
        varies = lambda s: np.ptp(self.predictive[s]) > 1e-6 * (1 + np.abs(self.predictive[s]).max())  # noqa: E731
        stats = [s for s in SCALAR_STATISTICS if varies(s) or s == "vortex_count"]
        stats += list(VECTOR_STATISTICS)
        sax = bottom.subplots(1, len(stats), squeeze=False)[0]
        for a, s in zip(sax, stats, strict=True):
            pred, obs = self.predictive[s], self.observed[s]
            if s in SCALAR_STATISTICS:
                a.hist(pred, bins=20, color="0.7")
                a.axvline(float(obs), color="r", lw=2)
            else:
                xs = np.arange(pred.shape[1]) + 0.5 if s == "g_r" else 0.5 * (HIST_EDGES[1:] + HIST_EDGES[:-1])
                a.set_xlabel("r bin (of L/2)" if s == "g_r" else "standardised pixel value", fontsize=7)
                lo, med, hi = np.percentile(pred, [5, 50, 95], axis=0)
                a.fill_between(xs, lo, hi, color="0.8", label="90% predictive")
                a.plot(xs, med, color="0.4")
                a.plot(xs, obs, "r.-", label="observed")
            a.set_title(f"{s}\np = {self.p_values[s]:.3f}", fontsize=8)
            a.tick_params(labelsize=6)
        path = Path(path)
        fig.savefig(path, dpi=dpi)
        return path


def posterior_predictive_check(
    posterior: Any,
    x_o: Any,
    simulator: Any,
    n: int = 100,
    *,
    seed: int = 0,
    scales: ImageScales | None = None,
) -> PredictiveCheck:
    r"""Posterior predictive check of ``x_o``: θ from the posterior, simulated, statistics compared.

    Args:
        posterior: An sbi posterior (e.g. :class:`~glsbi_plugin.inference.GridPosterior`) with
            ``sample(sample_shape, x=...)``.
        x_o: The observation ``(C, H, W)`` (or ``(1, C, H, W)``), on the simulator's grid.
        simulator: The forward model the posterior was trained on (``simulator(theta, seed=s)``).
        n: Number of predictive simulations, >= 10.
        seed: Seeds the posterior draws (torch's generator, forked: the global state is kept) and
            the simulations.
        scales: Image scales of the statistics; default ``ImageScales.of(simulator)``.

    Returns:
        A :class:`PredictiveCheck` (``p_values``, ``to_json``, ``plot``).

    Raises:
        ValueError: ``n`` < 10, or ``x_o`` of another shape than the simulator's images.
    """
    import torch

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 10:
        raise ValueError(f"n={n!r}: the predictive check needs an integer number of simulations >= 10")
    x = torch.as_tensor(x_o, dtype=torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if tuple(x.shape) != tuple(simulator.x_shape):
        raise ValueError(f"x_o has shape {tuple(x.shape)}; the simulator's images are {tuple(simulator.x_shape)}")
    scales = scales or ImageScales.of(simulator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theta = posterior.sample((int(n),), x=x)
    x_pred = simulator(theta, seed=seed)
    good = torch.isfinite(x_pred).flatten(1).all(1)
    if not bool(good.all()):
        logger.warning("%d of %d predictive simulations were not finite and are left out", int((~good).sum()), n)
        theta, x_pred = theta[good], x_pred[good]
    observed = {k: v[0] for k, v in image_statistics(x[None], scales).items()}
    predictive = image_statistics(x_pred, scales)
    p = predictive_p_values(observed, predictive)
    worst = min(p, key=p.get)
    logger.info("posterior predictive check on %d simulations: smallest p = %.3f (%s)", len(theta), p[worst], worst)
    return PredictiveCheck(
        names=tuple(getattr(simulator, "names", ())),
        theta=theta.numpy().astype(np.float64),
        observed=observed,
        predictive=predictive,
        p_values=p,
        x_o=x.numpy(),
        examples=x_pred[:12].numpy(),
        seed=int(seed),
    )
