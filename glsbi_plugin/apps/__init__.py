"""Applications built on the library: the ``glsbi`` command line (:mod:`.cli`), the main job
(:mod:`.quickstart`, ``make run``), the interactive demo (:mod:`.demo`, ``glsbi demo``) and the
inference of one's own image (:mod:`.image`, ``glsbi infer``: :func:`infer_image`).

Nothing in the library imports from here: data flows physics → simulator → store → inference →
diagnostics → applications.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ImageInference", "ImageMapping", "infer_image", "map_to_observation", "read_image"]


def __getattr__(name: str) -> Any:
    """The image API of :mod:`.image`, imported on first use (``glsbi --help`` imports this package)."""
    if name in __all__:
        return getattr(import_module(".image", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
