#!/usr/bin/env python
r"""Throughput and memory of the JAX TDGL solver, side by side with the NumPy reference step.

Measured in one run (see ``benchmarks/README.md``):

1. The Euler kernel: ``simulate_batch`` for the explicit-Euler model (64x64, float32, dynamic
   gauge, noise on, the step of ``presets.forward_model(scheme="euler")``) at several batch sizes:
   compile time (first call minus steady state), steady-state wall time (best of ``--repeats``,
   ``block_until_ready``), site-updates/s (``nx*ny*components*steps*batch / wall``: the per-step
   kernel figure), simulations/s, and simulations/s of the forward model: scaled to its snapshot
   time ``presets.forward_model().t_final`` (``presets.T_FINAL``). The same for the package's
   forward model (``presets.forward_model()`` = ``DEFAULT_CONFIG``: SK-ROCK), timed through
   :func:`glsbi_plugin.physics.forward` jitted and vmapped (as the sbi simulator runs it) over the
   same simulated time as the Euler rows.
2. The same kernel with noise off (``thermal=False``) and with a frozen gauge; plus the seed's
   model (frozen gauge, float64, no noise) at one batch size for a like-for-like comparison.
3. The forward model at full length (``presets.forward_model()``: ``cfg.steps`` steps to
   ``cfg.t_final``) through the jitted, vmapped ``forward`` at one batch size: measured sims/s of
   the forward model, nothing scaled.
4. The vectorised NumPy step (``NumpyTDGL.step``, float64, noise drawn by NumPy each step) on one
   system, and the ratio JAX (batch 32) / NumPy in site-updates/s.
5. Peak memory of the forward model (jitted, vmapped ``forward``) at batch 256, in a fresh
   subprocess: peak RSS increase of that process and XLA's compiled memory analysis
   (argument/output/temp bytes, deterministic).
6. The environment (versions, devices, CPU count, ``XLA_FLAGS``, load average).

``--profile`` adds a noise breakdown at one batch size: noise on vs off, a kernel that only draws
the noise, and the PRNG implementations ``threefry2x32`` / ``rbg`` / ``unsafe_rbg``.

Run::

    .venv/bin/python benchmarks/solver_throughput.py            # full run, a few minutes on CPU
    .venv/bin/python benchmarks/solver_throughput.py --quick    # smoke run, ~1 minute
    .venv/bin/python benchmarks/solver_throughput.py --profile --batches 1 8 32 128 --steps 200

On a GPU (``jax.default_backend() == "gpu"``) the default batch sweep goes up to 4096.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine  # benchmarks/_machine.py (the script's folder is on sys.path)

from glsbi_plugin.physics import Observation, State, TDGLConfig, forward, presets, shard_batch, simulate_batch
from glsbi_plugin.physics._forward import broadcast_params
from glsbi_plugin.physics._reference import NumpyTDGL
from glsbi_plugin.physics._solver import hash_uniform

# The only global state: 64-bit JAX, needed by the float64 (seed-model) case. Every float32
# configuration stays float32 (the solver casts params and state to ``cfg.dtype``).
jax.config.update("jax_enable_x64", True)

#: The production forward model (64², SK-ROCK, ``presets.T_FINAL``); ``--size`` changes its grid only.
FORWARD_MODEL = presets.forward_model()
#: Simulated time of one forward-model run: every "sims/s of the forward model" is scaled to it.
T_FORWARD = FORWARD_MODEL.t_final
#: What the forward model observes (the sbi simulator's default channels).
OBSERVATION = Observation()
CPU_BATCHES = (1, 8, 32, 128)
GPU_BATCHES = (1, 32, 256, 1024, 4096)
RATIO_BATCH = 32
TARGET_SITE_UPDATES = 150e6  # site-updates/s at batch 32, noise on, CPU
TARGET_NUMPY_RATIO = 30.0  # JAX (batch 32) / NumPy step
TARGET_MEMORY_BYTES = 2e9  # batch 256 at 64^2 within 2 GB
TARGET_GPU_SIMS = 3000.0  # sims/s of the forward model (64², to t = T_FORWARD) on a GPU
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
SKROCK_CASE = "skrock (DEFAULT_CONFIG)"  # the forward model's row of the sweep (the name the results use)
#: JSON key of the throughput scaled to the forward model's simulated time (results written before
#: this key carry ``sims_per_s_at_2000_steps`` instead: scaled to t = 160, 2000 Euler steps of 0.08).
FORWARD_RATE_KEY = "sims_per_s_forward_model"


@dataclasses.dataclass(frozen=True)
class Case:
    """One solver configuration to sweep over batch sizes."""

    name: str
    cfg: TDGLConfig
    batches: tuple[int, ...]
    note: str
    forward: bool = False  # timed through the jitted, vmapped ``forward`` (else ``simulate_batch``)


# --------------------------------------------------------------------------------------- timing


def _best_of(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` (which must block until its result is ready)."""
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return walls


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextlib.contextmanager
def compile_timer() -> Iterator[dict[str, float]]:
    """Sum JAX's own tracing/lowering/XLA-compile durations (``jax.monitoring``) inside the block."""
    totals = dict.fromkeys(_COMPILE_EVENTS, 0.0)

    def listener(event: str, duration_secs: float, **_: object) -> None:
        if event in totals:
            totals[event] += duration_secs

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield totals
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def interleaved(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, Any]]:
    """Time several blocking callables fairly on a noisy machine.

    Each runner is called once (compile + first run; JAX's compile events are recorded), then
    ``repeats`` rounds call every runner once in turn, so that load drifts hit all of them alike.
    Returns per runner: ``first_call_s``, ``compile_s`` (first call minus best), ``compile_jax_s``
    (trace + lower + XLA compile as reported by ``jax.monitoring``), ``wall_s`` (best),
    ``wall_median_s``, ``walls_s`` and the first call's result under ``"_out"``."""
    res: dict[str, dict[str, Any]] = {}
    for name, fn in runners.items():
        with compile_timer() as ct:
            t0 = time.perf_counter()
            out = fn()
            first = time.perf_counter() - t0
        res[name] = {"first_call_s": first, "compile_jax_s": sum(ct.values()), "walls_s": [], "_out": out}
    for _ in range(repeats):
        for name, fn in runners.items():
            res[name]["walls_s"] += _best_of(fn, 1)
    for r in res.values():
        best = min(r["walls_s"])
        r.update(
            wall_s=best, wall_median_s=float(np.median(r["walls_s"])), compile_s=max(r["first_call_s"] - best, 0.0)
        )
    return res


