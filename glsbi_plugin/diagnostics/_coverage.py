r"""Coverage from rank statistics, exact grid coverage and binomial tolerance bands.

For a held-out pair :math:`(\theta_i, x_i)`, :math:`\theta_i \sim p(\theta)`,
:math:`x_i \sim p(x \mid \theta_i)`, and :math:`L` draws :math:`\theta_i^{(l)} \sim q(\theta \mid x_i)`
from the posterior under test, a rank is

.. math::

    r_i = \sum_{l=1}^{L} \mathbb{1}\big[f(\theta_i^{(l)}) < f(\theta_i)\big] \in \{0, \dots, L\},

with :math:`f(\theta) = \theta_k` for the marginal (SBC) rank of parameter :math:`k` and
:math:`f(\theta) = \log q(\theta \mid x_i)` for the highest-posterior-density (HPD) rank. If
:math:`q = p`, :math:`r_i` is uniform on :math:`\{0, \dots, L\}` (Talts et al. 2018,
arXiv:1804.06788), and :math:`u_i = (r_i + \tfrac12)/(L + 1)` estimates the posterior CDF of
:math:`f(\theta_i)` (a PIT value), uniform on :math:`(0, 1)` in the limit :math:`L \to \infty`.

References:
    Talts, Betancourt, Simpson, Vehtari, Gelman (2018). Validating Bayesian inference algorithms
    with simulation-based calibration. arXiv:1804.06788.
    Deistler, Goncalves, Macke (2022). Truncated proposals for scalable and hassle-free
    simulation-based inference. arXiv:2210.04815 (expected coverage from log-probability ranks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binom, chi2
from torch import Tensor

__all__ = [
    "DEFAULT_LEVELS",
    "binned_pit_means",
    "binomial_band",
    "central_coverage",
    "grid_interval_hits",
    "hpd_coverage",
    "pit_values",
    "rank_histogram_band",
]

#: Default nominal credibility levels: 0.05, 0.10, ..., 0.95.
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))


def pit_values(ranks: np.ndarray, num_posterior_samples: int) -> np.ndarray:
    r"""Probability-integral-transform values :math:`u = (r + \tfrac12) / (L + 1)` of ranks.

    A rank :math:`r \in \{0, \dots, L\}` puts the truth between the :math:`r`-th and
    :math:`(r+1)`-th ordered posterior draw, i.e. in the :math:`(r+1)`-th of :math:`L + 1`
    equiprobable bins; :math:`u` is that bin's centre, so a uniform rank gives an exactly symmetric,
    unbiased estimate of the posterior CDF at the truth.

    Args:
        ranks: Integer ranks of any shape, in ``[0, L]``.
        num_posterior_samples: :math:`L`.

    Returns:
        ``u`` in ``(0, 1)``, the shape of ``ranks``.

    Raises:
        ValueError: If a rank is outside ``[0, L]``.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size and (ranks.min() < 0 or ranks.max() > num_posterior_samples):
        raise ValueError(f"ranks must lie in [0, {num_posterior_samples}], got [{ranks.min()}, {ranks.max()}]")
    return (ranks + 0.5) / (num_posterior_samples + 1)


def central_coverage(ranks: np.ndarray, num_posterior_samples: int, levels: Sequence[float]) -> np.ndarray:
    r"""Empirical coverage of central (equal-tailed) marginal credible intervals, from SBC ranks.

    The central interval of level :math:`\alpha` is
    :math:`[F_k^{-1}(\tfrac{1-\alpha}{2}), F_k^{-1}(\tfrac{1+\alpha}{2})]`, which holds
    :math:`\theta_{ik}` iff :math:`|u_{ik} - \tfrac12| \le \tfrac{\alpha}{2}`, so

    .. math::

        c_k(\alpha) = \frac1N \sum_{i=1}^N \mathbb{1}\big[\,|u_{ik} - \tfrac12| \le \tfrac{\alpha}{2}\big].

    A calibrated posterior has :math:`\mathbb{E}\,c_k(\alpha) = \alpha`; :math:`c_k < \alpha` means
    over-confident (too narrow or biased), :math:`c_k > \alpha` under-confident.

    Args:
        ranks: Marginal ranks, shape ``(N, d)``.
        num_posterior_samples: :math:`L`, the draws per observation behind the ranks.
        levels: Nominal levels :math:`\alpha`, shape ``(m,)``.

    Returns:
        Coverage, shape ``(m, d)``.
    """
    u = pit_values(ranks, num_posterior_samples)
    half = np.asarray(levels, dtype=np.float64)[:, None, None] / 2
    return (np.abs(u[None] - 0.5) <= half).mean(axis=1)


