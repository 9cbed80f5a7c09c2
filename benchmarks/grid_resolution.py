#!/usr/bin/env python
"""Do nre_vs_npe's figures depend on the grid? The same cached estimators, evaluated on finer grids.

``benchmarks/nre_vs_npe.py`` evaluates its STM posteriors on a 64² grid. At 10⁴ simulations the
η posteriors are about 0.025 of the prior width wide (1.5 cells), so the grid could enter the
coverage figures. This script takes cached estimators of that benchmark (run it first), builds
their grid posteriors at each ``--resolutions`` (raw, and recalibrated on the same 1000
simulations of seed 2), and computes nre_vs_npe's own per-cell figures (its ``evaluate``) on the
same 300 held-out simulations of seed 1. Nothing is trained.

Run::

    .venv/bin/python benchmarks/grid_resolution.py --cells NPE:10000:0 NRE_C:10000:1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _fields import add_cache_options, judging_banks  # benchmarks/_fields.py (the script's folder is on sys.path)
from _machine import machine
from conditional_calibration import estimator_path
from nre_vs_npe import NAMES, OBSERVATIONS, evaluate

from glsbi_plugin import make_simulator
from glsbi_plugin.inference import GridPosterior, fit_recalibration
from glsbi_plugin.physics import presets

RESULTS = Path(__file__).resolve().parent / "results"


def cell(text: str) -> tuple[str, int, int]:
    """``METHOD:BUDGET:SEED`` (a method with spaces spelt with dashes, as in the cache's file names)."""
    try:
        method, budget, seed = text.rsplit(":", 2)
        return method.replace("-", " "), int(budget), int(seed)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected METHOD:BUDGET:SEED, e.g. NPE:10000:0") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=cell, nargs="+", required=True, help="METHOD:BUDGET:SEED of cached STM estimators")
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    p.add_argument("--posterior-samples", type=int, default=1000)
    add_cache_options(p)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    info: dict[str, Any] = {}
    test_bank, recal_bank = judging_banks(a.bank_dir, info)
    obs = OBSERVATIONS["stm"]
    theta, x = test_bank.to_torch(observation=obs)
    theta, x = theta[:300], x[:300]
    recal = recal_bank.to_torch(observation=obs)
    prior = make_simulator(NAMES, config=presets.small_forward_model(size=48)).prior()
    rows = []
    for method, budget, seed in a.cells:
        estimator, _, _ = torch.load(estimator_path(a.cache, method, budget, seed), weights_only=False)
        for resolution in a.resolutions:
            raw = GridPosterior(estimator, prior, resolution=resolution)
            for label in ("raw", "+recal"):
                t0 = time.perf_counter()
                post = raw if label == "raw" else raw.with_recalibration(fit_recalibration(raw, *recal))
                c = evaluate(post, theta, x, argparse.Namespace(posterior_samples=a.posterior_samples), seed)
                row = {"method": method, "budget": budget, "seed": seed, "resolution": resolution, "posterior": label,
                       "seconds": round(time.perf_counter() - t0, 1),
                       **{k: c[k] for k in ("log_q_mean", "std_over_width", "rmse", "max_coverage_deviation",
                                            "coverage_90", "sbc_ks_p", "tarp_atc")}}
                rows.append(row)
                print(f"{method} {budget} seed {seed} {resolution}² {label}: max cov dev "
                      f"{row['max_coverage_deviation']:.3f}, KS p {row['sbc_ks_p'][0]:.2g}/{row['sbc_ks_p'][1]:.2g}, "
                      f"log q {row['log_q_mean']:.3f} ({row['seconds']:.0f} s)", flush=True)
    command = "python benchmarks/grid_resolution.py " + " ".join(argv if argv is not None else sys.argv[1:])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "grid_resolution.json").write_text(json.dumps(
        {"command": command, "machine": machine(), "banks": info, "rows": rows}, indent=1) + "\n")
    lines = ["# nre_vs_npe's figures on finer grids (the same estimators, nothing retrained)", "",
             f"Command: `{command}`; 300 held-out simulations of seed 1, recalibration on 1000 of seed 2, STM.", "",
             "| method | budget | seed | grid | posterior | log q | η std/width | max cov. dev. | SBC KS p (η; B) "
             "| TARP ATC | s |", "|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget']} | {r['seed']} | {r['resolution']}² | {r['posterior']} | "
                     f"{r['log_q_mean']:.3f} | {r['std_over_width'][0]:.4f} | {r['max_coverage_deviation']:.3f} | "
                     f"{r['sbc_ks_p'][0]:.2g}; {r['sbc_ks_p'][1]:.2g} | {r['tarp_atc']:+.3f} | {r['seconds']:.0f} |")
    (a.out / "grid_resolution.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