def site_updates(cfg: TDGLConfig, steps: int, batch: int) -> int:
    """Order-parameter site updates of ``batch`` runs: ``nx * ny * components * steps * batch``, times the
    force evaluations per step (SK-ROCK's stages; 1 for Euler)."""
    nx, ny = cfg.shape
    return nx * ny * cfg.components * steps * batch * getattr(cfg, "stages", 1)


def _rates(cfg: TDGLConfig, steps: int, batch: int, wall: float) -> dict[str, float]:
    return {
        "site_updates_per_s": site_updates(cfg, steps, batch) / wall,
        "sims_per_s": batch / wall,
        # sims/s of the forward model: this scheme and step run to the forward model's t_final
        FORWARD_RATE_KEY: batch / (wall * T_FORWARD / (steps * cfg.dt)),
        "us_per_step_per_sim": 1e6 * wall / (steps * batch),
    }


def solver_runner(cfg: TDGLConfig, batch: int, prng_impl: str = "threefry2x32") -> Callable[[], State]:
    """A blocking call of ``simulate_batch(presets.type15(), keys[batch], cfg)``."""
    params = presets.type15()
    keys = jax.random.split(jax.random.key(0, impl=prng_impl), batch)

    def run() -> State:
        return jax.block_until_ready(simulate_batch(params, keys, cfg))

    return run


@functools.cache
def batched_forward(cfg: TDGLConfig, observation: Observation = OBSERVATION) -> Callable[..., jax.Array]:
    """``jax.jit(jax.vmap(forward))`` over params and keys: the package's forward model, the sbi
    simulator's computation (``TDGLSimulator._run`` compiles its two halves, the quench and the
    image, as two programs), one compilation per (config, batch)."""
    return jax.jit(jax.vmap(lambda p, k: forward(p, k, cfg, observation)))


def forward_inputs(batch: int, prng_impl: str = "threefry2x32") -> tuple[Any, jax.Array]:
    """``(params, keys)`` of ``batch`` forward runs at ``presets.type15()``, sharded like the sbi simulator's."""
    params = broadcast_params(presets.type15(), batch)
    keys = jax.random.split(jax.random.key(0, impl=prng_impl), batch)
    return shard_batch(params, keys)


def forward_runner(cfg: TDGLConfig, batch: int, prng_impl: str = "threefry2x32") -> Callable[[], jax.Array]:
    """A blocking call of the jitted, vmapped ``forward`` on ``batch`` runs of ``presets.type15()``."""
    fn = batched_forward(cfg)
    params, keys = forward_inputs(batch, prng_impl)

    def run() -> jax.Array:
        return jax.block_until_ready(fn(params, keys))

    return run


