r"""A grid posterior for low-dimensional θ (d ≤ 3) on a box prior: embed x once, evaluate cheaply.

sbi's ratio estimator computes ``g(θ, x) = net([embedding_net_theta(θ), embedding_net_x(x)])``
and sbi's potential (``RatioBasedPotential``) repeats ``x`` once per θ, so an image CNN runs for
every θ. :class:`GridPosterior` runs the CNN once per observation and only the small head over a
grid of cell centres covering the prior's box; the normalised grid gives the density, inverse-CDF
sampling (plus a uniform jitter inside the cell), the MAP and credible intervals. For NPE flows the
flow's condition embedding is likewise computed once and the flow's ``log_prob`` runs over the grid.

What differs between estimator families (how x is embedded, how the unnormalised log posterior is
evaluated given that embedding, which sbi potential matches) lives in one small adapter per family
(:class:`_RatioAdapter`, :class:`_ZukoFlowAdapter`, :class:`_NFlowsFlowAdapter`), chosen once by
:func:`_adapter_for`; :class:`GridPosterior` itself only handles the grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

import torch
from sbi.inference.posteriors.base_posterior import NeuralPosterior
from sbi.inference.potentials.base_potential import BasePotential
from sbi.inference.potentials.posterior_based_potential import PosteriorBasedPotential
from sbi.inference.potentials.ratio_based_potential import RatioBasedPotential
from sbi.neural_nets.estimators.nflows_flow import NFlowsFlow
from sbi.neural_nets.estimators.zuko_flow import ZukoFlow
from sbi.neural_nets.ratio_estimators import RatioEstimator
from torch import Tensor, nn
from torch.distributions import Distribution

from .._validation import as_batched_x, box_bounds, check_theta

if TYPE_CHECKING:
    from ._recalibration import MarginalRecalibration

__all__ = ["GridPosterior", "fit_temperature"]

logger = logging.getLogger(__name__)

#: Default points per axis by dimension of θ (1e3, 1e4 and ~3.3e4 grid points).
DEFAULT_RESOLUTION = {1: 1000, 2: 100, 3: 32}

#: Observations sent through an embedding net at once.
_EMBED_ROWS = 256


class _GridState(NamedTuple):
    """What :class:`GridPosterior` caches per observation (the default x and the last x seen)."""

    x: Tensor
    """The observation(s), ``(n, C, H, W)`` (``n`` i.i.d. trials; 1 for flows)."""
    emb: tuple[Tensor, ...]
    """Their embeddings by each member estimator, ``(n, F_k)`` (:meth:`_Adapter.embed`)."""
    log_mass: Tensor
    """Log probability mass of every grid cell, ``(G,)``; it logsumexps to 0."""
    log_norm: Tensor
    """Log normaliser of each member's (tempered) density, ``(K,)``: ``log Σ exp(unnormalised_k) +
    log cell_volume``."""
    log_norm_pool: Tensor
    """``combine="log-mean"``: log normaliser of the members' mean log density (a scalar; 0 for a
    mixture)."""
    log_factors: tuple[Tensor, ...] | None = None
    """With a recalibration: the log factor added to every cell of each axis, ``(n_k,)`` per axis
    (:meth:`MarginalRecalibration.apply`); ``None`` without one."""


class _ThetaFeatures(NamedTuple):
    """The x-independent part of a ratio estimator's log posterior at a batch of θ ``(T, d)``."""

    features: Tensor
    """``embedding_net_theta(θ)``, ``(T, F_θ)``."""
    log_prior: Tensor
    """``prior.log_prob(θ)``, ``(T,)``."""

    def rows(self, index: slice) -> _ThetaFeatures:
        """The features of the θ rows ``index``."""
        return _ThetaFeatures(self.features[index], self.log_prior[index])


class _Adapter:
    """How :class:`GridPosterior` evaluates one family of sbi estimators (one subclass per family).

    Args:
        estimator: The trained estimator.
        prior: The prior it was trained with.
    """

    kind: ClassVar[str]
    """Short name of the family: ``"ratio"`` (NRE) or ``"flow"`` (NPE)."""
    potential_cls: ClassVar[type[BasePotential]]
    """sbi's potential for this family (behind :meth:`GridPosterior.potential`)."""
    iid_trials: ClassVar[bool]
    """Whether several observations can be combined as i.i.d. trials of one θ."""

    def __init__(self, estimator: nn.Module, prior: Distribution) -> None:
        self.estimator = estimator
        self.prior = prior

    @property
    def embedding_net(self) -> nn.Module:
        """The estimator's network embedding x."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Embeds a batch of observations once.

        Args:
            x: Observations ``(n, C, H, W)``.

        Returns:
            Embeddings ``(n, F)``.
        """
        return torch.cat([self.embedding_net(chunk) for chunk in x.split(_EMBED_ROWS)])

    def theta_features(self, theta: Tensor) -> _ThetaFeatures | None:
        """The x-independent work of :meth:`log_density` at θ ``(T, d)``, to cache for the grid.

        Returns:
            What :meth:`log_density` accepts as ``features``; ``None`` where there is nothing to cache.
        """
        return None

    def log_density(self, theta: Tensor, emb: Tensor, features: _ThetaFeatures | None = None) -> Tensor:
        """Unnormalised log posterior at θ given embedded observations.

        Args:
            theta: Parameters ``(T, d)``.
            emb: Embedded observations ``(n, F)`` from :meth:`embed`.
            features: :meth:`theta_features` of these θ, if cached.

        Returns:
            Log densities ``(T,)``, up to a θ-independent constant.
        """
        raise NotImplementedError


