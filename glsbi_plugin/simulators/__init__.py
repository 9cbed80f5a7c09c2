r"""JAX physics of two-component TDGL (knows nothing of torch).

Public API::

    cfg = TDGLConfig(shape=(64, 64), h=0.5, dt=0.1, steps=2000)
    p = presets.type15(eta=0.2, field=0.08)
    state = simulate(p, jax.random.key(0), cfg)
    x = observe(state, p, cfg, channels=("rho1", "rho2"))
"""

from .. import _env  # noqa: F401  (XLA defaults before jax is imported)
from . import presets
from ._config import (
    PARAM_NAMES as PARAM_NAMES,
    TDGLConfig as TDGLConfig,
    TDGLConfigError as TDGLConfigError,
    TDGLParams as TDGLParams,
    check_params as check_params,
    flux_quanta as flux_quanta,
)
from ._lattice import (
    State as State,
    forces as forces,
    free_energy as free_energy,
    gauge_transform as gauge_transform,
    theta as theta,
)
from ._length_scales import (
    LengthScales as LengthScales,
    ground_state as ground_state,
    hc2_lattice as hc2_lattice,
    length_scales as length_scales,
)
from ._observables import (
    CHANNELS as CHANNELS,
    Measurement as Measurement,
    densities as densities,
    field_map as field_map,
    observe as observe,
    vortex_positions as vortex_positions,
    winding as winding,
)
from ._solver import (
    euler_step as euler_step,
    initial_state as initial_state,
    integrate as integrate,
    simulate as simulate,
    simulate_batch as simulate_batch,
)

__all__ = [
    "PARAM_NAMES", "TDGLConfig", "TDGLConfigError", "TDGLParams", "check_params", "flux_quanta",
    "State", "forces", "free_energy", "gauge_transform", "theta",
    "LengthScales", "ground_state", "hc2_lattice", "length_scales",
    "CHANNELS", "Measurement", "densities", "field_map", "observe", "vortex_positions", "winding",
    "euler_step", "initial_state", "integrate", "simulate", "simulate_batch", "presets",
]
