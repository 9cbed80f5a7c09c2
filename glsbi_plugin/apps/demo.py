r"""Interactive virtual lab (``glsbi demo``): move η and B, watch the vortices and the posterior.

Two layers, so that the physics can be tested without a window:

- :class:`DemoModel` (no widgets): simulates the field-cooled quench for θ = (η, B) and a seed and
  returns a :class:`Frame`: the images :math:`|\psi_1|^2`, :math:`|\psi_2|^2`, :math:`B_z`, the
  winding maps, the flux quanta :math:`N_\phi = \mathrm{round}(B L_xL_y/2\pi)`, the length scales
  and regime (:func:`~glsbi_plugin.physics.length_scales`) and, given a trained estimator, the
  grid posterior :math:`p(\eta, B \mid x)` of the frame's observation x.
- :class:`DemoFigure`: a matplotlib figure with sliders for η and B (the prior's box), a seed box
  and a "new seed" button, drawing the model's frames. It uses the figure it is given (an
  interactive ``pyplot`` figure from the CLI) or builds an Agg figure without touching pyplot.

The observation x is exactly the sbi simulator's: the same forward model
(:func:`glsbi_plugin.physics.forward` of ``jax.random.key(seed)``), config, fixed parameters,
channels and measurement as the estimator's training set
(:func:`glsbi_plugin.checkpoint.load_estimator`), so the posterior panel shows what inference would
say about this very image.

Example:
    >>> from glsbi_plugin.apps.demo import DemoFigure, DemoModel
    >>> from glsbi_plugin.physics import TDGLConfig
    >>> model = DemoModel(TDGLConfig(shape=(16, 16), steps=50), bounds={"field": (0.1, 0.4)})
    >>> frame = model.frame(0.1, 0.3, seed=0)
    >>> frame.n_phi, frame.net_winding
    (3, (3, 3))
    >>> demo = DemoFigure(model, eta=0.1, field=0.3)       # an Agg figure
    >>> demo.eta_slider.set_val(0.2)                       # re-simulates, redraws
    >>> round(demo.frame.eta, 3)
    0.2
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ..physics import (
    AnyObservation,
    LengthScales,
    Measurement,
    Observation,
    State,
    TDGLConfig,
    TDGLParams,
    check_params,
    densities,
    field_map,
    flux_quanta,
    forward,
    length_scales,
    presets,
    winding,
    winding_positions,
)
from ..sbi_simulator import DEFAULT_BOUNDS
from ._figures import LENGTH_LABEL, channel_label, flux_bin

if TYPE_CHECKING:
    from ..inference import GridPosterior

__all__ = ["DemoFigure", "DemoModel", "Frame", "PosteriorView", "describe_frame"]

logger = logging.getLogger(__name__)

#: θ of the demo, in slider order.
NAMES = ("eta", "field")
#: Largest seed (seeds are non-negative 31-bit integers, as in the sbi simulator).
MAX_SEED = 2**31 - 1
#: Credible level of the intervals shown with the posterior.
LEVEL = 0.9


@dataclasses.dataclass(frozen=True, eq=False)
class PosteriorView:
    r"""The grid posterior :math:`p(\eta, B \mid x)` of one frame.

    Attributes:
        density: Normalised density at the grid's cell centres, shape ``(n_eta, n_field)``.
        extent: ``(eta_low, eta_high, field_low, field_high)`` of the grid (the prior's box).
        theta_map: The cell centre of highest density.
        interval: Equal-tailed marginal :data:`LEVEL` credible intervals, shape ``(2, 2)``.
        infer_ms: Wall time of embedding x and evaluating the grid, in milliseconds.
    """

    density: np.ndarray
    extent: tuple[float, float, float, float]
    theta_map: tuple[float, float]
    interval: np.ndarray
    infer_ms: float


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    r"""Everything the demo shows for one (η, B, seed).

    Attributes:
        eta, field, seed: The simulated θ = (η, B) and seed.
        state: The final :class:`~glsbi_plugin.physics.State`.
        params: The full parameter set simulated.
        rho: Densities :math:`|\psi_a|^2`, shape ``(2, nx, ny)``.
        bz: Field map :math:`B_z = \Phi/h^2` on plaquettes, shape ``(nx, ny)``.
        winding: Masked per-plaquette windings (``physics.winding``), int, ``(2, nx, ny)``.
        net_winding: Unmasked total winding per band (equals :math:`N_\phi` on the torus).
        n_phi: Flux quanta :math:`N_\phi = \mathrm{round}(B L_x L_y / 2\pi)` held by the torus.
        flux: :math:`\sum B_z h^2 / 2\pi` of the field map (:math:`N_\phi` to float rounding).
        scales: Length scales and regime of ``params``.
        x: The observation (``(C, nx, ny)`` float32, ``nx/f`` after down-sampling): the sbi
            simulator's image of this state, the posterior's input.
        posterior: The posterior of ``x`` or ``None``.
        simulate_ms: Wall time of the simulation (and observables), in milliseconds.
    """

    eta: float
    field: float
    seed: int
    state: State
    params: TDGLParams
    rho: np.ndarray
    bz: np.ndarray
    winding: np.ndarray
    net_winding: tuple[int, int]
    n_phi: int
    flux: float
    scales: LengthScales
    x: np.ndarray
    posterior: PosteriorView | None
    simulate_ms: float

    @property
    def vortex_counts(self) -> tuple[int, int]:
        """Vortices per band: :math:`\\sum |n|` of the masked winding map (antivortices count too)."""
        return tuple(int(np.abs(w).sum()) for w in self.winding)  # type: ignore[return-value]


@functools.partial(jax.jit, static_argnames=("cfg", "observation"))
def _compute(params: TDGLParams, key: jax.Array, cfg: TDGLConfig, observation: AnyObservation) -> dict[str, Any]:
    """The forward model and the observables of its final state (one compiled program per config;
    θ and seed are traced)."""
    state, x = forward(params, key, cfg, observation, return_state=True)
    p = params.astype(cfg.real_dtype)
    return {
        "state": state,
        "rho": densities(state),
        "bz": field_map(state, p, cfg),
        "winding": winding(state, p, cfg),
        "net_winding": winding(state, p, cfg, threshold=0.0).sum(axis=(1, 2)),
        "x": x,
    }


class DemoModel:
    r"""The demo's logic: θ = (η, B) and a seed → a :class:`Frame` (no widgets).

    Args:
        config: Numerics; a two-band torus (``boundary="periodic"``, ``components=2``).
        base: Fixed parameters; default ``presets.type15()``. η and B are replaced per frame.
        bounds: Slider ranges ``{"eta": (lo, hi), "field": (lo, hi)}``; missing names take
            :data:`glsbi_plugin.sbi_simulator.DEFAULT_BOUNDS`. With a posterior: its prior's box.
        channels: Channels of the ideal observation x (:attr:`Frame.x`; the posterior's simulator's).
        measurement: Measurement model of the ideal observation, or ``None``.
        observation: What x is instead, e.g. the posterior's instrument (``STM(...)``); overrides
            ``channels`` and ``measurement``.
        posterior: A :class:`~glsbi_plugin.inference.GridPosterior` over θ = (η, B) trained on
            images of this forward model, or ``None`` (no posterior panel).

    Raises:
        ValueError: A config that is not a two-band torus, bounds the solver cannot run at their
            corners (e.g. :math:`N_\phi = 0`), or a posterior whose box or image shape does not fit.
    """

    def __init__(
        self,
        config: TDGLConfig,
        *,
        base: TDGLParams | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        channels: Sequence[str] = ("rho1", "rho2"),
        measurement: Measurement | None = None,
        observation: AnyObservation | None = None,
        posterior: GridPosterior | None = None,
    ) -> None:
        if not config.torus or config.components != 2:
            raise ValueError(
                f"the demo needs a two-band torus (boundary='periodic', components=2), got "
                f"boundary={config.boundary!r}, components={config.components}"
            )
        self.config = config
        self.base = base if base is not None else presets.type15()
        given = dict(bounds or {})
        unknown = sorted(set(given) - set(NAMES))
        if unknown:
            raise ValueError(f"bounds for {unknown}: the demo's θ is {NAMES}")
        self.bounds: dict[str, tuple[float, float]] = {}
        for name in NAMES:
            lo, hi = (float(v) for v in given.get(name, DEFAULT_BOUNDS[name]))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds for {name!r} must be finite with low < high, got ({lo}, {hi})")
            self.bounds[name] = (lo, hi)
        # the whole box must be simulable: check its four corners at once (a batch)
        corners = np.array([(eta, field) for eta in self.bounds["eta"] for field in self.bounds["field"]])
        check_params(self.base.replace(eta=corners[:, 0], field=corners[:, 1]), config)
        if observation is None:
            observation = Observation(channels=tuple(channels), measurement=measurement)
        self.observation = observation
        self.observation.check(config)
        self.channels = self.observation.channel_names
        self.measurement = getattr(observation, "measurement", None)
        self.posterior = posterior
        if posterior is not None:
            self._check_posterior(posterior)
            self._warm_up(posterior)
        # λ, ξ±, Hc2 and the regime do not depend on B: remember them per η (dragging B is cheaper)
        self._scales = functools.lru_cache(maxsize=256)(self._scales_at)

    def _scales_at(self, eta: float) -> LengthScales:
        return length_scales(self.base.replace(eta=eta))

    def _check_posterior(self, posterior: GridPosterior) -> None:
        box = tuple(zip(posterior.low.tolist(), posterior.high.tolist(), strict=True))
        want = tuple(self.bounds[n] for n in NAMES)
        if len(box) != 2 or not np.allclose(box, want, rtol=1e-6, atol=1e-7):
            raise ValueError(f"the posterior's prior box {box} does not match the demo's (η, B) bounds {want}")
        x_shape = self.observation.x_shape(self.config)
        if tuple(posterior.x_shape) != x_shape:
            raise ValueError(
                f"the posterior expects images of shape {tuple(posterior.x_shape)}, the demo makes {x_shape}"
            )

    @staticmethod
    def _warm_up(posterior: GridPosterior) -> None:
        """Evaluate once on a blank image: torch's first call pays one-off set-up costs (hundreds of
        ms on a CPU), which would otherwise show as the first frame's inference time."""
        import torch

        posterior.grid_log_prob(torch.zeros(tuple(posterior.x_shape)))

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, resolution: int = 100) -> DemoModel:
        """The demo of an estimator saved by :func:`glsbi_plugin.checkpoint.save_estimator`.

        The forward model (config, fixed parameters, channels, measurement) and the slider ranges
        (the prior's box) are those of the estimator's training set; the main job's
        ``recalibration.json`` beside it is applied (:func:`glsbi_plugin.checkpoint.recalibration_for`).

        Args:
            path: The checkpoint, e.g. ``runs/quickstart/estimator.pt``.
            resolution: Grid cells per axis of the posterior.

        Raises:
            OSError: If ``path`` cannot be read.
            ValueError: If it is not a checkpoint, or its θ is not (η, B).
        """
        from ..checkpoint import load_estimator, recalibration_for
        from ..inference import GridPosterior

        ckpt = load_estimator(path)
        sim = ckpt.simulator
        if tuple(sim.names) != NAMES:
            raise ValueError(f"{path}: the demo needs a posterior over θ = {NAMES}, this one is over {sim.names}")
        posterior = GridPosterior(ckpt.estimator, ckpt.prior, resolution=resolution,
                                  recalibration=recalibration_for(path))
        return cls(
            sim.config,
            base=sim.base,
            bounds=dict(zip(sim.names, zip(sim.low, sim.high, strict=True), strict=True)),
            observation=sim.observation,
            posterior=posterior,
        )

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent of the images: sites at ``i h``, plaquettes (vortices) at ``(i + ½) h``."""
        h, (nx, ny) = self.config.h, self.config.shape
        return (-h / 2, nx * h - h / 2, -h / 2, ny * h - h / 2)

    def default_theta(self) -> tuple[float, float]:
        """The centre of the box."""
        return tuple(0.5 * (lo + hi) for lo, hi in (self.bounds[n] for n in NAMES))  # type: ignore[return-value]

    def frame(self, eta: float, field: float, seed: int = 0) -> Frame:
        r"""Simulate θ = (η, B) with ``seed`` and evaluate everything the figure shows.

        Args:
            eta: Josephson coupling η inside ``bounds["eta"]``.
            field: Mean induction B inside ``bounds["field"]``.
            seed: Integer in ``[0, 2**31 - 1]``; same θ and seed give the same frame.

        Returns:
            The :class:`Frame`.

        Raises:
            ValueError: θ outside the bounds or a bad seed.
        """
        theta = {"eta": float(eta), "field": float(field)}
        for name, value in theta.items():
            lo, hi = self.bounds[name]
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value:g} is outside the demo's range [{lo:g}, {hi:g}]")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed={seed!r}: must be an integer in [0, {MAX_SEED}]")
        params = self.base.replace(**theta)
        t0 = time.perf_counter()
        out = jax.device_get(_compute(params, jax.random.key(int(seed)), self.config, self.observation))
        simulate_ms = 1e3 * (time.perf_counter() - t0)
        bz = np.asarray(out["bz"], np.float64)
        x = np.asarray(out["x"])
        frame = Frame(
            eta=theta["eta"],
            field=theta["field"],
            seed=int(seed),
            state=out["state"],
            params=params,
            rho=np.asarray(out["rho"]),
            bz=bz,
            winding=np.asarray(out["winding"]),
            net_winding=tuple(int(v) for v in out["net_winding"]),  # type: ignore[arg-type]
            n_phi=int(flux_quanta(theta["field"], self.config)),
            flux=float(bz.sum() * self.config.h**2 / (2 * np.pi)),
            scales=self._scales(theta["eta"]),
            x=x,
            posterior=self._infer(x) if self.posterior is not None else None,
            simulate_ms=simulate_ms,
        )
        logger.debug("frame η=%.4f B=%.4f seed %d: %.0f ms", frame.eta, frame.field, frame.seed, simulate_ms)
        return frame

    def _infer(self, x: np.ndarray) -> PosteriorView:
        import torch

        post = self.posterior
        x_t = torch.tensor(x, dtype=torch.float32)  # a copy: device_get's arrays are read-only
        t0 = time.perf_counter()
        density = post.grid_log_prob(x_t).exp().reshape(post.resolution)  # one embedding, memoised
        theta_map = post.map(x_t)
        interval = post.credible_interval(LEVEL, x_t)
        infer_ms = 1e3 * (time.perf_counter() - t0)
        lo, hi = post.low.tolist(), post.high.tolist()
        return PosteriorView(
            density=density.cpu().numpy(),
            extent=(lo[0], hi[0], lo[1], hi[1]),
            theta_map=(float(theta_map[0]), float(theta_map[1])),
            interval=interval.numpy(),
            infer_ms=infer_ms,
        )


def describe_frame(frame: Frame, config: TDGLConfig) -> str:
    """The info panel's text: θ, flux, vortex counts, regime and length scales, timings."""
    s = frame.scales
    n1, n2 = frame.vortex_counts
    area = config.shape[0] * config.shape[1] * config.h**2
    lines = [
        f"η = {frame.eta:.4f}   B = {frame.field:.4f}   seed {frame.seed}",
        f"N_phi = {frame.n_phi} flux quanta (B on the torus = {2 * np.pi * frame.n_phi / area:.4f})",
        f"vortices: ψ1 {n1}, ψ2 {n2}   (net winding {frame.net_winding[0]}, {frame.net_winding[1]})",
        f"regime {s.regime}:  λ = {s.lam:.3f}   ξ- = {s.xi_minus:.3f}   ξ+ = {s.xi_plus:.3f}",
        f"κ = λ/ξ- = {s.kappa:.3f}   Hc2 = {s.hc2:.3f}   t = {config.t_final:g}, {config.shape[0]}x{config.shape[1]}",
        f"simulated in {frame.simulate_ms:.0f} ms",
    ]
    post = frame.posterior
    if post is not None:
        (e_lo, e_hi), (b_lo, b_hi) = post.interval
        lines += [
            f"posterior in {post.infer_ms:.1f} ms: MAP η = {post.theta_map[0]:.3f}, B = {post.theta_map[1]:.3f}",
            f"{LEVEL:.0%} intervals: η [{e_lo:.3f}, {e_hi:.3f}]   B [{b_lo:.3f}, {b_hi:.3f}]",
        ]
    return "\n".join(lines)


