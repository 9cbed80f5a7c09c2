r"""JAX physics of two-component TDGL (knows nothing of torch).

Public API::

    cfg = TDGLConfig(shape=(64, 64), h=0.5, dt=0.3125, steps=640, scheme="skrock", stages=2)
    p = presets.type15(eta=0.2, field=0.08)
    state = simulate(p, jax.random.key(0), cfg)
    x = observe(state, p, cfg, channels=("rho1", "rho2"))
"""

from .. import _env  # noqa: F401  (XLA defaults before jax is imported)
from . import presets
from ._checks import check_params, stability_bounds
from ._config import PARAM_NAMES, TDGLConfig, TDGLConfigError, TDGLParams, flux_quanta
from ._lattice import State, forces, free_energy, gauge_transform, theta
from ._length_scales import LengthScales, ground_state, hc2_lattice, length_scales
from ._observables import (
    CHANNELS,
    Measurement,
    check_channels,
    densities,
    field_map,
    observe,
    vortex_positions,
    winding,
)
from ._solver import (
    drift,
    euler_step,
    initial_state,
    integrate,
    noise_increment,
    simulate,
    simulate_batch,
    skrock_coefficients,
    skrock_stability,
    skrock_step,
)

__all__ = [
    "PARAM_NAMES",
    "TDGLConfig",
    "TDGLConfigError",
    "TDGLParams",
    "check_params",
    "stability_bounds",
    "flux_quanta",
    "State",
    "forces",
    "free_energy",
    "gauge_transform",
    "theta",
    "LengthScales",
    "ground_state",
    "hc2_lattice",
    "length_scales",
    "CHANNELS",
    "check_channels",
    "Measurement",
    "densities",
    "field_map",
    "observe",
    "vortex_positions",
    "winding",
    "drift",
    "euler_step",
    "noise_increment",
    "skrock_coefficients",
    "skrock_stability",
    "skrock_step",
    "initial_state",
    "integrate",
    "simulate",
    "simulate_batch",
    "presets",
]
