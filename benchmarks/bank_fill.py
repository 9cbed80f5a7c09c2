"""Bank fill throughput (simulations per second): in this process vs a dask ``LocalCluster``.

Same configuration for both: ``presets.small_forward_model(size=--size, scheme=--scheme)``
(default: 32x32 grid, the forward model's SK-ROCK step to t = ``presets.T_SMALL`` = 80, i.e. 256
steps; ``--t-final`` or ``--steps`` change the length), 8 chunks of 16, vmapped width 16:

* in-process, cold (includes the XLA compilation) and warm (a second bank, program compiled);
* ``LocalCluster`` (``n_workers`` single-threaded processes), cold (cluster start-up, worker
  imports and compilations included) and warm (a second bank on the same, warmed-up cluster).

Every bank uses the same bank seed, and the script checks that all of them are bit-identical (the
workers compile on their own: no compilation cache is shared).

Then the cost of verified reads: a bank of ``--read-n`` (default 1024) samples of the quickstart's
48² forward model (``presets.small_forward_model()``, chunks of 64) is read with
``to_torch("train")`` with and without the checksum check (best of ``--repeats``), giving the cost
per chunk and its share of one training epoch (one sbi ``NRE_C`` epoch with the benchmarks'
embedding on the same training split; ``--no-epoch`` skips it). Results go to
``benchmarks/results/bank_fill.{json,md}``.

Usage::

    python benchmarks/bank_fill.py [--size 32] [--t-final 80 | --steps N] [--scheme skrock] [--chunks 8]
                                   [--chunk-size 16] [--workers 2] [--read-n 1024] [--repeats 5] [--out DIR]

The committed ``results/bank_fill.*`` predate ``--scheme``: explicit Euler, 500 steps of dt = 0.08
(``--scheme euler --steps 500``). The default now costs about the same: 256 SK-ROCK steps of 2 stages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # measure real compilations, in the workers too


def _timed_fill(bank, **kw) -> float:  # noqa: ANN001 - a SimulationBank
    t0 = time.perf_counter()
    report = bank.fill(progress=False, **kw)
    assert report.n_simulations == bank.n, report
    return time.perf_counter() - t0


def _same(a, b) -> bool:  # noqa: ANN001 - SimulationBanks
    return all(a.group[k][:].tobytes() == b.group[k][:].tobytes() for k in ("theta", "seeds", "x", "checksum"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32, help="grid side (default 32)")
    p.add_argument(
        "--t-final", type=float, default=None, help="snapshot time (default presets.T_SMALL, the small forward model's)"
    )
    p.add_argument("--steps", type=int, default=None, help="time steps instead of --t-final")
    p.add_argument("--scheme", default="skrock", choices=("skrock", "euler"),
                   help="time stepper, at its step of presets.SCHEME_STEPS (default skrock, the forward model's)")
    p.add_argument("--chunks", type=int, default=8, help="chunks per bank (default 8)")
    p.add_argument("--chunk-size", type=int, default=16, help="samples per chunk = vmapped width (default 16)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--read-n", type=int, default=1024, help="samples of the read-verification bank (default 1024)")
    p.add_argument("--repeats", type=int, default=5, help="timed reads per setting, best taken (default 5)")
    p.add_argument("--no-epoch", action="store_true", help="skip timing a training epoch")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results directory")
    args = p.parse_args(argv)
    if args.t_final is not None and args.steps is not None:
        p.error("give --t-final or --steps, not both")

    import jax
    import zarr
    from distributed import Client, LocalCluster

    from glsbi_plugin import __version__, make_simulator
    from glsbi_plugin.physics import presets
    from glsbi_plugin.store import SimulationBank
    from glsbi_plugin.store._dask import worker_env

    # the small forward model (t = presets.T_SMALL) on this grid, unless --t-final or --steps says otherwise
    changes = {k: v for k, v in (("t_final", args.t_final), ("steps", args.steps)) if v is not None}
    cfg = presets.small_forward_model(size=args.size, scheme=args.scheme, **changes)
    sim = make_simulator(config=cfg, batch_size=args.chunk_size)
    n = args.chunks * args.chunk_size
    load_before = os.getloadavg()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def bank(name: str) -> SimulationBank:
            return SimulationBank.create(Path(tmp) / f"{name}.zarr", sim, n, chunk_size=args.chunk_size, seed=0)

        ref = bank("inproc_cold")
        rows["in-process, cold (incl. compile)"] = {"seconds": _timed_fill(ref)}
        warm = bank("inproc_warm")
        rows["in-process, warm"] = {"seconds": _timed_fill(warm)}
        identical = _same(ref, warm)

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env=worker_env(), silence_logs=40)
        client = Client(cluster)
        startup = time.perf_counter() - t0
        try:
            cold = bank("dask_cold")
            fill_s = _timed_fill(cold, scheduler=client)
            rows[f"LocalCluster x{args.workers}, cold (incl. start-up + compile)"] = {"seconds": startup + fill_s}
            warm_d = bank("dask_warm")
            rows[f"LocalCluster x{args.workers}, warm"] = {"seconds": _timed_fill(warm_d, scheduler=client)}
            identical = identical and _same(ref, cold) and _same(ref, warm_d)
        finally:
            client.close()
            cluster.close()
        reads = _read_cost(Path(tmp), args.read_n, args.repeats, not args.no_epoch)
    for r in rows.values():
        r["sims_per_second"] = n / r["seconds"]
    result = {
        "config": {"shape": list(cfg.shape), "steps": cfg.steps, "scheme": cfg.scheme, "stages": cfg.stages,
                   "dt": cfg.dt, "t_final": cfg.t_final, "chunks": args.chunks, "chunk_size": args.chunk_size,
                   "simulations": n, "workers": args.workers, "channels": list(sim.channels)},
        "results": rows,
        "cluster_startup_seconds": startup,
        "bit_identical_across_all_fills": identical,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "jax": jax.__version__, "zarr": zarr.__version__,
                    "glsbi": __version__},
        "load_average_1_5_15min": {"before": list(load_before), "after": list(os.getloadavg())},
        "worker_xla_flags": worker_env()["XLA_FLAGS"],
        "in_process_xla_flags": os.environ.get("XLA_FLAGS", ""),
        "read_verification": reads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bank_fill.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Bank fill throughput",
        "",
        f"{n} simulations ({args.chunks} chunks of {args.chunk_size}), {cfg.shape[0]}x{cfg.shape[1]} grid, "
        f"{cfg.steps} {cfg.scheme} steps (s = {cfg.stages}, dt = {cfg.dt}, t = {cfg.t_final:g}), "
        f"channels {', '.join(sim.channels)}; {os.cpu_count()} CPU cores (shared machine). "
        f"Produced by `python benchmarks/bank_fill.py`.",
        "",
        "| fill | seconds | simulations / s |",
        "|---|---:|---:|",
        *(f"| {k} | {v['seconds']:.1f} | {v['sims_per_second']:.1f} |" for k, v in rows.items()),
        "",
        f"Cluster start-up alone: {startup:.1f} s. All banks bit-identical (θ, seeds, x, checksums): "
        f"{'yes' if identical else 'NO'}.",
        "",
        f"Load average (1 min) before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores: "
        "other jobs shared the machine, so the figures are indicative. In-process JAX runs with its default "
        "threading; each worker runs one XLA intra-op thread.",
        "",
        "## Cost of verified reads",
        "",
        f"`to_torch(\"train\")` of a {reads['n']}-sample bank ({reads['x_shape']} float32 images, {reads['chunks']} "
        f"chunks of {reads['chunk_size']}; {reads['train_chunks']} chunks in the train split, "
        f"{reads['train_mb']:.1f} MB), best of {args.repeats}:",
        "",
        "| read | ms |",
        "|---|---:|",
        f"| `to_torch('train', verify=False)` | {reads['read_ms_unverified']:.1f} |",
        f"| `to_torch('train')` (every chunk checked against its sha256) | {reads['read_ms_verified']:.1f} |",
        f"| verification per chunk | {reads['verify_ms_per_chunk']:.2f} |",
        f"| sha256 alone, per chunk | {reads['sha256_ms_per_chunk']:.2f} |",
        *([f"| one training epoch (sbi NRE_C, {reads['train_rows']} rows) | {reads['epoch_ms']:.0f} |", "",
           f"Verification adds {reads['verify_ms']:.1f} ms per full read of the train split: "
           f"{100 * reads['verify_share_of_epoch']:.2f} % of one training epoch."] if reads.get("epoch_ms") else
          ["", f"Verification adds {reads['verify_ms']:.1f} ms per full read of the train split."]),
        "",
    ]
    (args.out / "bank_fill.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if identical else 1


def _best(f, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _read_cost(tmp: Path, n: int, repeats: int, epoch: bool) -> dict:
    """Time ``to_torch("train")`` with and without checksum verification (and one training epoch)."""
    import hashlib

    import torch

    from glsbi_plugin import make_simulator
    from glsbi_plugin.physics import presets
    from glsbi_plugin.store import SimulationBank

    sim = make_simulator(config=presets.small_forward_model(), batch_size=64)
    bank = SimulationBank.create(tmp / "read.zarr", sim, n, chunk_size=64, seed=0)
    bank.fill(progress=False)
    idx = bank.split_indices()["train"]
    train_chunks = len(np.unique(idx // bank.chunk_size))
    bank.to_torch("train")  # warm the file cache: both settings read from memory
    plain = _best(lambda: bank.to_torch("train", verify=False), repeats)
    checked = _best(lambda: bank.to_torch("train"), repeats)
    theta, x = bank.to_torch("train")
    chunk = bytes(x[: bank.chunk_size].numpy().tobytes())
    sha = _best(lambda: hashlib.sha256(chunk).digest(), 20)
    out = {"n": n, "chunk_size": bank.chunk_size, "chunks": bank.n_chunks, "train_chunks": int(train_chunks),
           "x_shape": list(sim.x_shape), "train_mb": x.numpy().nbytes / 2**20, "repeats": repeats,
           "read_ms_unverified": 1e3 * plain, "read_ms_verified": 1e3 * checked,
           "verify_ms": 1e3 * (checked - plain), "verify_ms_per_chunk": 1e3 * (checked - plain) / train_chunks,
           "sha256_ms_per_chunk": 1e3 * sha, "train_rows": len(theta)}
    if epoch:
        from glsbi_plugin.embeddings import EmbeddingConfig
        from glsbi_plugin.inference import build_inference

        torch.manual_seed(0)
        emb = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)  # the benchmarks' embedding
        inference = build_inference("NRE_C", sim.prior(), emb, x_shape=sim.x_shape).append_simulations(theta, x)
        t0 = time.perf_counter()
        inference.train(max_num_epochs=1, show_train_summary=False)
        out["epoch_ms"] = 1e3 * (time.perf_counter() - t0)
        out["verify_share_of_epoch"] = out["verify_ms"] / out["epoch_ms"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
