r"""sbi trainers (NRE-A/B/C, BNRE, NPE) with an image embedding, and a ``train`` helper.

:func:`build_inference` returns a ready sbi inference object whose network builder makes a fresh
:class:`~glsbi_plugin.embeddings.ResNetGAP` from one :class:`EmbeddingConfig` for every estimator
it builds, fits its per-channel standardisation on that round's training images and hands it to
sbi with ``z_score_x="none"`` (sbi's ``"structured"`` z-score takes the std over dim 1, NaN for
``(n, 1, H, W)`` images; ``"independent"`` standardises each pixel and breaks shift invariance).

sbi 0.27 pitfalls absorbed here (checked against the 0.27.0 source; ``tests/test_inference.py``):

* The default tracker writes TensorBoard files to ``./sbi-logs`` (``sbi/utils/io.py:14``,
  ``NeuralInference._default_tracker``). We pass an in-memory :class:`MemoryTracker` unless
  ``log_dir`` is given.
* ``max_num_epochs=n`` trains ``n + 1`` epochs (``while self.epoch <= max_num_epochs`` in
  ``NeuralInference._run_training_loop``), and ``0`` is refused, so one epoch cannot be asked
  for. Our trainers stop after exactly ``max_epochs`` epochs (then, like sbi, keep the weights
  with the best validation loss).
* Unknown estimator keywords only warn in sbi (``_EstimatorConfigBase.from_kwargs``) and are
  then silently swallowed by some builders; here they raise ``TypeError``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import sbi.inference as sbi_inference
import torch
from sbi.neural_nets import classifier_nn, posterior_nn
from sbi.neural_nets.factory import model_builders
from sbi.neural_nets.net_builders import classifier as sbi_classifiers
from sbi.utils.tracking import TensorBoardTracker
from torch import Tensor, nn
from torch.distributions import Distribution

from .._validation import box_bounds, check_theta
from ..embeddings import EmbeddingConfig

__all__ = ["METHODS", "MemoryTracker", "Method", "RepeatedRowsEmbedding", "build_inference", "train"]

logger = logging.getLogger(__name__)

Method = Literal["NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE"]
METHODS: tuple[str, ...] = get_args(Method)

#: Default network per method: an MLP head for the ratio classifiers, a zuko spline flow for NPE.
DEFAULT_MODELS: dict[str, str] = {"NRE_A": "mlp", "NRE_B": "mlp", "NRE_C": "mlp", "BNRE": "mlp", "NPE": "zuko_nsf"}
_CLASSIFIERS: dict[str, Callable[..., Any]] = {
    "linear": sbi_classifiers.build_linear_classifier,
    "mlp": sbi_classifiers.build_mlp_classifier,
    "resnet": sbi_classifiers.build_resnet_classifier,
}
# set by build_inference itself, or meaningless for a (theta, image) problem
_MANAGED = {"batch_x", "batch_y", "z_score_x", "z_score_y", "embedding_net", "embedding_net_x", "embedding_net_y"}
_MANAGED |= {"features", "context", "transforms", "x_dist", "kwargs", "self"}


class MemoryTracker:
    """An sbi ``Tracker`` that keeps metrics in memory and writes nothing to disk.

    Attributes:
        metrics: ``{name: [(step, value), ...]}`` in logging order.
        params: Logged hyper-parameters.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.params: dict[str, Any] = {}

    @property
    def log_dir(self) -> str | None:
        """Always ``None``: nothing is written."""
        return None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Records one value of metric ``name``."""
        self.metrics.setdefault(name, []).append((step, float(value)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Records several metrics at one step."""
        for name, value in metrics.items():
            self.log_metric(name, value, step)

    def log_params(self, params: dict[str, Any]) -> None:
        """Records hyper-parameters."""
        self.params.update(params)

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Ignores figures (nothing is stored)."""

    def flush(self) -> None:
        """Nothing to flush."""


class RepeatedRowsEmbedding(nn.Module):
    """Wraps a per-sample embedding so that runs of identical consecutive rows are embedded once.

    sbi repeats every image once per contrastive atom while training NRE (``repeat_rows`` in
    ``RatioEstimatorTrainer._classifier_logits``: 2K+1 copies per image for NRE_C) and once per θ in
    ``RatioBasedPotential``. The result is exactly that of ``net(x)`` (the rows are computed
    independently, e.g. GroupNorm, no BatchNorm; gradients add up over the copies).

    Args:
        net: The embedding, e.g. a :class:`~glsbi_plugin.embeddings.ResNetGAP`.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Embeds ``x`` of shape ``(n, ...)``; returns ``net(x)``."""
        if x.shape[0] < 2:
            return self.net(x)
        flat = x.reshape(x.shape[0], -1)
        new = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        new[1:] = (flat[1:] != flat[:-1]).any(dim=1)
        if bool(new.all()):
            return self.net(x)
        return self.net(x[new])[new.cumsum(0) - 1]


class _EpochCap:
    """Mixin: stop sbi's training loop after exactly ``_glsbi_epoch_cap`` epochs (None: no cap)."""

    _glsbi_epoch_cap: int | None = None

    def _converged(self, epoch: int, stop_after_epochs: int) -> bool:
        converged = super()._converged(epoch, stop_after_epochs)  # type: ignore[misc]
        cap = self._glsbi_epoch_cap
        if not converged and cap is not None and epoch >= cap:
            # same end state as sbi's own early stop: the best validation weights
            self._neural_net.load_state_dict(self._best_model_state_dict)  # type: ignore[attr-defined]
            return True
        return converged


