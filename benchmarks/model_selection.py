#!/usr/bin/env python
r"""Is there drag? Posterior model probabilities p(M₁ | x), their calibration and detection power.

Two forward models differ in one switch (``glsbi_plugin.inference.train_model_classifier``):

* **M₀**: no drag, θ = (η, B) from the default prior box;
* **M₁**: the mixed-gradient (drag) coupling ν_d ~ U(0, ``--drag-max``), θ = (η, B, ν_d).

Both run the same numerics: a ``--size``² torus, SK-ROCK with ``--stages`` stages at dt = 0.3125 to
t = ``--t-final`` (the small forward model's snapshot; 3 stages keep the step inside the SK-ROCK
bound at ν_d = 0.8, where the kinetic matrix's largest eigenvalue is K + ν_d/2 = 0.9), observed in
the ideal channels ``--channels`` (default ρ₁, ρ₂ and the supercurrent vorticity "curlj").

* **Simulations.** ``--num-train`` training simulations (half per model, seed ``--seed``) and
  ``--num-test`` held-out ones (half per model, seed ``--test-seed``, never used in training).
* **Classifier.** ResNetGAP embedding (torus-symmetry augmentation) + MLP over the model index,
  cross-entropy, early stopping and a temperature fitted on a 15 % validation split of the
  training simulations (``ModelSelectionConfig``). Equal model frequencies, so p(M₁ | x) under equal
  prior odds is the classifier's output and the Bayes factor is its odds.
* **Verdicts on the held-out seed.** Reliability diagram and expected calibration error (ECE) of
  p(M₁ | x) (10 bins), log loss and accuracy, ROC area overall and per ν_d bin of the M₁
  simulations (each bin's positives against all M₀ negatives: the detection power vs ν_d), and
  the quantiles of log B₁₀ under each model.
* **Joint (η, B, ν_d) posterior** (``--posterior``): an NRE_C (``build_inference``/``train``, the
  same embedding) on the M₁ training simulations and a ``GridPosterior`` on a ``--resolution``³
  grid for one held-out M₁ observation with large ν_d: MAP, posterior mean ± s.d. and 90 %
  credible intervals against the true θ.

Resumable: the simulations are stored in chunks and the trained networks as files in ``--cache``,
keyed by a hash of every setting that changes them; a killed run continues where it stopped.
Writes ``benchmarks/results/model_selection.{json,md,png}``. Run::

    .venv/bin/python benchmarks/model_selection.py           # ~10-15 min on 2 shared CPU cores
    .venv/bin/python benchmarks/model_selection.py --quick   # smoke run into a temporary directory
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import (
    GridPosterior,
    ModelClassifier,
    ModelPosterior,
    ModelSelectionConfig,
    auc_by_bin,
    build_inference,
    reliability,
    roc_auc,
    train,
    train_model_classifier,
)
from glsbi_plugin.physics import presets
from glsbi_plugin.sbi_simulator import DEFAULT_BOUNDS, TDGLSimulator, make_simulator

RESULTS = Path(__file__).resolve().parent / "results"
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True, symmetry="torus")
CHUNK = 128
logger = logging.getLogger("model_selection")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def simulators(args: argparse.Namespace) -> tuple[TDGLSimulator, TDGLSimulator]:
    cfg = presets.forward_model(args.size, t_final=args.t_final, stages=args.stages)
    bounds = {"eta": DEFAULT_BOUNDS["eta"], "field": tuple(args.field), "drag": (0.0, args.drag_max)}
    common = dict(config=cfg, bounds=bounds, channels=tuple(args.channels), batch_size=32)
    return make_simulator(("eta", "field"), **common), make_simulator(("eta", "field", "drag"), **common)


def simulate(sim: TDGLSimulator, n: int, seed: int, model: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` simulations of one model: θ from its prior and per-row seeds from (seed, model), stored
    in chunks under ``cache`` (a rerun loads the finished chunks)."""
    key = _hash({"sim": sim.describe(), "n": n, "seed": seed, "model": model})
    theta = _prior_draws(sim, n, seed, model)
    seeds = np.random.SeedSequence([seed, model]).generate_state(n, dtype=np.uint32).astype(np.int64) & 0x7FFFFFFF
    xs = []
    for start in range(0, n, CHUNK):
        path = cache / f"sims_{key}_{start}.pt"
        if path.exists():
            xs.append(torch.load(path))
            continue
        t0 = time.perf_counter()
        x = sim.simulate_seeds(theta[start : start + CHUNK], seeds[start : start + CHUNK], shard=False)
        torch.save(x, path)
        xs.append(x)
        logger.info("model %d seed %d: simulated %d/%d (%.1f s)", model, seed, start + len(x), n,
                    time.perf_counter() - t0)
    return theta, torch.cat(xs)


