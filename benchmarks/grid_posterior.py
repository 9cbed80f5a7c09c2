"""Grid posterior vs sbi's potential, rejection sampling and MCMC for a trained NRE_C on 64×64 images.

Everything is measured side by side in one process on this machine's CPU, once with 2 torch threads
and once with 1 (``--threads``):

* ``grid``: :class:`glsbi_plugin.inference.GridPosterior` on a 100×100 grid: per observation, embed
  x once and run the classifier head over the grid (``set_default_x``), then draw 1000 samples;
  also amortised over a batch of observations with ``sample_batched``.
* ``sbi potential``: ``posterior.potential`` of sbi's own posterior on the same grid (in chunks of
  1000 θ, which only bounds memory), with the plain embedding (sbi repeats x once per θ and runs
  the CNN for every copy) and with :class:`RepeatedRowsEmbedding` (copies embedded once).
* ``sbi rejection`` / ``sbi MCMC`` (``slice_np_vectorized``): 1000 samples each, with settings
  reduced from sbi's defaults so the run takes minutes (listed in the JSON); defaults cost more.

Timing does not depend on training quality, so the NRE_C is trained for one epoch on toy images
(per-channel brightness + noise). Usage::

    .venv/bin/python benchmarks/grid_posterior.py            # full run, writes benchmarks/results/
    .venv/bin/python benchmarks/grid_posterior.py --quick    # smoke test (small grid, no files)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters, RejectionPosteriorParameters

from glsbi_plugin import DEFAULT_CONFIG, make_prior
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import GridPosterior, build_inference, train

RESULTS = Path(__file__).resolve().parent / "results"
EMBEDDING = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median wall time (s) of ``repeat`` calls of ``fn`` and the last result."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def toy_images(theta: torch.Tensor, low: torch.Tensor, high: torch.Tensor, size: int) -> torch.Tensor:
    """``(n, 2, size, size)``: channel c has brightness (θ_c - low_c)/(high_c - low_c) plus noise."""
    u = (theta - low) / (high - low)
    return u[:, :, None, None] + 0.5 * torch.randn(theta.shape[0], 2, size, size)


def without_dedup(estimator: torch.nn.Module) -> torch.nn.Module:
    """The same trained estimator with sbi's plain behaviour (x embedded once per copy)."""
    plain = copy.deepcopy(estimator)
    plain.embedding_net_x = plain.embedding_net_x.net
    return plain


