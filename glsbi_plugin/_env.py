"""Process-level defaults for XLA, applied before JAX is first imported.

JAX preallocates 75% of a GPU by default; when PyTorch shares the device (sbi training next to
the simulator) that starves torch. We set ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless the user
already chose a value, and nothing else: every other XLA option stays the user's.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
