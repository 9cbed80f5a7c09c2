"""Figures of a :class:`~glsbi_plugin.diagnostics.CalibrationReport` (matplotlib figures rendered
by the Agg canvas directly: the caller's pyplot backend and figure registry are left alone).

Each figure carries a one-line verdict a reader can take without the README
(:func:`rank_verdict`, :func:`coverage_verdict`, :func:`tarp_verdict`). SBC and TARP can disagree:
SBC ranks the true value of each parameter among the posterior draws, so it sees a marginal
that is too narrow, too wide or shifted; TARP measures, from random reference points, how often
the truth is closer to the reference than the posterior draws are, which tests the joint
distribution and is insensitive to some marginal miscalibration (a posterior too wide in one
parameter and fine in the other can pass TARP while SBC fails the first).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._coverage import binomial_band, rank_histogram_band

if TYPE_CHECKING:
    from ._report import CalibrationReport

__all__ = ["plot_report"]

_SBC_TITLE = "SBC: rank of the true θ among the posterior draws; flat inside the grey band when calibrated"
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


def _pit_moments(report: CalibrationReport) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the PIT values ``(rank + 1/2) / (L + 1)`` per parameter."""
    u = (np.asarray(report.ranks, dtype=np.float64) + 0.5) / (report.num_posterior_samples + 1)
    return u.mean(axis=0), u.var(axis=0)


def rank_verdict(report: CalibrationReport, k: int, alpha: float = 0.05) -> str:
    """One short line on parameter ``k``'s SBC ranks: calibrated at KS level ``alpha`` or how it fails
    (PIT variance off 1/12 or mean off 1/2 by more than 3 standard errors)."""
    p, n = float(report.ks_pvalues[k]), report.num_test
    if p >= alpha:
        return f"calibrated (ranks uniform: KS p = {p:.2g})"
    mean, var = _pit_moments(report)
    how = []
    if var[k] > 1 / 12 + 3 * np.sqrt(1 / (180 * n)):
        how.append("over-confident: too narrow (∪)")
    elif var[k] < 1 / 12 - 3 * np.sqrt(1 / (180 * n)):
        how.append("under-confident: too wide (∩)")
    if abs(mean[k] - 0.5) > 3 / np.sqrt(12 * n):
        how.append("biased " + ("low (truth above)" if mean[k] > 0.5 else "high (truth below)"))
    return f"NOT calibrated (KS p = {p:.2g}): " + ("; ".join(how) if how else "ranks not uniform")


def coverage_verdict(report: CalibrationReport, level: float = 0.9) -> str:
    """One line: the coverage at the report's level nearest ``level``, per parameter and joint, against
    the 99 % binomial band of a calibrated posterior."""
    j = int(np.argmin(np.abs(report.levels - level)))
    at = float(report.levels[j])
    lo, hi = binomial_band([at], report.num_test)

    def judge(c: float) -> str:
        return "ok" if lo[0] <= c <= hi[0] else ("over-confident" if c < lo[0] else "conservative")

    curves = report.grid_coverage if report.grid_coverage is not None else report.coverage
    parts = [f"{name} {curves[j, k]:.2f} {judge(float(curves[j, k]))}" for k, name in enumerate(report.names)]
    if report.hpd_coverage is not None:
        parts.append(f"joint {report.hpd_coverage[j]:.2f} {judge(float(report.hpd_coverage[j]))}")
    return f"at {at:.0%} (band {lo[0]:.2f}-{hi[0]:.2f}): " + ", ".join(parts)


def tarp_verdict(report: CalibrationReport, alpha: float = 0.05) -> str:
    """One line on TARP: passes at KS level ``alpha`` or the sign of the ATC; says what it cannot see."""
    p, atc = float(report.tarp_ks_pvalue), float(report.tarp_atc)
    if p >= alpha:
        return f"joint passes (KS p = {p:.2g}); TARP can miss a bad marginal: see SBC"
    return f"joint {'over-confident' if atc < 0 else 'under-confident'} (ATC {atc:+.3f}, KS p = {p:.2g})"


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
        ax.set_title(f"SBC {report.names[k]}: {rank_verdict(report, k)}", fontsize=8)
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
                 "coverage (below the diagonal: over-confident)\n" + coverage_verdict(report))


def plot_tarp(report: CalibrationReport, ax: Any) -> None:
    """TARP's expected coverage probability vs credibility α, with the diagonal."""
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--")
    ax.plot(report.tarp_alpha, report.tarp_ecp, "C3-", lw=2, label="TARP ECP")
    _unit_square(ax, "credibility level α", "expected coverage probability",
                 f"TARP: ATC = {report.tarp_atc:+.3f}\n{tarp_verdict(report)}")


def _unit_square(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Coverage-style axes: [0, 1]², equal aspect, labels, title and legend."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
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
        fig.suptitle(f"Calibration of {report.posterior} on {report.num_test} held-out simulations. {_SBC_TITLE}",
                     fontsize=9)
        fig.savefig(target, dpi=dpi)
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / name for name in FIGURES]
    fig, axes = _figure((3.8 * d, 3.6), d, squeeze=False)
    plot_ranks(report, axes[0])
    fig.suptitle(_SBC_TITLE, fontsize=9)
    fig.savefig(paths[0], dpi=dpi)
    for path, draw in zip(paths[1:], (plot_coverage, plot_tarp), strict=True):
        fig, ax = _figure((4.6, 4.6))
        draw(report, ax)
        fig.savefig(path, dpi=dpi)
    return paths
