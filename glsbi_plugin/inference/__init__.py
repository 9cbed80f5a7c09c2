r"""sbi inference for image observations: estimator builders, a training helper and a grid posterior.

Typical use (θ = (η, B), images ``(n, C, H, W)``)::

    from glsbi_plugin import simulator, prior
    from glsbi_plugin.inference import GridPosterior, build_inference, train

    inference = build_inference("NRE_C", prior)          # ResNetGAP embedding, no ./sbi-logs
    estimator = train(inference, theta, x, max_epochs=30)  # at most 30 epochs, not 31
    posterior = GridPosterior(estimator, prior, x_o=x_o)   # x_o: (C, H, W) or (1, C, H, W)
    samples = posterior.sample((1000,))

``GridPosterior`` is also accepted by ``sbi.diagnostics.run_sbc`` and ``run_tarp``.
"""

from __future__ import annotations

from .._validation import as_batched_x, box_bounds, check_theta
from ._builders import (
    DEFAULT_MODELS,
    METHODS,
    MemoryTracker,
    Method,
    RepeatedRowsEmbedding,
    allowed_estimator_kwargs,
    build_inference,
    train,
)
from ._grid import GridPosterior

__all__ = [
    "DEFAULT_MODELS",
    "METHODS",
    "GridPosterior",
    "MemoryTracker",
    "Method",
    "RepeatedRowsEmbedding",
    "allowed_estimator_kwargs",
    "as_batched_x",
    "box_bounds",
    "build_inference",
    "check_theta",
    "train",
]
