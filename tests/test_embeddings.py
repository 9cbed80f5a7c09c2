"""Tests of glsbi_plugin.embeddings: shapes, exact shift invariance, serialisation, sbi integration."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from glsbi_plugin.embeddings import EmbeddingConfig, ResNetGAP

# Small widths keep every test well under a second on two CPU cores; the invariance argument does
# not depend on width.
SMALL = {"features": 8, "widths": (4, 8), "blocks_per_stage": 1}
SHIFTS = [(1, 0), (0, 1), (3, 5), (7, -2), (-5, 11)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _max_shift_error(net: nn.Module, x: torch.Tensor, shifts: list[tuple[int, int]]) -> float:
    with torch.no_grad():
        y = net(x)
        return max((net(torch.roll(x, s, dims=(-2, -1))) - y).abs().max().item() for s in shifts)


def _train_steps(net: nn.Module, x: torch.Tensor, steps: int = 2) -> None:
    # Plain SGD by hand: torch.optim's first step imports torch._dynamo (~2 s).
    target = torch.randn(x.shape[0], net.config.features)
    for _ in range(steps):
        net.zero_grad()
        ((net(x) - target) ** 2).mean().backward()
        with torch.no_grad():
            for param in net.parameters():
                param -= 0.5 * param.grad


@pytest.mark.parametrize("shape", [(16, 16), (24, 20), (7, 9)])
def test_output_shape_any_image_size(shape: tuple[int, int]) -> None:
    net = ResNetGAP(2, **SMALL)
    assert net(torch.randn(3, 2, *shape)).shape == (3, 8)


@pytest.mark.parametrize("in_channels", [2, 3])
def test_default_parameter_budget(in_channels: int) -> None:
    net = ResNetGAP(in_channels)
    assert sum(p.numel() for p in net.parameters()) <= 500_000
    assert net(torch.randn(2, in_channels, 16, 16)).shape == (2, 32)


def test_no_batchnorm_no_lazy_modules() -> None:
    for module in ResNetGAP(2).modules():
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm)
        assert not isinstance(module, nn.modules.lazy.LazyModuleMixin)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_exact_circular_shift_invariance(activation: str) -> None:
    net = ResNetGAP(2, features=16, widths=(8, 16), blocks_per_stage=2, activation=activation)
    x = torch.randn(4, 2, 20, 24) * 3.0 + 1.0
    net.fit_standardization(x)
    assert _max_shift_error(net, x, SHIFTS) < 1e-5
    _train_steps(net, x)  # perturbed (trained) weights must stay invariant too
    assert _max_shift_error(net, x, SHIFTS) < 1e-5


def test_default_net_is_shift_invariant() -> None:
    net = ResNetGAP(2)
    assert net.config.shift_invariant
    assert _max_shift_error(net, torch.randn(2, 2, 16, 16), [(5, 3), (-1, 8)]) < 1e-5


def test_downsample_invariant_only_to_multiples_of_stride() -> None:
    net = ResNetGAP(1, features=8, widths=(4, 8, 8), downsample=True)
    assert not net.config.shift_invariant
    x = torch.randn(2, 1, 16, 16)
    assert _max_shift_error(net, x, [(4, 0), (0, 8), (4, -4)]) < 1e-5  # multiples of 2**2
    assert _max_shift_error(net, x, [(1, 0)]) > 1e-4


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_open_padding_is_not_shift_invariant(padding_mode: str) -> None:
    net = ResNetGAP(1, padding_mode=padding_mode, **SMALL)
    assert not net.config.shift_invariant
    assert _max_shift_error(net, torch.randn(2, 1, 12, 12), [(3, 0)]) > 1e-4


def test_embedding_independent_of_batch_composition() -> None:
    net = ResNetGAP(2, **SMALL)
    x = torch.randn(5, 2, 12, 12)
    net.train()
    with torch.no_grad():
        full = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(5)])
        net.eval()
        evaluated = net(x)
    torch.testing.assert_close(full, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(full, evaluated, rtol=0, atol=0)


def test_state_dict_round_trip() -> None:
    kwargs = {"features": 6, "widths": (4, 8), "blocks_per_stage": 2, "activation": "silu"}
    x = torch.randn(3, 2, 12, 10)
    net = ResNetGAP(2, **kwargs).fit_standardization(x)
    _train_steps(net, x, steps=1)
    state = net.state_dict()
    assert {"x_mean", "x_std"} <= set(state)

    torch.manual_seed(123)
    fresh = ResNetGAP(2, **kwargs)
    fresh.load_state_dict(state)  # strict
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_gradient_reaches_every_parameter() -> None:
    net = ResNetGAP(2)
    net(torch.randn(3, 2, 12, 12)).square().sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 2, 3, 16, 16), (4, 3, 16, 16)])
def test_bad_input_shape(shape: tuple[int, ...]) -> None:
    net = ResNetGAP(2, **SMALL)
    with pytest.raises(ValueError, match=r"\(batch, C, H, W\) with C=2") as info:
        net(torch.randn(*shape))
    assert str(tuple(shape)) in str(info.value)


def test_fit_standardization() -> None:
    x = torch.randn(8, 2, 10, 10) * torch.tensor([2.0, 0.5])[:, None, None] + torch.tensor([3.0, -1.0])[:, None, None]
    x[0, 1, 0, 0] = float("nan")  # image 0 is left out
    net = ResNetGAP(2, **SMALL).fit_standardization(x)
    torch.testing.assert_close(net.x_mean, x[1:].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(net.x_std, x[1:].std(dim=(0, 2, 3)))
    assert net.x_mean.dtype == torch.float32

    const = ResNetGAP(1, **SMALL).fit_standardization(torch.ones(4, 1, 6, 6))
    assert const.x_std.item() == pytest.approx(1e-7)
    assert torch.isfinite(const(torch.ones(2, 1, 6, 6))).all()

    with pytest.raises(ValueError, match="finite"):
        ResNetGAP(1, **SMALL).fit_standardization(torch.full((2, 1, 4, 4), float("inf")))
    with pytest.raises(ValueError, match="C=1"):
        ResNetGAP(1, **SMALL).fit_standardization(torch.ones(2, 2, 4, 4))


def test_config_round_trip_and_build() -> None:
    config = EmbeddingConfig(features=12, widths=[8, 16], padding_mode="reflect", activation="relu")
    assert config.widths == (8, 16)
    hash(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.features = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        EmbeddingConfig(12)  # type: ignore[misc]

    restored = EmbeddingConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    net = restored.build(3)
    assert isinstance(net, ResNetGAP) and net.config == config and net.in_channels == 3
    assert config.build(3).config == config
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": 0}, "features=0"),
        ({"features": 2.5}, "features=2.5"),
        ({"widths": ()}, "widths=()"),
        ({"widths": (8, 0)}, r"widths=\(8, 0\)"),
        ({"widths": 8}, "widths=8"),
        ({"blocks_per_stage": 0}, "blocks_per_stage=0"),
        ({"padding_mode": "replicate"}, "padding_mode='replicate'.*circular"),
        ({"activation": "swish"}, "activation='swish'.*gelu"),
        ({"downsample": 1}, "downsample=1"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        ResNetGAP(2, **kwargs)


def test_invalid_in_channels_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="in_channels=0"):
        ResNetGAP(0)
    with pytest.raises(ValueError, match="unknown EmbeddingConfig keys.*width"):
        EmbeddingConfig.from_dict({"width": [8]})


def test_inside_sbi_classifier() -> None:
    from sbi.neural_nets import classifier_nn

    theta, x = torch.rand(10, 2), torch.randn(10, 1, 16, 16)
    embedding = ResNetGAP(1, **SMALL).fit_standardization(x)
    build = classifier_nn("mlp", z_score_theta="none", z_score_x="none", hidden_features=16, embedding_net_x=embedding)
    classifier = build(theta, x)
    logits = classifier(theta, x)
    assert logits.shape == (10,)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in embedding.parameters())


def test_inside_sbi_posterior_nsf() -> None:
    from sbi.neural_nets import posterior_nn

    theta, x = torch.rand(10, 2), torch.randn(10, 1, 16, 16)
    build = posterior_nn(
        "nsf",
        z_score_theta="none",
        z_score_x="none",
        hidden_features=16,
        num_transforms=2,
        embedding_net=ResNetGAP(1, **SMALL),
    )
    estimator = build(theta, x)
    log_prob = estimator.log_prob(theta.unsqueeze(0), x)
    assert log_prob.shape == (1, 10)
    assert torch.isfinite(log_prob).all()
