"""glsbi_plugin.diagnostics: calibration statistics on toy problems with known exact posteriors.

Two toys, each with an exact posterior that is then made too narrow or too wide on purpose:

* conjugate Gaussian, θ ~ N(0, I₂), x | θ ~ N(θ, ½² I₂): the posterior N(0.8 x, 0.447² I₂) as an
  sbi ``DirectPosterior`` around an analytic density estimator (sbi's own sampling and potential);
* images on a box prior, θ ~ U[0, 1]², x = θ_c + ½ · noise on 8×8 pixels per channel: the exact
  log-likelihood ratio -|θ - mean(x)|² / (2 s²), s = 1/16, as an sbi ``RatioEstimator`` whose
  posterior is the (truncated normal) exact one, evaluated by ``GridPosterior`` and by sbi's
  ``RejectionPosterior``.

Widths are scaled by 1/3 (over-confident) or 3 (under-confident). Tolerances are binomial: with
N test pairs, coverage at level α has standard deviation sqrt(α(1-α)/N). The seeds are fixed; the
thresholds were set with margin from the spread over 8 seeds (exact posterior: largest coverage
deviation 3.9 σ over 19 levels x 2 parameters, KS p >= 0.0014, |TARP ATC| <= 0.016; 3x too
narrow: coverage at 90 % <= 0.50, KS p <= 3e-14, ATC <= -0.083 (Gaussian), <= -0.036 (box); 3x
too wide: coverage at 50 % >= 0.74, KS p <= 5e-7, ATC >= 0.10 (Gaussian), 0.01-0.04 (box)).

Two more Gaussian posteriors are calibrated on average but not given x: N(g x, v) with the gain
g = 0.4 (too little, pulled toward the middle) or 1.0 (too much) instead of 0.8, and
v = Var(θ - g x) = (1 - g)² τ² + g² σ², so that θ - g x ~ N(0, v) over the joint draws and the
ranks are exactly uniform on average. Over 8 seeds: the tercile test of the exact posteriors gave
χ² p >= 0.020, the gain-off ones p <= 1.5e-6 for their own parameter, with SBC KS p >= 0.009.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sbi.diagnostics import check_tarp, run_sbc, run_tarp
from sbi.inference import DirectPosterior
from sbi.inference.posteriors.rejection_posterior import RejectionPosterior
from sbi.inference.potentials.ratio_based_potential import ratio_estimator_based_potential
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.neural_nets.ratio_estimators import RatioEstimator
from sbi.utils import BoxUniform
from torch import Tensor, nn

from glsbi_plugin.diagnostics import (
    CalibrationReport,
    binned_pit_means,
    binomial_band,
    calibration_report,
    central_coverage,
    hpd_coverage,
)
from glsbi_plugin.inference import GridPosterior

TAU, SIGMA = 1.0, 0.5  # Gaussian toy: prior and noise standard deviations
NOISE, PIX = 0.5, 8  # image toy: pixel noise and side; exact posterior sd NOISE / PIX = 1/16
N_TEST, N_DRAWS = 300, 500


# -- toy 1: conjugate Gaussian through sbi's DirectPosterior -------------------------------------
class GaussianPosteriorEstimator(ConditionalDensityEstimator):
    """The exact posterior N(k x, s² I) of the conjugate toy, k = τ²/(τ²+σ²), s² = τ²σ²/(τ²+σ²);
    ``scale`` multiplies s. With ``gain`` g in place of k: N(g x, v I), v = (1-g)² τ² + g² σ², the
    posterior that is calibrated on average (θ - g x ~ N(0, v)) but not for each x."""

    def __init__(self, dim: int, scale: float = 1.0, gain: float | None = None) -> None:
        super().__init__(nn.Identity(), torch.Size((dim,)), torch.Size((dim,)))
        self.k = TAU**2 / (TAU**2 + SIGMA**2) if gain is None else gain
        s = TAU * SIGMA / math.sqrt(TAU**2 + SIGMA**2) if gain is None else math.hypot((1 - gain) * TAU, gain * SIGMA)
        self.register_buffer("s", torch.tensor(scale * s))

    def _dist(self, condition: Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.k * condition, self.s)

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: object) -> Tensor:
        return self._dist(condition).log_prob(input).sum(-1)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: object) -> Tensor:
        return -self.log_prob(input, condition)

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: object) -> Tensor:
        return self._dist(condition).sample(torch.Size(sample_shape))


def gaussian_posterior(scale: float, gain: float | None = None) -> DirectPosterior:
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), TAU * torch.ones(2)), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no parameters, falling back to cpu"
        return DirectPosterior(GaussianPosteriorEstimator(2, scale, gain), prior)


def gaussian_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = TAU * torch.randn(n, 2, generator=g)
    return theta, theta + SIGMA * torch.randn(n, 2, generator=g)


# -- toy 2: images on a box prior, exact likelihood ratio ----------------------------------------
class ExactLogRatio(nn.Module):
    """log r(θ, x) = -|θ - mean(x)|² / (2 s²) + const, the toy's exact log-likelihood in θ."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.dim = dim
        self.log_s = nn.Parameter(torch.tensor(math.log(scale * NOISE / PIX)))

    def forward(self, features: Tensor) -> Tensor:
        theta, mean_x = features[..., : self.dim], features[..., self.dim :]
        return -((theta - mean_x) ** 2).sum(-1, keepdim=True) / (2 * self.log_s.exp() ** 2)


