#!/usr/bin/env python
r"""Calibration within subsets of x: what a marginal recalibration can and cannot fix.

Recalibration (``inference.fit_recalibration``) maps each marginal CDF through one function
:math:`R_k`, the same for every observation. It can therefore only remove a miscalibration that is
the same for every x. A posterior is calibrated *conditionally* on a subset S of observations when
the PIT values :math:`u_{ik} = F_k(\theta_{ik} \mid x_i)` of the pairs with :math:`x_i \in S` are
uniform; averaged over all x (what SBC, coverage and TARP test) errors of opposite sign in two
subsets can cancel, and a single :math:`R_k` cannot undo them.

This script measures that for the STM estimators of ``benchmarks/nre_vs_npe.py`` at one budget
(it reads their cached files; run that benchmark first):

* the recalibration is fitted on the 1000 simulations of the recalibration bank (seed 2), exactly
  as ``nre_vs_npe.py`` does for its ``+recal`` rows;
* the pairs judged are the 300 held-out simulations (bank seed 1) and ``--num-extra`` simulations
  of a fourth fields bank (seed ``--extra-seed``, 3 by default), which no benchmark trains or
  recalibrates on;
* the subsets are the terciles of a statistic of x alone: the raw posterior's mean of η (and, in
  turn, of B), computed per estimator; any function of x is a valid conditioning set;
* per subset and parameter: the PIT mean (0.5 under calibration, standard error
  :math:`\sqrt{1/(12 n)}`), the PIT variance × 12 (1: right width; < 1: under-confident) and the KS
  p-value; and a :math:`\chi^2` test of "the three subset PIT means are equal" (2 degrees of
  freedom), which is what a marginal recalibration needs to be able to work;
* and an experiment, the ``binned`` rows: three recalibrations instead of one, each fitted on the
  recalibration pairs of one tercile of the raw posterior mean of η (edges from the recalibration
  bank) and applied to the judged pairs of that tercile: does conditioning the map on one
  statistic of x remove the subset errors, also those along the other parameter's terciles?

Run::

    .venv/bin/python benchmarks/conditional_calibration.py              # NRE_A and NRE_C at 1000, seeds 0 1 2
    .venv/bin/python benchmarks/conditional_calibration.py --budget 10000 --methods NRE_A NRE_C NPE
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _fields import add_cache_options, fields_bank, judging_banks  # benchmarks/_fields.py
from _machine import machine
from recalibration import pit_summary  # benchmarks/recalibration.py: KS p, PIT mean, variance × 12

from glsbi_plugin import make_simulator
from glsbi_plugin.diagnostics import binned_pit_means
from glsbi_plugin.inference import GridPosterior, fit_recalibration
from glsbi_plugin.physics import STM, presets

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("eta", "B")


def estimator_path(cache: Path, method: str, budget: int, seed: int) -> Path:
    """The one cached nre_vs_npe estimator of (STM, method, budget, seed)."""
    found = sorted(glob.glob(str(cache / f"estimator_*_stm_{method.replace(' ', '-')}_{budget}_{seed}.pt")))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one cached estimator for stm {method} {budget} seed {seed} in {cache}, found {len(found)}: "
            "run benchmarks/nre_vs_npe.py for that cell first (or pass --cache)")
    return Path(found[0])


def subset_table(u: np.ndarray, key: np.ndarray, parts: int = 3) -> dict[str, Any]:
    """PIT mean, variance × 12 and KS p per parameter in each of ``parts`` quantile bins of ``key``,
    and the χ² p-value of equal PIT means across the bins (per parameter; the library's
    ``diagnostics.binned_pit_means``, which ``CalibrationReport.conditional_verdicts`` uses)."""
    b = binned_pit_means(u, key, parts)
    return {"bins": [{"n": int(b["counts"][i]), **pit_summary(u[b["bin"] == i])} for i in range(parts)],
            "equal_means_p": [float(f"{p:.3g}") for p in b["pvalues"]]}


def judge(est: Any, prior: Any, recal: tuple, pairs: tuple, resolution: int, parts: int = 3) -> dict[str, Any]:
    raw = GridPosterior(est, prior, resolution=resolution)
    r = fit_recalibration(raw, *recal, names=NAMES)
    rec = raw.with_recalibration(r)
    # the experiment: one recalibration per tercile of the raw posterior mean of η, fitted on the
    # recalibration pairs of that tercile and applied to the judged pairs of the same tercile
    recal_mean = np.asarray([raw.marginal_moments(xi[None])[0].numpy()[0] for xi in recal[1]])
    edges = np.quantile(recal_mean, np.linspace(0, 1, parts + 1))[1:-1]
    binned = []
    for b in range(parts):
        rows = torch.from_numpy(np.searchsorted(edges, recal_mean, side="right") == b)
        binned.append(raw.with_recalibration(fit_recalibration(raw, recal[0][rows], recal[1][rows], names=NAMES)))
    theta, x = pairs
    u: dict[str, list[np.ndarray]] = {"raw": [], "recalibrated": [], "binned": []}
    means: dict[str, list[np.ndarray]] = {k: [] for k in u}
    for th, xi in zip(theta, x, strict=True):
        xi = xi[None]
        u["raw"].append(raw.marginal_cdf(th, xi).numpy())
        means["raw"].append(raw.marginal_moments(xi)[0].numpy())  # same x: the grid evaluated above is reused
        pick = binned[int(np.searchsorted(edges, means["raw"][-1][0], side="right"))]
        for name, post in (("recalibrated", rec), ("binned", pick)):
            u[name].append(post.marginal_cdf(th, xi).numpy())
            means[name].append(post.marginal_moments(xi)[0].numpy())
    mean_raw = np.asarray(means["raw"])
    out: dict[str, Any] = {"degrees": [r.degree(k) for k in range(r.dim)], "n": int(len(theta)),
                           "binned_edges_eta": edges.round(5).tolist()}
    for name in u:
        uu = np.asarray(u[name])
        out[name] = {"all": pit_summary(uu), "slope": slopes(theta.numpy(), np.asarray(means[name])),
                     **{f"by_mean_{p}": subset_table(uu, mean_raw[:, k], parts) for k, p in enumerate(NAMES)}}
    return out


def slopes(theta: np.ndarray, mean: np.ndarray) -> list[float]:
    """Least-squares slope of the true θ on the posterior mean, per parameter: 1 for a calibrated
    posterior (E[θ | E_q[θ | x]] = E_q[θ | x]); > 1: the posterior means are shrunk toward the middle."""
    return [round(float(np.polyfit(mean[:, k], theta[:, k], 1)[0]), 3) for k in range(theta.shape[1])]


def _means(table: dict[str, Any], k: int) -> str:
    means = ", ".join(f"{b['pit_mean'][k]:.3f}" for b in table["bins"])
    return f"{means} | {table['equal_means_p'][k]:.2g}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Calibration within subsets of x: what a marginal recalibration can and cannot fix",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in rows)),
        "",
        "Estimators: `benchmarks/nre_vs_npe.py`'s STM cells (training bank seed 0, a budget b trains on its first b "
        "rows); recalibration fitted on the 1000 simulations of the recalibration bank (seed 2); "
        f"judged on {meta['n']} pairs (the 300 held-out simulations of seed 1 and {meta['extra']['n']} of a bank of "
        f"seed {meta['extra']['seed']} that no benchmark trains or recalibrates on); grid posteriors "
        "at the resolution of the 'grid' column. Subsets: terciles of the raw posterior mean of η (B) over those "
        "pairs. Each row was measured at the date and commit in `conditional_calibration.json`.",
        "",
        "PIT mean 0.5 and variance × 12 = 1 under calibration (standard error of a tercile's mean: "
        f"{np.sqrt(1 / 12 / (meta['n'] / 3)):.3f}); 'equal means p': χ² test that the three terciles share one "
        "PIT mean, which a marginal recalibration needs. Slope: least-squares slope of the true θ on the posterior "
        "mean (1 when calibrated; > 1: the posterior means are shrunk toward the middle of the prior). "
        "Posterior 'binned': three recalibrations, one per tercile of the raw E[η] (an experiment; the library "
        "has only the single marginal one).",
        "",
        "| method | budget | seed | grid | posterior | parameter | all: PIT mean, var×12, KS p | slope "
        "| by tercile of E[η]: PIT means | equal means p | by tercile of E[B]: PIT means | equal means p |",
        "|---|---:|---|---:|---|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        for post in ("raw", "recalibrated", "binned"):
            if post not in r:
                continue
            d = r[post]
            for k, name in enumerate(NAMES):
                a = d["all"]
                lines.append(
                    f"| {r['method']} | {r['budget']} | {r['seed']} | {r.get('resolution', 64)}² | {post} | {name} | "
                    f"{a['pit_mean'][k]:.3f}, "
                    f"{a['pit_var_x12'][k]:.2f}, {a['ks_p'][k]:.2g} | {d['slope'][k]:.2f} | "
                    + " | ".join(_means(d[s], k) for s in ("by_mean_eta", "by_mean_B")) + " |")
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``conditional_calibration.json`` and ``.md`` from all rows (the markdown's hand-written reading is kept)."""
    out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: (r["budget"], r["method"], r["seed"], r.get("resolution", 64)))
    (out / "conditional_calibration.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = out / "conditional_calibration.md"
    old = md.read_text() if md.exists() else ""
    reading = old[old.index("## Reading"):] if "## Reading" in old else ""
    md.write_text(markdown(rows, meta) + ("\n" + reading if reading else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["NRE_A", "NRE_C"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--num-extra", type=int, default=2000, help="simulations of the extra held-out bank")
    p.add_argument("--extra-seed", type=int, default=3, help="seed of the extra held-out bank")
    p.add_argument("--resolution", type=int, default=64)
    add_cache_options(p)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    info: dict[str, Any] = {}
    test_bank, recal_bank = judging_banks(a.bank_dir, info)
    extra_bank = fields_bank(a.bank_dir, "extra", a.num_extra, a.extra_seed, size=48, info=info)
    obs = STM()
    test, extra = test_bank.to_torch(observation=obs), extra_bank.to_torch(observation=obs)
    test = (test[0][:300], test[1][:300])
    extra = (extra[0][: a.num_extra], extra[1][: a.num_extra])
    pairs = (torch.cat([test[0], extra[0]]), torch.cat([test[1], extra[1]]))
    recal = recal_bank.to_torch(observation=obs)
    prior = make_simulator(("eta", "field"), config=presets.small_forward_model(size=48)).prior()
    env = machine()
    meta = {"machine": env, "banks": info, "n": int(len(pairs[0])),
            "extra": {"n": a.num_extra, "seed": a.extra_seed}, "resolution": a.resolution,
            "command": "python benchmarks/conditional_calibration.py " + " ".join(argv or __import__("sys").argv[1:])}
    path = a.out / "conditional_calibration.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []  # earlier budgets and methods are kept
    for method in a.methods:
        for seed in a.seeds:
            t0 = time.perf_counter()
            try:
                saved = estimator_path(a.cache, method, a.budget, seed)
            except FileNotFoundError as e:
                print(f"skipped: {e}", flush=True)
                continue
            est, _, _ = torch.load(saved, weights_only=False)
            row = {"method": method, "budget": a.budget, "seed": seed, "resolution": a.resolution,
                   **judge(est, prior, recal, pairs, a.resolution)}
            row |= {"seconds": round(time.perf_counter() - t0, 1), "date": env.get("date"),
                    "git_commit": env.get("git_commit"), "command": meta["command"]}
            rows = [r for r in rows if (r["method"], r["budget"], r["seed"], r.get("resolution", 64))
                    != (method, a.budget, seed, a.resolution)] + [row]
            write(a.out, rows, meta)  # after every row: a killed run keeps what it measured
            print(f"{method} seed {seed} ({row['seconds']:.0f} s): η PIT means by tercile of E[η]"
                  + "".join(f"; {name} {[b['pit_mean'][0] for b in row[name]['by_mean_eta']['bins']]} "
                            f"(p {row[name]['by_mean_eta']['equal_means_p'][0]:.2g})"
                            for name in ("raw", "recalibrated", "binned")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
