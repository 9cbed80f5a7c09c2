#!/usr/bin/env python
r"""NRE_A, NRE_B, NRE_C, BNRE, NPE, an NRE_C ensemble and sbi's own ResNet embedding, at 10³–10⁴ simulations.

Every method sees the same simulations, and every verdict comes from held-out simulations of a
seed that no training used:

* **Simulations.** Two banks of the *fields* (ρ₁, ρ₂, B_z) of the main job's forward model
  (``presets.small_forward_model()``: 48² torus, SK-ROCK to t = 80; θ = (η, B) from the default
  prior): ``max(budgets)`` training rows (bank seed ``--seed``) and ``--num-test`` held-out rows
  (bank seed ``--test-seed``). Each observation's images are derived from the fields with
  the observation's own measurement stream (``SimulationBank.to_torch(observation=...)``), so the
  ideal and the STM images of a row show the same vortices. A budget ``b`` trains on the first
  ``b`` rows (sbi holds 10 % of them out for early stopping).
* **Training** (``glsbi_plugin.inference.build_inference``/``train``): the main job's recipe —
  its small strided ResNet+GAP embedding with torus-symmetry augmentation, at most
  ``--max-epochs`` epochs, early stopping after ``--patience`` epochs without improvement, batch
  ``--batch-size``, torch threads ``--threads``; ``--seeds`` training seeds per cell (mean ± s.d.
  over seeds in the report). ``NRE_C x3`` trains three NRE_C members from seeds ``1000 s + k``
  and is reported twice: the members' :class:`GridPosterior` mixture (``combine="mixture"``) and
  their log-mean pool (``combine="log-mean"``, averaged log-ratios). ``NRE_C sbi-ResNet`` swaps the embedding for sbi's
  own ``ResNetEmbedding2D`` (at our stage widths, see :func:`sbi_resnet_inference`; sbi's
  ``z_score_x="independent"``), the ecosystem's baseline at the same budget.
* **Recalibration**: every cell is also reported as ``<method> +recal``, its posterior with the
  marginals recalibrated (``inference.fit_recalibration``, as the main job does) on ``--num-recal``
  simulations of a third bank (seed ``--recal-seed``), then judged on the same held-out bank.
* **Evaluation**, every method through a :class:`GridPosterior` (``--resolution``² over the
  prior's box, ``--ideal-resolution``² for the ideal observation, whose posteriors are several
  times narrower and would span only a few cells of the coarser grid; NPE truncated to it):
  training seconds and epochs, inference latency (embed x, evaluate the grid, draw 1000 samples;
  median over 20 observations), held-out
  :math:`\frac1N\sum_i \log q(\theta_i \mid x_i)`, posterior std / prior width and RMSE of the
  posterior mean per parameter, the exact grid coverage of central marginal intervals at levels
  0.05 … 0.95 and its maximum deviation from the diagonal, SBC KS p per parameter and TARP's ATC
  (``glsbi_plugin.diagnostics.calibration_report``, 1000 draws per observation).

Cells are resumable: each finished (observation, method, budget, seed) is appended to a JSON-lines
file in ``--cache`` keyed by a hash of every setting that changes its result, so a killed run
continues with the cells not yet done and a rerun with more ``--budgets``/``--seeds``/``--methods``
computes only what is new. Trained estimators are kept there too (a cell whose recalibrated row
is missing is evaluated again without training). The ensemble ``NRE_C x3`` of seed s has the
members of seeds 1000 s, 1000 s + 1, 1000 s + 2, each trained as a single ``NRE_C`` cell of that
seed (what ``inference.train_ensemble(seed=1000 s)`` does); a member already kept as a single
``NRE_C`` estimator of the same observation and budget is loaded, not trained again (training on
one CPU thread is deterministic: a retrained cell reproduces its metrics to the last digit), so
the ensemble of seed 0 costs no training once ``NRE_C`` seeds 0–2 are done. The report is
rewritten from all finished cells after every cell.

Run::

    .venv/bin/python benchmarks/nre_vs_npe.py                            # every cell (hours on 2 CPU cores)
    .venv/bin/python benchmarks/nre_vs_npe.py --observations stm --budgets 1000 3000 --methods NRE_C NPE
    .venv/bin/python benchmarks/nre_vs_npe.py --quick                    # smoke run into a temporary directory
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _fields import fields_bank, fields_banks  # benchmarks/_fields.py (the script's folder is on sys.path)
from _machine import machine

from glsbi_plugin import make_simulator
from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, build_inference, fit_recalibration, train
from glsbi_plugin.physics import STM, Observation, presets
from glsbi_plugin.store import SimulationBank

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAMES = ("eta", "field")
#: the main job's embedding (apps/quickstart.py), with its training-time torus symmetries
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True, symmetry="torus")
OBSERVATIONS: dict[str, Any] = {"stm": STM(), "ideal": Observation()}
METHODS = ("NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE", "NRE_C x3", "NRE_C sbi-ResNet")
#: report rows: an ensemble run gives two, its members mixed and pooled (GridPosterior ``combine``)
ROWS = ("NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE", "NRE_C x3 mixture", "NRE_C x3 log-mean", "NRE_C sbi-ResNet")
#: the suffix of a row whose posterior was recalibrated on the third bank
RECAL = " +recal"
LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
ENSEMBLE = 3


def environment() -> dict[str, Any]:
    return {**machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "sbi": importlib.metadata.version("sbi"), "jax": importlib.metadata.version("jax")}


# ------------------------------------------------------------------------------------- simulations
def banks(args: argparse.Namespace) -> tuple[SimulationBank, SimulationBank, dict[str, Any]]:
    """The training and held-out banks of the fields (created, extended and filled as needed)."""
    return fields_banks(args.bank_dir, size=args.size, steps=args.steps, chunk_size=args.chunk_size,
                        train=(max(args.budgets), args.seed), test=(args.num_test, args.test_seed))


# ------------------------------------------------------------------------------------- estimators
def sbi_resnet_inference(prior: Any, x_shape: tuple[int, ...]) -> Any:
    """NRE_C with sbi's ``ResNetEmbedding2D`` at our embedding's widths and sbi's own z-scoring of x.

    sbi's defaults (4 stages, a 1000-unit fully connected head: 9.4 M weights on 48² images) train
    about 50x slower than our 21 k-weight embedding on this CPU; at the same stage widths (8, 16, 32),
    one block per stage and a 64-unit head (0.61 M weights, most in the head) it is the same family but
    for its ending: a flatten + fully connected layer (not shift invariant) where ours pools."""
    from sbi.neural_nets import classifier_nn
    from sbi.neural_nets.embedding_nets import ResNetEmbedding2D

    from glsbi_plugin.inference._builders import NRE_C, MemoryTracker

    def build(batch_theta: torch.Tensor, batch_x: torch.Tensor) -> torch.nn.Module:
        net = ResNetEmbedding2D(c_in=int(batch_x.shape[1]), c_out=16, c_hidden_fc=64, n_stages=3,
                                blocks_per_stage=[1, 1, 1], c_stages=[8, 16, 32])
        return classifier_nn("mlp", z_score_x="independent", embedding_net_x=net)(batch_theta, batch_x)

    inference = NRE_C(prior=prior, classifier=build, tracker=MemoryTracker(), show_progress_bars=False)
    inference._glsbi_x_shape = tuple(x_shape)
    return inference


def train_cell(method: str, seed: int, prior: Any, theta: torch.Tensor, x: torch.Tensor,
               args: argparse.Namespace) -> tuple[Any, int]:
    """The trained estimator of one single-estimator cell and the epochs trained (``NRE_C x3`` is
    trained member by member as ``NRE_C`` cells, see :func:`ensemble_cell`)."""
    options = {"max_epochs": args.max_epochs, "training_batch_size": args.batch_size,
               "stop_after_epochs": args.patience}
    x_shape = tuple(x.shape[1:])
    torch.manual_seed(seed)
    if method == "NRE_C sbi-ResNet":
        inference = sbi_resnet_inference(prior, x_shape)
    else:
        inference = build_inference(method, prior, EMBEDDING, x_shape=x_shape)
    estimator = train(inference, theta, x, **options)
    return estimator, int(inference.summary["epochs_trained"][-1])


def estimator_file(cache: str | Path, tag: str, observation: str, method: str, budget: int, seed: int) -> Path:
    """Where the trained estimator of one cell is kept."""
    return Path(cache) / f"estimator_{tag}_{observation}_{method}_{budget}_{seed}.pt".replace(" ", "-")


def fit_in_scratch(method: str, seed: int, *, data: tuple[Any, torch.Tensor, torch.Tensor, argparse.Namespace]
                   ) -> tuple[Any, int]:
    """``train_cell`` run from a temporary working directory (nothing may land in ./sbi-logs)."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            return train_cell(method, seed, *data)
        finally:
            os.chdir(cwd)


