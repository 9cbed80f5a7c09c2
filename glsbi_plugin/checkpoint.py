r"""Save a trained estimator with everything needed to rebuild it, its prior and its forward model.

An estimator from :func:`glsbi_plugin.inference.train` is an sbi ``RatioEstimator`` (NRE) or a
flow (NPE) whose architecture depends on the options of :func:`~glsbi_plugin.inference.build_inference`
and on the image shape. :func:`save_estimator` writes those options, the simulator's description
(:meth:`~glsbi_plugin.TDGLSimulator.describe`: config, fixed parameters, θ names, prior box,
channels, measurement) and the ``state_dict`` to one ``torch.save`` file holding only plain Python
values and tensors, so :func:`load_estimator` reads it with ``weights_only=True`` (no pickled code).
Loading rebuilds the estimator through the same builder and loads the weights strictly.

Example:
    >>> save_estimator("estimator.pt", estimator, method="NRE_C", simulator=simulator,
    ...                embedding=embedding)                                   # doctest: +SKIP
    >>> ckpt = load_estimator("estimator.pt")                                 # doctest: +SKIP
    >>> GridPosterior(ckpt.estimator, ckpt.prior).set_default_x(ckpt.simulator(theta, seed=0)[0])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sbi.utils import BoxUniform
from torch import nn

from ._simulator import TDGLSimulator, make_prior
from .embeddings import EmbeddingConfig

__all__ = ["FORMAT", "EstimatorCheckpoint", "load_estimator", "save_estimator"]

logger = logging.getLogger(__name__)

#: Format tag written into every checkpoint; :func:`load_estimator` refuses other tags.
FORMAT = "glsbi-estimator/1"


@dataclasses.dataclass(frozen=True, eq=False)
class EstimatorCheckpoint:
    """A rebuilt estimator with the prior and the forward model it was trained for.

    Attributes:
        estimator: The trained estimator in eval mode (pass it to ``GridPosterior``).
        prior: The box prior over θ (an sbi ``BoxUniform``) of the training set.
        simulator: The forward model of the training set (same config, parameters, channels).
        method: The sbi method, e.g. ``"NRE_C"``.
        embedding: The image embedding's options.
        build_kwargs: Further keywords given to ``build_inference`` (``hidden_features``, ...).
    """

    estimator: nn.Module
    prior: BoxUniform
    simulator: TDGLSimulator
    method: str
    embedding: EmbeddingConfig
    build_kwargs: dict[str, Any]


def save_estimator(
    path: str | Path,
    estimator: nn.Module,
    *,
    method: str,
    simulator: TDGLSimulator,
    embedding: EmbeddingConfig,
    build_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``estimator`` and the options that rebuild it to ``path`` (see the module docstring).

    Args:
        path: Output file (conventionally ``*.pt``); its directory must exist.
        estimator: The trained estimator (from :func:`~glsbi_plugin.inference.train`).
        method: The method given to ``build_inference`` (``"NRE_A"``, ..., ``"NPE"``).
        simulator: The simulator of the training set; its prior box is taken from ``low``/``high``.
        embedding: The ``EmbeddingConfig`` given to ``build_inference``.
        build_kwargs: Any other keywords given to ``build_inference`` (``model``,
            ``hidden_features``, ``z_score_theta``, ``dedup_x``, estimator options); JSON values only.

    Returns:
        The path written.

    Raises:
        ValueError: If ``build_kwargs`` is not JSON-serialisable or the estimator's θ/x shapes do
            not match the simulator.
    """
    kwargs = dict(build_kwargs or {})
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
        ValueError: If the file is not a glsbi estimator checkpoint or its weights do not fit the
            rebuilt architecture.
    """
    from .inference import build_inference

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # not a torch file, or not only plain values
        raise ValueError(f"{path} is not a glsbi estimator checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a glsbi estimator checkpoint (format {found!r}, expected {FORMAT!r})")
    simulator = TDGLSimulator.from_description(payload["simulator"], batch_size=batch_size)
    box = zip(simulator.low, simulator.high, strict=True)
    prior = make_prior(simulator.names, bounds=dict(zip(simulator.names, box, strict=True)))
    embedding = EmbeddingConfig.from_dict(payload["embedding"])
    kwargs = dict(payload["build_kwargs"])
    inference = build_inference(payload["method"], prior, embedding, x_shape=simulator.x_shape, **kwargs)
    # sbi's builder needs example batches (standardisation buffers are then overwritten by the weights)
    # (drawn from a private generator: loading leaves torch's global random state alone)
    generator = torch.Generator().manual_seed(0)
    low, high = torch.tensor(simulator.low), torch.tensor(simulator.high)
    theta = low + (high - low) * torch.rand((8, simulator.theta_dim), generator=generator)
    x = torch.randn((8, *simulator.x_shape), generator=generator)
    estimator = inference._build_neural_net(theta, x)  # sbi's own hook (NeuralInference.train calls it)
    try:
        estimator.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        method = payload["method"]
        raise ValueError(f"{path}: the saved weights do not fit the rebuilt {method} estimator: {e}") from None
    logger.info("loaded %s estimator from %s", payload["method"], path)
    return EstimatorCheckpoint(
        estimator=estimator.eval(),
        prior=prior,
        simulator=simulator,
        method=payload["method"],
        embedding=embedding,
        build_kwargs=kwargs,
    )