def hpd_coverage(ranks: np.ndarray, num_posterior_samples: int, levels: Sequence[float]) -> np.ndarray:
    r"""Expected coverage of joint highest-posterior-density regions, from log-probability ranks.

    The HPD region of level :math:`\alpha` holds the :math:`\alpha` most probable mass; θ_i lies
    inside iff the posterior mass of higher density than :math:`q(\theta_i \mid x_i)` is at most
    :math:`\alpha`, i.e. :math:`1 - u_i \le \alpha`:

    .. math::

        c(\alpha) = \frac1N \sum_{i=1}^N \mathbb{1}\big[1 - u_i \le \alpha\big].

    Args:
        ranks: HPD ranks (of :math:`\log q`), shape ``(N,)``.
        num_posterior_samples: :math:`L`.
        levels: Nominal levels :math:`\alpha`, shape ``(m,)``.

    Returns:
        Coverage, shape ``(m,)``.
    """
    u = pit_values(ranks, num_posterior_samples)
    return (1.0 - u[None] <= np.asarray(levels, dtype=np.float64)[:, None]).mean(axis=1)


def grid_interval_hits(posterior: object, theta: Tensor, x: Tensor, levels: Sequence[float]) -> np.ndarray:
    r"""Whether each :math:`\theta_k` lies in the grid posterior's central interval of each level.

    Args:
        posterior: A ``GridPosterior``.
        theta: One true parameter vector, shape ``(d,)``.
        x: Its observation, shape ``x_shape`` (the grid is evaluated once and reused for all levels).
        levels: Nominal levels, shape ``(m,)``.

    Returns:
        Booleans of shape ``(m, d)``.
    """
    out = np.zeros((len(levels), theta.shape[-1]), dtype=bool)
    for j, level in enumerate(levels):
        ci = posterior.credible_interval(float(level), x=x)
        out[j] = ((theta >= ci[:, 0]) & (theta <= ci[:, 1])).numpy()
    return out