def ensemble_cell(seed: int, single: Callable[[int], Path], fit: Callable[[int], tuple[Any, int]]
                  ) -> tuple[list[Any], int, float, list[int]]:
    """The ``NRE_C x3`` members of cell ``seed`` (member seeds 1000 seed + k), their summed epochs and
    training seconds, and the member seeds loaded from single ``NRE_C`` estimators (path
    ``single(member_seed)``) instead of trained (``fit(member_seed)``). A member trained here is
    saved there at once, so a run killed between members resumes at the next one."""
    members, epochs, train_s, reused = [], 0, 0.0, []
    for k in range(ENSEMBLE):
        member_seed = 1000 * seed + k
        if single(member_seed).exists():
            estimator, n, t = torch.load(single(member_seed), weights_only=False)
            reused.append(member_seed)
        else:
            t0 = time.perf_counter()
            estimator, n = fit(member_seed)
            t = time.perf_counter() - t0
            torch.save((estimator, n, t), single(member_seed))
        members.append(estimator)
        epochs, train_s = epochs + n, train_s + t
    return members, epochs, train_s, reused


# ------------------------------------------------------------------------------------- evaluation
def evaluate(posterior: GridPosterior, theta: torch.Tensor, x: torch.Tensor, args: argparse.Namespace,
             seed: int) -> dict[str, Any]:
    width = (posterior.high - posterior.low).numpy()
    times = []
    for xi in x[:20]:
        t0 = time.perf_counter()
        posterior.set_default_x(xi).sample((1000,))
        times.append(time.perf_counter() - t0)
    log_q, means, sds = [], [], []
    for th, xi in zip(theta, x, strict=True):
        log_q.append(float(posterior.log_prob(th, x=xi)))
        mu, sd = posterior.marginal_moments(xi)
        means.append(mu.numpy())
        sds.append(sd.numpy())
    log_q, means, sds = np.asarray(log_q), np.asarray(means), np.asarray(sds)
    report = calibration_report(posterior, theta, x, num_posterior_samples=args.posterior_samples, levels=LEVELS,
                                seed=seed, names=NAMES, c2st=False)
    grid_cov = np.asarray(report.grid_coverage)  # (levels, d)
    return {
        "log_q_mean": float(log_q.mean()),
        "log_q_se": float(log_q.std(ddof=1) / math.sqrt(len(log_q))),
        "std_over_width": (sds.mean(axis=0) / width).tolist(),
        "rmse": np.sqrt(((means - theta.numpy()) ** 2).mean(axis=0)).tolist(),
        "coverage": grid_cov.tolist(),
        "max_coverage_deviation": float(np.abs(grid_cov - np.asarray(LEVELS)[:, None]).max()),
        "coverage_90": report.coverage_at(0.9)["grid"],
        "sbc_ks_p": report.ks_pvalues.tolist(),
        "tarp_atc": float(report.tarp_atc),
        "infer_s": statistics.median(times),
        "calibration_s": report.seconds,
    }


