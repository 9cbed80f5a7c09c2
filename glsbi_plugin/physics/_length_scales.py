r"""Ground state, length scales, Hc2 and the type-I / 1.5 / II classification.

Ground state: amplitudes :math:`(u_1, u_2)` minimise
:math:`V(\rho_1,\rho_2) = \sum_a(\alpha_a\rho_a^2 + \tfrac12\beta_a\rho_a^4) - 2|\eta|\rho_1\rho_2
+ \nu\rho_1^2\rho_2^2` (phases locked at 0 for η > 0, at π for η < 0). Its gradient and Hessian
in the amplitudes, :func:`potential_gradient` and :func:`potential_hessian` (NumPy, batched), are
written once, in arithmetic shared with the jitted Newton solve of :func:`ground_state`; they take
the signed η of the lattice potential, and the ground state's callers pass :math:`|\eta|`.

Masses: photon :math:`m_A = e\,(2K_1u_1^2 + 2K_2u_2^2)^{1/2}`, :math:`\lambda = 1/m_A`; density modes
:math:`m_\pm^2` = eigenvalues of :math:`\mathrm{diag}(2K_a)^{-1}\,\mathrm{Hess}\,V(u_1,u_2)`,
:math:`\xi_\pm = \sqrt2/m_\pm`. Type-1.5 when :math:`m_- < m_A < m_+`, type-II when
:math:`m_A < m_-`, type-I when :math:`m_A > m_+` (Carlström, Babaev, Speight, PRB 83, 174509).

With the drag (mixed-gradient) coupling the kinetic matrix is
:math:`M = ((K_1, \nu_d/2), (\nu_d/2, K_2))`. About the phase-locked ground state
(:math:`s = \cos(\varphi_2 - \varphi_1) = \mathrm{sign}\,\eta`; at η = 0 the relative phase is free
and :math:`s = \mathrm{sign}\,\nu_d`, the branch of the larger stiffness, which screens best) the
amplitude modes see :math:`M_s = ((K_1, s\nu_d/2), (s\nu_d/2, K_2))`, so
:math:`m_\pm^2` solve the generalised eigenproblem :math:`\mathrm{Hess}\,V\,v = m^2\,2M_s\,v`, and the
photon mass is :math:`m_A = e\,(2K_1u_1^2 + 2K_2u_2^2 + 2s\nu_d u_1u_2)^{1/2}`.

Upper critical field: the largest B with :math:`(\alpha_1 + K_1B)(\alpha_2 + K_2B) = \eta^2`
(one component: :math:`H_{c2} = |\alpha|/K`); with drag, the lowest Landau level of both bands (the
same :math:`-D^2 = B` eigenfunction) is unstable while
:math:`\begin{pmatrix}\alpha_1 + K_1B & \nu_dB/2 - \eta\\ \nu_dB/2 - \eta & \alpha_2 + K_2B\end{pmatrix}`
has a negative eigenvalue, so :math:`H_{c2}` is the largest B with
:math:`(\alpha_1 + K_1B)(\alpha_2 + K_2B) = (\eta - \nu_dB/2)^2`. On the lattice the lowest Landau level sits at
:math:`\varepsilon(B) = B - B^2h^2/8 + O(h^4)` instead of B, so
:math:`H_{c2,lat} = (4/h^2)(1 - \sqrt{1 - H_{c2}h^2/2})`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from ._config import TDGLParams

Regime = Literal["type-I", "type-1.5", "type-II", "normal"]


def ground_state(params: TDGLParams, iterations: int = 60) -> jax.Array:
    r"""Ground-state amplitudes :math:`u_a \ge 0`, shape ``(..., components)`` (JAX, jit/vmap-safe).

    Damped Newton iteration on :math:`\nabla V = 0` started above the minimum, where V is
    convex, projected on :math:`\rho \ge 0`."""
    alpha = jnp.asarray(params.alpha)
    beta = jnp.asarray(params.beta)
    if alpha.shape[-1] == 1:
        return jnp.sqrt(jnp.maximum(-alpha, 0.0) / beta)
    eta = jnp.abs(jnp.asarray(params.eta))
    nu = jnp.asarray(params.nu)
    return _newton2(alpha[..., 0], alpha[..., 1], beta[..., 0], beta[..., 1], eta, nu, iterations)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _newton2(
    a1: jax.Array, a2: jax.Array, b1: jax.Array, b2: jax.Array, eta: jax.Array, nu: jax.Array, iterations: int
) -> jax.Array:
    """Two-band Newton solve of :func:`ground_state`; jitted at module level so that eager calls
    (every ``check_params``) reuse one compilation instead of re-tracing the scan (60-130 ms each)."""
    scale = jnp.abs(a1) + jnp.abs(a2) + eta + jnp.abs(nu) + 1e-12
    r1 = jnp.sqrt(2 * scale / b1)
    r2 = jnp.sqrt(2 * scale / b2)

    def newton(carry: tuple[jax.Array, jax.Array], _: None) -> tuple[tuple[jax.Array, jax.Array], None]:
        r1, r2 = carry
        g1, g2 = _two_band_gradient(r1, r2, a1, a2, b1, b2, eta, nu)
        h11, h22, h12 = _two_band_hessian(r1, r2, a1, a2, b1, b2, eta, nu)
        det = h11 * h22 - h12**2
        ok = (det > 0) & (h11 > 0)
        s1 = jnp.where(ok, (h22 * g1 - h12 * g2) / jnp.where(ok, det, 1.0), g1 / (jnp.abs(h11) + scale))
        s2 = jnp.where(ok, (h11 * g2 - h12 * g1) / jnp.where(ok, det, 1.0), g2 / (jnp.abs(h22) + scale))
        return (jnp.maximum(r1 - s1, 0.0), jnp.maximum(r2 - s2, 0.0)), None

    a1, a2, b1, b2, eta, nu, r1, r2 = jnp.broadcast_arrays(a1, a2, b1, b2, eta, nu, r1, r2)
    (r1, r2), _ = jax.lax.scan(newton, (r1, r2), None, length=iterations)
    return jnp.stack([r1, r2], axis=-1)


def _band_gradient(u: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> ArrayLike:
    r""":math:`\partial_u` of one band's :math:`\alpha u^2 + \tfrac12\beta u^4`. Like the three
    functions below, arithmetic only: it serves NumPy arrays, Python floats and JAX tracers alike."""
    return 2 * alpha * u + 2 * beta * u**3


def _band_curvature(u: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> ArrayLike:
    r""":math:`\partial_u^2` of one band's :math:`\alpha u^2 + \tfrac12\beta u^4`."""
    return 2 * alpha + 6 * beta * u**2


