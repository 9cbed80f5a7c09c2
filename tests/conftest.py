"""Shared test set-up: 64-bit JAX (float64 configs for precision checks; float32 stays float32
because every solver array is cast to the config's dtype), a small torch thread count."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

try:
    import torch  # noqa: E402

    torch.set_num_threads(2)
except ImportError:  # the physics tests do not need torch
    pass
