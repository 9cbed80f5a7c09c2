"""glsbi_plugin.inference: sbi builders, the train helper and the grid posterior.

The toy problem has a known answer: ``x`` is a ``(2, 8, 8)`` image whose channel ``c`` is
``θ_c + 0.5 · noise``, so the exact posterior of ``θ_c`` is a normal with mean ``mean(x_c)`` and
sd ``0.5 / 8``, truncated to the prior's ``[0, 1]``. The embedding uses a 16-channel stem: with 8
channels ``ResNetGAP``'s GroupNorm has one channel per group, which removes each image's mean
brightness, so a 1-stage width-8 network cannot see θ at all in this toy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import pytest
import torch
from sbi.diagnostics import run_sbc, run_tarp
from sbi.neural_nets import classifier_nn, posterior_nn
from sbi.utils import BoxUniform
from torch import nn

from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import (
    CLASSIFIER_MODELS,
    FLOW_MODELS,
    METHODS,
    ClassifierConfig,
    FlowConfig,
    GridPosterior,
    MemoryTracker,
    RepeatedRowsEmbedding,
    as_batched_x,
    build_inference,
    default_estimator_config,
    train,
)

SIGMA = 0.5
SMALL = EmbeddingConfig(features=8, widths=(16,))


def toy_simulator(theta: torch.Tensor) -> torch.Tensor:
    """``(n, 2)`` in ``[0, 1]²`` → ``(n, 2, 8, 8)`` images of mean brightness θ_c plus noise."""
    return theta[:, :, None, None] + SIGMA * torch.randn(theta.shape[0], 2, 8, 8)


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
        inference = build_inference("NPE", prior, SMALL, FlowConfig(model=model, num_transforms=2))
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
    with pytest.raises(TypeError, match="hiden_features"):  # a typo is refused by the dataclass
        build_inference("NRE_C", prior, SMALL, ClassifierConfig(hiden_features=3))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="num_transform"):
        build_inference("NPE", prior, SMALL, FlowConfig(num_transform=3))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="hidden_features"):  # estimator options are no longer keywords
        build_inference("NRE_C", prior, SMALL, hidden_features=3)  # type: ignore[call-arg]
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
    from glsbi_plugin.physics import TDGLConfig

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


# -- (g) typed estimator options -----------------------------------------------------------------
TINY = EmbeddingConfig(features=4, widths=(8,))

# (method, our options, the keywords the same network took in sbi before the configs, beyond
# model/hidden_features): every flow model, each with a non-default option where it has one
SBI_EQUIVALENTS = [
    ("NRE_A", ClassifierConfig(), {}),
    ("NRE_B", ClassifierConfig(), {}),
    ("NRE_C", ClassifierConfig(), {}),
    ("BNRE", ClassifierConfig(), {}),
    ("NRE_C", ClassifierConfig(hidden_features=8, norm_layer="none"), {"norm_layer": nn.Identity}),
    ("NRE_C", ClassifierConfig(model="resnet"), {}),
    (
        "NRE_C",
        ClassifierConfig(
            model="resnet", hidden_features=16, num_blocks=3, dropout_probability=0.1, use_batch_norm=True
        ),
        {"num_blocks": 3, "dropout_probability": 0.1, "use_batch_norm": True},
    ),
    ("NRE_A", ClassifierConfig(model="linear"), {}),
    ("NPE", FlowConfig(), {}),
    (
        "NPE",
        FlowConfig(hidden_features=20, num_transforms=2, num_bins=6, passes=2, randperm=True),
        {"num_transforms": 2, "num_bins": 6, "passes": 2, "randperm": True},
    ),
    (
        "NPE",
        FlowConfig(model="nsf", num_bins=4, num_blocks=1, tail_bound=4.0, dropout_probability=0.2),
        {"num_bins": 4, "num_blocks": 1, "tail_bound": 4.0, "dropout_probability": 0.2},
    ),
    (
        "NPE",
        FlowConfig(model="maf", num_transforms=2, use_batch_norm=True),
        {"num_transforms": 2, "use_batch_norm": True},
    ),
    ("NPE", FlowConfig(model="maf_rqs", num_transforms=2, num_bins=5), {"num_transforms": 2, "num_bins": 5}),
    ("NPE", FlowConfig(model="mdn", num_components=3), {"num_components": 3}),
    ("NPE", FlowConfig(model="made", num_components=3), {"num_mixture_components": 3}),
    ("NPE", FlowConfig(model="zuko_maf", passes=2, randperm=True), {"passes": 2, "randperm": True}),
    ("NPE", FlowConfig(model="zuko_nice", randmask=True), {"randmask": True}),
    ("NPE", FlowConfig(model="zuko_naf", num_transforms=2, signal=4), {"num_transforms": 2, "signal": 4}),
    ("NPE", FlowConfig(model="zuko_unaf", num_transforms=2), {"num_transforms": 2}),
    ("NPE", FlowConfig(model="zuko_sospf", degree=2, polynomials=2), {"degree": 2, "polynomials": 2}),
    ("NPE", FlowConfig(model="zuko_gf", components=3), {"components": 3}),
    ("NPE", FlowConfig(model="zuko_bpf", degree=5), {"degree": 5}),
]


def _toy_batch(dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, dim, generator=g), torch.randn(16, 2, 6, 6, generator=g)


def _head_parameters(net: nn.Module) -> int:
    """Parameters of the estimator outside the image embedding."""
    embedding = sum(p.numel() for m in net.modules() if isinstance(m, type(TINY.build(2))) for p in m.parameters())
    return sum(p.numel() for p in net.parameters()) - embedding


@pytest.mark.parametrize(("method", "config", "sbi_kwargs"), SBI_EQUIVALENTS, ids=lambda v: getattr(v, "model", None))
def test_estimator_config_builds_sbis_network(method: str, config, sbi_kwargs: dict, prior: BoxUniform) -> None:
    """Same parameters, same initial weights (same seed) as sbi's factory called with the old keywords."""
    theta, x = _toy_batch()
    inference = build_inference(method, prior, TINY, config)
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Unknown kwargs" warning from sbi reaches the user
        ours = inference._build_neural_net(theta, x)
    assert ours._glsbi_estimator_config is config
    torch.manual_seed(123)
    net = TINY.build(2).fit_standardization(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi's own warning for the keywords its config does not list
        if method == "NPE":
            make = posterior_nn(
                config.model, z_score_x="none", embedding_net=net, hidden_features=config.hidden_features, **sbi_kwargs
            )
        else:
            make = classifier_nn(
                config.model,
                z_score_x="none",
                embedding_net_x=RepeatedRowsEmbedding(net),
                hidden_features=config.hidden_features,
                **sbi_kwargs,
            )
    theirs = make(theta, x)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_default_estimators_are_sbis_defaults(prior: BoxUniform) -> None:
    theta, x = _toy_batch()
    mlp = build_inference("NRE_C", prior, TINY)._build_neural_net(theta, x)
    features = 2 + TINY.features  # [θ, embedding(x)]
    # Linear -> LayerNorm -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear(1), width 50
    assert _head_parameters(mlp) == (features * 50 + 50) + 100 + (50 * 50 + 50) + 100 + 51
    assert sum(isinstance(m, nn.LayerNorm) for m in mlp.modules()) == 2
    flow = build_inference("NPE", prior, TINY)._build_neural_net(theta, x)
    assert type(flow).__name__ == "ZukoFlow" and _head_parameters(flow) == 67540  # sbi 0.27's zuko_nsf
    from zuko.flows.autoregressive import MaskedAutoregressiveTransform

    transforms = [m for m in flow.modules() if isinstance(m, MaskedAutoregressiveTransform)]
    assert len(transforms) == 5 and all(t.shapes[0] == (10,) for t in transforms)  # 5 transforms, 10 bins
    assert default_estimator_config("NPE") == FlowConfig() and default_estimator_config("BNRE") == ClassifierConfig()
    assert ClassifierConfig().builder_kwargs() == {"hidden_features": 50, "norm_layer": nn.LayerNorm}
    assert FlowConfig().builder_kwargs() == {
        "hidden_features": 50,
        "num_transforms": 5,
        "num_bins": 10,
        "randperm": False,
    }


def test_estimator_options_reach_the_network() -> None:
    prior3 = BoxUniform(torch.zeros(3), torch.ones(3))
    theta, x = _toy_batch(3)
    resnet = build_inference("NRE_C", prior3, TINY, ClassifierConfig(model="resnet", num_blocks=3))
    assert len(resnet._build_neural_net(theta, x).net.blocks) == 3
    bare = build_inference("NRE_C", prior3, TINY, ClassifierConfig(norm_layer="none"))._build_neural_net(theta, x)
    assert not any(isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)) for m in bare.modules())
    batch = build_inference("NRE_C", prior3, TINY, ClassifierConfig(norm_layer="batch"))._build_neural_net(theta, x)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in batch.modules()) == 2
    from zuko.flows.autoregressive import MaskedAutoregressiveTransform

    flow = build_inference("NPE", prior3, TINY, FlowConfig(num_transforms=2, num_bins=6, passes=2))
    transforms = [m for m in flow._build_neural_net(theta, x).modules() if isinstance(m, MaskedAutoregressiveTransform)]
    assert [t.passes for t in transforms] == [2, 2]  # coupling, not the 3 passes of a 3-D autoregressive flow
    assert all(t.shapes[0] == (6,) for t in transforms)
    mdn = build_inference("NPE", prior3, TINY, FlowConfig(model="mdn", num_components=3))._build_neural_net(theta, x)
    assert mdn.net.num_components == 3