def _two_band_gradient(
    u1: ArrayLike,
    u2: ArrayLike,
    a1: ArrayLike,
    a2: ArrayLike,
    b1: ArrayLike,
    b2: ArrayLike,
    eta: ArrayLike,
    nu: ArrayLike,
) -> tuple[ArrayLike, ArrayLike]:
    r"""``(g1, g2)``, the gradient of the two-band potential
    :math:`V(u_1, u_2) = \sum_a(\alpha_a u_a^2 + \tfrac12\beta_a u_a^4) - 2\eta u_1u_2 + \nu u_1^2u_2^2`."""
    g1 = _band_gradient(u1, a1, b1) - 2 * eta * u2 + 2 * nu * u1 * u2**2
    g2 = _band_gradient(u2, a2, b2) - 2 * eta * u1 + 2 * nu * u2 * u1**2
    return g1, g2


def _two_band_hessian(
    u1: ArrayLike,
    u2: ArrayLike,
    a1: ArrayLike,
    a2: ArrayLike,
    b1: ArrayLike,
    b2: ArrayLike,
    eta: ArrayLike,
    nu: ArrayLike,
) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """``(h11, h22, h12)``, the Hessian entries of the potential of :func:`_two_band_gradient`."""
    h11 = _band_curvature(u1, a1, b1) + 2 * nu * u2**2
    h22 = _band_curvature(u2, a2, b2) + 2 * nu * u1**2
    h12 = -2 * eta + 4 * nu * u1 * u2
    return h11, h22, h12


def potential_gradient(
    u: ArrayLike, alpha: ArrayLike, beta: ArrayLike, eta: ArrayLike = 0.0, nu: ArrayLike = 0.0
) -> np.ndarray:
    r"""Gradient :math:`\partial V/\partial u_a` of the potential in real amplitudes, shape ``(..., C)``.

    :math:`V(u) = \sum_a(\alpha_a u_a^2 + \tfrac12\beta_a u_a^4) - 2\eta u_1u_2 + \nu u_1^2u_2^2` is
    the lattice potential density (``_lattice._potential_density``) at :math:`\psi_a = u_a`.
    ``u``, ``alpha``, ``beta`` have shape ``(..., C)`` with C = 1 or 2, ``eta`` and ``nu`` the
    batch shape ``(...)`` (ignored for C = 1); leading axes broadcast. NumPy, float64.

    The ground state locks the relative phase so that :math:`u_1u_2` has the sign of η; in
    amplitudes :math:`u_a \ge 0` its potential is this one at :math:`|\eta|`, which the callers pass.
    """
    u, alpha, beta, eta, nu = (np.asarray(x, np.float64) for x in (u, alpha, beta, eta, nu))
    if u.shape[-1] == 1:
        return _band_gradient(u, alpha, beta)
    g1, g2 = _two_band_gradient(*_split(u, alpha, beta), eta, nu)
    return np.stack(np.broadcast_arrays(g1, g2), axis=-1)


