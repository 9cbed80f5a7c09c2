#!/usr/bin/env python
r"""Does SK-ROCK with a long step reproduce the explicit scheme's quench statistics, and how much faster?

For a few θ = (η, B) of the default prior, the default forward model (``presets.forward_model()``:
64², h = 0.5, two bands, dynamic A, T = 0.001, snapshot at t = ``presets.T_FINAL`` = 200) is run
with ``--seeds`` independent seeds per scheme:

- the explicit Euler–Maruyama reference (``presets.SCHEME_STEPS["euler"]``: dt = 0.08) and finer
  Euler runs (dt / 2, dt / 4), whose differences show the reference's own time-discretisation error;
- SK-ROCK with s stages at a step close to (below) its stability bound (the package's default
  forward model, ``presets.SCHEME_STEPS["skrock"]``: s = 2, dt = 0.3125), and at longer steps.

Per simulation it records statistics of the final state: free energy per unit area (as is, and
after a T = 0 relaxation of t = 4 that removes the thermal fluctuations but not the vortices), mean
:math:`|\psi_1|^2` and :math:`|\psi_2|^2`, their spatial standard deviations (a measure of the
type-1.5 clustering), the number of vortex plaquettes per band (masked windings, 0.1·u) and of
plaquettes where the bands' windings differ (fractional vortices). Each scheme's ensemble mean is
compared with the Euler reference's mean, ``z = Δmean / sqrt(se₁² + se₂²)``, and with the dt → 0
limit estimated from two Euler runs (weak order 1: ``2·mean(dt/2) − mean(dt)``).
Agreement "within noise" means |z| of order 1; where the Euler reference itself is off the limit by
many standard errors (thermal fluctuations of the stiff lattice modes, which each scheme samples
with its own O(dt) bias), the fair question is which scheme lies closer to the limit.

A second part looks at the quench itself (t = 20, 48², 256 seeds at two θ): the fraction of runs
whose strong band still holds an antivortex, i.e. pairs formed by the quench and not yet
annihilated. It is the most sensitive of these checks: stable steps that are too long for the
fast early dynamics (dt = 0.625, 1.0) leave 1.5-2x as many pairs as Euler; dt = 0.3125 does not.

The same run times each scheme's forward model (the jitted, vmapped
:func:`glsbi_plugin.physics.forward`, as the sbi simulator runs it; batch ``--batch``, best of
``--repeats``, after one compile call) so the speed-up is a side-by-side ratio on this machine.

Run::

    .venv/bin/python benchmarks/scheme_agreement.py            # ~10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/scheme_agreement.py --quick    # smoke run (small grid, few seeds)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine  # benchmarks/_machine.py (the script's folder is on sys.path)

from glsbi_plugin.physics import (
    TDGLConfig,
    densities,
    forward,
    free_energy,
    integrate,
    presets,
    shard_batch,
    simulate_batch,
    stability_bounds,
    winding,
)
from glsbi_plugin.physics._forward import broadcast_params
from glsbi_plugin.physics._skrock import skrock_stability

THETAS = ((0.0, 0.05), (0.15, 0.07), (0.3, 0.09))
T_FINAL = presets.T_FINAL  # the forward model's snapshot time
#: The explicit reference and the forward model's scheme, both at their default step (presets).
_, EULER_DT = presets.SCHEME_STEPS["euler"]
SKROCK_STAGES, SKROCK_DT = presets.SCHEME_STEPS["skrock"]
EULER_REF = f"euler dt={EULER_DT}"  # the reference of every z-score
EULER_HALF = f"euler dt={EULER_DT / 2}"  # with EULER_REF: the weak-order-1 dt → 0 extrapolation
RELAX_T = 4.0  # T = 0 relaxation before the "relaxed" energy, with Euler at its default step
STATS = (
    "energy_density",
    "relaxed_energy_density",
    "rho1_mean",
    "rho2_mean",
    "rho1_std",
    "rho2_std",
    "vortices1",
    "vortices2",
    "fractional",
)


def schemes(quick: bool) -> dict[str, TDGLConfig]:
    """The configurations compared: name → ``presets.forward_model`` with ``steps * dt = T_FINAL``.

    Euler at its default step (the reference) and at 1/2 and 1/4 of it; SK-ROCK at the forward
    model's (stages, dt), then with more stages and at 2x and 3.2x its step (the sweep)."""
    size = 32 if quick else presets.forward_model().shape[0]
    t = 40.0 if quick else T_FINAL

    def cfg(scheme: str, stages: int, dt: float) -> tuple[str, TDGLConfig]:
        c = presets.forward_model(size, t_final=t, scheme=scheme, stages=stages, dt=dt)  # type: ignore[arg-type]
        assert abs(c.t_final - t) < 1e-9, (dt, t)
        return (f"euler dt={dt}" if scheme == "euler" else f"skrock s={stages} dt={dt}"), c

    return dict(
        [
            cfg("euler", 1, EULER_DT),
            cfg("euler", 1, EULER_DT / 2),
            cfg("euler", 1, EULER_DT / 4),
            cfg("skrock", SKROCK_STAGES, SKROCK_DT),
            cfg("skrock", 3, SKROCK_DT),
            cfg("skrock", 3, 2 * SKROCK_DT),
            cfg("skrock", 4, 1.0),
        ]
    )


