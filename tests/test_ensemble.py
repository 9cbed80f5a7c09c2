"""Ensembles and temperature of ``GridPosterior``, ``fit_temperature``, ``train_ensemble`` and the
per-epoch progress of ``train`` (issue: calibrated by default)."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.inference import DirectPosterior, EnsemblePosterior
from sbi.neural_nets import classifier_nn, posterior_nn
from sbi.utils import BoxUniform
from torch import Tensor, nn

from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import (
    ClassifierConfig,
    EpochRecord,
    GridPosterior,
    build_inference,
    fit_temperature,
    train,
    train_ensemble,
)

PRIOR = BoxUniform(torch.zeros(2), torch.tensor([1.0, 2.0]))
TINY = EmbeddingConfig(features=4, widths=(8,))


def images(theta: Tensor) -> Tensor:
    """``(n, 2)`` → ``(n, 2, 8, 8)``: mean brightness θ_c plus noise."""
    return theta[:, :, None, None] + 0.5 * torch.randn(theta.shape[0], 2, 8, 8)


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    theta = PRIOR.sample((64,))
    return theta, images(theta)


def ratio_estimator(data: tuple[Tensor, Tensor], seed: int, builder=classifier_nn, model: str = "mlp") -> nn.Module:  # noqa: ANN001
    theta, x = data
    torch.manual_seed(seed)
    key = "embedding_net" if builder is posterior_nn else "embedding_net_x"
    kwargs = {"num_transforms": 2} if builder is posterior_nn else {}
    net = builder(model, z_score_x="none", hidden_features=16, **{key: TINY.build(2).fit_standardization(x)},
                  **kwargs)(theta, x)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def test_ensemble_is_the_mixture_of_its_members(data) -> None:
    _, x = data
    members = [ratio_estimator(data, s) for s in (1, 2, 3)]
    single = [GridPosterior(m, PRIOR, resolution=(12, 10), x_o=x[0]) for m in members]
    mix = GridPosterior(members, PRIOR, resolution=(12, 10), x_o=x[0])
    assert mix.num_members == 3 and single[0].num_members == 1
    dens = torch.stack([p.grid_log_prob().exp() for p in single]).mean(0)
    torch.testing.assert_close(mix.grid_log_prob().exp(), dens, rtol=1e-5, atol=1e-7)
    # the continuous density at arbitrary θ is the mean of the members' normalised densities
    theta = PRIOR.sample((7,))
    expected = torch.stack([p.log_prob(theta) for p in single]).exp().mean(0).log()
    torch.testing.assert_close(mix.log_prob(theta), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mix.potential(theta), expected, rtol=1e-5, atol=1e-5)
    # the members disagree, so the mixture is not any one of them
    assert (mix.grid_log_prob() - single[0].grid_log_prob()).abs().max() > 1e-2
    # sampling follows the mixture's cell masses
    draws = mix.sample((20000,))
    cells = ((draws - mix.low) / mix.cell_width).floor().long()
    idx = cells[:, 0] * 10 + cells[:, 1]
    freq = torch.bincount(idx, minlength=120).double() / 20000
    mass = mix.grid_log_prob().exp().double() * math.exp(mix.log_cell_volume)
    assert float((freq - mass).abs().max()) < 0.01


def test_an_ensemble_refuses_mixed_families_and_shapes(data) -> None:
    nre = ratio_estimator(data, 1)
    npe = ratio_estimator(data, 1, builder=posterior_nn, model="zuko_nsf")
    with pytest.raises(ValueError, match="one family"):
        GridPosterior([nre, npe], PRIOR, resolution=8)
    with pytest.raises(ValueError, match="at least one estimator"):
        GridPosterior([], PRIOR, resolution=8)
    with pytest.raises(ValueError, match="temperature"):
        GridPosterior(nre, PRIOR, resolution=8, temperature=0.0)


@pytest.mark.parametrize("kind", ["ratio", "flow"])
def test_temperature_scales_the_likelihood_part(data, kind) -> None:
    _, x = data
    est = ratio_estimator(data, 4) if kind == "ratio" else ratio_estimator(data, 4, posterior_nn, "zuko_nsf")
    base = GridPosterior(est, PRIOR, resolution=(12, 10), x_o=x[1])
    hot = base.with_temperature(2.0)
    assert hot.temperature == 2.0 and torch.equal(hot.default_x, base.default_x)
    # the prior is uniform: p_τ ∝ p_1^τ on the grid
    expected = torch.log_softmax(2.0 * base.grid_log_prob(), 0)
    torch.testing.assert_close(torch.log_softmax(hot.grid_log_prob(), 0), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hot.log_prob(hot.grid), hot.grid_log_prob(), rtol=1e-5, atol=1e-5)
    assert hot.marginals()[0][1].max() > base.marginals()[0][1].max()  # sharper


def test_fit_temperature_recovers_a_known_temperature(data) -> None:
    """Pairs drawn from the posterior tempered at τ0 = 2: the proper score peaks near τ0."""
    est = ratio_estimator(data, 5)
    base = GridPosterior(est, PRIOR, resolution=(16, 16))
    truth = base.with_temperature(2.0)
    torch.manual_seed(7)
    x = images(PRIOR.sample((300,)))
    theta = truth.sample_batched((1,), x)[0]  # θ_i ~ p_2(θ | x_i)
    tau, scores = fit_temperature(base, theta, x)
    assert scores.shape == (61,)
    assert 1.6 < tau < 2.5
    tau_mix, _ = fit_temperature(GridPosterior([est, est], PRIOR, resolution=(16, 16)), theta, x)
    assert tau_mix == pytest.approx(tau)  # a mixture of identical members is the member
    with pytest.raises(ValueError, match="temperatures"):
        fit_temperature(base, theta, x, temperatures=[1.0, -1.0])


def test_calibration_report_accepts_ensembles(data) -> None:
    torch.manual_seed(3)
    theta = PRIOR.sample((40,))
    x = images(theta)
    grid = GridPosterior([ratio_estimator(data, 1), ratio_estimator(data, 2)], PRIOR, resolution=12)
    report = calibration_report(grid, theta, x, num_posterior_samples=50, c2st=False)
    assert report.grid_coverage is not None and report.ranks.shape == (40, 2)
    flows = [DirectPosterior(ratio_estimator(data, s, posterior_nn, "zuko_nsf"), PRIOR) for s in (1, 2)]
    report = calibration_report(EnsemblePosterior(flows), theta, x, num_posterior_samples=50, c2st=False)
    assert report.hpd_ranks is not None and report.ranks.shape == (40, 2)


def test_train_reports_every_epoch_and_ensembles_differ() -> None:
    torch.manual_seed(0)
    theta = PRIOR.sample((200,))
    x = images(theta)
    records: list[EpochRecord] = []
    inference = build_inference("NRE_C", PRIOR, TINY, ClassifierConfig(hidden_features=16))
    train(inference, theta, x, max_epochs=3, training_batch_size=50, progress=records.append)
    assert [r.epoch for r in records] == [1, 2, 3] and all(r.max_epochs == 3 for r in records)
    val = inference.summary["validation_loss"]
    assert [r.validation_loss for r in records] == pytest.approx(val)
    best = min(range(3), key=lambda i: val[i]) + 1
    assert records[-1].best_epoch == best and records[-1].best_validation_loss == pytest.approx(min(val))
    assert "epoch 3/3" in records[-1].describe()

    state = torch.random.get_rng_state()
    seen: list[tuple[int, int]] = []
    members = train_ensemble("NRE_C", PRIOR, theta, x, members=2, seed=11, embedding=TINY,
                             estimator=ClassifierConfig(hidden_features=16), max_epochs=2,
                             training_batch_size=50, progress=lambda k, r: seen.append((k, r.epoch)))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert seen == [(0, 1), (0, 2), (1, 1), (1, 2)]
    w0, w1 = (next(m.parameters()).detach() for m in members)
    assert not torch.equal(w0, w1)
    again = train_ensemble("NRE_C", PRIOR, theta, x, members=1, seed=11, embedding=TINY,
                           estimator=ClassifierConfig(hidden_features=16), max_epochs=2, training_batch_size=50)
    torch.testing.assert_close(next(again[0].parameters()), w0)  # member k is seeded by seed + k
    with pytest.raises(ValueError, match="members"):
        train_ensemble("NRE_C", PRIOR, theta, x, members=0)


def test_log_mean_pool_averages_log_densities(data) -> None:
    _, x = data
    members = [ratio_estimator(data, s) for s in (1, 2, 3)]
    single = [GridPosterior(m, PRIOR, resolution=(12, 10), x_o=x[0]) for m in members]
    pool = GridPosterior(members, PRIOR, resolution=(12, 10), x_o=x[0], combine="log-mean")
    expected = torch.log_softmax(torch.stack([p.grid_log_prob() for p in single]).mean(0), 0)
    torch.testing.assert_close(torch.log_softmax(pool.grid_log_prob(), 0), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool.log_prob(pool.grid), pool.grid_log_prob(), rtol=1e-5, atol=1e-5)
    assert float((pool.grid_log_prob().exp() * math.exp(pool.log_cell_volume)).sum()) == pytest.approx(1, abs=1e-5)
    # a pool of identical members is the member; its temperature fit is the member's
    same = GridPosterior([members[0]] * 3, PRIOR, resolution=(12, 10), x_o=x[0], combine="log-mean")
    torch.testing.assert_close(same.grid_log_prob(), single[0].grid_log_prob(), rtol=1e-5, atol=1e-5)
    torch.manual_seed(2)
    theta_v = PRIOR.sample((30,))
    x_v = images(theta_v)
    tau_same, _ = fit_temperature(same, theta_v, x_v)
    tau_one, _ = fit_temperature(single[0], theta_v, x_v)
    assert tau_same == pytest.approx(tau_one)
    with pytest.raises(ValueError, match="combine"):
        GridPosterior(members, PRIOR, combine="mean")


def test_marginal_moments_are_the_grid_density_moments(data) -> None:
    """Mean and std from the marginals equal those of the joint cell masses over the whole grid."""
    _, x = data
    post = GridPosterior([ratio_estimator(data, 1), ratio_estimator(data, 2)], PRIOR, resolution=(12, 10), x_o=x[0])
    mean, std = post.marginal_moments()
    mass = (post.grid_log_prob().double() + post.log_cell_volume).exp()
    grid = post.grid.double()
    expected_mean = (mass[:, None] * grid).sum(0)
    expected_std = ((mass[:, None] * (grid - expected_mean) ** 2).sum(0)).sqrt()
    torch.testing.assert_close(mean, expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, expected_std, rtol=1e-5, atol=1e-6)
    assert mean.dtype == torch.float64 and bool((std > 0).all())
