r"""Gauge-invariant U–ψ discretisation: geometry, link variables, plaquette flux, energy, forces.

Sites :math:`r_{ij} = (ih, jh)` carry :math:`\psi_a`; bonds carry link angles
:math:`a^x_{ij} = \int_{r_{ij}}^{r_{i+1,j}} A\cdot dl` (likewise :math:`a^y`) and
:math:`U = e^{-ia}`. The plaquette flux is
:math:`\theta_{ij} = a^x_{ij} + a^y_{i+1,j} - a^x_{i,j+1} - a^y_{ij}` and :math:`B = \theta/h^2`.

Discrete energy (``free_energy``)

.. math::
    E = \sum_a K_a \sum_{\langle ij\rangle} w\,|U\psi_{a,j} - \psi_{a,i}|^2
      + h^2 \sum_{sites}\Big[\sum_a \alpha_a|\psi_a|^2 + \tfrac12\beta_a|\psi_a|^4
      - 2\eta\,\mathrm{Re}\,\psi_1^*\psi_2 + \nu|\psi_1|^2|\psi_2|^2\Big]
      + \nu_d \sum_{\langle ij\rangle} w\,\mathrm{Re}\big[(U\psi_{1,j} - \psi_{1,i})^*
        (U\psi_{2,j} - \psi_{2,i})\big]
      + \frac{1}{2e^2h^2}\sum_{plaq} m\,(\theta - \theta_{ref})^2

with link weights :math:`w` (0 on bonds that leave an open sample) and plaquette weights :math:`m`
(0 outside it). The two link terms are one quadratic form
:math:`\sum_{ab}M_{ab}\,w\,\mathrm{Re}[D_a^*D_b]`, :math:`D_a = U\psi_{a,j} - \psi_{a,i}`, with the
kinetic matrix :math:`M = ((K_1, \nu_d/2), (\nu_d/2, K_2))` (``_config.kinetic_matrix``); the drag
(mixed-gradient) term is present only when ``params.drag`` is not ``None``, so without it the
program is the one without the term, operation for operation. The equations of motion
(``forces``) are its exact gradient flow,

.. math::
    \Gamma_a\partial_t\psi_a = -h^{-2}\,\partial E/\partial\psi_a^*, \qquad
    \sigma\,\partial_t a = -\partial E/\partial a,

which reproduce Gropp et al. (J. Comput. Phys. 123, 254 (1996)) eqs. for the covariant Laplacian
and the link currents; ``tests/test_lattice.py`` checks them against ``jax.grad``.

Torus: the link angles are :math:`a = a_{bg} + a_{dyn}` with the magnetic-translation background
:math:`a^y_{bg,ij} = \phi i`, seam :math:`a^x_{bg}(n_x-1\to0, j) = -\phi n_x j`,
:math:`\phi = 2\pi N_\phi/(n_x n_y)`, and a periodic dynamic part. The seam makes the raw corner
plaquette carry :math:`\phi - 2\pi N_\phi`, invisible to :math:`U`; every plaquette therefore uses
:math:`\theta = \phi + \theta[a_{dyn}]`. Open axes: no background, :math:`\theta = \theta[a]`,
and :math:`\theta_{ref} = H h^2` (the outside plaquettes held at the applied field).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._config import TDGLConfig, TDGLParams, flux_quanta

X, Y = -2, -1  # lattice axes of (…, nx, ny) arrays


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
    r"""Solver state (a pytree).

    Attributes:
        psi: Order parameters :math:`\psi_a`, complex, shape ``(components, nx, ny)``.
        a_x: Dynamic link angles :math:`a^x_{ij}` (bond ij → i+1,j), shape ``(nx, ny)``;
            on the torus the background :math:`a_{bg}` is not included.
        a_y: Dynamic link angles :math:`a^y_{ij}` (bond ij → i,j+1), shape ``(nx, ny)``.
    """

    psi: jax.Array
    a_x: jax.Array
    a_y: jax.Array


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Static masks of a grid (numpy, built once per config).

    Attributes:
        w_x, w_y: 1 on bonds inside the sample, 0 on bonds that leave it, shape ``(nx, ny)``.
        m_p: 1 on plaquettes inside the sample, shape ``(nx, ny)``.
        n_nb: number of bonds at each site (4 on a torus).
        seam_j: ``j`` index pattern of the torus seam (row ``nx-1``), zeros elsewhere.
        row_i: ``i`` index of each site, for the background :math:`a^y_{bg} = \\phi i`.
    """

    w_x: np.ndarray
    w_y: np.ndarray
    m_p: np.ndarray
    n_nb: np.ndarray
    seam_j: np.ndarray
    row_i: np.ndarray


