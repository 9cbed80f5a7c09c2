#!/usr/bin/env python
r"""NRE_A, NRE_B, NRE_C, BNRE and NPE at several simulation budgets on the glsbi simulator.

Every method sees the same simulations: one :class:`glsbi_plugin.store.SimulationBank` (θ = (η, B)
from the default prior, the quickstart's forward model ``presets.small_forward_model()``: 48², SK-ROCK,
t = ``presets.T_SMALL`` = 80, ``--size`` and ``--steps`` change it) holds
``max(budgets)`` training rows followed by ``--num-test`` held-out rows. A budget ``b`` trains on
the bank's first ``b`` rows (so smaller budgets are subsets of larger ones; sbi holds out 10 % of
them for early stopping) with :func:`glsbi_plugin.inference.build_inference` / ``train`` and the
quickstart's small strided ResNet embedding. Every trained estimator is evaluated with a
:class:`~glsbi_plugin.inference.GridPosterior` (100x100 over the prior's box; for NPE this also
truncates the flow to the box) on the same held-out rows:

* training wall time and epochs;
* held-out log-probability of the true θ, :math:`\frac1N\sum_i \log q(\theta_i \mid x_i)`
  (normalised over the box for every method, so NRE and NPE compare), mean ± standard error;
* posterior width (mean marginal standard deviation) and RMSE of the posterior mean, per
  parameter;
* exact coverage of the 90 % central marginal intervals and of the joint 90 % HPD region, SBC KS
  p-values and TARP's ATC, from :func:`glsbi_plugin.diagnostics.calibration_report`;
* grid-posterior inference time per observation (embed x, head over the grid, 1000 samples).

The default forward model is the quickstart's (``presets.small_forward_model()``). At h = 0.5 the field
is quantised to Nφ = round(B L² / 2π) = 3–9 flux quanta over the prior (ΔB ≈ 0.011 per quantum):
the posterior width in B has that floor, which no method can beat (on 32²: 1–4 quanta, ΔB ≈ 0.025).

Run::

    .venv/bin/python benchmarks/nre_vs_npe.py                        # full run (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/nre_vs_npe.py --budgets 250 500 --methods NRE_C NPE --repeats 3
    .venv/bin/python benchmarks/nre_vs_npe.py --quick                # smoke run into a temporary directory

The full run writes ``nre_vs_npe.json``, ``nre_vs_npe.md`` and ``nre_vs_npe.png`` to ``--out``
(default ``benchmarks/results/``); the bank is kept in ``--bank`` (default
``runs/nre_vs_npe/bank.zarr``, reused, extended and completed by later runs with the same
simulator settings; the held-out rows are those after ``max(budgets)``).
``--quick`` uses tiny budgets, a 24² grid and 2 epochs, and writes everything (bank included) to a
fresh temporary directory unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine  # benchmarks/_machine.py (the script's folder is on sys.path)

from glsbi_plugin import make_prior, make_simulator
from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import METHODS, GridPosterior, build_inference, train
from glsbi_plugin.physics import presets
from glsbi_plugin.store import SimulationBank

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)  # the quickstart's
NAMES = ("eta", "field")
SMALL = presets.small_forward_model()  # the quickstart's forward model: the defaults of --size and --steps


# ------------------------------------------------------------------------------------- environment
def environment() -> dict[str, Any]:
    """Date, command, machine, versions and git state of this run."""
    return {
        **machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sbi": importlib.metadata.version("sbi"),
        "jax": importlib.metadata.version("jax"),
    }


# ------------------------------------------------------------------------------------- simulations
def load_bank(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(theta, x)`` of the first ``max(budgets) + num_test`` rows of the bank (simulated if missing)."""
    config = presets.small_forward_model(size=args.size, steps=args.steps)  # its scheme and step, this length
    simulator = make_simulator(NAMES, config=config, batch_size=args.chunk_size)
    n = max(args.budgets) + args.num_test
    path = Path(args.bank)
    t0 = time.perf_counter()
    if path.exists():  # rows are a pure function of (bank seed, chunk): a larger bank's first n rows are the same
        bank = SimulationBank.open(path, simulator)  # refuses another simulator configuration
        if bank.seed != args.seed or bank.chunk_size != args.chunk_size:
            raise SystemExit(f"{path} has seed {bank.seed} and chunk size {bank.chunk_size}; use another --bank")
        if bank.n < n:
            bank.extend(n)
    else:
        bank = SimulationBank.create(path, simulator, n, chunk_size=args.chunk_size, seed=args.seed)
    report = bank.fill(n, progress=False)
    seconds = time.perf_counter() - t0
    theta, x = bank.to_torch()
    theta, x = theta[:n], x[:n]
    info = {
        "path": str(path),
        "n": n,
        "x_shape": list(simulator.x_shape),
        "config": {**config.to_dict(), "size": args.size, "t_final": config.t_final},
        "seed": args.seed,
        "config_hash": bank.config_hash,
        "simulated_now": report.n_simulations,
        "fill_s": seconds,
    }
    print(f"bank {path}: {n} simulations of x {tuple(simulator.x_shape)} ({report.n_simulations} simulated now, "
          f"{seconds:.1f} s)", flush=True)
    return theta, x, info


