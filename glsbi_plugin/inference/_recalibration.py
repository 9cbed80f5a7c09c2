r"""Recalibration of a grid posterior's marginals, fitted on simulations it was not trained on.

An amortised estimator trained on a finite bank can be miscalibrated in a way that differs from one
training seed to the next: its marginal posterior for a parameter sits a little too high or too low
on average, or is a little too wide (``benchmarks/results/calibration_recipe.md``). SBC sees this as
non-uniform PIT values :math:`u_k = F_k(θ_k \mid x)`, with :math:`F_k` the estimator's marginal
CDF of parameter k and :math:`(θ, x)` drawn from the joint.

:class:`MarginalRecalibration` corrects it the way regression models are recalibrated (Kuleshov et
al. 2018, "Accurate uncertainties for deep learning using calibrated regression"): if the PIT
values of the estimator have the CDF :math:`R_k` over the joint, the marginal CDF
:math:`R_k \circ F_k` has uniform PIT values. :math:`R_k` is a Bernstein polynomial CDF of degree
:math:`m_k`,

.. math:: R_k(u) = \sum_{j=1}^{m_k} w_{kj}\, I(u;\, j,\, m_k - j + 1),

the CDF of a mixture of Beta(j, m − j + 1) densities with weights :math:`w_{kj} \ge 0` summing to 1
(:math:`I` is the regularised incomplete Beta function). It is monotone for any weights, smooth,
exactly the identity for :math:`m = 1` (or equal weights), and approximates any continuous PIT
distribution as m grows. :func:`fit_recalibration` fits the weights by maximum likelihood (EM,
then SLSQP) to the PIT values of held-out pairs and chooses each :math:`m_k` by BIC, so a
calibrated marginal is left alone and a miscalibrated one gets only the flexibility the pairs
support. (A single Beta CDF, two parameters, was tried first and was too rigid for NRE_C's η on
STM images: ``benchmarks/results/recalibration.md`` compares the two.)

The joint posterior on the grid is then the distribution closest to the estimator's (in
Kullback–Leibler divergence) whose marginals are the recalibrated ones: the cell masses
:math:`M_{ij}` are reweighted by one factor per axis, :math:`M'_{ij} = M_{ij}\, f_i\, g_j`, found
by iterative proportional fitting (Sinkhorn's iteration), so correlations between parameters are
kept. ``GridPosterior(..., recalibration=R)`` applies it to densities, draws, intervals and the
MAP alike.

This is average calibration over the prior, which is what SBC, coverage and TARP test; it does
not make the posterior right for every x. Judge the recalibrated posterior on pairs of yet another
seed: the pairs it was fitted on cannot test it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import optimize, special, stats
from torch import Tensor

from .._validation import as_batched_x, check_theta

if TYPE_CHECKING:
    from ._grid import GridPosterior

__all__ = ["MarginalRecalibration", "fit_recalibration", "grid_pit"]

logger = logging.getLogger(__name__)

#: Format tag of a recalibration file (:meth:`MarginalRecalibration.save`).
FORMAT = "glsbi-recalibration/1"

#: Fewest pairs :func:`fit_recalibration` accepts (the two Beta parameters of each axis need them).
MIN_PAIRS = 50

#: Highest degree of a Bernstein CDF (fit_recalibration tries 1 … MAX_FIT_DEGREE).
MAX_DEGREE = 64
MAX_FIT_DEGREE = 16

#: Iterative proportional fitting stops when every marginal is within this of its target mass.
_IPF_TOL = 1e-10
_IPF_MAX_ITER = 1000


@dataclasses.dataclass(frozen=True)
class MarginalRecalibration:
    r"""Recalibration of each marginal: :math:`F_k \mapsto R_k(F_k)`, :math:`R_k` a Bernstein CDF (module docstring).

    Build it with :func:`fit_recalibration`; pass it to ``GridPosterior(..., recalibration=...)``.

    Attributes:
        weights: Per parameter, the weights :math:`w_{k1}, …, w_{km_k}` (``m_k >= 1`` values ≥ 0
            summing to 1; stored normalised). ``(1.0,)`` is the identity.
        num_pairs: The number of held-out pairs it was fitted on (0: not fitted).
        names: Parameter names, for messages and files (optional).
        info: Free-form provenance (JSON values only), e.g. the bank and seed it was fitted on.

    Raises:
        ValueError: If there are no or more than 3 parameters, a weight vector is empty, longer
            than 64, has a negative or non-finite value or does not sum to 1 (within 1e-6).

    Example:
        >>> r = MarginalRecalibration(weights=((0.0, 1.0, 0.0), (1.0,)))  # R_0: the Beta(2, 2) CDF
        >>> [round(float(v), 3) for v in r.cdf(0, np.array([0.25, 0.5]))]  # sharpens parameter 0
        [0.156, 0.5]
        >>> r.is_identity(1), r.is_identity(0)
        (True, False)
    """

    weights: tuple[tuple[float, ...], ...]
    num_pairs: int = 0
    names: tuple[str, ...] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = tuple(tuple(w) for w in self.weights)
        if not 1 <= len(weights) <= 3:
            raise ValueError(f"weights need one vector per parameter (1 to 3), got {len(weights)}")
        clean = []
        for k, w in enumerate(weights):
            ok = 1 <= len(w) <= MAX_DEGREE and all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in w
            )
            if not ok or abs(sum(w) - 1.0) > 1e-6:
                raise ValueError(f"weights[{k}]={w!r}: need 1 to {MAX_DEGREE} finite values >= 0 summing to 1")
            total = float(sum(w))
            clean.append(tuple(float(v) / total for v in w))
        object.__setattr__(self, "weights", tuple(clean))
        if self.names is not None:
            if len(self.names) != len(clean):
                raise ValueError(f"names={self.names!r} must name the {len(clean)} parameters")
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    @property
    def dim(self) -> int:
        """The number of parameters."""
        return len(self.weights)

    def degree(self, k: int) -> int:
        """:math:`m_k`, the degree of axis k's Bernstein CDF."""
        return len(self.weights[k])

    def cdf(self, k: int, u: np.ndarray) -> np.ndarray:
        """:math:`R_k(u)` (float64): the recalibrated CDF value of an old CDF value u."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        m = self.degree(k)
        return sum(w * special.betainc(j, m - j + 1, u) for j, w in enumerate(self.weights[k], start=1) if w > 0)

    def is_identity(self, k: int | None = None) -> bool:
        """Whether axis ``k`` (every axis when ``None``) is left unchanged (equal weights)."""
        axes = range(self.dim) if k is None else (k,)
        return all(max(self.weights[j]) - min(self.weights[j]) < 1e-12 for j in axes)

    def pit_moments(self, k: int) -> tuple[float, float]:
        """Mean and variance of the PIT distribution :math:`R_k` the map undoes (uniform: 1/2 and 1/12)."""
        m = self.degree(k)
        j = np.arange(1, m + 1, dtype=np.float64)
        w = np.asarray(self.weights[k])
        mean = float((w * j).sum() / (m + 1))
        second = float((w * j * (j + 1)).sum() / ((m + 1) * (m + 2)))
        return mean, second - mean**2

    def describe(self) -> list[str]:
        """One line per parameter: what the map undoes (the shift and width of the estimator's PIT values)."""
        lines = []
        for k in range(self.dim):
            name = self.names[k] if self.names else f"θ_{k}"
            if self.is_identity(k):
                lines.append(f"{name}: left as it is (its PIT values looked uniform)")
                continue
            mean, var = self.pit_moments(k)
            lines.append(f"{name}: degree {self.degree(k)} — the estimator's PIT values had mean {mean:.3f} "
                         f"(0.5 unbiased) and variance {12 * var:.2f} × 1/12 (1 calibrated)")
        return lines

    # -- applying it to a grid -----------------------------------------------------------------
    def apply(self, log_mass: Tensor, resolution: tuple[int, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        r"""Reweights grid cell masses so that each marginal CDF becomes :math:`R_k(F_k)`.

        The target mass of cell i of axis k is :math:`R_k(F_k(e_{i+1})) - R_k(F_k(e_i))` at the cell
        edges :math:`e`; the joint is the estimator's, times one factor per axis (iterative
        proportional fitting), which is the KL-closest joint with those marginals.

        Args:
            log_mass: Log cell masses ``(G,)`` (logsumexp 0) of a grid with ``resolution``.
            resolution: Cells per axis; ``len(resolution)`` must equal :attr:`dim`.

        Returns:
            ``(log_mass', log_factors)``: the reweighted log masses ``(G,)`` (logsumexp 0) and the
            per-axis log factors ``(n_k,)`` (float64) that were added.
        """
        d = len(resolution)
        if d != self.dim:
            raise ValueError(f"this recalibration is for {self.dim} parameters, the grid has {d}")
        grid = log_mass.detach().double().reshape(resolution).cpu()
        grid = grid - torch.logsumexp(grid.reshape(-1), 0)
        log_targets = []
        for k in range(d):
            marginal = _axis_logsumexp(grid, k).exp()
            edges = torch.cat([marginal.new_zeros(1), marginal.cumsum(0)]).clamp(0.0, 1.0).numpy()
            edges[-1] = 1.0
            target = np.diff(self.cdf(k, edges)) if not self.is_identity(k) else marginal.numpy()
            log_targets.append(torch.from_numpy(np.log(np.clip(target, 1e-300, None))))
        factors = [torch.zeros(n, dtype=torch.float64) for n in resolution]
        if not self.is_identity():
            for _ in range(_IPF_MAX_ITER):
                worst = 0.0
                for k in range(d):
                    current = _axis_logsumexp(_reweighted(grid, factors), k)
                    factors[k] = factors[k] + (log_targets[k] - current)
                    worst = max(worst, float((current.exp() - log_targets[k].exp()).abs().max()))
                if worst < _IPF_TOL:
                    break
            else:
                logger.warning("recalibration: iterative proportional fitting stopped at %d iterations "
                               "(largest marginal error %.2g)", _IPF_MAX_ITER, worst)
        out = _reweighted(grid, factors).reshape(-1)
        shift = torch.logsumexp(out, 0)
        factors[0] = factors[0] - shift
        return (out - shift).to(log_mass.dtype).to(log_mass.device), tuple(factors)

    # -- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (``from_dict`` inverts it)."""
        return {"format": FORMAT, "weights": [list(w) for w in self.weights], "num_pairs": int(self.num_pairs),
                "names": None if self.names is None else list(self.names), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarginalRecalibration:
        """Rebuilds a recalibration from :meth:`to_dict`'s output.

        Raises:
            ValueError: If ``data`` is not such a dict (wrong format tag, missing or bad values).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a glsbi recalibration (format {found!r}, expected {FORMAT!r})")
        try:
            names = data.get("names")
            return cls(weights=tuple(tuple(w) for w in data["weights"]), num_pairs=int(data.get("num_pairs", 0)),
                       names=None if names is None else tuple(names), info=dict(data.get("info") or {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"a damaged glsbi recalibration ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> Path:
        """Writes :meth:`to_dict` as JSON to ``path`` (plain text: reading it runs nothing)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> MarginalRecalibration:
        """Reads a file written by :meth:`save`.

        Raises:
            OSError: If ``path`` cannot be read.
            ValueError: If it is not a recalibration file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a glsbi recalibration file ({type(e).__name__}: {e})") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _axis_logsumexp(grid: Tensor, k: int) -> Tensor:
    others = tuple(j for j in range(grid.ndim) if j != k)
    return torch.logsumexp(grid, dim=others) if others else grid


def _reweighted(grid: Tensor, factors: list[Tensor]) -> Tensor:
    out = grid
    for k, f in enumerate(factors):
        shape = [1] * grid.ndim
        shape[k] = -1
        out = out + f.reshape(shape)
    return out


# -- fitting ---------------------------------------------------------------------------------------
@torch.no_grad()
def grid_pit(posterior: GridPosterior, theta: Tensor, x: Tensor) -> np.ndarray:
    r"""Exact marginal PIT values :math:`u_{ik} = F_k(θ_{ik} \mid x_i)` of held-out pairs on the grid.

    :math:`F_k` is the marginal CDF of the piecewise-constant grid density (linear inside a cell),
    with the posterior's ensemble, temperature and recalibration. Over pairs drawn from the joint a
    calibrated posterior gives uniform :math:`u_{ik}` (the continuous form of SBC ranks, without
    sampling noise).

    Args:
        posterior: The grid posterior.
        theta: Parameters ``(N, d)`` inside the prior's box.
        x: One observation per row, ``(N, *x_shape)``.

    Returns:
        ``(N, d)`` float64 array.

    Raises:
        ValueError: Mismatched or malformed ``theta``/``x``.
    """
    theta = check_theta(theta, posterior.low.cpu(), posterior.high.cpu())
    if not isinstance(x, Tensor) or x.shape[0] != theta.shape[0]:
        raise ValueError(f"x must hold one observation per θ row ({theta.shape[0]}), got "
                         f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}")
    x = as_batched_x(x, posterior.x_shape).to(posterior._device)
    theta = theta.to(posterior._device)
    out = np.empty(tuple(theta.shape), dtype=np.float64)
    for i, log_mass in enumerate(posterior._row_masses(x)):  # batched embedding, as sample_batched
        out[i] = posterior._cdf_from_mass(log_mass, theta[i : i + 1])[0].cpu().numpy()
    return out


def fit_recalibration(
    posterior: GridPosterior, theta: Tensor, x: Tensor, *, names: tuple[str, ...] | None = None,
    info: dict[str, Any] | None = None, max_degree: int = MAX_FIT_DEGREE,
) -> MarginalRecalibration:
    r"""Fits a :class:`MarginalRecalibration` to held-out pairs by maximum likelihood.

    The PIT values :math:`u_{ik}` of the posterior *without* its own recalibration
    (:func:`grid_pit`) are modelled per parameter by the Bernstein density
    :math:`\sum_j w_j \,\mathrm{Beta}(u; j, m - j + 1)`; for each degree m = 1 … ``max_degree``
    the weights are fitted by maximum likelihood (the log-likelihood is concave in them: EM steps,
    then SLSQP on the simplex), and the m with the smallest BIC,
    :math:`-2 \log L + (m - 1) \log N`, is kept (m = 1 is the identity). In
    expectation over the joint the recalibrated marginals then have uniform PIT values.

    Args:
        posterior: The grid posterior (ensemble and temperature included).
        theta: Parameters ``(N, d)``, ``N >= 50``, drawn from the prior, that the estimators were
            not trained on (and that will not be used to judge the result).
        x: Their simulated observations ``(N, *x_shape)``.
        names: Parameter names (kept in the result).
        info: Provenance to keep in the result (JSON values).
        max_degree: The highest degree tried, 1 to 64.

    Returns:
        The fitted recalibration.

    Raises:
        ValueError: Fewer than 50 pairs, a bad ``max_degree``, or mismatched or malformed
            ``theta``/``x``.
    """
    n = int(theta.shape[0]) if isinstance(theta, Tensor) and theta.ndim == 2 else -1
    if n < MIN_PAIRS:
        raise ValueError(f"fit_recalibration needs at least {MIN_PAIRS} held-out pairs (θ of shape (N, d)), got "
                         f"{tuple(getattr(theta, 'shape', ()))}")
    if isinstance(max_degree, bool) or not isinstance(max_degree, int) or not 1 <= max_degree <= MAX_DEGREE:
        raise ValueError(f"max_degree={max_degree!r}: must be an integer in [1, {MAX_DEGREE}]")
    u = grid_pit(posterior.with_recalibration(None), theta, x)
    weights = []
    for k in range(u.shape[1]):
        w, bic = _bernstein_bic(u[:, k], max_degree)
        weights.append(tuple(w.tolist()))
        logger.info("recalibration of parameter %d on %d pairs: degree %d (BIC %.1f; PIT KS p before: %.2g)", k, n,
                    len(w), bic, stats.kstest(u[:, k], "uniform").pvalue)
    return MarginalRecalibration(weights=tuple(weights), num_pairs=n, names=names, info=dict(info or {}))


def _bernstein_bic(u: np.ndarray, max_degree: int) -> tuple[np.ndarray, float]:
    """The BIC-best Bernstein density's weights for values ``u`` in [0, 1], and its BIC."""
    u = np.clip(u, 0.0, 1.0)
    best: tuple[float, np.ndarray] | None = None
    for m in range(1, max_degree + 1):
        w, log_l = _bernstein_mle(u, m)
        bic = -2.0 * log_l + (m - 1) * math.log(len(u))
        if best is None or bic < best[0]:
            best = (bic, w)
    assert best is not None
    return best[1], best[0]


def _bernstein_mle(u: np.ndarray, m: int, *, em_steps: int = 100, max_iter: int = 5000) -> tuple[np.ndarray, float]:
    r"""Maximum-likelihood weights of the fixed components Beta(j, m − j + 1), j = 1 … m; returns (weights, log L).

    :math:`\log L(w) = \sum_i \log \sum_j w_j b_j(u_i)` is concave on the simplex. ``em_steps``
    EM updates :math:`w_j \leftarrow w_j \frac1N \sum_i b_j(u_i) / \sum_l w_l b_l(u_i)` give a
    feasible start; SLSQP with the analytic gradient then converges to the maximum (to about 1e-10
    in log L, where EM alone crawls along flat directions for thousands of steps). Should SLSQP
    fail or end lower than its start, EM continues to ``max_iter`` steps instead.
    """
    n = len(u)
    j = np.arange(1, m + 1)
    dens = stats.beta.pdf(u[:, None], j[None, :], m - j[None, :] + 1)  # (N, m), bounded on [0, 1]

    def mixture(w: np.ndarray) -> np.ndarray:  # einsum, not BLAS: no thread pool for an (N, m) product
        return np.maximum(np.einsum("ij,j->i", dens, w), 1e-300)

    def em(w: np.ndarray, steps: int) -> np.ndarray:
        for _ in range(steps):
            new = w * np.einsum("ij,i->j", dens, 1.0 / mixture(w)) / n
            done = np.abs(new - w).max() < 1e-10
            w = new
            if done:
                break
        return w

    def log_l(w: np.ndarray) -> float:
        return float(np.log(mixture(w)).sum())

    w = em(np.full(m, 1.0 / m), em_steps)
    if m > 1:
        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            mix = mixture(v)
            return -float(np.log(mix).sum()) / n, -np.einsum("ij,i->j", dens, 1.0 / mix) / n

        res = optimize.minimize(objective, w, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                                constraints=({"type": "eq", "fun": lambda v: v.sum() - 1.0,
                                              "jac": lambda v: np.ones_like(v)},),
                                options={"ftol": 1e-12, "maxiter": 500})
        polished = np.clip(res.x, 0.0, None)
        polished = polished / polished.sum()
        w = polished if res.success and log_l(polished) >= log_l(w) else em(w, max_iter - em_steps)
    return w, log_l(w)