def potential_hessian(
    u: ArrayLike, alpha: ArrayLike, beta: ArrayLike, eta: ArrayLike = 0.0, nu: ArrayLike = 0.0
) -> np.ndarray:
    r"""Hessian :math:`\partial^2 V/\partial u_a\partial u_b` of the potential of
    :func:`potential_gradient` (same arguments), shape ``(..., C, C)``:

    .. math::
        H_{aa} = 2\alpha_a + 6\beta_a u_a^2 + 2\nu u_b^2, \qquad H_{12} = -2\eta + 4\nu u_1u_2

    (one band: :math:`2\alpha + 6\beta u^2`). Pass :math:`|\eta|` for the ground state's curvature.
    """
    u, alpha, beta, eta, nu = (np.asarray(x, np.float64) for x in (u, alpha, beta, eta, nu))
    if u.shape[-1] == 1:
        return _band_curvature(u, alpha, beta)[..., None]
    h11, h22, h12 = _two_band_hessian(*_split(u, alpha, beta), eta, nu)
    hess = np.empty(np.broadcast_shapes(np.shape(h11), np.shape(h22), np.shape(h12)) + (2, 2))
    hess[..., 0, 0], hess[..., 1, 1] = h11, h22
    hess[..., 0, 1] = hess[..., 1, 0] = h12
    return hess