def time_jax(variants: dict[str, tuple[TDGLConfig, str, bool]], batch: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Compile and steady-state times for ``{name: (cfg, prng_impl, through_forward)}``, interleaved:
    ``simulate_batch`` (the quench alone), or the jitted, vmapped ``forward`` when ``through_forward``.

    ``compile_s`` is the first call minus the best steady-state call (tracing, lowering and XLA
    compilation; noisy when a run is long); ``compile_jax_s`` is JAX's own measurement of the same."""
    runners = {
        name: (forward_runner if fwd else solver_runner)(cfg, batch, impl)
        for name, (cfg, impl, fwd) in variants.items()
    }
    res = interleaved(runners, repeats)
    for name, (cfg, impl, fwd) in variants.items():
        r = res[name]
        out = r.pop("_out")
        arr = out if fwd else out.psi
        r.update(
            batch=batch,
            steps=cfg.steps,
            prng_impl=impl,
            timed="forward" if fwd else "simulate_batch",
            **({"image_dtype": str(arr.dtype)} if fwd else {"psi_dtype": str(arr.dtype)}),
            finite=bool(np.isfinite(np.asarray(arr)).all()),
            **_rates(cfg, cfg.steps, batch, r["wall_s"]),
        )
    return res


def time_forward_model(cfg: TDGLConfig, batch: int, repeats: int, prng_impl: str) -> dict[str, Any]:
    """The forward model at full length (``cfg.steps`` steps to ``cfg.t_final``), jitted and vmapped
    ``forward`` at ``batch``: measured sims/s of the forward model, nothing scaled."""
    r = interleaved({"forward": forward_runner(cfg, batch, prng_impl)}, repeats)["forward"]
    out = r.pop("_out")
    r.update(
        batch=batch,
        steps=cfg.steps,
        t_final=cfg.t_final,
        cfg=cfg.to_dict(),
        prng_impl=prng_impl,
        image_shape=list(out.shape[1:]),
        finite=bool(np.isfinite(np.asarray(out)).all()),
        **_rates(cfg, cfg.steps, batch, r["wall_s"]),
    )
    return r


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "kind"))
def _noise_only(keys: jax.Array, cfg: TDGLConfig, steps: int, kind: str) -> jax.Array:
    """Draw the solver's per-step noise (``2C+2`` unit-variance fields per step) and sum it.

    Mirrors ``_solver._noise``: ``kind="threefry"`` is ``normal(fold_in(key, k))``, ``"hash"`` is
    the counter-based ``hash_uniform(seed, k)``; so its cost can be compared with a full step."""
    nx, ny = cfg.shape
    shape = (2 * cfg.components + 2, nx, ny)

    def one(key: jax.Array) -> jax.Array:
        seed = jax.random.bits(key, (2,), jnp.uint32)

        def body(acc: jax.Array, k: jax.Array) -> tuple[jax.Array, None]:
            if kind == "hash":
                return acc + hash_uniform(seed, k, shape, cfg.real_dtype), None
            return acc + jax.random.normal(jax.random.fold_in(key, k), shape, cfg.real_dtype), None

        acc, _ = jax.lax.scan(body, jnp.zeros(shape, cfg.real_dtype), jnp.arange(steps))
        return acc

    return jax.vmap(one)(keys)


def noise_runner(
    cfg: TDGLConfig, batch: int, kind: str = "threefry", prng_impl: str = "threefry2x32"
) -> Callable[[], jax.Array]:
    """A blocking call drawing (and summing) the ``kind`` noise of ``cfg.steps`` steps for ``batch`` runs."""
    keys = jax.random.split(jax.random.key(0, impl=prng_impl), batch)

    def run() -> jax.Array:
        return jax.block_until_ready(_noise_only(keys, cfg, cfg.steps, kind))

    return run


def time_numpy(cfg: TDGLConfig, steps: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Best wall time of ``steps`` NumPy reference steps of one system (float64; noise drawn each step)."""
    ref = NumpyTDGL(cfg)
    params = presets.type15()
    rng = np.random.default_rng(seed)
    nx, ny = cfg.shape
    C = cfg.components
    n_noise = 2 * C + 2
    psi0 = cfg.init_noise * (rng.standard_normal((C, nx, ny)) + 1j * rng.standard_normal((C, nx, ny)))
    zeros = np.zeros((nx, ny))  # torus: the background carries the field, dynamic links start at 0

    def run() -> None:
        psi, a_x, a_y = psi0, zeros, zeros
        for _ in range(steps):
            noise = rng.standard_normal((n_noise, nx, ny)) if cfg.thermal else None
            psi, a_x, a_y = ref.step(psi, a_x, a_y, params, noise)
        if not np.isfinite(psi).all():
            raise FloatingPointError("NumPy reference run diverged")

    def draw_only() -> None:
        for _ in range(steps):
            rng.standard_normal((n_noise, nx, ny))

    run()  # warm-up
    walls = _best_of(run, repeats)
    best = min(walls)
    noise_s = min(_best_of(draw_only, repeats)) if cfg.thermal else 0.0
    return {
        "batch": 1,
        "steps": steps,
        "dtype": "float64",
        "wall_s": best,
        "wall_median_s": float(np.median(walls)),
        "noise_draw_s": noise_s,
        "noise_fraction": noise_s / best,
        **_rates(cfg, steps, 1, best),
    }


# --------------------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Compile and run the jitted, vmapped ``forward`` of one configuration in this (fresh) process;
    report RSS and XLA memory.

    Run by :func:`measure_memory` as ``solver_throughput.py --memory-child SPEC`` so that the peaks
    of different configurations do not mix."""
    cfg = TDGLConfig.from_dict(spec["cfg"])
    batch = int(spec["batch"])
    jax.devices()  # initialise the backend before the baseline
    rss_base = _rss_bytes()
    params, keys = forward_inputs(batch)
    t0 = time.perf_counter()
    compiled = batched_forward(cfg).lower(params, keys).compile()
    compile_s = time.perf_counter() - t0
    peak_compile = _max_rss_bytes()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, keys))
    run_s = time.perf_counter() - t0
    peak_run = _max_rss_bytes()
    ma = compiled.memory_analysis()
    xla = {
        name: int(getattr(ma, name))
        for name in (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
            "peak_memory_in_bytes",
        )
        if ma is not None and hasattr(ma, name)
    }
    xla["total_in_bytes"] = sum(
        xla.get(k, 0) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    ) - xla.get("alias_size_in_bytes", 0)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "batch": batch,
        "steps": cfg.steps,
        "cfg": spec["cfg"],
        "timed": "forward",
        "compile_s": compile_s,
        "run_s": run_s,
        "rss_baseline_bytes": rss_base,
        "rss_peak_after_compile_bytes": peak_compile,
        "rss_peak_bytes": peak_run,
        "rss_peak_increase_bytes": peak_run - rss_base,
        "xla": xla,
        "device_peak_bytes_in_use": stats.get("peak_bytes_in_use"),
    }