class _RatioAdapter(_Adapter):
    """sbi's ratio estimators (NRE_A/B/C, BNRE): ``log r(θ, x) + log p(θ)``, summed over i.i.d. trials."""

    kind = "ratio"
    potential_cls = RatioBasedPotential
    iid_trials = True
    estimator: RatioEstimator

    @property
    def embedding_net(self) -> nn.Module:
        """``estimator.embedding_net_x``."""
        return self.estimator.embedding_net_x

    @torch.no_grad()
    def theta_features(self, theta: Tensor) -> _ThetaFeatures:
        """``embedding_net_theta(θ)`` and ``prior.log_prob(θ)``."""
        return _ThetaFeatures(self.estimator.embedding_net_theta(theta), self.prior.log_prob(theta).to(theta.device))

    @torch.no_grad()
    def log_density(self, theta: Tensor, emb: Tensor, features: _ThetaFeatures | None = None) -> Tensor:
        """``Σ_trials net([embedding_net_theta(θ), emb_i]) + log p(θ)``: sbi's ``RatioBasedPotential``.

        Args:
            theta: Parameters ``(T, d)``.
            emb: Embedded i.i.d. trials ``(n, F)``.
            features: :meth:`theta_features` of these θ, if cached.

        Returns:
            Log densities ``(T,)``.
        """
        feat, log_prior = self.theta_features(theta) if features is None else features
        log_r = sum(self.estimator.net(torch.cat([feat, e.expand(len(theta), -1)], -1)).squeeze(-1) for e in emb)
        return log_r + log_prior


class _FlowAdapter(_Adapter):
    """What sbi's flow wrappers share: a normalised posterior density, one observation at a time."""

    kind = "flow"
    potential_cls = PosteriorBasedPotential
    iid_trials = False

    @property
    def embedding_net(self) -> nn.Module:
        """``estimator.embedding_net`` (public on sbi's wrapper)."""
        return self.estimator.embedding_net

    @torch.no_grad()
    def log_density(self, theta: Tensor, emb: Tensor, features: _ThetaFeatures | None = None) -> Tensor:
        """The flow's normalised ``log q(θ | x)`` (sbi's ``PosteriorBasedPotential`` inside the prior's box).

        Args:
            theta: Parameters ``(T, d)``.
            emb: Embedded observation ``(1, F)`` (only the first row is used).
            features: Unused.

        Returns:
            Log densities ``(T,)``.
        """
        return self._log_q(theta, emb[:1])

    def _log_q(self, theta: Tensor, emb: Tensor) -> Tensor:
        """``log q(θ | x)`` ``(T,)`` from one embedded observation ``emb`` ``(1, F)``."""
        raise NotImplementedError


class _ZukoFlowAdapter(_FlowAdapter):
    """sbi's zuko flows (NPE with ``model="zuko_*"``): the flow's ``log_prob`` given the embedded x."""

    estimator: ZukoFlow

    def _log_q(self, theta: Tensor, emb: Tensor) -> Tensor:
        # ``estimator.net`` is the zuko ``Flow``; called on an embedded context it returns the
        # conditional distribution (zuko's public API), as ``ZukoFlow.log_prob`` does internally.
        return self.estimator.net(emb).log_prob(theta)


class _NFlowsFlowAdapter(_FlowAdapter):
    """sbi's nflows flows (NPE with ``model="maf"``, ``"nsf"``, ...): the flow's density given the embedded x."""

    estimator: NFlowsFlow

    def _log_q(self, theta: Tensor, emb: Tensor) -> Tensor:
        # nflows' ``Flow.log_prob(θ, context)`` always runs its embedding net on ``context`` and has no
        # public entry point taking an already embedded one, so this repeats ``Flow._log_prob`` after
        # its embedding step, through the private ``_transform`` and ``_distribution`` (nflows 0.14).
        flow, ctx = self.estimator.net, emb.expand(len(theta), -1)
        noise, logabsdet = flow._transform(theta, context=ctx)
        return flow._distribution.log_prob(noise, context=ctx) + logabsdet


#: Supported estimator types and their adapters, tried in order.
_ADAPTERS: tuple[tuple[type[nn.Module], type[_Adapter]], ...] = (
    (RatioEstimator, _RatioAdapter),
    (ZukoFlow, _ZukoFlowAdapter),
    (NFlowsFlow, _NFlowsFlowAdapter),
)


def _adapter_for(estimator: nn.Module, prior: Distribution) -> _Adapter:
    """The adapter for ``estimator``'s family.

    Args:
        estimator: A trained sbi estimator.
        prior: The prior it was trained with.

    Returns:
        The matching adapter.

    Raises:
        TypeError: If ``estimator`` belongs to none of the supported families.
    """
    for cls, adapter in _ADAPTERS:
        if isinstance(estimator, cls):
            return adapter(estimator, prior)
    raise TypeError(
        "GridPosterior needs a RatioEstimator (NRE_A/B/C, BNRE) or a ZukoFlow/NFlowsFlow (NPE), "
        f"got {type(estimator).__name__}"
    )


