r"""Save a trained estimator with everything needed to rebuild it, its prior and its forward model.

An estimator from :func:`glsbi_plugin.inference.train` is an sbi ``RatioEstimator`` (NRE) or a
flow (NPE) whose architecture depends on the options of :func:`~glsbi_plugin.inference.build_inference`
and on the image shape. :func:`save_estimator` writes those options, the simulator's description
(:meth:`~glsbi_plugin.TDGLSimulator.describe`: config, fixed parameters, θ names, prior box,
channels, measurement) and the ``state_dict`` to one ``torch.save`` file holding only plain Python
values and tensors, so :func:`load_estimator` reads it with ``weights_only=True`` (no pickled code).
Loading rebuilds the estimator through the same builder and loads the weights strictly.

The file is a dict: ``format`` (:data:`FORMAT`), ``method``, ``embedding``
(``EmbeddingConfig.to_dict()``), ``estimator`` (the ``ClassifierConfig``/``FlowConfig``'s
``to_dict()``), ``build_kwargs`` (``z_score_theta``/``dedup_x`` if given), ``simulator`` and
``state_dict``. Files of the first format (``"glsbi-estimator/1"``), which kept the estimator's
options as ``build_inference`` keywords in ``build_kwargs`` (``model``, ``hidden_features``,
``num_transforms``, ...), still load: those keywords are mapped onto the config.

Example:
    >>> save_estimator("estimator.pt", estimator, method="NRE_C", simulator=simulator,
    ...                embedding=embedding)                                   # doctest: +SKIP
    >>> ckpt = load_estimator("estimator.pt")                                 # doctest: +SKIP
    >>> ckpt.estimator_config                                                 # doctest: +SKIP
    ClassifierConfig(model='mlp', hidden_features=50, ...)
    >>> GridPosterior(ckpt.estimator, ckpt.prior).set_default_x(ckpt.simulator(theta, seed=0)[0])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sbi.utils import BoxUniform
from torch import nn

from .embeddings import EmbeddingConfig
from .sbi_simulator import TDGLSimulator

if TYPE_CHECKING:
    from .inference import EstimatorConfig, MarginalRecalibration

__all__ = [
    "FORMAT",
    "RECALIBRATION_FILE",
    "EstimatorCheckpoint",
    "ensemble_paths",
    "file_sha256",
    "load_estimator",
    "recalibration_for",
    "save_estimator",
]

logger = logging.getLogger(__name__)

#: Format tag written into every checkpoint; :func:`load_estimator` also reads :data:`_FORMAT_1` files.
FORMAT = "glsbi-estimator/2"
#: The recalibration the main job writes beside its ``estimator.pt`` (``inference.MarginalRecalibration``).
RECALIBRATION_FILE = "recalibration.json"
# the first format: the estimator's options were build_inference keywords inside "build_kwargs"
_FORMAT_1 = "glsbi-estimator/1"
# build_inference keywords other than the options that save_estimator stores itself
_BUILD_KWARGS = ("z_score_theta", "dedup_x")
# build_inference keywords that do not change the network (dropped from format-1 files)
_NOT_ARCHITECTURE = ("device", "log_dir", "show_progress_bars")


@dataclasses.dataclass(frozen=True, eq=False)
class EstimatorCheckpoint:
    """A rebuilt estimator with the prior and the forward model it was trained for.

    Attributes:
        estimator: The trained estimator in eval mode (pass it to ``GridPosterior``).
        prior: The box prior over θ (an sbi ``BoxUniform``) of the training set.
        simulator: The forward model of the training set (same config, parameters, channels).
        method: The sbi method, e.g. ``"NRE_C"``.
        embedding: The image embedding's options.
        estimator_config: The options of the network on the embedding (a ``ClassifierConfig`` for
            the ratio methods, a ``FlowConfig`` for NPE).
        build_kwargs: The other keywords given to ``build_inference`` (``z_score_theta``,
            ``dedup_x``; empty if they kept their defaults).
    """

    estimator: nn.Module
    prior: BoxUniform
    simulator: TDGLSimulator
    method: str
    embedding: EmbeddingConfig
    estimator_config: EstimatorConfig
    build_kwargs: dict[str, Any]


def save_estimator(
    path: str | Path,
    estimator: nn.Module,
    *,
    method: str,
    simulator: TDGLSimulator,
    embedding: EmbeddingConfig,
    estimator_config: EstimatorConfig | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``estimator`` and the options that rebuild it to ``path`` (see the module docstring).

    Args:
        path: Output file (conventionally ``*.pt``); its directory must exist.
        estimator: The trained estimator (from :func:`~glsbi_plugin.inference.train`).
        method: The method given to ``build_inference`` (``"NRE_A"``, ..., ``"NPE"``).
        simulator: The simulator of the training set; its prior box is taken from ``low``/``high``.
        embedding: The ``EmbeddingConfig`` given to ``build_inference``.
        estimator_config: The ``ClassifierConfig``/``FlowConfig`` given to ``build_inference``.
            ``None`` (default): the one the estimator was built with (networks built by
            ``build_inference`` carry it), else the method's default.
        build_kwargs: The keywords ``z_score_theta``/``dedup_x`` if they were given to
            ``build_inference``; JSON values only.

    Returns:
        The path written.

    Raises:
        ValueError: If ``method`` is unknown, ``estimator_config`` is of the wrong kind for
            ``method`` or differs from the one the estimator was built with, ``build_kwargs`` has
            other keys or non-JSON values, or the estimator's θ/x shapes do not match the simulator.
    """
    from .inference import default_estimator_config

    default = default_estimator_config(method)  # type: ignore[arg-type]  # checks the method
    built_with = getattr(estimator, "_glsbi_estimator_config", None)
    config = estimator_config if estimator_config is not None else built_with or default
    if not isinstance(config, type(default)):
        raise ValueError(f"{method} needs a {type(default).__name__} as estimator_config, got {type(config).__name__}")
    if built_with is not None and built_with != config:
        raise ValueError(f"estimator_config={config!r}, but the estimator was built with {built_with!r}")
    kwargs = dict(build_kwargs or {})
    extra = sorted(set(kwargs) - set(_BUILD_KWARGS))
    if extra:
        hint = ""
        if set(extra) & set(config.to_dict()):
            hint = f"estimator options go in estimator_config (a {type(default).__name__}); "
        raise ValueError(f"build_kwargs has keys {extra}: {hint}build_kwargs takes only {_BUILD_KWARGS}")
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ValueError(f"build_kwargs must hold JSON values only: {e}") from None
    input_shape = tuple(getattr(estimator, "input_shape", ()))
    condition_shape = tuple(getattr(estimator, "condition_shape", ()))
    if input_shape != (simulator.theta_dim,) or condition_shape != simulator.x_shape:
        raise ValueError(
            f"the estimator's shapes θ {input_shape}, x {condition_shape} do not match the simulator's "
            f"({simulator.theta_dim},), {simulator.x_shape}"
        )
    payload = {
        "format": FORMAT,
        "method": str(method),
        "embedding": embedding.to_dict(),
        "estimator": config.to_dict(),
        "build_kwargs": kwargs,
        "simulator": json.loads(json.dumps(simulator.describe())),  # plain lists, floats, strings
        "state_dict": {k: v.detach().cpu() for k, v in estimator.state_dict().items()},
    }
    path = Path(path)
    torch.save(payload, path)
    logger.info("saved %s estimator to %s", method, path)
    return path


