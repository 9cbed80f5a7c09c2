"""The estimator adapters behind ``GridPosterior`` (``glsbi_plugin/inference/_grid.py``).

Each adapter embeds x once and evaluates the unnormalised log posterior on θ from that embedding;
here it is checked against sbi's own potential for the same estimator (``RatioBasedPotential``:
``log r + log prior``, also over i.i.d. trials; ``PosteriorBasedPotential``: the flow's
``log_prob``), for one ratio estimator, one zuko flow and two nflows flows. The estimators come
from sbi's own builders (``classifier_nn``/``posterior_nn``) around a tiny ``ResNetGAP`` on
``(2, 8, 8)`` images, untrained but with randomly perturbed weights so that the density depends
visibly on both θ and x (some flows start out near the identity).
"""

from __future__ import annotations

import pytest
import torch
from sbi.inference.potentials.posterior_based_potential import PosteriorBasedPotential
from sbi.inference.potentials.ratio_based_potential import RatioBasedPotential
from sbi.neural_nets import classifier_nn, posterior_nn
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.utils import BoxUniform
from torch import Tensor, nn

from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior
from glsbi_plugin.inference._grid import (
    _adapter_for,
    _GridState,
    _NFlowsFlowAdapter,
    _RatioAdapter,
    _ZukoFlowAdapter,
)

PRIOR = BoxUniform(torch.zeros(2), torch.tensor([1.0, 2.0]))  # log prior -log 2 inside: not 0
TINY = EmbeddingConfig(features=4, widths=(8,))
#: family id -> (sbi builder, model, builder keywords, expected adapter)
FAMILIES = {
    "nre_mlp": (classifier_nn, "mlp", {}, _RatioAdapter),
    "zuko_nsf": (posterior_nn, "zuko_nsf", {"num_transforms": 2}, _ZukoFlowAdapter),
    "nflows_nsf": (posterior_nn, "nsf", {"num_transforms": 2}, _NFlowsFlowAdapter),
    "nflows_maf": (posterior_nn, "maf", {"num_transforms": 2}, _NFlowsFlowAdapter),
}


def images(theta: Tensor) -> Tensor:
    """``(n, 2)`` → ``(n, 2, 8, 8)`` images of mean brightness θ_c plus noise."""
    return theta[:, :, None, None] + 0.5 * torch.randn(theta.shape[0], 2, 8, 8)


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    theta = PRIOR.sample((64,))
    return theta, images(theta)


def build(builder, model: str, kwargs: dict, data: tuple[Tensor, Tensor]) -> nn.Module:
    """An sbi estimator from ``builder(model, ...)`` on a tiny image embedding, weights perturbed."""
    theta, x = data
    embedding = TINY.build(2).fit_standardization(x)
    key = "embedding_net" if builder is posterior_nn else "embedding_net_x"
    estimator = builder(model, z_score_x="none", hidden_features=16, **{key: embedding}, **kwargs)(theta, x)
    with torch.no_grad():
        for param in estimator.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return estimator.eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, data):
    """``(name, estimator, expected adapter class)``."""
    builder, model, kwargs, adapter_cls = FAMILIES[request.param]
    torch.manual_seed(1)
    return request.param, build(builder, model, kwargs, data), adapter_cls


def sbi_potential(estimator: nn.Module, x_o: Tensor, theta: Tensor) -> Tensor:
    """sbi's potential for ``estimator`` at θ given ``x_o`` (several rows: i.i.d. trials)."""
    cls = PosteriorBasedPotential if isinstance(estimator, ConditionalDensityEstimator) else RatioBasedPotential
    return cls(estimator, PRIOR, x_o=x_o)(theta, track_gradients=False)


def test_adapter_is_chosen_by_family(family) -> None:
    _, estimator, adapter_cls = family
    adapter = _adapter_for(estimator, PRIOR)
    assert type(adapter) is adapter_cls
    posterior = GridPosterior(estimator, PRIOR, resolution=5)
    assert type(posterior._adapter) is adapter_cls
    assert posterior.kind == ("ratio" if adapter_cls is _RatioAdapter else "flow")
    with pytest.raises(AttributeError):
        posterior.kind = "flow"  # read-only


def test_log_density_matches_sbi_potential(family, data) -> None:
    _, estimator, _ = family
    adapter = _adapter_for(estimator, PRIOR)
    theta = PRIOR.sample((13,))
    _, x = data
    for x_o in (x[:1], x[5:6]):
        emb = adapter.embed(x_o)
        assert emb.shape == (1, 4) and not emb.requires_grad
        ours = adapter.log_density(theta, emb)
        theirs = sbi_potential(estimator, x_o, theta)
        assert ours.shape == (13,) and torch.isfinite(ours).all()
        # a ratio's potential is log r + log prior; a flow's is its normalised log_prob: no constant either way
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        assert ours.std() > 1e-4, "the log density should depend on θ"
    # and on x: the embedding is actually used
    assert not torch.allclose(adapter.log_density(theta, adapter.embed(x[:1])), adapter.log_density(theta, emb))


