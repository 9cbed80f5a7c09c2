"""Shared test set-up: 64-bit JAX (float64 configs for precision checks; float32 stays float32
because every solver array is cast to the config's dtype), one torch thread per test process
(`make test` runs two pytest-xdist workers on the 2-core machine; the small tensors of the tests
gain nothing from more threads, and on a loaded machine two threads per process were measured
several times slower)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One compilation per program for the whole session, shared with subprocesses (crash test, CLI)
# and dask workers through the environment; removed at exit. It does not change any bits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="glsbi-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # the physics tests do not need torch
    pass