# ------------------------------------------------------------------------------------- evaluation
def posterior_moments(posterior: GridPosterior, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Marginal posterior means and standard deviations ``(d,)`` from the grid."""
    means, sds = [], []
    for axis, dens in posterior.marginals(x):
        w = (dens / dens.sum()).double()
        m = float((w * axis.double()).sum())
        means.append(m)
        sds.append(math.sqrt(max(float((w * (axis.double() - m) ** 2).sum()), 0.0)))
    return np.array(means), np.array(sds)


def evaluate(estimator: torch.nn.Module, prior: Any, theta: torch.Tensor, x: torch.Tensor,
             args: argparse.Namespace) -> dict[str, Any]:
    """Held-out metrics of one trained estimator through a grid posterior."""
    t0 = time.perf_counter()
    posterior = GridPosterior(estimator, prior, resolution=args.resolution)
    build_s = time.perf_counter() - t0
    times = []
    for xi in x[: args.timing_obs]:
        t0 = time.perf_counter()
        posterior.set_default_x(xi).sample((1000,))
        times.append(time.perf_counter() - t0)
    log_probs, means, sds = [], [], []
    for th, xi in zip(theta, x, strict=True):
        log_probs.append(float(posterior.log_prob(th, x=xi)))
        m, sd = posterior_moments(posterior, xi)
        means.append(m)
        sds.append(sd)
    log_probs, means, sds = np.array(log_probs), np.array(means), np.array(sds)
    report = calibration_report(posterior, theta, x, num_posterior_samples=args.posterior_samples, seed=args.seed,
                                names=NAMES, c2st=False)
    cov90 = report.coverage_at(0.9)
    return {
        "log_prob_mean": float(log_probs.mean()),
        "log_prob_se": float(log_probs.std(ddof=1) / math.sqrt(len(log_probs))),
        "posterior_sd": sds.mean(axis=0).tolist(),
        "rmse_posterior_mean": np.sqrt(((means - theta.numpy()) ** 2).mean(axis=0)).tolist(),
        "coverage_90": cov90["grid"],
        "hpd_coverage_90": cov90["hpd"],
        "sbc_ks_pvalues": report.ks_pvalues.tolist(),
        "tarp_atc": report.tarp_atc,
        "grid_build_s": build_s,
        "infer_s_per_obs": statistics.median(times),
        "calibration_s": report.seconds,
        "calibration": report.to_dict(),
    }


def run_one(method: str, budget: int, repeat: int, prior: Any, theta: torch.Tensor, x: torch.Tensor,
            test: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed + 1000 * repeat)
    inference = build_inference(method, prior, EMBEDDING, x_shape=tuple(x.shape[1:]))
    t0 = time.perf_counter()
    estimator = train(inference, theta[:budget], x[:budget], max_epochs=args.max_epochs,
                      training_batch_size=args.batch_size)
    train_s = time.perf_counter() - t0
    row = {"method": method, "budget": budget, "repeat": repeat, "train_s": train_s,
           "epochs": int(inference.summary["epochs_trained"][-1])}
    row.update(evaluate(estimator, prior, *test, args))
    return row


# ------------------------------------------------------------------------------------- reporting
def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, budget): the mean over repeats of every scalar/vector metric."""
    keys = ["train_s", "epochs", "log_prob_mean", "log_prob_se", "posterior_sd", "rmse_posterior_mean",
            "coverage_90", "hpd_coverage_90", "tarp_atc", "infer_s_per_obs"]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for budget in sorted({r["budget"] for r in rows if r["method"] == method}):
            group = [r for r in rows if r["method"] == method and r["budget"] == budget and "error" not in r]
            if not group:
                out.append({"method": method, "budget": budget, "error": "every repeat failed"})
                continue
            agg: dict[str, Any] = {"method": method, "budget": budget, "repeats": len(group)}
            for k in keys:
                agg[k] = np.mean([r[k] for r in group], axis=0).tolist()
            if len(group) > 1:  # the spread of the held-out log-prob across training seeds
                agg["log_prob_sd_repeats"] = float(np.std([r["log_prob_mean"] for r in group], ddof=1))
            out.append(agg)
    return out


def markdown(result: dict[str, Any]) -> str:
    env, setup, table = result["environment"], result["setup"], result["aggregate"]
    bank = setup["bank"]
    lines = [
        "# NRE vs NPE at several simulation budgets",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- machine: {env['cpu_model']}, {env['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{a:.2f}' for a in env['loadavg_start'])}; torch {env['torch']} ({env['torch_threads']} "
        f"threads), sbi {env['sbi']}, jax {env['jax']}, python {env['python']}",
        f"- git {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}",
        f"- simulations: one bank of {bank['n']} ({bank['x_shape']} images, {bank['config']['size']}² torus, "
        f"{bank['config']['steps']} {bank['config']['scheme']} steps, t = {bank['config']['t_final']:g}, "
        f"seed {bank['seed']}); budget b = the "
        f"first b rows (sbi holds out 10 % for early stopping); {setup['num_test']} held-out rows for every metric",
        f"- training: at most {setup['max_epochs']} epochs, batch {setup['batch_size']}, sbi's other defaults; "
        f"embedding `{setup['embedding']}`; {setup['repeats']} training seed(s) per cell (means shown)",
        f"- evaluation: GridPosterior {setup['resolution']}² over the prior's box for every method; coverage of the "
        f"90 % central marginal intervals is exact on the grid, HPD coverage, SBC and TARP use "
        f"{setup['posterior_samples']} posterior draws per observation",
        "",
        "| method | budget | train s | epochs | log q(θ_true given x) | sd η | sd B | RMSE η | RMSE B | cov90 η | "
        "cov90 B | HPD90 | TARP ATC | infer ms/obs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['budget']} | failed: {r['error']} |" + " |" * 11)
            continue
        sd, rmse, cov = r["posterior_sd"], r["rmse_posterior_mean"], r["coverage_90"]
        lines.append(
            f"| {r['method']} | {r['budget']} | {r['train_s']:.1f} | {r['epochs']:.0f} | "
            f"{r['log_prob_mean']:.2f} ± {r['log_prob_se']:.2f} | {sd[0]:.4f} | {sd[1]:.4f} | {rmse[0]:.4f} | "
            f"{rmse[1]:.4f} | {cov[0]:.2f} | {cov[1]:.2f} | {r['hpd_coverage_90']:.2f} | {r['tarp_atc']:+.3f} | "
            f"{1e3 * r['infer_s_per_obs']:.1f} |"
        )
    n = setup["num_test"]
    band = 2 * math.sqrt(0.09 / n)
    lines += [
        "",
        f"log q: mean ± standard error over the {n} held-out pairs (higher is better; the prior's is "
        f"{setup['log_prior_density']:.2f}). sd: mean marginal posterior standard deviation; RMSE of the marginal "
        f"posterior mean. cov90: fraction of held-out θ inside the 90 % intervals (a calibrated posterior gives "
        f"0.90 ± {band:.2f}, 2 binomial s.d.); TARP ATC < 0: over-confident, > 0: under-confident. "
        f"infer: median over {setup['timing_obs']} observations of embedding x, evaluating the grid and drawing "
        "1000 samples.",
        "",
    ]
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [r for r in result["aggregate"] if "error" not in r]
    panels = [
        ("train_s", "training wall time (s)", None),
        ("log_prob_mean", "held-out log q(θ_true | x)", None),
        ("rmse_posterior_mean", "RMSE of posterior mean (η solid, B dashed)", None),
        ("posterior_sd", "posterior sd (η solid, B dashed)", None),
        ("coverage_90", "coverage of 90% intervals (η solid, B dashed)", 0.9),
        ("tarp_atc", "TARP ATC (<0 over-confident)", 0.0),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), constrained_layout=True)
    methods = list(dict.fromkeys(r["method"] for r in table))
    for ax, (key, title, ref) in zip(axes.flat, panels, strict=True):
        for i, method in enumerate(methods):
            rows = [r for r in table if r["method"] == method]
            b = [r["budget"] for r in rows]
            v = np.array([r[key] for r in rows], dtype=float)
            if key == "log_prob_mean":
                ax.errorbar(b, v, yerr=[r["log_prob_se"] for r in rows], color=f"C{i}", marker="o", capsize=3,
                            label=method)
            elif v.ndim == 2:
                ax.plot(b, v[:, 0], "o-", color=f"C{i}", label=method)
                ax.plot(b, v[:, 1], "s--", color=f"C{i}")
            else:
                ax.plot(b, v, "o-", color=f"C{i}", label=method)
        if ref is not None:
            ax.axhline(ref, color="0.4", lw=1, ls=":")
        ax.set_xscale("log")
        budgets = result["setup"]["budgets"]
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("simulation budget")
        ax.set_title(title, fontsize=10)
    axes.flat[0].legend(fontsize=8)
    env = result["environment"]
    fig.suptitle(f"NRE vs NPE on glsbi ({result['setup']['bank']['config']['size']}² torus, "
                 f"{result['setup']['num_test']} held-out sims), git {env['git_commit']}, {env['date'][:10]}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: budgets 40 80, 20 test sims, 24² grid, 32 steps, 2 epochs; temp dir output")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="simulation budgets (default 250 500 1000 2000)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods (default all)")
    p.add_argument("--num-test", type=int, default=None, help="held-out simulations (default 200)")
    p.add_argument("--size", type=int, default=None,
                   help=f"torus side in sites (default {SMALL.shape[0]}, as the quickstart)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"time steps of the small forward model's scheme ({SMALL.scheme}, dt = {SMALL.dt}; "
                   f"default {SMALL.steps}, t = {SMALL.t_final:g})")
    p.add_argument("--chunk-size", type=int, default=50, help="bank chunk size (default 50)")
    p.add_argument("--max-epochs", type=int, default=None, help="training epochs at most (default 50)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--repeats", type=int, default=1, help="training seeds per (method, budget) (default 1)")
    p.add_argument("--resolution", type=int, default=100, help="grid cells per axis (default 100)")
    p.add_argument("--posterior-samples", type=int, default=1000, help="draws per observation for SBC/TARP")
    p.add_argument("--timing-obs", type=int, default=20, help="observations timed for inference (default 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="bank seed and base training seed (default 0)")
    p.add_argument("--bank", type=Path, default=None, help="bank path (default runs/nre_vs_npe/bank.zarr)")
    p.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    args = p.parse_args(argv)
    quick = {"budgets": [40, 80], "num_test": 20, "size": 24, "steps": 32, "max_epochs": 2}
    full = {"budgets": [250, 500, 1000, 2000], "num_test": 200, "size": SMALL.shape[0], "steps": SMALL.steps,
            "max_epochs": 50}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.timing_obs = min(args.timing_obs, 5)
        args.posterior_samples = min(args.posterior_samples, 200)
    tmp = tempfile.mkdtemp(prefix="nre_vs_npe_quick_") if args.quick and args.out is None else None
    args.out = Path(tmp) if tmp else (args.out or RESULTS)
    if args.bank is None:
        args.bank = Path(tmp) / "bank.zarr" if tmp else ROOT / "runs" / "nre_vs_npe" / "bank.zarr"
    if min(args.budgets) < 10 or args.num_test < 2:
        p.error("budgets must be >= 10 and --num-test >= 2")
    torch.set_num_threads(args.threads)

    env = environment()
    theta_all, x_all, bank = load_bank(args)
    n_train = max(args.budgets)
    theta, x = theta_all[:n_train], x_all[:n_train]
    test = (theta_all[n_train:], x_all[n_train:])
    prior = make_prior(NAMES)
    rows = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # nothing may land in ./sbi-logs
        os.chdir(scratch)
        try:
            for budget in sorted(args.budgets):
                for method in args.methods:
                    for repeat in range(args.repeats):
                        try:
                            row = run_one(method, budget, repeat, prior, theta, x, test, args)
                        except Exception as e:  # noqa: BLE001 - one failing cell must not lose the run
                            row = {"method": method, "budget": budget, "repeat": repeat,
                                   "error": f"{type(e).__name__}: {e}"}
                        rows.append(row)
                        msg = row.get("error") or (
                            f"train {row['train_s']:.1f} s ({row['epochs']} epochs), log q {row['log_prob_mean']:.2f}"
                            f" ± {row['log_prob_se']:.2f}, cov90 {row['coverage_90']}, ATC {row['tarp_atc']:+.3f}")
                        print(f"{method:6s} budget {budget:5d} repeat {repeat}: {msg}", flush=True)
        finally:
            os.chdir(cwd)
    low, high = prior.support.base_constraint.lower_bound, prior.support.base_constraint.upper_bound
    result = {
        "environment": env | {"loadavg_end": list(os.getloadavg())},
        "setup": {
            "bank": bank,
            "budgets": sorted(args.budgets),
            "methods": args.methods,
            "num_test": args.num_test,
            "max_epochs": args.max_epochs,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "resolution": args.resolution,
            "posterior_samples": args.posterior_samples,
            "timing_obs": args.timing_obs,
            "embedding": EMBEDDING.to_dict(),
            "log_prior_density": float(-torch.log(high - low).sum()),
            "quick": args.quick,
        },
        "aggregate": aggregate(rows),
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # the measurements first: a report-formatting error must not lose half an hour of training
    (args.out / "nre_vs_npe.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "nre_vs_npe.md").write_text(text)
    figure(result, args.out / "nre_vs_npe.png")
    print(text)
    print(f"wrote {args.out / 'nre_vs_npe.json'}, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