def measure_memory(cfg: TDGLConfig, batch: int, timeout_s: float = 600) -> dict[str, Any]:
    """Run :func:`memory_child` in a subprocess and return its report (or the error)."""
    spec = json.dumps({"cfg": cfg.to_dict(), "batch": batch})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"batch": batch, "error": f"child exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    """Versions, devices, CPU and XLA settings of this run."""
    devices = jax.devices()
    return {
        **machine(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devices],
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "env": {
            k: os.environ[k]
            for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "OMP_NUM_THREADS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")
            if k in os.environ
        },
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "jax_default_prng_impl": str(jax.config.jax_default_prng_impl),
    }


# ------------------------------------------------------------------------------------- reporting


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _jax_row(results: dict[str, Any], case: str, batch: int) -> dict[str, Any] | None:
    return next((r for r in results["jax"].get(case, []) if r["batch"] == batch), None)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue with the measured figure and PASS/FAIL (n/a when not measured)."""
    targets = []
    gpu = results["env"]["backend"] == "gpu"
    ref = _jax_row(results, "dynamic", RATIO_BATCH)
    su = ref["site_updates_per_s"] if ref else None
    targets.append(
        {
            "target": f">= {TARGET_SITE_UPDATES / 1e6:.0f} M site-updates/s at batch {RATIO_BATCH}, noise on (CPU)",
            "measured": None if su is None else f"{su / 1e6:.1f} M/s",
            "ok": None if su is None or gpu else su >= TARGET_SITE_UPDATES,
        }
    )
    npy = results.get("numpy", {}).get("dynamic")
    ratio = su / npy["site_updates_per_s"] if su and npy else None
    targets.append(
        {
            "target": f">= {TARGET_NUMPY_RATIO:.0f}x the NumPy step (JAX batch {RATIO_BATCH} / NumPy, site-updates/s)",
            "measured": None if ratio is None else f"{ratio:.1f}x",
            "ok": None if ratio is None else ratio >= TARGET_NUMPY_RATIO,
        }
    )
    mem = results.get("memory")
    if mem and "error" not in mem:
        peak = mem["device_peak_bytes_in_use"] if gpu and mem.get("device_peak_bytes_in_use") else None
        used = peak if peak is not None else max(mem["rss_peak_increase_bytes"], mem["xla"]["total_in_bytes"])
        what = "device peak" if peak is not None else "max(peak RSS increase, XLA arg+out+temp)"
        targets.append(
            {
                "target": f"batch {mem['batch']} within {TARGET_MEMORY_BYTES / 1e9:.0f} GB ({what})",
                "measured": f"{used / 1e9:.3f} GB",
                "ok": used <= TARGET_MEMORY_BYTES,
            }
        )
    else:
        targets.append({"target": "batch 256 within 2 GB", "measured": None, "ok": None})
    t_fwd = results["forward_model"]["t_final"]
    sk = _jax_row(results, SKROCK_CASE, RATIO_BATCH)
    if ref and sk:
        targets.append(
            {
                "target": f"(no target) sims/s of the forward model (t = {t_fwd:g}), batch {RATIO_BATCH}: "
                "SK-ROCK (the default forward model) vs Euler",
                "measured": f"{sk[FORWARD_RATE_KEY]:.2f} vs {ref[FORWARD_RATE_KEY]:.2f} sims/s "
                f"({sk[FORWARD_RATE_KEY] / ref[FORWARD_RATE_KEY]:.2f}x)",
                "ok": None,
            }
        )
    full = results.get("forward")
    rates = [r[FORWARD_RATE_KEY] for r in results["jax"].get(SKROCK_CASE, [])]
    rates += [full["sims_per_s"]] if full else []
    best = max(rates, default=None)
    targets.append(
        {
            "target": f"GPU >= {TARGET_GPU_SIMS:.0f} sims/s of the forward model "
            f"({'x'.join(map(str, results['forward_model']['shape']))}, t = {t_fwd:g}; best batch)",
            "measured": None if best is None else f"{best:.1f} sims/s on {results['env']['backend']}",
            "ok": (best >= TARGET_GPU_SIMS) if (gpu and best is not None) else None,
        }
    )
    return targets


