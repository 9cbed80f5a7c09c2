r"""The sbi simulator and its prior: θ (torch, ``(n, d)``) → images x (torch, ``(n, C, H, W)``).

``TDGLSimulator`` maps the columns of θ onto named fields of a base :class:`TDGLParams` (default
θ = (η, B)), runs the physics package's :func:`~glsbi_plugin.physics.forward` ``jax.vmap``-ed over
each batch, and hands the images to torch through DLPack (:mod:`glsbi_plugin.bridge`). The forward
model is compiled as its two halves: the quench (:func:`~glsbi_plugin.physics.quench_of`), one
program per config and batch width that every simulator of that config shares whatever its prior
box, base parameters or observation, and the image (:func:`~glsbi_plugin.physics.image_of`), one
small program per observation.
It is a plain callable, so ``sbi.inference.simulate_for_sbi`` and
``sbi.utils.user_input_checks.process_simulator`` take it unchanged. It carries its prior's box:
``simulator.prior()`` is the ``BoxUniform`` over exactly the θ it accepts.

Example:
    >>> from glsbi_plugin.physics import TDGLConfig
    >>> from glsbi_plugin.sbi_simulator import make_simulator
    >>> sim = make_simulator(config=TDGLConfig(shape=(16, 16), steps=20), bounds={"field": (0.1, 0.3)})
    >>> prior = sim.prior()
    >>> theta = prior.sample((3,))
    >>> sim(theta, seed=0).shape
    torch.Size([3, 2, 16, 16])

Randomness is explicit: every simulation has an integer seed; ``simulator(theta, seed=s)`` derives
per-sample seeds from ``s``; without ``seed`` they are drawn from ``generator`` (a
``torch.Generator``) or from torch's default generator, so ``torch.manual_seed`` makes an sbi script
reproducible. ``simulate_seeds(theta, seeds)`` is the primitive: same θ and seed ⇒ identical image.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch
from sbi.utils import BoxUniform
from torch import Tensor

from ._validation import check_bool, check_count, check_generator, check_seed, check_seeds, check_theta
from .bridge import to_torch
from .physics import (
    PARAM_NAMES,
    SQUID,
    STM,
    AnyObservation,
    Decoration,
    Measurement,
    Observation,
    State,
    TDGLConfig,
    TDGLParams,
    check_params,
    forward_keys,
    image_of,
    make_observation,
    observation_from_dict,
    presets,
    quench_of,
    shard_batch,
)

logger = logging.getLogger(__name__)

#: Default prior ranges. η: across the type-1.5 → type-II crossover of the default preset
#: (η ≈ 0.09 at e = 0.45); field: where both condensates survive (below the weak band's
#: |α₂|/K₂ = 0.125) and a 64² torus at h = 0.5 holds 5–16 flux quanta.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "eta": (0.0, 0.3),
    "field": (0.03, 0.10),
    "nu": (-0.05, 0.05),
    "e": (0.35, 0.7),
    "T": (0.0, 0.005),
}

#: Fewest pixels per side an image may keep after down-sampling (as for the instruments' ``pixels``).
MIN_PIXELS = 4

#: Largest per-step Langevin increment the simulator accepts, :math:`\sqrt{T\,dt/(\Gamma_a h^2)}` on ψ
#: and :math:`\sqrt{2T\,dt/\sigma}` on the link variables, over the whole prior box. Beyond it a
#: single step's noise is of the order of the condensate itself and the lattice blows up to
#: NaN (seen from increments ≈ 1 on 16² tori: Euler at T = 3, dt = 0.08; SK-ROCK at T = 3, dt = 0.3125).
MAX_NOISE_STEP = 0.5

#: The default forward model's numerics, :func:`glsbi_plugin.physics.presets.forward_model`: a 64²
#: torus, t = 200 after a field-cooled quench, SK-ROCK with 2 stages at dt = 0.3125 (640 steps).
DEFAULT_CONFIG = presets.forward_model()


def _row_params(base: TDGLParams, names: tuple[str, ...], theta: jax.Array) -> TDGLParams:
    """``base`` with the inferred parameters set from one θ row (``names`` in θ's column order)."""
    return base.replace(**{name: theta[i] for i, name in enumerate(names)})


@functools.partial(jax.jit, static_argnames=("names", "cfg"))
def _quench_rows(base: TDGLParams, theta: jax.Array, seeds: jax.Array, *, names: tuple[str, ...],
                 cfg: TDGLConfig) -> State:
    """The quench of every row (:func:`~glsbi_plugin.physics.quench_of` with the key of its seed).

    ``base`` is an argument, not a constant of the program: one compiled program per config, θ
    names and batch width serves every simulator of that config, whatever its base parameters,
    prior box or observation (the quench is the costly compilation, ~10 s on a 16² torus)."""
    return jax.vmap(lambda t, s: quench_of(_row_params(base, names, t), jax.random.key(s), cfg))(theta, seeds)


@functools.partial(jax.jit, static_argnames=("names", "cfg", "observation"))
def _image_rows(base: TDGLParams, states: State, theta: jax.Array, seeds: jax.Array, *,
                names: tuple[str, ...], cfg: TDGLConfig, observation: AnyObservation) -> jax.Array:
    """The image of every row's final state (:func:`~glsbi_plugin.physics.image_of`): one small
    program per observation."""
    return jax.vmap(
        lambda st, t, s: image_of(observation, st, _row_params(base, names, t), cfg, jax.random.key(s))
    )(states, theta, seeds)


@functools.partial(jax.jit, static_argnames=("names", "cfg", "channels", "observation"))
def _derive_rows(base: TDGLParams, theta: jax.Array, seeds: jax.Array, fields: jax.Array, *,
                 names: tuple[str, ...], cfg: TDGLConfig, channels: tuple[str, ...],
                 observation: AnyObservation) -> jax.Array:
    """The instrument on every row's stored fields ``(n, len(channels), H, W)``, with the measurement
    stream of its seed (as :func:`~glsbi_plugin.physics.image_of` takes it): one program per
    observation and channel layout, shared by every simulator of the config."""
    def one(t: jax.Array, seed: jax.Array, x: jax.Array) -> jax.Array:
        key = forward_keys(jax.random.key(seed)).measure
        return observation.measure(dict(zip(channels, x, strict=True)), _row_params(base, names, t), cfg, key)

    return jax.vmap(one)(theta, seeds, fields)


def make_prior(
    names: Sequence[str] = ("eta", "field"),
    bounds: Mapping[str, tuple[float, float]] | None = None,
    device: str = "cpu",
) -> BoxUniform:
    """Uniform box prior over the named parameters (an sbi ``BoxUniform``).

    Args:
        names: Inferred parameters, in θ's column order (any of :data:`PARAM_NAMES`).
        bounds: ``{name: (low, high)}``; missing names fall back to :data:`DEFAULT_BOUNDS`.
        device: Torch device of the prior's tensors.

    Raises:
        ValueError: an unknown name, a name without bounds, or ``low >= high``.
    """
    lows, highs = zip(*(_bounds_for(n, bounds) for n in _check_names(names)), strict=True)
    return _box(lows, highs, device)


def _box(lows: Sequence[float], highs: Sequence[float], device: str) -> BoxUniform:
    """The float32 ``BoxUniform`` over ``[lows, highs]`` (the one prior :func:`make_prior` and
    :meth:`TDGLSimulator.prior` build)."""
    return BoxUniform(torch.tensor(lows, dtype=torch.float32), torch.tensor(highs, dtype=torch.float32), device=device)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if not names:
        raise ValueError("names must hold at least one parameter")
    unknown = [n for n in names if n not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown}; known: {', '.join(PARAM_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"names={names}: each parameter may appear once")
    return names


def _bounds_for(name: str, bounds: Mapping[str, tuple[float, float]] | None) -> tuple[float, float]:
    lo_hi = (bounds or {}).get(name, DEFAULT_BOUNDS.get(name))
    if lo_hi is None:
        raise ValueError(f"no prior bounds for {name!r}: pass bounds={{'{name}': (low, high)}}")
    try:
        lo, hi = lo_hi  # type: ignore[misc]
        if any(isinstance(v, (bool, np.bool_, str)) for v in (lo, hi)):
            raise TypeError
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"bounds for {name!r} must be two numbers (low, high), got {lo_hi!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds for {name!r} must be finite with low < high, got ({lo}, {hi})")
    return lo, hi


@dataclasses.dataclass(frozen=True, eq=False)
class TDGLSimulator:
    r"""Batched TDGL forward model for sbi: ``x = simulator(theta)``.

    Attributes:
        config: Static numerics (:class:`TDGLConfig`).
        base: Parameters not inferred (:class:`TDGLParams`, unbatched).
        names: Parameter names of θ's columns, e.g. ``("eta", "field")``.
        low, high: Bounds of θ (the prior's support); θ outside is refused.
        channels: Observed channels of the ideal observation (see :func:`glsbi_plugin.physics.observe`);
            with an instrument, its channel names.
        measurement: Optional simple measurement model of the ideal observation (blur, down-sampling,
            noise).
        batch_size: Simulations per vmapped JAX call. Smaller requests and the last batch are
            padded to a power of two (at most ``log2(batch_size) + 1`` compiled programs).
        instrument: ``None`` for the ideal observation of ``channels`` (and ``measurement``), or an
            instrument of the physics package (:class:`~glsbi_plugin.physics.STM`,
            :class:`~glsbi_plugin.physics.SQUID`, :class:`~glsbi_plugin.physics.Decoration`).
    """

    config: TDGLConfig
    base: TDGLParams
    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    channels: tuple[str, ...] = ("rho1", "rho2")
    measurement: Measurement | None = None
    batch_size: int = 32
    instrument: STM | SQUID | Decoration | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        if self.instrument is not None:
            if not isinstance(self.instrument, (STM, SQUID, Decoration)):
                kind = type(self.instrument).__name__
                raise ValueError(f"instrument must be an STM, SQUID or Decoration, got {kind}")
            if self.measurement is not None:
                raise ValueError("measurement applies to the ideal observation; an instrument models its own")
            object.__setattr__(self, "channels", self.instrument.channel_names)
        _check_names(self.names)
        if len(self.low) != len(self.names) or len(self.high) != len(self.names):
            raise ValueError(f"low/high need {len(self.names)} entries, one per name in {self.names}")
        check_count("batch_size", self.batch_size)
        _check_measurement(self.measurement, self.config)
        self.observation.check(self.config)
        # the whole box must be simulable (dt bound, Nφ >= 1, finite values, bounded noise): the
        # checks are monotone in each parameter away from 0, so the corners and, where a range
        # crosses 0, the point at 0 (e.g. the smallest |field|) cover the box
        for point in _critical_points(self.low, self.high):
            values = dict(zip(self.names, point, strict=True))
            params = self.base.replace(**values)
            try:
                check_params(params, self.config)
                _check_noise(params, self.config)
            except ValueError as e:
                where = ", ".join(f"{k}={v:g}" for k, v in values.items())
                box = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, lo, hi in zip(self.names, self.low, self.high,
                                                                                 strict=True))
                raise type(e)(f"the prior box ({box}) holds θ that cannot be simulated: at {where}: {e}") from None

    # -- shapes and the prior -----------------------------------------------------------------
    @property
    def theta_dim(self) -> int:
        return len(self.names)

    @property
    def observation(self) -> AnyObservation:
        """What the simulator observes: its instrument, or the ideal :class:`Observation` of its channels."""
        if self.instrument is not None:
            return self.instrument
        return Observation(channels=self.channels, measurement=self.measurement)

    @property
    def x_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return self.observation.x_shape(self.config)

    def prior(self, device: str = "cpu") -> BoxUniform:
        """The uniform prior over the box ``[low, high]`` this simulator accepts (an sbi ``BoxUniform``,
        float32): the two cannot disagree."""
        return _box(self.low, self.high, device)

    # -- simulation -------------------------------------------------------------------------
    def __call__(
        self, theta: Tensor | np.ndarray, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Simulate a batch.

        Args:
            theta: ``(n, d)`` (or ``(d,)``) floating tensor inside ``[low, high]``; a floating numpy
                array is accepted too (sbi's ``simulate_for_sbi`` passes those to its workers).
            seed: Base seed, an integer in ``[0, 2**63 - 1]``; per-sample seeds are derived from it.
                ``None``: drawn from ``generator`` (or torch's default generator, which sbi's
                workers seed one by one, so every worker draws other seeds).
            generator: A CPU ``torch.Generator`` for the seeds when ``seed`` is None.

        Returns:
            ``(n, C, H, W)`` float32 tensor.

        Raises:
            ValueError: θ of the wrong shape, type or outside the box; a seed that is not an
                integer in range (bool, float and str are refused); a generator of another type.
        """
        theta = self.check_theta(theta)
        generator = check_generator(generator)
        seed = None if seed is None else check_seed(seed)
        n = theta.shape[0]
        if seed is None:
            seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator, dtype=torch.int64).numpy()
        else:
            seeds = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32).astype(np.int64) & 0x7FFFFFFF
        return self._simulate_checked(theta, seeds)

    def simulate_seeds(
        self, theta: Tensor | np.ndarray, seeds: Sequence[int] | np.ndarray, *, shard: bool = True
    ) -> Tensor:
        """Simulate ``theta[i]`` with integer seed ``seeds[i]`` (the reproducible primitive).

        The same θ row and seed give the same image to float rounding. Bit for bit, XLA's result
        also depends on the vmapped width each device computes: ``shard=False`` keeps every batch
        on one device (width = the padded batch), which is what makes a simulation bank
        bit-identical across processes and machines with different core counts.

        Args:
            theta: ``(n, d)`` floating tensor or array inside the box.
            seeds: ``n`` integers in ``[0, 2**32 - 1]`` (the forward model keys JAX with 32 bits;
                larger seeds are refused, never wrapped).
            shard: Spread a batch over the host's devices.

        Raises:
            ValueError: bad θ, or seeds that are not integers in range or not one per row.
        """
        theta_t = self.check_theta(theta)
        return self._simulate_checked(theta_t, check_seeds(seeds, theta_t.shape[0]), shard)

    def _simulate_checked(self, theta_t: Tensor, seeds: np.ndarray, shard: bool = True) -> Tensor:
        n = theta_t.shape[0]
        if self.config.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("this simulator's config has dtype='float64', but 64-bit JAX is off: call "
                             "jax.config.update('jax_enable_x64', True) first, or use dtype='float32'")
        if n == 0:
            return torch.empty((0, *self.x_shape), dtype=torch.float32)
        x = self._batched(self._run, theta_t.numpy(), seeds, shard=shard)  # θ: float32 on the CPU
        out = to_torch(x).cpu()  # sbi's contract: x on the host, like θ (a no-op on CPU)
        bad = ~torch.isfinite(out).flatten(1).all(1)
        if bad.any():
            logger.warning(
                "%d of %d simulations returned non-finite values (θ rows %s)",
                int(bad.sum()),
                n,
                bad.nonzero().flatten()[:5].tolist(),
            )
        return out

    def _batched(self, run, theta: np.ndarray, seeds: np.ndarray, *rest: np.ndarray, shard: bool = True) -> jax.Array:  # noqa: ANN001
        """``run(theta, seeds, *rest)`` over batches of ``batch_size`` rows. Widths are powers of two
        up to ``batch_size`` and a short batch is padded by repeating its last row, so ``run`` is
        compiled at most ``log2(batch_size) + 1`` times whatever the row counts."""
        n = theta.shape[0]
        b = min(self.batch_size, 1 << (n - 1).bit_length())
        outs = []
        for start in range(0, n, b):
            arrays = [a[start : start + b] for a in (theta, seeds, *rest)]
            m = arrays[0].shape[0]
            if m < b:  # pad: one compiled program for every batch
                arrays = [np.concatenate([a, np.repeat(a[-1:], b - m, 0)]) for a in arrays]
            inputs = [jnp.asarray(a, dtype=jnp.uint32) if i == 1 else jnp.asarray(a) for i, a in enumerate(arrays)]
            x = run(*(shard_batch(*inputs) if shard else inputs))
            outs.append(x[:m])
        return jnp.concatenate(outs) if len(outs) > 1 else outs[0]

    def _run(self, theta: jax.Array, seeds: jax.Array) -> jax.Array:
        """:func:`~glsbi_plugin.physics.forward` of every row, compiled as two programs: the quench
        (shared by all simulators of this config) and this simulator's observation of its states."""
        kw = {"names": self.names, "cfg": self.config}
        states = _quench_rows(self.base, theta, seeds, **kw)
        return _image_rows(self.base, states, theta, seeds, observation=self.observation, **kw)

    # -- validation -------------------------------------------------------------------------
    def check_theta(self, theta: Tensor | np.ndarray) -> Tensor:
        """θ (a tensor, or a floating numpy array) as a ``(n, d)`` float32 CPU tensor, or a
        ValueError naming the expected shape/range."""
        low, high = torch.tensor(self.low), torch.tensor(self.high)
        return check_theta(theta, low, high, names=self.names).cpu()

    def derive(
        self, observation: AnyObservation, theta: Tensor, seeds: Sequence[int] | np.ndarray, x: Tensor
    ) -> Tensor:
        """Images of ``observation`` from this simulator's images ``x`` of ``(theta, seeds)``.

        Simulation is the cost, the instrument is cheap: a simulator whose ideal channels hold the
        physical fields an instrument reads (e.g. ``channels=physics.FIELDS``) serves every
        observation model from one bank. The instrument runs with the measurement key of each
        row's seed, so the result equals what ``make_simulator(..., observation=observation)``
        returns for the same θ and seeds (to float rounding).

        Raises:
            ValueError: this simulator has an instrument or a measurement (its images are not the
                fields), or its channels lack a field ``observation`` reads.
        """
        if self.instrument is not None or self.measurement is not None:
            raise ValueError("derive needs a simulator of the ideal fields, without instrument or measurement")
        missing = [f for f in observation.needs if f not in self.channels]
        if missing:
            raise ValueError(f"{observation.name} reads {missing}; this simulator's channels are {self.channels}")
        observation.check(self.config)
        theta_t = self.check_theta(theta)
        seeds = check_seeds(seeds, theta_t.shape[0])
        if tuple(x.shape) != (theta_t.shape[0], *self.x_shape):
            raise ValueError(
                f"theta {tuple(theta_t.shape)}, seeds {seeds.shape} and x {tuple(x.shape)} must have one row each "
                f"(x rows of shape {self.x_shape})"
            )
        if theta_t.shape[0] == 0:
            return torch.empty((0, *observation.x_shape(self.config)), dtype=torch.float32)
        run = functools.partial(_derive_rows, self.base, names=self.names, cfg=self.config, channels=self.channels,
                                observation=observation)
        out = self._batched(run, theta_t.numpy(), seeds, x.numpy(), shard=False)
        return to_torch(out).cpu()

    def describe(self) -> dict[str, object]:
        """JSON-ready description (config, base parameters, names, bounds, channels; the instrument's
        settings under ``"observation"`` when there is one: ideal descriptions are unchanged, so banks
        of the ideal observation keep their config hash)."""
        return {
            "config": self.config.to_dict(),
            "base": self.base.to_dict(),
            "names": list(self.names),
            "low": list(self.low),
            "high": list(self.high),
            "channels": list(self.channels),
            "measurement": dataclasses.asdict(self.measurement) if self.measurement else None,
            **({"observation": self.instrument.to_dict()} if self.instrument is not None else {}),
        }

    @classmethod
    def from_description(cls, d: Mapping[str, object], batch_size: int = 32) -> TDGLSimulator:
        """Rebuild a simulator from :meth:`describe`'s output.

        Raises:
            ValueError: a missing or unknown key, or a value of the wrong type (naming it).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a simulator description must be a mapping, got {type(d).__name__}")
        need = {"config", "base", "names", "low", "high", "channels"}
        allowed = need | {"measurement", "observation"}
        missing, unknown = sorted(need - set(d)), sorted(set(d) - allowed)
        if missing or unknown:
            raise ValueError(f"simulator description: missing keys {missing}, unknown keys {unknown} "
                             f"(expected {sorted(allowed)})")
        for key in ("names", "low", "high", "channels"):
            if not isinstance(d[key], (list, tuple)):
                raise ValueError(f"simulator description: {key} must be a list, got {type(d[key]).__name__}")
        for key in ("config", "base"):
            if not isinstance(d[key], Mapping):
                raise ValueError(f"simulator description: {key} must be a mapping, got {type(d[key]).__name__}")
        meas = d.get("measurement")
        inst = d.get("observation")
        if meas is not None and not isinstance(meas, Mapping):
            raise ValueError(f"simulator description: measurement must be a mapping or null, got {meas!r:.40}")
        try:
            return cls._from_checked_description(d, meas, inst, batch_size)
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"simulator description is malformed: {type(e).__name__}: {e}") from None

    @classmethod
    def _from_checked_description(cls, d: Mapping[str, object], meas: object, inst: object,
                                  batch_size: int) -> TDGLSimulator:
        return cls(
            config=TDGLConfig.from_dict(d["config"]),  # type: ignore[arg-type]
            base=TDGLParams.from_dict(d["base"]),  # type: ignore[arg-type]
            names=tuple(d["names"]),  # type: ignore[arg-type]
            low=tuple(d["low"]),  # type: ignore[arg-type]
            high=tuple(d["high"]),  # type: ignore[arg-type]
            channels=tuple(d["channels"]),  # type: ignore[arg-type]
            measurement=Measurement(**meas) if meas else None,  # type: ignore[arg-type,dict-item]
            batch_size=batch_size,
            instrument=observation_from_dict(inst) if inst else None,  # type: ignore[arg-type]
        )


def _check_types(sim: TDGLSimulator) -> None:
    """Named ValueErrors for fields of the wrong type (before anything uses them)."""
    if not isinstance(sim.config, TDGLConfig):
        raise ValueError(f"config must be a TDGLConfig, got {type(sim.config).__name__}")
    if not isinstance(sim.base, TDGLParams):
        raise ValueError(f"base must be TDGLParams (e.g. presets.type15()), got {type(sim.base).__name__}")
    if sim.measurement is not None and not isinstance(sim.measurement, Measurement):
        raise ValueError(f"measurement must be a Measurement or None, got {type(sim.measurement).__name__}")
    if isinstance(sim.names, str) or not all(isinstance(n, str) for n in sim.names):
        raise ValueError(f"names must be a sequence of parameter names, got {sim.names!r}")
    for side in ("low", "high"):
        values = getattr(sim, side)
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                   and math.isfinite(v) for v in values):
            raise ValueError(f"{side}={values!r}: the bounds must be finite numbers")
    bad = [n for n, lo, hi in zip(sim.names, sim.low, sim.high, strict=False) if not lo < hi]
    if bad:
        raise ValueError(f"bounds of {bad}: need low < high, got low={sim.low}, high={sim.high}")
    check_bool("config.thermal", sim.config.thermal)


def _check_measurement(measurement: Measurement | None, cfg: TDGLConfig) -> None:
    """Finite blur and noise, and a down-sampling factor that divides the grid and leaves at least
    :data:`MIN_PIXELS` pixels per side."""
    if measurement is None:
        return
    for name in ("psf_sigma", "noise_std"):
        v = getattr(measurement, name)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"measurement.{name}={v!r}: must be a finite number >= 0")
    f = measurement.downsample
    if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)) or f < 1:
        raise ValueError(f"measurement.downsample={f!r}: must be an integer >= 1")
    nx, ny = cfg.shape
    if nx % f or ny % f or min(nx, ny) // f < MIN_PIXELS:
        allowed = [k for k in range(1, min(nx, ny) // MIN_PIXELS + 1) if nx % k == 0 and ny % k == 0]
        raise ValueError(f"measurement.downsample={f} on the {nx}x{ny} grid: it must divide the grid and leave "
                         f">= {MIN_PIXELS} pixels per side; allowed: {allowed}")


def _critical_points(low: Sequence[float], high: Sequence[float]) -> list[tuple[float, ...]]:
    """The box's corners, plus the points where a range crossing 0 is at 0 (smallest |value|)."""
    axes = [(lo, hi, 0.0) if lo < 0 < hi else (lo, hi) for lo, hi in zip(low, high, strict=True)]
    return list(itertools.product(*axes))


def _check_noise(params: TDGLParams, cfg: TDGLConfig) -> None:
    """ValueError if one step's Langevin increment exceeds :data:`MAX_NOISE_STEP` (NaN images)."""
    if not cfg.thermal:
        return
    T = float(np.max(np.asarray(params.T, np.float64)))
    if T <= 0:
        return
    gamma = float(np.min(np.asarray(params.gamma, np.float64)))
    sigma = float(np.min(np.asarray(params.sigma, np.float64)))
    step_psi = math.sqrt(T * cfg.dt / (gamma * cfg.h**2))
    step_a = math.sqrt(2 * T * cfg.dt / sigma) if cfg.gauge == "dynamic" else 0.0
    if max(step_psi, step_a) > MAX_NOISE_STEP:
        t_max = MAX_NOISE_STEP**2 * min(gamma * cfg.h**2 / cfg.dt, sigma / (2 * cfg.dt) if step_a else math.inf)
        raise ValueError(
            f"T={T:g}: one step's thermal noise (sqrt(T dt/(Γh²)) = {step_psi:.3g} on psi, sqrt(2T dt/σ) = "
            f"{step_a:.3g} on A at dt={cfg.dt:g}, h={cfg.h:g}) exceeds {MAX_NOISE_STEP:g}, which gives non-finite "
            f"images; allowed T <= {t_max:.4g} here (or lower dt)"
        )


def make_simulator(
    names: Sequence[str] = ("eta", "field"),
    *,
    config: TDGLConfig | None = None,
    base: TDGLParams | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    channels: Sequence[str] = ("rho1", "rho2"),
    measurement: Measurement | None = None,
    batch_size: int = 32,
    observation: str | AnyObservation | None = None,
) -> TDGLSimulator:
    """Build a :class:`TDGLSimulator`; its prior is ``simulator.prior()`` (= ``make_prior(names, bounds)``).

    Args:
        names: Inferred parameters (θ's columns), e.g. ``("eta", "field", "nu")``.
        config: Numerics; default :data:`DEFAULT_CONFIG` (``presets.forward_model()``: 64², h = 0.5,
            SK-ROCK s = 2, dt = 0.3125, 640 steps: t = 200).
        base: Fixed parameters; default ``presets.type15()``.
        bounds: Prior ranges per name; default :data:`DEFAULT_BOUNDS`.
        channels: Observed channels of the ideal observation.
        measurement: Optional :class:`Measurement` of the ideal observation.
        observation: What is observed instead of ``channels``: ``"ideal"``, ``"stm"``, ``"squid"``,
            ``"decoration"`` (default settings; :func:`~glsbi_plugin.physics.make_observation`) or an
            observation object (``Observation``, ``STM(...)``, ``SQUID(...)``, ``Decoration(...)``).
        batch_size: Simulations per JAX call.

    Example:
        >>> from glsbi_plugin import make_simulator
        >>> from glsbi_plugin.physics import presets
        >>> sim = make_simulator(("eta", "field", "nu"), config=presets.forward_model(16, steps=20),
        ...                      bounds={"field": (0.1, 0.3)})
        >>> sim.prior().support.base_constraint.upper_bound
        tensor([0.3000, 0.3000, 0.0500])
    """
    names = _check_names(names)
    lows, highs = zip(*(_bounds_for(n, bounds) for n in names), strict=True)
    obs = make_observation(observation) if isinstance(observation, str) else observation
    instrument = None
    if obs is not None:
        if tuple(channels) != ("rho1", "rho2") or measurement is not None:
            raise ValueError(
                f"channels/measurement apply to the ideal observation: give them or observation={obs.name!r}, not both"
            )
        if isinstance(obs, Observation):
            channels, measurement = obs.channels, obs.measurement
        else:
            instrument = obs
    return TDGLSimulator(
        config=config or DEFAULT_CONFIG,
        base=base if base is not None else presets.type15(),
        names=names,
        low=lows,
        high=highs,
        channels=tuple(channels),
        measurement=measurement,
        instrument=instrument,
        batch_size=batch_size,
    )
