r"""A user's own vortex image in, a posterior out: read, map onto the estimator's grid, infer, check.

:func:`infer_image` takes an image file (``.npy``, ``.png``, ``.tif``/``.tiff``) or array and an
estimator written by ``glsbi quickstart`` (``estimator.pt``, :func:`~glsbi_plugin.checkpoint.load_estimator`),
and returns the grid posterior's MAP, mean and 68/90 % intervals per parameter, the
misspecification check against the training bank (:func:`~glsbi_plugin.diagnostics.misspecification_check`)
and optionally a posterior predictive check (:func:`~glsbi_plugin.diagnostics.posterior_predictive_check`),
with a figure and a JSON.

Files are read without executing anything: ``.npy`` with ``allow_pickle=False``, PNG with
``imageio`` (Pillow), TIFF with ``tifffile``. A colour or multi-page image needs a chosen
``channel``.

Mapping (:func:`map_to_observation`), lengths in the model's units (those of the lattice spacing
h; convert a measured map's pixel size with the coherence length of the material):

1. The image's physical size comes from ``pixel_size`` (square pixels) or ``field_of_view`` (the
   side of a square image). It must hold a vortex spacing at the prior's lowest field
   (:math:`a = (4\pi/\sqrt3 B_\text{min})^{1/2}`) and the estimator's whole window
   (the instrument's ``field_of_view``, the torus by default): the estimator reads a window of
   fixed physical size, so a smaller image cannot be mapped.
2. The central window of that size is cut out and resampled onto the estimator's pixels by area
   weights (each output pixel the area-weighted mean of the input pixels it overlaps, as the
   instruments of :mod:`glsbi_plugin.physics` do). Upsampling more than 2× is refused: the image
   then has too few pixels to show what the estimator reads.
3. The image is brought to the instrument's units: an STM map (and a standardised SQUID map) is
   standardised to zero mean and unit variance, as the observation model does; a SQUID map in
   flux quanta per unit area is taken as it is, and one taken closer to the surface than the
   estimator's height is continued upward (:math:`e^{-k\Delta z}`; continuing downward is
   unstable and refused); a decoration image is offset to its background and scaled so that its
   median vortex peak equals one blob's peak on the estimator's grid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageInference", "ImageMapping", "infer_image", "map_to_observation", "read_image"]

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_image` reads.
IMAGE_SUFFIXES = (".npy", ".png", ".tif", ".tiff")
#: Credible levels reported by :func:`infer_image`.
LEVELS = (0.68, 0.9)
#: Smallest side (pixels) of an image that is mapped at all.
MIN_PIXELS = 8
#: Largest upsampling factor of the mapping (estimator pixels per image pixel).
MAX_UPSAMPLING = 2.0
_COLOUR_NAMES = {"r": 0, "red": 0, "g": 1, "green": 1, "b": 2, "blue": 2, "a": 3, "alpha": 3}


# ------------------------------------------------------------------------------------ reading
def _select_channel(arr: np.ndarray, channel: int | str | None, source: str) -> np.ndarray:
    """A 2-D image from a 2-D array or a 3-D one with a channel (or page) axis first or last."""
    if arr.ndim == 2:
        if channel not in (None, 0):
            raise ValueError(f"{source} is a single-channel image; channel={channel!r} does not apply")
        return arr
    if arr.ndim != 3:
        raise ValueError(f"{source} has shape {arr.shape}; expected a 2-D image (H, W) or (H, W, C)/(C, H, W)")
    last = arr.shape[-1] <= 4 and arr.shape[0] > 4
    axis = -1 if last else 0
    n = arr.shape[axis]
    if n == 1:
        return np.take(arr, 0, axis=axis)
    if channel is None:
        kind = "colour image" if last and n in (3, 4) else "multi-channel image"
        raise ValueError(f"{source} is a {kind} with {n} channels (shape {arr.shape}); choose one with "
                         f"channel=0..{n - 1} (--channel; for colour also r, g, b)")
    idx = _COLOUR_NAMES.get(channel.lower()) if isinstance(channel, str) else channel
    if isinstance(channel, str) and idx is None:
        try:
            idx = int(channel)
        except ValueError:
            raise ValueError(f"channel={channel!r}: use an index 0..{n - 1} or r, g, b") from None
    if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= idx < n:
        raise ValueError(f"channel={channel!r}: {source} has channels 0..{n - 1}")
    return np.take(arr, int(idx), axis=axis)


def read_image(path: str | Path, *, channel: int | str | None = None) -> np.ndarray:
    """Read a 2-D image from ``.npy``, ``.png`` or ``.tif``/``.tiff`` without executing anything.

    Args:
        path: The file.
        channel: For a colour, multi-channel or multi-page image: the channel (or page) index, or
            ``"r"``/``"g"``/``"b"`` for colour. ``None`` for a single-channel image.

    Returns:
        The image as a float64 ``(H, W)`` array (values as stored; NaNs are kept for the mapping
        to refuse).

    Raises:
        ValueError: An unknown suffix, a file that is not an image of that kind (or a pickled
            ``.npy``), a colour image without ``channel``, or a bad ``channel``.
        OSError: If the file cannot be read.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "map.npy")
        >>> np.save(path, np.arange(12.0).reshape(3, 4))
        >>> read_image(path).shape
        (3, 4)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unknown image type {suffix!r}; readable: {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            import imageio.v3 as iio

            arr = iio.imread(path, plugin="pillow")
        else:
            import tifffile

            arr = tifffile.imread(path)
    except (ValueError, OSError, RuntimeError) as e:  # not a file of that kind, or a pickled array
        raise ValueError(f"{path} cannot be read as a {suffix} image: {e}") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path} holds {arr.dtype} values; an image needs numbers")
    return _select_channel(arr, channel, str(path)).astype(np.float64)


