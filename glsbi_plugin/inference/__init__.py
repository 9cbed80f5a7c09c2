r"""sbi inference for image observations: estimator builders, a training helper and a grid posterior.

Typical use (θ = (η, B), images ``(n, C, H, W)``)::

    from glsbi_plugin import simulator, prior
    from glsbi_plugin.inference import FlowConfig, GridPosterior, build_inference, train

    inference = build_inference("NRE_C", prior)          # ResNetGAP embedding, no ./sbi-logs
    # options of the network on the embedding: a ClassifierConfig (NRE) or a FlowConfig (NPE), e.g.
    # build_inference("NPE", prior, estimator=FlowConfig(hidden_features=64, num_transforms=3))
    estimator = train(inference, theta, x, max_epochs=30)  # at most 30 epochs, not 31
    posterior = GridPosterior(estimator, prior, x_o=x_o)   # x_o: (C, H, W) or (1, C, H, W)
    samples = posterior.sample((1000,))

``GridPosterior`` is also accepted by ``sbi.diagnostics.run_sbc`` and ``run_tarp``. A posterior
that fails SBC on held-out simulations can be recalibrated on another set of them::

    recalibration = fit_recalibration(posterior, theta_cal, x_cal)   # simulations of another seed
    posterior = posterior.with_recalibration(recalibration)           # judge it on a third seed
"""

from __future__ import annotations

from .._validation import as_batched_x, box_bounds, check_theta
from ._builders import (
    CLASSIFIER_MODELS,
    FLOW_MODELS,
    METHODS,
    ClassifierConfig,
    EpochRecord,
    EstimatorConfig,
    FlowConfig,
    MemoryTracker,
    Method,
    RepeatedRowsEmbedding,
    build_inference,
    default_estimator_config,
    train,
    train_ensemble,
)
from ._grid import GridPosterior, fit_temperature
from ._model_selection import (
    ModelClassifier,
    ModelPosterior,
    ModelSelectionConfig,
    Reliability,
    auc_by_bin,
    reliability,
    roc_auc,
    train_model_classifier,
)
from ._recalibration import MIN_PAIRS as MIN_RECALIBRATION_PAIRS
from ._recalibration import MarginalRecalibration, fit_recalibration, grid_pit

__all__ = [
    "CLASSIFIER_MODELS",
    "FLOW_MODELS",
    "METHODS",
    "MIN_RECALIBRATION_PAIRS",
    "ClassifierConfig",
    "EpochRecord",
    "EstimatorConfig",
    "FlowConfig",
    "GridPosterior",
    "MarginalRecalibration",
    "MemoryTracker",
    "Method",
    "ModelClassifier",
    "ModelPosterior",
    "ModelSelectionConfig",
    "Reliability",
    "RepeatedRowsEmbedding",
    "as_batched_x",
    "auc_by_bin",
    "box_bounds",
    "build_inference",
    "check_theta",
    "default_estimator_config",
    "fit_recalibration",
    "fit_temperature",
    "grid_pit",
    "reliability",
    "roc_auc",
    "train",
    "train_ensemble",
    "train_model_classifier",
]
