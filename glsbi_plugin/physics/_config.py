r"""Static numerics (:class:`TDGLConfig`) and traced physics (:class:`TDGLParams`).

The split follows pyTDGL (Device vs SolverOptions) and diffrax (``args`` vs solver): everything
that changes the compiled program (grid, spacing, time step, boundary, gauge mode, dtype) is a
frozen, hashable dataclass passed as a static argument; everything a prior may sample is a pytree
of arrays that ``jax.vmap`` can batch without recompiling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Boundary = Literal["periodic", "open"]
Gauge = Literal["dynamic", "frozen"]
DType = Literal["float32", "float64"]
Noise = Literal["hash", "threefry"]
Scheme = Literal["euler", "skrock"]

_BOUNDARIES = ("periodic", "open")
_GAUGES = ("dynamic", "frozen")
_DTYPES = ("float32", "float64")
_NOISES = ("hash", "threefry")
_SCHEMES = ("euler", "skrock")
MAX_STAGES = 64


class TDGLConfigError(ValueError):
    """A numerical option or a parameter set the solver cannot run."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TDGLConfig:
    r"""Numerical options of the TDGL solver (static, hashable, checked at construction).

    The defaults are the solver's reference (explicit Euler at its stable step), not the forward
    model: :func:`glsbi_plugin.physics.presets.forward_model` gives that (SK-ROCK, t = 200).

    Args:
        shape: Grid size ``(nx, ny)`` in sites; each at least 4.
        h: Lattice spacing :math:`h` (length units of the GL equations, :math:`\xi`-scale).
        dt: Time step. Explicit Euler is stable only below
            :math:`\Gamma_a h^2/(4K_a)` and (dynamic gauge) :math:`\sigma e^2 h^2/4`, lowered by the
            potential's curvature (:func:`stability_bounds`); SK-ROCK with ``stages`` = s stretches
            the bound by :math:`L_s/2\approx 0.97 s^2`; checked in :func:`check_params`.
        steps: Number of time steps of the quench (``steps * dt`` is the snapshot time).
        scheme: ``"euler"`` (Euler–Maruyama, one force evaluation per step) or ``"skrock"``
            (Abdulle–Almuslimani–Vilmart's stabilised Runge–Kutta–Chebyshev method for stiff
            Langevin equations, weak order 1: ``stages`` force evaluations and one noise draw per
            step, stable up to :math:`\approx 0.97 s^2` times the Euler step; see ``_solver`` and ``_skrock``).
        stages: Stages s of ``"skrock"`` (1 to 64); must be 1 for ``"euler"``.
        components: 1 (single-band GL, for textbook checks) or 2 (two-band).
        boundary: ``"periodic"`` (a torus carrying an integer number of flux quanta),
            ``"open"`` (a sample in applied field :math:`H`), or a pair ``(bx, by)`` per axis,
            e.g. ``("open", "periodic")`` for a slab infinite along y.
        gauge: ``"dynamic"`` evolves the vector potential (finite :math:`\lambda`);
            ``"frozen"`` keeps it at the applied field (:math:`\lambda=\infty`, the seed's model).
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``jax_enable_x64``).
        thermal: Draw Langevin noise each step (amplitude set by the traced temperature ``T``).
            ``False`` removes the random-number cost for deterministic ``T = 0`` runs.
        noise: ``"hash"`` (default): counter-based uniform increments of unit variance from a
            murmur3-style integer hash of (key, step, site), ~30x cheaper than ``"threefry"``:
            Gaussian increments from ``jax.random.normal``. Both give Euler–Maruyama of weak
            order 1 with the same second moments (the fluctuation–dissipation tests run on both).
        init_noise: Amplitude of the complex Gaussian seed of the normal state, relative to 1.
    """

    shape: tuple[int, int] = (64, 64)
    h: float = 0.5
    dt: float = 0.08
    steps: int = 2500
    components: int = 2
    boundary: Boundary | tuple[Boundary, Boundary] = "periodic"
    gauge: Gauge = "dynamic"
    dtype: DType = "float32"
    thermal: bool = True
    noise: Noise = "hash"
    init_noise: float = 0.01
    scheme: Scheme = "euler"
    stages: int = 1

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) for n in shape):
            raise TDGLConfigError(f"shape must be two integers (nx, ny), got {self.shape!r}")
        if min(shape) < 4:
            raise TDGLConfigError(f"shape={shape}: each side must be >= 4 sites")
        object.__setattr__(self, "shape", (int(shape[0]), int(shape[1])))
        if not (math.isfinite(self.h) and self.h > 0):
            raise TDGLConfigError(f"h={self.h!r}: the lattice spacing must be finite and > 0")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise TDGLConfigError(f"dt={self.dt!r}: the time step must be finite and > 0")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise TDGLConfigError(f"steps={self.steps!r}: must be an integer >= 0")
        if not isinstance(self.thermal, (bool, np.bool_)):
            raise TDGLConfigError(f"thermal={self.thermal!r}: must be True or False")
        if self.components not in (1, 2):
            raise TDGLConfigError(f"components={self.components!r}: allowed values are 1 and 2")
        bnd = (self.boundary, self.boundary) if isinstance(self.boundary, str) else tuple(self.boundary)
        if len(bnd) != 2 or any(b not in _BOUNDARIES for b in bnd):
            raise TDGLConfigError(
                f"boundary={self.boundary!r}: allowed are {_BOUNDARIES} or a pair of them per axis"
            )
        object.__setattr__(self, "boundary", bnd[0] if bnd[0] == bnd[1] else bnd)
        if self.gauge not in _GAUGES:
            raise TDGLConfigError(f"gauge={self.gauge!r}: allowed values are {_GAUGES}")
        if self.dtype not in _DTYPES:
            raise TDGLConfigError(f"dtype={self.dtype!r}: allowed values are {_DTYPES}")
        if self.noise not in _NOISES:
            raise TDGLConfigError(f"noise={self.noise!r}: allowed values are {_NOISES}")
        if not (math.isfinite(self.init_noise) and self.init_noise > 0):
            raise TDGLConfigError(f"init_noise={self.init_noise!r}: must be finite and > 0")
        if self.scheme not in _SCHEMES:
            raise TDGLConfigError(f"scheme={self.scheme!r}: allowed values are {_SCHEMES}")
        if isinstance(self.stages, bool) or not isinstance(self.stages, (int, np.integer)) or not (
            1 <= self.stages <= MAX_STAGES
        ):
            raise TDGLConfigError(f"stages={self.stages!r}: must be an integer in [1, {MAX_STAGES}]")
        object.__setattr__(self, "stages", int(self.stages))
        if self.scheme == "euler" and self.stages != 1:
            raise TDGLConfigError(
                f"stages={self.stages}: scheme='euler' has one stage; use scheme='skrock' for s > 1"
            )

    @property
    def axes_boundary(self) -> tuple[Boundary, Boundary]:
        """Boundary per axis ``(x, y)``."""
        b = self.boundary
        return (b, b) if isinstance(b, str) else b  # type: ignore[return-value]

    @property
    def torus(self) -> bool:
        """True when both axes are periodic (flux is quantised, Nφ = round(B Lx Ly / 2π))."""
        return self.axes_boundary == ("periodic", "periodic")

    @property
    def real_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def complex_dtype(self) -> jnp.dtype:
        return jnp.dtype("complex64" if self.dtype == "float32" else "complex128")

    @property
    def t_final(self) -> float:
        """Snapshot time ``steps * dt``."""
        return self.steps * self.dt

    def replace(self, **changes: object) -> TDGLConfig:
        """A copy with some fields changed (re-checked)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary; ``TDGLConfig(**d)`` rebuilds the same config."""
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        if not isinstance(self.boundary, str):
            d["boundary"] = list(self.boundary)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TDGLConfig:
        d = dict(d)
        d["shape"] = tuple(d["shape"])  # type: ignore[arg-type]
        if not isinstance(d.get("boundary", "periodic"), str):
            d["boundary"] = tuple(d["boundary"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


SCALAR_FIELDS = ("eta", "nu", "e", "sigma", "T", "field", "drag")
COMPONENT_FIELDS = ("K", "alpha", "beta", "gamma")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TDGLParams:
    r"""Physical parameters (a pytree of arrays; batch them with a leading axis for ``jax.vmap``).

    Free energy (dimensionless, flux quantum :math:`2\pi`):

    .. math::
        F = \int \sum_a \big[K_a|(\nabla - iA)\psi_a|^2 + \alpha_a|\psi_a|^2
            + \tfrac12\beta_a|\psi_a|^4\big] - \eta(\psi_1^*\psi_2 + c.c.)
            + \nu|\psi_1|^2|\psi_2|^2 + \nu_d\,\mathrm{Re}\big[(D\psi_1)^*\cdot D\psi_2\big]
            + \frac{1}{2e^2}(\nabla\times A - H)^2

    with :math:`D = \nabla - iA`. The gradient terms form the kinetic matrix
    :math:`\sum_{ab} M_{ab}\,\mathrm{Re}[(D\psi_a)^*\cdot D\psi_b]`,
    :math:`M = \begin{pmatrix}K_1 & \nu_d/2\\ \nu_d/2 & K_2\end{pmatrix}`, which must be positive
    definite: :math:`|\nu_d| < 2\sqrt{K_1K_2}` (:func:`~glsbi_plugin.physics.check_params`).

    Attributes:
        K: Gradient coefficients :math:`K_a`, shape ``(..., components)``.
        alpha: :math:`\alpha_a` (negative: the band is superconducting on its own).
        beta: :math:`\beta_a > 0`.
        gamma: Order-parameter relaxation constants :math:`\Gamma_a` (do not change equilibria).
        eta: Josephson coupling :math:`\eta` (:math:`\eta_{CBS} = 2\eta`); ignored for 1 component.
        nu: Density–density coupling :math:`\nu`; ignored for 1 component.
        e: Charge :math:`e` (sets :math:`\lambda`); the magnetic energy is :math:`(B-H)^2/2e^2`.
        sigma: Normal conductivity :math:`\sigma` of the :math:`\partial_t A` equation.
        T: Temperature of the Langevin noise (0: deterministic relaxation).
        field: Applied field :math:`H` (open) or mean induction :math:`B` (torus, rounded to
            :math:`N_\phi = \mathrm{round}(B L_x L_y / 2\pi)` flux quanta).
        drag: Mixed-gradient (drag, Andreev–Bashkin) coupling :math:`\nu_d`, or ``None`` (the
            default): no drag term at all. A concrete zero is stored as ``None``, so ``drag = 0``
            runs the program without the term (bit-identical to no drag) and leaves
            :meth:`to_dict` (and every hash of it) unchanged; a traced value (e.g. a θ column under
            ``jax.vmap``) always runs the term. Two components only.
    """

    K: jax.Array
    alpha: jax.Array
    beta: jax.Array
    gamma: jax.Array
    eta: jax.Array
    nu: jax.Array
    e: jax.Array
    sigma: jax.Array
    T: jax.Array
    field: jax.Array
    drag: jax.Array | None = None

    def __post_init__(self) -> None:
        # a concrete zero drag is no drag: the same pytree (and program) as without it. Tracers
        # (jit/vmap) are left alone; so are concrete non-zero values.
        d = self.drag
        if d is not None and not isinstance(d, jax.core.Tracer) and not np.any(np.asarray(d)):
            object.__setattr__(self, "drag", None)

    @property
    def has_drag(self) -> bool:
        """True when the mixed-gradient term is part of the model (``drag`` is not ``None``)."""
        return self.drag is not None

    @property
    def components(self) -> int:
        return int(np.shape(self.K)[-1])

    def replace(self, **changes: object) -> TDGLParams:
        """A copy with fields changed. Per-component names ``K1``, ``alpha2``, ... set one entry."""
        plain: dict[str, object] = {}
        for name, value in changes.items():
            if name in SCALAR_FIELDS or name in COMPONENT_FIELDS:
                plain[name] = value
                continue
            base, idx = _split_component_name(name)
            arr = jnp.asarray(plain.get(base, getattr(self, base)))
            plain[base] = arr.at[..., idx].set(value)
        return dataclasses.replace(self, **plain)  # type: ignore[arg-type]

    def get(self, name: str) -> jax.Array:
        """Value of a scalar field or a per-component entry such as ``"alpha2"`` (``"drag"``
        without the term: zeros of ``eta``'s shape)."""
        if name == "drag" and self.drag is None:
            return jnp.zeros_like(jnp.asarray(self.eta))
        if name in SCALAR_FIELDS or name in COMPONENT_FIELDS:
            return getattr(self, name)
        base, idx = _split_component_name(name)
        return jnp.asarray(getattr(self, base))[..., idx]

    def astype(self, dtype: jnp.dtype | str) -> TDGLParams:
        """All leaves as arrays of ``dtype``."""
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype=dtype), self)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary of plain numbers/lists; ``"drag"`` only when the term is present
        (so parameter sets without drag describe, and hash, as before it existed)."""
        return {
            f.name: np.asarray(getattr(self, f.name)).tolist()
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TDGLParams:
        """Inverse of :meth:`to_dict` (a missing ``"drag"`` is no drag)."""
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})  # type: ignore[arg-type]


PARAM_NAMES = SCALAR_FIELDS + tuple(f"{b}{i}" for b in COMPONENT_FIELDS for i in (1, 2))


def kinetic_matrix(params: TDGLParams) -> np.ndarray:
    r"""The kinetic matrix :math:`M_{ab}` of :math:`\sum_{ab}M_{ab}\mathrm{Re}[(D\psi_a)^*\cdot D\psi_b]`,
    shape ``(..., C, C)`` (NumPy, float64; eager):

    .. math::
        M = \begin{pmatrix}K_1 & \nu_d/2\\ \nu_d/2 & K_2\end{pmatrix}

    (:math:`\mathrm{diag}(K)` without drag or with one component)."""
    K = np.asarray(params.K, np.float64)
    C = K.shape[-1]
    m = np.zeros(K.shape + (C,))
    for a in range(C):
        m[..., a, a] = K[..., a]
    if C == 2 and params.drag is not None:
        half = 0.5 * np.asarray(params.drag, np.float64)
        m[..., 0, 1] = m[..., 1, 0] = half
    return m


def drag_bound(K: np.ndarray) -> np.ndarray:
    r"""The largest :math:`|\nu_d|` with a positive-definite kinetic matrix: :math:`2\sqrt{K_1K_2}`."""
    K = np.asarray(K, np.float64)
    return 2 * np.sqrt(K[..., 0] * K[..., 1])


def _split_component_name(name: str) -> tuple[str, int]:
    for base in COMPONENT_FIELDS:
        if name.startswith(base) and name[len(base) :] in ("1", "2"):
            return base, int(name[len(base) :]) - 1
    raise KeyError(f"unknown parameter name {name!r}; known names: {', '.join(PARAM_NAMES)}")


def flux_quanta(field: jax.Array | float, cfg: TDGLConfig) -> jax.Array:
    r"""Number of flux quanta on the torus, :math:`N_\phi = \mathrm{round}(B\,L_x L_y / 2\pi)`."""
    nx, ny = cfg.shape
    area = nx * ny * cfg.h**2
    return jnp.round(jnp.asarray(field) * area / (2 * jnp.pi))