class PixelMean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def exact_ratio(scale: float) -> RatioEstimator:
    return RatioEstimator(ExactLogRatio(2, scale), (2,), (2, PIX, PIX), nn.Identity(), PixelMean())


def image_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=g)
    return theta, theta[:, :, None, None] + NOISE * torch.randn(n, 2, PIX, PIX, generator=g)


BOX = BoxUniform(torch.zeros(2), torch.ones(2))


def report_for(kind: str, scale: float, *, c2st: bool = False, n: int = N_TEST, seed: int = 0) -> CalibrationReport:
    if kind == "direct":
        posterior, (theta, x) = gaussian_posterior(scale), gaussian_data(n, seed)
    else:
        posterior, (theta, x) = GridPosterior(exact_ratio(scale), BOX, resolution=64), image_data(n, seed)
    return calibration_report(posterior, theta, x, num_posterior_samples=N_DRAWS, seed=seed, c2st=c2st,
                              names=("a", "b"))


def sigma(levels: np.ndarray, n: int) -> np.ndarray:
    return np.sqrt(levels * (1 - levels) / n)


@pytest.fixture(scope="module")
def exact_direct() -> CalibrationReport:
    return report_for("direct", 1.0, c2st=True)


@pytest.fixture(scope="module")
def exact_grid() -> CalibrationReport:
    return report_for("grid", 1.0)


# -- the exact posterior is calibrated -----------------------------------------------------------
@pytest.mark.parametrize("which", ["exact_direct", "exact_grid"])
def test_exact_posterior_is_calibrated(which: str, request: pytest.FixtureRequest) -> None:
    report: CalibrationReport = request.getfixturevalue(which)
    n, lv = report.num_test, report.levels
    assert n == N_TEST and report.ranks.shape == (N_TEST, 2) and report.ranks.max() <= N_DRAWS
    assert (report.ks_pvalues > 1e-3).all(), f"uniform ranks rejected: KS p = {report.ks_pvalues}"
    # 19 levels x 2 parameters: the largest of many (correlated) deviations, hence 4.5 σ
    tol = 4.5 * sigma(lv, n) + 1 / N_DRAWS
    for curve, name in ((report.coverage, "central"), (report.hpd_coverage[:, None], "HPD")):
        dev = np.abs(curve - lv[:, None])
        assert (dev <= tol[:, None]).all(), f"{name} coverage off by up to {dev.max():.3f}: {curve.T.round(3)}"
    assert abs(report.tarp_atc) < 0.04, f"TARP ATC {report.tarp_atc:+.3f} for the exact posterior"
    assert report.tarp_ecp[0] == 0 and report.tarp_ecp[-1] == pytest.approx(1) and (np.diff(report.tarp_ecp) >= 0).all()


def test_exact_posterior_c2st_and_band(exact_direct: CalibrationReport) -> None:
    r = exact_direct
    assert r.c2st_ranks is not None and r.c2st_dap is not None
    assert r.c2st_ranks.mean() < 0.6 and r.c2st_dap.mean() < 0.6, (r.c2st_ranks, r.c2st_dap)
    lo, hi = r.coverage_band(0.99)
    inside = (r.coverage >= lo[:, None]) & (r.coverage <= hi[:, None])
    assert inside.mean() >= 0.9, f"only {inside.mean():.0%} of the coverage points inside the 99% band"