# ------------------------------------------------------------------------------------- reporting
def mean_sd(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(values, dtype=float)
    return a.mean(axis=0), (a.std(axis=0, ddof=1) if len(a) > 1 else np.full(a.shape[1:], np.nan))


def fmt(m: Any, s: Any, digits: int) -> str:
    return f"{m:.{digits}f}" if not np.isfinite(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(c["observation"], c["method"], c["budget"]) for c in cells},
                  key=lambda k: (list(OBSERVATIONS).index(k[0]), ROWS.index(k[1].removesuffix(RECAL)),
                                 k[1].endswith(RECAL), k[2]))
    for obs, method, budget in keys:
        group = [c for c in cells if (c["observation"], c["method"], c["budget"]) == (obs, method, budget)]
        row: dict[str, Any] = {"observation": obs, "method": method, "budget": budget,
                               "seeds": sorted(c["seed"] for c in group)}
        for k in ("train_s", "epochs", "infer_s", "log_q_mean", "std_over_width", "rmse", "max_coverage_deviation",
                  "coverage_90", "sbc_ks_p", "tarp_atc", "coverage"):
            m, s = mean_sd([c[k] for c in group])
            row[k], row[k + "_sd"] = m.tolist(), s.tolist()
        row["sbc_ks_p_per_seed"] = [c["sbc_ks_p"] for c in sorted(group, key=lambda c: c["seed"])]
        out.append(row)
    return out


