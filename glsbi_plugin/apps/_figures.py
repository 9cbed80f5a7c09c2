r"""Figures of the main job (``glsbi quickstart``), drawn on their own Agg canvas (pyplot untouched),
and the labels every image of the applications shares (:func:`channel_label`, :data:`LENGTH_LABEL`).

Units are the model's (``docs/physics.md``): lengths in the unit of the gradient term (the lattice
spacing h is 0.5 of them), the flux quantum :math:`\Phi_0 = 2\pi`, densities :math:`|\psi_a|^2` in
the units where the strong band's bulk density :math:`|\alpha_1|/\beta_1` is 1.

On a torus of :math:`L \times L` sites of spacing h the flux is quantised:
:math:`N_\phi = \mathrm{round}(B (L h)^2 / 2\pi)` vortices per band, so every B in a bin of width
:math:`2\pi/(L h)^2` gives the same physics and the data fix B only to that bin
(:func:`flux_bin`); the B marginal shows the bin of the true B.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..inference import GridPosterior
    from .quickstart import QuickstartSettings

#: Axis label of image coordinates.
LENGTH_LABEL = "length (model units; h = {h:g} per site)"
#: File names of the main figure in the output directory: ``posterior.png`` and the name the
#: original project's one command wrote.
MAIN_FIGURES = ("posterior.png", "inference_result.png")
#: Symbols of θ's names.
SYMBOLS = {"eta": "η", "field": "B", "nu": "ν", "e": "e"}


def channel_label(name: str, observation: Any = None) -> str:
    """Colour-bar label with units of an observed channel (``rho1``, ``bz``, ``stm2``, ``squid``, ...)."""
    if name in ("rho1", "rho2"):
        return f"|ψ{name[-1]}|²  (strong band's bulk = 1)"
    if name == "bz":
        return "B_z  (model units; Φ₀ = 2π)"
    if name.startswith("winding"):
        return f"winding of ψ{name[-1]}  (vortices per plaquette)"
    if name.startswith("stm"):
        return f"STM conductance, band {name[3:]}  (standardised: zero mean, unit variance)"
    if name == "squid":
        standardised = bool(getattr(observation, "standardise", False))
        return "SQUID B_z at height z  (" + ("standardised)" if standardised else "flux quanta per unit area)")
    if name.startswith("decoration"):
        return f"decoration of band {name[10:]}  (blob density, arbitrary units)"
    return f"{name}  (as observed)"


def flux_bin(field: float, shape: tuple[int, int], h: float) -> tuple[int, float, float]:
    r"""The flux-quantum bin of B on an ``shape`` torus of spacing ``h``: ``(N_phi, B_low, B_high)``.

    Every B in ``[B_low, B_high)`` puts :math:`N_\phi = \mathrm{round}(B\,n_x n_y h^2 / 2\pi)` flux
    quanta through the torus, so it gives the same images.

    Examples:
        >>> n, lo, hi = flux_bin(0.07, (48, 48), 0.5)
        >>> n, round(lo, 4), round(hi, 4)
        (6, 0.06, 0.0709)
    """
    quantum = 2 * math.pi / (shape[0] * shape[1] * h**2)
    n = round(field / quantum)
    return n, (n - 0.5) * quantum, (n + 0.5) * quantum


def mass_box(density: np.ndarray, axes: tuple[np.ndarray, np.ndarray], mass: float = 0.999,
             pad: float = 0.15) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)``: the box of the cells holding ``mass`` of a 2-d grid density (highest
    cells first), widened by ``pad`` of its size on each side and clipped to the grid.

    Examples:
        >>> x, y = np.linspace(0, 1, 11), np.linspace(0, 1, 11)
        >>> d = np.zeros((11, 11)); d[5, 2] = 1.0
        >>> [round(v, 6) for v in mass_box(d, (x, y), pad=0.0)]
        [0.45, 0.55, 0.15, 0.25]
    """
    x, y = axes
    dx, dy = (x[1] - x[0]) if len(x) > 1 else 1.0, (y[1] - y[0]) if len(y) > 1 else 1.0
    flat = density.ravel() / density.sum()
    order = np.argsort(flat)[::-1]
    keep = order[: int(np.searchsorted(np.cumsum(flat[order]), mass)) + 1]
    i, j = np.unravel_index(keep, density.shape)
    x0, x1 = x[i.min()] - dx / 2, x[i.max()] + dx / 2
    y0, y1 = y[j.min()] - dy / 2, y[j.max()] + dy / 2
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    lo_x, hi_x, lo_y, hi_y = x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2
    return (float(max(lo_x, x0 - px)), float(min(hi_x, x1 + px)), float(max(lo_y, y0 - py)),
            float(min(hi_y, y1 + py)))


def plot_main_result(  # noqa: ANN001
    path: Path, posterior: GridPosterior, x_o: torch.Tensor, s: QuickstartSettings, simulator, summary
) -> list[Path]:
    """Save :func:`main_result_figure` as ``path`` and as ``inference_result.png`` beside it; returns both paths."""
    fig = main_result_figure(posterior, x_o, s, simulator, summary)
    paths = [Path(path), Path(path).with_name(MAIN_FIGURES[1])]
    for p in paths:
        fig.savefig(p, dpi=90)
    return paths


