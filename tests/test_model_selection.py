"""Model selection by classification: ROC area, reliability/ECE, and a trained classifier against the
exact Bayes factor of a model pair with a tractable evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import (
    ModelSelectionConfig,
    auc_by_bin,
    reliability,
    roc_auc,
    train_model_classifier,
)


def test_roc_auc_is_the_mann_whitney_probability_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 300).astype(float)  # many ties
    pos = rng.random(300) < 0.4
    a, b = s[pos][:, None], s[~pos][None, :]
    brute = float(np.mean((a > b) + 0.5 * (a == b)))
    assert roc_auc(s, pos) == pytest.approx(brute, abs=1e-12)
    assert roc_auc(np.arange(10.0), np.arange(10) >= 5) == 1.0
    assert roc_auc(-np.arange(10.0), np.arange(10) >= 5) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.ones(3), np.ones(3, bool))


def test_reliability_separates_calibrated_from_miscalibrated_probabilities():
    rng = np.random.default_rng(1)
    q = rng.random(40000)
    calibrated = reliability(q, rng.random(q.size) < q)
    assert calibrated.ece < 0.01
    np.testing.assert_allclose(calibrated.frequency, calibrated.confidence, atol=0.03)
    assert calibrated.counts.sum() == q.size
    # events with probability q² reported as q: the gap E|q − q²| = 1/6 survives the binning
    over = reliability(q, rng.random(q.size) < q**2)
    assert over.ece == pytest.approx(1 / 6, abs=0.01)
    assert over.to_dict()["ece"] == over.ece


def test_auc_by_bin_rises_with_the_separating_parameter():
    rng = np.random.default_rng(2)
    n = 4000
    nu = rng.random(n)
    pos = rng.random(n) < 0.5
    score = rng.normal(size=n) + 3 * nu * pos  # detectable in proportion to ν
    bins = auc_by_bin(score, pos, np.where(pos, nu, 0.0), [0.0, 0.25, 0.5, 0.75, 1.0])
    aucs = [b["auc"] for b in bins]
    assert aucs == sorted(aucs) and aucs[0] < 0.7 and aucs[-1] > 0.9
    assert sum(b["num_positive"] for b in bins) == pos.sum()


SCALE = 0.3


def _exact_log_bf(x: np.ndarray, points: int = 2001) -> np.ndarray:
    """log p(x|M₁) − log p(x|M₀) for M₀: pixels N(0, 1); M₁: pixels N(SCALE·ν, 1), ν ~ U(0, 1)
    (the ν integral by the midpoint rule)."""
    flat = x.reshape(len(x), -1)
    mu = SCALE * (np.arange(points) + 0.5) / points
    ll = flat.sum(1)[:, None] * mu[None, :] - 0.5 * flat.shape[1] * mu[None, :] ** 2  # log N(x; μ)/N(x; 0)
    return logsumexp(ll, axis=1) - math.log(points)


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    m = torch.arange(n) % 2
    nu = torch.rand(n, generator=g) * m
    x = torch.randn(n, 1, 6, 6, generator=g) + nu[:, None, None, None] * SCALE
    return x, m, nu


def test_classifier_recovers_the_exact_bayes_factor_and_is_calibrated():
    """M₀: pixels N(0, 1); M₁: pixels N(0.3ν, 1), ν ~ U(0, 1). The evidence is a 1-D integral, so
    the exact log B₁₀(x) is known: the trained classifier's log B₁₀ tracks it, its p(M₁ | x) is
    calibrated on held-out data of another seed, and its detection power grows with ν."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    x, m, _ = _toy(1600, 0)
    cfg = ModelSelectionConfig(
        embedding=EmbeddingConfig(features=4, widths=(4,)), hidden_features=16, max_epochs=12, batch_size=64,
        learning_rate=3e-3, stop_after_epochs=4,
    )
    post = train_model_classifier(x, m, config=cfg, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "torch's global RNG is left as it was"
    x_t, m_t, nu_t = _toy(2000, 1)
    lb = post.log_bayes_factor(x_t).numpy()
    exact = _exact_log_bf(x_t.numpy())
    assert np.corrcoef(lb, exact)[0, 1] > 0.9
    p_exact = 1 / (1 + np.exp(-exact))
    p1 = post.prob(x_t)[:, 1].numpy()
    assert np.mean(np.abs(p1 - p_exact)) < 0.08
    assert reliability(p1, m_t.numpy() == 1).ece < 0.08
    # the best possible ROC area (from the exact Bayes factor) is reached within a few hundredths
    auc_exact, auc = roc_auc(exact, m_t.numpy() == 1), roc_auc(lb, m_t.numpy() == 1)
    assert auc > auc_exact - 0.04
    bins = auc_by_bin(lb, m_t.numpy() == 1, nu_t.numpy(), [0.0, 0.5, 1.0])
    assert bins[0]["auc"] < bins[1]["auc"]
    # prior odds re-weight the posterior exactly: log odds shift by log(π₁/π₀)
    lp = post.log_prob(x_t[:5], prior=[0.2, 0.8])
    np.testing.assert_allclose((lp[:, 1] - lp[:, 0]).numpy(), lb[:5] + math.log(4.0), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="summing to 1"):
        post.log_prob(x_t[:2], prior=[0.5, 0.6])


def test_bad_training_data_is_refused():
    x = torch.randn(8, 1, 4, 4)
    with pytest.raises(ValueError, match="every one of K = 2"):
        train_model_classifier(x, torch.zeros(8, dtype=torch.long), num_models=2)
    with pytest.raises(ValueError, match="model_index must be integers"):
        train_model_classifier(x, torch.zeros(8))
    with pytest.raises(ValueError, match="validation_fraction"):
        ModelSelectionConfig(validation_fraction=1.5)
