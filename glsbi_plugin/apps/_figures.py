"""Figures of the main job (``glsbi quickstart``): drawn on their own Agg canvas, pyplot untouched."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..inference import GridPosterior

if TYPE_CHECKING:
    from .quickstart import QuickstartSettings


def plot_main_result(  # noqa: ANN001
    path: Path, posterior: GridPosterior, x_o: torch.Tensor, s: QuickstartSettings, simulator, summary
) -> None:
    """The main job's figure: the observation, the joint grid posterior and its marginals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = simulator.names
    C = x_o.shape[0]
    fig = Figure(figsize=(3.6 * (C + 3), 3.4), constrained_layout=True)  # own canvas: pyplot untouched
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, C + 3)
    for c in range(C):
        axes[c].imshow(x_o[c].T.numpy(), origin="lower", cmap="magma")
        axes[c].set_title(f"x_o: {simulator.observation.channel_names[c]}")
        axes[c].set_xticks([])
        axes[c].set_yticks([])
    dens = posterior.grid_log_prob().exp().reshape(posterior.resolution).numpy()
    lo, hi = posterior.low.numpy(), posterior.high.numpy()
    ax = axes[C]
    ax.imshow(dens.T, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", cmap="viridis")
    ax.plot(*s.theta_true, "r*", ms=12, label="true θ")
    ax.plot(*summary["theta_map"], "wx", ms=8, label="MAP")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=7)
    ax.set_title("p(θ | x_o), grid")
    for k, (axis, dens_k) in enumerate(posterior.marginals()):
        a = axes[C + 1 + k]
        a.plot(axis.numpy(), dens_k.numpy())
        a.axvline(s.theta_true[k], color="r", label="true")
        ci = summary["credible_interval_90"][k]
        a.axvspan(*ci, alpha=0.2, label="90% interval")
        a.set_xlabel(names[k])
        a.set_title(f"marginal of {names[k]}")
        a.legend(fontsize=7)
    cov = ", ".join(f"{v:.2f}" for v in summary["test_coverage_90"])
    fig.suptitle(
        f"{s.method} on {summary['settings']['num_simulations']} simulations "
        f"({s.size}², t = {s.simulator_config().t_final:g}); "
        f"90% coverage on {summary['num_test']} test sims: {cov}"
    )
    fig.savefig(path, dpi=90)