def test_grid_exact_coverage_agrees_with_ranks(exact_grid: CalibrationReport) -> None:
    r = exact_grid
    assert r.grid_coverage is not None and r.grid_coverage.shape == r.coverage.shape
    lv = r.levels
    assert (np.abs(r.grid_coverage - lv[:, None]) <= 4.5 * sigma(lv, r.num_test)[:, None]).all(), r.grid_coverage.T
    # same truths, exact CDF vs its estimate from 500 draws: only pairs near an interval's edge differ
    assert np.abs(r.grid_coverage - r.coverage).max() <= 0.05


# -- mis-calibrated posteriors are flagged -------------------------------------------------------
@pytest.mark.parametrize("kind", ["direct", "grid"])
def test_overconfident_posterior_is_flagged(kind: str) -> None:
    r = report_for(kind, 1 / 3, c2st=kind == "direct")
    assert (r.ks_pvalues < 1e-8).all(), r.ks_pvalues
    # a 3x too narrow normal covers with probability 2Φ(z_α / 3) - 1: 0.42 at α = 0.9, 0.18 at 0.5
    cov90, cov50 = r.coverage_at(0.9), r.coverage_at(0.5)
    assert max(cov90["central"]) < 0.6 and max(cov50["central"]) < 0.3, (cov90, cov50)
    assert cov90["hpd"] < 0.4
    if kind == "grid":
        assert max(cov90["grid"]) < 0.6
    worst = np.abs(r.coverage - r.levels[:, None]).max()
    assert worst > 10 * sigma(np.array([0.5]), r.num_test)[0], f"largest coverage error only {worst:.3f}"
    # ranks pile up at both ends: the outer tenths hold far more than 20 % of them
    outer = ((r.ranks < N_DRAWS / 10) | (r.ranks > 0.9 * N_DRAWS)).mean()
    assert outer > 0.45, f"{outer:.0%} of ranks in the outer tenths"
    assert r.tarp_atc < (-0.06 if kind == "direct" else -0.02), f"TARP ATC {r.tarp_atc:+.3f}"
    if kind == "direct":
        assert r.c2st_ranks.mean() > 0.62, r.c2st_ranks


@pytest.mark.parametrize("kind", ["direct", "grid"])
def test_underconfident_posterior_is_flagged(kind: str) -> None:
    r = report_for(kind, 3.0)
    assert (r.ks_pvalues < 1e-4).all(), r.ks_pvalues
    cov50 = r.coverage_at(0.5)  # a 3x too wide normal: 2Φ(3 z_0.75) - 1 = 0.96 (less where the box truncates)
    assert min(cov50["central"]) > 0.65 and cov50["hpd"] > 0.9, cov50
    middle = ((r.ranks > 0.25 * N_DRAWS) & (r.ranks < 0.75 * N_DRAWS)).mean()
    assert middle > 0.7, f"only {middle:.0%} of ranks in the middle half"
    if kind == "direct":  # on the box prior the truncation hides much of the excess width from TARP
        assert r.tarp_atc > 0.06, f"TARP ATC {r.tarp_atc:+.3f}"


# -- calibrated on average, not given x ---------------------------------------------------------
@pytest.mark.parametrize("which", ["exact_direct", "exact_grid"])
def test_exact_posterior_is_calibrated_within_terciles(which: str, request: pytest.FixtureRequest) -> None:
    report: CalibrationReport = request.getfixturevalue(which)
    table = report.conditional_calibration()
    assert [t["by"] for t in table] == ["a", "b"] and all(t["counts"] == [100, 100, 100] for t in table)
    p = np.array([t["pvalues"] for t in table])
    assert (p > 1e-3).all(), f"exact posterior rejected within terciles: χ² p = {p}"
    means = np.array([t["pit_means"] for t in table])
    assert np.abs(means - 0.5).max() < 4 * math.sqrt(1 / (12 * 100)), means
    assert all("calibrated within them too" in line for line in report.conditional_verdicts(alpha=1e-3))


@pytest.mark.parametrize(("gain", "reading"),
                         [(0.4, "pulled toward the middle"), (1.0, "pushed toward the prior's edges")])