def geometry(cfg: TDGLConfig) -> Geometry:
    """Masks and index patterns for ``cfg`` (pure numpy; safe to call at trace time)."""
    nx, ny = cfg.shape
    bx, by = cfg.axes_boundary
    w_x = np.ones((nx, ny))
    w_y = np.ones((nx, ny))
    m_p = np.ones((nx, ny))
    if bx == "open":
        w_x[-1, :] = 0
        m_p[-1, :] = 0
    if by == "open":
        w_y[:, -1] = 0
        m_p[:, -1] = 0
    n_nb = w_x + np.roll(w_x, 1, 0) + w_y + np.roll(w_y, 1, 1)
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    seam_j = np.where(i == nx - 1, j, 0)
    return Geometry(w_x, w_y, m_p, n_nb, seam_j.astype(np.int64), i.astype(np.float64))


def background(params: TDGLParams, cfg: TDGLConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Background link angles and reference plaquette flux.

    Returns:
        ``(a_x_bg, a_y_bg, theta_ref)``. On the torus, the magnetic-translation gauge with
        :math:`N_\phi` quanta (seam angle reduced mod :math:`2\pi` with integer arithmetic, so it
        is exact in float32) and :math:`\theta_{ref} = \phi`; otherwise zeros and
        :math:`\theta_{ref} = H h^2`.
    """
    dt = cfg.real_dtype
    nx, ny = cfg.shape
    g = geometry(cfg)
    if not cfg.torus:
        zero = jnp.zeros((), dt)
        return zero, zero, (jnp.asarray(params.field) * cfg.h**2).astype(dt)
    n_phi = flux_quanta(params.field, cfg).astype(jnp.int32)
    phi = (2 * jnp.pi * n_phi / (nx * ny)).astype(dt)
    seam = jnp.mod(n_phi * jnp.asarray(g.seam_j, jnp.int32), ny)
    a_x_bg = (-2 * jnp.pi / ny) * seam.astype(dt)
    a_y_bg = phi * jnp.asarray(g.row_i, dt)
    return a_x_bg, a_y_bg, phi


def initial_links(params: TDGLParams, cfg: TDGLConfig) -> tuple[jax.Array, jax.Array]:
    r"""Dynamic link angles of a uniform field: zero on the torus (the background carries B);
    :math:`a^y = Hh^2 i` (x open) or :math:`a^x = -Hh^2 j` (x periodic, y open)."""
    nx, ny = cfg.shape
    dt = cfg.real_dtype
    zeros = jnp.zeros((nx, ny), dt)
    if cfg.torus:
        return zeros, zeros
    b = (jnp.asarray(params.field) * cfg.h**2).astype(dt)
    i, j = jnp.meshgrid(jnp.arange(nx, dtype=dt), jnp.arange(ny, dtype=dt), indexing="ij")
    if cfg.axes_boundary[0] == "open":
        return zeros, b * i
    return -b * j, zeros


def _curl(a_x: jax.Array, a_y: jax.Array) -> jax.Array:
    r""":math:`\theta_{ij} = a^x_{ij} + a^y_{i+1,j} - a^x_{i,j+1} - a^y_{ij}` (periodic indexing)."""
    return a_x + jnp.roll(a_y, -1, X) - jnp.roll(a_x, -1, Y) - a_y


def sincos(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""``(sin x, cos x)``. In float32: reduction to :math:`[-\pi/2, \pi/2]` and Taylor polynomials
    of degree 11/10 (error < 1e-6, ~10x cheaper than XLA's CPU ``sin``/``cos``); float64: ``jnp``."""
    if x.dtype != jnp.float32:
        return jnp.sin(x), jnp.cos(x)
    r = x - jnp.round(x * np.float32(1 / (2 * np.pi))) * np.float32(2 * np.pi)  # [-π, π]
    fold = jnp.abs(r) > np.float32(np.pi / 2)  # sin(π - r) = sin r, cos(π - r) = -cos r
    r = jnp.where(fold, jnp.sign(r) * np.float32(np.pi) - r, r)
    z = r * r
    s = r * (1 + z * (-1 / 6 + z * (1 / 120 + z * (-1 / 5040 + z * (1 / 362880 + z * (-1 / 39916800))))))
    c = 1 + z * (-1 / 2 + z * (1 / 24 + z * (-1 / 720 + z * (1 / 40320 + z * (-1 / 3628800)))))
    return s, jnp.where(fold, -c, c)


def link_variables(state: State, params: TDGLParams, cfg: TDGLConfig) -> tuple[jax.Array, jax.Array]:
    """Masked link variables :math:`U = w\\,e^{-i(a_{bg}+a)}`, shape ``(nx, ny)`` each."""
    g = geometry(cfg)
    a_x_bg, a_y_bg, _ = background(params, cfg)
    s_x, c_x = sincos(state.a_x + a_x_bg)
    s_y, c_y = sincos(state.a_y + a_y_bg)
    u_x = jax.lax.complex(c_x, -s_x) * g.w_x.astype(c_x.dtype)
    u_y = jax.lax.complex(c_y, -s_y) * g.w_y.astype(c_y.dtype)
    return u_x, u_y


def plaquette_flux(state: State, params: TDGLParams, cfg: TDGLConfig) -> jax.Array:
    r"""Physical plaquette flux :math:`\theta` (torus: :math:`\phi + \theta[a_{dyn}]`), ``(nx, ny)``.

    Plaquettes outside an open sample are set to :math:`Hh^2`, the applied field there."""
    g = geometry(cfg)
    _, _, th_ref = background(params, cfg)
    th = _curl(state.a_x, state.a_y)
    if cfg.torus:
        return th + th_ref
    m = g.m_p.astype(th.dtype)
    return m * th + (1 - m) * th_ref


def _potential_density(psi: jax.Array, params: TDGLParams, cfg: TDGLConfig) -> jax.Array:
    rho = jnp.real(psi) ** 2 + jnp.imag(psi) ** 2
    c = (slice(None),) + (None,) * 2
    v = jnp.sum(params.alpha[c] * rho + 0.5 * params.beta[c] * rho**2, axis=0)
    if cfg.components == 2:
        v = v - 2 * params.eta * jnp.real(jnp.conj(psi[0]) * psi[1]) + params.nu * rho[0] * rho[1]
    return v


def free_energy(state: State, params: TDGLParams, cfg: TDGLConfig) -> jax.Array:
    """Discrete free energy :math:`E` of the module docstring (a scalar)."""
    g = geometry(cfg)
    h2 = cfg.h**2
    u_x, u_y = link_variables(state, params, cfg)
    psi = state.psi
    dx = u_x * jnp.roll(psi, -1, X) - psi
    dy = u_y * jnp.roll(psi, -1, Y) - psi
    k = params.K[:, None, None]
    kin = jnp.sum(k * (g.w_x * jnp.abs(dx) ** 2 + g.w_y * jnp.abs(dy) ** 2))
    if _drag_on(params, cfg):
        cross = g.w_x * jnp.real(jnp.conj(dx[0]) * dx[1]) + g.w_y * jnp.real(jnp.conj(dy[0]) * dy[1])
        kin = kin + params.drag * jnp.sum(cross)
    pot = h2 * jnp.sum(_potential_density(psi, params, cfg))
    _, _, th_ref = background(params, cfg)
    th = _curl(state.a_x, state.a_y)
    dev = th if cfg.torus else th - th_ref
    mag = jnp.sum(g.m_p * dev**2) / (2 * params.e**2 * h2)
    return kin + pot + mag


def forces(
    state: State, params: TDGLParams, cfg: TDGLConfig, links: tuple[jax.Array, jax.Array] | None = None
) -> State:
    r"""Right-hand sides of the TDGL equations (before dividing by :math:`\Gamma_a`, :math:`\sigma`).

    .. math::
        -h^{-2}\partial E/\partial\psi_a^* = K_a\Delta_U\psi_a + \tfrac12\nu_d\Delta_U\psi_b
            - \alpha_a\psi_a - \beta_a|\psi_a|^2\psi_a + \eta\psi_b - \nu|\psi_b|^2\psi_a

        -\partial E/\partial a^x_{ij} = I^x_{ij} - (\tilde\theta_{ij} - \tilde\theta_{i,j-1})/(e^2h^2)

        -\partial E/\partial a^y_{ij} = I^y_{ij} + (\tilde\theta_{ij} - \tilde\theta_{i-1,j})/(e^2h^2)

    with the link supercurrents of :func:`link_currents`,
    :math:`I^x_{ij} = \sum_{ab} 2M_{ab}\,\mathrm{Im}(\psi^*_{a,ij}U^x_{ij}\psi_{b,i+1,j})`
    (:math:`M` the kinetic matrix: the drag adds
    :math:`\nu_d[\mathrm{Im}(\psi_1^*U\psi_2) + \mathrm{Im}(\psi_2^*U\psi_1)]`), likewise :math:`I^y`,

    with :math:`\tilde\theta = m(\theta-\theta_{ref})` and the covariant Laplacian
    :math:`h^2\Delta_U\psi_{ij} = U^x_{ij}\psi_{i+1,j} + U^{x*}_{i-1,j}\psi_{i-1,j}
    + U^y_{ij}\psi_{i,j+1} + U^{y*}_{i,j-1}\psi_{i,j-1} - n_{nb}\psi_{ij}`.

    Args:
        links: ``link_variables(state, params, cfg)`` if already computed. The time stepper
            carries them from one step to the next: recomputed inside the step, XLA's fusion
            would evaluate the sine and cosine once per consumer (measured 6x slower).

    Returns:
        A :class:`State` whose fields hold the forces (``a_x``/``a_y`` are zero in frozen gauge).
    """
    g = geometry(cfg)
    h2 = cfg.h**2
    rdt = cfg.real_dtype
    psi = state.psi
    u_x, u_y = link_variables(state, params, cfg) if links is None else links
    # with drag the hops carry φ = Mψ (M the kinetic matrix): Σ_b M_ab Δ_U ψ_b = Δ_U φ_a and
    # Σ_ab 2M_ab Im(ψ_a* U ψ_b) = Σ_a 2 Im(ψ_a* U φ_a), one Laplacian per band as without drag
    # (mixing the two Laplacians afterwards ran the SK-ROCK stages ~7x slower under XLA)
    drag = _drag_on(params, cfg)
    src = _kinetic_mix(psi, params) if drag else psi
    fx = u_x * jnp.roll(src, -1, X)  # U^x_ij psi_{i+1,j}
    fy = u_y * jnp.roll(src, -1, Y)
    bx = jnp.roll(jnp.conj(u_x) * src, 1, X)  # U^x*_{i-1,j} psi_{i-1,j}
    by = jnp.roll(jnp.conj(u_y) * src, 1, Y)
    # a uniform neighbour count (the torus) as a scalar: as an array, XLA keeps it a runtime
    # operand of the fused kernel inside nested loops (measured 3x slower SK-ROCK stages)
    n_nb = float(g.n_nb.flat[0]) if np.all(g.n_nb == g.n_nb.flat[0]) else g.n_nb.astype(rdt)
    lap = (fx + bx + fy + by - n_nb * src) / h2
    c = (slice(None), None, None)
    rho = jnp.real(psi) ** 2 + jnp.imag(psi) ** 2
    d_psi = (lap if drag else params.K[c] * lap) - (params.alpha[c] + params.beta[c] * rho) * psi
    if cfg.components == 2:
        d_psi = d_psi + params.eta * psi[::-1] - params.nu * rho[::-1] * psi
    if cfg.gauge == "frozen":
        zero = jnp.zeros_like(state.a_x)
        return State(d_psi, zero, zero)
    j_x, j_y = _currents(psi, fx, fy, params, cfg)
    _, _, th_ref = background(params, cfg)
    th = _curl(state.a_x, state.a_y)
    dev = th if cfg.torus else g.m_p.astype(rdt) * (th - th_ref)
    dev = dev / (params.e**2 * h2)
    d_ax = j_x - (dev - jnp.roll(dev, 1, Y))
    d_ay = j_y + (dev - jnp.roll(dev, 1, X))
    if not cfg.torus:
        d_ax = d_ax * g.w_x.astype(rdt)
        d_ay = d_ay * g.w_y.astype(rdt)
    return State(d_psi, d_ax, d_ay)


def _drag_on(params: TDGLParams, cfg: TDGLConfig) -> bool:
    """Whether the mixed-gradient term is in the program (a Python decision at trace time)."""
    return cfg.components == 2 and params.drag is not None


def _kinetic_mix(psi: jax.Array, params: TDGLParams) -> jax.Array:
    r""":math:`\varphi_a = \sum_b M_{ab}\psi_b = K_a\psi_a + \tfrac12\nu_d\psi_b` (two bands, with drag)."""
    return params.K[:, None, None] * psi + (0.5 * params.drag) * psi[::-1]


def _currents(
    psi: jax.Array, fx: jax.Array, fy: jax.Array, params: TDGLParams, cfg: TDGLConfig
) -> tuple[jax.Array, jax.Array]:
    """Link supercurrents from ψ and the forward hops ``fx = U^x s_{i+1,j}``, ``fy`` of
    ``s = ψ`` (no drag) or ``s = Mψ`` (drag; :func:`_kinetic_mix`), see :func:`link_currents`;
    shared by :func:`forces` and :func:`link_currents`."""
    if _drag_on(params, cfg):
        return jnp.sum(2 * jnp.imag(jnp.conj(psi) * fx), axis=0), jnp.sum(2 * jnp.imag(jnp.conj(psi) * fy), axis=0)
    two_k = 2 * params.K[:, None, None]
    j_x = jnp.sum(two_k * jnp.imag(jnp.conj(psi) * fx), axis=0)
    j_y = jnp.sum(two_k * jnp.imag(jnp.conj(psi) * fy), axis=0)
    return j_x, j_y


def link_currents(state: State, params: TDGLParams, cfg: TDGLConfig) -> tuple[jax.Array, jax.Array]:
    r"""Supercurrents on the links, :math:`I = -\partial E_{kin}/\partial a`, shape ``(nx, ny)`` each:

    .. math::
        I^x_{ij} = \sum_{ab} 2M_{ab}\,\mathrm{Im}(\psi^*_{a,ij}\,U^x_{ij}\,\psi_{b,i+1,j})
        = \sum_a 2K_a\,\mathrm{Im}(\psi^*_{a,ij}U^x_{ij}\psi_{a,i+1,j})
          + \nu_d\,\mathrm{Im}(\psi^*_{1,ij}U^x_{ij}\psi_{2,i+1,j} + \psi^*_{2,ij}U^x_{ij}\psi_{1,i+1,j})

    (likewise :math:`I^y`; zero on bonds that leave an open sample). The continuum current density
    is :math:`J = I/h`; in a stationary state :math:`I` balances the magnetic term (Ampère's law,
    :func:`forces`)."""
    u_x, u_y = link_variables(state, params, cfg)
    psi = state.psi
    src = _kinetic_mix(psi, params) if _drag_on(params, cfg) else psi
    return _currents(psi, u_x * jnp.roll(src, -1, X), u_y * jnp.roll(src, -1, Y), params, cfg)


def gauge_transform(state: State, chi: jax.Array) -> State:
    r"""Apply :math:`\psi\to e^{i\chi}\psi`, :math:`a^x_{ij}\to a^x_{ij} + \chi_{i+1,j} - \chi_{ij}`
    (likewise :math:`a^y`) for a site field :math:`\chi` of shape ``(nx, ny)``.

    On the torus :math:`\chi` must be periodic; on open axes the wrapped bonds are outside the
    sample and carry no energy. Energy, :math:`|\psi|`, :math:`B` and windings are invariant."""
    psi = state.psi * jnp.exp(1j * chi).astype(state.psi.dtype)
    return State(
        psi,
        state.a_x + jnp.roll(chi, -1, X) - chi,
        state.a_y + jnp.roll(chi, -1, Y) - chi,
    )
