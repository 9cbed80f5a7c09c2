r"""The forward model, defined once: field-cooled quench → integrate → observe → instrument.

.. math::
    x = \mathcal{M}\bigl(\mathcal{O}(X_T)\bigr), \qquad X_T = \Phi_{T}(X_0;\ \theta, \xi), \qquad
    X_0 = (\psi \approx 0,\ a \text{ carrying the field})

with :math:`\Phi_T` the Langevin TDGL flow of ``cfg.steps`` steps of ``cfg.scheme``
(:func:`~._solver.integrate`), :math:`\mathcal{O}` the observed channels and :math:`\mathcal{M}`
the instrument (:class:`Observation`). All randomness comes from one PRNG key, split once
(:func:`forward_keys`): the initial state, the Langevin noise and the measurement noise each get
their own stream.

:func:`forward` is pure and jit-able; the demo jits it, the sbi simulator vmaps and compiles its two
halves apart (:func:`quench_of`, the costly quench, one program per config; :func:`image_of`, one
per observation).
:func:`forward_in_segments` runs the same computation eagerly in segments (the CLI's progress
bar) and gives the same image to float rounding. :func:`simulate` / :func:`simulate_batch` are the
quench alone (from a simulation key).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._checks import check_params
from ._config import TDGLConfig, TDGLParams
from ._instruments import INSTRUMENTS, SQUID, STM, Decoration, check_settings, instrument_from_dict
from ._lattice import State, initial_links
from ._observables import Measurement, check_channels, observe
from ._solver import _cast, integrate

__all__ = [
    "AnyObservation",
    "ForwardKeys",
    "Observation",
    "make_observation",
    "observation_from_dict",
    "broadcast_params",
    "forward",
    "forward_in_segments",
    "forward_keys",
    "image_of",
    "initial_state",
    "quench_of",
    "shard_batch",
    "simulate",
    "simulate_batch",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    r"""What is observed of the final state, and through which instrument (static, hashable).

    Attributes:
        channels: Observed channels, in order: ``"rho1"``, ``"rho2"`` (:math:`|\psi_a|^2`),
            ``"bz"`` (:math:`B_z`), ``"curlj"`` (:math:`(\nabla\times J)_z`), ``"winding1"``, ``"winding2"`` (see
            :func:`~glsbi_plugin.physics.observe`).
        measurement: Optional :class:`Measurement` (blur, down-sampling, noise), or ``None``.

    Example:
        >>> from glsbi_plugin.physics import Measurement, Observation, TDGLConfig
        >>> obs = Observation(channels=("rho2",), measurement=Measurement(downsample=2))
        >>> obs.x_shape(TDGLConfig(shape=(16, 16)))
        (1, 8, 8)
    """

    channels: tuple[str, ...] = ("rho1", "rho2")
    measurement: Measurement | None = None

    def __post_init__(self) -> None:
        if isinstance(self.channels, str):
            raise ValueError(f"channels={self.channels!r}: pass a sequence of channel names, e.g. ('rho1', 'rho2')")
        object.__setattr__(self, "channels", tuple(self.channels))
        check_channels(self.channels, 2)
        if self.measurement is not None and not isinstance(self.measurement, Measurement):
            raise ValueError(f"measurement must be a Measurement or None, got {type(self.measurement).__name__}")

    def check(self, cfg: TDGLConfig) -> None:
        """Refuse an observation this config cannot produce (a channel of a missing band, a
        down-sampling factor that does not divide the grid)."""
        check_channels(self.channels, cfg.components)
        f = self.measurement.downsample if self.measurement else 1
        nx, ny = cfg.shape
        if nx % f or ny % f:
            raise ValueError(f"downsample={f} does not divide the grid {nx}x{ny}")

    name: ClassVar[str] = "ideal"

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the image's channels."""
        return self.channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with ``"name": "ideal"``."""
        meas = dataclasses.asdict(self.measurement) if self.measurement else None
        return {"name": self.name, "channels": list(self.channels), "measurement": meas}

    def extent(self, cfg: TDGLConfig) -> tuple[float, float, float, float]:
        """``(x0, x1, y0, y1)`` of the image in length units (sites' cells, ``[(i-½)h, (i+½)h)``)."""
        h, (nx, ny) = cfg.h, cfg.shape
        return (-h / 2, nx * h - h / 2, -h / 2, ny * h - h / 2)

    def x_shape(self, cfg: TDGLConfig) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image of this observation on ``cfg``'s grid."""
        f = self.measurement.downsample if self.measurement else 1
        nx, ny = cfg.shape
        return (len(self.channels), nx // f, ny // f)

    def measure(
        self, fields: Mapping[str, jax.Array], params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None
    ) -> jax.Array:
        """The float32 image from stored physical fields ``{name: (nx, ny)}`` holding :attr:`channels`
        (what :meth:`__call__` computes from the state; winding maps as floats)."""
        image = jnp.stack([jnp.asarray(fields[c], cfg.real_dtype) for c in self.channels])
        if self.measurement is not None:
            image = self.measurement.apply(image, cfg.h, key)
        return image.astype(jnp.float32)

    @property
    def needs(self) -> tuple[str, ...]:
        """The fields :meth:`measure` reads."""
        return self.channels

    def __call__(self, state: State, params: TDGLParams, cfg: TDGLConfig, key: jax.Array | None) -> jax.Array:
        """The float32 image ``(C, H, W)`` of ``state``; ``key`` feeds the measurement noise."""
        p = _cast(params, cfg)
        return observe(state, p, cfg, self.channels, measurement=self.measurement, key=key).astype(jnp.float32)


#: What :func:`forward` accepts as its ``observation``: the ideal :class:`Observation` or an
#: instrument (:class:`~glsbi_plugin.physics.STM`, :class:`~glsbi_plugin.physics.SQUID`,
#: :class:`~glsbi_plugin.physics.Decoration`).
AnyObservation = Union[Observation, STM, SQUID, Decoration]  # noqa: UP007 - a runtime alias


def observation_from_dict(d: dict[str, Any]) -> AnyObservation:
    """Rebuild an observation from its ``to_dict()``."""
    if d.get("name") == "ideal":
        settings = {k: v for k, v in d.items() if k != "name"}
        if "channels" in settings:
            settings["channels"] = tuple(settings["channels"])
        if settings.get("measurement"):
            settings["measurement"] = Measurement(**settings["measurement"])
        return make_observation("ideal", **settings)
    return instrument_from_dict(d)


def make_observation(name: str = "ideal", **settings: Any) -> AnyObservation:
    """An observation by name: ``"ideal"`` (:class:`Observation`), ``"stm"``, ``"squid"`` or ``"decoration"``,
    with its settings as keywords.

    Example:
        >>> from glsbi_plugin.physics import make_observation
        >>> make_observation("stm", bands=(2,), snr=5.0).channel_names
        ('stm2',)
    """
    if name == "ideal":
        unknown = sorted(set(settings) - {"channels", "measurement"})
        if unknown:
            raise ValueError(f"ideal: unknown settings {unknown}; allowed: ['channels', 'measurement']")
        return Observation(**settings)
    if name not in INSTRUMENTS:
        raise ValueError(f"observation={name!r}: choose one of {['ideal', *INSTRUMENTS]}")
    check_settings(name, settings)
    return INSTRUMENTS[name](**settings)


class ForwardKeys(NamedTuple):
    """The three independent streams of one forward run (from :func:`forward_keys`)."""

    init: jax.Array  #: the initial state's seed noise
    noise: jax.Array  #: the Langevin noise of every step
    measure: jax.Array  #: the instrument's noise


def forward_keys(key: jax.Array) -> ForwardKeys:
    """Split one PRNG key into the streams of :func:`forward`: ``key → (simulation, measurement)``,
    ``simulation → (init, noise)``; :func:`simulate` takes the simulation key."""
    k_sim, k_meas = jax.random.split(key)
    k_init, k_noise = jax.random.split(k_sim)
    return ForwardKeys(k_init, k_noise, k_meas)


def initial_state(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    """Normal state with small complex noise (``cfg.init_noise``) and the vector potential
    carrying the field: the start of the field-cooled quench."""
    nx, ny = cfg.shape
    shape = (cfg.components, nx, ny)
    re, im = jax.random.normal(key, (2, *shape), dtype=cfg.real_dtype) * cfg.init_noise
    a_x, a_y = initial_links(params, cfg)
    return State(jax.lax.complex(re, im), a_x, a_y)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _simulate(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    """The quench from a simulation key: ``key → (init, noise)``, initial state, ``cfg.steps`` steps."""
    params = _cast(params, cfg)
    k_init, k_noise = jax.random.split(key)
    state = initial_state(params, k_init, cfg)
    final, _ = integrate(state, params, k_noise, cfg, cfg.steps)
    return final


def forward(
    params: TDGLParams,
    key: jax.Array,
    cfg: TDGLConfig,
    observation: AnyObservation = Observation(),  # noqa: B008 - frozen, hashable
    *,
    return_state: bool = False,
) -> jax.Array | tuple[State, jax.Array]:
    r"""The forward model: one field-cooled quench of ``params`` and its observed image.

    Pure and deterministic in ``key`` (:func:`forward_keys`): the same ``params`` and ``key`` give
    the same image. Jit it with ``cfg``, ``observation`` and ``return_state`` static; vmap it over
    ``params`` and ``key``. Nothing is checked here (it may run traced): eager callers check with
    :func:`check_params` and :meth:`Observation.check` first, as the sbi simulator does.

    Args:
        params: One parameter set (no batch axis).
        key: PRNG key of the whole run.
        cfg: Numerics: grid, scheme, step, snapshot time ``cfg.steps * cfg.dt``
            (:func:`~glsbi_plugin.physics.presets.forward_model` gives the default).
        observation: What is observed: the ideal :class:`Observation` (channels and a simple
            :class:`Measurement`) or an instrument (``STM``, ``SQUID``, ``Decoration``).
        return_state: Also return the final :class:`State`.

    Returns:
        The float32 image ``(C, H, W)``, or ``(state, image)``.

    Example:
        >>> import jax
        >>> from glsbi_plugin.physics import Observation, TDGLConfig, forward, presets
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> x = forward(presets.type15(eta=0.2, field=0.2), jax.random.key(0), cfg, Observation(channels=("rho2",)))
        >>> x.shape, str(x.dtype)
        ((1, 16, 16), 'float32')
    """
    state = quench_of(params, key, cfg)
    image = image_of(observation, state, params, cfg, key)
    return (state, image) if return_state else image


def quench_of(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    """The first half of :func:`forward`: the final state of its quench (the simulation stream of
    ``key``, :func:`forward_keys`). Pure and jit-able; nothing is checked."""
    k_sim, _ = jax.random.split(key)  # = forward_keys(key): (init, noise) from k_sim
    return _simulate(params, k_sim, cfg)


def image_of(
    observation: AnyObservation, state: State, params: TDGLParams, cfg: TDGLConfig, key: jax.Array
) -> jax.Array:
    """The second half of :func:`forward`: the image ``observation`` takes of the final ``state``
    with the measurement stream of ``key``. Pure and jit-able; nothing is checked.

    Compiled apart from :func:`quench_of` (as the sbi simulator does), the costly quench is one
    program per ``cfg`` that every observation model shares."""
    return observation(state, params, cfg, forward_keys(key).measure)


def forward_in_segments(
    params: TDGLParams,
    key: jax.Array,
    cfg: TDGLConfig,
    observation: AnyObservation = Observation(),  # noqa: B008 - frozen, hashable
    *,
    segments: int = 1,
    on_segment: Callable[[int], None] | None = None,
) -> tuple[State, jax.Array]:
    """:func:`forward` run eagerly in ``segments`` jitted pieces of equal length (checked first).

    The same keys, noise stream and steps as :func:`forward`, so the image agrees with it to float
    rounding. ``on_segment(steps_done)`` is called after each piece (e.g. to advance a progress
    bar). ``segments`` is lowered to the largest divisor of ``cfg.steps`` not above it.

    Returns:
        ``(final state, float32 image)``.
    """
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments={segments!r}: must be an integer >= 1")
    check_params(params, cfg)
    observation.check(cfg)
    keys = forward_keys(key)
    p = _cast(params, cfg)
    state = initial_state(p, keys.init, cfg)
    n_seg = max(k for k in range(1, min(segments, max(cfg.steps, 1)) + 1) if cfg.steps % k == 0)
    seg = cfg.steps // n_seg
    if seg:
        step = _segment_runner(cfg, seg)
        for i in range(n_seg):
            state = step(state, p, keys.noise, i * seg)
            jax.block_until_ready(state)
            if on_segment is not None:
                on_segment((i + 1) * seg)
    return state, _observe(observation, state, params, cfg, keys.measure)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _observe(
    observation: AnyObservation, state: State, params: TDGLParams, cfg: TDGLConfig, key: jax.Array
) -> jax.Array:
    return observation(state, params, cfg, key)


@functools.cache
def _segment_runner(cfg: TDGLConfig, num_steps: int) -> Callable[[State, TDGLParams, jax.Array, int], State]:
    @jax.jit
    def run(state: State, params: TDGLParams, key: jax.Array, start: jax.Array) -> State:
        return integrate(state, params, key, cfg, num_steps, start=start)[0]

    return run


def simulate(params: TDGLParams, key: jax.Array, cfg: TDGLConfig) -> State:
    r"""The field-cooled quench alone: the final :class:`State` after ``cfg.steps`` steps.

    ``key`` is the simulation key (:func:`forward` derives it from its own key with
    :func:`forward_keys`). Pure and deterministic in ``key``. Works under ``jax.vmap`` over
    ``params`` and ``key`` (one compilation per ``cfg``); eager calls check ``params`` first
    (:func:`check_params`).

    Example:
        >>> import jax
        >>> from glsbi_plugin.physics import TDGLConfig, presets, simulate
        >>> cfg = TDGLConfig(shape=(16, 16), steps=10)
        >>> state = simulate(presets.type15(eta=0.2, field=0.2), jax.random.key(0), cfg)
        >>> state.psi.shape
        (2, 16, 16)
    """
    check_params(params, cfg)
    return _simulate(params, key, cfg)


def simulate_batch(params: TDGLParams, keys: jax.Array, cfg: TDGLConfig) -> State:
    """``jax.vmap`` of :func:`simulate` over a leading batch axis of ``params`` and ``keys``.

    Scalar leaves of ``params`` may be unbatched (broadcast); the batch size is that of ``keys``.
    The batch is sharded over the default backend's devices when it divides evenly
    (:func:`shard_batch`); results agree to float rounding (the per-device width can change the
    last bits)."""
    check_params(params, cfg)
    params = broadcast_params(params, keys.shape[0])
    return _simulate_batch(*shard_batch(params, keys), cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _simulate_batch(params: TDGLParams, keys: jax.Array, cfg: TDGLConfig) -> State:
    return jax.vmap(lambda p, k: _simulate(p, k, cfg))(params, keys)


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


def broadcast_params(params: TDGLParams, n: int) -> TDGLParams:
    """Give every leaf a leading batch axis of size ``n`` (leaves already batched are kept)."""

    def bcast(v: jax.Array, rank: int) -> jax.Array:
        v = jnp.asarray(v)
        return jnp.broadcast_to(v, (n, *v.shape)) if v.ndim == rank else v

    ranks = TDGLParams(K=1, alpha=1, beta=1, gamma=1, eta=0, nu=0, e=0, sigma=0, T=0, field=0)  # type: ignore[arg-type]
    out = jax.tree_util.tree_map(bcast, dataclasses.replace(params, drag=None), ranks)
    return out if params.drag is None else dataclasses.replace(out, drag=bcast(params.drag, 0))
