r"""Is an observed image like the simulations the estimator was trained on? A misspecification check.

An amortised posterior answers for any input, confidently and wrongly for an image unlike its
training set. :func:`misspecification_check` tests :math:`x_o` against reference simulations
(the training bank) twice, with sbi's MMD test (``sbi.diagnostics.misspecification``, Schmitt et
al. 2023, arXiv:2112.08866): the null hypothesis is that :math:`x_o` is a draw from the same
distribution as the references.

1. In the estimator's **embedding** space: the learned summary :math:`s_\phi(x)` of the image,
   each feature standardised by the references' mean and standard deviation.
2. In the space of the **image statistics** of :mod:`._predictive` (vortex count, nearest-neighbour
   ratio, clusters, pixel skewness and kurtosis, noise level, contrast, level and scale),
   standardised likewise; statistics constant over the references (a standardised instrument's
   mean and scale) are left out of the test and reported if the image differs.

The p-value reported is the Bonferroni combination :math:`p = \min(1, 2\min(p_\text{emb},
p_\text{stat}))`, so a consistent image is flagged with probability at most :math:`\alpha`.
Below :math:`\alpha` (0.05) the verdict says so loudly, and names the statistics outside the
references' range (the training range of the vortex count, the 0.5–99.5 % range of the others).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ._predictive import SCALAR_STATISTICS, ImageScales, image_statistics

__all__ = ["MisspecificationCheck", "MisspecificationReference", "embed_images", "misspecification_check"]

logger = logging.getLogger(__name__)

_PLAIN = {
    "vortex_count": "vortex count",
    "nn_mean": "nearest-neighbour distance / mean spacing",
    "cluster_largest_fraction": "largest cluster's share of the vortices",
    "pixel_skewness": "pixel skewness (contrast shape)",
    "pixel_kurtosis": "pixel kurtosis (contrast shape)",
    "noise_level": "noise level",
    "contrast": "vortex contrast",
    "core_radius": "vortex core radius",
    "opposite_extrema": "extrema of the opposite sign (bright spots where vortices are dark, or vice versa)",
    "image_mean": "image level",
    "image_std": "image scale",
}


@dataclasses.dataclass(frozen=True)
class MisspecificationCheck:
    """Result of :func:`misspecification_check`.

    Attributes:
        p_value: Combined p-value (Bonferroni of the two below).
        p_embedding: MMD test p-value in the embedding space.
        p_statistics: MMD test p-value in the image-statistics space.
        alpha: Significance level of the verdict.
        differs: Plain sentences, one per statistic outside the references' range.
        observed: The image's scalar statistics.
        reference_range: Per statistic, the references' ``[low, high]`` range used for ``differs``.
        num_reference: Number of reference images.
        n_shuffle: Permutations of each MMD test (a p-value of 0 means below ``1/n_shuffle``).
    """

    p_value: float
    p_embedding: float
    p_statistics: float
    alpha: float
    differs: tuple[str, ...]
    observed: dict[str, float]
    reference_range: dict[str, tuple[float, float]]
    num_reference: int
    n_shuffle: int = 1000

    @property
    def misspecified(self) -> bool:
        """Whether the image is flagged (``p_value < alpha``)."""
        return self.p_value < self.alpha

    def _p(self) -> str:
        return f"p < {1 / self.n_shuffle:.3g}" if self.p_value == 0 else f"p = {self.p_value:.3g}"

    @property
    def verdict(self) -> str:
        """A plain one-paragraph verdict."""
        if not self.misspecified:
            return (f"consistent with the training simulations ({self._p()} >= {self.alpha:g}): "
                    "the image looks like what the estimator was trained on")
        what = "; ".join(self.differs) if self.differs else (
            "no single image statistic is outside the training range, but the estimator's embedding is")
        return (f"MISSPECIFIED: the image is unlike the training simulations ({self._p()}, below "
                f"{self.alpha:g}); do not trust the posterior. What differs: {what}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``misspecified`` and ``verdict``."""
        d = dataclasses.asdict(self)
        d["differs"] = list(self.differs)
        d["reference_range"] = {k: list(v) for k, v in self.reference_range.items()}
        return {**d, "misspecified": self.misspecified, "verdict": self.verdict}

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _embedding_net(estimator: Any) -> Any:
    """The network embedding x of an sbi ratio estimator (``embedding_net_x``) or flow (``embedding_net``)."""
    est = getattr(estimator, "estimator", estimator)  # a GridPosterior carries its estimator
    if isinstance(est, (list, tuple)) or type(est).__name__ == "ModuleList":
        est = est[0]  # an ensemble: the first member's embedding
    net = getattr(est, "embedding_net_x", None)
    net = getattr(est, "embedding_net", None) if net is None else net
    if net is None:
        raise TypeError(f"{type(est).__name__} has no embedding net (embedding_net_x or embedding_net)")
    return net


