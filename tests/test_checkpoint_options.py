"""Estimator checkpoints store the typed estimator options (``ClassifierConfig``/``FlowConfig``).

Round trips give bit-identical log-probabilities; files of the first format, which kept the
options as ``build_inference`` keywords, still load, onto the same configs and the same networks.
The networks are freshly initialised, not trained: random weights make a round trip just as telling.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from sbi.neural_nets import classifier_nn, posterior_nn

from glsbi_plugin import make_simulator
from glsbi_plugin.checkpoint import FORMAT, load_estimator, save_estimator
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import ClassifierConfig, FlowConfig, GridPosterior, RepeatedRowsEmbedding, build_inference

EMB = EmbeddingConfig(features=4, widths=(4,))


@pytest.fixture(scope="module")
def sim():
    """The default forward model; only described and its shapes used, never run."""
    return make_simulator(batch_size=1)


@pytest.fixture(scope="module")
def batch(sim):
    g = torch.Generator().manual_seed(0)
    low, high = torch.tensor(sim.low), torch.tensor(sim.high)
    theta = low + (high - low) * torch.rand((8, sim.theta_dim), generator=g)
    return theta, torch.randn((8, *sim.x_shape), generator=g)


def grid_log_prob(estimator, prior, x) -> torch.Tensor:
    return GridPosterior(estimator, prior, resolution=10).grid_log_prob(x)


@pytest.mark.parametrize(
    ("method", "config", "build_kwargs"),
    [
        ("NRE_C", ClassifierConfig(model="resnet", hidden_features=8, num_blocks=1), {}),
        ("NRE_B", ClassifierConfig(hidden_features=8, norm_layer="none"), {"dedup_x": False}),
        ("NPE", FlowConfig(hidden_features=8, num_transforms=2, num_bins=4), {"z_score_theta": "none"}),
        ("NPE", FlowConfig(model="nsf", hidden_features=8, num_transforms=1, tail_bound=4.0), {}),
    ],
    ids=["resnet", "mlp-no-norm", "zuko_nsf", "nsf"],
)
def test_round_trip_stores_the_config(method, config, build_kwargs, sim, batch, tmp_path) -> None:
    theta, x = batch
    prior = sim.prior()
    estimator = build_inference(method, prior, EMB, config, x_shape=sim.x_shape, **build_kwargs)._build_neural_net(
        theta, x
    )
    estimator.eval()
    path = save_estimator(
        tmp_path / "e.pt", estimator, method=method, simulator=sim, embedding=EMB, build_kwargs=build_kwargs
    )
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT == "glsbi-estimator/2"
    assert payload["estimator"] == config.to_dict() and payload["build_kwargs"] == build_kwargs
    json.dumps({k: v for k, v in payload.items() if k != "state_dict"})  # plain JSON values
    ckpt = load_estimator(path)
    assert ckpt.estimator_config == config and type(ckpt.estimator_config) is type(config)
    assert ckpt.embedding == EMB and ckpt.build_kwargs == build_kwargs and ckpt.method == method
    a, b = grid_log_prob(estimator, prior, x[3]), grid_log_prob(ckpt.estimator, ckpt.prior, x[3])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.std() > 0  # not a constant: the weights matter


def test_save_refuses_options_that_do_not_describe_the_estimator(sim, batch, tmp_path) -> None:
    theta, x = batch
    estimator = build_inference("NRE_C", sim.prior(), EMB, ClassifierConfig(hidden_features=8))._build_neural_net(
        theta, x
    )
    save = dict(method="NRE_C", simulator=sim, embedding=EMB)
    with pytest.raises(ValueError, match="NRE_C needs a ClassifierConfig as estimator_config, got FlowConfig"):
        save_estimator(tmp_path / "e.pt", estimator, estimator_config=FlowConfig(), **save)
    with pytest.raises(ValueError, match="built with ClassifierConfig.*hidden_features=8"):
        save_estimator(tmp_path / "e.pt", estimator, estimator_config=ClassifierConfig(), **save)
    with pytest.raises(ValueError, match=r"\['hidden_features'\]: estimator options go in estimator_config"):
        save_estimator(tmp_path / "e.pt", estimator, build_kwargs={"hidden_features": 8}, **save)
    with pytest.raises(ValueError, match=r"build_kwargs has keys \['device'\]: build_kwargs takes only"):
        save_estimator(tmp_path / "e.pt", estimator, build_kwargs={"device": "cpu"}, **save)
    with pytest.raises(ValueError, match="method='SNLE'"):
        save_estimator(tmp_path / "e.pt", estimator, method="SNLE", simulator=sim, embedding=EMB)
    assert not (tmp_path / "e.pt").exists()
    # an explicit config equal to the recorded one is fine; a plain module falls back to the default
    save_estimator(tmp_path / "e.pt", estimator, estimator_config=ClassifierConfig(hidden_features=8), **save)
    assert load_estimator(tmp_path / "e.pt").estimator_config == ClassifierConfig(hidden_features=8)
    del estimator._glsbi_estimator_config
    save_estimator(tmp_path / "e.pt", estimator, **save)
    assert torch.load(tmp_path / "e.pt", weights_only=True)["estimator"] == ClassifierConfig().to_dict()
    with pytest.raises(ValueError, match="do not fit"):  # hidden_features=8 weights, default network
        load_estimator(tmp_path / "e.pt")


def _old_network(method: str, old_kwargs: dict, sim, batch) -> torch.nn.Module:
    """The estimator the first-format code built for these ``build_inference`` keywords (its builder, inlined)."""
    theta, x = batch
    kwargs = dict(old_kwargs)
    kwargs.pop("device", None)
    dedup = kwargs.pop("dedup_x", True)
    model = kwargs.pop("model", "zuko_nsf" if method == "NPE" else "mlp")
    kwargs.setdefault("hidden_features", 50)
    net = EMB.build(sim.x_shape[0]).fit_standardization(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "NPE":
            return posterior_nn(model, z_score_x="none", embedding_net=net, **kwargs)(theta, x).eval()
        net = RepeatedRowsEmbedding(net) if dedup else net
        return classifier_nn(model, z_score_x="none", embedding_net_x=net, **kwargs)(theta, x).eval()


def _write_format_1(path, method: str, build_kwargs: dict, estimator, sim) -> None:
    """The first format's payload layout: options as build_inference keywords in "build_kwargs"."""
    payload = {
        "format": "glsbi-estimator/1",
        "method": method,
        "embedding": EMB.to_dict(),
        "build_kwargs": build_kwargs,
        "simulator": json.loads(json.dumps(sim.describe())),
        "state_dict": {k: v.detach().cpu() for k, v in estimator.state_dict().items()},
    }
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("method", "old_kwargs", "config", "rest"),
    [
        ("NRE_C", {"hidden_features": 8}, ClassifierConfig(hidden_features=8), {}),  # what test_demo wrote
        ("NRE_A", {}, ClassifierConfig(), {}),
        (
            "BNRE",
            {"model": "resnet", "hidden_features": 8, "num_blocks": 1, "dedup_x": False},
            ClassifierConfig(model="resnet", hidden_features=8, num_blocks=1),
            {"dedup_x": False},
        ),
        ("NRE_B", {"model": "linear", "hidden_features": 8}, ClassifierConfig(model="linear"), {}),  # had no effect
        ("NPE", {"hidden_features": 8, "num_transforms": 2}, FlowConfig(hidden_features=8, num_transforms=2), {}),
        (
            "NPE",
            {"hidden_features": 8, "num_transforms": 2, "bins": 4, "z_score_theta": "none", "device": "cpu"},
            FlowConfig(hidden_features=8, num_transforms=2, num_bins=4),  # zuko's own "bins"
            {"z_score_theta": "none"},
        ),
        (
            "NPE",
            {"model": "nsf", "hidden_features": 8, "num_transforms": 1, "num_bins": 4, "tail_bound": 4.0},
            FlowConfig(model="nsf", hidden_features=8, num_transforms=1, num_bins=4, tail_bound=4.0),
            {},
        ),
        (
            "NPE",
            {"model": "made", "hidden_features": 8, "num_mixture_components": 3, "num_components": 7},
            FlowConfig(model="made", hidden_features=8, num_components=3),  # sbi's made ignored num_components
            {},
        ),
        (
            "NPE",
            {"model": "zuko_maf", "hidden_features": 8, "num_transforms": 2, "randperm": True, "num_bins": 4},
            FlowConfig(model="zuko_maf", hidden_features=8, num_transforms=2, randperm=True),  # num_bins: no effect
            {},
        ),
    ],
    ids=["nre_c-demo", "nre_a-default", "bnre-resnet", "linear", "zuko_nsf", "zuko-bins", "nsf", "made", "zuko_maf"],
)
def test_first_format_checkpoints_still_load(method, old_kwargs, config, rest, sim, batch, tmp_path) -> None:
    torch.manual_seed(7)
    old = _old_network(method, old_kwargs, sim, batch)
    path = tmp_path / "old.pt"
    _write_format_1(path, method, old_kwargs, old, sim)
    ckpt = load_estimator(path)
    assert ckpt.estimator_config == config and ckpt.build_kwargs == rest
    prior = sim.prior()
    x = batch[1][5]
    torch.testing.assert_close(
        grid_log_prob(old, prior, x), grid_log_prob(ckpt.estimator, ckpt.prior, x), rtol=0, atol=0
    )
    # the same network as the new API builds from that config
    inference = build_inference(method, prior, EMB, config, **rest)
    torch.manual_seed(7)
    new = inference._build_neural_net(*batch)
    assert new.state_dict().keys() == old.state_dict().keys()
    for key, value in old.state_dict().items():
        torch.testing.assert_close(new.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_first_format_options_without_a_field_are_refused(sim, batch, tmp_path) -> None:
    estimator = _old_network("NPE", {"hidden_features": 8, "num_transforms": 1}, sim, batch)
    for kwargs, message in [
        (
            {"model": "zuko_maf", "activation": "relu"},
            "format-1 option activation='relu' of model 'zuko_maf' has no FlowConfig",
        ),
        ({"model": "zuko_ncsf"}, "model='zuko_ncsf': allowed values are"),
        ({"hidden_features": 0}, "hidden_features=0: must be an integer >= 1"),
    ]:
        _write_format_1(tmp_path / "old.pt", "NPE", kwargs, estimator, sim)
        with pytest.raises(ValueError, match=message) as info:
            load_estimator(tmp_path / "old.pt")
        assert str(tmp_path / "old.pt") in str(info.value)
    # a second-format file with an unknown option
    config = FlowConfig(hidden_features=8, num_transforms=1)
    path = save_estimator(
        tmp_path / "new.pt", estimator, method="NPE", simulator=sim, embedding=EMB, estimator_config=config
    )
    payload = torch.load(path, weights_only=True)
    payload["estimator"]["hiden_features"] = 8
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"unknown FlowConfig keys \['hiden_features'\]"):
        load_estimator(path)
