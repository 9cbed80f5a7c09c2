"""Applications built on the library: the ``glsbi`` command line (:mod:`.cli`), the main job
(:mod:`.quickstart`, ``make run``), the interactive demo (:mod:`.demo`, ``glsbi demo``) and the
inference of one's own image (:mod:`.image`, ``glsbi infer``: :func:`infer_image`).

Nothing in the library imports from here: data flows physics → simulator → store → inference →
diagnostics → applications.
"""

from __future__ import annotations

from .image import ImageInference, ImageMapping, infer_image, map_to_observation, read_image

__all__ = ["ImageInference", "ImageMapping", "infer_image", "map_to_observation", "read_image"]