def embed_images(estimator: Any, x: Any, *, batch: int = 256) -> Any:
    """The estimator's embedding of images ``x`` ``(n, C, H, W)``: a ``(n, F)`` float tensor.

    Args:
        estimator: An sbi ratio estimator or flow (or a ``GridPosterior``) with an embedding net;
            of an ensemble, the first member's.
        x: Images on the estimator's grid.
        batch: Images per forward pass.
    """
    import torch

    net = _embedding_net(estimator)
    x = torch.as_tensor(x, dtype=torch.float32)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return torch.cat([net(chunk) for chunk in x.split(batch)])
    finally:
        net.train(was_training)


def _mmd_p_value(z_o: Any, z_ref: Any, n_shuffle: int) -> float:
    from sbi.diagnostics.misspecification import calc_misspecification_mmd

    p, _ = calc_misspecification_mmd(z_o, z_ref, mode="x_space", n_shuffle=n_shuffle, max_samples=len(z_ref))
    return float(p)


def _standardise_by(z_o: np.ndarray, z_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = z_ref.mean(0), z_ref.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (z_o - mu) / sd, (z_ref - mu) / sd


@dataclasses.dataclass(frozen=True, eq=False)
class MisspecificationReference:
    """The reference side of :func:`misspecification_check`, computed once for many observations.

    Attributes:
        x_shape: Shape ``(C, H, W)`` of the reference images.
        embeddings: The estimator's embeddings of the references ``(n, F)``.
        statistics: Their :data:`~glsbi_plugin.diagnostics._predictive.SCALAR_STATISTICS` ``(n, m)``.
        scales: The images' :class:`~glsbi_plugin.diagnostics.ImageScales`.
    """

    x_shape: tuple[int, ...]
    embeddings: np.ndarray
    statistics: np.ndarray
    scales: ImageScales

    @classmethod
    def build(
        cls, estimator: Any, x_reference: Any, scales: ImageScales, *, max_reference: int = 500, seed: int = 0
    ) -> MisspecificationReference:
        """Embed and summarise ``x_reference`` ``(n, C, H, W)`` (n >= 20 finite images; at most
        ``max_reference`` of them, a random subset seeded by ``seed``).

        Raises:
            ValueError: Fewer than 20 finite references or not a batch of images.
        """
        import torch

        xr = torch.as_tensor(x_reference, dtype=torch.float32)
        if xr.ndim != 4:
            raise ValueError(f"x_reference must be a batch of images (n, C, H, W), got shape {tuple(xr.shape)}")
        xr = xr[torch.isfinite(xr).flatten(1).all(1)]
        if len(xr) < 20:
            raise ValueError(f"the check needs at least 20 reference simulations, got {len(xr)}")
        if len(xr) > max_reference:
            xr = xr[np.sort(np.random.default_rng(seed).choice(len(xr), max_reference, replace=False))]
        stats = image_statistics(xr, scales)
        return cls(
            x_shape=tuple(xr.shape[1:]),
            embeddings=embed_images(estimator, xr).double().numpy(),
            statistics=np.stack([stats[k] for k in SCALAR_STATISTICS], 1),
            scales=scales,
        )


def misspecification_check(
    estimator: Any,
    x_o: Any,
    x_reference: Any,
    scales: ImageScales | None = None,
    *,
    alpha: float = 0.05,
    n_shuffle: int = 1000,
    max_reference: int = 500,
    seed: int = 0,
) -> MisspecificationCheck:
    r"""Test whether ``x_o`` could be one of the reference simulations (module docstring).

    Args:
        estimator: The trained estimator (or a ``GridPosterior``): its embedding net is used.
        x_o: The observation ``(C, H, W)`` or ``(1, C, H, W)``, on the estimator's grid.
        x_reference: Reference simulations ``(n, C, H, W)`` (the training bank), n >= 20, or a
            :class:`MisspecificationReference` of them (built once for many observations).
        scales: The images' :class:`~glsbi_plugin.diagnostics.ImageScales` (that of the
            reference if one is given).
        alpha: Significance level in ``(0, 1)``.
        n_shuffle: Permutations of sbi's MMD null distribution (p-value resolution ``1/n_shuffle``).
        max_reference: At most this many references are used (a seeded random subset).
        seed: Seeds the subset and sbi's permutations (torch's generator, forked).

    Returns:
        A :class:`MisspecificationCheck` (``p_value``, ``verdict``, ``differs``).

    Raises:
        ValueError: Fewer than 20 references, shapes that disagree, no ``scales``, or a bad ``alpha``.
    """
    import torch

    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha={alpha!r}: must be in (0, 1)")
    if isinstance(x_reference, MisspecificationReference):
        ref = x_reference
    else:
        if scales is None:
            raise ValueError("scales (an ImageScales) is needed with reference images")
        ref = MisspecificationReference.build(estimator, x_reference, scales, max_reference=max_reference, seed=seed)
    x = torch.as_tensor(x_o, dtype=torch.float32)
    x = x[None] if x.ndim == 3 else x
    if x.shape[0] != 1 or tuple(x.shape[1:]) != ref.x_shape:
        raise ValueError(f"x_o {tuple(x.shape)} must be one image of the references' shape {ref.x_shape}")
    emb_o, emb_ref = _standardise_by(embed_images(estimator, x).double().numpy(), ref.embeddings)
    stats_o = image_statistics(x, ref.scales)
    s_o, s_ref = np.stack([stats_o[k] for k in SCALAR_STATISTICS], 1), ref.statistics
    varies = s_ref.std(0) > 1e-6 * (1 + np.abs(s_ref).mean(0))  # not constant up to float32 rounding
    s_o_z, s_ref_z = _standardise_by(s_o[:, varies], s_ref[:, varies])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        p_emb = _mmd_p_value(torch.from_numpy(emb_o).float(), torch.from_numpy(emb_ref).float(), n_shuffle)
        p_stat = _mmd_p_value(torch.from_numpy(s_o_z).float(), torch.from_numpy(s_ref_z).float(), n_shuffle)
    p = min(1.0, 2.0 * min(p_emb, p_stat))
    observed, ranges, differs = {}, {}, []
    for i, k in enumerate(SCALAR_STATISTICS):
        v = float(s_o[0, i])
        if k == "vortex_count":
            lo, hi = float(s_ref[:, i].min()), float(s_ref[:, i].max())
        else:
            lo, hi = (float(q) for q in np.percentile(s_ref[:, i], [0.5, 99.5]))
        observed[k], ranges[k] = v, (lo, hi)
        tol = 1e-6 * (1 + abs(hi - lo) + abs(hi))
        if v < lo - tol or v > hi + tol:
            word = "below" if v < lo else "above"
            differs.append(f"{_PLAIN[k]} {v:.3g} is {word} the training range [{lo:.3g}, {hi:.3g}]")
    result = MisspecificationCheck(
        p_value=p,
        p_embedding=p_emb,
        p_statistics=p_stat,
        alpha=float(alpha),
        differs=tuple(differs),
        observed=observed,
        reference_range=ranges,
        num_reference=int(len(s_ref)),
        n_shuffle=int(n_shuffle),
    )
    if result.misspecified:
        logger.warning("misspecification check: %s", result.verdict)
    else:
        logger.info("misspecification check: %s", result.verdict)
    return result