def test_ratio_sums_iid_trials_like_sbi(family, data) -> None:
    _, estimator, adapter_cls = family
    if adapter_cls is not _RatioAdapter:
        pytest.skip("i.i.d. trials are for ratio estimators only")
    _, x = data
    adapter, theta = _adapter_for(estimator, PRIOR), PRIOR.sample((9,))
    ours = adapter.log_density(theta, adapter.embed(x[:3]))
    torch.testing.assert_close(ours, sbi_potential(estimator, x[:3], theta), atol=1e-5, rtol=1e-5)
    singles = sum(adapter.log_density(theta, adapter.embed(x[i : i + 1])) - PRIOR.log_prob(theta) for i in range(3))
    torch.testing.assert_close(ours, singles + PRIOR.log_prob(theta), atol=1e-5, rtol=1e-5)


def test_cached_theta_features_give_the_same_density(family, data) -> None:
    _, estimator, adapter_cls = family
    _, x = data
    adapter, theta = _adapter_for(estimator, PRIOR), PRIOR.sample((11,))
    emb = adapter.embed(x[:1])
    features = adapter.theta_features(theta)
    if adapter_cls is not _RatioAdapter:
        assert features is None
        return
    assert features.features.shape[0] == 11 and features.log_prior.shape == (11,)
    assert torch.equal(adapter.log_density(theta, emb, features), adapter.log_density(theta, emb))
    part = features.rows(slice(3, 7))
    assert torch.equal(part.features, features.features[3:7]) and torch.equal(part.log_prior, features.log_prior[3:7])
    assert torch.equal(adapter.log_density(theta[3:7], emb, part), adapter.log_density(theta, emb, features)[3:7])


def test_grid_embeds_each_observation_once(family, data) -> None:
    _, estimator, adapter_cls = family
    _, x = data
    posterior = GridPosterior(estimator, PRIOR, resolution=20, max_rows=150)  # 400 cells in 3 chunks
    rows: list[int] = []
    handle = posterior._adapter.embedding_net.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
    try:
        posterior.grid_log_prob(x[0])
        assert rows == [1]
        posterior.grid_log_prob(x[0])  # memoised: no new embedding
        assert rows == [1]
        posterior.sample_batched((4,), x=x[:3])
        assert rows == [1, 3]
        if adapter_cls is _RatioAdapter:
            posterior.grid_log_prob(x[:2])  # i.i.d. trials
            assert rows == [1, 3, 2]
    finally:
        handle.remove()


def test_grid_state_and_log_prob_agree(family, data) -> None:
    _, estimator, _ = family
    _, x = data
    posterior = GridPosterior(estimator, PRIOR, resolution=(9, 7), x_o=x[2])
    state = posterior._state(None)
    assert isinstance(state, _GridState)
    assert state._fields == ("x", "emb", "log_mass", "log_norm", "log_norm_pool", "log_factors")
    assert state.log_factors is None  # not recalibrated
    assert torch.equal(state.x, x[2:3]) and len(state.emb) == 1 and state.emb[0].shape == (1, 4)
    assert state.log_mass.shape == (63,) and state.log_norm.shape == (1,)
    assert torch.isclose(state.log_mass.logsumexp(0), torch.tensor(0.0), atol=1e-5)
    # the continuous log_prob at the cell centres is the grid density
    torch.testing.assert_close(posterior.log_prob(posterior.grid), posterior.grid_log_prob(), atol=1e-5, rtol=1e-5)
    theta = PRIOR.sample((6,))
    expected = sbi_potential(estimator, x[2:3], theta) - state.log_norm[0]
    torch.testing.assert_close(posterior.log_prob(theta), expected, atol=1e-5, rtol=1e-5)


def test_flow_refuses_iid_trials(family, data) -> None:
    _, estimator, adapter_cls = family
    if adapter_cls is _RatioAdapter:
        pytest.skip("ratio estimators accept i.i.d. trials")
    _, x = data
    posterior = GridPosterior(estimator, PRIOR, resolution=6)
    with pytest.raises(ValueError, match="one observation"):
        posterior.grid_log_prob(x[:2])
    assert posterior.sample_batched((3,), x=x[:2]).shape == (3, 2, 2)  # independent observations are fine


def unsupported(kind: str, data) -> nn.Module:
    """A plain module, or a real sbi density estimator of a family the grid does not support (an MDN)."""
    return nn.Linear(2, 2) if kind == "module" else build(posterior_nn, "mdn", {"num_components": 2}, data)


@pytest.mark.parametrize("kind", ["module", "mdn"])
def test_unsupported_estimator_is_named(kind: str, data) -> None:
    estimator = unsupported(kind, data)
    name = type(estimator).__name__
    assert name == ("Linear" if kind == "module" else "MixtureDensityEstimator")
    with pytest.raises(TypeError, match=rf"RatioEstimator.*ZukoFlow/NFlowsFlow.*got {name}$"):
        _adapter_for(estimator, PRIOR)
    with pytest.raises(TypeError, match=rf"got {name}$"):
        GridPosterior(estimator, PRIOR)
