r"""The calibration report of a posterior on held-out simulations: SBC, expected coverage, TARP.

One call, :func:`calibration_report`, draws posterior samples for every held-out observation once
(batched), computes from these draws the statistics of sbi's :func:`sbi.diagnostics.run_sbc`
(marginal ranks; plus HPD ranks) and :func:`sbi.diagnostics.run_tarp` (sbi's own TARP kernel),
checks them with :func:`sbi.diagnostics.check_sbc` and :func:`sbi.diagnostics.check_tarp`, turns
the ranks into expected-coverage curves and, for a :class:`~glsbi_plugin.inference.GridPosterior`,
adds the exact coverage of its marginal intervals.

``run_sbc`` and ``run_tarp`` accept a ``GridPosterior`` as they are, but each draws its own
samples, and their fallback for posteriors without batched sampling drops the batch dimension of
image observations; sampling once here halves the draws and fixes the fallback, and the results
are identical to theirs for the same seed (``tests/test_diagnostics.py`` checks it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sbi.diagnostics import check_sbc, check_tarp
from sbi.diagnostics.sbc import check_uniformity_frequentist
from sbi.diagnostics.tarp import _run_tarp, get_tarp_references
from scipy import stats
from torch import Tensor

from .._validation import as_tensor_2d
from ..inference import GridPosterior
from ._coverage import (
    as_levels,
    binned_pit_means,
    binomial_band,
    central_coverage,
    grid_interval_hits,
    hpd_coverage,
    pit_values,
)

__all__ = ["CalibrationReport", "calibration_report", "posterior_samples"]

logger = logging.getLogger(__name__)


def _frozen(a: object, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class CalibrationReport:
    r"""Calibration statistics of a posterior on :math:`N` held-out pairs :math:`(\theta_i, x_i)`.

    Let :math:`L` posterior draws be taken per observation and :math:`u = (r + \tfrac12)/(L+1)` be
    the PIT value of a rank :math:`r` (see :mod:`glsbi_plugin.diagnostics`). A calibrated posterior
    has uniform ranks (KS p-values not small, C2ST ≈ 0.5), coverage on the diagonal and TARP's
    ECP on the diagonal (ATC ≈ 0).

    Attributes:
        names: Parameter names, length :math:`d`.
        posterior: Class name of the posterior.
        num_posterior_samples: :math:`L`.
        seed: Seed of every random draw of the report.
        ranks: SBC ranks :math:`r_{ik} = \#\{l: \theta^{(l)}_{ik} < \theta_{ik}\}`, ``(N, d)`` int.
        ks_pvalues: Kolmogorov–Smirnov p-values of :math:`r_{\cdot k}/L` against
            :math:`\mathcal{U}(0, 1)` (sbi's ``check_sbc``), ``(d,)``.
        c2st_ranks: Classifier two-sample accuracy of ranks vs uniform draws (0.5: uniform), ``(d,)``
            or ``None`` when not computed.
        c2st_dap: C2ST accuracy of the data-averaged posterior (one draw per :math:`x_i`) vs the
            :math:`\theta_i` (prior draws); 0.5 when calibrated. ``(d,)`` or ``None``.
        levels: Nominal credibility levels :math:`\alpha`, ``(m,)``.
        coverage: Central marginal coverage :math:`c_k(\alpha)` from SBC ranks, ``(m, d)``.
        hpd_ranks: Ranks of :math:`\log q(\theta_i \mid x_i)` among the draws' log densities,
            ``(N,)``, or ``None``.
        hpd_coverage: Joint HPD expected coverage :math:`c(\alpha) = \frac1N\sum_i
            \mathbb{1}[1 - u_i \le \alpha]` from ``hpd_ranks``, ``(m,)``, or ``None``.
        grid_coverage: Exact central marginal coverage of ``GridPosterior.credible_interval``,
            ``(m, d)``, or ``None`` for other posteriors.
        tarp_alpha: TARP credibility grid :math:`\alpha` (sbi's ``run_tarp``), ``(B + 1,)``; sbi's
            histogram bins span :math:`[\min_i f_i, \max_i f_i]`, not always :math:`[0, 1]`.
        tarp_ecp: TARP expected coverage probability at ``tarp_alpha``, ``(B + 1,)``.
        tarp_atc: Area between ECP and the diagonal for :math:`\alpha > \tfrac12`
            (sbi's ``check_tarp``): :math:`< 0` over-confident, :math:`> 0` under-confident.
        tarp_ks_pvalue: sbi's KS p-value between the ECP and :math:`\alpha` values.
        seconds: Wall time of the report.
        posterior_means: Mean of the :math:`L` draws per observation, ``(N, d)``: the statistic of
            :math:`x` that :meth:`conditional_calibration` bins by; ``None`` in reports written
            before it was recorded.
    """

    names: tuple[str, ...]
    posterior: str
    num_posterior_samples: int
    seed: int
    ranks: np.ndarray
    ks_pvalues: np.ndarray
    c2st_ranks: np.ndarray | None
    c2st_dap: np.ndarray | None
    levels: np.ndarray
    coverage: np.ndarray
    hpd_ranks: np.ndarray | None
    hpd_coverage: np.ndarray | None
    grid_coverage: np.ndarray | None
    tarp_alpha: np.ndarray
    tarp_ecp: np.ndarray
    tarp_atc: float
    tarp_ks_pvalue: float
    seconds: float
    posterior_means: np.ndarray | None = None

    @property
    def num_test(self) -> int:
        """:math:`N`, the number of held-out pairs."""
        return int(self.ranks.shape[0])

    def coverage_at(self, level: float) -> dict[str, Any]:
        """The coverage curves at one nominal level (which must be one of :attr:`levels`).

        Args:
            level: Nominal level, e.g. ``0.9``.

        Returns:
            ``{"central": [d], "hpd": float | None, "grid": [d] | None}``.

        Raises:
            ValueError: If ``level`` is not among :attr:`levels`.
        """
        hits = np.flatnonzero(np.isclose(self.levels, level))
        if hits.size == 0:
            raise ValueError(f"level {level} is not among the report's levels {self.levels.tolist()}")
        j = int(hits[0])
        return {
            "central": self.coverage[j].tolist(),
            "hpd": None if self.hpd_coverage is None else float(self.hpd_coverage[j]),
            "grid": None if self.grid_coverage is None else self.grid_coverage[j].tolist(),
        }

    def coverage_band(self, confidence: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise binomial band of a calibrated posterior's coverage at :attr:`levels` (see
        :func:`~glsbi_plugin.diagnostics.binomial_band`)."""
        return binomial_band(self.levels, self.num_test, confidence)

    def pit_moments(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean and variance of the PIT values :math:`u_{ik} = (r_{ik} + \tfrac12)/(L + 1)` per parameter.

        A calibrated posterior gives mean 1/2 and variance 1/12. A variance below 1/12 (ranks
        piled in the middle, ∩-shaped) means the posterior is too wide (under-confident), above
        1/12 (∪-shaped) too narrow (over-confident); a mean above 1/2 means the truth tends to lie
        above the posterior's mass (the posterior is biased low).

        Returns:
            ``(mean (d,), variance (d,))``.
        """
        u = pit_values(self.ranks, self.num_posterior_samples)
        return u.mean(axis=0), u.var(axis=0)

    def verdicts(self, alpha: float = 0.05) -> list[str]:
        """One plain line per parameter: calibrated or not by SBC at level ``alpha``, and how it fails.

        The failure is named from :meth:`pit_moments`: under-/over-confident when the PIT variance
        is off 1/12 by more than its sampling noise (3 standard errors; for uniform PIT values the
        variance of the sample variance is 1/180N), biased when the PIT mean is off 1/2 by more than
        3 standard errors (1/sqrt(12 N)); and by how much: the KS distance D, the largest gap between
        the CDF of the PIT values and the diagonal (a central interval of any level misses its
        nominal coverage by at most 2D).

        Args:
            alpha: Level of the KS test.

        Returns:
            ``d`` lines, e.g. ``"eta: calibrated (SBC KS p = 0.4 on 300 held-out simulations)"``.
        """
        mean, var = self.pit_moments()
        # the KS distance D of the test behind ks_pvalues (ranks against uniform on [0, L])
        gaps = [float(stats.kstest(r, "uniform", args=(0, self.num_posterior_samples)).statistic) for r in self.ranks.T]
        n = self.num_test
        out = []
        for k, name in enumerate(self.names):
            p = float(self.ks_pvalues[k])
            head = f"{name}: "
            if p >= alpha:
                out.append(f"{head}calibrated (SBC KS p = {p:.2g} on {n} held-out simulations)")
                continue
            how = []
            if var[k] < 1 / 12 - 3 * math.sqrt(1 / (180 * n)):
                how.append(f"under-confident (ranks ∩-shaped: PIT variance {12 * var[k]:.2f} × 1/12)")
            elif var[k] > 1 / 12 + 3 * math.sqrt(1 / (180 * n)):
                how.append(f"over-confident (ranks ∪-shaped: PIT variance {12 * var[k]:.2f} × 1/12)")
            if abs(mean[k] - 0.5) > 3 / math.sqrt(12 * n):
                side = "low" if mean[k] > 0.5 else "high"
                how.append(f"biased {side} (PIT mean {mean[k]:.2f})")
            if not how:
                how.append(f"ranks non-uniform although their width and centre look right (PIT mean {mean[k]:.2f}, "
                           f"variance {12 * var[k]:.2f} × 1/12)")
            how.append(f"rank CDF off the diagonal by up to {gaps[k]:.3f}")
            out.append(f"{head}FAILS SBC (KS p = {p:.2g} < {alpha:g} on {n} held-out simulations): {'; '.join(how)}")
        return out

    def conditional_calibration(self, parts: int = 3) -> list[dict[str, Any]] | None:
        r"""PIT means within quantile bins of each parameter's posterior mean (see
        :func:`~glsbi_plugin.diagnostics.binned_pit_means`).

        The SBC verdicts average over all held-out observations; this asks whether the posterior is
        also calibrated within subsets of them: the pairs whose posterior places :math:`\theta_j`
        low, in the middle or high (``parts = 3``). A posterior calibrated for every :math:`x` has
        PIT means of 1/2 in every bin (each known to :math:`\pm\sqrt{B/(12 N)}`); a marginal
        recalibration cannot remove differences between the bins, since it applies one map to
        every :math:`x`. The posterior mean is that of the report's own :math:`L` draws, which also
        rank the truth: a truth ranked high leaves the draws' mean lower by about a posterior
        standard deviation over :math:`L`, negligible next to the spread of the means that the
        bins cut (the exact posteriors of ``tests/test_diagnostics.py`` pass the test).

        Args:
            parts: Number of quantile bins :math:`B`.

        Returns:
            One entry per conditioning parameter :math:`j`: ``{"by": name_j, "edges": [B + 1],
            "counts": [B], "pit_means": [B][d], "pvalues": [d]}``; ``None`` for a report without
            :attr:`posterior_means` or with fewer than two pairs per bin.
        """
        if self.posterior_means is None or self.num_test < 2 * parts:
            return None
        u = pit_values(self.ranks, self.num_posterior_samples)
        out = []
        for j, name in enumerate(self.names):
            b = binned_pit_means(u, self.posterior_means[:, j], parts)
            out.append({"by": name, "edges": b["edges"].tolist(), "counts": b["counts"].tolist(),
                        "pit_means": b["means"].tolist(), "pvalues": b["pvalues"].tolist()})
        return out

    def conditional_verdicts(self, alpha: float = 0.05, parts: int = 3) -> list[str]:
        r"""One plain line per parameter: calibrated or not within bins of its own posterior mean.

        From :meth:`conditional_calibration`, the :math:`\chi^2` test of parameter :math:`k`'s PIT
        means across the ``parts`` quantile bins of its posterior mean, at level ``alpha``. A failing
        line names each bin whose PIT mean is off 1/2 by more than two standard errors: below 1/2,
        the truth tends to lie below the posterior's mass there. Below 1/2 in the lowest bin and
        above it in the highest means the truths lie beyond the posterior toward the prior's edges:
        the posterior is pulled toward the middle for such observations (the reverse: pushed
        toward the edges).

        Args:
            alpha: Level of the test.
            parts: Number of bins (3: terciles).

        Returns:
            ``d`` lines; empty where :meth:`conditional_calibration` is ``None``.
        """
        table = self.conditional_calibration(parts)
        if table is None:
            return []
        n, out = self.num_test, []
        se = math.sqrt(parts / (12 * n))
        which = {2: "halves", 3: "terciles", 4: "quartiles"}.get(parts, f"{parts} quantile bins")
        for k, name in enumerate(self.names):
            means = [row[k] for row in table[k]["pit_means"]]
            p = float(table[k]["pvalues"][k])
            shown = ", ".join(f"{m:.2f}" for m in means)
            head = (f"{name}: PIT means {shown} (each ± {se:.3f}) in the {which} of its posterior mean; "
                    f"χ² p = {p:.2g} on {n} held-out simulations")
            if p >= alpha:
                out.append(f"{head}: calibrated within them too")
                continue
            where = {0: "lowest", parts - 1: "highest"} if parts > 2 else {0: "low", 1: "high"}
            if parts == 3:
                where[1] = "in the middle"
            off = []
            for b, m in enumerate(means):  # the bins whose PIT mean is off 1/2 by more than 2 standard errors
                if abs(m - 0.5) > 2 * se:
                    side = "above" if m > 0.5 else "below"
                    off.append(f"where it puts {name} {where.get(b, f'in bin {b + 1} of {parts}')}, the "
                                     f"truth tends to lie {side} it (PIT mean {m:.2f})")
            if not off:
                worst = int(np.argmax(np.abs(np.asarray(means) - 0.5)))
                off.append(f"the PIT means differ, most in bin {worst + 1} of {parts} ({means[worst]:.2f})")
            how = "; ".join(off)
            if means[0] < 0.5 - 2 * se and means[-1] > 0.5 + 2 * se:
                how += ": the posterior is pulled toward the middle of the prior"
            elif means[0] > 0.5 + 2 * se and means[-1] < 0.5 - 2 * se:
                how += ": the posterior is pushed toward the prior's edges"
            out.append(f"{head}: calibrated on average only; {how}")
        return out

    def summary(self) -> dict[str, Any]:
        """Headline numbers: KS p-values, C2ST, coverage at 50 % and 90 % (if among the levels), TARP."""
        out: dict[str, Any] = {
            "num_test": self.num_test,
            "ks_pvalues": self.ks_pvalues.tolist(),
            "verdicts": self.verdicts(),
            "c2st_ranks": None if self.c2st_ranks is None else self.c2st_ranks.tolist(),
            "tarp_atc": self.tarp_atc,
            "tarp_ks_pvalue": self.tarp_ks_pvalue,
            "max_abs_coverage_error": float(np.abs(self.coverage - self.levels[:, None]).max()),
            "conditional_verdicts": self.conditional_verdicts(),
        }
        for level in (0.5, 0.9):
            if np.isclose(self.levels, level).any():
                out[f"coverage_{round(100 * level)}"] = self.coverage_at(level)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (inverse: :meth:`from_dict`)."""

        def lst(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {
            "names": list(self.names),
            "posterior": self.posterior,
            "num_test": self.num_test,
            "num_posterior_samples": self.num_posterior_samples,
            "seed": self.seed,
            "seconds": self.seconds,
            "summary": self.summary(),
            "sbc": {
                "ranks": lst(self.ranks),
                "ks_pvalues": lst(self.ks_pvalues),
                "c2st_ranks": lst(self.c2st_ranks),
                "c2st_dap": lst(self.c2st_dap),
                "posterior_means": lst(self.posterior_means),
            },
            "coverage": {
                "levels": lst(self.levels),
                "central": lst(self.coverage),
                "hpd_ranks": lst(self.hpd_ranks),
                "hpd": lst(self.hpd_coverage),
                "grid": lst(self.grid_coverage),
            },
            "tarp": {
                "alpha": lst(self.tarp_alpha),
                "ecp": lst(self.tarp_ecp),
                "atc": self.tarp_atc,
                "ks_pvalue": self.tarp_ks_pvalue,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationReport:
        """Rebuild a report from :meth:`to_dict`'s output (e.g. read back from JSON)."""

        def arr(a: object, dtype: Any = np.float64) -> np.ndarray | None:
            return None if a is None else _frozen(a, dtype)

        sbc, cov, tarp = data["sbc"], data["coverage"], data["tarp"]
        return cls(
            names=tuple(data["names"]),
            posterior=str(data["posterior"]),
            num_posterior_samples=int(data["num_posterior_samples"]),
            seed=int(data["seed"]),
            ranks=_frozen(sbc["ranks"], np.int64).reshape(-1, len(data["names"])),
            ks_pvalues=_frozen(sbc["ks_pvalues"]),
            c2st_ranks=arr(sbc["c2st_ranks"]),
            c2st_dap=arr(sbc["c2st_dap"]),
            levels=_frozen(cov["levels"]),
            coverage=_frozen(cov["central"]),
            hpd_ranks=arr(cov["hpd_ranks"], np.int64),
            hpd_coverage=arr(cov["hpd"]),
            grid_coverage=arr(cov["grid"]),
            tarp_alpha=_frozen(tarp["alpha"]),
            tarp_ecp=_frozen(tarp["ecp"]),
            tarp_atc=float(tarp["atc"]),
            tarp_ks_pvalue=float(tarp["ks_pvalue"]),
            seconds=float(data["seconds"]),
            posterior_means=arr(sbc.get("posterior_means")),
        )

    def to_json(self, path: str | Path) -> Path:
        """Writes :meth:`to_dict` as JSON to ``path`` and returns it."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def plot(self, path_or_dir: str | Path, *, dpi: int = 100) -> list[Path]:
        """Writes the figures (matplotlib, Agg backend).

        A directory (or a path without a suffix) receives three files: ``sbc_ranks.png`` (rank
        histogram per parameter with the 99 % band of uniform ranks), ``coverage.png`` (expected
        coverage vs nominal level with the diagonal and the 99 % binomial band) and ``tarp.png``
        (TARP's ECP vs α with the diagonal). A path with a suffix (``.png``, ``.pdf``, ...) receives
        one figure with the three panels.

        Args:
            path_or_dir: Output directory or file.
            dpi: Resolution.

        Returns:
            The paths written.
        """
        from ._plots import plot_report

        return plot_report(self, Path(path_or_dir), dpi=dpi)


def posterior_samples(posterior: Any, x: Tensor, num_samples: int) -> Tensor:
    """``num_samples`` draws from the posterior of every observation, shape ``(num_samples, N, d)``.

    ``posterior.sample_batched`` when it exists and works (one embedding pass for a
    ``GridPosterior``, vectorised flows for ``DirectPosterior``, batched chains for MCMC);
    otherwise ``posterior.sample((num_samples,), x=x_i[None])`` per observation. sbi's own fallback
    in ``run_sbc``/``run_tarp`` passes ``x_i`` without its batch dimension, which sbi's
    ``process_x`` reads as ``C`` i.i.d. trials of an ``(H, W)`` observation for an image
    ``(C, H, W)``; keeping the batch dimension avoids that.

    Args:
        posterior: An sbi posterior or any object with ``sample_batched``/``sample``.
        x: Observations, shape ``(N, *x_shape)``.
        num_samples: Draws per observation.

    Returns:
        The draws.
    """
    shape = (num_samples,)
    if not _needs_per_observation_sampling(posterior):
        try:
            samples = posterior.sample_batched(shape, x=x, show_progress_bars=False)
            return samples.reshape(num_samples, x.shape[0], -1)
        except NotImplementedError:  # e.g. a VIPosterior in single-x mode
            logger.info("%s has no batched sampling: sampling one observation at a time", type(posterior).__name__)
    draws = [posterior.sample(shape, x=xi[None], show_progress_bars=False).reshape(num_samples, -1) for xi in x]
    return torch.stack(draws, dim=1)


def _needs_per_observation_sampling(posterior: Any) -> bool:
    from sbi.inference.posteriors.importance_posterior import ImportanceSamplingPosterior
    from sbi.inference.posteriors.rejection_posterior import RejectionPosterior

    return isinstance(posterior, (RejectionPosterior, ImportanceSamplingPosterior)) or not hasattr(
        posterior, "sample_batched"
    )


def _density_fn(posterior: Any) -> Callable[[Tensor, Tensor], Tensor] | None:
    """``(theta (L, d), x_i) -> log q(theta | x_i)`` up to a constant in θ, or ``None``.

    The grid posterior's ``log_prob`` (the observation embedded once); otherwise sbi's
    ``potential`` (unnormalised; ranks need no normaliser and ``DirectPosterior.log_prob`` would
    estimate its leakage per observation) or ``log_prob``. ``x_i`` keeps a batch dimension.
    """
    if isinstance(posterior, GridPosterior):
        fn = posterior.log_prob
    elif callable(getattr(posterior, "potential", None)):
        fn = posterior.potential
    elif callable(getattr(posterior, "log_prob", None)):
        fn = posterior.log_prob
    else:
        return None

    def density(theta: Tensor, x: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(theta, x=x.unsqueeze(0)).reshape(-1)

    return density


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds torch's generators (sbi and the posteriors draw from them) and restores them after
    (the CPU one, and the CUDA ones if CUDA is in use)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def _warnings_to_log() -> Iterator[None]:
    """sbi's warnings (sample-size advice, batch-size capping, ...) go to this module's logger at
    INFO, once each; the report warns about small samples itself."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(str(w.message).strip() for w in caught):
        logger.info("sbi: %s", " ".join(message.split()))


def calibration_report(
    posterior: Any,
    theta_test: Tensor,
    x_test: Tensor,
    *,
    num_posterior_samples: int = 1000,
    levels: Sequence[float] | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
    hpd: bool = True,
    c2st: bool = True,
    num_tarp_bins: int | None = None,
    progress: bool = False,
) -> CalibrationReport:
    r"""SBC, expected coverage and TARP of ``posterior`` on held-out pairs :math:`(\theta_i, x_i)`.

    The pairs must be joint draws: :math:`\theta_i \sim p(\theta)` (the prior the posterior was
    trained under) and :math:`x_i \sim p(x \mid \theta_i)`, unseen in training (e.g. a bank's
    test split).

    * **SBC** (Talts et al. 2018, arXiv:1804.06788): :math:`L` draws per :math:`x_i` rank the
      truth per parameter as sbi's :func:`~sbi.diagnostics.run_sbc` does,
      :math:`r_{ik} = \#\{l : \theta^{(l)}_{ik} < \theta_{ik}\}`; under calibration
      :math:`r_{ik} \sim \mathcal{U}\{0..L\}`. :func:`sbi.diagnostics.check_sbc` gives the KS
      p-values and (``c2st=True``) the C2ST accuracies of ranks vs uniform and of the
      data-averaged posterior vs the :math:`\theta_i`.
    * **Expected coverage**: central marginal intervals from the SBC ranks,
      :math:`c_k(\alpha) = \frac1N\sum_i \mathbb{1}[|u_{ik} - \tfrac12| \le \alpha/2]`; joint HPD
      regions (``hpd=True``) from the ranks of :math:`\log q(\theta \mid x_i)` computed on the
      same draws (Deistler et al. 2022, arXiv:2210.04815),
      :math:`c(\alpha) = \frac1N\sum_i \mathbb{1}[1 - u_i \le \alpha]`; for a ``GridPosterior``
      also the exact coverage of ``credible_interval`` (no sampling).
    * **TARP** (Lemos et al. 2023, arXiv:2302.03026): sbi's :func:`~sbi.diagnostics.run_tarp`
      computation on the same draws, with random reference points :math:`\theta^r_i` uniform in
      the bounding box of the :math:`\theta_i`, the coverage value
      :math:`f_i = \frac1L\sum_l \mathbb{1}[\|\theta^{(l)}_i - \theta^r_i\| < \|\theta_i -
      \theta^r_i\|]` and :math:`\mathrm{ECP}(\alpha) = \frac1N\sum_i \mathbb{1}[f_i \le
      \alpha]`; :func:`sbi.diagnostics.check_tarp` gives the ATC
      :math:`\sum_{\alpha > 1/2} (\mathrm{ECP}(\alpha) - \alpha)\,\Delta\alpha` (< 0:
      over-confident) and a KS p-value.

    Sampling is batched (see :func:`posterior_samples`: one embedding pass over all :math:`x_i`
    for a ``GridPosterior``), and one grid evaluation per observation then serves
    :math:`\log q` and every credible interval. Every random draw comes from torch's generator
    seeded with ``seed`` inside the call (samples first, then TARP's references, then C2ST's
    uniform draws, in sbi's order); the caller's generator state is restored afterwards.

    Args:
        posterior: An sbi posterior (``GridPosterior``, ``DirectPosterior``, ``MCMCPosterior``,
            ...) or any object with ``sample_batched(shape, x=...)`` or ``sample(shape, x=...)``
            returning ``(*shape, [N,] d)`` draws, and ``log_prob``/``potential`` for ``hpd``.
        theta_test: True parameters :math:`\theta_i`, shape ``(N, d)``.
        x_test: Observations :math:`x_i`, shape ``(N, *x_shape)``.
        num_posterior_samples: :math:`L`, draws per observation (ranks resolve :math:`1/L`).
        levels: Nominal levels of the coverage curves; default 0.05, 0.10, ..., 0.95.
        seed: Seed of all draws (posterior samples, TARP references, C2ST uniforms).
        names: Parameter names; default ``theta_0``, ``theta_1``, ...
        hpd: Also rank :math:`\log q` for HPD coverage (needs ``log_prob`` or ``potential``; for
            sbi's NRE posteriors the potential runs the embedding once per draw unless it
            deduplicates repeated x, as ``build_inference``'s default does).
        c2st: Run sbi's C2ST checks (a random forest, 5-fold CV; about 0.3 s per parameter for
            :math:`N = 100`); ``False`` gives only the KS p-values.
        num_tarp_bins: Bins of TARP's ECP; default :math:`N/10` (sbi's), at least 2.
        progress: Show a tqdm bar over the observations (the per-observation densities and
            intervals); either way the stages are logged at INFO.

    Returns:
        A :class:`CalibrationReport`.

    Raises:
        ValueError: Mismatched or malformed ``theta_test``/``x_test``, bad ``levels``,
            ``names`` of the wrong length or ``num_posterior_samples < 2``.
    """
    start = time.perf_counter()
    theta = as_tensor_2d(theta_test)
    if not isinstance(x_test, Tensor) or x_test.ndim < 2 or x_test.shape[0] != theta.shape[0]:
        shape = tuple(x_test.shape) if isinstance(x_test, Tensor) else type(x_test).__name__
        raise ValueError(f"x_test must be a tensor of shape ({theta.shape[0]}, *x_shape), got {shape}")
    x = x_test.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("x_test contains NaN or inf (sbi's run_sbc would drop those pairs silently)")
    n, d = theta.shape
    if isinstance(num_posterior_samples, bool) or not isinstance(num_posterior_samples, int) or (
        num_posterior_samples < 2
    ):
        raise ValueError(f"num_posterior_samples={num_posterior_samples!r}: must be an integer >= 2")
    lv = as_levels(levels)
    names = tuple(f"theta_{k}" for k in range(d)) if names is None else tuple(str(s) for s in names)
    if len(names) != d:
        raise ValueError(f"names has {len(names)} entries for θ of dimension {d}")
    if n < 100 or num_posterior_samples < 100:
        logger.warning(
            "calibration on N = %d pairs with L = %d draws each: the statistics are coarse (N and L of a few "
            "hundred or more are advised)", n, num_posterior_samples,
        )
    density = _density_fn(posterior) if hpd else None
    if hpd and density is None:
        logger.warning("%s has neither log_prob nor potential: no HPD coverage", type(posterior).__name__)
    grid = isinstance(posterior, GridPosterior)
    num_bins = num_tarp_bins if num_tarp_bins is not None else max(2, n // 10)

    with _seeded(seed), _warnings_to_log():
        t0 = time.perf_counter()
        samples = posterior_samples(posterior, x, num_posterior_samples).detach().to(theta)  # (L, N, d)
        references = get_tarp_references(theta)  # drawn right after the samples, as in sbi's run_tarp
        t_sample = time.perf_counter() - t0
        # SBC ranks: sbi's run_sbc with reduce_fns="marginals", r_ik = #{l: θ_ik^(l) < θ_ik}
        ranks = (samples < theta[None]).sum(dim=0)
        hpd_ranks = np.zeros(n, dtype=np.int64) if density else None
        hits = np.zeros((n, len(lv), d), dtype=bool) if grid else None
        logger.info("%d x %d posterior draws: %.2f s; now log q and intervals per observation", n,
                    num_posterior_samples, t_sample)
        rows = range(n)
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="calibrate", unit="obs", leave=True)
        for i in rows:  # one grid evaluation per observation serves log q and the intervals
            if density is not None:
                hpd_ranks[i] = int((density(samples[:, i], x[i]) < density(theta[i : i + 1], x[i])).sum())
            if grid:
                hits[i] = grid_interval_hits(posterior, theta[i], x[i], lv)
        if c2st:
            checks = check_sbc(ranks.float(), theta, samples[0], num_posterior_samples=num_posterior_samples)
            ks, c2st_ranks, c2st_dap = (np.asarray(checks[k], dtype=np.float64) for k in
                                        ("ks_pvals", "c2st_ranks", "c2st_dap"))
        else:
            ks = check_uniformity_frequentist(ranks.float(), num_posterior_samples).double().numpy()
            c2st_ranks = c2st_dap = None
        ecp, alpha = _run_tarp(samples, theta, references, num_bins=num_bins, z_score_theta=True)
        atc, tarp_ks = check_tarp(ecp, alpha)
    logger.info("%d x %d posterior draws: %.2f s; statistics: %.2f s", n, num_posterior_samples, t_sample,
                time.perf_counter() - t0 - t_sample)

    ranks_np = ranks.numpy().astype(np.int64)
    grid_cov = hits.mean(axis=0) if grid else None
    report = CalibrationReport(
        names=names,
        posterior=type(posterior).__name__,
        num_posterior_samples=num_posterior_samples,
        seed=int(seed),
        ranks=_frozen(ranks_np, np.int64),
        ks_pvalues=_frozen(ks),
        c2st_ranks=None if c2st_ranks is None else _frozen(c2st_ranks),
        c2st_dap=None if c2st_dap is None else _frozen(c2st_dap),
        levels=_frozen(lv),
        coverage=_frozen(central_coverage(ranks_np, num_posterior_samples, lv)),
        hpd_ranks=None if hpd_ranks is None else _frozen(hpd_ranks, np.int64),
        hpd_coverage=None if hpd_ranks is None else _frozen(hpd_coverage(hpd_ranks, num_posterior_samples, lv)),
        grid_coverage=None if grid_cov is None else _frozen(grid_cov),
        tarp_alpha=_frozen(alpha.numpy()),
        tarp_ecp=_frozen(ecp.numpy()),
        tarp_atc=float(atc),
        tarp_ks_pvalue=float(tarp_ks),
        seconds=time.perf_counter() - start,
        posterior_means=_frozen(samples.mean(dim=0).numpy()),
    )
    logger.info("calibration report of %s on %d pairs: %.2f s", report.posterior, n, report.seconds)
    return report
