r"""Which observations reveal η? An identifiability study over the instrument models.

One bank of the physical fields (ρ₁, ρ₂, B_z, windings; ``physics.FIELDS``) of the quickstart's
forward model (``presets.small_forward_model``: 48² torus, t = 80) serves every observation: each
instrument is applied to the stored fields on read, with every row's own measurement noise
(``SimulationBank.to_torch(observation=...)``: the same images a simulator of that instrument makes
for the same seeds). A second bank of another seed is the held-out set. For each observation:

- NRE_C and NPE with the quickstart's CNN embedding (``ResNetGAP``, strided), trained on the same
  rows with the same seed;
- and once, NPE on the physicist's summary statistics of the decorated vortices' positions
  (``Decoration.positions``, the same jittered positions the decoration images show;
  ``physics.summaries.summary_vector``: count, nearest-neighbour distances, g(r), clusters, ψ₆)
  with sbi's default MLP-conditioned flow.

Per cell, on the held-out set through a grid posterior: posterior std of η and B over the prior
width (mean over the held-out set), RMSE of the posterior mean, coverage of the 68 % and 90 %
marginal intervals (exact on the grid), SBC rank KS p-values, TARP ATC.

Resumable: banks live in ``--cache`` (default ``~/.cache/glsbi/observation_models``), every
finished cell is appended to ``cells_<settings hash>.jsonl`` there with its observation's settings,
and skipped on a rerun with the same training and observation settings.

    python benchmarks/observation_models.py            # 3000 + 300 simulations; ~1 h on 2 CPU cores
    python benchmarks/observation_models.py --quick    # 200 + 60, a few epochs: minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import torch
from _fields import fields_banks  # benchmarks/_fields.py (the script's folder is on sys.path)
from _machine import machine

from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, build_inference, train
from glsbi_plugin.physics import FIELDS, SQUID, STM, Decoration, Observation, presets
from glsbi_plugin.physics.summaries import SUMMARY_NAMES, summary_vector
from glsbi_plugin.store import SimulationBank

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)  # the quickstart's
NAMES = ("eta", "field")
LEVELS = (0.5, 0.68, 0.9, 0.95)

#: The row of NPE on the summary statistics of the decorated vortices' positions.
SUMMARY_ROW = "decoration positions: summary statistics"
#: The observation models of the study (name -> observation of ``glsbi_plugin.physics``).
OBSERVATIONS: dict[str, Any] = {
    "ideal rho1 rho2": Observation(channels=("rho1", "rho2")),
    "stm band 2": STM(bands=(2,), blur=1.0, snr=10.0),
    "stm band 1": STM(bands=(1,), blur=1.0, snr=10.0),
    "stm bands 1+2": STM(bands=(1, 2), blur=1.0, snr=10.0),
    "squid z=1": SQUID(height=1.0, loop=0.5, snr=20.0),
    "squid z=3": SQUID(height=3.0, loop=0.5, snr=20.0),
    "decoration": Decoration(jitter=0.2, blob=1.0),
}


def banks(args: argparse.Namespace) -> tuple[SimulationBank, SimulationBank, dict[str, Any]]:
    """The training and held-out banks of the fields (created and filled if missing)."""
    return fields_banks(args.cache, size=args.size, chunk_size=args.chunk_size, train=(args.n_train, args.seed),
                        test=(args.n_test, args.test_seed))


def rows(bank: SimulationBank, n: int, observation: Any) -> tuple[torch.Tensor, torch.Tensor]:
    theta, x = bank.to_torch(observation=observation)
    return theta[:n], x[:n]


def summaries(bank: SimulationBank, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """θ and the summary statistics of the decorated vortices: the jittered positions that the
    decoration's images show (``Decoration.positions`` with each row's measurement key)."""
    deco, cfg = OBSERVATIONS["decoration"], bank.simulator.config
    theta, x = bank.to_torch()
    seeds = np.asarray(bank.group["seeds"][:n])
    box = (cfg.shape[0] * cfg.h, cfg.shape[1] * cfg.h)
    rows = []
    for xi, seed in zip(x[:n].numpy(), seeds, strict=True):
        _, k_meas = jax.random.split(jax.random.key(int(seed)))  # the forward model's measurement stream
        pos = deco.positions(dict(zip(FIELDS, xi, strict=True)), cfg, k_meas)
        rows.append(summary_vector(pos, box, radius=2.0))
    return theta[:n], torch.from_numpy(np.asarray(rows, np.float32))


def evaluate(posterior: GridPosterior, theta: torch.Tensor, x: torch.Tensor, prior_width: np.ndarray,
             seed: int) -> dict[str, Any]:
    moments = [posterior.marginal_moments(xi) for xi in x]
    means, sds = (np.stack([m[j].numpy() for m in moments]) for j in (0, 1))
    report = calibration_report(posterior, theta, x, levels=LEVELS, seed=seed, names=NAMES, c2st=False)
    return {
        "std_over_width": (sds.mean(axis=0) / prior_width).tolist(),
        "rmse": np.sqrt(((means - theta.numpy()) ** 2).mean(axis=0)).tolist(),
        "coverage_68": report.coverage_at(0.68)["grid"],
        "coverage_90": report.coverage_at(0.9)["grid"],
        "sbc_ks_p": report.ks_pvalues.tolist(),
        "tarp_atc": float(report.tarp_atc),
    }


def run_cell(method: str, obs_name: str, train_xy: tuple, test_xy: tuple, prior: Any, args: argparse.Namespace,
             summary: bool = False) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    theta, x = train_xy
    t0 = time.perf_counter()
    if summary:  # a vector x: sbi's own NPE (its MLP-conditioned flow), standardised x
        from sbi.inference import NPE

        inference = NPE(prior, show_progress_bars=False)
        estimator = inference.append_simulations(theta, x).train(
            max_num_epochs=args.max_epochs, training_batch_size=args.batch_size, stop_after_epochs=args.patience,
            show_train_summary=False)
        estimator.eval()
    else:
        inference = build_inference(method, prior, EMBEDDING, x_shape=tuple(x.shape[1:]))
        estimator = train(inference, theta, x, max_epochs=args.max_epochs, training_batch_size=args.batch_size,
                          stop_after_epochs=args.patience)
    train_s = time.perf_counter() - t0
    epochs = int(inference.summary["epochs_trained"][-1])
    posterior = GridPosterior(estimator, prior, resolution=args.resolution)
    width = (posterior.high - posterior.low).numpy()
    t0 = time.perf_counter()
    metrics = evaluate(posterior, *test_xy, width, args.seed)
    return {"observation": obs_name, "method": method, "n_train": len(theta), "n_test": len(test_xy[0]),
            "epochs": epochs, "train_s": train_s, "eval_s": time.perf_counter() - t0, **metrics}


def markdown(cells: list[dict[str, Any]], env: dict[str, Any], args: argparse.Namespace, info: dict) -> str:
    lines = [
        "# Observation models: what each instrument reveals of η and B",
        "",
        f"Command: `{env.get('command', 'python benchmarks/observation_models.py')}`",
        "",
        f"Forward model: `presets.small_forward_model(size={args.size})` (t = {info['config']['t_final']:g}, "
        f"{info['config']['scheme']} dt = {info['config']['dt']}); prior η ∈ [0, 0.3], B ∈ [0.03, 0.10]; "
        f"{args.n_train} training simulations (bank seed {args.seed}), {args.n_test} held-out (seed "
        f"{args.test_seed}); embedding {EMBEDDING.to_dict()}; at most {args.max_epochs} epochs (patience "
        f"{args.patience}), batch {args.batch_size}, torch threads {args.threads}; grid "
        f"{args.resolution}²; one training seed per cell. Summary statistics: {', '.join(SUMMARY_NAMES)}.",
        f"Run {env.get('date', '?')} at commit {env.get('git_commit', '?')} on {env.get('cpu_model', '?')} "
        f"({env.get('cpu_count', '?')} cores; load average at start "
        f"{', '.join(f'{v:.1f}' for v in env.get('loadavg_start', []))}; other work ran beside it).",
        "",
        "| observation | method | η std/width | B std/width | η RMSE | B RMSE | 68 % cov (η, B) | 90 % cov (η, B) "
        "| SBC KS p (η, B) | TARP ATC | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        f2 = lambda v: f"{v[0]:.2f}, {v[1]:.2f}"  # noqa: E731
        lines.append(
            f"| {c['observation']} | {c['method']} | {c['std_over_width'][0]:.3f} | {c['std_over_width'][1]:.3f} "
            f"| {c['rmse'][0]:.4f} | {c['rmse'][1]:.4f} | {f2(c['coverage_68'])} | {f2(c['coverage_90'])} "
            f"| {c['sbc_ks_p'][0]:.2g}, {c['sbc_ks_p'][1]:.2g} | {c['tarp_atc']:+.3f} | {c['train_s']:.0f} |"
        )
    lines += ["", "Prior std over width is 0.289 (a uniform prior): a posterior that learned nothing."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 + 60 simulations, 5 epochs: a smoke test")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--size", type=int, default=presets.small_forward_model().shape[0])
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="training bank and torch seed")
    p.add_argument("--test-seed", type=int, default=1, help="held-out bank seed")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=8, help="epochs without validation improvement before stopping")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core machine)")
    p.add_argument("--observations", nargs="+", default=list(OBSERVATIONS), choices=list(OBSERVATIONS))
    p.add_argument("--methods", nargs="+", default=["NRE_C", "NPE"], choices=["NRE_C", "NPE"])
    p.add_argument("--no-summaries", action="store_true", help="skip NPE on the summary statistics")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "glsbi" / "observation_models"))
    p.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/results; --quick: a "
                                                            "temporary folder)")
    args = p.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.max_epochs, args.resolution = 200, 60, 5, 32
        args.cache = str(Path(args.cache) / "quick")
    if args.out is None:  # a smoke run's report does not land among the results
        args.out = Path(tempfile.mkdtemp(prefix="observation_models_quick_")) if args.quick else RESULTS
    torch.set_num_threads(args.threads)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    env = machine()
    train_bank, test_bank, info = banks(args)
    prior = train_bank.simulator.prior()
    # a cell is reused only for the same training settings and the same observation settings
    signature = {k: getattr(args, k) for k in ("size", "n_train", "n_test", "seed", "test_seed", "max_epochs",
                                               "patience", "batch_size", "resolution")}
    tag = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:12]
    done_path = Path(args.cache) / f"cells_{tag}.jsonl"
    settings_of = {name: obs.to_dict() for name, obs in OBSERVATIONS.items()}
    settings_of[SUMMARY_ROW] = OBSERVATIONS["decoration"].to_dict()
    done: dict[tuple[str, str], dict[str, Any]] = {}  # the last finished cell per (observation, method)
    for line in done_path.read_text().splitlines() if done_path.exists() else []:
        c = json.loads(line)
        if c.get("observation_settings") == settings_of.get(c["observation"]):
            done[c["observation"], c["method"]] = c
    todo = [(o, m) for o in args.observations for m in args.methods]
    if not args.no_summaries:
        todo.append((SUMMARY_ROW, "NPE (MLP)"))
    for obs_name, method in todo:
        if (obs_name, method) in done:
            continue
        t0 = time.perf_counter()
        if method == "NPE (MLP)":
            train_xy, test_xy = summaries(train_bank, args.n_train), summaries(test_bank, args.n_test)
            cell = run_cell(method, obs_name, train_xy, test_xy, prior, args, summary=True)
        else:
            obs = OBSERVATIONS[obs_name]
            train_xy, test_xy = rows(train_bank, args.n_train, obs), rows(test_bank, args.n_test, obs)
            cell = run_cell(method, obs_name, train_xy, test_xy, prior, args)
        cell["observation_settings"] = settings_of[obs_name]
        done[obs_name, method] = cell
        with done_path.open("a") as f:
            f.write(json.dumps(cell) + "\n")
        sd = cell["std_over_width"]
        print(f"{obs_name:>42} {method:>9}: η std/width {sd[0]:.3f}, B {sd[1]:.3f}; "
              f"90% cov {cell['coverage_90'][0]:.2f}/{cell['coverage_90'][1]:.2f}; KS p {cell['sbc_ks_p'][0]:.2g}/"
              f"{cell['sbc_ks_p'][1]:.2g}; ATC {cell['tarp_atc']:+.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cells = [done[key] for key in todo if key in done]
    stem = "observation_models_quick" if args.quick else "observation_models"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"environment": env, "banks": info, "cells": cells,
                                                         "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                                      for k, v in vars(args).items()}}, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(cells, env, args, info))
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