def _prior_draws(sim: TDGLSimulator, n: int, seed: int, model: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1_000_003 * seed + model)
    low, high = torch.tensor(sim.low), torch.tensor(sim.high)
    return low + (high - low) * torch.rand((n, len(sim.low)), generator=g)


def classifier(x: torch.Tensor, m: torch.Tensor, args: argparse.Namespace, cache: Path,
               data_key: str) -> ModelPosterior:
    cfg = ModelSelectionConfig(embedding=EMBEDDING, max_epochs=args.max_epochs, stop_after_epochs=args.patience)
    path = cache / f"classifier_{_hash({'data': data_key, 'cfg': repr(cfg), 'seed': args.seed})}.pt"
    if path.exists():
        saved = torch.load(path)
        net = ModelClassifier(x.shape[1], 2, cfg.embedding, cfg.hidden_features)
        net.load_state_dict(saved["state"])
        net.eval()
        return ModelPosterior(net, saved["log_freq"], saved["tau"], tuple(map(tuple, saved["history"])), saved["best"])
    t0 = time.perf_counter()
    post = train_model_classifier(x, m, config=cfg, seed=args.seed)
    logger.info("classifier trained in %.0f s (%d epochs)", time.perf_counter() - t0, len(post.history))
    torch.save({"state": post.net.state_dict(), "log_freq": post.train_log_freq, "tau": post.temperature,
                "history": [list(h) for h in post.history], "best": post.best_epoch,
                "seconds": time.perf_counter() - t0}, path)
    return post


def joint_posterior(sim: TDGLSimulator, theta: torch.Tensor, x: torch.Tensor, theta_o: torch.Tensor,
                    x_o: torch.Tensor, args: argparse.Namespace, cache: Path, data_key: str) -> dict[str, Any]:
    """NRE_C on the M₁ simulations, GridPosterior (d = 3) for one observation."""
    prior = sim.prior()
    path = cache / f"nre_{_hash({'data': data_key, 'epochs': args.max_epochs, 'seed': args.seed})}.pt"
    torch.manual_seed(args.seed)
    inference = build_inference("NRE_C", prior, EMBEDDING, x_shape=tuple(x.shape[1:]))
    t0 = time.perf_counter()
    if path.exists():
        estimator = torch.load(path, weights_only=False)
    else:
        estimator = train(inference, theta, x, max_epochs=args.max_epochs, stop_after_epochs=args.patience)
        torch.save(estimator, path)
    seconds = time.perf_counter() - t0
    post = GridPosterior(estimator, prior, resolution=args.resolution, x_o=x_o)
    mean, sd = (v.tolist() for v in post.marginal_moments())
    ci = post.credible_interval(0.9)
    width = torch.tensor(sim.high) - torch.tensor(sim.low)
    return {
        "names": list(sim.names), "true": theta_o.tolist(), "map": post.map().tolist(), "mean": mean, "sd": sd,
        "sd_over_prior_width": (torch.tensor(sd) / width).tolist(), "ci90": ci.tolist(),
        "inside_ci90": [bool(lo <= t <= hi) for (lo, hi), t in zip(ci.tolist(), theta_o.tolist(), strict=True)],
        "resolution": args.resolution, "train_seconds": seconds,
    }


