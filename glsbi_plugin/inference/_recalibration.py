r"""Recalibration of a grid posterior's marginals, fitted on simulations it was not trained on.

An amortised estimator trained on a finite bank can be miscalibrated in a way that differs from one
training seed to the next: its marginal posterior for a parameter sits a little too high or too low
on average, or is a little too wide (``benchmarks/results/calibration_recipe.md``). SBC sees this as
non-uniform PIT values :math:`u_k = F_k(θ_k \mid x)`, with :math:`F_k` the estimator's marginal
CDF of parameter k and :math:`(θ, x)` drawn from the joint.

:class:`MarginalRecalibration` corrects it the way regression models are recalibrated (Kuleshov et
al. 2018, "Accurate uncertainties for deep learning using calibrated regression"): if the PIT
values of the estimator have the CDF :math:`R_k` over the joint, the marginal CDF
:math:`R_k \circ F_k` has uniform PIT values. :math:`R_k` is modelled as a Beta CDF (beta
calibration: two numbers per parameter, which capture a shift (:math:`a \ne b`) and a wrong width
(:math:`a, b > 1`: under-confident; :math:`< 1`: over-confident); :math:`a = b = 1` is the
identity), fitted by maximum likelihood to the PIT values of held-out pairs
(:func:`fit_recalibration`).

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

#: Iterative proportional fitting stops when every marginal is within this of its target mass.
_IPF_TOL = 1e-10
_IPF_MAX_ITER = 1000


@dataclasses.dataclass(frozen=True)
class MarginalRecalibration:
    r"""Beta recalibration of each marginal: :math:`F_k \mapsto R_k(F_k)`, :math:`R_k = I(\cdot\,; a_k, b_k)`.

    :math:`I(u; a, b)` is the regularised incomplete Beta function (the CDF of Beta(a, b)). Build
    it with :func:`fit_recalibration`; pass it to ``GridPosterior(..., recalibration=...)``.

    Attributes:
        a: :math:`a_k > 0` per parameter.
        b: :math:`b_k > 0` per parameter.
        num_pairs: The number of held-out pairs it was fitted on (0: not fitted).
        names: Parameter names, for messages and files (optional).
        info: Free-form provenance (JSON values only), e.g. the bank and seed it was fitted on.

    Raises:
        ValueError: If ``a`` and ``b`` differ in length, hold more than 3 or no values, or a value
            that is not a finite number > 0.

    Example:
        >>> r = MarginalRecalibration(a=(2.0, 1.0), b=(2.0, 1.0))
        >>> [round(float(v), 3) for v in r.cdf(0, np.array([0.25, 0.5]))]  # sharpens parameter 0
        [0.156, 0.5]
        >>> r.is_identity(1), r.is_identity(0)
        (True, False)
    """

    a: tuple[float, ...]
    b: tuple[float, ...]
    num_pairs: int = 0
    names: tuple[str, ...] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        a, b = tuple(self.a), tuple(self.b)
        if not 1 <= len(a) <= 3 or len(a) != len(b):
            raise ValueError(f"a and b need one value per parameter (1 to 3), got a={a!r}, b={b!r}")
        for name, values in (("a", a), ("b", b)):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{name}={values!r}: every value must be a finite number > 0")
        if self.names is not None and len(self.names) != len(a):
            raise ValueError(f"names={self.names!r} must name the {len(a)} parameters")
        object.__setattr__(self, "a", tuple(float(v) for v in a))
        object.__setattr__(self, "b", tuple(float(v) for v in b))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    @property
    def dim(self) -> int:
        """The number of parameters."""
        return len(self.a)

    def cdf(self, k: int, u: np.ndarray) -> np.ndarray:
        """:math:`R_k(u) = I(u; a_k, b_k)` (float64), the recalibrated CDF value of an old CDF value u."""
        return special.betainc(self.a[k], self.b[k], np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0))

    def is_identity(self, k: int | None = None) -> bool:
        """Whether axis ``k`` (every axis when ``None``) is left unchanged (a = b = 1)."""
        axes = range(self.dim) if k is None else (k,)
        return all(self.a[j] == 1.0 and self.b[j] == 1.0 for j in axes)

    def describe(self) -> list[str]:
        """One line per parameter: what the map does (shift and width of the PIT distribution it undoes)."""
        lines = []
        for k in range(self.dim):
            name = self.names[k] if self.names else f"θ_{k}"
            a, b = self.a[k], self.b[k]
            mean = a / (a + b)
            var12 = 12 * a * b / ((a + b) ** 2 * (a + b + 1))
            lines.append(f"{name}: Beta({a:.3g}, {b:.3g}) — the estimator's PIT values had mean {mean:.3f} "
                         f"(0.5 unbiased) and variance {var12:.2f} × 1/12 (1 calibrated)")
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
        return {"format": FORMAT, "a": list(self.a), "b": list(self.b), "num_pairs": int(self.num_pairs),
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
            return cls(a=tuple(data["a"]), b=tuple(data["b"]), num_pairs=int(data.get("num_pairs", 0)),
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
    x = as_batched_x(x, posterior.x_shape)
    out = np.empty(tuple(theta.shape), dtype=np.float64)
    for i in range(theta.shape[0]):
        out[i] = posterior.marginal_cdf(theta[i], x[i : i + 1]).numpy()
    return out


def fit_recalibration(
    posterior: GridPosterior, theta: Tensor, x: Tensor, *, names: tuple[str, ...] | None = None,
    info: dict[str, Any] | None = None,
) -> MarginalRecalibration:
    r"""Fits a :class:`MarginalRecalibration` to held-out pairs by maximum likelihood.

    The PIT values :math:`u_{ik}` of the posterior *without* its own recalibration
    (:func:`grid_pit`) are modelled as Beta(:math:`a_k, b_k`) per parameter; the maximum-likelihood
    fit (values clipped to :math:`[1/2N, 1 - 1/2N]`) is the recalibration map. Its expectation over
    the joint is uniform PIT values for the recalibrated marginals.

    Args:
        posterior: The grid posterior (ensemble and temperature included).
        theta: Parameters ``(N, d)``, ``N >= 50``, drawn from the prior, that the estimators were
            not trained on (and that will not be used to judge the result).
        x: Their simulated observations ``(N, *x_shape)``.
        names: Parameter names (kept in the result).
        info: Provenance to keep in the result (JSON values).

    Returns:
        The fitted recalibration.

    Raises:
        ValueError: Fewer than 50 pairs, or mismatched or malformed ``theta``/``x``.
    """
    n = int(theta.shape[0]) if isinstance(theta, Tensor) and theta.ndim == 2 else -1
    if n < MIN_PAIRS:
        raise ValueError(f"fit_recalibration needs at least {MIN_PAIRS} held-out pairs (θ of shape (N, d)), got "
                         f"{tuple(getattr(theta, 'shape', ()))}")
    u = grid_pit(posterior.with_recalibration(None), theta, x)
    eps = 0.5 / n
    a, b = [], []
    for k in range(u.shape[1]):
        ak, bk = _beta_mle(np.clip(u[:, k], eps, 1.0 - eps))
        a.append(ak)
        b.append(bk)
        logger.info("recalibration of parameter %d on %d pairs: Beta(%.3g, %.3g) (PIT KS p before: %.2g)", k, n, ak,
                    bk, stats.kstest(u[:, k], "uniform").pvalue)
    return MarginalRecalibration(a=tuple(a), b=tuple(b), num_pairs=n, names=names, info=dict(info or {}))


def _beta_mle(u: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Beta(a, b) of values in (0, 1) (the log-likelihood is concave in (a, b))."""
    s1, s2, n = float(np.log(u).sum()), float(np.log1p(-u).sum()), len(u)

    def nll(z: np.ndarray) -> float:
        a, b = np.exp(z)
        return -((a - 1) * s1 + (b - 1) * s2 - n * special.betaln(a, b))

    res = optimize.minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10,
                                                                              "maxiter": 4000})
    a, b = np.exp(res.x)
    return float(a), float(b)