class GridPosterior(NeuralPosterior):
    r"""Posterior p(θ|x) on a regular grid over the prior's box, from trained NRE or NPE estimators.

    The grid has ``resolution[k]`` cells along axis ``k``; the density is evaluated at the cell
    centres and normalised so that ``Σ p(θ_i) · cell_volume = 1``. :meth:`sample` draws a cell by its
    mass and a uniform point inside it (a draw from the piecewise-constant approximation);
    :meth:`log_prob` evaluates the estimators at θ itself and subtracts the grid's log-normalisers.
    Several observations ``x`` of shape ``(n, C, H, W)`` passed to :meth:`log_prob`/:meth:`sample`
    are i.i.d. trials of one θ (sbi's convention; ratio estimators only); :meth:`sample_batched`
    treats them as independent observations. The θ-side features of the grid and the default x are
    cached at construction/``set_default_x``: build a new ``GridPosterior`` after training further.

    **Ensembles.** Given K estimators (e.g. trained with different seeds), each normalised on the
    grid, ``combine="mixture"`` gives their equal-weight mixture,
    :math:`p(θ|x) = \frac1K \sum_k p_k(θ|x)` (the pattern of ltu-ili's and sbi's
    ``EnsemblePosterior``: wider than its members where they disagree, which guards against one
    member's over-confidence, Hermans et al. 2022); ``combine="log-mean"`` pools them
    geometrically, :math:`p(θ|x) \propto \exp\bigl(\frac1K \sum_k \log p_k(θ|x)\bigr)`, i.e.
    averages the members' log-ratios (logit averaging): members that agree in width but are shifted
    against each other (each training seed's own bias) average to one posterior of that width
    around the mean shift, where a mixture would widen.

    **Temperature.** With ``temperature`` :math:`τ` each member's likelihood part is tempered,
    :math:`p_k(θ|x) \propto p(θ)\,\bigl(\ell_k(θ, x) / p(θ)\bigr)^{τ}`, where :math:`\ell_k`
    is the member's unnormalised log posterior (:math:`r_k(θ, x)\,p(θ)` for a ratio estimator,
    :math:`q_k(θ|x)` for a flow). :math:`τ = 1` is the estimator itself; :math:`τ > 1` sharpens an
    under-confident estimator, :math:`τ < 1` widens an over-confident one. Choose it on
    simulations the estimators were not trained on with :func:`fit_temperature` (temperature
    scaling, Guo et al. 2017, applied to the log-ratio).

    **Recalibration.** With ``recalibration`` :math:`R` (a
    :class:`~glsbi_plugin.inference.MarginalRecalibration` from
    :func:`~glsbi_plugin.inference.fit_recalibration`), applied last, each marginal CDF
    :math:`F_k` of the (ensemble, tempered) grid density becomes :math:`R_k(F_k)` and the joint is
    reweighted by one factor per axis to match (iterative proportional fitting): densities, draws,
    intervals and the MAP all follow the recalibrated cell masses.

    Args:
        estimator: The trained estimator, or a sequence of them (an ensemble of one family and one
            θ/x shape): sbi's ``RatioEstimator`` (NRE_A/B/C, BNRE) or an NPE flow (``ZukoFlow`` or
            ``NFlowsFlow``).
        prior: The prior used for training; its support must be a finite box in ``d <= 3``.
        resolution: Cells per axis (an int for all, or one per axis); default 1000/100/32 for
            d = 1/2/3.
        x_o: Optional default observation (see :meth:`set_default_x`).
        max_rows: Most (θ, x) rows sent through the head at once (bounds memory).
        temperature: :math:`τ > 0` (see above); default 1.
        combine: How an ensemble's members are combined: ``"mixture"`` (default) or
            ``"log-mean"`` (see above). Irrelevant for one estimator.
        recalibration: A marginal recalibration for this θ dimension (see above), or ``None``.

    Raises:
        TypeError: If an estimator is not a ratio estimator or a zuko/nflows flow.
        ValueError: If the prior is not a finite box, ``d > 3``, ``resolution`` is bad, the
            ensemble is empty or mixes families or shapes, ``temperature`` is not a finite
            number > 0, or ``recalibration`` is for another number of parameters.
    """

    def __init__(
        self,
        estimator: nn.Module | Sequence[nn.Module],
        prior: Distribution,
        *,
        resolution: int | Sequence[int] | None = None,
        x_o: Tensor | None = None,
        max_rows: int = 2**17,
        temperature: float = 1.0,
        combine: Literal["mixture", "log-mean"] = "mixture",
        recalibration: MarginalRecalibration | None = None,
    ) -> None:
        estimators = tuple(estimator) if isinstance(estimator, Sequence) else (estimator,)
        if not estimators:
            raise ValueError("GridPosterior needs at least one estimator, got an empty sequence")
        self._adapters = tuple(_adapter_for(e, prior) for e in estimators)
        self._adapter = self._adapters[0]
        kinds = {a.kind for a in self._adapters}
        if len(kinds) > 1:
            raise ValueError(f"an ensemble must hold estimators of one family, got {sorted(kinds)}")
        low, high = box_bounds(prior)
        d = low.numel()
        if d > 3:
            raise ValueError(f"GridPosterior supports θ of dimension <= 3, the prior has d = {d}")
        first = estimators[0]
        for e in estimators:
            if tuple(e.input_shape) != (d,):
                raise ValueError(
                    f"the estimator's θ shape {tuple(e.input_shape)} does not match the prior's ({d},)"
                )
            if tuple(e.condition_shape) != tuple(first.condition_shape):
                raise ValueError(
                    f"ensemble members condition on different x shapes: {tuple(first.condition_shape)} and "
                    f"{tuple(e.condition_shape)}"
                )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature={temperature!r}: must be a finite number > 0")
        self.temperature = float(temperature)
        if combine not in ("mixture", "log-mean"):
            raise ValueError(f"combine={combine!r}: allowed values are ('mixture', 'log-mean')")
        self.combine = combine
        if recalibration is not None and getattr(recalibration, "dim", None) != d:
            raise ValueError(
                f"recalibration must be a MarginalRecalibration for {d} parameters, got {recalibration!r}"
            )
        self.recalibration = recalibration
        self.resolution = _resolution(resolution, d)
        self.max_rows = int(max_rows)
        device = next(first.parameters()).device
        self.estimators = tuple(e.eval() for e in estimators)
        self.estimator = self.estimators[0]
        potential = self._adapter.potential_cls(first, prior, None, device=str(device))
        super().__init__(potential, device=str(device))
        self.prior = prior
        self.x_shape = tuple(int(s) for s in first.condition_shape)
        self.low, self.high = low.to(device), high.to(device)
        self.cell_width = (self.high - self.low) / torch.tensor(self.resolution, device=device)
        self.log_cell_volume = float(self.cell_width.log().sum())
        axes = [
            self.low[k] + (torch.arange(n, device=device) + 0.5) * self.cell_width[k]
            for k, n in enumerate(self.resolution)
        ]
        self.axes = axes
        self.grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
        self._grid_features = tuple(a.theta_features(self.grid) for a in self._adapters)
        self._grid_log_prior = self._log_prior(self.grid)
        self._memo: _GridState | None = None
        self._default: _GridState | None = None
        members = f"a {combine} of {len(estimators)} " if len(estimators) > 1 else ""
        tempered = f", temperature {self.temperature:g}" if self.temperature != 1.0 else ""
        recalibrated = ", recalibrated" if recalibration is not None else ""
        self._purpose = (
            f"Grid of {'x'.join(map(str, self.resolution))} cells over the prior's box ({members}{self.kind}"
            f"{tempered}{recalibrated})."
        )
        if x_o is not None:
            self.set_default_x(x_o)

    @property
    def kind(self) -> str:
        """The estimator family: ``"ratio"`` (NRE) or ``"flow"`` (NPE)."""
        return self._adapter.kind

    @property
    def num_members(self) -> int:
        """K, the number of estimators whose posteriors are mixed (1 for a single estimator)."""
        return len(self._adapters)

    def with_temperature(self, temperature: float) -> GridPosterior:
        """The same estimators, grid, recalibration and default x at another temperature (a new posterior).

        Example:
            >>> posterior.with_temperature(1.5).temperature  # doctest: +SKIP
            1.5
        """
        return self._replace(temperature=temperature, recalibration=self.recalibration)

    def with_recalibration(self, recalibration: MarginalRecalibration | None) -> GridPosterior:
        """The same estimators, grid, temperature and default x with another recalibration
        (``None``: the estimators' own posterior); a new posterior.

        Example:
            >>> posterior.with_recalibration(None).recalibration is None  # doctest: +SKIP
            True
        """
        return self._replace(temperature=self.temperature, recalibration=recalibration)

    def _replace(self, *, temperature: float, recalibration: MarginalRecalibration | None) -> GridPosterior:
        new = GridPosterior(
            self.estimators, self.prior, resolution=self.resolution, max_rows=self.max_rows, temperature=temperature,
            combine=self.combine, recalibration=recalibration,
        )
        if self._default is not None:
            new.set_default_x(self._default.x)
        return new

    # -- observations ------------------------------------------------------------------------
    def set_default_x(self, x: Tensor) -> GridPosterior:
        """Sets the default observation (``(C, H, W)`` or i.i.d. trials ``(n, C, H, W)``) and caches it.

        Args:
            x: The observation.

        Returns:
            ``self``, for chaining.
        """
        x = as_batched_x(x, self.x_shape).to(self._device)
        self._default = self._evaluate(x)
        self._x = x
        self._map = None
        return self

    def _state(self, x: Tensor | None) -> _GridState:
        if x is None:
            if self._default is None:
                raise ValueError("no x given and no default x set: pass x=... or call set_default_x(x)")
            return self._default
        x = as_batched_x(x, self.x_shape).to(self._device)
        if self._memo is not None and self._memo.x.shape == x.shape and torch.equal(self._memo.x, x):
            return self._memo
        self._memo = self._evaluate(x)
        return self._memo

    def _embed(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(a.embed(x) for a in self._adapters)

    def _evaluate(self, x: Tensor) -> _GridState:
        if not self._adapter.iid_trials and x.shape[0] > 1:
            raise ValueError(
                f"an NPE posterior conditions on one observation, got x of shape {tuple(x.shape)}; "
                "use sample_batched for many observations"
            )
        embs = self._embed(x)
        log_mass, log_norm, log_norm_pool = self._grid_mixture(embs)
        log_factors = None
        if self.recalibration is not None:
            log_mass, log_factors = self.recalibration.apply(log_mass, self.resolution)
        return _GridState(x, embs, log_mass, log_norm, log_norm_pool, log_factors)

    def _grid_mixture(self, embs: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The ensemble's log cell masses ``(G,)``, each member's log normaliser ``(K,)`` and the
        log-mean pool's normaliser (a scalar, 0 unless ``combine="log-mean"``)."""
        masses, norms = [], []
        for k, emb in enumerate(embs):
            unnorm = self._unnormalised(self.grid, emb, k, self._grid_features[k], self._grid_log_prior)
            log_z = torch.logsumexp(unnorm, 0)
            masses.append(unnorm - log_z)
            norms.append(log_z + self.log_cell_volume)
        pool = torch.zeros(())
        if len(masses) == 1:
            log_mass = masses[0]
        elif self.combine == "mixture":
            log_mass = torch.logsumexp(torch.stack(masses), 0) - math.log(len(masses))
        else:  # mean of the members' normalised log densities, renormalised
            mean = torch.stack(masses).mean(0)
            pool = torch.logsumexp(mean, 0)
            log_mass = mean - pool
        return log_mass, torch.stack(norms), pool

    def _row_masses(self, x: Tensor, rows_per_pass: int = 256) -> Iterator[Tensor]:
        """Log cell masses ``(G,)`` of each observation of a batch ``(B, *x_shape)``, in order; the
        batch is embedded ``rows_per_pass`` observations at a time (one pass each, bounded memory)."""
        for start in range(0, x.shape[0], rows_per_pass):
            embs = self._embed(x[start : start + rows_per_pass])
            for j in range(embs[0].shape[0]):
                yield self._cell_masses([e[j : j + 1] for e in embs])

    def _cell_masses(self, embs: Sequence[Tensor]) -> Tensor:
        """Log cell masses ``(G,)`` of one embedded observation, recalibrated if the posterior is."""
        log_mass = self._grid_mixture(embs)[0]
        return log_mass if self.recalibration is None else self.recalibration.apply(log_mass, self.resolution)[0]

    @torch.no_grad()
    def _log_prior(self, theta: Tensor) -> Tensor:
        return self.prior.log_prob(theta).to(theta.device).reshape(-1)

    @torch.no_grad()
    def _unnormalised(
        self,
        theta: Tensor,
        emb: Tensor,
        member: int = 0,
        features: _ThetaFeatures | None = None,
        log_prior: Tensor | None = None,
        temperature: float | None = None,
    ) -> Tensor:
        """Member ``member``'s tempered unnormalised log posterior at θ ``(T, d)`` for embedded x
        ``(n_trials, F)``, ``max_rows`` θ at a time.

        ``features`` are the adapter's cached :meth:`_Adapter.theta_features` of these θ (for the
        grid) and ``log_prior`` the prior's log density there (computed when ``None`` and needed);
        ``temperature`` overrides :attr:`temperature` (1: the estimator's own density).
        """
        adapter = self._adapters[member]
        out = []
        for start in range(0, theta.shape[0], max(1, self.max_rows)):
            rows = slice(start, start + self.max_rows)
            out.append(adapter.log_density(theta[rows], emb, None if features is None else features.rows(rows)))
        ell = torch.cat(out)
        tau = self.temperature if temperature is None else temperature
        if tau == 1.0:
            return ell
        lp = self._log_prior(theta) if log_prior is None else log_prior
        return lp + tau * (ell - lp)

    # -- densities ---------------------------------------------------------------------------
    def grid_log_prob(self, x: Tensor | None = None) -> Tensor:
        """Log density at the grid points :attr:`grid` (shape ``(G,)``), normalised over the box.

        Args:
            x: Observation; default :attr:`default_x`.

        Returns:
            ``log p(θ_i | x)`` for every cell centre ``θ_i``.
        """
        state = self._state(x)
        return state.log_mass - self.log_cell_volume

    def log_prob(self, theta: Tensor, x: Tensor | None = None, **kwargs: object) -> Tensor:
        """Normalised log density of θ (the estimator at θ minus the grid's log-normaliser).

        Args:
            theta: ``(n, d)`` or ``(d,)`` inside the prior's support.
            x: Observation; default :attr:`default_x`.
            **kwargs: Only sbi's ``track_gradients=False`` is accepted.

        Returns:
            Log densities of shape ``(n,)``.

        Raises:
            ValueError: θ of the wrong shape/dtype or outside the support; x of the wrong shape.
            TypeError: Unknown keyword arguments.
        """
        _accept_only(kwargs, "track_gradients", "log_prob")
        theta = check_theta(theta, self.low.cpu(), self.high.cpu()).to(self._device)
        state = self._state(x)
        lp = self._log_prior(theta) if self.temperature != 1.0 else None
        members = [
            self._unnormalised(theta, emb, k, None, lp) - state.log_norm[k] for k, emb in enumerate(state.emb)
        ]
        if len(members) == 1:
            out = members[0]
        elif self.combine == "mixture":
            out = torch.logsumexp(torch.stack(members), 0) - math.log(len(members))
        else:
            # the pool of the normalised densities: mean log density minus its grid normaliser (the
            # members' densities are log masses minus log cell volume, which the mean keeps)
            out = torch.stack(members).mean(0) - state.log_norm_pool
        if state.log_factors is not None:  # the recalibration's factor of θ's cell on every axis
            cells = self._cells_of(theta)
            out = out + sum(f.to(out.dtype)[cells[:, k]] for k, f in enumerate(state.log_factors))
        return out

    def _cells_of(self, theta: Tensor) -> Tensor:
        """Grid cell index along each axis of θ ``(n, d)`` (the upper edge belongs to the last cell)."""
        cells = ((theta - self.low) / self.cell_width).floor().long()
        return torch.minimum(cells.clamp_min(0), torch.tensor(self.resolution, device=theta.device) - 1)

    def potential(self, theta: Tensor, x: Tensor | None = None, track_gradients: bool = False) -> Tensor:
        """sbi's (unnormalised, re-embedding) potential, with ``x`` accepted with or without batch dim.

        For an ensemble, a tempered or a recalibrated posterior: :meth:`log_prob` inside the prior's
        box and ``-inf`` outside it (sbi's potentials are one estimator's own).
        """
        x = None if x is None else as_batched_x(x, self.x_shape).to(self._device)
        if self.num_members == 1 and self.temperature == 1.0 and self.recalibration is None:
            return super().potential(theta, x, track_gradients=track_gradients)
        theta = torch.as_tensor(theta, dtype=torch.float32, device=self._device).reshape(-1, len(self.resolution))
        inside = ((theta >= self.low) & (theta <= self.high)).all(-1)
        out = torch.full((theta.shape[0],), -math.inf, device=self._device)
        if bool(inside.any()):
            out[inside] = self.log_prob(theta[inside], x)
        return out

    def marginals(self, x: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """One-dimensional marginal densities on the grid axes.

        Args:
            x: Observation; default :attr:`default_x`.

        Returns:
            Per parameter ``(axis, density)``: cell centres ``(n_k,)`` and the marginal density there.
        """
        masses = self._marginal_masses(self._state(x).log_mass)
        return [(self.axes[k], m / self.cell_width[k]) for k, m in enumerate(masses)]

    def _marginal_masses(self, log_mass: Tensor) -> list[Tensor]:
        """Per axis, the marginal cell masses ``(n_k,)`` of the grid with log cell masses ``(G,)``."""
        mass = log_mass.exp().reshape(self.resolution)
        d = len(self.resolution)
        others = [tuple(j for j in range(d) if j != k) for k in range(d)]
        return [mass.sum(dim=o) if o else mass for o in others]  # sum(dim=()) would reduce everything

    def marginal_moments(self, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Marginal posterior means and standard deviations of the piecewise-constant grid density,
        :math:`\mu_k = \sum_i w_{ki} \theta_{ki}` and :math:`\sigma_k^2 = \sum_i w_{ki} (\theta_{ki} - \mu_k)^2`
        over the cell centres :math:`\theta_{ki}` of axis k with marginal cell masses :math:`w_{ki}` (float64).

        Args:
            x: Observation; default :attr:`default_x`.

        Returns:
            ``(mean (d,), std (d,))``, float64.
        """
        means, stds = [], []
        for axis, dens in self.marginals(x):
            w, t = dens.double() / dens.double().sum(), axis.double()
            m = (w * t).sum()
            means.append(m)
            stds.append((w * (t - m) ** 2).sum().clamp_min(0.0).sqrt())
        return torch.stack(means), torch.stack(stds)

    def marginal_cdf(self, theta: Tensor, x: Tensor | None = None) -> Tensor:
        r"""Marginal CDFs :math:`F_k(θ_k \mid x)` of the piecewise-constant grid density at θ.

        Exact for the grid density: the cell masses below θ_k plus the covered fraction of θ_k's cell.
        At the true θ of a simulated x these are the PIT values of SBC (uniform when calibrated;
        :func:`~glsbi_plugin.inference.grid_pit` computes them for many pairs).

        Args:
            theta: ``(d,)`` or ``(n, d)`` inside the prior's box.
            x: Observation; default :attr:`default_x`.

        Returns:
            ``(d,)`` or ``(n, d)`` float64 values in [0, 1].

        Example:
            >>> posterior.marginal_cdf(posterior.high)  # doctest: +SKIP
            tensor([1., 1.], dtype=torch.float64)
        """
        single = isinstance(theta, Tensor) and theta.ndim == 1
        theta = check_theta(theta, self.low.cpu(), self.high.cpu()).to(self._device)
        result = self._cdf_from_mass(self._state(x).log_mass, theta)
        return result[0] if single else result

    def _cdf_from_mass(self, log_mass: Tensor, theta: Tensor) -> Tensor:
        """Marginal CDFs ``(n, d)`` (float64) at checked θ ``(n, d)`` of the grid with log cell masses ``(G,)``."""
        cells = self._cells_of(theta)
        frac = ((theta - self.low) / self.cell_width - cells).double().clamp(0.0, 1.0)
        out = []
        for k, marginal in enumerate(self._marginal_masses(log_mass)):
            mass = marginal.double() / marginal.double().sum()
            below = torch.cat([mass.new_zeros(1), mass.cumsum(0)])
            out.append((below[cells[:, k]] + frac[:, k] * mass[cells[:, k]]).clamp(0.0, 1.0))
        return torch.stack(out, -1)

    def credible_interval(self, level: float = 0.9, x: Tensor | None = None) -> Tensor:
        """Equal-tailed marginal credible intervals (exact for the piecewise-constant density).

        Args:
            level: Probability mass inside each interval, in ``(0, 1)``.
            x: Observation; default :attr:`default_x`.

        Returns:
            ``(d, 2)`` tensor of ``[lower, upper]`` per parameter.

        Raises:
            ValueError: If ``level`` is not in ``(0, 1)``.
        """
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level={level!r}: must be in (0, 1)")
        tail = (1.0 - float(level)) / 2
        out = []
        for k, (_, dens) in enumerate(self.marginals(x)):
            mass = dens.double() / dens.double().sum()
            cdf = torch.cat([mass.new_zeros(1), mass.cumsum(0)])
            bounds = []
            for q in (tail, 1.0 - tail):
                i = int(torch.searchsorted(cdf, torch.tensor([q], dtype=cdf.dtype)).clamp(1, len(mass))) - 1
                frac = (q - float(cdf[i])) / max(float(mass[i]), 1e-300)
                bounds.append(float(self.low[k]) + (i + min(max(frac, 0.0), 1.0)) * float(self.cell_width[k]))
            out.append(bounds)
        return torch.tensor(out, dtype=torch.float32)

    def map(self, x: Tensor | None = None, **kwargs: object) -> Tensor:  # type: ignore[override]
        """The grid cell centre with the highest density (MAP to within half a cell).

        Args:
            x: Observation; default :attr:`default_x`.
            **kwargs: sbi's optimiser options are not used; none are accepted.

        Returns:
            θ of shape ``(d,)``.
        """
        _accept_only(kwargs, "show_progress_bars", "map")
        return self.grid[int(self._state(x).log_mass.argmax())].clone()

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self, sample_shape: Sequence[int] | torch.Size = (), x: Tensor | None = None, show_progress_bars: bool = False
    ) -> Tensor:
        """Draws θ ~ p(θ|x): a cell by its mass (inverse CDF), then a uniform point inside it.

        Args:
            sample_shape: Shape of the batch of draws.
            x: Observation; default :attr:`default_x`.
            show_progress_bars: Accepted for sbi compatibility; there is nothing to show.

        Returns:
            Samples of shape ``(*sample_shape, d)``.
        """
        shape = torch.Size(sample_shape)
        idx = _draw(self._state(x).log_mass[None], shape.numel())[0]
        return self._cells_to_theta(idx).reshape(*shape, -1)

    def sample_batched(
        self, sample_shape: Sequence[int] | torch.Size, x: Tensor, show_progress_bars: bool = False, **kwargs: object
    ) -> Tensor:
        """Samples the posteriors of a batch of independent observations (sbi's contract).

        Args:
            sample_shape: Draws per observation.
            x: Observations ``(B, C, H, W)`` (a single ``(C, H, W)`` counts as ``B = 1``).
            show_progress_bars: Accepted for sbi compatibility; there is nothing to show.
            **kwargs: None are accepted (sbi's sampler options do not apply).

        Returns:
            Samples of shape ``(*sample_shape, B, d)``.
        """
        _accept_only(kwargs, None, "sample_batched")
        x = as_batched_x(x, self.x_shape).to(self._device)
        shape = torch.Size(sample_shape)
        log_mass = torch.stack(list(self._row_masses(x)))
        idx = _draw(log_mass, shape.numel())  # (B, N)
        theta = self._cells_to_theta(idx.reshape(-1)).reshape(x.shape[0], shape.numel(), -1)
        return theta.transpose(0, 1).reshape(*shape, x.shape[0], -1)

    def _cells_to_theta(self, idx: Tensor) -> Tensor:
        coords, rest = [], idx
        for n in reversed(self.resolution):
            coords.append(rest % n)
            rest = torch.div(rest, n, rounding_mode="floor")
        cell = torch.stack(coords[::-1], dim=-1).to(self.low.dtype)
        jitter = torch.rand(cell.shape, device=cell.device)
        return self.low + (cell + jitter) * self.cell_width


def _draw(log_mass: Tensor, n: int) -> Tensor:
    """Indices ``(B, n)`` of cells drawn with probabilities ``softmax(log_mass)`` per row."""
    if n == 0:
        return torch.empty((log_mass.shape[0], 0), dtype=torch.long, device=log_mass.device)
    probs = torch.softmax(log_mass.double(), dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.rand((log_mass.shape[0], n), dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_(max=log_mass.shape[-1] - 1)


def _resolution(resolution: int | Sequence[int] | None, d: int) -> tuple[int, ...]:
    if resolution is None:
        return (DEFAULT_RESOLUTION[d],) * d
    res = (resolution,) * d if isinstance(resolution, int) else tuple(resolution)
    if len(res) != d or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in res):
        raise ValueError(f"resolution must be an integer >= 1 or {d} of them, got {resolution!r}")
    if math.prod(res) > 2**24:
        raise ValueError(f"resolution {res} gives {math.prod(res)} cells; at most 2**24 are supported")
    return res


def _accept_only(kwargs: dict[str, object], allowed: str | None, where: str) -> None:
    bad = sorted(k for k in kwargs if k != allowed)
    if bad:
        raise TypeError(f"{where}() got unexpected keyword arguments {bad}")


@torch.no_grad()
def fit_temperature(
    posterior: GridPosterior,
    theta: Tensor,
    x: Tensor,
    *,
    temperatures: Sequence[float] | Tensor | None = None,
) -> tuple[float, Tensor]:
    r"""The temperature τ that maximises the mean log posterior density of held-out pairs.

    Temperature scaling (Guo et al. 2017) for simulation-based posteriors: on pairs
    :math:`(θ_i, x_i)` drawn from the joint and *not used in training*, choose

    .. math:: τ^* = \arg\max_τ \frac1N \sum_i \log p_τ(θ_i \mid x_i),

    with :math:`p_τ` the posterior of :class:`GridPosterior` at temperature τ (each member's
    likelihood part raised to τ and renormalised on the grid). The mean log density is a proper
    scoring rule: its expectation is maximised by the true posterior, so τ* corrects a systematic
    over- (τ* < 1) or under-confidence (τ* > 1) of the estimator; it cannot repair the shape of
    a posterior. The estimators are evaluated once per observation; every τ reuses them.

    Args:
        posterior: The posterior to temper (its own temperature and recalibration are ignored: τ
            multiplies the estimators' log-likelihood directly).
        theta: Held-out parameters ``(N, d)`` inside the prior's box.
        x: Their observations ``(N, *x_shape)``.
        temperatures: Candidates (all > 0); default 61 values log-spaced on [1/8, 8].

    Returns:
        ``(τ*, scores)``: the best candidate and the mean held-out log density of every candidate.

    Raises:
        ValueError: Mismatched or malformed ``theta``/``x``, or a candidate that is not > 0.
    """
    taus = torch.logspace(math.log10(0.125), math.log10(8.0), 61, dtype=torch.float64) if temperatures is None else (
        torch.as_tensor(temperatures, dtype=torch.float64).reshape(-1)
    )
    if taus.numel() == 0 or not bool(torch.isfinite(taus).all() & (taus > 0).all()):
        raise ValueError(f"temperatures must be finite and > 0, got {taus.tolist()}")
    theta = check_theta(theta, posterior.low.cpu(), posterior.high.cpu()).to(posterior._device)
    if not isinstance(x, Tensor) or x.shape[0] != theta.shape[0]:
        raise ValueError(f"x must hold one observation per θ row ({theta.shape[0]}), got {type(x).__name__}")
    x = as_batched_x(x, posterior.x_shape).to(posterior._device)
    k_members = posterior.num_members
    lp_grid = posterior._grid_log_prior.double()
    lp_true = posterior._log_prior(theta).double()
    total = torch.zeros_like(taus)
    for i in range(theta.shape[0]):
        embs = posterior._embed(x[i : i + 1])
        scores, pooled = [], []
        for k, emb in enumerate(embs):
            ell_grid = posterior._unnormalised(posterior.grid, emb, k, posterior._grid_features[k],
                                               temperature=1.0).double()
            ell_true = posterior._unnormalised(theta[i : i + 1], emb, k, temperature=1.0).double()[0]
            unnorm = lp_grid[None] + taus[:, None] * (ell_grid - lp_grid)[None]  # (T, G)
            log_z = torch.logsumexp(unnorm, 1)
            scores.append(lp_true[i] + taus * (ell_true - lp_true[i]) - log_z - posterior.log_cell_volume)
            if posterior.combine == "log-mean" and k_members > 1:
                pooled.append(unnorm - log_z[:, None])  # member k's log cell masses at every τ
        stacked = torch.stack(scores)  # (K, T): each member's normalised log density at the truth
        if k_members == 1:
            total += stacked[0]
        elif posterior.combine == "mixture":
            total += torch.logsumexp(stacked, 0) - math.log(k_members)
        else:
            pool = torch.logsumexp(torch.stack(pooled).mean(0), 1)  # (T,)
            total += stacked.mean(0) - pool
    mean = (total / theta.shape[0]).to(torch.float32)
    best = float(taus[int(mean.argmax())])
    logger.info("temperature %.3g maximises the mean held-out log density (%.4f; at 1: %.4f)", best,
                float(mean.max()), float(_score_at_one(taus, mean)))
    return best, mean


def _score_at_one(taus: Tensor, scores: Tensor) -> float:
    i = int((taus - 1.0).abs().argmin())
    return float(scores[i])
