"""glsbi_plugin.inference: sbi builders, the train helper and the grid posterior.

The toy problem has a known answer: ``x`` is a ``(2, 8, 8)`` image whose channel ``c`` is
``θ_c + 0.5 · noise``, so the exact posterior of ``θ_c`` is a normal with mean ``mean(x_c)`` and
sd ``0.5 / 8``, truncated to the prior's ``[0, 1]``. The embedding uses a 16-channel stem: with 8
channels ``ResNetGAP``'s GroupNorm has one channel per group, which removes each image's mean
brightness, so a 1-stage width-8 network cannot see θ at all in this toy.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from sbi.diagnostics import run_sbc, run_tarp
from sbi.utils import BoxUniform

from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import (
    METHODS,
    GridPosterior,
    MemoryTracker,
    RepeatedRowsEmbedding,
    as_batched_x,
    build_inference,
    train,
)

SIGMA = 0.5
SMALL = EmbeddingConfig(features=8, widths=(16,))


def toy_simulator(theta: torch.Tensor) -> torch.Tensor:
    """``(n, 2)`` in ``[0, 1]²`` → ``(n, 2, 8, 8)`` images of mean brightness θ_c plus noise."""
    return theta[:, :, None, None] + SIGMA * torch.randn(theta.shape[0], 2, 8, 8)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These networks are tiny: one thread loses little on an idle CPU, while two threads on a busy,
    shared CPU were measured 20× slower (OpenMP threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prior() -> BoxUniform:
    return BoxUniform(torch.zeros(2), torch.ones(2))


@pytest.fixture(scope="module")
def toy(prior: BoxUniform, tmp_path_factory: pytest.TempPathFactory):
    """A trained NRE_C on the toy problem (seeded), its grid posterior and held-out test pairs."""
    torch.manual_seed(0)
    theta = prior.sample((800,))
    x = toy_simulator(theta)
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("toy"))
    try:
        inference = build_inference("NRE_C", prior, SMALL, x_shape=(2, 8, 8))
        estimator = train(inference, theta, x, max_epochs=6, training_batch_size=50, learning_rate=3e-3)
    finally:
        os.chdir(cwd)
    posterior = GridPosterior(estimator, prior, resolution=64)
    theta_test = prior.sample((100,))
    return inference, estimator, posterior, theta_test, toy_simulator(theta_test)


# -- (a) known answer ---------------------------------------------------------------------------
def test_toy_posterior_concentrates_and_covers(toy) -> None:
    _, _, posterior, theta_test, x_test = toy
    theta_o, x_o = theta_test[:20], x_test[:20]
    intervals = torch.stack([posterior.credible_interval(0.9, x=x) for x in x_o])  # (20, 2, 2)
    covered = (intervals[..., 0] <= theta_o) & (theta_o <= intervals[..., 1])
    assert covered.float().mean() >= 0.8, f"90% intervals cover the truth in only {covered.float().mean():.0%}"
    width = (intervals[..., 1] - intervals[..., 0]).mean()
    assert 0.1 < width < 0.45, f"mean 90% width {width:.3f} (exact posterior: 0.206, prior: 0.9)"
    maps = torch.stack([posterior.map(x) for x in x_o])
    assert (maps - theta_o).abs().mean() < 0.12
    exact = x_o.mean(dim=(2, 3)).clamp(0, 1)  # the exact posterior's mode
    assert (maps - exact).abs().mean() < 0.1


def test_expected_coverage_with_run_sbc(toy) -> None:
    _, _, posterior, theta_test, x_test = toy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, dap = run_sbc(
            theta_test,
            x_test,
            posterior,
            num_posterior_samples=200,
            reduce_fns=posterior.log_prob,
            show_progress_bar=False,
        )
    assert dap.shape == (100, 2)
    rank = ranks[:, 0] / 200  # truth inside the α-HPD region iff rank > 1 - α
    for alpha in (0.5, 0.9):
        coverage = float((rank > 1 - alpha).float().mean())
        assert abs(coverage - alpha) < 0.15, f"expected coverage {coverage:.2f} at credibility {alpha}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, _ = run_sbc(theta_test, x_test, posterior, num_posterior_samples=100, show_progress_bar=False)
    assert ranks.shape == (100, 2) and 25 < float(ranks.mean()) < 75  # SBC ranks roughly uniform on [0, 100]


def test_run_tarp_accepts_grid_posterior(toy) -> None:
    _, _, posterior, theta_test, x_test = toy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ecp, alpha = run_tarp(theta_test, x_test, posterior, num_posterior_samples=100, show_progress_bar=False)
    assert ecp.shape == alpha.shape and torch.all(ecp.diff() >= 0)
    assert (ecp - alpha).abs().mean() < 0.2


# -- (c) agreement with sbi's potential ---------------------------------------------------------
def test_grid_matches_sbi_potential(toy) -> None:
    inference, estimator, posterior, _, x_test = toy
    sbi_posterior = inference.build_posterior(estimator, sample_with="rejection")
    for x_o in (x_test[:1], x_test[1]):  # with and without the batch dimension
        ours = posterior.grid_log_prob(x_o)
        theirs = sbi_posterior.potential(posterior.grid, x=as_batched_x(x_o, (2, 8, 8)))
        diff = (ours - ours.logsumexp(0)) - (theirs - theirs.logsumexp(0))
        assert diff.abs().max() < 1e-4
        exact_at_grid = posterior.log_prob(posterior.grid, x=x_o)  # the continuous log_prob agrees on the grid
        assert torch.allclose(exact_at_grid, ours, atol=1e-4)
    assert posterior.potential(posterior.grid[:5], x=x_test[1]).shape == (5,)  # unbatched x accepted


def test_npe_grid_matches_sbi_potential(prior: BoxUniform, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    theta = prior.sample((200,))
    x = toy_simulator(theta)
    for model in ("zuko_nsf", "nsf"):
        inference = build_inference("NPE", prior, SMALL, model=model, num_transforms=2)
        estimator = train(inference, theta, x, max_epochs=1)
        posterior = GridPosterior(estimator, prior, resolution=30)
        theirs = inference.build_posterior(estimator).potential(posterior.grid, x=x[:1])
        ours = posterior.grid_log_prob(x[0])
        assert ((ours - ours.logsumexp(0)) - (theirs - theirs.logsumexp(0))).abs().max() < 1e-4


@pytest.mark.parametrize("dim", [1, 3])
def test_grid_in_one_and_three_dimensions(dim: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    prior = BoxUniform(-torch.ones(dim), 2 * torch.ones(dim))
    theta = prior.sample((100,))
    x = theta[:, :, None, None] + SIGMA * torch.randn(100, dim, 6, 6)
    inference = build_inference("NRE_A", prior, EmbeddingConfig(features=4, widths=(8,)))
    estimator = train(inference, theta, x, max_epochs=1)
    posterior = GridPosterior(estimator, prior, resolution=12 if dim == 3 else 50, x_o=x[0])
    assert posterior.grid.shape == (12**3 if dim == 3 else 50, dim)
    theirs = inference.build_posterior(estimator, sample_with="rejection").potential(posterior.grid, x=x[:1])
    ours = posterior.grid_log_prob()
    assert ((ours - ours.logsumexp(0)) - (theirs - theirs.logsumexp(0))).abs().max() < 1e-4
    samples = posterior.sample((300,))
    assert samples.shape == (300, dim) and torch.all((samples >= -1) & (samples <= 2))
    assert posterior.map().shape == (dim,) and posterior.credible_interval(0.8).shape == (dim, 2)
    assert len(posterior.marginals()) == dim
    for axis, density in posterior.marginals():
        assert torch.isclose(density.sum() * (axis[1] - axis[0]), torch.tensor(1.0), atol=1e-4)


# -- grid posterior API -------------------------------------------------------------------------
def test_grid_posterior_api(toy, prior: BoxUniform) -> None:
    _, estimator, posterior, _, x_test = toy
    with pytest.raises(ValueError, match="default x"):
        posterior.sample((3,))
    p = GridPosterior(estimator, prior, resolution=(40, 50), x_o=x_test[0])
    assert p.grid.shape == (2000, 2) and p.default_x.shape == (1, 2, 8, 8)
    samples = p.sample((4, 25))
    assert samples.shape == (4, 25, 2)
    assert torch.all((samples >= 0) & (samples <= 1))
    batched = p.sample_batched((30,), x=x_test[:7])
    assert batched.shape == (30, 7, 2)
    # the grid density integrates to one; marginals too
    assert torch.isclose(p.grid_log_prob().exp().sum() * p.cell_width.prod(), torch.tensor(1.0), atol=1e-4)
    for axis, density in p.marginals():
        assert torch.isclose(density.sum() * (axis[1] - axis[0]), torch.tensor(1.0), atol=1e-4)
    ci = p.credible_interval(0.5)
    assert ci.shape == (2, 2) and torch.all(ci[:, 0] < ci[:, 1])
    # samples follow the grid: their marginal 50% interval holds about half of them
    many = p.sample((4000,))
    inside = ((many >= ci[:, 0]) & (many <= ci[:, 1])).float().mean(0)
    assert torch.allclose(inside, torch.full((2,), 0.5), atol=0.05)
    # sample_batched for one x agrees in distribution with sample
    one = p.sample_batched((4000,), x=x_test[0])[:, 0]
    assert torch.allclose(one.mean(0), many.mean(0), atol=0.02)
    # several x in sample/log_prob are i.i.d. trials: the posterior narrows
    two = p.credible_interval(0.9, x=toy_simulator(torch.full((4, 2), 0.5)))
    assert torch.all(two[:, 1] - two[:, 0] < p.credible_interval(0.9)[:, 1] - p.credible_interval(0.9)[:, 0] + 0.05)


# -- (d) bad input ------------------------------------------------------------------------------
def test_bad_input_raises(toy, prior: BoxUniform, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, estimator, posterior, _, x_test = toy
    theta = prior.sample((20,))
    x = toy_simulator(theta)
    inference = build_inference("NRE_A", prior, SMALL, x_shape=(2, 8, 8))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        train(inference, torch.rand(20, 3), x)
    with pytest.raises(ValueError, match="floating"):
        train(inference, torch.ones(20, 2, dtype=torch.int64), x)
    with pytest.raises(ValueError, match=r"outside the prior support \[0, 1\]"):
        train(inference, theta + 1.5, x)
    with pytest.raises(ValueError, match=r"\(n, 2, 8, 8\)"):
        train(inference, theta, x[:, :1])
    with pytest.raises(ValueError, match="same number"):
        train(inference, theta, x[:10])
    with pytest.raises(TypeError, match="max_epochs"):
        train(inference, theta, x, max_num_epochs=3)
    with pytest.raises(TypeError, match="unexpected keywords"):
        train(inference, theta, x, num_atomz=3)
    with pytest.raises(TypeError, match="resume"):
        train(inference, theta, x, resume_training=True)
    with pytest.raises(ValueError, match="max_epochs"):
        train(inference, theta, x, max_epochs=0)
    with pytest.raises(TypeError, match="unexpected keywords"):
        build_inference("NRE_C", prior, SMALL, hiden_features=3)
    with pytest.raises(TypeError, match="unexpected keywords"):
        build_inference("NPE", prior, SMALL, num_transform=3)
    with pytest.raises(ValueError, match="method"):
        build_inference("SNLE", prior, SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        posterior.sample((3,), x=torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="outside the prior support"):
        posterior.log_prob(torch.tensor([[0.5, 1.2]]), x=x_test[0])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        posterior.log_prob(torch.zeros(3, 3), x=x_test[0])
    with pytest.raises(TypeError, match="unexpected keyword"):
        posterior.sample_batched((3,), x=x_test[:2], method="slice_np")
    with pytest.raises(ValueError, match="level"):
        posterior.credible_interval(1.5, x=x_test[0])
    with pytest.raises(ValueError, match="dimension <= 3"):
        GridPosterior(estimator, BoxUniform(torch.zeros(4), torch.ones(4)))
    with pytest.raises(ValueError, match="resolution"):
        GridPosterior(estimator, prior, resolution=(10, 10, 10))
    with pytest.raises(TypeError, match="RatioEstimator"):
        GridPosterior(torch.nn.Linear(2, 2), prior)


def test_repeated_rows_embedding_is_exact_and_embeds_once() -> None:
    net = SMALL.build(2)
    seen: list[int] = []
    net.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    wrapped = RepeatedRowsEmbedding(net)
    x = torch.randn(3, 2, 8, 8)
    repeated = x.repeat_interleave(torch.tensor([4, 1, 6]), dim=0)  # as sbi's repeat_rows does
    out = wrapped(repeated)
    assert seen[-1] == 3 and out.shape == (11, 8)
    assert torch.allclose(out, net(repeated), atol=1e-6)
    grad_wrapped = torch.autograd.grad(wrapped(repeated).sum(), net.head[0].weight)[0]
    grad_plain = torch.autograd.grad(net(repeated).sum(), net.head[0].weight)[0]
    assert torch.allclose(grad_wrapped, grad_plain, atol=1e-5)


# -- (e) no ./sbi-logs; epochs are exact ---------------------------------------------------------
def test_no_sbi_logs_and_exact_epochs(prior: BoxUniform, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    theta = prior.sample((100,))
    x = toy_simulator(theta)
    inference = build_inference("NRE_B", prior, EmbeddingConfig(features=4, widths=(8,)))
    train(inference, theta, x, max_epochs=1, stop_after_epochs=1)
    assert not (tmp_path / "sbi-logs").exists()
    assert isinstance(inference._tracker, MemoryTracker) and inference._tracker.metrics
    assert inference.summary["epochs_trained"] == [1] and len(inference.summary["validation_loss"]) == 1
    # the pitfalls themselves, in plain sbi 0.27: max_num_epochs=1 trains 2 epochs; logs go to ./sbi-logs
    import sbi.inference

    plain = sbi.inference.NRE_B(prior, show_progress_bars=False)
    assert (tmp_path / "sbi-logs").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.append_simulations(theta, x.flatten(1)).train(max_num_epochs=1)
    assert plain.summary["epochs_trained"] == [2]


# -- (f) every method trains one epoch and samples -----------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_every_method_one_epoch(method: str, prior: BoxUniform, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(2)
    theta = prior.sample((120,))
    x = toy_simulator(theta)
    inference = build_inference(method, prior, EmbeddingConfig(features=4, widths=(8,)))
    estimator = train(inference, theta, x, max_epochs=1, training_batch_size=32)
    assert inference.summary["epochs_trained"] == [1]
    samples = GridPosterior(estimator, prior, resolution=20).sample((10,), x=x[0])
    assert samples.shape == (10, 2) and torch.all((samples >= 0) & (samples <= 1))
    assert not (tmp_path / "sbi-logs").exists()


# -- (b) end to end with the TDGL simulator -----------------------------------------------------
def test_tdgl_end_to_end(tmp_path, monkeypatch) -> None:
    from sbi.inference import simulate_for_sbi

    from glsbi_plugin import make_prior, make_simulator
    from glsbi_plugin.simulators import TDGLConfig

    monkeypatch.chdir(tmp_path)
    bounds = {"field": (0.1, 0.4)}
    simulator = make_simulator(config=TDGLConfig(shape=(16, 16), steps=50), bounds=bounds)
    prior = make_prior(bounds=bounds)
    theta, x = simulate_for_sbi(
        simulator, prior, num_simulations=64, simulation_batch_size=None, seed=0, show_progress_bar=False
    )
    assert x.shape == (64, 2, 16, 16)
    low, high = prior.support.base_constraint.lower_bound, prior.support.base_constraint.upper_bound
    x_o = x[-1]  # held out, (C, H, W): no batch dimension (a new batch size would recompile the simulator)
    theta, x = theta[:-1], x[:-1]
    for method in ("NRE_C", "NPE"):
        inference = build_inference(method, prior, SMALL, x_shape=simulator.x_shape)
        estimator = train(inference, theta, x, max_epochs=2, training_batch_size=16)
        posterior = GridPosterior(estimator, prior, resolution=32, x_o=x_o)
        samples = posterior.sample((200,))
        assert samples.shape == (200, 2)
        assert torch.all((samples >= low) & (samples <= high))
        assert torch.all((posterior.map() >= low) & (posterior.map() <= high))
    assert not (tmp_path / "sbi-logs").exists()