def test_calibrated_on_average_only_is_flagged(gain: float, reading: str) -> None:
    theta, x = gaussian_data(N_TEST, seed=0)
    r = calibration_report(gaussian_posterior(1.0, gain), theta, x, num_posterior_samples=N_DRAWS, seed=0, c2st=False)
    assert (r.ks_pvalues > 1e-3).all(), f"on average this posterior is calibrated by construction: {r.ks_pvalues}"
    table = r.conditional_calibration()
    for k in range(2):
        means = np.array(table[k]["pit_means"])[:, k]
        assert table[k]["pvalues"][k] < 1e-4, table[k]
        # the truth lies below the posterior where it is lowest (g too small): rising PIT means
        assert (np.diff(means) > 0).all() if gain < 0.8 else (np.diff(means) < 0).all(), means
        assert abs(means[-1] - means[0]) > 0.2, means
    lines = r.conditional_verdicts()
    assert len(lines) == 2 and all("calibrated on average only" in s and reading in s for s in lines), lines
    assert all("calibrated (SBC" in s for s in r.verdicts())


def test_binned_pit_means_contract() -> None:
    rng = np.random.default_rng(1)
    u, key = rng.uniform(size=(301, 2)), rng.normal(size=301)
    out = binned_pit_means(u, key, parts=3)
    assert out["counts"].tolist() == [100, 100, 101] and out["means"].shape == (3, 2)
    np.testing.assert_allclose(out["edges"], np.quantile(key, [0, 1 / 3, 2 / 3, 1]))
    low = key <= np.sort(key)[99]
    np.testing.assert_allclose(out["means"][0], u[low].mean(axis=0))
    # a shift of the PIT values in the top bin only: detected there, along that parameter
    shifted = u.copy()
    shifted[key > np.sort(key)[199], 0] *= 0.5
    p = binned_pit_means(shifted, key)["pvalues"]
    assert p[0] < 1e-6 and p[1] == pytest.approx(out["pvalues"][1])
    constant = binned_pit_means(u, np.zeros(301))  # ties: equal-count bins in the given order
    assert constant["counts"].tolist() == [100, 100, 101]
    for bad, match in (((u[:10], key), "u must be"), ((u, key, 1), "parts"), ((u, key, 200), "parts"),
                       ((u, np.full(301, np.nan)), "NaN")):
        with pytest.raises(ValueError, match=match):
            binned_pit_means(*bad)


def test_report_without_posterior_means_has_no_conditional_check(exact_grid: CalibrationReport) -> None:
    data = exact_grid.to_dict()
    del data["sbc"]["posterior_means"]  # a report written before the means were recorded
    old = CalibrationReport.from_dict(data)
    assert old.posterior_means is None and old.conditional_calibration() is None
    assert old.conditional_verdicts() == [] and old.summary()["conditional_verdicts"] == []


# -- sbi posteriors without batched sampling, on images ------------------------------------------
def test_rejection_posterior_on_images() -> None:
    estimator = exact_ratio(1.0)
    potential, _ = ratio_estimator_based_potential(estimator, BOX, x_o=None)
    posterior = RejectionPosterior(potential, proposal=BOX, num_samples_to_find_max=500, num_iter_to_find_max=10)
    theta, x = image_data(100, seed=3)
    # sbi's own fallback passes each image without its batch dimension and fails
    with warnings.catch_warnings(), pytest.raises(ValueError, match="condition"):
        warnings.simplefilter("ignore")
        run_sbc(theta[:2], x[:2], posterior, num_posterior_samples=10, show_progress_bar=False)
    r = calibration_report(posterior, theta, x, num_posterior_samples=200, seed=0, c2st=False)
    assert r.posterior == "RejectionPosterior" and r.grid_coverage is None
    assert (r.ks_pvalues > 1e-3).all(), r.ks_pvalues
    lv = r.levels
    assert (np.abs(r.coverage - lv[:, None]) <= 4.5 * sigma(lv, 100)[:, None] + 1 / 200).all(), r.coverage.T


