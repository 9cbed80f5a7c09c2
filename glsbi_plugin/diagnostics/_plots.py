"""Figures of a :class:`~glsbi_plugin.diagnostics.CalibrationReport` (matplotlib figures rendered
by the Agg canvas directly: the caller's pyplot backend and figure registry are left alone)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._coverage import binomial_band, rank_histogram_band

if TYPE_CHECKING:
    from ._report import CalibrationReport

__all__ = ["plot_report"]

#: Files written by :func:`plot_report` into a directory.
FIGURES = ("sbc_ranks.png", "coverage.png", "tarp.png")


def _figure(figsize: tuple[float, float], ncols: int = 1, *, squeeze: bool = True) -> tuple[Any, Any]:
    """A figure on its own Agg canvas, and its axes (``Figure.subplots``), outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=squeeze)


def rank_bins(num_test: int) -> int:
    """Histogram bins for :math:`N` ranks: about 10 ranks per bin expected, 2 to 20 bins."""
    return int(min(20, max(2, num_test // 10)))


def plot_ranks(report: CalibrationReport, axes: Any) -> None:
    """SBC rank histograms, one axis per parameter, with the 99 % band of uniform ranks."""
    n, L = report.num_test, report.num_posterior_samples
    bins = rank_bins(n)
    lo, hi = rank_histogram_band(n, bins)
    edges = np.linspace(0, L + 1, bins + 1)
    for k, ax in enumerate(np.atleast_1d(axes)):
        ax.axhspan(lo, hi, color="0.85", label="99% band, uniform ranks")
        ax.axhline(n / bins, color="0.5", lw=1)
        ax.hist(report.ranks[:, k], bins=edges, color="C0", alpha=0.8, edgecolor="white")
        ax.set_xlim(0, L + 1)
        ax.set_xlabel(f"rank of {report.names[k]} among {L} draws")
        ax.set_ylabel("count")
        ax.set_title(f"SBC {report.names[k]}: KS p = {report.ks_pvalues[k]:.3g}", fontsize=10)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper center")


def plot_coverage(report: CalibrationReport, ax: Any) -> None:
    """Empirical vs nominal coverage: central marginal (ranks), HPD, exact grid; diagonal and band."""
    levels = np.concatenate([[0.0], report.levels, [1.0]])
    lo, hi = binomial_band(levels, report.num_test)
    ax.fill_between(levels, lo, hi, color="0.85", label=f"99% band (N = {report.num_test})")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--")
    for k, name in enumerate(report.names):
        ax.plot(report.levels, report.coverage[:, k], "-", color=f"C{k}", label=f"{name}, central (ranks)")
        if report.grid_coverage is not None:
            ax.plot(report.levels, report.grid_coverage[:, k], "o", ms=3, mfc="none", color=f"C{k}",
                    label=f"{name}, central (exact, grid)")
    if report.hpd_coverage is not None:
        ax.plot(report.levels, report.hpd_coverage, "k-", lw=2, label="joint HPD (log-prob ranks)")
    _unit_square(ax, "nominal credibility level", "empirical coverage",
                 "expected coverage (below the diagonal: over-confident)")


def plot_tarp(report: CalibrationReport, ax: Any) -> None:
    """TARP's expected coverage probability vs credibility α, with the diagonal."""
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--")
    ax.plot(report.tarp_alpha, report.tarp_ecp, "C3-", lw=2, label="TARP ECP")
    _unit_square(ax, "credibility level α", "expected coverage probability",
                 f"TARP: ATC = {report.tarp_atc:+.3f}, KS p = {report.tarp_ks_pvalue:.3g}")


def _unit_square(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Coverage-style axes: [0, 1]², equal aspect, labels, title and legend."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


def plot_report(report: CalibrationReport, target: Path, *, dpi: int = 100) -> list[Path]:
    """Writes the report's figures (see :meth:`CalibrationReport.plot`) and returns their paths."""
    d = len(report.names)
    if target.suffix:  # one file, all panels
        target.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = _figure((3.8 * (d + 2), 3.8), d + 2)
        plot_ranks(report, axes[:d])
        plot_coverage(report, axes[d])
        plot_tarp(report, axes[d + 1])
        fig.suptitle(f"Calibration of {report.posterior} on {report.num_test} held-out simulations")
        fig.savefig(target, dpi=dpi)
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / name for name in FIGURES]
    fig, axes = _figure((3.8 * d, 3.4), d, squeeze=False)
    plot_ranks(report, axes[0])
    fig.savefig(paths[0], dpi=dpi)
    for path, draw in zip(paths[1:], (plot_coverage, plot_tarp), strict=True):
        fig, ax = _figure((4.6, 4.6))
        draw(report, ax)
        fig.savefig(path, dpi=dpi)
    return paths