def load_estimator(path: str | Path, *, batch_size: int = 32) -> EstimatorCheckpoint:
    """Rebuild the estimator, prior and simulator saved by :func:`save_estimator`.

    Args:
        path: A file written by :func:`save_estimator`.
        batch_size: Simulations per JAX call of the rebuilt simulator.

    Returns:
        The :class:`EstimatorCheckpoint` (estimator on the CPU, in eval mode).

    Raises:
        OSError: If ``path`` cannot be read.
        ValueError: If the file is not a glsbi estimator checkpoint, its options are not valid
            (or, in a format-1 file, cannot be mapped onto a ``ClassifierConfig``/``FlowConfig``),
            or its weights do not fit the rebuilt architecture; a damaged or crafted file (missing
            or mistyped entries, tensors declaring more bytes than the file holds: checked before
            anything is allocated), always as one line.
    """
    path = Path(path)
    _check_storages(path)  # before torch allocates anything the file declares
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # not a torch file, or not only plain values
        raise ValueError(f"{path} is not a glsbi estimator checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, _FORMAT_1):
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a glsbi estimator checkpoint (format {found!r}, expected {FORMAT!r})")
    _check_payload(path, payload)
    try:
        return _rebuild(path, payload, batch_size)
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a damaged file: one line, no traceback
        raise ValueError(f"{path} is a damaged glsbi estimator checkpoint ({type(e).__name__}: {e})") from None


#: The top-level entries of a checkpoint and their types.
_PAYLOAD_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str, "method": str, "embedding": dict, "build_kwargs": dict, "simulator": dict, "state_dict": dict,
}


