"""Deprecated: the JAX physics moved to :mod:`glsbi_plugin.physics` (this alias goes in 0.3).

Every name importable from ``glsbi_plugin.simulators`` in 0.1 still is, with a
``DeprecationWarning`` that names its new home; ``theta`` (the plaquette flux) is now
:func:`glsbi_plugin.physics.plaquette_flux`.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import Any

#: Old name -> (module, new name) for names that are not on ``glsbi_plugin.physics``'s public face.
_MOVED: dict[str, tuple[str, str]] = {
    "theta": ("glsbi_plugin.physics", "plaquette_flux"),
    "forces": ("glsbi_plugin.physics._lattice", "forces"),
    "gauge_transform": ("glsbi_plugin.physics._lattice", "gauge_transform"),
    "drift": ("glsbi_plugin.physics._solver", "drift"),
    "euler_step": ("glsbi_plugin.physics._solver", "euler_step"),
    "noise_increment": ("glsbi_plugin.physics._solver", "noise_increment"),
    "skrock_step": ("glsbi_plugin.physics._solver", "skrock_step"),
    "skrock_coefficients": ("glsbi_plugin.physics._skrock", "skrock_coefficients"),
    "skrock_stability": ("glsbi_plugin.physics._skrock", "skrock_stability"),
}


def __getattr__(name: str) -> Any:
    physics = import_module("glsbi_plugin.physics")
    module, new = _MOVED.get(name, ("glsbi_plugin.physics", name))
    if module == "glsbi_plugin.physics" and not hasattr(physics, new):
        raise AttributeError(f"module 'glsbi_plugin.simulators' has no attribute {name!r}")
    warnings.warn(
        f"glsbi_plugin.simulators.{name} is deprecated; use {module}.{new}", DeprecationWarning, stacklevel=2
    )
    return getattr(import_module(module), new)