def binomial_band(levels: Sequence[float], num_test: int, confidence: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    r"""Range of the empirical coverage of a calibrated posterior, level by level.

    With :math:`N` independent test pairs, :math:`N c(\alpha) \sim \mathrm{Binomial}(N, \alpha)`
    for a calibrated posterior; the band is that binomial's central ``confidence`` interval over
    :math:`N`. (Pointwise: across many levels some excursions are expected.)

    Args:
        levels: Nominal levels, shape ``(m,)``.
        num_test: :math:`N`.
        confidence: Probability inside the band at each level.

    Returns:
        ``(lower, upper)``, each of shape ``(m,)``.
    """
    p = np.clip(np.asarray(levels, dtype=np.float64), 0.0, 1.0)
    tail = (1.0 - confidence) / 2
    return binom.ppf(tail, num_test, p) / num_test, binom.ppf(1.0 - tail, num_test, p) / num_test


def rank_histogram_band(num_test: int, num_bins: int, confidence: float = 0.99) -> tuple[float, float]:
    r"""Range of one bin's count in the rank histogram of a calibrated posterior (Talts et al.).

    Uniform ranks put :math:`\mathrm{Binomial}(N, 1/B)` of the :math:`N` ranks into each of
    :math:`B` equal bins; the band is that binomial's central ``confidence`` interval.

    Args:
        num_test: :math:`N`.
        num_bins: :math:`B`.
        confidence: Probability inside the band for each bin.

    Returns:
        ``(lower, upper)`` counts.
    """
    tail = (1.0 - confidence) / 2
    return float(binom.ppf(tail, num_test, 1 / num_bins)), float(binom.ppf(1 - tail, num_test, 1 / num_bins))


def binned_pit_means(u: np.ndarray, key: np.ndarray, parts: int = 3) -> dict[str, np.ndarray]:
    r"""PIT means within quantile bins of a statistic of :math:`x`: a test of calibration given :math:`x`.

    SBC, coverage and TARP average over all observations, and errors of opposite sign in two
    subsets of :math:`x` cancel in them. A posterior calibrated for every :math:`x` has PIT values
    :math:`u_{ik} = F_k(\theta_{ik} \mid x_i)` uniform within any subset defined by :math:`x` alone
    (e.g. by the posterior mean; a key computed from posterior draws must not depend on the
    truth's rank among them, or only negligibly). Under that null, the mean of the :math:`n_b` values of bin
    :math:`b` has mean :math:`\tfrac12` and variance :math:`1/(12 n_b)`, so with the overall mean
    :math:`\bar u`

    .. math::

        X^2_k = \sum_b 12\, n_b\, (\bar u_{bk} - \bar u_k)^2 \sim \chi^2_{B - 1},

    sensitive to PIT means that differ between the bins: the posterior's location errors in one
    part of the data that a single recalibration map cannot remove.

    Args:
        u: PIT values, ``(N, d)``, in ``[0, 1]``.
        key: The statistic of :math:`x` the bins are quantiles of, ``(N,)``.
        parts: Number of bins :math:`B` (3: terciles), at least 2 and at most ``N // 2``.

    Returns:
        ``{"bin": (N,), "edges": (B + 1,), "counts": (B,), "means": (B, d), "pvalues": (d,)}``: each
        pair's bin, the bin edges of ``key``, the pairs per bin, the PIT means per bin and parameter
        and the :math:`\chi^2` p-value of each parameter.

    Raises:
        ValueError: Mismatched shapes, a key that is not finite, or a bad ``parts``.

    The bins hold equal numbers of pairs (:math:`\lfloor N/B \rfloor` or one more), cut at the
    ranks of ``key`` where its quantiles ``edges`` fall (ties are split in their given order).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> out = binned_pit_means(rng.uniform(size=(300, 2)), rng.normal(size=300))
        >>> out["counts"].tolist(), bool(out["pvalues"].min() > 1e-3)
        ([100, 100, 100], True)
    """
    u = np.asarray(u, dtype=np.float64)
    key = np.asarray(key, dtype=np.float64).reshape(-1)
    if u.ndim != 2 or u.shape[0] != key.shape[0]:
        raise ValueError(f"u must be (N, d) and key (N,), got {u.shape} and {key.shape}")
    if isinstance(parts, bool) or not isinstance(parts, int) or not 2 <= parts <= u.shape[0] // 2:
        raise ValueError(f"parts={parts!r}: must be an integer in [2, N // 2 = {u.shape[0] // 2}]")
    if not np.isfinite(key).all():
        raise ValueError("key contains NaN or inf")
    # bins by the rank r of the key (ties in their given order, which is independent of θ): bin b
    # starts at r = ceil((N - 1) b / B), where np.quantile's linear interpolation puts edge b
    n = len(key)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(key, kind="stable")] = np.arange(n)
    starts = -(-(n - 1) * np.arange(1, parts) // parts)
    which = (rank[:, None] >= starts[None, :]).sum(axis=1)
    edges = np.quantile(key, np.linspace(0, 1, parts + 1))
    counts = np.bincount(which, minlength=parts)
    means = np.stack([u[which == b].mean(axis=0) for b in range(parts)])
    x2 = (12 * counts[:, None] * (means - u.mean(axis=0)) ** 2).sum(axis=0)
    return {"bin": which, "edges": edges, "counts": counts, "means": means, "pvalues": chi2.sf(x2, parts - 1)}


def as_levels(levels: Sequence[float] | None) -> np.ndarray:
    """Checked nominal levels: sorted, unique, inside ``(0, 1)``; default :data:`DEFAULT_LEVELS`."""
    out = np.asarray(DEFAULT_LEVELS if levels is None else levels, dtype=np.float64).reshape(-1)
    if out.size == 0 or not np.all((out > 0) & (out < 1)):
        raise ValueError(f"levels must be a non-empty sequence of numbers in (0, 1), got {levels!r}")
    return np.unique(out)
