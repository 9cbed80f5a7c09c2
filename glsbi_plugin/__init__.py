"""glsbi: simulation-based inference of two-component Ginzburg–Landau couplings from vortex images.

Rooms, in the direction data flows:

- :mod:`glsbi_plugin.physics`: the JAX physics (no torch), with the forward model
  (:func:`~glsbi_plugin.physics.forward`, :mod:`~glsbi_plugin.physics.presets`);
- :mod:`glsbi_plugin.sbi_simulator`: the sbi simulator and its prior (``simulator``, ``prior``);
  :mod:`glsbi_plugin.bridge`: JAX ↔ torch;
- :mod:`glsbi_plugin.store`: the simulation bank;
- :mod:`glsbi_plugin.embeddings`, :mod:`glsbi_plugin.inference`, :mod:`glsbi_plugin.checkpoint`;
- :mod:`glsbi_plugin.diagnostics`: calibration reports;
- :mod:`glsbi_plugin.apps`: the ``glsbi`` command line, the main job and the demo.

The sbi-facing objects (``simulator``, ``prior``, ``ResNetGAP``, ...) are imported lazily so that
the physics can be used without PyTorch installed. ``simulator`` is the default simulator
(θ = (η, B)) and ``prior`` its ``simulator.prior()``.
"""

from __future__ import annotations

import functools
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _threads  # noqa: F401 - first: it notes the XLA_FLAGS the user set, before _env adds to them

# isort: split
from . import _env  # noqa: F401

try:
    __version__ = version("glsbi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_LAZY: dict[str, str] = {
    "TDGLSimulator": ".sbi_simulator",
    "DEFAULT_CONFIG": ".sbi_simulator",
    "DEFAULT_BOUNDS": ".sbi_simulator",
    "make_simulator": ".sbi_simulator",
    "make_prior": ".sbi_simulator",
    "ResNetGAP": ".embeddings",
    "EmbeddingConfig": ".embeddings",
    "to_jax": ".bridge",
    "to_torch": ".bridge",
    "torch_function": ".bridge",
    "infer_image": ".apps.image",
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
    simulator = _default("simulator") if name == "prior" else import_module(".sbi_simulator", __name__).make_simulator()
    return simulator.prior() if name == "prior" else simulator


__all__ = ["__version__", *_LAZY, *_DEFAULTS]
