r"""Image embedding networks for sbi's ratio (NRE-A/B/C, BNRE) and posterior (NPE) estimators.

Pass an instance as ``embedding_net_x=`` to :func:`sbi.neural_nets.classifier_nn` or as
``embedding_net=`` to :func:`sbi.neural_nets.posterior_nn`, with ``z_score_x="none"``: sbi's
z-scoring of images is either per pixel (``"independent"``, which breaks translation invariance)
or broken for one-channel images (``"structured"``); use
:meth:`ResNetGAP.fit_standardization` instead.
"""

from __future__ import annotations

from ._resnet import EmbeddingConfig, ResNetGAP, torus_symmetry

__all__ = ["EmbeddingConfig", "ResNetGAP", "torus_symmetry"]
