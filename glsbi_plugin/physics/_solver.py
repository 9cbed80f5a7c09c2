r"""Time stepping: field-cooled quench with Langevin noise in ``jax.lax.scan``, by explicit Euler
(``TDGLConfig()``'s default) or SK-ROCK (the forward model's, below).

One step (gauge :math:`\phi = 0`):

.. math::
    \psi_a \leftarrow \psi_a + \frac{dt}{\Gamma_a} F_{\psi_a} + \sqrt{\frac{T\,dt}{\Gamma_a h^2}}\,
        (\xi_r + i\xi_i), \qquad
    a \leftarrow a + \frac{dt}{\sigma} F_a + \sqrt{\frac{2T\,dt}{\sigma}}\,\xi,

with :math:`F = ` :func:`forces`, :math:`\xi\sim N(0,1)`. The noise amplitudes follow from the
discrete fluctuation–dissipation relation of the energy :math:`E` (``_lattice``): with
:math:`\psi = u + iv`, :math:`\Gamma\dot u = -\partial E/\partial u / (2h^2)`, so the stationary
law is :math:`e^{-E/T}` (``tests/test_solver.py`` checks equipartition).

The protocol around these steps (field-cooled quench: the normal state :math:`\psi \approx 0`
seeded with complex noise of amplitude ``cfg.init_noise``, the vector potential carrying the
field, α at its final value, then ``cfg.steps`` steps at temperature T) is the forward model's, in
``_forward``. The snapshot time ``steps*dt`` is part of the forward model (type-1.5 clusters keep
coarsening).

SK-ROCK (``cfg.scheme = "skrock"``, Abdulle, Almuslimani & Vilmart, SIAM/ASA J. Uncertainty
Quantif. 6, 937 (2018)): for :math:`dX = f(X)\,dt + g\,dW` with the drift :math:`f` above
(:math:`F_\psi/\Gamma`, :math:`F_a/\sigma`) and the same increment :math:`Q = g\,\Delta W` as
Euler's noise term, one step of s stages is

.. math::
    K_0 = X_n,\quad K_1 = X_n + \mu_1\,dt\,f(X_n + \nu_1 Q) + \kappa_1 Q,\quad
    K_j = \mu_j\,dt\,f(K_{j-1}) + \nu_j K_{j-1} + \kappa_j K_{j-2},\quad X_{n+1} = K_s,

with :math:`\omega_0 = 1 + \epsilon/s^2`, :math:`\omega_1 = T_s(\omega_0)/T_s'(\omega_0)`,
:math:`\mu_1 = \omega_1/\omega_0`, :math:`\nu_1 = s\omega_1/2`, :math:`\kappa_1 = s\omega_1/\omega_0`,
:math:`\mu_j = 2\omega_1 T_{j-1}/T_j`, :math:`\nu_j = 2\omega_0 T_{j-1}/T_j`,
:math:`\kappa_j = -T_{j-2}/T_j` (Chebyshev polynomials at :math:`\omega_0`; damping
:math:`\epsilon = 0.05`; coefficients in ``_skrock``). It is stable for
:math:`dt\,\lambda \le L_s = (1+\omega_0)/\omega_1 \approx 1.93 s^2` on every relaxation rate λ
(Euler: 2), so s force evaluations buy a step :math:`\approx 0.97 s^2` times longer and the noise
is drawn once per step. The TDGL drift is a
gradient flow, so its Jacobian has real spectrum: the regime this method is built for.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._config import TDGLConfig, TDGLParams
from ._lattice import State, forces, geometry, link_variables
from ._skrock import skrock_coefficients


def noise_increment(noise: jax.Array, params: TDGLParams, cfg: TDGLConfig) -> State:
    r"""The Langevin increment :math:`Q = g\,\Delta W` of one step of length ``cfg.dt`` from unit-
    variance draws ``noise`` of shape ``(2*components + 2, nx, ny)``:
    :math:`\sqrt{T\,dt/(\Gamma_a h^2)}(\xi_r + i\xi_i)` on ψ, :math:`\sqrt{2T\,dt/\sigma}\,w\,\xi`
    on the links (zero in frozen gauge)."""
    C = cfg.components
    rdt = cfg.real_dtype
    gamma = params.gamma[:, None, None]
    amp_psi = jnp.sqrt(params.T * cfg.dt / (gamma * cfg.h**2)).astype(rdt)
    psi = amp_psi * jax.lax.complex(noise[:C], noise[C : 2 * C])
    if cfg.gauge != "dynamic":
        zero = jnp.zeros(cfg.shape, rdt)
        return State(psi, zero, zero)
    g = geometry(cfg)
    amp_a = jnp.sqrt(2 * params.T * cfg.dt / params.sigma).astype(rdt)
    return State(psi, amp_a * noise[2 * C] * g.w_x.astype(rdt), amp_a * noise[2 * C + 1] * g.w_y.astype(rdt))


def drift(
    state: State, params: TDGLParams, cfg: TDGLConfig, links: tuple[jax.Array, jax.Array] | None = None
) -> State:
    r"""The deterministic right-hand side :math:`f = (F_\psi/\Gamma_a,\ F_a/\sigma)` of
    :math:`\partial_t X = f(X)` (:func:`forces`; the links' part is zero in frozen gauge)."""
    return _scaled_forces(state, params, cfg, links, 1.0)


def _scaled_forces(
    state: State, params: TDGLParams, cfg: TDGLConfig, links: tuple[jax.Array, jax.Array] | None, c: jax.Array | float
) -> State:
    """``c`` times :func:`drift`, with ``c/Γ`` and ``c/σ`` formed on the parameters first: a
    scalar factor applied after the division costs a second pass over ψ (measured 2x per step)."""
    f = forces(state, params, cfg, links)
    psi = (c / params.gamma[:, None, None]) * f.psi
    if cfg.gauge != "dynamic":
        return State(psi, f.a_x, f.a_y)
    return State(psi, (c / params.sigma) * f.a_x, (c / params.sigma) * f.a_y)


def euler_step(
    state: State,
    params: TDGLParams,
    cfg: TDGLConfig,
    noise: jax.Array | None = None,
    links: tuple[jax.Array, jax.Array] | None = None,
) -> State:
    r"""One explicit Euler(–Maruyama) step :math:`X + dt\,f(X) + Q`; ``noise`` is an array of
    unit-variance increments of shape ``(2*components + 2, nx, ny)`` (Re ψ, Im ψ per component,
    then :math:`a^x`, :math:`a^y`) or ``None`` for :math:`T = 0`; ``links`` optionally the state's
    link variables (see :func:`forces`)."""
    dt = cfg.dt
    f = forces(state, params, cfg, links)
    gamma = params.gamma[:, None, None]
    psi = state.psi + (dt / gamma) * f.psi
    a_x, a_y = state.a_x, state.a_y
    dynamic = cfg.gauge == "dynamic"
    if dynamic:
        a_x = a_x + (dt / params.sigma) * f.a_x
        a_y = a_y + (dt / params.sigma) * f.a_y
    if noise is not None:
        q = noise_increment(noise, params, cfg)
        psi = psi + q.psi
        if dynamic:
            a_x = a_x + q.a_x
            a_y = a_y + q.a_y
    return State(psi, a_x, a_y)


def skrock_step(
    state: State,
    params: TDGLParams,
    cfg: TDGLConfig,
    noise: jax.Array | None = None,
    links: tuple[jax.Array, jax.Array] | None = None,
) -> State:
    r"""One SK-ROCK step of ``cfg.stages`` stages, written out as in the module docstring;
    ``noise`` as in :func:`euler_step`; ``links``: the fixed link variables in frozen gauge.

    :func:`integrate` runs the same recursion with one loop iteration per stage
    (:func:`_skrock_run`), which is what makes it fast under XLA; this function is the readable
    reference that the tests compare it with."""
    dt = cfg.dt
    dynamic = cfg.gauge == "dynamic"
    lk = None if dynamic else links
    comb = functools.partial(_combine, state if not dynamic else None)

    (mu1, nu1, kappa1), *rest = skrock_coefficients(cfg.stages)
    if noise is None:
        k1 = comb((1.0, state), (mu1 * dt, drift(state, params, cfg, lk)))
    else:
        q = noise_increment(noise, params, cfg)
        y = comb((1.0, state), (nu1, q))
        k1 = comb((1.0, state), (mu1 * dt, drift(y, params, cfg, lk)), (kappa1, q))
    k_prev, k = state, k1
    for mu, nu, kappa in rest:
        k_prev, k = k, comb((mu * dt, drift(k, params, cfg, lk)), (nu, k), (kappa, k_prev))
    return k


def _combine(frozen: State | None, *terms: tuple[jax.Array | float, State]) -> State:
    """Σ c·X over ``terms``; with ``frozen`` (frozen gauge) the links are that state's, unchanged."""
    psi = sum(c * x.psi for c, x in terms)
    if frozen is not None:
        return State(psi, frozen.a_x, frozen.a_y)
    return State(psi, sum(c * x.a_x for c, x in terms), sum(c * x.a_y for c, x in terms))


def _skrock_table(cfg: TDGLConfig) -> np.ndarray:
    r"""Per-stage rows ``(μ_j dt, a_j, b_j, c_j)`` of the stage loop of :func:`_skrock_run`:

    .. math::
        K_j = \mu_j dt\, f(K_{j-1}) + W_j, \qquad W_{j+1} = a_j K_j + b_j K_{j-1} + c_j Q_n,

    i.e. :math:`a_j = \nu_{j+1}`, :math:`b_j = \kappa_{j+1}`. Stage 1 evaluates the force at
    :math:`Z = X_n + \nu_1 Q_n` with :math:`W_1 = X_n + \kappa_1 Q_n`; its :math:`K_0 = X_n` is
    written :math:`Z - \nu_1 Q_n`, hence :math:`c_1 = -\kappa_2\nu_1`. The last row is unused
    (the next step starts afresh)."""
    (mu1, nu1, _), *rest = skrock_coefficients(cfg.stages)
    mus = [mu1] + [mu for mu, _, _ in rest]
    nxt = [(nu, kappa) for _, nu, kappa in rest] + [(0.0, 0.0)]
    rows = [[mu * cfg.dt, nu, kappa, 0.0] for mu, (nu, kappa) in zip(mus, nxt, strict=True)]
    rows[0][3] = -rows[0][2] * nu1
    return np.asarray(rows)


def _skrock_run(
    state: State, params: TDGLParams, cfg: TDGLConfig, draw: Callable[[jax.Array], State] | None, ks: jax.Array
) -> State:
    r"""SK-ROCK steps ``ks`` (noise indices) with every stage one iteration of an inner
    ``lax.scan`` (same recursion as :func:`skrock_step`, in the form of :func:`_skrock_table`).

    Written for XLA's CPU backend, where loop carries are the only values reliably materialised
    (``optimization_barrier`` is dropped before fusion): fused into their consumers, the stages,
    the noise hash and the link sines were recomputed many times over (5-10x slower per force).
    So the carries hold the next evaluation point, its link variables, the next :math:`W` (a fused
    force kernel that also read :math:`K_{j-2}` ran 2-4x slower than one adding a single buffer),
    and the noise increments of the next two steps (drawn two ahead, so that every use reads a
    buffer). ``draw(k)`` gives :math:`Q_k`, or ``None`` at T = 0; ``ks`` must be consecutive
    (each call primes the two look-ahead draws, which the last steps then leave unused).
    """
    dynamic = cfg.gauge == "dynamic"
    table = jnp.asarray(_skrock_table(cfg), cfg.real_dtype)
    (_, nu1, kappa1), *_ = skrock_coefficients(cfg.stages)
    fixed = link_variables(state, params, cfg)  # frozen gauge: the only links there are
    axpy = functools.partial(_combine, state if not dynamic else None)

    def links_at(x: State) -> tuple[jax.Array, jax.Array]:
        return link_variables(x, params, cfg) if dynamic else fixed

    def start(x: State, q: State | None) -> tuple[State, State, tuple[jax.Array, jax.Array]]:
        """Stage 1's evaluation point Z, W_1 and the links of Z."""
        if q is None:
            return x, x, links_at(x)
        z = axpy((1.0, x), (nu1, q))
        return z, axpy((1.0, x), (kappa1, q)), links_at(z)

    def stages(z: State, w: State, lk: tuple[jax.Array, jax.Array], q: State | None) -> State:
        def stage(c: tuple[State, State, tuple[jax.Array, jax.Array], jax.Array], next_row: jax.Array):  # noqa: ANN202
            # the row arrives in the carry (a buffer): sliced from the table inside the fused
            # kernels, it costs a dynamic-slice per element
            z, w, lk, row = c
            mu_dt, a, b, cq = (row[i] for i in range(4))
            new = axpy((1.0, _scaled_forces(z, params, cfg, lk, mu_dt)), (1.0, w))
            w_next = axpy((a, new), (b, z)) if q is None else axpy((a, new), (b, z), (cq, q))
            return (new, w_next, links_at(new), next_row), None

        (x, _, _, _), _ = jax.lax.scan(stage, (z, w, lk, table[0]), jnp.roll(table, -1, axis=0))
        return x

    if draw is None:

        def step_det(carry: tuple[State, tuple[jax.Array, jax.Array]], k: jax.Array):  # noqa: ANN202
            x, lk = carry
            x = stages(x, x, lk, None)
            return (x, links_at(x)), None

        (x, _), _ = jax.lax.scan(step_det, (state, links_at(state)), ks)
        return x

    def step(carry: tuple, k: jax.Array):  # noqa: ANN202
        x, z, w, lk, q, q_next = carry
        x = stages(z, w, lk, q)
        z, w, lk = start(x, q_next)
        return (x, z, w, lk, q_next, draw(k + 2)), None

    if not ks.shape[0]:
        return state
    q0 = draw(ks[0])
    carry = (state, *start(state, q0), q0, draw(ks[0] + 1))
    (x, *_), _ = jax.lax.scan(step, carry, ks)
    return x


def _fmix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hash_uniform(seed: jax.Array, k: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    r"""Counter-based noise: i.i.d.-looking uniform numbers on :math:`(-\sqrt3, \sqrt3)` (mean 0,
    variance 1) for step ``k`` from two rounds of an integer hash of (seed, k, flat index)."""
    s = _fmix32(seed[0] + jnp.asarray(k, jnp.uint32) * jnp.uint32(0x632BE5AB))
    idx = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    h = _fmix32(idx * jnp.uint32(0x9E3779B9) ^ s)
    h = _fmix32(h + (s ^ seed[1]))
    u = (h >> 8).astype(dtype) * (2.0 / (1 << 24)) + (1.0 / (1 << 24) - 1.0)  # (-1, 1), symmetric
    return u * jnp.asarray(math.sqrt(3.0), dtype)


def _noise(key: jax.Array, seed: jax.Array, k: jax.Array, cfg: TDGLConfig) -> jax.Array:
    nx, ny = cfg.shape
    shape = (2 * cfg.components + 2, nx, ny)
    if cfg.noise == "hash":
        return hash_uniform(seed, k, shape, cfg.real_dtype)
    return jax.random.normal(jax.random.fold_in(key, k), shape, cfg.real_dtype)


def _cast(params: TDGLParams, cfg: TDGLConfig) -> TDGLParams:
    return params.astype(cfg.real_dtype)


def integrate(
    state: State,
    params: TDGLParams,
    key: jax.Array,
    cfg: TDGLConfig,
    num_steps: int,
    *,
    save_every: int = 0,
    start: int = 0,
) -> tuple[State, State | None]:
    """Advance ``state`` by ``num_steps`` steps of ``cfg.scheme`` inside ``jax.lax.scan`` (pure, jit-able).

    Args:
        state: Initial :class:`State`.
        params: :class:`TDGLParams` of one simulation (no batch axis; use ``jax.vmap``).
        key: PRNG key of the Langevin noise; step ``k`` draws from (key, ``start + k``).
        cfg: Static :class:`TDGLConfig`.
        num_steps: Steps to take (static).
        save_every: If > 0, also return the states after every ``save_every`` steps, stacked.
        start: Step offset of the noise stream (continuing a run gives the same noise).

    Returns:
        ``(final_state, saved)``; ``saved`` is ``None`` unless ``save_every > 0``.
    """
    params = _cast(params, cfg)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    dynamic = cfg.gauge == "dynamic"

    # the carry holds the link variables too: computed once at the end of each step (frozen
    # gauge: once), never re-evaluated inside the fused force kernels
    def body(carry: tuple[State, tuple[jax.Array, jax.Array]], k: jax.Array):  # noqa: ANN202
        s, links = carry
        noise = _noise(key, seed, k, cfg) if cfg.thermal else None
        s = euler_step(s, params, cfg, noise, links)
        return (s, link_variables(s, params, cfg) if dynamic else links), None

    def draw(k: jax.Array) -> State:
        return noise_increment(_noise(key, seed, k, cfg), params, cfg)

    def run(s: State, steps: jax.Array) -> State:
        if cfg.scheme == "skrock":
            return _skrock_run(s, params, cfg, draw if cfg.thermal else None, steps)
        (s, _), _ = jax.lax.scan(body, (s, link_variables(s, params, cfg)), steps)
        return s

    if save_every <= 0:
        return run(state, start + jnp.arange(num_steps)), None

    n_saves, rest = divmod(num_steps, save_every)

    def chunk(s: State, c: jax.Array) -> tuple[State, State]:
        s = run(s, start + c * save_every + jnp.arange(save_every))
        return s, s

    final, saved = jax.lax.scan(chunk, state, jnp.arange(n_saves))
    if rest:
        final = run(final, start + n_saves * save_every + jnp.arange(rest))
    return final, saved
