r"""Model selection by classification: posterior model probabilities p(M_k | x) from images.

Given K forward models :math:`M_k` (here :math:`M_0`: no drag, :math:`\nu_d = 0`; :math:`M_1`:
:math:`\nu_d \sim U(0, \nu_{max})`), each with its own prior over θ, draw simulations
:math:`x_i \sim p(x \mid M_{m_i}) = \int p(x \mid \theta, M_{m_i})\, p(\theta \mid M_{m_i})\, d\theta`
with model frequencies :math:`\hat\pi_k` and train a classifier
:math:`q(k \mid x) = \mathrm{softmax}_k f(x)` by cross-entropy. Its population minimiser is the
posterior model probability under the training frequencies,

.. math::
    q^*(k \mid x) = \frac{\hat\pi_k\, p(x \mid M_k)}{\sum_j \hat\pi_j\, p(x \mid M_j)}, \qquad
    B_{kj}(x) = \frac{p(x \mid M_k)}{p(x \mid M_j)}
             = \frac{q^*(k \mid x)}{q^*(j \mid x)}\,\frac{\hat\pi_j}{\hat\pi_k},

so the Bayes factor (evidence ratio) is the classifier's odds divided by the training odds, and
:math:`p(M_k \mid x)` under any other prior odds :math:`\pi` follows by re-weighting
(:meth:`ModelPosterior.log_prob`). The marginalisation over θ is implicit: this is ratio
estimation over the model index (Radev et al., "Amortized Bayesian model comparison with
evidential deep learning", IEEE TNNLS (2021), arXiv:2004.10629). The image network is the
package's :class:`~glsbi_plugin.embeddings.ResNetGAP`, then an MLP to K logits.

Calibration is checked on held-out simulations (another seed): the reliability diagram bins
:math:`q(k \mid x)` and compares each bin's mean with the frequency of model k in it; the expected
calibration error :math:`\mathrm{ECE} = \sum_b \frac{n_b}{N}\,|\bar q_b - \bar y_b|` (Guo et al.,
ICML 2017, arXiv:1706.04599) is its weighted gap. Detection power is the ROC area
(:func:`roc_auc`, the Mann–Whitney probability that a simulation of :math:`M_1` scores above one of
:math:`M_0`), per bin of the parameter that separates the models (:func:`auc_by_bin`). An optional
temperature τ (``logits / τ``), fitted on the validation split by log loss, corrects a global
over- or under-confidence without changing the ranking (so not the ROC areas).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn

from ..embeddings import EmbeddingConfig

__all__ = [
    "ModelClassifier",
    "ModelPosterior",
    "ModelSelectionConfig",
    "Reliability",
    "auc_by_bin",
    "reliability",
    "roc_auc",
    "train_model_classifier",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSelectionConfig:
    """Options of :func:`train_model_classifier` (checked at construction).

    Args:
        embedding: The image network's options (:class:`~glsbi_plugin.embeddings.EmbeddingConfig`).
        hidden_features: Width of the MLP between the embedding and the K logits.
        max_epochs: Exact maximum number of epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        validation_fraction: Share of the simulations held out for early stopping and the temperature.
        stop_after_epochs: Stop after this many epochs without a lower validation loss (the best
            epoch's weights are kept).
        temperature: Fit the temperature τ on the validation split (else τ = 1).
    """

    embedding: EmbeddingConfig = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)
    hidden_features: int = 64
    max_epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.15
    stop_after_epochs: int = 5
    temperature: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.embedding, EmbeddingConfig):
            raise ValueError(f"embedding must be an EmbeddingConfig, got {type(self.embedding).__name__}")
        for name in ("hidden_features", "max_epochs", "batch_size", "stop_after_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate={self.learning_rate!r}: must be finite and > 0")
        if not (0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction={self.validation_fraction!r}: must lie in (0, 1)")


class ModelClassifier(nn.Module):
    r"""Images ``(n, C, H, W)`` → logits ``(n, K)`` of the model index: ResNetGAP, then an MLP.

    Args:
        in_channels: Image channels C.
        num_models: Number of models K >= 2.
        embedding: Options of the :class:`~glsbi_plugin.embeddings.ResNetGAP`.
        hidden_features: Width of the MLP.
    """

    def __init__(self, in_channels: int, num_models: int, embedding: EmbeddingConfig, hidden_features: int) -> None:
        super().__init__()
        if num_models < 2:
            raise ValueError(f"num_models={num_models}: model selection needs at least 2 models")
        self.embedding = embedding.build(in_channels)
        self.head = nn.Sequential(
            nn.Linear(embedding.features, hidden_features),
            nn.GELU(),
            nn.Linear(hidden_features, num_models),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``f(x)`` of shape ``(n, K)``."""
        return self.head(self.embedding(x))


@dataclasses.dataclass(frozen=True, eq=False)
class ModelPosterior:
    r"""A trained model classifier as posterior model probabilities and Bayes factors.

    Attributes:
        net: The classifier (in eval mode).
        train_log_freq: :math:`\log\hat\pi_k` of the training simulations, shape ``(K,)``.
        temperature: τ dividing the logits.
        history: Per epoch ``(train loss, validation loss)``.
        best_epoch: The epoch whose weights are kept (1-based).
    """

    net: ModelClassifier
    train_log_freq: Tensor
    temperature: float = 1.0
    history: tuple[tuple[float, float], ...] = ()
    best_epoch: int = 0

    @property
    def num_models(self) -> int:
        return int(self.train_log_freq.shape[0])

    @torch.no_grad()
    def logits(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Tempered logits ``f(x)/τ``, ``(n, K)``, in eval mode and in batches."""
        self.net.eval()
        out = [self.net(b) for b in x.split(batch_size)]
        return torch.cat(out) / self.temperature

    def log_prob(self, x: Tensor, prior: Sequence[float] | Tensor | None = None) -> Tensor:
        r""":math:`\log p(M_k \mid x)`, ``(n, K)``, under the prior model probabilities ``prior``
        (default equal odds): :math:`\log q(k \mid x) - \log\hat\pi_k + \log\pi_k`, renormalised."""
        log_pi = self._log_prior(prior)
        return torch.log_softmax(self.logits(x) - self.train_log_freq + log_pi, dim=-1)

    def prob(self, x: Tensor, prior: Sequence[float] | Tensor | None = None) -> Tensor:
        """:math:`p(M_k \\mid x)`, ``(n, K)`` (see :meth:`log_prob`)."""
        return self.log_prob(x, prior).exp()

    def log_bayes_factor(self, x: Tensor, k: int = 1, j: int = 0) -> Tensor:
        r""":math:`\log B_{kj}(x) = \log p(x \mid M_k) - \log p(x \mid M_j)`, ``(n,)``."""
        lp = self.log_prob(x)
        return lp[:, k] - lp[:, j]

    def _log_prior(self, prior: Sequence[float] | Tensor | None) -> Tensor:
        K = self.num_models
        if prior is None:
            return torch.full((K,), -math.log(K))
        p = torch.as_tensor(prior, dtype=torch.float32)
        if p.shape != (K,) or not bool((p > 0).all()) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-5):
            raise ValueError(f"prior must hold {K} positive model probabilities summing to 1, got {p.tolist()}")
        return p.log()


def train_model_classifier(
    x: Tensor,
    model_index: Tensor,
    *,
    num_models: int | None = None,
    config: ModelSelectionConfig | None = None,
    seed: int = 0,
    progress: Callable[[int, float, float], None] | None = None,
) -> ModelPosterior:
    r"""Train :class:`ModelClassifier` on simulations ``x`` of the models ``model_index``.

    Minimises the cross-entropy :math:`-\frac1N\sum_i \log q(m_i \mid x_i)` with Adam on mini-batches,
    stops early on a random validation split (the best epoch is kept), then fits the temperature on
    that split (:class:`ModelSelectionConfig`). Deterministic in ``seed`` (torch's global RNG is
    left as it was).

    Args:
        x: Images ``(N, C, H, W)``, float.
        model_index: Integer model of each image ``(N,)`` in ``0 … K-1``.
        num_models: K; default ``max(model_index) + 1``.
        config: Training options; default :class:`ModelSelectionConfig`.
        seed: Seed of the initialisation, the split and the mini-batches.
        progress: Called after each epoch with ``(epoch, train loss, validation loss)``.

    Returns:
        The :class:`ModelPosterior`.

    Raises:
        ValueError: Shapes that do not match, non-finite images, labels outside ``0 … K-1``, or a
            model without simulations.
    """
    cfg = config or ModelSelectionConfig()
    x, m, K = _check_data(x, model_index, num_models)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_val = max(1, int(round(cfg.validation_fraction * x.shape[0])))
        val, tr = perm[:n_val], perm[n_val:]
        net = ModelClassifier(x.shape[1], K, cfg.embedding, cfg.hidden_features)
        net.embedding.fit_standardization(x[tr])
        freq = torch.bincount(m, minlength=K).float() / m.shape[0]
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        loss_fn = nn.CrossEntropyLoss()
        best, best_state, best_epoch, history, stale = math.inf, None, 0, [], 0
        for epoch in range(1, cfg.max_epochs + 1):
            start = time.perf_counter()
            net.train()
            total = 0.0
            for idx in tr[torch.randperm(tr.shape[0], generator=gen)].split(cfg.batch_size):
                opt.zero_grad()
                loss = loss_fn(net(x[idx]), m[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.shape[0]
            net.eval()
            with torch.no_grad():
                val_loss = float(torch.cat([loss_fn(net(x[i]), m[i])[None] * i.shape[0] for i in val.split(256)]).sum())
            val_loss /= n_val
            history.append((total / tr.shape[0], val_loss))
            logger.info(
                "model classifier epoch %d: train %.4f, validation %.4f (%.1f s)",
                epoch, history[-1][0], val_loss, time.perf_counter() - start,
            )
            if progress is not None:
                progress(epoch, history[-1][0], val_loss)
            if val_loss < best:
                best, best_state, best_epoch, stale = val_loss, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= cfg.stop_after_epochs:
                    break
        net.load_state_dict(best_state)  # type: ignore[arg-type]
        net.eval()
        tau = 1.0
        if cfg.temperature:
            with torch.no_grad():
                logits = torch.cat([net(x[i]) for i in val.split(256)])
            tau = _fit_temperature(logits, m[val])
            logger.info("model classifier temperature %.3g (validation log loss %.4f at τ = 1)", tau, best)
    return ModelPosterior(net, freq.log(), tau, tuple(history), best_epoch)


def _check_data(x: Tensor, model_index: Tensor, num_models: int | None) -> tuple[Tensor, Tensor, int]:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of images (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    m = torch.as_tensor(model_index)
    if m.shape != (x.shape[0],) or m.is_floating_point():
        raise ValueError(f"model_index must be integers of shape ({x.shape[0]},), got {tuple(m.shape)} {m.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds non-finite values")
    m = m.long()
    K = int(m.max()) + 1 if num_models is None else int(num_models)
    if int(m.min()) < 0 or int(m.max()) >= K:
        raise ValueError(f"model_index must lie in 0 … {K - 1}, got {int(m.min())} … {int(m.max())}")
    counts = torch.bincount(m, minlength=K)
    if K < 2 or bool((counts == 0).any()):
        raise ValueError(f"every one of K = {K} >= 2 models needs simulations; counts {counts.tolist()}")
    return x.float(), m, K


def _fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """τ minimising the log loss of ``softmax(logits / τ)`` over 81 log-spaced values on [1/8, 8]."""
    taus = torch.logspace(-math.log10(8), math.log10(8), 81)
    losses = torch.stack([nn.functional.cross_entropy(logits / t, labels) for t in taus])
    return float(taus[int(torch.argmin(losses))])


@dataclasses.dataclass(frozen=True)
class Reliability:
    r"""A reliability diagram of predicted probabilities ``q`` against outcomes ``y`` ∈ {0, 1}.

    Attributes:
        edges: Bin edges on [0, 1], ``(bins + 1,)``.
        confidence: Mean ``q`` per bin (NaN where empty), ``(bins,)``.
        frequency: Mean ``y`` per bin (NaN where empty), ``(bins,)``.
        counts: Number of predictions per bin, ``(bins,)``.
        ece: Expected calibration error :math:`\sum_b (n_b/N)|\bar q_b - \bar y_b|`.
    """

    edges: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    counts: np.ndarray
    ece: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (NaN as ``None``)."""
        clean = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {
            "edges": [float(v) for v in self.edges],
            "confidence": clean(self.confidence),
            "frequency": clean(self.frequency),
            "counts": [int(c) for c in self.counts],
            "ece": self.ece,
        }


def reliability(prob: Tensor | np.ndarray, outcome: Tensor | np.ndarray, bins: int = 10) -> Reliability:
    r"""Reliability diagram and expected calibration error of probabilities ``prob`` of events ``outcome``.

    For model selection, ``prob = p(M_1 | x)`` and ``outcome = (model_index == 1)`` on held-out
    simulations; calibrated probabilities put every bin on the diagonal (ECE → 0 as N → ∞).

    Args:
        prob: Predicted probabilities ``(N,)`` in [0, 1].
        outcome: Whether each event happened ``(N,)`` (bool or 0/1).
        bins: Number of equal-width bins on [0, 1].

    Returns:
        The :class:`Reliability`.
    """
    q = np.asarray(prob, np.float64).ravel()
    y = np.asarray(outcome, np.float64).ravel()
    if q.shape != y.shape or q.size == 0:
        raise ValueError(f"prob and outcome must be non-empty and of one shape, got {q.shape} and {y.shape}")
    if not (np.all(np.isfinite(q)) and q.min() >= 0 and q.max() <= 1):
        raise ValueError("prob must hold finite probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, q, side="right") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=q, minlength=bins) / counts
        freq = np.bincount(which, weights=y, minlength=bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / q.size * np.abs(conf[filled] - freq[filled])))
    return Reliability(edges, conf, freq, counts, ece)


def roc_auc(score: Tensor | np.ndarray, positive: Tensor | np.ndarray) -> float:
    r"""Area under the ROC curve: :math:`P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)` over pairs of a
    positive and a negative (the Mann–Whitney statistic, from mid-ranks; 0.5 = no detection)."""
    s = np.asarray(score, np.float64).ravel()
    pos = np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if s.shape != pos.shape or n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs scores for both classes; got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)  # mid-ranks: ties count one half
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def auc_by_bin(
    score: Tensor | np.ndarray,
    positive: Tensor | np.ndarray,
    value: Tensor | np.ndarray,
    edges: Sequence[float],
) -> list[dict[str, float]]:
    """ROC area of the positives whose ``value`` falls in each bin ``[edges[i], edges[i+1])`` against
    all negatives: the detection power as a function of, e.g., the drag ν_d of the simulations of M₁.

    Returns:
        One ``{"low", "high", "num_positive", "auc"}`` per bin (``auc`` NaN for an empty bin).
    """
    s = np.asarray(score, np.float64).ravel()
    pos = np.asarray(positive, bool).ravel()
    v = np.asarray(value, np.float64).ravel()
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        last = hi == edges[-1]
        sel = pos & (v >= lo) & ((v <= hi) if last else (v < hi))
        keep = sel | ~pos
        auc = roc_auc(s[keep], sel[keep]) if sel.any() else float("nan")
        out.append({"low": float(lo), "high": float(hi), "num_positive": int(sel.sum()), "auc": auc})
    return out
