"""glsbi: simulation-based inference of two-component Ginzburg–Landau couplings from vortex images.

``glsbi_plugin.simulators`` is the JAX physics (no torch). The sbi-facing objects
(``simulator``, ``prior``, ``ResNetGAP``, ...) are imported lazily so that the physics can be used
without PyTorch installed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _env  # noqa: F401

try:
    __version__ = version("glsbi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_LAZY: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'glsbi_plugin' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