def _check_payload(path: Path, payload: dict[str, Any]) -> None:
    """ValueError naming a missing or mistyped entry of the checkpoint dict."""
    need = dict(_PAYLOAD_TYPES)
    if payload["format"] == FORMAT:
        need["estimator"] = dict
    for key, kind in need.items():
        if key not in payload:
            raise ValueError(f"{path} is a damaged glsbi estimator checkpoint: the entry {key!r} is missing")
        if not isinstance(payload[key], kind):
            raise ValueError(f"{path} is a damaged glsbi estimator checkpoint: {key!r} is a "
                             f"{type(payload[key]).__name__}, expected a {getattr(kind, '__name__', kind)}")
    bad = [k for k, v in payload["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path} is a damaged glsbi estimator checkpoint: state_dict entries {bad[:3]} are not "
                         "named tensors")


_ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
             "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}


class _StorageScan(pickle.Unpickler):
    """Reads a checkpoint's ``data.pkl`` without building anything: every global is a harmless
    stand-in, and each persistent storage reference is recorded as ``(key, bytes declared)``."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: list[tuple[str, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        return _Stub(name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.60}")
        _, kind, key, _, numel = pid
        itemsize = _ITEMSIZE.get(getattr(kind, "name", ""))
        if itemsize is None or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"unexpected storage {getattr(kind, 'name', kind)!r} of {numel!r} elements")
        self.storages.append((str(key), numel * itemsize))
        return None


class _Stub:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return self


def _check_storages(path: Path) -> None:
    """ValueError for a checkpoint whose tensors declare more bytes than the file holds (a crafted
    file must not make ``torch.load`` allocate gigabytes), or whose zip entries are compressed."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                return  # not a zip checkpoint: torch.load refuses it with its own message
            prefix = pkl[0][: -len("data.pkl")]
            if any(i.compress_type != zipfile.ZIP_STORED for i in infos.values()):
                raise ValueError(f"{path} is not a glsbi estimator checkpoint (compressed entries; torch writes none)")
            bad = z.testzip()  # every record's CRC-32: a flipped bit in the weights shows here
            if bad is not None:
                raise ValueError(f"{path} is a damaged glsbi estimator checkpoint: the record {bad} fails its CRC-32")
            scan = _StorageScan(z.open(pkl[0]))
            scan.load()
    except zipfile.BadZipFile as e:
        if _starts_like_zip(path):  # a truncated or garbled zip
            raise ValueError(f"{path} is a damaged (truncated?) glsbi estimator checkpoint ({e})") from None
        return  # not a zip: torch.load reports it itself
    except OSError:
        return  # unreadable: torch.load raises the OSError itself
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        raise ValueError(f"{path} is a damaged glsbi estimator checkpoint ({type(e).__name__}: {e})") from None
    for key, nbytes in scan.storages:
        info = infos.get(f"{prefix}data/{key}")
        if info is None or info.file_size < nbytes:
            have = "no record" if info is None else f"{info.file_size} bytes"
            raise ValueError(f"{path} is a damaged glsbi estimator checkpoint: a tensor declares {nbytes} bytes "
                             f"(storage {key}) but the file holds {have} for it")


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"PK"
    except OSError:
        return False


def _check_shapes(path: Path, estimator: nn.Module, state: Mapping[str, torch.Tensor], method: str) -> None:
    """ValueError naming the keys whose shapes differ from the rebuilt architecture (before copying)."""
    want = estimator.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [f"{k}: {tuple(state[k].shape)} in the file vs {tuple(want[k].shape)}" for k in want
             if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                 "; ".join(wrong[:3])]
        raise ValueError(f"{path}: the saved weights do not fit the rebuilt {method} estimator: "
                         + "; ".join(p for p in parts if p))


def _rebuild(path: Path, payload: dict[str, Any], batch_size: int) -> EstimatorCheckpoint:
    from .inference import build_inference, default_estimator_config

    method = payload["method"]
    try:
        config_type = type(default_estimator_config(method))
        if payload["format"] == _FORMAT_1:
            config, kwargs = _from_format_1(config_type, payload["build_kwargs"])
        else:
            config, kwargs = config_type.from_dict(payload["estimator"]), dict(payload["build_kwargs"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    simulator = TDGLSimulator.from_description(payload["simulator"], batch_size=batch_size)
    prior = simulator.prior()
    embedding = EmbeddingConfig.from_dict(payload["embedding"])
    inference = build_inference(method, prior, embedding, config, x_shape=simulator.x_shape, **kwargs)
    # sbi's builder needs example batches (standardisation buffers are then overwritten by the weights)
    # (drawn from a private generator: loading leaves torch's global random state alone)
    generator = torch.Generator().manual_seed(0)
    low, high = torch.tensor(simulator.low), torch.tensor(simulator.high)
    theta = low + (high - low) * torch.rand((8, simulator.theta_dim), generator=generator)
    x = torch.randn((8, *simulator.x_shape), generator=generator)
    estimator = inference._build_neural_net(theta, x)  # sbi's own hook (NeuralInference.train calls it)
    _check_shapes(path, estimator, payload["state_dict"], method)
    try:
        estimator.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: the saved weights do not fit the rebuilt {method} estimator: {e}") from None
    logger.info("loaded %s estimator from %s", method, path)
    return EstimatorCheckpoint(
        estimator=estimator.eval(),
        prior=prior,
        simulator=simulator,
        method=method,
        embedding=embedding,
        estimator_config=config,
        build_kwargs=kwargs,
    )


def _from_format_1(config_type: type, build_kwargs: Mapping[str, Any]) -> tuple[EstimatorConfig, dict[str, Any]]:
    """Map a format-1 ``build_kwargs`` (old ``build_inference`` keywords) onto a config and the rest.

    The old keywords were ``model``, ``hidden_features``, ``z_score_theta``, ``dedup_x`` and options
    forwarded to sbi's builder under sbi's names. Options that the model's sbi builder ignores
    (e.g. ``posterior_nn``'s ``num_bins`` for ``"maf"``) are dropped, as sbi dropped them.
    """
    kwargs = dict(build_kwargs)
    model = kwargs.pop("model", None) or config_type().model  # the old default per method
    probe = config_type(model=model)  # refuses a model no longer offered
    fields = {f.name for f in dataclasses.fields(config_type)} - {"model"}
    by_sbi_name = {probe._SBI_NAMES.get((f, model), f): f for f in fields if probe.uses(f)}
    if model == "zuko_nsf":
        by_sbi_name["bins"] = "num_bins"  # zuko's own keyword; it overrode sbi's num_bins
    options: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key in sorted(kwargs, key=lambda k: k == "bins"):  # "bins" last: it wins over num_bins
        value = kwargs[key]
        if key in _BUILD_KWARGS:
            rest[key] = value
        elif key in by_sbi_name:
            options[by_sbi_name[key]] = value
        elif key in fields or key in _NOT_ARCHITECTURE:
            logger.info("format-1 checkpoint: dropped %s=%r (no effect on a %s network)", key, value, model)
        else:
            raise ValueError(
                f"the format-1 option {key}={value!r} of model {model!r} has no {config_type.__name__} field"
            )
    return config_type(model=model, **options), rest


def ensemble_paths(path: str | Path, members: int) -> list[Path]:
    """Where the members of an ensemble are saved: ``path`` for member 0, ``<stem>_<k><suffix>``
    beside it for member k >= 1 (``glsbi quickstart --members`` and ``glsbi train --ensemble``).

    Example:
        >>> [p.name for p in ensemble_paths("run/estimator.pt", 3)]
        ['estimator.pt', 'estimator_1.pt', 'estimator_2.pt']
    """
    path = Path(path)
    return [path if k == 0 else path.with_name(f"{path.stem}_{k}{path.suffix}") for k in range(int(members))]


def recalibration_for(path: str | Path) -> MarginalRecalibration | None:
    """The recalibration of the posterior of the single estimator at ``path``, if one lies beside it.

    ``glsbi quickstart`` writes :data:`RECALIBRATION_FILE` next to ``estimator.pt``, recording the
    estimator files whose posterior it was fitted for (``info["estimators"]``) and their SHA-256
    (``info["estimator_sha256"]``). It applies to a posterior of this one estimator only if that list
    is exactly ``[path's name]`` (a recalibration fitted for an ensemble does not fit one member) and
    the file is unchanged (an estimator retrained into the same path is not the one recalibrated).

    Args:
        path: An estimator checkpoint, e.g. ``runs/quickstart/estimator.pt``.

    Returns:
        The :class:`~glsbi_plugin.inference.MarginalRecalibration`, or ``None`` when there is no
        such file or it was fitted for other estimators (logged).

    Raises:
        ValueError: If the file beside it is not a recalibration file.
    """
    from .inference import MarginalRecalibration

    path = Path(path)
    file = path.parent / RECALIBRATION_FILE
    if not file.is_file():
        return None
    recalibration = MarginalRecalibration.load(file)
    fitted_for = recalibration.info.get("estimators")
    if fitted_for != [path.name]:
        logger.warning("%s was fitted for the posterior of %s, not of %s alone: not applied", file, fitted_for,
                       path.name)
        return None
    if recalibration.info.get("estimator_sha256") != [file_sha256(path)]:
        logger.warning("%s was fitted for another %s (the file changed since): not applied", file, path.name)
        return None
    logger.info("applying the recalibration %s to the posterior of %s", file, path.name)
    return recalibration


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (identifies the estimator a recalibration was fitted for)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