def test_estimator_configs_refuse_unknown_and_bad_options(prior: BoxUniform) -> None:
    with pytest.raises(TypeError, match="hiden_features"):
        ClassifierConfig(hiden_features=8)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="num_transform"):
        FlowConfig(num_transform=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ClassifierConfig("mlp")  # type: ignore[misc]  # keyword-only
    bad = [
        (ClassifierConfig, {"model": "cnn"}, r"model='cnn': allowed values are \('mlp', 'resnet', 'linear'\)"),
        (ClassifierConfig, {"hidden_features": 0}, "hidden_features=0: must be an integer >= 1"),
        (ClassifierConfig, {"hidden_features": 8.0}, "hidden_features=8.0: must be an integer >= 1"),
        (
            ClassifierConfig,
            {"norm_layer": "group"},
            r"norm_layer='group': allowed values are \('layer', 'batch', 'none'\)",
        ),
        (ClassifierConfig, {"model": "resnet", "dropout_probability": 1.0}, r"dropout_probability=1.0: .*\[0, 1\)"),
        (ClassifierConfig, {"model": "resnet", "use_batch_norm": 1}, "use_batch_norm=1: must be True or False"),
        (ClassifierConfig, {"num_blocks": 3}, r"num_blocks=3 has no effect with model='mlp'; .* \('resnet',\)"),
        (ClassifierConfig, {"model": "linear", "hidden_features": 8}, "hidden_features=8 has no effect"),
        (FlowConfig, {"model": "zuko_ncsf"}, r"model='zuko_ncsf': allowed values are \('zuko_nsf', 'zuko_maf'"),
        (FlowConfig, {"model": "mnpe"}, "model='mnpe'"),
        (FlowConfig, {"num_transforms": 0}, "num_transforms=0: must be an integer >= 1"),
        (FlowConfig, {"hidden_features": True}, "hidden_features=True: must be an integer >= 1"),
        (FlowConfig, {"passes": 0}, "passes=0: must be an integer >= 1 or None"),
        (FlowConfig, {"model": "nsf", "tail_bound": -1.0}, "tail_bound=-1.0: must be a finite number > 0"),
        (FlowConfig, {"model": "nsf", "tail_bound": float("inf")}, "tail_bound=inf"),
        (FlowConfig, {"model": "maf", "num_bins": 4}, r"num_bins=4 has no effect with model='maf'; .*'nsf'"),
        (FlowConfig, {"degree": 3}, "degree=3 has no effect with model='zuko_nsf'"),
        (FlowConfig, {"model": "mdn", "num_transforms": 2}, "num_transforms=2 has no effect with model='mdn'"),
    ]
    for cls, kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            cls(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FlowConfig().num_bins = 4  # type: ignore[misc]
    # the method decides the family
    with pytest.raises(ValueError, match="NPE needs a FlowConfig as estimator, got ClassifierConfig"):
        build_inference("NPE", prior, TINY, ClassifierConfig())
    with pytest.raises(ValueError, match="NRE_B needs a ClassifierConfig as estimator, got FlowConfig"):
        build_inference("NRE_B", prior, TINY, FlowConfig())
    with pytest.raises(ValueError, match="got dict"):
        build_inference("NRE_C", prior, TINY, {"hidden_features": 8})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):  # the old keywords are gone
        build_inference("NPE", prior, TINY, model="nsf")  # type: ignore[call-arg]


def test_estimator_configs_round_trip_through_json(prior: BoxUniform) -> None:
    configs = [
        ClassifierConfig(),
        ClassifierConfig(model="resnet", hidden_features=16, num_blocks=1, dropout_probability=0.25),
        FlowConfig(),
        FlowConfig(model="zuko_bpf", degree=5, passes=2),
        FlowConfig(model="nsf", tail_bound=5, dropout_probability=0),
    ]
    for config in configs:
        again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and hash(again) == hash(config) and again.builder_kwargs() == config.builder_kwargs()
    assert isinstance(configs[-1].tail_bound, float) and isinstance(configs[-1].dropout_probability, float)
    assert (
        FlowConfig.from_dict({}) == FlowConfig()
        and ClassifierConfig.from_dict({"model": "linear"}).builder_kwargs() == {}
    )
    with pytest.raises(ValueError, match=r"unknown FlowConfig keys \['bins'\]"):
        FlowConfig.from_dict({"bins": 4})
    with pytest.raises(ValueError, match="num_bins=0"):
        FlowConfig.from_dict({"num_bins": 0})
    # sbi's names: made's mixture size, and zuko's own default degree left to zuko
    assert FlowConfig(model="made", num_components=3).builder_kwargs() == {
        "hidden_features": 50,
        "num_mixture_components": 3,
    }
    assert "degree" not in FlowConfig(model="zuko_sospf").builder_kwargs()
    assert set(FlowConfig(model="zuko_naf").builder_kwargs()) == {
        "hidden_features",
        "num_transforms",
        "randperm",
        "signal",
    }
    assert len(CLASSIFIER_MODELS) == 3 and FLOW_MODELS[0] == "zuko_nsf"
    config = FlowConfig(num_transforms=2)
    inference = build_inference("NPE", prior, TINY, config)
    assert inference._glsbi_estimator_config is config and inference._glsbi_embedding is TINY
