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
)
from ._config import (
    TDGLConfig as TDGLConfig,
)
from ._config import (
    TDGLConfigError as TDGLConfigError,
)
from ._config import (
    TDGLParams as TDGLParams,
)
from ._config import (
    check_params as check_params,
)
from ._config import (
    flux_quanta as flux_quanta,
)
from ._lattice import (
    State as State,
)
from ._lattice import (
    forces as forces,
)
from ._lattice import (
    free_energy as free_energy,
)
from ._lattice import (
    gauge_transform as gauge_transform,
)
from ._lattice import (
    theta as theta,
)
from ._length_scales import (
    LengthScales as LengthScales,
)
from ._length_scales import (
    ground_state as ground_state,
)
from ._length_scales import (
    hc2_lattice as hc2_lattice,
)
from ._length_scales import (
    length_scales as length_scales,
)
from ._observables import (
    CHANNELS as CHANNELS,
)
from ._observables import (
    Measurement as Measurement,
)
from ._observables import (
    densities as densities,
)
from ._observables import (
    field_map as field_map,
)
from ._observables import (
    observe as observe,
)
from ._observables import (
    vortex_positions as vortex_positions,
)
from ._observables import (
    winding as winding,
)
from ._solver import (
    euler_step as euler_step,
)
from ._solver import (
    initial_state as initial_state,
)
from ._solver import (
    integrate as integrate,
)
from ._solver import (
    simulate as simulate,
)
from ._solver import (
    simulate_batch as simulate_batch,
)

__all__ = [
    "PARAM_NAMES", "TDGLConfig", "TDGLConfigError", "TDGLParams", "check_params", "flux_quanta",
    "State", "forces", "free_energy", "gauge_transform", "theta",
    "LengthScales", "ground_state", "hc2_lattice", "length_scales",
    "CHANNELS", "Measurement", "densities", "field_map", "observe", "vortex_positions", "winding",
    "euler_step", "initial_state", "integrate", "simulate", "simulate_batch", "presets",
]
