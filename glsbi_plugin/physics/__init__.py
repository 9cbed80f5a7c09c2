r"""JAX physics of two-component TDGL (knows nothing of torch): the forward model and its parts.

Public face::

    cfg = presets.forward_model()                       # 64², SK-ROCK s = 2, dt = 0.3125, t = 200
    p = presets.type15(eta=0.2, field=0.08)             # traced physics (a pytree)
    x = forward(p, jax.random.key(0), cfg, Observation(channels=("rho1", "rho2")))   # (2, 64, 64)

- the forward model: :func:`forward` (quench → integrate → observe → instrument, pure, jit- and
  vmap-able; its halves :func:`quench_of` and :func:`image_of`), :func:`forward_in_segments` (the
  same, eagerly in pieces), what is observed: the
  ideal :class:`Observation` (channels, :class:`Measurement`) or an instrument (:class:`STM`,
  :class:`SQUID`, :class:`Decoration`, settings fixed or :class:`Range` nuisances;
  :func:`make_observation` by name), :mod:`presets` (``forward_model`` holds the default numerics);
- the quench and its state: :func:`simulate`, :func:`simulate_batch`, :func:`initial_state`,
  :func:`integrate`, :class:`State`, :func:`free_energy`;
- observables: :func:`observe`, :func:`densities`, :func:`field_map`, :func:`current_vorticity`,
  :func:`plaquette_flux`,
  :func:`winding`, :func:`vortex_positions`, :func:`winding_positions`;
- configuration and checks: :class:`TDGLConfig`, :class:`TDGLParams`, :func:`check_params`,
  :func:`stability_bounds`, :func:`flux_quanta`;
- length scales: :func:`length_scales`, :func:`ground_state`, :func:`hc2_lattice`;
- :mod:`summaries`: a physicist's statistics of the vortex positions (count, nearest-neighbour
  distances, g(r) on the torus, cluster sizes, ψ₆), e.g. as an embedding-free x.

The steppers (``_solver``: Euler–Maruyama and SK-ROCK), the lattice (``_lattice``: forces, link
variables) and the NumPy reference (``_reference``) are internal; the tests import them there.
"""

from .. import _env  # noqa: F401  (XLA defaults before jax is imported)
from . import presets, summaries
from ._checks import check_params, stability_bounds
from ._config import PARAM_NAMES, TDGLConfig, TDGLConfigError, TDGLParams, drag_bound, flux_quanta, kinetic_matrix
from ._forward import (
    AnyObservation,
    ForwardKeys,
    Observation,
    forward,
    forward_in_segments,
    forward_keys,
    image_of,
    initial_state,
    make_observation,
    observation_from_dict,
    quench_of,
    shard_batch,
    simulate,
    simulate_batch,
)
from ._instruments import FIELDS, SQUID, STM, Decoration, Range
from ._lattice import State, free_energy, plaquette_flux
from ._length_scales import LengthScales, ground_state, hc2_lattice, length_scales
from ._observables import (
    CHANNELS,
    Measurement,
    check_channels,
    current_vorticity,
    densities,
    field_map,
    observe,
    vortex_positions,
    winding,
    winding_positions,
)
from ._solver import integrate

__all__ = [
    "SQUID",
    "STM",
    "AnyObservation",
    "CHANNELS",
    "Decoration",
    "Range",
    "make_observation",
    "observation_from_dict",
    "PARAM_NAMES",
    "ForwardKeys",
    "LengthScales",
    "Measurement",
    "Observation",
    "State",
    "TDGLConfig",
    "TDGLConfigError",
    "TDGLParams",
    "check_channels",
    "check_params",
    "current_vorticity",
    "densities",
    "drag_bound",
    "field_map",
    "flux_quanta",
    "forward",
    "forward_in_segments",
    "forward_keys",
    "free_energy",
    "ground_state",
    "hc2_lattice",
    "image_of",
    "initial_state",
    "integrate",
    "kinetic_matrix",
    "length_scales",
    "observe",
    "plaquette_flux",
    "presets",
    "quench_of",
    "summaries",
    "FIELDS",
    "shard_batch",
    "simulate",
    "simulate_batch",
    "stability_bounds",
    "vortex_positions",
    "winding",
    "winding_positions",
]