# ------------------------------------------------------------------------------------ mapping
@dataclasses.dataclass(frozen=True)
class ImageMapping:
    """What :func:`map_to_observation` did (all lengths in the model's units).

    Attributes:
        input_shape: The image's ``(H, W)`` pixels.
        pixel_size: Its pixel size.
        window: Side of the window cut out (the estimator's field of view).
        window_origin: Offsets of the window's corner from the image's, along both axes.
        output_pixels: The estimator's pixels per side.
        upsampling: Estimator pixels per image pixel (< 1: the image is averaged down).
        instrument: The estimator's instrument name (``stm``, ``squid``, ``decoration``, ``ideal``).
        units: How values were brought to the instrument's units.
        height_continued: Upward continuation applied to a SQUID map (0 if none).
    """

    input_shape: tuple[int, int]
    pixel_size: float
    window: float
    window_origin: tuple[float, float]
    output_pixels: int
    upsampling: float
    instrument: str
    units: str
    height_continued: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _area_weights(n: int, size: float, start: float, window: float, pixels: int) -> np.ndarray:
    """``(pixels, n)``: output pixel a (of ``[start, start + window)``) as the mean of cells ``[k s, (k+1) s)``."""
    edges = np.arange(n + 1) * size
    out = start + np.arange(pixels + 1) * (window / pixels)
    lo = np.maximum(out[:-1, None], edges[None, :-1])
    hi = np.minimum(out[1:, None], edges[None, 1:])
    return np.clip(hi - lo, 0.0, None) / (window / pixels)


def _standardise(img: np.ndarray) -> np.ndarray:
    return (img - img.mean()) / img.std()


def _lowest_field(simulator: Any) -> float:
    names = tuple(simulator.names)
    return float(simulator.low[names.index("field")]) if "field" in names else float(simulator.base.field)


def _check_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name}={value!r}: must be a finite number > 0 (model length units)")
    return float(value)


