#!/usr/bin/env python
r"""Does recalibration make the main job's posterior calibrated? Several training seeds, two held-out sets.

The main job's recipe (``glsbi quickstart``): an estimator trained on STM images of 1000
simulations (48², t = 80) to convergence under the torus symmetries, then its marginals
recalibrated on 1000 further simulations (``inference.fit_recalibration``: a Bernstein CDF per
marginal, its degree by BIC). This script repeats it
for ``--methods`` × ``--seeds`` on the shared fields banks of ``benchmarks/_fields.py`` and judges
each posterior, before and after recalibration, on pairs it never saw:

* data: training bank (seed 0) rows ``[0, 1000)`` train (sbi keeps 10 % for early stopping),
  rows ``[1000, 2000)`` recalibrate; judged on the held-out bank (seed 1, 300 pairs: the full
  calibration report, SBC ranks from 1000 draws, coverage, TARP, held-out log q, posterior width)
  and on the training bank's unused rows ``[2000, 3000)`` (1000 pairs: exact grid PIT values, a
  far more powerful SBC test);
* also the log-mean pool of the NRE_C seeds (an ensemble), before and after recalibration;
* and, for comparison, the recalibration family tried first: one Beta CDF per marginal (two
  parameters, maximum likelihood on the same 1000 PIT values), applied to the exact PIT values of
  the 1000 pairs (``beta`` rows: only the 1000-pair columns).

Estimators are cached in ``--cache`` (a killed run retrains only what is missing); each result
appends a JSON line to ``--out`` and ``--report`` rewrites the markdown table from them. Run::

    .venv/bin/python benchmarks/recalibration.py                  # NRE_C and NPE, seeds 0 1 2 (~30 min, 2 cores)
    .venv/bin/python benchmarks/recalibration.py --report         # the table from the JSON lines
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
from _machine import machine
from scipy import optimize, special, stats

from glsbi_plugin import make_simulator
from glsbi_plugin.diagnostics import calibration_report
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, build_inference, fit_recalibration, grid_pit, train
from glsbi_plugin.physics import STM, presets

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path.home() / ".cache" / "glsbi" / "recalibration"
#: The main job's embedding and training recipe (``apps.quickstart.QuickstartSettings``).
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True, symmetry="torus")
TRAIN, RECAL, BIG = slice(0, 1000), slice(1000, 2000), slice(2000, 3000)


def estimator(method: str, seed: int, prior: Any, theta: torch.Tensor, x: torch.Tensor, cache: Path) -> Any:
    """The cached estimator of (method, seed), trained now if missing."""
    path = cache / f"{method}_seed{seed}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    inference = build_inference(method, prior, EMBEDDING, x_shape=tuple(x.shape[1:]))
    est = train(inference, theta, x, max_epochs=100, stop_after_epochs=15)
    est._glsbi_train_s = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(est, path)
    return est


def pit_summary(u: np.ndarray) -> dict[str, list[float]]:
    """KS p, PIT mean, PIT variance × 12 and 90 % central coverage per parameter of exact PIT values."""
    return {
        "ks_p": [float(f"{stats.kstest(c, 'uniform').pvalue:.3g}") for c in u.T],
        "pit_mean": [round(float(c.mean()), 3) for c in u.T],
        "pit_var_x12": [round(float(12 * c.var()), 3) for c in u.T],
        "coverage_90": [round(float(np.mean((c > 0.05) & (c < 0.95))), 3) for c in u.T],
    }


def judge(posterior: GridPosterior, test: tuple, big: tuple) -> dict[str, Any]:
    theta, x = test
    width = (posterior.high - posterior.low).numpy()
    sds = np.array([posterior.marginal_moments(xi)[1].numpy() for xi in x])
    log_q = float(torch.stack([posterior.log_prob(t[None], xi) for t, xi in zip(theta, x, strict=True)]).mean())
    t0 = time.perf_counter()
    report = calibration_report(posterior, theta, x, seed=1, names=("eta", "B"), c2st=False)
    grid = np.asarray(report.grid_coverage)
    return {
        "std_over_width": (sds.mean(0) / width).round(3).tolist(), "log_q": round(log_q, 3),
        "sbc_ks_p": [float(f"{v:.2g}") for v in report.ks_pvalues],
        "coverage_90": [round(c, 3) for c in report.coverage_at(0.9)["grid"]],
        "hpd_90": round(float(report.coverage_at(0.9)["hpd"]), 3),
        "max_coverage_deviation": round(float(np.abs(grid - np.asarray(report.levels)[:, None]).max()), 3),
        "tarp_atc": round(report.tarp_atc, 3), "verdicts": report.verdicts(),
        "calibration_s": round(time.perf_counter() - t0, 1),
        "big": {"n": int(big[0].shape[0]), **pit_summary(grid_pit(posterior, *big))},
    }


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    train_bank, test_bank, info = fields_banks(a.bank_dir, size=48, train=(3000, 0), test=(300, 1))
    theta_all, x_all = train_bank.to_torch(observation=STM())
    test = test_bank.to_torch(observation=STM())
    big = (theta_all[BIG], x_all[BIG])
    prior = make_simulator(("eta", "field"), config=presets.small_forward_model(size=48)).prior()
    meta = {"machine": machine(), "banks": info, "train_rows": [TRAIN.start, TRAIN.stop],
            "recalibration_rows": [RECAL.start, RECAL.stop], "big_test_rows": [BIG.start, BIG.stop]}
    cells: dict[str, list[Any]] = {}
    for method in a.methods:
        for seed in a.seeds:
            est = estimator(method, seed, prior, theta_all[TRAIN], x_all[TRAIN], a.cache)
            cells.setdefault(method, []).append(est)
            emit(a, method, [seed], est, prior, test, big, theta_all, x_all, meta)
    if "NRE_C" in cells and len(cells["NRE_C"]) > 1:
        emit(a, f"NRE_C x{len(cells['NRE_C'])} log-mean", a.seeds, cells["NRE_C"], prior, test, big, theta_all,
             x_all, meta, combine="log-mean")


def emit(a: argparse.Namespace, label: str, seeds: list[int], est: Any, prior: Any, test: tuple, big: tuple,
         theta_all: torch.Tensor, x_all: torch.Tensor, meta: dict, combine: str = "mixture") -> None:
    raw = GridPosterior(est, prior, resolution=a.resolution, combine=combine)
    recal = fit_recalibration(raw, theta_all[RECAL], x_all[RECAL], names=("eta", "B"))
    members = est if isinstance(est, list) else [est]
    base = {"method": label, "seeds": seeds, "epochs": [int(getattr(m, "_glsbi_epochs_trained", -1)) for m in members],
            "train_s": [round(float(getattr(m, "_glsbi_train_s", float("nan"))), 1) for m in members],
            "date": meta["machine"].get("date"), "git_commit": meta["machine"].get("git_commit")}
    for name, posterior in (("raw", raw), ("recalibrated", raw.with_recalibration(recal))):
        row = {**base, "posterior": name, **judge(posterior, test, big)}
        if name == "recalibrated":
            row["recalibration"] = {"degrees": [recal.degree(k) for k in range(recal.dim)],
                                    "weights": [[round(w, 4) for w in ws] for ws in recal.weights]}
        _append(a.out, row)
    # the family tried first: one Beta(a, b) CDF per marginal, on the same recalibration PIT values
    u_fit, u_big = grid_pit(raw, theta_all[RECAL], x_all[RECAL]), grid_pit(raw, *big)
    ab = [_beta_mle(np.clip(u_fit[:, k], 0.5 / len(u_fit), 1 - 0.5 / len(u_fit))) for k in range(u_fit.shape[1])]
    mapped = np.stack([special.betainc(*ab[k], u_big[:, k]) for k in range(u_big.shape[1])], 1)
    _append(a.out, {**base, "posterior": "beta", "beta_ab": [[round(v, 3) for v in p] for p in ab],
                    "big": {"n": len(u_big), **pit_summary(mapped)}})


def _append(path: Path, row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _beta_mle(u: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood Beta(a, b) of values in (0, 1) (concave log-likelihood in (a, b))."""
    s1, s2, n = float(np.log(u).sum()), float(np.log1p(-u).sum()), len(u)

    def nll(z: np.ndarray) -> float:
        a, b = np.exp(z)
        return -((a - 1) * s1 + (b - 1) * s2 - n * special.betaln(a, b))

    res = optimize.minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    return float(np.exp(res.x[0])), float(np.exp(res.x[1]))