def main_result_figure(posterior: GridPosterior, x_o: torch.Tensor, s: QuickstartSettings, simulator,  # noqa: ANN001
                       summary: dict[str, Any]) -> Any:
    """The main job's figure (a matplotlib ``Figure`` on its own Agg canvas): the observation with
    colour bars and units, the joint grid posterior zoomed to where its mass is (the prior's box in
    an inset), and the marginals with the 90 % interval and, for B on a torus, the flux-quantum bin
    of the true B."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    names = list(simulator.names)
    sym = [SYMBOLS.get(n, n) for n in names]
    cfg = simulator.config
    observation = simulator.observation
    C = x_o.shape[0]
    fig = Figure(figsize=(4.0 * (C + 3), 4.0), constrained_layout=True)  # own canvas: pyplot untouched
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, C + 3)
    extent = observation.extent(cfg) if hasattr(observation, "extent") else None
    for c in range(C):
        ax = axes[c]
        im = ax.imshow(x_o[c].T.numpy(), origin="lower", cmap="magma", extent=extent)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(
            channel_label(observation.channel_names[c], observation), fontsize=8)
        ax.set_title(f"observation x_o at true θ: {observation.channel_names[c]}", fontsize=9)
        ax.set_xlabel(LENGTH_LABEL.format(h=cfg.h), fontsize=8)

    dens = posterior.grid_log_prob().exp().reshape(posterior.resolution).numpy()
    lo, hi = posterior.low.numpy(), posterior.high.numpy()
    grid_axes = tuple(a.cpu().numpy() for a in posterior.axes)  # cell centres
    ax = axes[C]
    im = ax.imshow(dens.T, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(f"p({sym[0]}, {sym[1]} | x_o)", fontsize=8)
    ax.plot(*s.theta_true, "r*", ms=12, label="true θ")
    ax.plot(*summary["theta_map"], "wx", ms=8, mew=2, label="MAP")
    box = mass_box(dens, grid_axes)
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_xlabel(sym[0])
    ax.set_ylabel(sym[1])
    ax.legend(fontsize=7, loc="upper right")
    zoomed = (box[1] - box[0]) * (box[3] - box[2]) < 0.9 * (hi[0] - lo[0]) * (hi[1] - lo[1])
    if not zoomed:
        ax.set_title("joint posterior over the whole prior box", fontsize=9)
        return _marginals(fig, axes[C + 1:], posterior, s, cfg, names, sym, summary, lo, hi)
    ax.set_title("joint posterior, zoomed to 99.9 % of its mass", fontsize=9)
    inset = ax.inset_axes((0.02, 0.62, 0.34, 0.36))  # the whole prior box, the zoomed view marked
    inset.imshow(dens.T, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", cmap="viridis")
    inset.add_patch(Rectangle((box[0], box[2]), box[1] - box[0], box[3] - box[2], fill=False, ec="w", lw=1))
    inset.set_xticks([lo[0], hi[0]])
    inset.set_yticks([lo[1], hi[1]])
    inset.tick_params(labelsize=6, colors="w", length=2, pad=1)
    inset.set_title("prior box", fontsize=6, color="w", pad=1)
    return _marginals(fig, axes[C + 1:], posterior, s, cfg, names, sym, summary, lo, hi)


def _marginals(fig: Any, axes: Any, posterior: GridPosterior, s: QuickstartSettings, cfg: Any,
               names: list[str], sym: list[str], summary: dict[str, Any], lo: np.ndarray, hi: np.ndarray) -> Any:
    """The marginal panels of :func:`main_result_figure` and its title; returns the figure."""
    quantised = getattr(cfg, "torus", False) and "field" in names
    for k, (axis, dens_k) in enumerate(posterior.marginals()):
        a = axes[k]
        a.plot(axis.numpy(), dens_k.numpy(), color="C0", label="posterior")
        a.axvline(s.theta_true[k], color="r", label="true")
        ci = summary["credible_interval_90"][k]
        a.axvspan(*ci, alpha=0.2, label="90% interval")
        if quantised and names[k] == "field":
            n_phi, b_lo, b_hi = flux_bin(s.theta_true[k], cfg.shape, cfg.h)
            a.axvspan(b_lo, b_hi, fill=False, hatch="//", ec="0.35", lw=0,
                      label=f"N_φ = {n_phi} bin: B the data can fix")
            quantum = b_hi - b_lo
            for edge in np.arange(math.ceil(lo[k] / quantum - 0.5), hi[k] / quantum + 0.5) * quantum + quantum / 2:
                if lo[k] < edge < hi[k]:
                    a.axvline(edge, color="0.6", lw=0.6, ls=":")
        a.set_xlim(lo[k], hi[k])
        a.set_xlabel(sym[k] + ("  (dotted: flux-quantum bins)" if quantised and names[k] == "field" else ""))
        a.set_ylabel(f"p({sym[k]} | x_o)")
        a.set_title(f"marginal of {sym[k]}", fontsize=9)
        a.legend(fontsize=6)
    cov = ", ".join(f"{v:.2f}" for v in summary["test_coverage_90"])
    fig.suptitle(
        f"{s.method} on {summary['settings']['num_simulations']} simulations "
        f"({s.size}², t = {s.simulator_config().t_final:g}); "
        f"90% coverage on {summary['num_test']} test sims: {cov}", fontsize=10
    )
    return fig