def _split(u: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(u1, u2, a1, a2, b1, b2)``: the component axis unpacked for the two-band terms."""
    return u[..., 0], u[..., 1], alpha[..., 0], alpha[..., 1], beta[..., 0], beta[..., 1]


@dataclasses.dataclass(frozen=True)
class LengthScales:
    """Length scales and regime of one parameter set (plain floats).

    Attributes:
        u: Ground-state amplitudes :math:`u_a`.
        m_A: Photon mass; ``lam`` = 1/m_A is the penetration depth λ.
        m_minus, m_plus: Density-mode masses; ``xi_minus``, ``xi_plus`` = √2/m (ξ_- > ξ_+).
        hc2: Continuum upper critical field; ``hc2_lattice(h)`` gives the lattice value.
        weak_band_field: :math:`\\min_a|\\alpha_a|/K_a`, the field scale above which the weaker band
            vanishes (η = 0) or is only induced.
        regime: ``"type-I"``, ``"type-1.5"``, ``"type-II"`` or ``"normal"`` (no condensate).
    """

    u: tuple[float, ...]
    m_A: float
    m_minus: float
    m_plus: float
    hc2: float
    weak_band_field: float
    regime: Regime

    @property
    def lam(self) -> float:
        return 1.0 / self.m_A

    @property
    def xi_minus(self) -> float:
        return float(np.sqrt(2) / self.m_minus)

    @property
    def xi_plus(self) -> float:
        return float(np.sqrt(2) / self.m_plus)

    @property
    def kappa(self) -> float:
        """GL parameter :math:`\\kappa = \\lambda/\\xi_-` (1/√2 at the type-I/II boundary of one band)."""
        return float(self.lam / self.xi_minus)

    def hc2_lattice(self, h: float) -> float:
        """Lattice upper critical field for spacing ``h`` (module docstring)."""
        return hc2_lattice(self.hc2, h)

    def as_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d.update(lam=self.lam, xi_minus=self.xi_minus, xi_plus=self.xi_plus)
        return d


def hc2_lattice(hc2: float, h: float) -> float:
    r"""Field at which the lattice's lowest Landau level :math:`B - B^2h^2/8` equals ``hc2``."""
    x = hc2 * h**2 / 2
    if x >= 1:
        return float("inf")
    return float(4 / h**2 * (1 - np.sqrt(1 - x)))


def length_scales(params: TDGLParams) -> LengthScales:
    r"""λ, the two density-mode lengths, Hc2 and the regime of a single (unbatched) parameter set.

    Example:
        >>> from glsbi_plugin.physics import presets, length_scales
        >>> ls = length_scales(presets.type15(eta=0.0, field=0.05))
        >>> ls.regime, round(ls.lam, 3)
        ('type-1.5', 1.571)
    """
    K = np.asarray(params.K, np.float64)
    alpha = np.asarray(params.alpha, np.float64)
    beta = np.asarray(params.beta, np.float64)
    if K.ndim != 1:
        raise ValueError(f"length_scales takes one parameter set; K has shape {K.shape}, expected (components,)")
    e = float(params.e)
    eta = float(params.eta) if K.size == 2 else 0.0
    nu = float(params.nu) if K.size == 2 else 0.0
    drag = float(params.drag) if K.size == 2 and params.drag is not None else 0.0
    u = _polish(np.asarray(ground_state(params), np.float64), alpha, beta, eta, nu)
    hess = potential_hessian(u, alpha, beta, abs(eta), nu)
    if drag == 0.0:
        m_a = e * float(np.sqrt(np.sum(2 * K * u**2)))
        # eigenvalues of diag(2K)^-1 H equal those of the symmetric D^-1/2 H D^-1/2
        d = 1 / np.sqrt(2 * K)
        m2 = np.linalg.eigvalsh(d[:, None] * hess * d[None, :])
    else:
        s = float(np.sign(eta)) if eta != 0 else float(np.sign(drag))
        m_s = np.array([[K[0], s * drag / 2], [s * drag / 2, K[1]]])
        m_a = e * float(np.sqrt(max(2 * (K[0] * u[0] ** 2 + K[1] * u[1] ** 2 + s * drag * u[0] * u[1]), 0.0)))
        # H v = m² (2 M_s) v with 2 M_s = L Lᵀ (positive definite): eigenvalues of L⁻¹ H L⁻ᵀ
        low = np.linalg.cholesky(2 * m_s)
        inv = np.linalg.inv(low)
        m2 = np.linalg.eigvalsh(inv @ hess @ inv.T)
    m2 = np.clip(m2, 0.0, None)
    m_minus, m_plus = float(np.sqrt(m2[0])), float(np.sqrt(m2[-1]))
    hc2 = _hc2(K, alpha, eta, drag)
    weak = float(np.min(np.abs(alpha) / K))
    if m_a == 0:
        regime: Regime = "normal"
    elif m_a > m_plus:
        regime = "type-I"
    elif m_a > m_minus:
        regime = "type-1.5"
    else:
        regime = "type-II"
    return LengthScales(tuple(float(x) for x in u), m_a, m_minus, m_plus, hc2, weak, regime)


def _polish(u: np.ndarray, alpha: np.ndarray, beta: np.ndarray, eta: float, nu: float) -> np.ndarray:
    """Float64 Newton steps on the JAX estimate (exact to round-off): at most 20, stopping early only
    at a fixed point, where the rest would change nothing."""
    if u.size == 1:
        return u
    r = u.copy()
    e = abs(eta)
    for _ in range(20):
        # on scalars rather than through potential_hessian/potential_gradient (~3x cheaper a step)
        terms = (r[0], r[1], *alpha, *beta, e, nu)
        h11, h22, h12 = _two_band_hessian(*terms)
        hm = np.array([[h11, h12], [h12, h22]])
        if np.linalg.det(hm) <= 0 or np.all(r == 0):
            break
        new = np.maximum(r - np.linalg.solve(hm, np.array(_two_band_gradient(*terms))), 0.0)
        if np.array_equal(new, r):  # a fixed point: the remaining steps would repeat this one
            break
        r = new
    return r


def _hc2(K: np.ndarray, alpha: np.ndarray, eta: float, drag: float = 0.0) -> float:
    if K.size == 1:
        return float(max(-alpha[0], 0.0) / K[0])
    # (alpha1 + K1 B)(alpha2 + K2 B) - (eta - drag B/2)^2 = 0: a quadratic in B; the largest real root
    if drag == 0.0:
        a = K[0] * K[1]
        b = alpha[0] * K[1] + alpha[1] * K[0]
    else:
        a = K[0] * K[1] - drag**2 / 4
        b = alpha[0] * K[1] + alpha[1] * K[0] + eta * drag
    c = alpha[0] * alpha[1] - eta**2
    disc = b * b - 4 * a * c
    root = (-b + np.sqrt(max(disc, 0.0))) / (2 * a)
    return float(max(root, 0.0))