def evaluate(post: ModelPosterior, x: torch.Tensor, m: torch.Tensor, drag: torch.Tensor,
             edges: list[float]) -> dict[str, Any]:
    p1 = post.prob(x)[:, 1]
    y = (m == 1).numpy()
    rel = reliability(p1, y, bins=10)
    raw = ModelPosterior(post.net, post.train_log_freq, 1.0)
    lb = post.log_bayes_factor(x).numpy()
    eps = 1e-7
    q = p1.clamp(eps, 1 - eps).numpy()
    return {
        "ece": rel.ece, "ece_untempered": reliability(raw.prob(x)[:, 1], y).ece, "reliability": rel.to_dict(),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "accuracy": float(np.mean((q > 0.5) == y)),
        "auc": roc_auc(lb, y), "auc_by_drag": auc_by_bin(lb, y, drag.numpy(), edges),
        "log_bf_quantiles": {f"M{k}": np.quantile(lb[m.numpy() == k], [0.1, 0.5, 0.9]).tolist() for k in (0, 1)},
        "temperature": post.temperature, "epochs": len(post.history), "best_epoch": post.best_epoch,
    }


def figure(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = res["evaluation"]
    rel = ev["reliability"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    conf = np.array([np.nan if v is None else v for v in rel["confidence"]])
    freq = np.array([np.nan if v is None else v for v in rel["frequency"]])
    ax.plot(conf, freq, "o-")
    ax.set(xlabel="predicted p(M₁ | x)", ylabel="frequency of M₁", title=f"reliability (ECE {ev['ece']:.3f})")
    ax = axes[1]
    bins = ev["auc_by_drag"]
    ax.plot([(b["low"] + b["high"]) / 2 for b in bins], [b["auc"] for b in bins], "o-")
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set(xlabel="ν_d of the M₁ simulations", ylabel="ROC area vs M₀", ylim=(0.4, 1.0), title="detection power")
    ax = axes[2]
    lb = np.asarray(res["_log_bf"])
    m = np.asarray(res["_m"])
    for k in (0, 1):
        ax.hist(lb[m == k], bins=30, alpha=0.6, label=f"simulated from M{k}")
    ax.set(xlabel="log B₁₀", title="Bayes factor (held-out seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict[str, Any]) -> str:
    ev, s = res["evaluation"], res["settings"]
    lines = [
        "# Model selection: is there drag? (`benchmarks/model_selection.py`)",
        "",
        f"M₀: no drag, θ = (η, B); M₁: ν_d ~ U(0, {s['drag_max']}), θ = (η, B, ν_d); η ∈ {s['eta']}, "
        f"B ∈ {s['field']}. {s['size']}² torus, SK-ROCK s = {s['stages']}, dt = 0.3125, t = {s['t_final']}, "
        f"channels {', '.join(s['channels'])}. {s['num_train']} training simulations (seed {s['seed']}), "
        f"{s['num_test']} held-out (seed {s['test_seed']}), half per model. Classifier: ResNetGAP "
        f"{list(EMBEDDING.widths)} + MLP, {ev['epochs']} epochs (best {ev['best_epoch']}), temperature "
        f"{ev['temperature']:.3g}. Wall time of this invocation {res['seconds']:.0f} s "
        f"({res['environment']['threads']} torch thread(s); parts found in the cache are loaded, not recomputed).",
        "",
        "| held-out verdict | value |",
        "|---|---|",
        f"| expected calibration error of p(M₁ \\| x) (10 bins) | {ev['ece']:.3f} "
        f"(τ = 1: {ev['ece_untempered']:.3f}) |",
        f"| log loss / accuracy | {ev['log_loss']:.3f} / {ev['accuracy']:.3f} |",
        f"| ROC area, all ν_d | {ev['auc']:.3f} |",
        f"| log B₁₀ quantiles 10/50/90 % under M₀ | {', '.join(f'{v:.2f}' for v in ev['log_bf_quantiles']['M0'])} |",
        f"| log B₁₀ quantiles 10/50/90 % under M₁ | {', '.join(f'{v:.2f}' for v in ev['log_bf_quantiles']['M1'])} |",
        "",
        "Detection power (ROC area of the M₁ simulations in each ν_d bin against all M₀ simulations):",
        "",
        "| ν_d bin | M₁ simulations | ROC area |",
        "|---|---|---|",
    ]
    lines += [f"| [{b['low']:.2f}, {b['high']:.2f}] | {b['num_positive']} | {b['auc']:.3f} |"
              for b in ev["auc_by_drag"]]
    rel = ev["reliability"]
    lines += ["", "Reliability diagram (bins of p(M₁ | x)):", "",
              "| bin | count | mean p(M₁ \\| x) | frequency of M₁ |", "|---|---|---|---|"]
    for i, c in enumerate(rel["counts"]):
        if c:
            lines.append(f"| [{rel['edges'][i]:.1f}, {rel['edges'][i + 1]:.1f}) | {c} | {rel['confidence'][i]:.3f} | "
                         f"{rel['frequency'][i]:.3f} |")
    jp = res.get("joint_posterior")
    if jp:
        lines += ["", f"Joint (η, B, ν_d) posterior of one held-out M₁ observation (NRE_C on the M₁ training "
                  f"simulations, GridPosterior {jp['resolution']}³):", "",
                  "| parameter | true | MAP | mean ± s.d. | s.d. / prior width | 90 % interval |",
                  "|---|---|---|---|---|---|"]
        for k, name in enumerate(jp["names"]):
            lo, hi = jp["ci90"][k]
            lines.append(f"| {name} | {jp['true'][k]:.3f} | {jp['map'][k]:.3f} | "
                         f"{jp['mean'][k]:.3f} ± {jp['sd'][k]:.3f} | "
                         f"{jp['sd_over_prior_width'][k]:.2f} | [{lo:.3f}, {hi:.3f}] |")
    lines += ["", "![reliability, detection power, Bayes factors](model_selection.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=40)
    p.add_argument("--t-final", type=float, default=80.0)
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--drag-max", type=float, default=0.8)
    p.add_argument("--field", type=float, nargs=2, default=(0.05, 0.10))
    p.add_argument("--channels", nargs="+", default=["rho1", "rho2", "curlj"])
    p.add_argument("--num-train", type=int, default=1600)
    p.add_argument("--num-test", type=int, default=800)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--resolution", type=int, default=24)
    p.add_argument("--no-posterior", dest="posterior", action="store_false")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "glsbi" / "model_selection"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run into a temporary directory, no results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out_dir = RESULTS
    if args.quick:
        tmp = tempfile.mkdtemp(prefix="glsbi-model-selection-")
        args.cache, out_dir = tmp, Path(tmp)
        args.size, args.t_final, args.num_train, args.num_test, args.max_epochs, args.resolution = 16, 8.0, 64, 32, 2, 8
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sim0, sim1 = simulators(args)
    half, half_test = args.num_train // 2, args.num_test // 2
    th0, x0 = simulate(sim0, half, args.seed, 0, cache)
    th1, x1 = simulate(sim1, half, args.seed, 1, cache)
    tt0, y0 = simulate(sim0, half_test, args.test_seed, 0, cache)
    tt1, y1 = simulate(sim1, half_test, args.test_seed, 1, cache)
    data_key = _hash({"m0": sim0.describe(), "m1": sim1.describe(), "n": args.num_train, "seed": args.seed})
    x = torch.cat([x0, x1])
    m = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
    post = classifier(x, m, args, cache, data_key)
    x_test = torch.cat([y0, y1])
    m_test = torch.cat([torch.zeros(half_test, dtype=torch.long), torch.ones(half_test, dtype=torch.long)])
    drag_test = torch.cat([torch.zeros(half_test), tt1[:, 2]])
    edges = [args.drag_max * f for f in (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)]  # finer at small ν_d
    res: dict[str, Any] = {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("cache",)}, "eta": list(DEFAULT_BOUNDS["eta"]),
                     "field": list(args.field), "embedding": EMBEDDING.to_dict()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                        "machine": platform.machine()},
        "evaluation": evaluate(post, x_test, m_test, drag_test, edges),
    }
    res["_log_bf"] = post.log_bayes_factor(x_test).tolist()
    res["_m"] = m_test.tolist()
    if args.posterior:
        pick = int(torch.argmax(tt1[:, 2]))  # the held-out M₁ observation with the largest drag
        res["joint_posterior"] = joint_posterior(sim1, th1, x1, tt1[pick], y1[pick], args, cache, data_key)
    res["seconds"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    figure(res, out_dir / "model_selection.png")
    for k in ("_log_bf", "_m"):
        res.pop(k)
    (out_dir / "model_selection.json").write_text(json.dumps(res, indent=1))
    (out_dir / "model_selection.md").write_text(markdown(res))
    logger.info("wrote %s", out_dir / "model_selection.md")
    print((out_dir / "model_selection.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