def transient_defects(cfg: TDGLConfig, eta: float, field: float, seeds: int, batch: int) -> dict[str, float]:
    """Early in the quench (``cfg.t_final`` = 20): the fraction of runs whose strong band holds an
    antivortex, and the mean number of antivortex plaquettes (pairs still annihilating)."""
    p = presets.type15(eta=eta, field=field)
    keys = jax.random.split(jax.random.key(99), seeds)
    anti = []
    for i in range(0, seeds, batch):
        final = simulate_batch(p, keys[i : i + batch], cfg)
        w = jax.vmap(lambda s: winding(s, p, cfg))(final)
        anti.append(np.asarray((w[:, 0] < 0).sum(axis=(1, 2))))
    a = np.concatenate(anti)
    frac = float((a > 0).mean())
    return {
        "runs_with_antivortex": frac,
        "se": float(np.sqrt(frac * (1 - frac) / len(a))),
        "mean_antivortices": float(a.mean()),
    }


def statistics(cfg: TDGLConfig, eta: float, field: float, seeds: int, batch: int) -> dict[str, np.ndarray]:
    """Final-state statistics of ``seeds`` quenches at (η, B), one array of length ``seeds`` each."""
    p = presets.type15(eta=eta, field=field)
    area = cfg.shape[0] * cfg.shape[1] * cfg.h**2
    relax = presets.run_to(cfg.replace(scheme="euler", stages=1, dt=EULER_DT, thermal=False), RELAX_T)
    relax_steps = relax.steps

    @jax.jit
    def stats(state: Any) -> dict[str, jax.Array]:
        def one(s: Any) -> dict[str, jax.Array]:
            rho = densities(s)
            w = winding(s, p, cfg)
            # T = 0 relaxation for t = 4: removes the thermal fluctuations (whose stiff lattice
            # modes each scheme samples with its own discretisation bias) but not the vortices
            relaxed, _ = integrate(s, p, jax.random.key(0), relax, relax_steps)
            return {
                "energy_density": free_energy(s, p, cfg) / area,
                "relaxed_energy_density": free_energy(relaxed, p, cfg) / area,
                "rho1_mean": rho[0].mean(),
                "rho2_mean": rho[1].mean(),
                "rho1_std": rho[0].std(),
                "rho2_std": rho[1].std(),
                "vortices1": jnp.sum(w[0] != 0),
                "vortices2": jnp.sum(w[1] != 0),
                "fractional": jnp.sum(w[0] != w[1]),
            }

        return jax.vmap(one)(state)

    out: dict[str, list[np.ndarray]] = {k: [] for k in STATS}
    keys = jax.random.split(jax.random.key(12345), seeds)
    for i in range(0, seeds, batch):
        k = keys[i : i + batch]
        st = stats(simulate_batch(p, k, cfg))
        for name in STATS:
            out[name].append(np.asarray(st[name], np.float64))
    return {k: np.concatenate(v) for k, v in out.items()}


def _se(a: np.ndarray) -> float:
    return float(a.std(ddof=1) / np.sqrt(len(a)))


def _z(diff: float, se: float) -> float:
    return float(diff / se) if se > 0 else (0.0 if diff == 0 else float("inf"))


