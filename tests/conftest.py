"""Shared test set-up: XLA compiling at -O0 (see below); 64-bit JAX (float64 configs for
precision checks; float32 stays float32 because every solver array is cast to the config's dtype);
one torch thread per test process (`make test` runs two pytest-xdist workers on the 2-core machine;
the small tensors of the tests gain nothing from more threads, and on a loaded machine two threads
per process were measured several times slower)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests' grids are tiny, so XLA's compilation, not the run, is their cost: LLVM at -O0 compiles a
# 16² quench in 2.9 s instead of 10 s and runs it in 28 ms instead of 5 ms (the results agree to
# float rounding, ~1e-6). Measured: the whole suite beside two benchmark trainings (load ~5) took
# 805 s of CPU, 797 s wall at XLA's default level, and 620 s CPU, 608 s wall at -O0. Set the flag in
# XLA_FLAGS yourself to test at another level; the library, the CLI and the benchmarks keep XLA's.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
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