# -- the same numbers as sbi's run_sbc and run_tarp ----------------------------------------------
def test_matches_sbi_run_sbc_and_run_tarp() -> None:
    """One set of draws serves SBC and TARP; for the same seed the ranks and the ECP curve are
    exactly those of sbi's run_sbc (marginals and log-prob ranks) and run_tarp."""
    posterior, (theta, x) = GridPosterior(exact_ratio(1 / 3), BOX, resolution=64), image_data(120, seed=4)
    r = calibration_report(posterior, theta, x, num_posterior_samples=200, seed=5, c2st=False, num_tarp_bins=12)
    reduce_fns = [lambda th, xi: th[:, 0], lambda th, xi: th[:, 1], lambda th, xi: posterior.log_prob(th, x=xi)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        ranks, _ = run_sbc(theta, x, posterior, num_posterior_samples=200, reduce_fns=reduce_fns,
                           show_progress_bar=False)
        torch.manual_seed(5)
        ecp, alpha = run_tarp(theta, x, posterior, num_posterior_samples=200, num_bins=12, show_progress_bar=False)
    np.testing.assert_array_equal(r.ranks, ranks[:, :2].numpy())
    np.testing.assert_array_equal(r.hpd_ranks, ranks[:, 2].numpy())
    np.testing.assert_array_equal(r.tarp_ecp, ecp.numpy())
    np.testing.assert_array_equal(r.tarp_alpha, alpha.numpy())
    assert r.tarp_atc == pytest.approx(check_tarp(ecp, alpha)[0])


# -- reproducibility, serialisation, figures -----------------------------------------------------
def test_seeded_and_leaves_global_rng_alone() -> None:
    posterior, (theta, x) = gaussian_posterior(1.0), gaussian_data(50, seed=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = calibration_report(posterior, theta, x, num_posterior_samples=100, seed=7, c2st=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = calibration_report(posterior, theta, x, num_posterior_samples=100, seed=7, c2st=False)
    c = calibration_report(posterior, theta, x, num_posterior_samples=100, seed=8, c2st=False)
    assert np.array_equal(a.ranks, b.ranks) and np.array_equal(a.tarp_ecp, b.tarp_ecp)
    assert not np.array_equal(a.ranks, c.ranks)


def test_json_round_trip_and_figures(exact_grid: CalibrationReport, tmp_path) -> None:
    path = exact_grid.to_json(tmp_path / "calibration.json")
    data = json.loads(path.read_text())
    back = CalibrationReport.from_dict(data)
    for field in ("ranks", "ks_pvalues", "levels", "coverage", "hpd_ranks", "hpd_coverage", "grid_coverage",
                  "tarp_alpha", "tarp_ecp", "posterior_means"):
        np.testing.assert_array_equal(getattr(back, field), getattr(exact_grid, field))
    assert back.tarp_atc == exact_grid.tarp_atc and back.names == ("a", "b")
    assert data["summary"]["coverage_90"]["central"] == exact_grid.coverage_at(0.9)["central"]
    assert back.conditional_calibration() == exact_grid.conditional_calibration()
    assert data["summary"]["conditional_verdicts"] == exact_grid.conditional_verdicts()
    with pytest.raises(ValueError):
        exact_grid.ranks[0, 0] = 1  # frozen: read-only arrays
    written = exact_grid.plot(tmp_path / "figures")
    assert [p.name for p in written] == ["sbc_ranks.png", "coverage.png", "tarp.png"]
    single = exact_grid.plot(tmp_path / "all.png")
    for p in [*written, *single]:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000


# -- the rank-to-coverage maths on constructed ranks ---------------------------------------------
def test_coverage_from_constructed_ranks() -> None:
    L, levels = 99, np.array([0.1, 0.5, 0.9])
    uniform = np.arange(L + 1)[:, None].repeat(2, axis=1)  # every rank once: perfectly uniform
    np.testing.assert_allclose(central_coverage(uniform, L, levels), levels[:, None].repeat(2, 1), atol=1 / (L + 1))
    np.testing.assert_allclose(hpd_coverage(uniform[:, 0], L, levels), levels, atol=1 / (L + 1))
    extremes = np.array([[0, L], [L, 0]] * 10)  # truth outside every draw: never inside a central interval
    assert (central_coverage(extremes, L, levels) == 0).all()
    assert (hpd_coverage(np.full(20, L), L, levels) == 1).all()  # truth at the mode: in every HPD region
    assert (hpd_coverage(np.zeros(20), L, levels) == 0).all()
    lo, hi = binomial_band(levels, 100, 0.99)
    assert (lo < levels).all() and (hi > levels).all() and hi[1] - lo[1] == pytest.approx(0.26, abs=0.03)


def test_bad_inputs_raise() -> None:
    posterior, (theta, x) = gaussian_posterior(1.0), gaussian_data(20, seed=0)
    with pytest.raises(ValueError, match="x_test"):
        calibration_report(posterior, theta, x[:10])
    with pytest.raises(ValueError, match="NaN"):
        calibration_report(posterior, theta, x.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="levels"):
        calibration_report(posterior, theta, x, levels=[0.5, 1.0])
    with pytest.raises(ValueError, match="names"):
        calibration_report(posterior, theta, x, names=("a",))
    with pytest.raises(ValueError, match="num_posterior_samples"):
        calibration_report(posterior, theta, x, num_posterior_samples=1)
