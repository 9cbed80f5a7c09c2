r"""Time stepping: field-cooled quench, explicit Euler with Langevin noise, ``jax.lax.scan``.

One step (gauge :math:`\phi = 0`):

.. math::
    \psi_a \leftarrow \psi_a + \frac{dt}{\Gamma_a} F_{\psi_a} + \sqrt{\frac{T\,dt}{\Gamma_a h^2}}\,
        (\xi_r + i\xi_i), \qquad
    a \leftarrow a + \frac{dt}{\sigma} F_a + \sqrt{\frac{2T\,dt}{\sigma}}\,\xi,

with :math:`F = ` :func:`forces`, :math:`\xi\sim N(0,1)`. The noise amplitudes follow from the
discrete fluctuation–dissipation relation of the energy :math:`E` (``_lattice``): with
:math:`\psi = u + iv`, :math:`\Gamma\dot u = -\partial E/\partial u / (2h^2)`, so the stationary
law is :math:`e^{-E/T}` (``tests/test_solver.py`` checks equipartition).

Protocol (field-cooled quench): the normal state :math:`\psi \approx 0` seeded with complex noise of
amplitude ``cfg.init_noise``, the vector potential carrying the field, α at its final value; the
system then relaxes for ``cfg.steps`` steps at temperature T. The snapshot time ``steps*dt`` is
part of the forward model (type-1.5 clusters keep coarsening). Randomness comes only from ``key``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._checks import check_params
from ._config import TDGLConfig, TDGLParams
from ._lattice import State, forces, geometry, initial_links, link_variables


def initial_state(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    """Normal state with small complex noise and the vector potential carrying the field."""
    nx, ny = cfg.shape
    shape = (cfg.components, nx, ny)
    re, im = jax.random.normal(key, (2, *shape), dtype=cfg.real_dtype) * cfg.init_noise
    a_x, a_y = initial_links(params, cfg)
    return State(jax.lax.complex(re, im), a_x, a_y)


def euler_step(
    state: State,
    params: TDGLParams,
    cfg: TDGLConfig,
    noise: jax.Array | None = None,
    links: tuple[jax.Array, jax.Array] | None = None,
) -> State:
    r"""One explicit Euler step; ``noise`` is an array of unit-variance increments of shape
    ``(2*components + 2, nx, ny)`` (Re ψ, Im ψ per component, then :math:`a^x`, :math:`a^y`) or
    ``None`` for :math:`T = 0`; ``links`` optionally the state's link variables (see
    :func:`forces`)."""
    dt = cfg.dt
    rdt = cfg.real_dtype
    f = forces(state, params, cfg, links)
    gamma = params.gamma[:, None, None]
    psi = state.psi + (dt / gamma) * f.psi
    a_x, a_y = state.a_x, state.a_y
    dynamic = cfg.gauge == "dynamic"
    if dynamic:
        a_x = a_x + (dt / params.sigma) * f.a_x
        a_y = a_y + (dt / params.sigma) * f.a_y
    if noise is not None:
        C = cfg.components
        amp_psi = jnp.sqrt(params.T * dt / (gamma * cfg.h**2)).astype(rdt)
        psi = psi + amp_psi * jax.lax.complex(noise[:C], noise[C : 2 * C])
        if dynamic:
            g = geometry(cfg)
            amp_a = jnp.sqrt(2 * params.T * dt / params.sigma).astype(rdt)
            a_x = a_x + amp_a * noise[2 * C] * g.w_x.astype(rdt)
            a_y = a_y + amp_a * noise[2 * C + 1] * g.w_y.astype(rdt)
    return State(psi, a_x, a_y)


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
    """Advance ``state`` by ``num_steps`` Euler steps inside ``jax.lax.scan`` (pure, jit-able).

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

    def run(s: State, steps: jax.Array) -> State:
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


@functools.partial(jax.jit, static_argnames=("cfg",))
def _simulate(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    params = _cast(params, cfg)
    k_init, k_run = jax.random.split(key)
    state = initial_state(params, k_init, cfg)
    final, _ = integrate(state, params, k_run, cfg, cfg.steps)
    return final


def simulate(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    r"""Field-cooled quench of one parameter set: the final :class:`State` after ``cfg.steps``.

    Pure and deterministic in ``key``: same ``params`` and ``key`` give the identical state.
    Works under ``jax.vmap`` over ``params`` and ``key`` (one compilation per ``cfg``); eager
    calls check ``params`` first (:func:`check_params`).

    Example:
        >>> import jax
        >>> from glsbi_plugin.simulators import TDGLConfig, presets, simulate
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> state = simulate(presets.type15(eta=0.2, field=0.2), jax.random.key(0), cfg)
        >>> state.psi.shape
        (2, 16, 16)
    """
    check_params(params, cfg)
    _check_dtype(cfg)
    return _simulate(params, key, cfg)


def simulate_batch(params: TDGLParams, keys: jax.Array, cfg: TDGLConfig) -> State:
    """``jax.vmap`` of :func:`simulate` over a leading batch axis of ``params`` and ``keys``.

    Scalar leaves of ``params`` may be unbatched (broadcast); the batch size is that of ``keys``.
    The batch is sharded over the default backend's devices when it divides evenly
    (:func:`shard_batch`); results agree to float rounding (the per-device width can change the
    last bits)."""
    check_params(params, cfg)
    _check_dtype(cfg)
    params = broadcast_params(params, keys.shape[0])
    return _simulate_batch(*shard_batch(params, keys), cfg)


def shard_batch(*trees: object) -> tuple[object, ...]:
    """Place pytrees with a common leading batch axis across the default backend's devices.

    Unchanged when there is one device or the batch does not divide evenly. On CPU, the package
    exposes one device per core (``glsbi_plugin._env``), which is how a batch uses every core."""
    devices = jax.devices()
    leaves = jax.tree_util.tree_leaves(trees)
    n = leaves[0].shape[0] if leaves and jnp.ndim(leaves[0]) else 0
    if len(devices) < 2 or n == 0 or n % len(devices):
        return trees
    sharding = NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))
    return tuple(jax.device_put(t, sharding) for t in trees)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _simulate_batch(params: TDGLParams, keys: jax.Array, cfg: TDGLConfig) -> State:
    return jax.vmap(lambda p, k: _simulate(p, k, cfg))(params, keys)


def broadcast_params(params: TDGLParams, n: int) -> TDGLParams:
    """Give every leaf a leading batch axis of size ``n`` (leaves already batched are kept)."""

    def bcast(v: jax.Array, rank: int) -> jax.Array:
        v = jnp.asarray(v)
        return jnp.broadcast_to(v, (n, *v.shape)) if v.ndim == rank else v

    ranks = TDGLParams(K=1, alpha=1, beta=1, gamma=1, eta=0, nu=0, e=0, sigma=0, T=0, field=0)  # type: ignore[arg-type]
    return jax.tree_util.tree_map(bcast, params, ranks)


def _check_dtype(cfg: TDGLConfig) -> None:
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before simulating, or use dtype='float32'"
        )
