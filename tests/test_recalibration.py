"""Marginal recalibration of grid posteriors: ``MarginalRecalibration``, ``fit_recalibration``, ``grid_pit``
and their use by the CLI (issue: calibrated by default)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sbi.neural_nets import classifier_nn
from sbi.utils import BoxUniform
from scipy import stats
from torch import Tensor, nn

from glsbi_plugin.checkpoint import RECALIBRATION_FILE, file_sha256, recalibration_for
from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, MarginalRecalibration, fit_recalibration, grid_pit

PRIOR = BoxUniform(torch.zeros(2), torch.tensor([1.0, 2.0]))
RES = (24, 20)


def images(theta: Tensor) -> Tensor:
    """``(n, 2)`` → ``(n, 2, 8, 8)``: mean brightness θ_c plus noise."""
    return theta[:, :, None, None] + 0.5 * torch.randn(theta.shape[0], 2, 8, 8)


@pytest.fixture(scope="module")
def estimator() -> nn.Module:
    """An untrained ratio estimator with perturbed weights: some smooth posterior per x (not the true one)."""
    torch.manual_seed(0)
    theta = PRIOR.sample((64,))
    x = images(theta)
    net = classifier_nn("mlp", z_score_x="none", hidden_features=16,
                        embedding_net_x=EmbeddingConfig(features=4, widths=(8,)).build(2).fit_standardization(x))(
        theta, x)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def test_recalibrated_marginals_are_the_mapped_cdfs_and_the_joint_is_reweighted_per_axis(estimator) -> None:
    torch.manual_seed(1)
    x = images(PRIOR.sample((1,)))[0]
    raw = GridPosterior(estimator, PRIOR, resolution=RES, x_o=x)
    recal = MarginalRecalibration(weights=((0.05, 0.15, 0.5, 0.3), (0.4, 0.1, 0.5)))
    post = raw.with_recalibration(recal)
    assert post.recalibration is recal and "recalibrated" in post._purpose
    # the marginal CDF at every cell edge is R_k(F_k) of the estimator's
    for k, n in enumerate(RES):
        edges = torch.zeros(n + 1, 2)
        edges[:, 1 - k] = 0.5  # any value of the other parameter
        edges[:, k] = torch.linspace(0.0, 1.0, n + 1) * (post.high[k] - post.low[k]) + post.low[k]
        before = raw.marginal_cdf(edges)[:, k].numpy()
        after = post.marginal_cdf(edges)[:, k].numpy()
        np.testing.assert_allclose(after, recal.cdf(k, before), atol=1e-7)
    # the change is one factor per axis: log M'_ij - log M_ij = f_i + g_j (zero double differences)
    diff = (post.grid_log_prob() - raw.grid_log_prob()).double().reshape(RES)
    double = diff[1:, 1:] - diff[1:, :-1] - diff[:-1, 1:] + diff[:-1, :-1]
    assert float(double.abs().max()) < 1e-4 and float(diff.abs().max()) > 0.1
    # normalised, consistent with log_prob inside the cells, followed by the draws
    mass = (post.grid_log_prob().double() + post.log_cell_volume).exp()
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(post.log_prob(post.grid), post.grid_log_prob(), rtol=1e-4, atol=1e-4)
    theta = PRIOR.sample((5,))
    torch.testing.assert_close(post.potential(theta), post.log_prob(theta))  # sbi's path sees it too
    draws = post.sample((20000,))
    cells = ((draws - post.low) / post.cell_width).floor().long()
    freq = torch.bincount(cells[:, 0] * RES[1] + cells[:, 1], minlength=math.prod(RES)).double() / 20000
    assert float((freq - mass).abs().max()) < 0.01
    # a batch of observations is recalibrated one by one, as a single one is
    many = post.sample_batched((5000,), torch.stack([x, x]))
    assert abs(float(many[:, 0, 0].mean()) - float(draws[:, 0].mean())) < 0.02
    # the identity changes nothing
    same = raw.with_recalibration(MarginalRecalibration(weights=((1.0,), (0.25,) * 4)))
    assert same.recalibration.is_identity()
    torch.testing.assert_close(same.grid_log_prob(), raw.grid_log_prob(), rtol=0, atol=1e-5)


def test_fit_recalibration_undoes_a_known_miscalibration(estimator) -> None:
    """Truths drawn from the estimator's posterior sharpened (τ = 3): the estimator's own posterior is
    under-confident for them and fails SBC; recalibrated on 1000 such pairs it passes on 1000 fresh ones."""
    base = GridPosterior(estimator, PRIOR, resolution=RES)
    truth = base.with_temperature(3.0)

    def pairs(seed: int) -> tuple[Tensor, Tensor]:
        torch.manual_seed(seed)
        x = images(PRIOR.sample((1000,)))
        return truth.sample_batched((1,), x)[0], x

    theta_fit, x_fit = pairs(2)
    theta_new, x_new = pairs(3)
    u_raw = grid_pit(base, theta_new, x_new)
    assert max(stats.kstest(u, "uniform").pvalue for u in u_raw.T) < 1e-3  # the estimator is under-confident
    recal = fit_recalibration(base, theta_fit, x_fit, names=("a", "b"), info={"seed": 2})
    assert recal.num_pairs == 1000 and recal.names == ("a", "b") and recal.info == {"seed": 2}
    # the fitted PIT distribution R has the fit pairs' PIT mean and variance (shifted, narrower than uniform)
    u_fit = grid_pit(base, theta_fit, x_fit)
    for k in range(2):
        mean, var = recal.pit_moments(k)
        assert abs(mean - u_fit[:, k].mean()) < 0.02 and abs(12 * var - 12 * u_fit[:, k].var()) < 0.1
    assert not recal.is_identity(0) and not recal.is_identity(1)
    u = grid_pit(base.with_recalibration(recal), theta_new, x_new)
    for k in range(2):
        assert stats.kstest(u[:, k], "uniform").pvalue > 0.01
        # the PIT variance moves towards 1/12 by most of the way
        before, after = 12 * u_raw[:, k].var(), 12 * u[:, k].var()
        assert abs(after - 1) < 0.6 * abs(before - 1) and abs(u[:, k].mean() - 0.5) < 0.04
    # the calibration report sees the same (on 300 of them): ranks uniform after
    report = calibration_report(base.with_recalibration(recal), theta_new[:300], x_new[:300],
                                num_posterior_samples=200, c2st=False, seed=0)
    assert min(report.ks_pvalues) > 0.01
    # pairs from the estimator's own posterior need (almost) no correction
    torch.manual_seed(4)
    x = images(PRIOR.sample((300,)))
    own = fit_recalibration(base, base.sample_batched((1,), x)[0], x)
    for k in range(2):  # BIC keeps the identity, or a map that hardly moves the PIT distribution
        mean, var = own.pit_moments(k)
        assert own.is_identity(k) or (abs(mean - 0.5) < 0.03 and 0.85 < 12 * var < 1.15)
    # fitting ignores the posterior's own recalibration
    again = fit_recalibration(base.with_recalibration(recal), theta_fit, x_fit)
    assert all(np.allclose(a, b, atol=1e-8) for a, b in zip(again.weights, recal.weights, strict=True))


def test_bad_recalibrations_are_refused_with_the_bad_value(estimator, tmp_path) -> None:
    for weights, match in ((((0.5, 0.6),), r"weights\[0\]=\(0.5, 0.6\).*summing to 1"),
                           (((1.0,), (-0.5, 1.5)), r"weights\[1\].*>= 0"), (((), (1.0,)), r"weights\[0\]"),
                           (((math.nan, 1.0),), "finite"), (((True,),), "weights"), ((), "one vector per parameter"),
                           (((1.0,),) * 4, "one vector per parameter"), (((1 / 65,) * 65,), "1 to 64")):
        with pytest.raises(ValueError, match=match):
            MarginalRecalibration(weights=weights)
    with pytest.raises(ValueError, match="for 2 parameters"):
        GridPosterior(estimator, PRIOR, resolution=RES, recalibration=MarginalRecalibration(weights=((1.0,),)))
    theta = PRIOR.sample((49,))
    posterior = GridPosterior(estimator, PRIOR, resolution=RES)
    with pytest.raises(ValueError, match="at least 50"):
        fit_recalibration(posterior, theta, images(theta))
    theta = PRIOR.sample((50,))
    with pytest.raises(ValueError, match="max_degree=0"):
        fit_recalibration(posterior, theta, images(theta), max_degree=0)
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a glsbi recalibration"):
        MarginalRecalibration.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(ValueError, match="not a glsbi recalibration file"):
        MarginalRecalibration.load(tmp_path / "y.json")


def test_a_recalibration_file_round_trips_and_applies_only_to_its_estimator(tmp_path) -> None:
    (tmp_path / "estimator.pt").write_bytes(b"weights")
    recal = MarginalRecalibration(weights=((0.5, 0.3, 0.2), (1.0,)), num_pairs=300, names=("eta", "field"),
                                  info={"estimators": ["estimator.pt"], "bank_seed": 2,
                                        "estimator_sha256": [file_sha256(tmp_path / "estimator.pt")]})
    path = recal.save(tmp_path / RECALIBRATION_FILE)
    assert MarginalRecalibration.load(path) == recal
    # PIT mean of the mixture of Beta(1, 3), Beta(2, 2), Beta(3, 1): (0.5·1 + 0.3·2 + 0.2·3) / 4
    assert "mean 0.425" in recal.describe()[0] and "left as it is" in recal.describe()[1]
    assert recalibration_for(tmp_path / "estimator.pt") == recal
    assert recalibration_for(tmp_path / "estimator_1.pt") is None  # fitted for another estimator
    assert recalibration_for(tmp_path / "elsewhere" / "estimator.pt") is None  # no file beside it
    (tmp_path / "estimator.pt").write_bytes(b"retrained weights")
    assert recalibration_for(tmp_path / "estimator.pt") is None  # another network under the same name