def report(a: argparse.Namespace) -> str:
    rows = [json.loads(line) for line in a.out.read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for r in rows:  # the newest row of each (method, seeds, posterior)
        latest[(r["method"], tuple(r["seeds"]), r["posterior"])] = r
    lines = [
        "# Recalibration of the main job's posterior: several seeds, two held-out sets",
        "",
        f"Command: `.venv/bin/python benchmarks/recalibration.py {' '.join(a.argv)}` (then `--report`). Each",
        "estimator was trained with the main job's recipe (STM images, 48², t = 80; 1000 simulations of the",
        "training bank, seed 0; to convergence, patience 15, torus augmentation) and recalibrated on 300 further",
        "simulations of that bank (rows 1000–2000), then judged on simulations it never saw: **300 of the",
        "held-out bank (seed 1)** (SBC with 1000 draws, coverage, TARP, log q, std/width; 64² grid) and **1000",
        "unused rows (2000–3000) of the training bank** (exact grid PIT values: KS p, PIT mean, variance × 12 and",
        "90 % coverage). PIT mean 0.5 and variance × 12 = 1 when calibrated (< 1: under-confident). `beta`: the",
        "recalibration family tried first (one Beta CDF per marginal) on the same 1000 pairs, 1000-pair columns only.",
        "",
        "| method | seed(s) | posterior | η std/width | B std/width | log q | SBC KS p (η, B), 300 | 90 % cov (η, B) "
        "| max dev | TARP ATC | KS p (η, B), 1000 | PIT mean (η, B), 1000 | PIT var×12 (η, B), 1000 |",
        "|---|---|---|---:|---:|---:|---|---|---:|---:|---|---|---|",
    ]
    order = {"raw": 0, "recalibrated": 1, "beta": 2}
    for (method, seeds, post), r in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
        b = r["big"]
        if post == "beta":
            lines.append(f"| {method} | {', '.join(map(str, seeds))} | beta | | | | | | | | {_pair(b['ks_p'])} | "
                         f"{_pair(b['pit_mean'], '.3f')} | {_pair(b['pit_var_x12'], '.2f')} |")
            continue
        lines.append(
            f"| {method} | {', '.join(map(str, seeds))} | {post} | {r['std_over_width'][0]:.3f} | "
            f"{r['std_over_width'][1]:.3f} | {r['log_q']:.2f} | {_pair(r['sbc_ks_p'])} | "
            f"{_pair(r['coverage_90'], '.2f')} | {r['max_coverage_deviation']:.3f} | {r['tarp_atc']:+.3f} | "
            f"{_pair(b['ks_p'])} | {_pair(b['pit_mean'], '.3f')} | {_pair(b['pit_var_x12'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _pair(values: list[float], fmt: str = ".2g") -> str:
    return ", ".join(format(v, fmt) for v in values)


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["NRE_C", "NPE"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--bank-dir", type=Path, default=Path.home() / ".cache" / "glsbi" / "observation_models")
    p.add_argument("--cache", type=Path, default=CACHE, help="trained estimators (reused by later runs)")
    p.add_argument("--out", type=Path, default=RESULTS / "recalibration.jsonl")
    p.add_argument("--report", action="store_true", help="only rewrite recalibration.md from --out")
    a = p.parse_args()
    a.argv = [arg for arg in sys.argv[1:] if arg != "--report"]
    if not a.report:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        run(a)
    md = report(a)
    (a.out.with_suffix(".md")).write_text(md + _reading(a.out.with_suffix(".md")))
    print(md)


def _reading(path: Path) -> str:
    """The hand-written "## Reading" section of an existing report, kept when the table is rewritten."""
    if not path.exists():
        return ""
    text = path.read_text()
    i = text.find("\n## Reading")
    return "" if i < 0 else text[i:]


if __name__ == "__main__":
    main()
