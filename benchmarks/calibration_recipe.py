#!/usr/bin/env python
r"""What each step of the main job's training recipe does to its calibration, on held-out simulations.

The main job (``glsbi quickstart``) trains NRE_C on STM images of 1000 simulations. This script
trains one configuration of that recipe and judges it on 300 simulations of another bank seed:

* data: the fields banks of ``benchmarks/observation_models.py`` (48², t = 80; training bank seed
  0, held-out bank seed 1, in ``--bank-dir``); STM images (``physics.STM()``, the main job's
  default observation) derived from them; the first ``--n`` training rows, of which the first
  80 % train (sbi keeps 10 % of those for early stopping) and the last 20 % fit a temperature;
* recipe switches: ``--epochs``/``--patience`` (training to convergence), ``--symmetry torus``
  (augmentation by the torus's exact symmetries), ``--seeds`` (one estimator per seed: an
  ensemble, evaluated as a mixture and as a log-mean pool, and each member alone), ``--method``;
* metrics (GridPosterior 64², 1000 draws per observation): posterior std / prior width, held-out
  mean log q(θ|x), 50 % and 90 % coverage, the largest coverage deviation over levels, SBC KS p,
  TARP ATC, and the PIT values' mean (bias: 0.5 when unbiased) and variance × 12 (1 when
  calibrated; < 1 under-confident, > 1 over-confident); then the same after temperature scaling
  (``inference.fit_temperature`` on the 20 % rows).

Each run appends its rows to ``--out`` (JSON lines). ``benchmarks/results/calibration_recipe.md``
tabulates the runs quoted in the README. Run, e.g.::

    .venv/bin/python benchmarks/calibration_recipe.py --tag base --epochs 30 --patience 10
    .venv/bin/python benchmarks/calibration_recipe.py --tag long --epochs 100 --patience 15 --symmetry torus
    .venv/bin/python benchmarks/calibration_recipe.py --tag ens --epochs 100 --patience 15 --symmetry torus \
        --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _fields import fields_banks  # benchmarks/_fields.py (the script's folder is on sys.path)

from glsbi_plugin import make_simulator
from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, build_inference, fit_temperature, train
from glsbi_plugin.physics import STM, presets

RESULTS = Path(__file__).resolve().parent / "results"


def data(bank_dir: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """STM images of the fields banks (3000 training rows of seed 0, 300 held-out of seed 1)."""
    train_bank, test_bank, _ = fields_banks(bank_dir, size=48, train=(3000, 0), test=(300, 1))
    return train_bank.to_torch(observation=STM()), test_bank.to_torch(observation=STM())


def evaluate(posterior: GridPosterior, test: tuple[torch.Tensor, torch.Tensor], label: str,
             meta: dict[str, Any]) -> dict[str, Any]:
    theta, x = test
    width = (posterior.high - posterior.low).numpy()
    sds = [posterior.marginal_moments(xi)[1].numpy() for xi in x]
    log_q = torch.stack([posterior.log_prob(t[None], xi) for t, xi in zip(theta, x, strict=True)]).mean()
    report = calibration_report(posterior, theta, x, seed=1, names=("eta", "B"), c2st=False)
    pit_mean, pit_var = report.pit_moments()
    grid = np.asarray(report.grid_coverage)
    return {
        "label": label, **meta, "temperature": posterior.temperature,
        "std_over_width": (np.mean(sds, 0) / width).round(3).tolist(), "log_q": round(float(log_q), 3),
        "coverage_90": [round(c, 3) for c in report.coverage_at(0.9)["grid"]],
        "coverage_50": [round(c, 3) for c in report.coverage_at(0.5)["grid"]],
        "max_coverage_deviation": round(float(np.abs(grid - np.asarray(report.levels)[:, None]).max()), 3),
        "sbc_ks_p": [float(f"{v:.2g}") for v in report.ks_pvalues], "tarp_atc": round(report.tarp_atc, 3),
        "pit_mean": pit_mean.round(3).tolist(), "pit_var_x12": (12 * pit_var).round(3).tolist(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="training-bank rows (80 %% train, 20 %% temperature)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--symmetry", choices=("none", "torus"), default="none")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--method", default="NRE_C")
    p.add_argument("--tag", default="")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--bank-dir", type=Path, default=Path.home() / ".cache" / "glsbi" / "observation_models")
    p.add_argument("--out", type=Path, default=RESULTS / "calibration_recipe.jsonl")
    a = p.parse_args()
    torch.set_num_threads(1)
    (theta_all, x_all), test = data(a.bank_dir)
    prior = make_simulator(("eta", "field"), config=presets.small_forward_model(size=48)).prior()
    n_fit = int(a.n * 0.8)
    theta, x = theta_all[:n_fit], x_all[:n_fit]
    theta_v, x_v = theta_all[n_fit : a.n], x_all[n_fit : a.n]
    embedding = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True, symmetry=a.symmetry)
    estimators, epochs = [], []
    t0 = time.perf_counter()
    for seed in a.seeds:
        torch.manual_seed(seed)
        inference = build_inference(a.method, prior, embedding, x_shape=tuple(x.shape[1:]))
        estimators.append(train(inference, theta, x, max_epochs=a.epochs, learning_rate=a.lr,
                                training_batch_size=a.batch, stop_after_epochs=a.patience))
        epochs.append(int(inference.summary["epochs_trained"][-1]))
    meta = {"tag": a.tag, "n": a.n, "method": a.method, "symmetry": a.symmetry, "seeds": a.seeds, "epochs": epochs,
            "max_epochs": a.epochs, "patience": a.patience, "lr": a.lr, "batch": a.batch,
            "train_s": round(time.perf_counter() - t0)}
    rows = []
    if len(estimators) > 1:
        for combine in ("mixture", "log-mean"):
            rows.append(evaluate(GridPosterior(estimators, prior, resolution=a.resolution, combine=combine), test,
                                 combine, meta))
        for k, e in enumerate(estimators):
            rows.append(evaluate(GridPosterior(e, prior, resolution=a.resolution), test, f"member {k}", meta))
    else:
        rows.append(evaluate(GridPosterior(estimators[0], prior, resolution=a.resolution), test, "single", meta))
    posterior = GridPosterior(estimators, prior, resolution=a.resolution)
    tau, _ = fit_temperature(posterior, theta_v, x_v)
    rows.append(evaluate(posterior.with_temperature(tau), test, "tempered", meta))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        for row in rows:
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