def _upward(img: np.ndarray, dz: float, pixel: float) -> np.ndarray:
    """Upward continuation by ``dz`` (``e^{-k dz}``), on the mirror-padded image (no wrap-around edges)."""
    p = img.shape[0]
    padded = np.pad(img, p, mode="symmetric")
    k = 2 * np.pi * np.fft.fftfreq(padded.shape[0], d=pixel)
    kk = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    out = np.real(np.fft.ifft2(np.fft.fft2(padded) * np.exp(-kk * dz)))
    return out[p:-p, p:-p]


def _squid_height(instrument: Any, height: float | None) -> float:
    """The upward continuation that brings a map taken at ``height`` to the estimator's height."""
    from ..physics import Range

    setting = instrument.height
    lo, hi = (setting.low, setting.high) if isinstance(setting, Range) else (setting, setting)
    if height is None:
        logger.warning("no SQUID height given: the map is taken to be at the estimator's height %s", setting)
        return 0.0
    if height > hi * (1 + 1e-6) + 1e-9:
        raise ValueError(f"height={height:g}: the estimator was trained at height {setting}; a map taken higher "
                         f"cannot be continued down stably (allowed: height <= {hi:g})")
    return max(0.0, lo - height)


def _decoration_scale(img: np.ndarray, instrument: Any, pixel: float, scales: Any) -> np.ndarray:
    """Offset to the background (2nd percentile) and scale so the median peak is one blob's peak."""
    from ..diagnostics import detect_vortices
    from ..physics import Range

    img = img - np.percentile(img, 2)
    pos, _ = detect_vortices(img, scales)
    if len(pos) == 0:
        raise ValueError("the decoration image shows no vortex peak to scale by (is it inverted or empty?)")
    idx = np.minimum((pos / pixel).astype(int), img.shape[0] - 1)
    peak = float(np.median(img[idx[:, 0], idx[:, 1]]))
    w = instrument.blob.low + 0.5 * (instrument.blob.high - instrument.blob.low) if isinstance(
        instrument.blob, Range) else float(instrument.blob)
    one = (w * math.sqrt(2 * math.pi) / pixel * math.erf(pixel / (2 * math.sqrt(2) * w))) ** 2
    return img * (one / peak)