def run(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    prior = make_prior()  # θ = (η, B)
    low, high = prior.support.base_constraint.lower_bound, prior.support.base_constraint.upper_bound
    theta = prior.sample((args.n_train,))
    x = toy_images(theta, low, high, args.size)
    t_train, estimator = timed(
        lambda: train(
            build_inference("NRE_C", prior, EMBEDDING, x_shape=(2, args.size, args.size)),
            theta,
            x,
            max_epochs=1,
            training_batch_size=50,
        )
    )
    inference = build_inference("NRE_C", prior, EMBEDDING)  # only for build_posterior
    plain = without_dedup(estimator)
    theta_o = prior.sample((args.n_obs,))
    x_obs = toy_images(theta_o, low, high, args.size)
    x_o = x_obs[:1]
    n = args.samples
    res: dict[str, Any] = {}

    # -- grid posterior ---------------------------------------------------------------------
    t_build, grid = timed(lambda: GridPosterior(estimator, prior, resolution=args.resolution))
    res["grid_build_s"] = t_build
    res["grid_eval_per_obs_s"], _ = timed(lambda: grid.set_default_x(x_obs[1]), repeat=5)
    res["grid_eval_sample_per_obs_s"], samples = timed(lambda: grid.set_default_x(x_obs[2]).sample((n,)), repeat=5)
    t_batch, batch = timed(lambda: grid.sample_batched((n,), x=x_obs))
    res["grid_sample_batched_per_obs_s"] = t_batch / args.n_obs
    assert samples.shape == (n, 2) and batch.shape == (n, args.n_obs, 2)

    # -- sbi's potential on the same grid ---------------------------------------------------
    def potential(est: torch.nn.Module) -> torch.Tensor:
        post = inference.build_posterior(est, prior=prior, sample_with="rejection")
        return torch.cat([post.potential(chunk, x=x_o) for chunk in grid.grid.split(args.chunk)])

    res["sbi_potential_plain_s"], pot_plain = timed(lambda: potential(plain))
    res["sbi_potential_dedup_s"], pot_dedup = timed(lambda: potential(estimator))
    ours = grid.grid_log_prob(x_o)
    for name, pot in (("plain", pot_plain), ("dedup", pot_dedup)):
        diff = (ours - ours.logsumexp(0)) - (pot - pot.logsumexp(0))
        res[f"max_abs_logdensity_diff_{name}"] = float(diff.abs().max())

    # -- sbi's samplers, 1000 samples -------------------------------------------------------
    rej = RejectionPosteriorParameters(
        max_sampling_batch_size=args.chunk, num_samples_to_find_max=args.chunk, num_iter_to_find_max=20
    )
    mcmc = MCMCPosteriorParameters(
        method="slice_np_vectorized",
        num_chains=20,
        warmup_steps=20,
        thin=1,
        init_strategy="resample",
        init_strategy_parameters={"num_candidate_samples": args.chunk},
    )
    for label, params in (("rejection", rej), ("mcmc", mcmc)):
        for name, est in (("plain", plain), ("dedup", estimator)):
            post = inference.build_posterior(est, prior=prior, posterior_parameters=params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, s = timed(lambda post=post: post.sample((n,), x=x_o, show_progress_bars=False))
            assert s.shape == (n, 2)
            res[f"sbi_{label}_{name}_s"] = t

    speed = {
        "potential_plain_over_grid_eval": res["sbi_potential_plain_s"] / res["grid_eval_per_obs_s"],
        "potential_dedup_over_grid_eval": res["sbi_potential_dedup_s"] / res["grid_eval_per_obs_s"],
        "rejection_plain_over_grid_sample": res["sbi_rejection_plain_s"] / res["grid_eval_sample_per_obs_s"],
        "mcmc_plain_over_grid_sample": res["sbi_mcmc_plain_s"] / res["grid_eval_sample_per_obs_s"],
        "rejection_dedup_over_grid_sample": res["sbi_rejection_dedup_s"] / res["grid_eval_sample_per_obs_s"],
        "mcmc_dedup_over_grid_sample": res["sbi_mcmc_dedup_s"] / res["grid_eval_sample_per_obs_s"],
    }
    cnn = estimator.embedding_net_x.net
    with torch.no_grad():
        per_image_20, _ = timed(lambda: cnn(x_obs[:20]), repeat=3)
        big = x_obs[:1].expand(args.chunk, -1, -1, -1).contiguous()
        per_image_chunk, _ = timed(lambda: cnn(big))
    return {
        "setup": {
            "x_shape": [2, args.size, args.size],
            "grid": [args.resolution, args.resolution],
            "samples": n,
            "embedding": EMBEDDING.to_dict(),
            "embedding_ms_per_image": {
                "batch_20": 1e3 * per_image_20 / 20,
                f"batch_{args.chunk}": 1e3 * per_image_chunk / args.chunk,
            },
            "classifier": "NRE_C, mlp head (50 hidden), 1 epoch on toy images (timing only)",
            "n_train": args.n_train,
            "train_s": t_train,
            "torch_threads": torch.get_num_threads(),
            "sbi_chunk": args.chunk,
            "sbi_rejection": {
                "max_sampling_batch_size": args.chunk,
                "num_samples_to_find_max": args.chunk,
                "num_iter_to_find_max": 20,
            },
            "sbi_mcmc": {
                "method": "slice_np_vectorized",
                "num_chains": 20,
                "warmup_steps": 20,
                "thin": 1,
                "init_strategy": "resample",
                "num_candidate_samples": args.chunk,
            },
            "cpu": platform.processor() or platform.machine(),
            "load_average": os.getloadavg(),
            "versions": {"torch": torch.__version__, "sbi": __import__("sbi").__version__},
        },
        "seconds": res,
        "speedup": speed,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Grid posterior vs sbi (one run, this CPU)",
        "",
        "The same benchmark with 2 and with 1 torch thread: on this shared 2-core machine two threads were",
        "measured up to 20× slower than one for small batches (OpenMP threads waiting on each other while",
        "other jobs run), which hits sbi's MCMC (20 θ per call) and the grid's single-image embedding most.",
        "",
    ]
    for result in results:
        lines += _markdown_run(result)
    return "\n".join(lines)


def _markdown_run(result: dict[str, Any]) -> list[str]:
    s, r, v = result["setup"], result["seconds"], result["speedup"]
    g = "×".join(map(str, s["grid"]))
    per_image = ", ".join(f"{v:.2f} ({k.replace('_', ' ')})" for k, v in s["embedding_ms_per_image"].items())
    rows = [
        ("grid posterior: evaluate (embed x once + head on grid)", r["grid_eval_per_obs_s"], ""),
        (f"grid posterior: evaluate + {s['samples']} samples", r["grid_eval_sample_per_obs_s"], ""),
        (
            f"grid posterior: sample_batched, per observation ({s['samples']} samples)",
            r["grid_sample_batched_per_obs_s"],
            "",
        ),
        (
            f"sbi posterior.potential on the {g} grid (plain embedding)",
            r["sbi_potential_plain_s"],
            f"{v['potential_plain_over_grid_eval']:.0f}× grid evaluate",
        ),
        (
            f"sbi posterior.potential on the {g} grid (RepeatedRowsEmbedding)",
            r["sbi_potential_dedup_s"],
            f"{v['potential_dedup_over_grid_eval']:.1f}× grid evaluate",
        ),
        (
            f"sbi rejection, {s['samples']} samples (plain)",
            r["sbi_rejection_plain_s"],
            f"{v['rejection_plain_over_grid_sample']:.0f}× grid sample",
        ),
        (
            f"sbi MCMC slice_np_vectorized, {s['samples']} samples (plain)",
            r["sbi_mcmc_plain_s"],
            f"{v['mcmc_plain_over_grid_sample']:.0f}× grid sample",
        ),
        (
            f"sbi rejection, {s['samples']} samples (RepeatedRowsEmbedding)",
            r["sbi_rejection_dedup_s"],
            f"{v['rejection_dedup_over_grid_sample']:.0f}× grid sample",
        ),
        (
            f"sbi MCMC slice_np_vectorized, {s['samples']} samples (RepeatedRowsEmbedding)",
            r["sbi_mcmc_dedup_s"],
            f"{v['mcmc_dedup_over_grid_sample']:.0f}× grid sample",
        ),
    ]
    lines = [
        f"## {s['torch_threads']} torch thread(s)",
        "",
        f"NRE_C on x of shape {tuple(s['x_shape'])}, θ = (η, B), grid {g}; embedding "
        f"`{s['embedding']}` (ms per image: {per_image}); torch threads: {s['torch_threads']}; "
        f"load average at the end {tuple(round(a, 1) for a in s['load_average'])} (the machine is shared).",
        "Trained one epoch on toy images: timing does not depend on training quality.",
        "",
        "| what | seconds | ratio |",
        "|---|---:|---:|",
        *(f"| {name} | {sec:.4g} | {ratio} |" for name, sec, ratio in rows),
        "",
        f"Grid vs sbi potential, normalised over the grid: max |Δ log p| = "
        f"{r['max_abs_logdensity_diff_plain']:.2e} (plain), {r['max_abs_logdensity_diff_dedup']:.2e} (dedup).",
        f"sbi samplers ran with reduced settings (defaults cost more): rejection {s['sbi_rejection']}, "
        f"MCMC {s['sbi_mcmc']}; sbi's potential was called on chunks of {s['sbi_chunk']} θ (memory only).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run; prints only")
    parser.add_argument("--resolution", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULT_CONFIG.shape[0],
        help=f"image side (default {DEFAULT_CONFIG.shape[0]}: the default forward model's grid)",
    )
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-obs", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--threads", default="2,1", help="torch thread counts to run, comma-separated")
    args = parser.parse_args()
    if args.quick:
        args.resolution, args.samples, args.size, args.n_train, args.n_obs, args.chunk = 20, 100, 16, 60, 4, 100
    with tempfile.TemporaryDirectory() as tmp:  # belt and braces: nothing may land in ./sbi-logs
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            results = [run(args, int(t)) for t in args.threads.split(",")]
        finally:
            os.chdir(cwd)
    text = markdown(results)
    print(text)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "grid_posterior.json").write_text(json.dumps({"runs": results}, indent=2) + "\n")
        (RESULTS / "grid_posterior.md").write_text(text)


if __name__ == "__main__":
    main()