def exact_max_deviation(num_test: int, draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """The distribution of the ``max cov. dev.`` column for an exactly calibrated posterior.

    Its PIT values are uniform, so a central interval of level α covers the truth iff
    |u - ½| ≤ α/2; the column's statistic (the largest |coverage - level| over ``LEVELS`` and two
    independent parameters) is then drawn ``draws`` times for ``num_test`` pairs."""
    rng = np.random.default_rng(seed)
    lv = np.asarray(LEVELS)
    stat = np.empty(draws)
    for i in range(draws):
        u = np.abs(rng.uniform(size=(num_test, 2)) - 0.5)
        stat[i] = np.abs((u[None] <= lv[:, None, None] / 2).mean(axis=1) - lv[:, None]).max()
    return {"median": float(np.median(stat)), "q95": float(np.quantile(stat, 0.95)),
            "p_above_0.05": float((stat > 0.05 + 1e-9).mean()), "draws": draws}


def markdown(table: list[dict[str, Any]], env: dict[str, Any], args: argparse.Namespace,
             info: dict[str, Any]) -> str:
    cfg = info["config"]
    lines = [
        "# NRE vs NPE at 10³–10⁴ simulations, with training seeds",
        "",
        f"Command: `{env.get('command', 'python benchmarks/nre_vs_npe.py')}`",
        "",
        f"Configuration: forward model `presets.small_forward_model(size={args.size})` ({cfg['shape'][0]}² torus, "
        f"{cfg['scheme']} dt = {cfg['dt']}, t = {cfg['t_final']:g}); prior η ∈ [0, 0.3], B ∈ [0.03, 0.10]; "
        f"training bank seed {args.seed} (budget b = its first b rows), {args.num_test} held-out simulations of "
        f"bank seed {args.test_seed}; observations "
        f"{', '.join(f'{k} = {v.to_dict()}' for k, v in OBSERVATIONS.items() if k in args.observations)}; "
        f"embedding `{EMBEDDING.to_dict()}`; at most {args.max_epochs} epochs, patience {args.patience}, batch "
        f"{args.batch_size}, torch threads {args.threads}; GridPosterior {args.resolution}² "
        f"(ideal observation: {args.ideal_resolution}²); "
        f"{args.posterior_samples} draws per observation for SBC/TARP; training seeds {args.seeds} per cell "
        f"(mean ± s.d. over the seeds finished; a single value where only one is).",
        f"Run {env.get('date', '?')} at commit {env.get('git_commit', '?')}"
        f"{' (dirty)' if env.get('git_dirty') else ''} "
        f"on {env.get('cpu_model', '?')} ({env.get('cpu_count', '?')} cores; load average at start "
        f"{', '.join(f'{v:.1f}' for v in env.get('loadavg_start', []))}; other work ran beside it); torch "
        f"{env.get('torch')}, sbi {env.get('sbi')}.",
        "",
        "| observation | method | budget | seeds | train s | infer ms | log q | η std/width | B std/width | η RMSE "
        "| B RMSE | max cov. dev. | 90 % cov (η, B) | SBC KS p per seed: η; B | TARP ATC |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['observation']} | {r['method']} | {r['budget']} | {len(r['seeds'])} | {r['train_s']:.0f} | "
            f"{1e3 * r['infer_s']:.0f} | {fmt(r['log_q_mean'], r['log_q_mean_sd'], 2)} | "
            f"{fmt(r['std_over_width'][0], r['std_over_width_sd'][0], 3)} | "
            f"{fmt(r['std_over_width'][1], r['std_over_width_sd'][1], 3)} | {r['rmse'][0]:.4f} | {r['rmse'][1]:.4f} | "
            f"{fmt(r['max_coverage_deviation'], r['max_coverage_deviation_sd'], 3)} | "
            f"{r['coverage_90'][0]:.2f}, {r['coverage_90'][1]:.2f} | "
            f"{', '.join(f'{p[0]:.2g}' for p in r['sbc_ks_p_per_seed'])}; "
            f"{', '.join(f'{p[1]:.2g}' for p in r['sbc_ks_p_per_seed'])} | {fmt(r['tarp_atc'], r['tarp_atc_sd'], 3)} |"
        )
    floor = exact_max_deviation(args.num_test)
    lines += [
        "",
        f"log q: mean held-out log density of the true θ (higher is better; the prior's is "
        f"{-math.log(0.3 * 0.07):.2f}). std/width: mean marginal posterior std over the prior width (0.289: "
        f"nothing learned). max cov. dev.: the largest |coverage − level| of the central marginal intervals over "
        f"levels 0.05–0.95 and both parameters; for the exact posterior it is noise alone, and on "
        f"{args.num_test} held-out pairs its median is {floor['median']:.3f}, its 95 % quantile "
        f"{floor['q95']:.3f} and it exceeds 0.05 with probability {floor['p_above_0.05']:.2f} (Monte Carlo, "
        f"{floor['draws']} draws of uniform PIT values), so a cell below about {floor['q95']:.2f} is "
        f"consistent with calibration. SBC KS p: one value per training seed (a calibrated posterior passes, "
        f"p ≥ 0.05, in about 19 of 20). TARP ATC < 0: over-confident.",
        "",
        "Coverage curves per method: `nre_vs_npe.png`.",
    ]
    return "\n".join(lines) + "\n"


def figure(table: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    observations = list(dict.fromkeys(r["observation"] for r in table))
    fig = Figure(figsize=(5.2 * 2, 4.2 * len(observations)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(observations), 2, squeeze=False))
    lv = np.asarray(LEVELS)
    for i, obs in enumerate(observations):
        rows = [r for r in table if r["observation"] == obs]
        largest = max(r["budget"] for r in rows)
        for k, name in enumerate(("η", "B")):
            ax = axes[i, k]
            ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls=":")
            for j, r in enumerate(r for r in rows if r["budget"] == largest):
                cov = np.asarray(r["coverage"])[:, k]
                ax.plot(lv, cov, color=f"C{j % 10}", ls="--" if r["method"].endswith(RECAL) else "-",
                        label=f"{r['method']} ({len(r['seeds'])} seeds)")
            ax.set_xlabel("nominal level of the central interval")
            ax.set_ylabel("held-out coverage")
            ax.set_title(f"{obs}: {name}, {largest} simulations")
            ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 24² grid, budgets 60 120, 40 held-out, 2 epochs")
    p.add_argument("--budgets", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per cell")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--observations", nargs="+", default=list(OBSERVATIONS), choices=list(OBSERVATIONS))
    p.add_argument("--num-test", type=int, default=300)
    p.add_argument("--size", type=int, default=presets.small_forward_model().shape[0])
    p.add_argument("--steps", type=int, default=None, help="time steps (default: the small forward model's)")
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="training bank seed")
    p.add_argument("--test-seed", type=int, default=1, help="held-out bank seed")
    p.add_argument("--recal-seed", type=int, default=2, help="recalibration bank seed")
    p.add_argument("--num-recal", type=int, default=1000, help="recalibration simulations (0: no +recal rows)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=64, help="grid posterior cells per axis")
    p.add_argument("--ideal-resolution", type=int, default=128,
                   help="grid cells per axis for the ideal observation (its posteriors are narrower)")
    p.add_argument("--posterior-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core machine)")
    p.add_argument("--bank-dir", default=str(Path.home() / ".cache" / "glsbi" / "observation_models"),
                   help="where the fields banks live (shared with benchmarks/observation_models.py)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "glsbi" / "nre_vs_npe"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true", help="rewrite the report from the finished cells; train nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.budgets, args.num_test, args.num_recal = 24, 32, [60, 120], 40, 50
        args.max_epochs, args.patience, args.resolution, args.posterior_samples = 2, 2, 24, 100
        args.ideal_resolution = 32
        args.seeds = args.seeds[:2]
        tmp = tempfile.mkdtemp(prefix="nre_vs_npe_quick_")
        args.bank_dir = args.cache = tmp
        args.out = Path(tmp)
    torch.set_num_threads(args.threads)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    env = environment()
    train_bank, test_bank, info = banks(args)
    recal_bank = None if not args.num_recal else fields_bank(
        args.bank_dir, "recal", args.num_recal, args.recal_seed, size=args.size, steps=args.steps,
        chunk_size=args.chunk_size, info=info)
    recal_settings = {"seed": args.recal_seed, "n": args.num_recal}
    prior = make_simulator(NAMES, config=train_bank.simulator.config).prior()
    signature = {k: getattr(args, k) for k in ("size", "steps", "seed", "test_seed", "num_test", "max_epochs",
                                               "patience", "batch_size", "resolution", "posterior_samples")}
    signature["embedding"] = EMBEDDING.to_dict()
    tag = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:12]
    done_path = Path(args.cache) / f"cells_{tag}.jsonl"
    settings_of = {name: obs.to_dict() for name, obs in OBSERVATIONS.items()}
    # the grid of each observation's posteriors; a cell without the key predates --ideal-resolution
    # and was evaluated at --resolution (then part of the signature for every observation)
    resolution_of = {name: args.ideal_resolution if name == "ideal" else args.resolution for name in OBSERVATIONS}
    done: dict[tuple, dict[str, Any]] = {}
    for line in done_path.read_text().splitlines() if done_path.exists() else []:
        c = json.loads(line)
        recal_ok = not c["method"].endswith(RECAL) or c.get("recalibration_bank") == recal_settings
        same_grid = c.get("resolution", args.resolution) == resolution_of.get(c["observation"])
        if c.get("observation_settings") == settings_of.get(c["observation"]) and recal_ok and same_grid:
            done[c["observation"], c["method"], c["budget"], c["seed"]] = c
    print(f"{len(done)} finished cells in {done_path}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        write(done, env, args, info)
        return 0
    for obs_name in args.observations:
        obs = OBSERVATIONS[obs_name]
        theta_all, x_all = train_bank.to_torch(observation=obs)
        test = test_bank.to_torch(observation=obs)
        test = (test[0][: args.num_test], test[1][: args.num_test])
        recal = None if recal_bank is None else recal_bank.to_torch(observation=obs)
        for budget in sorted(args.budgets):
            for seed in args.seeds:
                for method in args.methods:
                    base_rows = ("NRE_C x3 mixture", "NRE_C x3 log-mean") if method == "NRE_C x3" else (method,)
                    rows = [*base_rows, *([] if recal is None else [r + RECAL for r in base_rows])]
                    if all((obs_name, row, budget, seed) in done for row in rows):
                        continue
                    saved = estimator_file(args.cache, tag, obs_name, method, budget, seed)
                    extra_cell: dict[str, Any] = {}
                    data = (prior, theta_all[:budget], x_all[:budget], args)
                    if saved.exists():  # trained by an earlier run: evaluate it again
                        estimator, epochs, train_s = torch.load(saved, weights_only=False)
                    elif method == "NRE_C x3":
                        estimator, epochs, train_s, reused = ensemble_cell(
                            seed, partial(estimator_file, args.cache, tag, obs_name, "NRE_C", budget),
                            partial(fit_in_scratch, "NRE_C", data=data))
                        extra_cell = {"members_from_single_cells": reused}
                        torch.save((estimator, epochs, train_s), saved)
                    else:
                        t0 = time.perf_counter()
                        estimator, epochs = fit_in_scratch(method, seed, data=data)
                        train_s = time.perf_counter() - t0
                        torch.save((estimator, epochs, train_s), saved)
                    for row in rows:
                        combine = "log-mean" if "log-mean" in row else "mixture"
                        posterior = GridPosterior(estimator, prior, resolution=resolution_of[obs_name],
                                                  combine=combine)
                        extra: dict[str, Any] = {}
                        if row.endswith(RECAL):
                            r = fit_recalibration(posterior, *recal)
                            posterior = posterior.with_recalibration(r)
                            extra = {"recalibration_bank": recal_settings, "recalibration": r.to_dict()}
                        cell = {"observation": obs_name, "method": row, "budget": budget, "seed": seed,
                                "train_s": train_s, "epochs": epochs, **evaluate(posterior, *test, args, seed),
                                "observation_settings": settings_of[obs_name],
                                "resolution": resolution_of[obs_name], "date": env["date"],
                                "git_commit": env.get("git_commit"), **extra_cell, **extra}
                        done[obs_name, row, budget, seed] = cell
                        with done_path.open("a") as f:
                            f.write(json.dumps(cell) + "\n")
                        print(f"{obs_name} {row:>17} b={budget:5d} seed {seed}: "
                              f"η std/w {cell['std_over_width'][0]:.3f}, B {cell['std_over_width'][1]:.3f}; max cov "
                              f"dev {cell['max_coverage_deviation']:.3f}; KS p {cell['sbc_ks_p'][0]:.2g}/"
                              f"{cell['sbc_ks_p'][1]:.2g}; ATC {cell['tarp_atc']:+.3f} ({train_s:.0f} s train)",
                              flush=True)
                    write(done, env, args, info)
    write(done, env, args, info)
    return 0


def write(done: dict[tuple, dict[str, Any]], env: dict[str, Any], args: argparse.Namespace,
          info: dict[str, Any]) -> None:
    cells = list(done.values())
    if not cells:
        return
    table = aggregate(cells)
    stem = args.out / "nre_vs_npe"
    result = {"environment": env | {"loadavg_end": list(os.getloadavg())}, "setup": {**info, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "levels": LEVELS},
        "aggregate": table, "cells": cells}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(table, env, args, info)
    md = stem.with_suffix(".md")
    reading = ""
    if md.exists() and "## Reading" in md.read_text():  # keep the hand-written reading below the table
        reading = md.read_text()[md.read_text().index("## Reading"):]
    md.write_text(text + ("\n" + reading if reading else ""))
    figure(table, stem.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
