"""Process-level defaults for XLA, applied before JAX's backends start (only where unset).

- ``XLA_PYTHON_CLIENT_PREALLOCATE=false``: JAX preallocates 75% of a GPU by default; when PyTorch
  shares the device (sbi training next to the simulator) that starves torch.
- ``--xla_force_host_platform_device_count=<CPUs>``: XLA's CPU backend runs a batched simulation on
  one core; exposing one CPU device per core lets :func:`glsbi_plugin.physics.simulate_batch`
  and the sbi simulator shard a batch across all cores (~2x on 2 cores; equal to float rounding:
  the per-device vmap width can change the last bits, which is why simulation banks do not shard).
  Computations that are not sharded still run on ``cpu:0``. Set the flag yourself (e.g. to 1) to
  opt out; GPU backends are unaffected.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    _n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_n}".strip()