def to_markdown(results: dict[str, Any]) -> str:
    """The report as markdown: throughput table, NumPy baseline, memory, profile, targets, environment."""
    env = results["env"]
    s = results["settings"]
    cfg0 = results["cases"][0]["cfg"]
    fwd = results["forward_model"]
    t_fwd = fwd["t_final"]
    out = [
        "# Solver throughput",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- backend: {env['backend']} ({', '.join(env['devices'])}), {env['cpu_count']} CPUs "
        f"({env['cpu_affinity']} usable, {env['cpu_model'] or 'unknown model'}), "
        f"load average at start {', '.join(f'{x:.2f}' for x in env['loadavg_start'])}",
        f"- jax {env['jax']} / jaxlib {env['jaxlib']}, numpy {env['numpy']}, python {env['python']}, "
        f"XLA_FLAGS=`{env['XLA_FLAGS']}`, git {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}",
        f"- grid {s['size']}x{s['size']}, 2 components, h={cfg0['h']}, dt={cfg0['dt']}, {cfg0['boundary']}, "
        "`presets.type15()`; "
        f"{s['steps']} steps per measurement (capped at batch·steps <= {s['max_sim_steps'] or 'inf'}), "
        f"best of {s['repeats']} (after one compile call; configs of one batch "
        "size interleaved round-robin); compile s = first call minus best, compile s (jax) = trace + lower + XLA "
        "compile from `jax.monitoring`; "
        f"site-updates = nx·ny·components·steps·batch (SK-ROCK: times its stages, i.e. force evaluations; "
        "the per-step kernel figure); "
        f"sims/s fwd = sims/s of the forward model, i.e. scaled to its snapshot time t = {t_fwd:g} "
        f"(`presets.forward_model().t_final`) with the row's scheme and step "
        f"(the forward model, {fwd['scheme']} s = {fwd['stages']} at dt = {fwd['dt']}, covers it in {fwd['steps']} "
        "steps); the forward model's rows are timed through the jitted, vmapped `glsbi_plugin.physics.forward`, "
        "the others through `simulate_batch`",
        "",
        "## JAX kernels (`simulate_batch`) and the forward model (`forward`)",
        "",
        "| config | batch | steps | compile s | compile s (jax) | wall s (best) | wall s (median) | M site-upd/s |"
        f" sims/s | sims/s fwd (t = {t_fwd:g}) | µs/step/sim |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in results["cases"]:
        for r in results["jax"].get(case["name"], []):
            flag = "" if r["finite"] else " (non-finite!)"
            out.append(
                f"| {case['name']}{flag} | {r['batch']} | {r['steps']} | {r['compile_s']:.2f} | "
                f"{r['compile_jax_s']:.2f} | {r['wall_s']:.3f} | "
                f"{r['wall_median_s']:.3f} | {r['site_updates_per_s'] / 1e6:.1f} | {_fmt(r['sims_per_s'])} | "
                f"{_fmt(r[FORWARD_RATE_KEY])} | {r['us_per_step_per_sim']:.1f} |"
            )
    out += ["", "Configs:", ""]
    out += [f"- **{c['name']}**: {c['note']}" for c in results["cases"]]
    noise = results.get("noise_fraction_by_batch", {})
    if noise:
        out += [
            "",
            "Share of step time attributable to noise, `1 - wall(noise off) / wall(noise on)`: "
            + ", ".join(f"batch {b}: {f:.0%}" for b, f in noise.items()),
        ]
    gauge = results.get("dynamic_gauge_fraction_by_batch", {})
    if gauge:
        out += [
            "Share attributable to the dynamic gauge field, `1 - wall(frozen) / wall(dynamic)` (both noise on): "
            + ", ".join(f"batch {b}: {f:.0%}" for b, f in gauge.items()),
        ]
    full = results.get("forward")
    if full:
        out += [
            "",
            f"## The forward model at full length (`presets.forward_model({s['size']})`, jitted, vmapped `forward`)",
            "",
            "| batch | steps | t | compile s | compile s (jax) | wall s (best) | wall s (median) | sims/s | "
            "M site-upd/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {full['batch']} | {full['steps']} | {full['t_final']:g} | {full['compile_s']:.2f} | "
            f"{full['compile_jax_s']:.2f} | {full['wall_s']:.3f} | {full['wall_median_s']:.3f} | "
            f"{_fmt(full['sims_per_s'])} | {full['site_updates_per_s'] / 1e6:.1f} |",
            "",
            f"Measured end to end ({full['cfg']['scheme']}, s = {full['cfg']['stages']}, dt = {full['cfg']['dt']}, "
            f"images {tuple(full['image_shape'])}{'' if full['finite'] else ', non-finite!'}): no scaling.",
        ]
    if results.get("numpy"):
        out += [
            "",
            "## NumPy reference step (`NumpyTDGL.step`, one system, float64, per-system loop)",
            "",
            "| config | steps | wall s (best) | M site-upd/s | ms/step | noise draw share | JAX / NumPy |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, r in results["numpy"].items():
            ratios = results["numpy_ratio"].get(name) or []
            ratio_txt = "; ".join(f"{q['ratio']:.1f}x (JAX {q['jax_case']}, batch {q['jax_batch']})" for q in ratios)
            out.append(
                f"| {name} | {r['steps']} | {r['wall_s']:.3f} | {r['site_updates_per_s'] / 1e6:.2f} | "
                f"{1e3 * r['wall_s'] / r['steps']:.2f} | {r['noise_fraction']:.0%} | {ratio_txt or 'n/a'} |"
            )
    mem = results.get("memory")
    if mem:
        out += ["", f"## Memory at batch {mem['batch']} (fresh subprocess, the forward model through `forward`)", ""]
        if "error" in mem:
            out.append(f"failed: {mem['error']}")
        else:
            xla = mem["xla"]
            gib = 1024**3
            out += [
                "| quantity | value |",
                "|---|---:|",
                f"| RSS baseline (after imports) | {mem['rss_baseline_bytes'] / gib:.3f} GiB |",
                f"| peak RSS after compile | {mem['rss_peak_after_compile_bytes'] / gib:.3f} GiB |",
                f"| peak RSS after run | {mem['rss_peak_bytes'] / gib:.3f} GiB |",
                f"| **peak RSS increase** | **{mem['rss_peak_increase_bytes'] / gib:.3f} GiB** |",
                f"| XLA argument bytes | {xla.get('argument_size_in_bytes', 0) / 2**20:.2f} MiB |",
                f"| XLA output bytes | {xla.get('output_size_in_bytes', 0) / 2**20:.2f} MiB |",
                f"| XLA temp bytes | {xla.get('temp_size_in_bytes', 0) / 2**20:.2f} MiB |",
                f"| **XLA arg+out+temp−alias** | **{xla['total_in_bytes'] / 2**20:.2f} MiB** |",
                f"| compile / run ({mem['steps']} steps) | {mem['compile_s']:.2f} s / {mem['run_s']:.2f} s |",
            ]
            if mem.get("device_peak_bytes_in_use"):
                out.append(f"| device peak bytes in use | {mem['device_peak_bytes_in_use'] / gib:.3f} GiB |")
    prof = results.get("profile")
    if prof:
        b = prof["batch"]
        out += [
            "",
            f"## Profile (batch {b}, {prof['steps']} steps, the Euler kernel config `dynamic`)",
            "",
            "| measurement (interleaved, best of repeats) | wall s | relative to full step |",
            "|---|---:|---:|",
        ]
        runs = prof["runs"]
        full = next(iter(runs.values()))["wall_s"]
        out += [f"| {label} | {r['wall_s']:.3f} | {r['wall_s'] / full:.0%} |" for label, r in runs.items()]
        out += [
            "",
            f"Noise share of the full step (`{prof['noise']}` noise) by difference: "
            f"{prof['noise_share_by_difference']:.0%}; by the noise-only kernel: {prof['noise_share_by_kernel']:.0%}. "
            f"With threefry noise, by difference: {prof['threefry_noise_share_by_difference']:.0%}.",
        ]
    out += ["", "## Targets (from the issue)", "", "| target | measured | status |", "|---|---|---|"]
    out += [f"| {t['target']} | {t['measured'] or 'n/a'} | {_check(t['ok'])} |" for t in results["targets"]]
    out += [
        "",
        f"Total benchmark time: {results['total_s']:.0f} s; load average at end "
        f"{', '.join(f'{x:.2f}' for x in results['loadavg_end'])}.",
        "",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ main


def _noise_name(cfg: TDGLConfig) -> str:
    return str(getattr(cfg, "noise", "threefry"))


def build_cases(size: int, steps: int, batches: Sequence[int], like_batch: int) -> list[Case]:
    """The configurations of the sweep (all 2-component, periodic, h and each scheme's step from
    :func:`presets.forward_model <glsbi_plugin.physics.presets.forward_model>`)."""
    base = presets.forward_model(size, steps=steps, scheme="euler")
    default_noise = _noise_name(base)
    cases = [
        Case(
            "dynamic",
            base,
            tuple(batches),
            f"explicit Euler, dt = {base.dt} (`presets.forward_model(scheme='euler')`): float32, dynamic gauge, "
            f"noise on (`noise={default_noise!r}`); the kernel rows",
        ),
    ]
    if default_noise != "threefry":
        cases.append(
            Case(
                "dynamic, threefry noise",
                base.replace(noise="threefry"),
                tuple(batches),
                "float32, dynamic gauge, Gaussian noise from `jax.random.normal(fold_in(key, k))` "
                "(the solver before the counter-based noise)",
            )
        )
    d = presets.forward_model(size, steps=steps)
    cases.append(
        Case(
            SKROCK_CASE,
            d,
            tuple(batches),
            f"the package's forward model (`presets.forward_model()` = `glsbi_plugin.DEFAULT_CONFIG`): "
            f"{d.scheme}, {d.stages} stages, dt = {d.dt}, noise on, timed through the jitted, vmapped "
            "`glsbi_plugin.physics.forward` (images of the default channels); steps cover the same simulated time "
            "as the Euler rows",
            forward=True,
        )
    )
    return cases + [
        Case("dynamic, no noise", base.replace(thermal=False), tuple(batches), "float32, dynamic gauge, thermal=False"),
        Case(
            "frozen", base.replace(gauge="frozen"), tuple(batches), f"float32, frozen gauge, noise on ({default_noise})"
        ),
        Case(
            "frozen, no noise",
            base.replace(gauge="frozen", thermal=False),
            (like_batch,),
            "float32, frozen gauge, thermal=False (deterministic part of the frozen step)",
        ),
        Case(
            "frozen f64 no noise",
            base.replace(gauge="frozen", dtype="float64", thermal=False),
            (like_batch,),
            "the seed's model (frozen gauge, float64, no noise), like-for-like with the seed",
        ),
    ]


def run_profile(cfg: TDGLConfig, batch: int, repeats: int) -> dict[str, Any]:
    """Noise breakdown at one batch size: on vs off, frozen gauge, noise-only kernel, PRNG impls."""
    _log(f"profile: batch {batch}, {cfg.steps} steps")
    tf = PRNG_IMPLS[0]
    kind = _noise_name(cfg)
    threefry = cfg.replace(noise="threefry") if kind != "threefry" else cfg
    full_name = f"full step, noise on ({kind})"
    variants = {
        full_name: (cfg, tf),
        "full step, noise off": (cfg.replace(thermal=False), tf),
        f"frozen gauge, noise on ({kind})": (cfg.replace(gauge="frozen"), tf),
        "frozen gauge, noise off": (cfg.replace(gauge="frozen", thermal=False), tf),
        **{f"full step, noise on (threefry, {impl} keys)": (threefry, impl) for impl in PRNG_IMPLS},
    }
    runners = {name: solver_runner(c, batch, impl) for name, (c, impl) in variants.items()}
    if kind != "threefry":
        runners[f"noise only, draw + sum ({kind})"] = noise_runner(cfg, batch, kind)
    runners.update(
        {
            f"noise only, draw + sum (threefry, {impl} keys)": noise_runner(cfg, batch, "threefry", impl)
            for impl in PRNG_IMPLS
        }
    )
    runs = interleaved(runners, repeats)
    for r in runs.values():
        r.pop("_out")
    full = runs[full_name]["wall_s"]
    noise_only = runs[
        f"noise only, draw + sum ({kind})" if kind != "threefry" else f"noise only, draw + sum (threefry, {tf} keys)"
    ]
    tf_full = runs[f"full step, noise on (threefry, {tf} keys)"]["wall_s"]
    return {
        "batch": batch,
        "steps": cfg.steps,
        "noise": kind,
        "runs": runs,
        "noise_share_by_difference": 1 - runs["full step, noise off"]["wall_s"] / full,
        "noise_share_by_kernel": noise_only["wall_s"] / full,
        "threefry_noise_share_by_difference": 1 - runs["full step, noise off"]["wall_s"] / tf_full,
    }


def steps_for_batch(steps: int, batch: int, max_sim_steps: int) -> int:
    """Steps of one timed call: ``steps``, capped at ``max_sim_steps / batch`` (at least 20) when the cap is > 0.

    The cost per step does not depend on the number of steps (one ``lax.scan``), so large CPU
    batches can be timed on fewer steps to keep the benchmark short."""
    if max_sim_steps <= 0:
        return steps
    return max(min(steps, max_sim_steps // batch), min(steps, 20))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batches 1 8, 20 steps, forward model at batch 8, memory at batch 32",
    )
    p.add_argument("--batches", type=int, nargs="+", help=f"batch sizes (default {CPU_BATCHES}; GPU {GPU_BATCHES})")
    p.add_argument("--steps", type=int, help="Euler steps per measurement (default 200; 20 with --quick)")
    p.add_argument(
        "--max-sim-steps",
        type=int,
        help="cap batch*steps of one timed call (fewer steps at large batch; default 12800 on CPU, 0 = no cap on GPU)",
    )
    p.add_argument("--repeats", type=int, default=3, help="steady-state repeats, best is reported (default 3)")
    p.add_argument(
        "--size", type=int, default=FORWARD_MODEL.shape[0], help="grid side (default: the forward model's, 64)"
    )
    p.add_argument("--numpy-steps", type=int, help="steps of the NumPy reference run (default: --steps)")
    p.add_argument("--memory-batch", type=int, help="batch of the memory measurement (default 256; 32 with --quick)")
    p.add_argument(
        "--memory-steps", type=int, default=20, help="steps of the memory run (memory does not grow with steps)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocess")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference")
    p.add_argument(
        "--forward-batch",
        type=int,
        help=f"batch of the full-length forward-model run (default {RATIO_BATCH}; 8 with --quick)",
    )
    p.add_argument("--no-forward", action="store_true", help="skip the full-length forward-model run")
    p.add_argument("--profile", action="store_true", help="noise share of the step time and PRNG implementations")
    p.add_argument("--prng-impl", default=PRNG_IMPLS[0], choices=PRNG_IMPLS, help="PRNG of the keys (sweep)")
    p.add_argument("--profile-batch", type=int, help=f"batch of --profile (default {RATIO_BATCH}; 8 with --quick)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output folder")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu = jax.default_backend() == "gpu"
    if args.steps is None:
        args.steps = 20 if args.quick else 200
    if args.batches is None:
        args.batches = [1, 8] if args.quick else list(GPU_BATCHES if gpu else CPU_BATCHES)
    if args.max_sim_steps is None:
        args.max_sim_steps = 0 if gpu else 12800
    if args.numpy_steps is None:
        args.numpy_steps = args.steps
    if args.memory_batch is None:
        args.memory_batch = 32 if args.quick else 256
    if args.profile_batch is None:
        args.profile_batch = 8 if args.quick else RATIO_BATCH
    if args.forward_batch is None:
        args.forward_batch = 8 if args.quick else RATIO_BATCH
    if args.repeats < 1 or args.steps < 1 or min(args.batches) < 1:
        p.error("--repeats, --steps and --batches must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    t_start = time.perf_counter()
    env = environment()
    _log(f"backend {env['backend']}, devices {env['devices']}, XLA_FLAGS={env['XLA_FLAGS']!r}")
    like_batch = RATIO_BATCH if RATIO_BATCH in args.batches or not args.quick else max(args.batches)
    cases = build_cases(args.size, args.steps, args.batches, like_batch)
    fwd_cfg = presets.forward_model(args.size)  # the production forward model on this grid
    results: dict[str, Any] = {
        "env": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "memory_child"},
        "forward_model": {**fwd_cfg.to_dict(), "t_final": fwd_cfg.t_final},
        "cases": [
            {
                "name": c.name,
                "note": c.note,
                "cfg": c.cfg.to_dict(),
                "timed": "forward" if c.forward else "simulate_batch",
            }
            for c in cases
        ],
        "jax": {},
    }
    for b in sorted({b for c in cases for b in c.batches}):
        steps_b = steps_for_batch(args.steps, b, args.max_sim_steps)
        # every case simulates the same time: steps_b Euler steps of the base dt
        variants = {
            c.name: (
                presets.run_to(c.cfg, steps_b * cases[0].cfg.dt),
                args.prng_impl,
                c.forward,
            )
            for c in cases
            if b in c.batches
        }
        for name, r in time_jax(variants, b, args.repeats).items():
            results["jax"].setdefault(name, []).append(r)
            _log(
                f"{name:>20} batch {b:>5}: compile {r['compile_s']:.2f} s (jax {r['compile_jax_s']:.2f} s), "
                f"wall {r['wall_s']:.3f} s, {r['site_updates_per_s'] / 1e6:.1f} M site-upd/s, "
                f"{r[FORWARD_RATE_KEY]:.2f} sims/s of the forward model (t = {T_FORWARD:g})"
            )
    walls = {c: {r["batch"]: r["wall_s"] for r in rows} for c, rows in results["jax"].items()}
    results["noise_fraction_by_batch"] = {
        b: 1 - walls["dynamic, no noise"][b] / w for b, w in walls["dynamic"].items() if b in walls["dynamic, no noise"]
    }
    results["dynamic_gauge_fraction_by_batch"] = {
        b: 1 - walls["frozen"][b] / w for b, w in walls["dynamic"].items() if b in walls["frozen"]
    }
    results["numpy"], results["numpy_ratio"] = {}, {}
    if not args.no_numpy:
        base = cases[0].cfg
        ref_batch = RATIO_BATCH if RATIO_BATCH in walls["dynamic"] else max(walls["dynamic"])
        for name, cfg, jax_cases, jax_batch in (
            ("dynamic", base, ("dynamic", "dynamic, threefry noise"), ref_batch),
            ("frozen no noise", base.replace(gauge="frozen", thermal=False), ("frozen f64 no noise",), like_batch),
        ):
            r = time_numpy(cfg, args.numpy_steps, args.repeats)
            results["numpy"][name] = r
            results["numpy_ratio"][name] = [
                {"jax_case": c, "jax_batch": jax_batch, "ratio": jr["site_updates_per_s"] / r["site_updates_per_s"]}
                for c in jax_cases
                if (jr := _jax_row(results, c, jax_batch))
            ]
            _log(
                f"numpy {name}: {r['site_updates_per_s'] / 1e6:.2f} M site-upd/s, "
                f"{1e3 * r['wall_s'] / r['steps']:.2f} ms/step"
            )
    if not args.no_forward:
        _log(f"forward model: {fwd_cfg.steps} steps to t = {fwd_cfg.t_final:g}, batch {args.forward_batch}")
        r = results["forward"] = time_forward_model(fwd_cfg, args.forward_batch, args.repeats, args.prng_impl)
        _log(
            f"forward model batch {r['batch']}: compile {r['compile_s']:.2f} s, wall {r['wall_s']:.3f} s, "
            f"{r['sims_per_s']:.2f} sims/s"
        )
    if not args.no_memory:
        mem_cfg = fwd_cfg.replace(steps=args.memory_steps)
        _log(f"memory: forward model at batch {args.memory_batch} in a subprocess")
        results["memory"] = measure_memory(mem_cfg, args.memory_batch)
    if args.profile:
        results["profile"] = run_profile(cases[0].cfg, args.profile_batch, args.repeats)
    results["targets"] = evaluate_targets(results)
    results["total_s"] = time.perf_counter() - t_start
    results["loadavg_end"] = list(os.getloadavg())
    md = to_markdown(results)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "solver_throughput_quick" if args.quick else "solver_throughput"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(md)
    _log(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