def map_to_observation(
    image: np.ndarray,
    simulator: Any,
    *,
    pixel_size: float | None = None,
    field_of_view: float | None = None,
    height: float | None = None,
) -> tuple[Any, ImageMapping]:
    """Map a 2-D image onto the estimator's observation grid and units (module docstring).

    Args:
        image: ``(H, W)`` image (values as measured).
        simulator: The estimator's forward model (``load_estimator(...).simulator``).
        pixel_size: Side of one (square) pixel, model length units.
        field_of_view: Side of the (square) image, model length units; give it or ``pixel_size``
            (both: they must agree within 1 %).
        height: Height of a SQUID map above the surface (SQUID estimators only).

    Returns:
        ``(x_o, mapping)``: the float32 ``(C, H, W)`` torch observation and an :class:`ImageMapping`.

    Raises:
        ValueError: Naming the bad value and the allowed range: no or inconsistent size metadata,
            NaN/inf pixels, a constant image, too few pixels, a field of view smaller than a
            vortex spacing or than the estimator's window, a SQUID height above the estimator's,
            metadata that does not apply, or an estimator reading several channels.
    """
    import torch

    from ..diagnostics import ImageScales

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"the image must be 2-D (H, W), got shape {img.shape}; choose a channel")
    bad = ~np.isfinite(img)
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise ValueError(f"the image has {int(bad.sum())} NaN/inf pixels (first at row {i}, column {j}); "
                         "fill or crop them away before inference")
    if min(img.shape) < MIN_PIXELS:
        raise ValueError(f"too few pixels: the image is {img.shape[0]}x{img.shape[1]}; at least "
                         f"{MIN_PIXELS}x{MIN_PIXELS} are needed")
    if not img.std() > 0:
        raise ValueError("the image is constant: there is nothing to infer from")
    obs = simulator.observation
    C, P, _ = simulator.x_shape
    if C != 1:
        raise ValueError(f"the estimator reads {C} channels {tuple(simulator.channels)}; a single image maps onto "
                         "one-channel estimators only")
    pixel_size = _check_positive("pixel_size", pixel_size)
    field_of_view = _check_positive("field_of_view", field_of_view)
    height = _check_positive("height", height)
    if pixel_size is None and field_of_view is None:
        raise ValueError("the image's size is unknown: give pixel_size (--pixel-size) or field_of_view "
                         "(--field-of-view), in model length units")
    if pixel_size is None:
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"field_of_view is ambiguous for a {img.shape[0]}x{img.shape[1]} image: give pixel_size")
        pixel_size = field_of_view / img.shape[0]
    elif field_of_view is not None and abs(field_of_view - pixel_size * max(img.shape)) > 0.01 * field_of_view:
        raise ValueError(f"pixel_size={pixel_size:g} x {max(img.shape)} pixels = {pixel_size * max(img.shape):g} "
                         f"disagrees with field_of_view={field_of_view:g}: give one of them")
    if height is not None and obs.name != "squid":
        raise ValueError(f"height={height:g} applies to SQUID maps; this estimator reads {obs.name} images")
    sides = (img.shape[0] * pixel_size, img.shape[1] * pixel_size)
    b_min = _lowest_field(simulator)
    spacing = math.sqrt(4 * math.pi / (math.sqrt(3) * b_min))
    if min(sides) < spacing:
        raise ValueError(f"the field of view {sides[0]:g} x {sides[1]:g} is smaller than a vortex spacing "
                         f"(a = {spacing:.3g} at the prior's lowest field B = {b_min:g}): it may hold no vortex; "
                         f"a side of at least {spacing:.3g} is needed")
    x0, x1, _, _ = obs.extent(simulator.config)
    window = x1 - x0
    if min(sides) < window * (1 - 1e-6):
        raise ValueError(f"the field of view {sides[0]:g} x {sides[1]:g} is smaller than the estimator's window "
                         f"{window:g} ({P} pixels of {window / P:g}); the estimator reads images of that size only: "
                         f"image a field of view >= {window:g}, or train an estimator whose instrument has "
                         f"field_of_view <= {min(sides):g}")
    upsampling = pixel_size / (window / P)
    if upsampling > MAX_UPSAMPLING * (1 + 1e-6):
        raise ValueError(f"too few pixels: the window of side {window:g} holds {window / pixel_size:.3g} pixels of "
                         f"{pixel_size:g}; the estimator reads {P} pixels of {window / P:g} and needs at least "
                         f"{P / MAX_UPSAMPLING:.3g} (a pixel_size <= {MAX_UPSAMPLING * window / P:g})")
    origin = ((sides[0] - window) / 2, (sides[1] - window) / 2)
    rx = _area_weights(img.shape[0], pixel_size, origin[0], window, P)
    ry = _area_weights(img.shape[1], pixel_size, origin[1], window, P)
    out = rx @ img @ ry.T
    pixel_out = window / P
    dz = 0.0
    if obs.name == "stm" or (obs.name == "squid" and obs.standardise):
        if obs.name == "squid":
            dz = _squid_height(obs, height)
            out = _upward(out, dz, pixel_out) if dz > 0 else out
        out, units = _standardise(out), "standardised (zero mean, unit variance), as the instrument reports"
    elif obs.name == "squid":
        dz = _squid_height(obs, height)
        out = _upward(out, dz, pixel_out) if dz > 0 else out
        units = "flux quanta per unit area (B/2π), as given"
    elif obs.name == "decoration":
        out = _decoration_scale(out, obs, pixel_out, ImageScales.of(simulator))
        units = "background 0, median vortex peak = one blob's peak"
    else:
        logger.warning("the estimator reads the ideal %s channel in the model's units: the image is taken as it is",
                       simulator.channels[0])
        units = "as given (model units of the ideal observation)"
    if dz > 0:
        logger.info("SQUID map continued upward by %g to the estimator's height", dz)
    mapping = ImageMapping(
        input_shape=(int(img.shape[0]), int(img.shape[1])),
        pixel_size=float(pixel_size),
        window=float(window),
        window_origin=(float(origin[0]), float(origin[1])),
        output_pixels=int(P),
        upsampling=float(upsampling),
        instrument=str(obs.name),
        units=units,
        height_continued=float(dz),
    )
    return torch.from_numpy(out[None].astype(np.float32)), mapping