def time_forward(cfg: TDGLConfig, batch: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall time of one batch of the forward model at (η, B) = (0.15, 0.07):
    :func:`~glsbi_plugin.physics.forward` jitted and vmapped over params and keys, the batch
    sharded over the devices: the sbi simulator's computation (``TDGLSimulator._run`` compiles its
    two halves, the quench and the image, as two programs)."""
    p = broadcast_params(presets.type15(eta=0.15, field=0.07), batch)
    keys = jax.random.split(jax.random.key(0), batch)
    p, keys = shard_batch(p, keys)
    run = jax.jit(jax.vmap(lambda q, k: forward(q, k, cfg)))
    t0 = time.perf_counter()
    jax.block_until_ready(run(p, keys))
    first = time.perf_counter() - t0
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(p, keys))
        walls.append(time.perf_counter() - t0)
    best = min(walls)
    return {
        "compile_s": first - best,
        "wall_s": best,
        "sims_per_s": batch / best,
        "force_evals_per_step": cfg.stages,
        "steps": cfg.steps,
    }


def environment() -> dict[str, Any]:
    return {
        **machine(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=64, help="quenches per scheme and θ")
    ap.add_argument("--batch", type=int, default=32, help="vmapped batch (also the timing batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="32² grid, t = 40, 16 seeds")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 16)
        args.batch = min(args.batch, 16)
    cfgs = schemes(args.quick)
    env = environment()
    print(f"# scheme agreement ({env['date']}, git {env['git_commit']}, load {env['loadavg_start']})", flush=True)

    bounds = {}
    for eta, field in THETAS:
        dt_psi, dt_a = stability_bounds(presets.type15(eta=eta, field=field), cfgs[EULER_REF])
        bounds[f"{eta}"] = min(dt_psi, dt_a)
    euler_bound = min(bounds.values())

    timing: dict[str, dict[str, float]] = {}
    for name, cfg in cfgs.items():
        timing[name] = time_forward(cfg, args.batch, args.repeats)
        bound = euler_bound * (skrock_stability(cfg.stages) / 2 if cfg.scheme == "skrock" else 1.0)
        timing[name]["dt_over_bound"] = cfg.dt / bound
        print(f"  {name:24s} {timing[name]['sims_per_s']:8.2f} sims/s  (dt/bound {cfg.dt / bound:.2f})", flush=True)
    ref_wall = timing[EULER_REF]["wall_s"]
    for name in cfgs:
        timing[name]["speedup_vs_euler"] = ref_wall / timing[name]["wall_s"]

    results: dict[str, Any] = {}
    for eta, field in THETAS:
        key = f"eta={eta} B={field}"
        per = {name: statistics(cfg, eta, field, args.seeds, args.batch) for name, cfg in cfgs.items()}
        ref = per[EULER_REF]
        # Euler is weak order 1: 2·E[dt/2] - E[dt] estimates the dt → 0 limit
        fine = per[EULER_HALF]
        cont = {
            s: (2 * fine[s].mean() - ref[s].mean(), np.sqrt(4 * _se(fine[s]) ** 2 + _se(ref[s]) ** 2)) for s in STATS
        }
        rows = {}
        for name, st in per.items():
            rows[name] = {}
            for s in STATS:
                a, b = st[s], ref[s]
                rows[name][s] = {
                    "mean": float(a.mean()),
                    "se": _se(a),
                    "z": _z(a.mean() - b.mean(), np.hypot(_se(a), _se(b))),
                    "z_continuum": _z(a.mean() - cont[s][0], np.hypot(_se(a), cont[s][1])),
                }
        rows[f"continuum (2·euler {EULER_DT / 2} − euler {EULER_DT})"] = {
            s: {"mean": float(cont[s][0]), "se": float(cont[s][1]), "z": float("nan"), "z_continuum": 0.0}
            for s in STATS
        }
        results[key] = rows
        worst = {n: max(abs(r[s]["z_continuum"]) for s in STATS) for n, r in rows.items()}
        print(f"  {key}: max |z| vs continuum " + ", ".join(f"{n}: {z:.2f}" for n, z in worst.items()), flush=True)

    # early in the quench, where defects form and annihilate: the most sensitive test of the dynamics
    t_early, early_shape, early_seeds = (10.0, (32, 32), 64) if args.quick else (20.0, (48, 48), 256)
    transient: dict[str, Any] = {}
    for eta, field in THETAS[1:]:
        key = f"eta={eta} B={field}"
        transient[key] = {
            name: transient_defects(
                presets.run_to(cfg.replace(shape=early_shape), t_early), eta, field, early_seeds, args.batch
            )
            for name, cfg in cfgs.items()
        }
        print(
            f"  t={t_early:g} {key}: runs with an antivortex "
            + ", ".join(f"{n}: {r['runs_with_antivortex']:.3f}" for n, r in transient[key].items()),
            flush=True,
        )

    out = {
        "environment": env,
        "seeds": args.seeds,
        "batch": args.batch,
        "t_final": cfgs[EULER_REF].t_final,
        "shape": list(cfgs[EULER_REF].shape),
        "reference": EULER_REF,
        "euler_bound_dt": euler_bound,
        "configs": {n: c.to_dict() for n, c in cfgs.items()},
        "timing": timing,
        "statistics": results,
        "transient": {"t": t_early, "shape": list(early_shape), "seeds": early_seeds, "by_theta": transient},
    }
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scheme_agreement.json").write_text(json.dumps(out, indent=2))
        (args.out / "scheme_agreement.md").write_text(markdown(out))
        print(f"wrote {args.out / 'scheme_agreement.md'}")
    else:
        print(markdown(out))
    return out


def markdown(out: dict[str, Any]) -> str:
    env = out["environment"]
    lines = [
        "# SK-ROCK vs explicit Euler: quench statistics and speed",
        "",
        f"- date: {env['date']}; command: `{env['command']}`; git {env['git_commit']}",
        f"- jax {env['jax']}, devices {', '.join(env['devices'])}, {env['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in env['loadavg_start'])}",
        f"- forward model: {out['shape'][0]}x{out['shape'][1]}, `presets.type15`, t = {out['t_final']:g}; "
        f"{out['seeds']} seeds per scheme and θ; Euler stability bound over these θ: dt <= {out['euler_bound_dt']:.4f}",
        "",
        f"## Speed (same run, batch {out['batch']}, best of repeats)",
        "",
        "| scheme | steps | force evals/step | dt / stability bound | wall s | sims/s | speed-up vs "
        f"{out.get('reference', EULER_REF)} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in out["timing"].items():
        lines.append(
            f"| {name} | {t['steps']} | {t['force_evals_per_step']} | {t['dt_over_bound']:.2f} | {t['wall_s']:.3f} | "
            f"{t['sims_per_s']:.2f} | {t['speedup_vs_euler']:.2f}x |"
        )
    lines += [
        "",
        f"## Final-state statistics: mean ± s.e. (z vs {out.get('reference', EULER_REF)}; "
        "z vs the dt → 0 extrapolation)",
        "",
        "Statistics: free energy per unit area (as is; after a T = 0 relaxation of t = 4); mean and "
        "spatial std of ρ₁, ρ₂; vortex plaquettes per band "
        "(masked windings ≠ 0); plaquettes with n₁ ≠ n₂.",
    ]
    for key, rows in out["statistics"].items():
        lines += ["", f"### {key}", "", "| scheme | " + " | ".join(STATS) + " |", "|---|" + "---:|" * len(STATS)]
        for name, r in rows.items():
            cells = [
                f"{r[s]['mean']:.4g} ± {r[s]['se']:.2g} ({r[s]['z']:+.1f}; {r[s]['z_continuum']:+.1f})" for s in STATS
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tr = out["transient"]
    lines += [
        "",
        f"## Early quench: t = {tr['t']:g}, {tr['shape'][0]}², {tr['seeds']} seeds",
        "",
        "Fraction of runs whose strong band still holds an antivortex (± binomial s.e.) and the mean "
        "number of antivortex plaquettes: vortex-antivortex pairs formed by the quench and not yet "
        "annihilated. Time steps that are stable but too long for the quench leave more of them.",
        "",
        "| scheme | " + " | ".join(tr["by_theta"]) + " |",
        "|---|" + "---:|" * len(tr["by_theta"]),
    ]
    for name in out["timing"]:
        cells = [
            f"{r[name]['runs_with_antivortex']:.3f} ± {r[name]['se']:.3f} ({r[name]['mean_antivortices']:.3f})"
            for r in tr["by_theta"].values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
