"""glsbi: simulation-based inference of two-component Ginzburg–Landau couplings from vortex images.

``glsbi_plugin.simulators`` is the JAX physics (no torch). The sbi-facing objects
(``simulator``, ``prior``, ``ResNetGAP``, ...) are imported lazily so that the physics can be used
without PyTorch installed.
"""

from __future__ import annotations

import functools
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _env  # noqa: F401

try:
    __version__ = version("glsbi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_LAZY: dict[str, str] = {
    "TDGLSimulator": "._simulator",
    "DEFAULT_CONFIG": "._simulator",
    "DEFAULT_BOUNDS": "._simulator",
    "make_simulator": "._simulator",
    "make_prior": "._simulator",
    "ResNetGAP": ".embeddings",
    "EmbeddingConfig": ".embeddings",
    "to_jax": ".bridge",
    "to_torch": ".bridge",
    "torch_function": ".bridge",
}
_DEFAULTS = ("simulator", "prior")


def __getattr__(name: str) -> Any:
    """Lazy public names; ``simulator`` and ``prior`` are the defaults (θ = (η, B))."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    if name in _DEFAULTS:
        return _default(name)
    raise AttributeError(f"module 'glsbi_plugin' has no attribute {name!r}")


@functools.cache
def _default(name: str) -> Any:
    sim = import_module("._simulator", __name__)
    return sim.make_simulator() if name == "simulator" else sim.make_prior()


__all__ = ["__version__", *_LAZY, *_DEFAULTS]