# ------------------------------------------------------------------------------------ inference
@dataclasses.dataclass(frozen=True, eq=False)
class ImageInference:
    """Result of :func:`infer_image`.

    Attributes:
        names: Parameter names.
        theta_map: MAP (grid cell of highest density), ``(d,)``.
        theta_mean: Posterior mean, ``(d,)``.
        theta_std: Posterior standard deviation, ``(d,)``.
        intervals: ``{level: (d, 2)}`` equal-tailed marginal credible intervals for :data:`LEVELS`.
        mapping: How the image was mapped (:class:`ImageMapping`).
        image: The image as read ``(H, W)``.
        x_o: The observation on the estimator's grid ``(C, H, W)``.
        posterior: The :class:`~glsbi_plugin.inference.GridPosterior` with ``x_o`` as default x.
        misspecification: The check against the training bank, or None if not run.
        ppc: The posterior predictive check, or None if not run.
        source: Where the image came from (a path, or ``"array"``).
    """

    names: tuple[str, ...]
    theta_map: np.ndarray
    theta_mean: np.ndarray
    theta_std: np.ndarray
    intervals: dict[float, np.ndarray]
    mapping: ImageMapping
    image: np.ndarray
    x_o: np.ndarray
    posterior: Any
    misspecification: Any = None
    ppc: Any = None
    source: str = "array"

    def summary(self) -> str:
        """Lines for a terminal: per parameter MAP, mean and intervals; the verdict; the PPC p-values."""
        recal = getattr(self.posterior, "recalibration", None)
        how = " (recalibrated marginals: recalibration.json)" if recal is not None else ""
        lines = [f"posterior of {', '.join(self.names)} for {self.source}{how}:"]
        for k, name in enumerate(self.names):
            iv = "  ".join(f"{int(round(lv * 100))}% [{self.intervals[lv][k, 0]:.4g}, {self.intervals[lv][k, 1]:.4g}]"
                           for lv in LEVELS)
            lines.append(f"  {name:<6} MAP {self.theta_map[k]:.4g}   mean {self.theta_mean[k]:.4g} "
                         f"± {self.theta_std[k]:.2g}   {iv}")
        if self.misspecification is not None:
            m = self.misspecification
            lines.append(f"misspecification check (p_embedding = {m.p_embedding:.3f}, p_statistics = "
                         f"{m.p_statistics:.3f}, {m.num_reference} training simulations): {m.verdict}")
        if self.ppc is not None:
            lines.append(self.ppc.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results (not the arrays of the images)."""
        return {
            "source": self.source,
            "names": list(self.names),
            "map": self.theta_map.tolist(),
            "mean": self.theta_mean.tolist(),
            "std": self.theta_std.tolist(),
            "intervals": {f"{int(round(lv * 100))}": v.tolist() for lv, v in self.intervals.items()},
            "recalibration": None if getattr(self.posterior, "recalibration", None) is None
            else self.posterior.recalibration.to_dict(),
            "mapping": self.mapping.to_dict(),
            "misspecification": None if self.misspecification is None else self.misspecification.to_dict(),
            "ppc": None if self.ppc is None else self.ppc.to_dict(),
        }

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def plot(self, path: str | Path, *, dpi: int = 60) -> Path:
        """The figure: the image as read, the mapped observation, the joint posterior and the marginals."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        post = self.posterior
        d = len(self.names)
        fig = Figure(figsize=(3.3 * (2 + (d == 2) + d), 3.4), constrained_layout=True)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 + (d == 2) + d)
        for a, im, t in ((axes[0], self.image, f"image ({self.image.shape[0]}x{self.image.shape[1]})"),
                         (axes[1], self.x_o[0], f"on the estimator's grid ({self.mapping.instrument})")):
            a.imshow(im.T, origin="lower", cmap="magma")
            a.set_title(t, fontsize=9)
            a.set_xticks([])
            a.set_yticks([])
        lo, hi = post.low.numpy(), post.high.numpy()
        col = 2
        if d == 2:
            dens = post.grid_log_prob().exp().reshape(post.resolution).numpy()
            a = axes[2]
            a.imshow(dens.T, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", cmap="viridis")
            a.plot(*self.theta_map, "wx", ms=8, label="MAP")
            a.plot(*self.theta_mean, "w+", ms=8, label="mean")
            a.set_xlabel(self.names[0])
            a.set_ylabel(self.names[1])
            a.legend(fontsize=7)
            a.set_title("p(θ | image)", fontsize=9)
            col = 3
        for k, (axis, dens_k) in enumerate(post.marginals()):
            a = axes[col + k]
            a.plot(axis.numpy(), dens_k.numpy(), color="k")
            for lv, alpha in zip(LEVELS, (0.35, 0.15), strict=True):
                a.axvspan(*self.intervals[lv][k], alpha=alpha, color="C0", label=f"{int(round(lv * 100))}%")
            a.axvline(self.theta_map[k], color="C3", lw=1, label="MAP")
            a.set_xlabel(self.names[k])
            a.set_xlim(lo[k], hi[k])
            a.legend(fontsize=7)
            a.set_title(f"marginal of {self.names[k]}", fontsize=9)
        m = self.misspecification
        title = "" if m is None else ("MISSPECIFIED: " if m.misspecified else "consistent with training: ") + \
            f"p = {m.p_value:.3g}"
        flagged = m is not None and m.misspecified
        fig.suptitle(f"{Path(self.source).name}   {title}", fontsize=10, color="C3" if flagged else "k")
        path = Path(path)
        fig.savefig(path, dpi=dpi)
        return path


def _reference_images(bank: str | Path, simulator: Any) -> Any:
    """The training split of a bank of the estimator's forward model (all filled rows if none)."""
    from ..store import SimulationBank

    try:
        b = SimulationBank.open(bank, simulator, read_only=True)
    except ValueError as e:
        raise ValueError(f"{bank} is not a bank of the estimator's forward model: {e}") from None
    _, x = b.to_torch("train")
    if len(x) < 20:
        _, x = b.to_torch()
    return x


def infer_image(
    image: str | Path | np.ndarray,
    estimator: str | Path | Any,
    *,
    pixel_size: float | None = None,
    field_of_view: float | None = None,
    height: float | None = None,
    channel: int | str | None = None,
    bank: str | Path | None = "auto",
    ppc: bool = False,
    ppc_n: int = 100,
    out: str | Path | None = None,
    resolution: int | None = None,
    n_shuffle: int = 1000,
    seed: int = 0,
) -> ImageInference:
    r"""A posterior for one vortex image: read, map, infer, check (module docstring).

    Args:
        image: A ``.npy``/``.png``/``.tif``/``.tiff`` path or a 2-D array.
        estimator: A path written by ``glsbi quickstart`` (``estimator.pt``; the
            ``recalibration.json`` beside it is applied, :func:`~glsbi_plugin.checkpoint.recalibration_for`)
            or a loaded :class:`~glsbi_plugin.checkpoint.EstimatorCheckpoint` (used as it is).
        pixel_size: The image's pixel size (model length units); or give ``field_of_view``.
        field_of_view: The side of a square image (model length units).
        height: A SQUID map's height above the surface.
        channel: The channel of a colour or multi-channel image (index, or ``r``/``g``/``b``).
        bank: The training bank for the misspecification check: a path; ``"auto"`` (default)
            the ``bank.zarr`` beside an estimator path if there is one; ``None`` skips the check.
        ppc: Run the posterior predictive check.
        ppc_n: Its number of simulations (>= 10).
        out: Directory for ``inference.png``, ``inference.json`` (and ``ppc.png``); None writes nothing.
        resolution: Grid posterior cells per axis (default that of ``GridPosterior``).
        n_shuffle: Permutations of the misspecification test.
        seed: Seed of the misspecification test and of the predictive check.

    Returns:
        An :class:`ImageInference`: ``theta_map``, ``theta_mean``, ``intervals``,
        ``misspecification``, ``ppc``; ``summary()`` for a terminal.

    Raises:
        ValueError: A file that cannot be read as an image, an image that cannot be mapped
            (:func:`map_to_observation`), a bank of another forward model, or bad options.
        OSError: If the estimator or the image cannot be read.
    """
    from ..checkpoint import EstimatorCheckpoint, load_estimator, recalibration_for
    from ..diagnostics import ImageScales, misspecification_check, posterior_predictive_check
    from ..inference import GridPosterior

    if isinstance(ppc_n, bool) or not isinstance(ppc_n, (int, np.integer)) or (ppc and ppc_n < 10):
        raise ValueError(f"ppc_n={ppc_n!r}: must be an integer >= 10")
    ckpt = estimator if isinstance(estimator, EstimatorCheckpoint) else load_estimator(estimator)
    if isinstance(image, (str, Path)):
        source, img = str(image), read_image(image, channel=channel)
    else:
        source, img = "array", _select_channel(np.asarray(image, dtype=np.float64), channel, "the array")
    x_o, mapping = map_to_observation(img, ckpt.simulator, pixel_size=pixel_size, field_of_view=field_of_view,
                                      height=height)
    recalibration = recalibration_for(estimator) if isinstance(estimator, (str, Path)) else None
    posterior = GridPosterior(ckpt.estimator, ckpt.prior, resolution=resolution, x_o=x_o, recalibration=recalibration)
    mean, std = (v.numpy() for v in posterior.marginal_moments())
    intervals = {lv: posterior.credible_interval(lv).numpy().astype(np.float64) for lv in LEVELS}
    if isinstance(bank, str) and bank == "auto":
        near = Path(estimator).parent / "bank.zarr" if isinstance(estimator, (str, Path)) else None
        bank = near if near is not None and near.exists() else None
        if bank is None:
            logger.warning("no bank.zarr beside the estimator: the misspecification check is skipped (give bank=...)")
    scales = ImageScales.of(ckpt.simulator)
    check = None
    if bank is not None:
        reference = _reference_images(bank, ckpt.simulator)
        check = misspecification_check(ckpt.estimator, x_o, reference, scales, n_shuffle=n_shuffle, seed=seed)
    predictive = posterior_predictive_check(posterior, x_o, ckpt.simulator, n=int(ppc_n), seed=seed,
                                            scales=scales) if ppc else None
    result = ImageInference(
        names=tuple(ckpt.simulator.names),
        theta_map=posterior.map().numpy().astype(np.float64),
        theta_mean=mean,
        theta_std=std,
        intervals=intervals,
        mapping=mapping,
        image=img,
        x_o=x_o.numpy(),
        posterior=posterior,
        misspecification=check,
        ppc=predictive,
        source=source,
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.to_json(out / "inference.json")
        result.plot(out / "inference.png")
        if predictive is not None:
            predictive.plot(out / "ppc.png")
    return result