class _HeadlessCanvas(FigureCanvasAgg):
    """An Agg canvas that renders only when asked (``draw``, ``savefig``), not on every widget change.

    A plain Agg canvas renders the whole figure in ``draw_idle`` (GUI canvases defer it to the
    event loop): a headless demo would render after every slider move for nobody to see.
    """

    def draw_idle(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: the figure is rendered when it is saved or drawn."""


class DemoFigure:
    r"""The demo's figure: images, info, optional posterior panel, sliders, seed box, button.

    Moving a slider re-simulates (while a slider is dragged with the mouse, once on release);
    ``set_val`` on a slider re-simulates at once. The seed box takes an integer; "new seed" adds
    one to it. Invalid input is reported in the status line, not raised.

    Args:
        model: The :class:`DemoModel`.
        eta, field: Initial θ; default the centre of the box.
        seed: Initial seed.
        figure: A figure to draw into (e.g. ``plt.figure(figsize=DemoFigure.figsize(model))`` for
            a window). ``None``: a new Agg figure (headless, rendered when saved; pyplot is not
            used).

    Attributes:
        figure: The matplotlib figure.
        frame: The frame on display.
        eta_slider, field_slider: The sliders (``matplotlib.widgets.Slider``).
        seed_box: The seed ``TextBox``; resimulate_button: the "new seed" ``Button``.
        images: ``{"rho1", "rho2", "bz"}`` → ``AxesImage`` (arrays shown transposed, origin lower).
        posterior_image: ``AxesImage`` of the posterior density, or ``None``.
        truth_marker, map_marker: ``Line2D`` markers of the true θ and the MAP (or ``None``).
        info, status: ``Text`` artists (info panel, status line).
    """

    def __init__(
        self,
        model: DemoModel,
        *,
        eta: float | None = None,
        field: float | None = None,
        seed: int = 0,
        figure: Any | None = None,
    ) -> None:
        from matplotlib.widgets import Button, Slider, TextBox

        self.model = model
        eta0, field0 = model.default_theta()
        eta = eta0 if eta is None else float(eta)
        field = field0 if field is None else float(field)
        self.frame = model.frame(eta, field, seed)  # raises on bad input, before any drawing
        self._seed = int(seed)
        self._pending = False
        if figure is None:
            from matplotlib.figure import Figure

            figure = Figure(figsize=self.figsize(model))
            _HeadlessCanvas(figure)
        self.figure = fig = figure

        with_post = model.posterior is not None
        show_x = not isinstance(model.observation, Observation)  # an instrument: draw what the posterior reads
        ncols = 3 + show_x + with_post
        wspace = 0.35 if ncols < 5 else 0.5
        grid = fig.add_gridspec(1, ncols, left=0.04, right=0.94, top=0.90, bottom=0.40, wspace=wspace)
        self.images = {}
        self._markers = {}
        titles = {"rho1": "|ψ1|²", "rho2": "|ψ2|²", "bz": "B_z"}
        length = LENGTH_LABEL.format(h=model.config.h)
        for k, (name, cmap) in enumerate((("rho1", "magma"), ("rho2", "magma"), ("bz", "viridis"))):
            ax = fig.add_subplot(grid[0, k])
            im = ax.imshow(np.zeros(model.config.shape[::-1]), origin="lower", extent=model.extent, cmap=cmap)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(channel_label(name), fontsize=7)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(length, fontsize=7)
            ax.set_title(titles[name], fontsize=10)
            self.images[name] = im
            if name != "bz":
                self._markers[name] = ax.scatter(
                    [], [], s=28, marker="o" if name == "rho1" else "s", facecolors="none", linewidths=1.1
                )
        if show_x:
            ax = fig.add_subplot(grid[0, 3])
            _, px, py = model.observation.x_shape(model.config)
            im = ax.imshow(np.zeros((py, px)), origin="lower", extent=model.observation.extent(model.config),
                           cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(
                channel_label(model.observation.channel_names[0], model.observation), fontsize=7)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(length, fontsize=7)
            ax.set_title(f"observed: {model.observation.channel_names[0]}", fontsize=10)
            self.images["x"] = im
        self.posterior_image = self.truth_marker = self.map_marker = None
        if with_post:
            ax = fig.add_subplot(grid[0, ncols - 1])
            (e_lo, e_hi), (b_lo, b_hi) = model.bounds["eta"], model.bounds["field"]
            self.posterior_image = ax.imshow(
                np.zeros((2, 2)), origin="lower", extent=(e_lo, e_hi, b_lo, b_hi), aspect="auto", cmap="viridis"
            )
            fig.colorbar(self.posterior_image, ax=ax, fraction=0.046, pad=0.03).set_label("p(η, B | x)", fontsize=7)
            ax.tick_params(labelsize=7)
            # B is quantised on the torus: every B between two dotted lines gives the same N_phi
            _, first, _ = flux_bin(b_lo, model.config.shape, model.config.h)
            quantum = 2 * np.pi / (model.config.shape[0] * model.config.shape[1] * model.config.h**2)
            for edge in np.arange(first, b_hi, quantum):
                if b_lo < edge < b_hi:
                    ax.axhline(edge, color="w", lw=0.6, ls=":", alpha=0.7)
            (self.truth_marker,) = ax.plot([], [], "r*", ms=13, label="true θ")
            (self.map_marker,) = ax.plot([], [], "wx", ms=9, mew=2, label="MAP")
            ax.set_xlabel("η")
            ax.set_ylabel("B  (dotted: flux-quantum bins)")
            ax.legend(loc="best", fontsize=7, framealpha=0.6)
            self._posterior_ax = ax

        self.info = fig.text(0.04, 0.31, "", va="top", ha="left", family="monospace", fontsize=9)
        self.status = fig.text(0.04, 0.02, "", va="bottom", ha="left", fontsize=9, color="0.3")
        (e_lo, e_hi), (b_lo, b_hi) = model.bounds["eta"], model.bounds["field"]
        self.eta_slider = Slider(fig.add_axes((0.62, 0.25, 0.30, 0.04)), "η", e_lo, e_hi, valinit=eta, valfmt="%.4f")
        self.field_slider = Slider(
            fig.add_axes((0.62, 0.18, 0.30, 0.04)), "B", b_lo, b_hi, valinit=field, valfmt="%.4f"
        )
        self.seed_box = TextBox(fig.add_axes((0.62, 0.08, 0.10, 0.05)), "seed ", initial=str(seed))
        self.resimulate_button = Button(fig.add_axes((0.76, 0.08, 0.16, 0.05)), "new seed")
        self.eta_slider.on_changed(self._on_slider)
        self.field_slider.on_changed(self._on_slider)
        self.seed_box.on_submit(self._on_seed)
        self.resimulate_button.on_clicked(self._on_new_seed)
        self._release_cid = fig.canvas.mpl_connect("button_release_event", self._on_release)
        self._show(self.frame)

    @staticmethod
    def figsize(model: DemoModel) -> tuple[float, float]:
        """Figure size in inches for ``model`` (wider with a posterior panel and an instrument's image)."""
        extra = (model.posterior is not None) + (not isinstance(model.observation, Observation))
        return (12.5 + 3.5 * extra, 6.8)

    # -- events -----------------------------------------------------------------------------
    def _on_slider(self, _value: float) -> None:
        if self.eta_slider.drag_active or self.field_slider.drag_active:
            self._pending = True  # dragging: simulate once, on release
            self.status.set_text("release the slider to simulate")
            self.figure.canvas.draw_idle()
            return
        self.refresh()

    def _on_release(self, _event: object) -> None:
        if self._pending:
            self._pending = False
            self.refresh()

    def _on_seed(self, text: str) -> None:
        try:
            seed = int(text.strip())
            if not 0 <= seed <= MAX_SEED:
                raise ValueError
        except ValueError:
            self.status.set_text(f"seed must be an integer in [0, {MAX_SEED}], got {text!r}")
            self.figure.canvas.draw_idle()
            return
        self._seed = seed
        self.refresh()

    def _on_new_seed(self, _event: object) -> None:
        self.seed_box.set_val(str((self._seed + 1) % (MAX_SEED + 1)))  # submits: refresh

    # -- drawing ----------------------------------------------------------------------------
    def refresh(self) -> Frame:
        """Simulate the sliders' θ with the current seed and redraw; returns the new frame."""
        self.status.set_text("simulating ...")
        try:
            frame = self.model.frame(self.eta_slider.val, self.field_slider.val, self._seed)
        except ValueError as e:
            self.status.set_text(f"error: {e}")
            self.figure.canvas.draw_idle()
            return self.frame
        self.frame = frame
        self._show(frame)
        return frame

    def _show(self, frame: Frame) -> None:
        h = self.model.config.h
        if "x" in self.images:  # the instrument's image, first channel
            img = frame.x[0]
            self.images["x"].set_data(img.T)
            lo, hi = float(img.min()), float(img.max())
            self.images["x"].set_clim(lo, hi if hi > lo else lo + 1e-12)
        for name, img in (("rho1", frame.rho[0]), ("rho2", frame.rho[1]), ("bz", frame.bz)):
            im = self.images[name]
            im.set_data(img.T)
            lo, hi = float(img.min()), float(img.max())
            im.set_clim(lo, hi if hi > lo else lo + 1e-12)
        for a, name in enumerate(("rho1", "rho2")):
            v = winding_positions(frame.winding[a], h)
            sc = self._markers[name]
            sc.set_offsets(v[:, :2] if len(v) else np.empty((0, 2)))
            sc.set_edgecolors(["w" if n > 0 else "c" for n in v[:, 2]] if len(v) else "w")
            net = frame.net_winding[a]
            self.images[name].axes.set_title(
                f"|ψ{a + 1}|²: {frame.vortex_counts[a]} vortices (net {net})", fontsize=10
            )
        self.images["bz"].axes.set_title(f"B_z: N_phi = {frame.n_phi} (flux {frame.flux:.2f})", fontsize=10)
        post = frame.posterior
        if post is not None and self.posterior_image is not None:
            self.posterior_image.set_data(post.density.T)
            self.posterior_image.set_extent(post.extent)
            self.posterior_image.set_clim(0.0, float(post.density.max()) or 1.0)
            self.truth_marker.set_data([frame.eta], [frame.field])
            self.map_marker.set_data([post.theta_map[0]], [post.theta_map[1]])
            self._posterior_ax.set_title(f"p(η, B | x) in {post.infer_ms:.1f} ms", fontsize=10)
        self.info.set_text(describe_frame(frame, self.model.config))
        self.status.set_text("drag a slider, type a seed (Enter) or press 'new seed'")
        self.figure.suptitle(
            f"two-band TDGL on a {self.model.config.shape[0]}² torus: {frame.scales.regime}", fontsize=12
        )
        self.figure.canvas.draw_idle()
