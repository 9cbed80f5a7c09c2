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
  then silently swallowed by some builders (e.g. ``num_bins`` by ``"maf"``). Here the estimator's
  options are typed, frozen dataclasses, :class:`ClassifierConfig` (NRE) and :class:`FlowConfig`
  (NPE): an unknown option is a ``TypeError``, a bad value or an option the chosen model ignores a
  ``ValueError``, and checkpoints store them (:mod:`glsbi_plugin.checkpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, get_args

import sbi.inference as sbi_inference
import torch
from sbi.neural_nets import classifier_nn, posterior_nn
from sbi.utils.tracking import TensorBoardTracker
from torch import Tensor, nn
from torch.distributions import Distribution

from .._validation import box_bounds, check_theta, is_int
from ..embeddings import EmbeddingConfig

__all__ = [
    "CLASSIFIER_MODELS",
    "FLOW_MODELS",
    "METHODS",
    "ClassifierConfig",
    "EstimatorConfig",
    "FlowConfig",
    "MemoryTracker",
    "Method",
    "RepeatedRowsEmbedding",
    "build_inference",
    "default_estimator_config",
    "train",
]

logger = logging.getLogger(__name__)

Method = Literal["NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE"]
METHODS: tuple[str, ...] = get_args(Method)

ClassifierModel = Literal["mlp", "resnet", "linear"]
FlowModel = Literal[
    "zuko_nsf",
    "zuko_maf",
    "zuko_nice",
    "zuko_naf",
    "zuko_unaf",
    "zuko_sospf",
    "zuko_gf",
    "zuko_bpf",
    "nsf",
    "maf",
    "maf_rqs",
    "made",
    "mdn",
]
NormLayer = Literal["layer", "batch", "none"]
#: Classifier heads of the ratio methods (``ClassifierConfig.model``).
CLASSIFIER_MODELS: tuple[str, ...] = get_args(ClassifierModel)
#: Density estimators of NPE (``FlowConfig.model``): sbi's ``model_builders`` for a continuous θ on a box.
FLOW_MODELS: tuple[str, ...] = get_args(FlowModel)
_NORM_LAYERS: dict[str, type[nn.Module]] = {"layer": nn.LayerNorm, "batch": nn.BatchNorm1d, "none": nn.Identity}
_ZUKO_AUTOREGRESSIVE = ("zuko_maf", "zuko_nsf", "zuko_naf", "zuko_unaf", "zuko_sospf", "zuko_bpf")
_NFLOWS_RESIDUAL = ("maf", "maf_rqs", "nsf")


def _check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not is_int(value) or value < low:
        none = " or None" if optional else ""
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}{none}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be True or False")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_probability(name: str, value: Any) -> float:
    if not _is_real(value) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r}: must be a number in [0, 1)")
    return float(value)


def _check_positive(name: str, value: Any) -> float:
    if not _is_real(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    return float(value)


class _EstimatorOptions:
    """Shared behaviour of :class:`ClassifierConfig` and :class:`FlowConfig` (frozen dataclasses).

    ``_USED_BY`` maps an option to the models whose sbi builder takes it (options not listed: all
    models); ``_SBI_NAMES`` renames an option for one model's builder.
    """

    model: str
    _MODELS: ClassVar[tuple[str, ...]] = ()
    _USED_BY: ClassVar[dict[str, tuple[str, ...]]] = {}
    _SBI_NAMES: ClassVar[dict[tuple[str, str], str]] = {}

    def _check_model_and_unused(self) -> None:
        if self.model not in self._MODELS:
            raise ValueError(f"model={self.model!r}: allowed values are {self._MODELS}")
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if not self.uses(field.name) and value != field.default:
                raise ValueError(
                    f"{field.name}={value!r} has no effect with model={self.model!r}; "
                    f"it is an option of {self._USED_BY[field.name]}"
                )

    def uses(self, option: str) -> bool:
        """Whether sbi's builder for ``self.model`` takes ``option`` (a field name)."""
        return option == "model" or self.model in self._USED_BY.get(option, self._MODELS)

    def builder_kwargs(self) -> dict[str, Any]:
        """The keywords passed to sbi's builder factory for these options.

        :func:`build_inference` calls ``classifier_nn(model, z_score_theta=..., z_score_x="none",
        embedding_net_x=embedding, **config.builder_kwargs())`` (NRE) or ``posterior_nn(model, ...,
        embedding_net=embedding, **config.builder_kwargs())`` (NPE). Holds the options that
        ``self.model`` takes, under sbi's names; ``None`` values (the model's own default) are left out.
        """
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if field.name != "model" and self.uses(field.name) and value is not None:
                kwargs[self._SBI_NAMES.get((field.name, self.model), field.name)] = value
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """Returns every field as a JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Args:
            data: Mapping of field names to values, e.g. parsed from JSON.

        Returns:
            The configuration.

        Raises:
            ValueError: If ``data`` has unknown keys or a value is outside its allowed range.
        """
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed keys are {sorted(known)}")
        return cls(**data)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifierConfig(_EstimatorOptions):
    """Options of the classifier head of the ratio methods (``NRE_A``, ``NRE_B``, ``NRE_C``, ``BNRE``).

    Frozen, hashable, JSON round-trippable (:meth:`to_dict`/:meth:`from_dict`) and checked at
    construction. The head sees ``[θ, embedding(x)]``; the defaults give the network of sbi 0.27's
    ``classifier_nn("mlp")``. An option that the chosen ``model`` does not take must keep its default.

    Args:
        model: ``"mlp"`` (default; two hidden layers, each followed by ``norm_layer`` and a ReLU),
            ``"resnet"`` (nflows ``ResidualNet``) or ``"linear"`` (one linear layer).
        hidden_features: Width of the hidden layers (``"mlp"``, ``"resnet"``); an integer >= 1;
            default 50.
        norm_layer: ``"mlp"`` only: normalisation after each hidden layer, ``"layer"`` (default;
            ``nn.LayerNorm``), ``"batch"`` (``nn.BatchNorm1d``) or ``"none"``.
        num_blocks: ``"resnet"`` only: residual blocks; an integer >= 1; default 2.
        dropout_probability: ``"resnet"`` only: dropout in the residual blocks, in [0, 1);
            default 0.0.
        use_batch_norm: ``"resnet"`` only: batch norm in the residual blocks; default False.

    Raises:
        ValueError: A value outside its allowed range, or an option that ``model`` does not take
            set to a value other than its default.
        TypeError: An unknown field (the dataclass constructor).

    Example:
        >>> ClassifierConfig(model="resnet", num_blocks=3).builder_kwargs()
        {'hidden_features': 50, 'num_blocks': 3, 'dropout_probability': 0.0, 'use_batch_norm': False}
        >>> ClassifierConfig(num_blocks=3)
        Traceback (most recent call last):
        ...
        ValueError: num_blocks=3 has no effect with model='mlp'; it is an option of ('resnet',)
    """

    model: ClassifierModel = "mlp"
    hidden_features: int = 50
    norm_layer: NormLayer = "layer"
    num_blocks: int = 2
    dropout_probability: float = 0.0
    use_batch_norm: bool = False

    _MODELS: ClassVar[tuple[str, ...]] = CLASSIFIER_MODELS
    _USED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "hidden_features": ("mlp", "resnet"),
        "norm_layer": ("mlp",),
        "num_blocks": ("resnet",),
        "dropout_probability": ("resnet",),
        "use_batch_norm": ("resnet",),
    }

    def __post_init__(self) -> None:
        _check_int("hidden_features", self.hidden_features, 1)
        if self.norm_layer not in _NORM_LAYERS:
            raise ValueError(f"norm_layer={self.norm_layer!r}: allowed values are {tuple(_NORM_LAYERS)}")
        _check_int("num_blocks", self.num_blocks, 1)
        dropout = _check_probability("dropout_probability", self.dropout_probability)
        object.__setattr__(self, "dropout_probability", dropout)  # stored as a float
        _check_bool("use_batch_norm", self.use_batch_norm)
        self._check_model_and_unused()

    def builder_kwargs(self) -> dict[str, Any]:
        """The keywords passed to sbi's ``classifier_nn`` (``norm_layer`` as the module class)."""
        kwargs = super().builder_kwargs()
        if "norm_layer" in kwargs:
            kwargs["norm_layer"] = _NORM_LAYERS[kwargs["norm_layer"]]
        return kwargs


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowConfig(_EstimatorOptions):
    """Options of NPE's conditional density estimator ``q(θ | embedding(x))``.

    Frozen, hashable, JSON round-trippable (:meth:`to_dict`/:meth:`from_dict`) and checked at
    construction. The defaults give the network of sbi 0.27's ``posterior_nn("zuko_nsf")`` (note:
    ``posterior_nn`` passes ``num_bins=10`` and ``num_transforms=5``, overriding the zuko builders'
    own 8 bins and, for ``zuko_gf``/``zuko_bpf``, 3 transforms). An option that the chosen
    ``model`` does not take must keep its default. Numerical details of the spline/MLP internals
    (``tails``, ``min_bin_width``, zuko's ``activation``/``slope``, ...) keep sbi's/zuko's defaults.

    Args:
        model: One of :data:`FLOW_MODELS`: zuko's ``"zuko_nsf"`` (default), ``"zuko_maf"``,
            ``"zuko_nice"``, ``"zuko_naf"``, ``"zuko_unaf"``, ``"zuko_sospf"``, ``"zuko_gf"``,
            ``"zuko_bpf"``; nflows' ``"nsf"``, ``"maf"``, ``"maf_rqs"``, ``"made"``; ``"mdn"``.
            (sbi's ``mnle``/``mnpe`` are for mixed discrete data, ``tabpfn`` trains no network and
            ``zuko_ncsf`` needs θ on a circle: not offered.)
        hidden_features: Width of the flow's networks (every model); an integer >= 1; default 50.
            For zuko flows this is sbi's ``[hidden_features] * num_transforms`` hidden layers.
        num_transforms: Number of flow transforms (every model but ``"made"``, ``"mdn"``); an
            integer >= 1; default 5.
        num_bins: Spline bins (``"zuko_nsf"``, ``"nsf"``, ``"maf_rqs"``); an integer >= 1; default 10.
        passes: zuko autoregressive flows (``"zuko_maf"``, ``"zuko_nsf"``, ``"zuko_naf"``,
            ``"zuko_unaf"``, ``"zuko_sospf"``, ``"zuko_bpf"``): passes of the inverse; ``None``
            (default) is fully autoregressive, ``2`` a coupling flow; else an integer >= 1.
        randperm: The same zuko flows: permute features randomly between transforms instead of
            reversing them; default False.
        num_blocks: nflows ``"maf"``, ``"maf_rqs"``, ``"nsf"``: residual blocks of each
            transform's network; an integer >= 1; default 2.
        dropout_probability: The same nflows flows: dropout in those networks, in [0, 1); default 0.0.
        use_batch_norm: The same nflows flows: batch norm in those networks; default False.
        tail_bound: ``"nsf"``, ``"maf_rqs"``: the splines act on [-tail_bound, tail_bound]; a
            finite number > 0; default 3.0.
        hidden_layers_spline_context: ``"nsf"`` with a one-dimensional θ: hidden layers of the
            spline's context network; an integer >= 0; default 1.
        num_components: Mixture components of ``"mdn"`` (and of ``"made"``, sbi's
            ``num_mixture_components``); an integer >= 1; default 10.
        randmask: ``"zuko_nice"``: random coupling masks; default False.
        signal: ``"zuko_naf"``, ``"zuko_unaf"``: signal features of the monotonic network; an
            integer >= 1; default 16.
        degree: ``"zuko_sospf"``, ``"zuko_bpf"``: polynomial degree; ``None`` (default) keeps the
            model's own (4 for SOSPF, 16 for BPF); else an integer >= 1.
        polynomials: ``"zuko_sospf"``: number of polynomials; an integer >= 1; default 3.
        components: ``"zuko_gf"``: Gaussian mixture components; an integer >= 1; default 8.

    Raises:
        ValueError: A value outside its allowed range, or an option that ``model`` does not take
            set to a value other than its default.
        TypeError: An unknown field (the dataclass constructor).

    Example:
        >>> FlowConfig().builder_kwargs()
        {'hidden_features': 50, 'num_transforms': 5, 'num_bins': 10, 'randperm': False}
        >>> FlowConfig(model="nsf", num_bins=4).to_dict()["num_bins"]
        4
        >>> FlowConfig(model="zuko_maf", num_bins=4)
        Traceback (most recent call last):
        ...
        ValueError: num_bins=4 has no effect with model='zuko_maf'; it is an option of ('zuko_nsf', 'nsf', 'maf_rqs')
    """

    model: FlowModel = "zuko_nsf"
    hidden_features: int = 50
    num_transforms: int = 5
    num_bins: int = 10
    passes: int | None = None
    randperm: bool = False
    num_blocks: int = 2
    dropout_probability: float = 0.0
    use_batch_norm: bool = False
    tail_bound: float = 3.0
    hidden_layers_spline_context: int = 1
    num_components: int = 10
    randmask: bool = False
    signal: int = 16
    degree: int | None = None
    polynomials: int = 3
    components: int = 8

    _MODELS: ClassVar[tuple[str, ...]] = FLOW_MODELS
    _USED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "num_transforms": tuple(m for m in FLOW_MODELS if m not in ("made", "mdn")),
        "num_bins": ("zuko_nsf", "nsf", "maf_rqs"),
        "passes": _ZUKO_AUTOREGRESSIVE,
        "randperm": _ZUKO_AUTOREGRESSIVE,
        "num_blocks": _NFLOWS_RESIDUAL,
        "dropout_probability": _NFLOWS_RESIDUAL,
        "use_batch_norm": _NFLOWS_RESIDUAL,
        "tail_bound": ("nsf", "maf_rqs"),
        "hidden_layers_spline_context": ("nsf",),
        "num_components": ("mdn", "made"),
        "randmask": ("zuko_nice",),
        "signal": ("zuko_naf", "zuko_unaf"),
        "degree": ("zuko_sospf", "zuko_bpf"),
        "polynomials": ("zuko_sospf",),
        "components": ("zuko_gf",),
    }
    _SBI_NAMES: ClassVar[dict[tuple[str, str], str]] = {("num_components", "made"): "num_mixture_components"}

    def __post_init__(self) -> None:
        for name in ("hidden_features", "num_transforms", "num_bins", "num_blocks", "num_components", "signal"):
            _check_int(name, getattr(self, name), 1)
        _check_int("polynomials", self.polynomials, 1)
        _check_int("components", self.components, 1)
        _check_int("hidden_layers_spline_context", self.hidden_layers_spline_context, 0)
        _check_int("passes", self.passes, 1, optional=True)
        _check_int("degree", self.degree, 1, optional=True)
        for name in ("randperm", "use_batch_norm", "randmask"):
            _check_bool(name, getattr(self, name))
        dropout = _check_probability("dropout_probability", self.dropout_probability)
        object.__setattr__(self, "dropout_probability", dropout)  # stored as a float
        object.__setattr__(self, "tail_bound", _check_positive("tail_bound", self.tail_bound))
        self._check_model_and_unused()


#: Options of a method's estimator: a :class:`ClassifierConfig` (NRE methods) or a :class:`FlowConfig` (NPE).
EstimatorConfig = ClassifierConfig | FlowConfig


def default_estimator_config(method: Method) -> EstimatorConfig:
    """The estimator options :func:`build_inference` uses for ``method`` when given none.

    Args:
        method: One of :data:`METHODS`.

    Returns:
        ``FlowConfig()`` for ``"NPE"``, ``ClassifierConfig()`` for the ratio methods.

    Raises:
        ValueError: If ``method`` is unknown.

    Example:
        >>> default_estimator_config("NPE") == FlowConfig(model="zuko_nsf", hidden_features=50)
        True
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: choose one of {METHODS}")
    return FlowConfig() if method == "NPE" else ClassifierConfig()


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


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One finished training epoch, as :func:`train` reports it (to the log and to ``progress``).

    Attributes:
        epoch: Epochs finished in this call of :func:`train` (1, 2, ...).
        max_epochs: The cap (``max_epochs`` of :func:`train`).
        training_loss: Mean training loss of the epoch (sbi's, per sample).
        validation_loss: Loss on sbi's held-out share after the epoch.
        best_validation_loss: Lowest validation loss so far.
        best_epoch: The epoch that reached it (its weights are the ones kept).
        seconds: Wall time of the epoch.
    """

    epoch: int
    max_epochs: int
    training_loss: float
    validation_loss: float
    best_validation_loss: float
    best_epoch: int
    seconds: float

    def describe(self) -> str:
        """One line: ``epoch 3/30: train 1.2345, validation 1.3456 (best 1.3000 at epoch 2), 4.1 s``."""
        return (
            f"epoch {self.epoch}/{self.max_epochs}: train {self.training_loss:.4f}, validation "
            f"{self.validation_loss:.4f} (best {self.best_validation_loss:.4f} at epoch {self.best_epoch}), "
            f"{self.seconds:.1f} s"
        )


class _EpochCap:
    """Mixin: stop sbi's training loop after exactly ``_glsbi_epoch_cap`` epochs (None: no cap), and
    report every finished epoch (an :class:`EpochRecord`) to the log and to ``_glsbi_progress``."""

    _glsbi_epoch_cap: int | None = None
    _glsbi_progress: Callable[[EpochRecord], None] | None = None
    _glsbi_offset: int = 0
    _glsbi_best_epoch: int = 0

    def _converged(self, epoch: int, stop_after_epochs: int) -> bool:
        converged = super()._converged(epoch, stop_after_epochs)  # type: ignore[misc]
        self._glsbi_report()
        cap = self._glsbi_epoch_cap
        if not converged and cap is not None and epoch >= cap:
            # same end state as sbi's own early stop: the best validation weights
            self._neural_net.load_state_dict(self._best_model_state_dict)  # type: ignore[attr-defined]
            return True
        return converged

    def _glsbi_report(self) -> None:
        summary = self._summary  # type: ignore[attr-defined]
        done = len(summary["validation_loss"]) - self._glsbi_offset
        if done < 1:
            return
        if self._val_loss <= self._best_val_loss:  # type: ignore[attr-defined]  # sbi has just kept these weights
            self._glsbi_best_epoch = done
        record = EpochRecord(
            epoch=done,
            max_epochs=int(self._glsbi_epoch_cap or 0),
            training_loss=float(summary["training_loss"][-1]),
            validation_loss=float(summary["validation_loss"][-1]),
            best_validation_loss=float(self._best_val_loss),  # type: ignore[attr-defined]
            best_epoch=self._glsbi_best_epoch,
            seconds=float(summary["epoch_durations_sec"][-1]),
        )
        logger.info("%s %s", type(self).__name__, record.describe())
        if self._glsbi_progress is not None:
            self._glsbi_progress(record)


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


def _make_builder(
    method: Method,
    estimator: EstimatorConfig,
    embedding: EmbeddingConfig,
    z_score_theta: str,
    dedup_x: bool,
) -> Callable[[Tensor, Tensor], nn.Module]:
    kwargs = estimator.builder_kwargs()

    def build(batch_theta: Tensor, batch_x: Tensor) -> nn.Module:
        if batch_x.ndim != 4:
            raise ValueError(f"x must be images of shape (n, C, H, W), got {tuple(batch_x.shape)}")
        net: nn.Module = embedding.build(int(batch_x.shape[1])).fit_standardization(batch_x)
        logger.info("built %s embedding for x of shape %s", type(net).__name__, tuple(batch_x.shape[1:]))
        if dedup_x and method != "NPE":  # NPE never repeats x
            net = RepeatedRowsEmbedding(net)
        with warnings.catch_warnings():
            # sbi 0.27 warns about options its own configs do not list (zuko's ``passes``, the MLP
            # classifier's ``norm_layer``) and forwards them; ours are checked by the dataclass
            warnings.filterwarnings("ignore", message="Unknown kwargs passed to", category=UserWarning)
            if method == "NPE":
                make = posterior_nn(
                    estimator.model, z_score_theta=z_score_theta, z_score_x="none", embedding_net=net, **kwargs
                )
            else:
                make = classifier_nn(
                    estimator.model, z_score_theta=z_score_theta, z_score_x="none", embedding_net_x=net, **kwargs
                )
        built = make(batch_theta, batch_x)
        built._glsbi_estimator_config = estimator  # read by checkpoint.save_estimator
        return built

    return build


def build_inference(
    method: Method,
    prior: Distribution,
    embedding: EmbeddingConfig | None = None,
    estimator: EstimatorConfig | None = None,
    *,
    x_shape: Sequence[int] | None = None,
    z_score_theta: Literal["independent", "none"] = "independent",
    dedup_x: bool = True,
    log_dir: str | None = None,
    device: str = "cpu",
    show_progress_bars: bool = False,
) -> Any:
    """An sbi inference object for ``method`` whose estimator embeds images with ``ResNetGAP``.

    Args:
        method: ``"NRE_A"``, ``"NRE_B"``, ``"NRE_C"``, ``"BNRE"`` or ``"NPE"`` (NPE-C).
        prior: The prior over θ (e.g. :func:`glsbi_plugin.make_prior`).
        embedding: Options of the image embedding; default ``EmbeddingConfig()``. Every estimator
            built gets a fresh network whose standardisation is fitted on its training images.
        estimator: Options of the network on top of the embedding: a :class:`ClassifierConfig`
            for the ratio methods, a :class:`FlowConfig` for NPE. Default
            :func:`default_estimator_config` (an MLP head; a zuko spline flow), the networks of
            sbi's own defaults.
        x_shape: Expected ``(C, H, W)`` of one image; checked by :func:`train`. ``None``: taken
            from the first simulations appended.
        z_score_theta: Standardise θ inside the estimator (``"independent"``) or not.
        dedup_x: NRE only: wrap the embedding in :class:`RepeatedRowsEmbedding`, which embeds the
            copies of an image that sbi makes (one per contrastive atom in training, one per θ in
            ``posterior.potential``) once. Exact; ``False`` gives sbi's plain behaviour.
        log_dir: Write TensorBoard logs here. ``None`` (default): keep metrics in memory
            (``inference._tracker``, a :class:`MemoryTracker`) and write no ``./sbi-logs``.
        device: Training device.
        show_progress_bars: Show sbi's progress output while training.

    Returns:
        The sbi inference object (a subclass of sbi's ``NRE_A``, ..., ``NPE_C``); pass it to
        :func:`train`. Its ``_glsbi_embedding`` and ``_glsbi_estimator_config`` hold the options,
        and every network it builds carries its ``_glsbi_estimator_config`` (for
        :func:`glsbi_plugin.checkpoint.save_estimator`).

    Raises:
        ValueError: An unknown ``method``, an ``estimator`` of the wrong kind for ``method``, or a
            bad ``x_shape``/``embedding``/``z_score_theta``.

    Example:
        >>> from sbi.utils import BoxUniform
        >>> prior = BoxUniform(torch.zeros(2), torch.ones(2))
        >>> inference = build_inference("NRE_C", prior, estimator=ClassifierConfig(hidden_features=64))
        >>> inference._glsbi_estimator_config.hidden_features
        64
        >>> build_inference("NPE", prior, estimator=ClassifierConfig())
        Traceback (most recent call last):
        ...
        ValueError: NPE needs a FlowConfig as estimator, got ClassifierConfig
    """
    default = default_estimator_config(method)  # also checks method
    estimator = default if estimator is None else estimator
    if not isinstance(estimator, type(default)):
        raise ValueError(f"{method} needs a {type(default).__name__} as estimator, got {type(estimator).__name__}")
    embedding = EmbeddingConfig() if embedding is None else embedding
    if not isinstance(embedding, EmbeddingConfig):
        raise ValueError(f"embedding must be an EmbeddingConfig, got {type(embedding).__name__}")
    if x_shape is not None and (len(x_shape) != 3 or min(int(s) for s in x_shape) < 1):
        raise ValueError(f"x_shape must be (C, H, W) with positive sizes, got {tuple(x_shape)}")
    if z_score_theta not in ("independent", "none"):
        raise ValueError(f"z_score_theta={z_score_theta!r}: allowed values are ('independent', 'none')")
    builder = _make_builder(method, estimator, embedding, z_score_theta, dedup_x)
    tracker = MemoryTracker() if log_dir is None else TensorBoardTracker(_summary_writer(log_dir))
    key = "density_estimator" if method == "NPE" else "classifier"
    inference = _TRAINERS[method](
        prior=prior, device=device, tracker=tracker, show_progress_bars=show_progress_bars, **{key: builder}
    )
    inference._glsbi_x_shape = tuple(int(s) for s in x_shape) if x_shape is not None else None
    inference._glsbi_embedding = embedding
    inference._glsbi_estimator_config = estimator
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
    progress: Callable[[EpochRecord], None] | None = None,
    **method_kwargs: Any,
) -> nn.Module:
    """Appends ``(theta, x)`` to ``inference`` and trains for at most ``max_epochs`` epochs.

    Every finished epoch is logged (``INFO``: training and validation loss, the best epoch so
    far, seconds) and handed to ``progress`` as an :class:`EpochRecord`.

    Args:
        inference: An object from :func:`build_inference`.
        theta: Parameters ``(n, d)`` inside the prior's support.
        x: Images ``(n, C, H, W)``.
        max_epochs: Exact maximum number of epochs (sbi's own ``max_num_epochs`` trains one more).
        training_batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        validation_fraction: Share of the simulations held out for early stopping.
        stop_after_epochs: Stop when the validation loss has not improved for this many epochs.
        progress: Called after every epoch with its :class:`EpochRecord` (e.g. to update a
            progress bar); ``None``: the log only.
        **method_kwargs: Method-specific options of sbi's ``train`` (``num_atoms`` for NRE_B,
            ``num_classes``/``gamma`` for NRE_C, ``regularization_strength`` for BNRE, ...).

    Returns:
        The trained estimator (in eval mode; ``_glsbi_epochs_trained`` and
        ``_glsbi_best_validation_loss`` record the run); pass it to :class:`GridPosterior` or to
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
    inference._glsbi_progress = progress
    inference._glsbi_offset = len(inference._summary["validation_loss"])
    inference._glsbi_best_epoch = 0
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
    inference._glsbi_progress = None
    logger.info("%s trained %d epochs", type(inference).__name__, inference.summary["epochs_trained"][-1])
    # what the training did, on the estimator itself (for ensembles, which keep no inference object)
    estimator._glsbi_epochs_trained = int(inference.summary["epochs_trained"][-1])
    estimator._glsbi_best_validation_loss = float(inference.summary["best_validation_loss"][-1])
    return estimator.eval()


def train_ensemble(
    method: Method,
    prior: Distribution,
    theta: Tensor,
    x: Tensor,
    *,
    members: int = 5,
    seed: int = 0,
    embedding: EmbeddingConfig | None = None,
    estimator: EstimatorConfig | None = None,
    x_shape: Sequence[int] | None = None,
    progress: Callable[[int, EpochRecord], None] | None = None,
    **train_kwargs: Any,
) -> list[nn.Module]:
    """Trains ``members`` estimators of one method on the same simulations, each from its own seed.

    Member ``k`` is built and trained after ``torch.manual_seed(seed + k)``: its initial weights,
    sbi's split of a validation share and its mini-batch order differ. Pass the list to
    :class:`GridPosterior` (an equal-weight mixture of the members' posteriors) or build one
    sbi posterior per member and mix them with sbi's ``EnsemblePosterior``. The caller's torch
    generator state is restored afterwards.

    Args:
        method: As for :func:`build_inference`.
        prior: The prior of ``theta``.
        theta: Parameters ``(n, d)``.
        x: Images ``(n, C, H, W)``.
        members: K >= 1.
        seed: Seed of member 0; member k uses ``seed + k``.
        embedding: The image embedding's options (:func:`build_inference`).
        estimator: The head's options (:func:`build_inference`).
        x_shape: Expected ``(C, H, W)`` (:func:`build_inference`).
        progress: Called after every epoch with ``(member, record)``.
        **train_kwargs: Passed to :func:`train` (``max_epochs``, ``learning_rate``, ...).

    Returns:
        The K trained estimators, in eval mode.

    Raises:
        ValueError: ``members`` or ``seed`` not a non-negative integer (members >= 1), or any
            error of :func:`build_inference`/:func:`train`.
    """
    if not is_int(members) or members < 1:
        raise ValueError(f"members={members!r}: must be an integer >= 1")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    state = torch.random.get_rng_state()
    out = []
    try:
        for k in range(members):
            torch.manual_seed(seed + k)
            inference = build_inference(method, prior, embedding, estimator, x_shape=x_shape)
            report = None if progress is None else (lambda record, k=k: progress(k, record))
            out.append(train(inference, theta, x, progress=report, **train_kwargs))
            logger.info("ensemble member %d/%d trained", k + 1, members)
    finally:
        torch.random.set_rng_state(state)
    return out


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