class NRE_A(_EpochCap, sbi_inference.NRE_A):  # noqa: N801 - sbi's names
    """sbi's ``NRE_A`` that honours an exact epoch count (see :func:`train`)."""


class NRE_B(_EpochCap, sbi_inference.NRE_B):  # noqa: N801
    """sbi's ``NRE_B`` that honours an exact epoch count (see :func:`train`)."""


class NRE_C(_EpochCap, sbi_inference.NRE_C):  # noqa: N801
    """sbi's ``NRE_C`` that honours an exact epoch count (see :func:`train`)."""


class BNRE(_EpochCap, sbi_inference.BNRE):
    """sbi's ``BNRE`` that honours an exact epoch count (see :func:`train`)."""


class NPE(_EpochCap, sbi_inference.NPE_C):
    """sbi's ``NPE`` (NPE-C) that honours an exact epoch count (see :func:`train`)."""


_TRAINERS: dict[str, type] = {"NRE_A": NRE_A, "NRE_B": NRE_B, "NRE_C": NRE_C, "BNRE": BNRE, "NPE": NPE}


def _keyword_names(fn: Callable[..., Any]) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _has_var_kwargs(fn: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def allowed_estimator_kwargs(method: Method, model: str) -> set[str]:
    """Keywords that :func:`build_inference` forwards to sbi's builder for ``method``/``model``.

    Args:
        method: One of :data:`METHODS`.
        model: A classifier (``"linear"``, ``"mlp"``, ``"resnet"``) for NRE methods, a key of
            sbi's ``model_builders`` (e.g. ``"nsf"``, ``"zuko_nsf"``) for NPE.

    Returns:
        The accepted keyword names.

    Raises:
        ValueError: If ``model`` is unknown for ``method``.
    """
    builders = model_builders if method == "NPE" else _CLASSIFIERS
    if model not in builders:
        raise ValueError(f"model={model!r} is not available for {method}; choose one of {sorted(builders)}")
    builder = builders[model]
    names = _keyword_names(builder)
    if model.startswith("zuko_") and _has_var_kwargs(builder):
        import zuko

        flow = getattr(zuko.flows, model.removeprefix("zuko_").upper(), None)
        for cls in inspect.getmro(flow) if flow is not None else ():
            if "__init__" in vars(cls) and cls.__module__.startswith("zuko.flows"):
                names |= _keyword_names(cls.__init__)
        if flow is not None and issubclass(flow, zuko.flows.MAF):  # autoregressive transforms + MLP
            names |= _keyword_names(zuko.flows.autoregressive.MaskedAutoregressiveTransform.__init__)
            names |= _keyword_names(zuko.nn.MLP.__init__)
    return names - _MANAGED - {"in_features", "out_features", "adjacency", "order", "shapes"}


def _make_builder(
    method: Method, model: str, embedding: EmbeddingConfig, kwargs: Mapping[str, Any], dedup_x: bool
) -> Callable[[Tensor, Tensor], nn.Module]:
    def build(batch_theta: Tensor, batch_x: Tensor) -> nn.Module:
        if batch_x.ndim != 4:
            raise ValueError(f"x must be images of shape (n, C, H, W), got {tuple(batch_x.shape)}")
        net: nn.Module = embedding.build(int(batch_x.shape[1])).fit_standardization(batch_x)
        logger.info("built %s embedding for x of shape %s", type(net).__name__, tuple(batch_x.shape[1:]))
        if dedup_x and method != "NPE":  # NPE never repeats x
            net = RepeatedRowsEmbedding(net)
        if method == "NPE":
            make = posterior_nn(model, z_score_x="none", embedding_net=net, **kwargs)
        else:
            make = classifier_nn(model, z_score_x="none", embedding_net_x=net, **kwargs)
        return make(batch_theta, batch_x)

    return build


def build_inference(
    method: Method,
    prior: Distribution,
    embedding: EmbeddingConfig | None = None,
    *,
    x_shape: Sequence[int] | None = None,
    model: str | None = None,
    hidden_features: int = 50,
    z_score_theta: Literal["independent", "none"] = "independent",
    dedup_x: bool = True,
    log_dir: str | None = None,
    device: str = "cpu",
    show_progress_bars: bool = False,
    **estimator_kwargs: Any,
) -> Any:
    """An sbi inference object for ``method`` whose estimator embeds images with ``ResNetGAP``.

    Args:
        method: ``"NRE_A"``, ``"NRE_B"``, ``"NRE_C"``, ``"BNRE"`` or ``"NPE"`` (NPE-C).
        prior: The prior over θ (e.g. :func:`glsbi_plugin.make_prior`).
        embedding: Options of the image embedding; default ``EmbeddingConfig()``. Every estimator
            built gets a fresh network whose standardisation is fitted on its training images.
        x_shape: Expected ``(C, H, W)`` of one image; checked by :func:`train`. ``None``: taken
            from the first simulations appended.
        model: Classifier head for NRE methods (``"mlp"``, default; ``"resnet"``; ``"linear"``) or
            flow for NPE (``"zuko_nsf"``, default; any key of sbi's ``model_builders``).
        hidden_features: Width of the classifier head / flow networks.
        z_score_theta: Standardise θ inside the estimator (``"independent"``) or not.
        dedup_x: NRE only: wrap the embedding in :class:`RepeatedRowsEmbedding`, which embeds the
            copies of an image that sbi makes (one per contrastive atom in training, one per θ in
            ``posterior.potential``) once. Exact; ``False`` gives sbi's plain behaviour.
        log_dir: Write TensorBoard logs here. ``None`` (default): keep metrics in memory
            (``inference._tracker``, a :class:`MemoryTracker`) and write no ``./sbi-logs``.
        device: Training device.
        show_progress_bars: Show sbi's progress output while training.
        **estimator_kwargs: Further options of sbi's builder (e.g. ``num_transforms=3`` for a flow,
            ``num_blocks=2`` for the ``"resnet"`` classifier); see :func:`allowed_estimator_kwargs`.

    Returns:
        The sbi inference object (a subclass of sbi's ``NRE_A``, ..., ``NPE_C``); pass it to
        :func:`train`.

    Raises:
        ValueError: Unknown ``method``/``model`` or a bad ``x_shape``/``embedding``.
        TypeError: A keyword not accepted by the chosen sbi builder.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    model = model or DEFAULT_MODELS[method]
    unknown = sorted(set(estimator_kwargs) - allowed_estimator_kwargs(method, model))
    if unknown:
        allowed = sorted(allowed_estimator_kwargs(method, model))
        raise TypeError(
            f"build_inference({method!r}, model={model!r}) got unexpected keywords {unknown}; accepted: {allowed}"
        )
    embedding = EmbeddingConfig() if embedding is None else embedding
    if not isinstance(embedding, EmbeddingConfig):
        raise ValueError(f"embedding must be an EmbeddingConfig, got {type(embedding).__name__}")
    if x_shape is not None and (len(x_shape) != 3 or min(int(s) for s in x_shape) < 1):
        raise ValueError(f"x_shape must be (C, H, W) with positive sizes, got {tuple(x_shape)}")
    if z_score_theta not in ("independent", "none"):
        raise ValueError(f"z_score_theta={z_score_theta!r}: allowed values are ('independent', 'none')")
    kwargs = dict(estimator_kwargs, hidden_features=hidden_features, z_score_theta=z_score_theta)
    builder = _make_builder(method, model, embedding, kwargs, dedup_x)
    tracker = MemoryTracker() if log_dir is None else TensorBoardTracker(_summary_writer(log_dir))
    key = "density_estimator" if method == "NPE" else "classifier"
    inference = _TRAINERS[method](
        prior=prior, device=device, tracker=tracker, show_progress_bars=show_progress_bars, **{key: builder}
    )
    inference._glsbi_x_shape = tuple(int(s) for s in x_shape) if x_shape is not None else None
    inference._glsbi_embedding = embedding
    return inference


def _summary_writer(log_dir: str) -> Any:
    from torch.utils.tensorboard.writer import SummaryWriter

    return SummaryWriter(log_dir)


def train(
    inference: Any,
    theta: Tensor,
    x: Tensor,
    *,
    max_epochs: int = 50,
    training_batch_size: int = 64,
    learning_rate: float = 5e-4,
    validation_fraction: float = 0.1,
    stop_after_epochs: int = 10,
    **method_kwargs: Any,
) -> nn.Module:
    """Appends ``(theta, x)`` to ``inference`` and trains for at most ``max_epochs`` epochs.

    Args:
        inference: An object from :func:`build_inference`.
        theta: Parameters ``(n, d)`` inside the prior's support.
        x: Images ``(n, C, H, W)``.
        max_epochs: Exact maximum number of epochs (sbi's own ``max_num_epochs`` trains one more).
        training_batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        validation_fraction: Share of the simulations held out for early stopping.
        stop_after_epochs: Stop when the validation loss has not improved for this many epochs.
        **method_kwargs: Method-specific options of sbi's ``train`` (``num_atoms`` for NRE_B,
            ``num_classes``/``gamma`` for NRE_C, ``regularization_strength`` for BNRE, ...).

    Returns:
        The trained estimator (in eval mode); pass it to :class:`GridPosterior` or to
        ``inference.build_posterior``.

    Raises:
        ValueError: θ of the wrong shape/dtype or outside the prior, x of the wrong shape, or
            a bad ``max_epochs``.
        TypeError: An unknown keyword, or one this helper sets itself.
    """
    if not isinstance(inference, _EpochCap):
        raise TypeError(f"inference must come from build_inference, got {type(inference).__name__}")
    own = {"max_num_epochs", "training_batch_size", "learning_rate", "validation_fraction", "stop_after_epochs"}
    passed = sorted(set(method_kwargs) & own)
    if passed:
        raise TypeError(
            f"train() sets {passed} itself; use max_epochs=... (an exact epoch count) and the named options"
        )
    if "resume_training" in method_kwargs:  # it would ignore the simulations appended here
        raise TypeError("train() always appends new simulations; to resume, call inference.train(...) directly")
    allowed = _keyword_names(inference.train) - own - {"self"}
    unknown = sorted(set(method_kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"train() got unexpected keywords {unknown} for {type(inference).__name__}; accepted: {sorted(allowed)}"
        )
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs={max_epochs!r}: must be an integer >= 1")
    theta = _check_train_theta(inference._prior, theta)
    x = _check_train_x(inference, x, theta.shape[0])
    with warnings.catch_warnings():  # sbi checks x for z-scoring even though we pass z_score_x="none"
        warnings.filterwarnings("ignore", message="Data has extreme outliers", category=UserWarning)
        inference.append_simulations(theta, x)
    inference._glsbi_epoch_cap = max_epochs
    sink = contextlib.nullcontext() if inference._show_progress_bars else contextlib.redirect_stdout(io.StringIO())
    with sink:  # sbi prints "Neural network successfully converged after ..." unconditionally
        estimator = inference.train(
            max_num_epochs=max_epochs,
            training_batch_size=training_batch_size,
            learning_rate=learning_rate,
            validation_fraction=validation_fraction,
            stop_after_epochs=stop_after_epochs,
            **method_kwargs,
        )
    logger.info("%s trained %d epochs", type(inference).__name__, inference.summary["epochs_trained"][-1])
    return estimator.eval()


def _check_train_theta(prior: Distribution, theta: object) -> Tensor:
    try:
        low, high = box_bounds(prior)
    except ValueError:  # not a box: check the shape only
        dim = int(prior.sample().numel())
        return check_theta(theta, dim=dim)
    return check_theta(theta, low, high)


def _check_train_x(inference: Any, x: object, n: int) -> Tensor:
    expected = inference._glsbi_x_shape
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating torch.Tensor of shape (n, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or (expected is not None and tuple(x.shape[1:]) != expected):
        want = f"(n, {', '.join(map(str, expected))})" if expected is not None else "(n, C, H, W)"
        raise ValueError(f"x must have shape {want}, got {tuple(x.shape)}")
    if x.shape[0] != n:
        raise ValueError(f"theta and x must hold the same number of simulations, got {n} and {x.shape[0]}")
    if expected is None:
        inference._glsbi_x_shape = tuple(int(s) for s in x.shape[1:])
    return x.detach().to(torch.float32)
