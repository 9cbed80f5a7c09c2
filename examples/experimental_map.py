"""Worked example: an "experimental" STM map that no estimator trained on, carried through inference.

The map is simulated with another solver set-up than any training set: a finer grid (h = 0.25
instead of 0.5), a larger sample (a 28 × 28 torus instead of 24 × 24), a later snapshot (t = 120
instead of 80) and SK-ROCK with 5 stages, then imaged by its own instrument: tip blur 1.3 (the
estimator's: 1.0), SNR 8 (10), 70 × 70 pixels of 0.4 (48 × 48 of 0.5). It is written as a TIFF and
read back by ``glsbi_plugin.infer_image``, which crops the estimator's 24 × 24 window, resamples it
onto 48 × 48 pixels, standardises it, infers θ = (η, B), checks it against the training bank and
runs the posterior predictive check. The same through the command line::

    glsbi infer examples/experimental_map/experimental_map.tif --estimator runs/quickstart/estimator.pt \\
        --pixel-size 0.4 --ppc --seed 3 --out /tmp/experimental_map   # the numbers of inference.json

Then the check is run on images the estimator should not trust (``"mismatched"`` in ``inference.json``): pure noise,
the field 10× the truth's, a field outside the prior, a rotated lattice of another model and a much
larger κ (e = 0.15 instead of 0.45).

Run (about 2–4 minutes on 2 CPU cores; needs ``make run`` first, or any estimator of an STM forward model
with its bank beside it)::

    .venv/bin/python examples/experimental_map.py --estimator runs/quickstart/estimator.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def experimental_map(ckpt, theta: tuple[float, float], seed: int) -> tuple[np.ndarray, float, dict]:  # noqa: ANN001
    """The "experimental" map at ``theta`` (see the module docstring), its pixel size and its recipe."""
    import torch

    from glsbi_plugin import make_simulator
    from glsbi_plugin.physics import STM, presets

    side, h, t_final = 28.0, 0.25, 120.0
    cfg = presets.forward_model(round(side / h), t_final=t_final, h=h, stages=5)
    stm = STM(bands=(2,), blur=1.3, snr=8.0, pixels=70, field_of_view=side)
    names = ckpt.simulator.names
    box = {n: (lo, hi) for n, lo, hi in zip(names, ckpt.simulator.low, ckpt.simulator.high, strict=True)}
    sim = make_simulator(names, config=cfg, base=ckpt.simulator.base, observation=stm, batch_size=1, bounds=box)
    x = sim(torch.tensor([theta], dtype=torch.float32), seed=seed)[0, 0].numpy()
    n_phi = round(theta[1] * side**2 / (2 * math.pi))
    recipe = {"grid": list(cfg.shape), "h": h, "t_final": cfg.t_final, "scheme": cfg.scheme, "stages": cfg.stages,
              "instrument": stm.to_dict(), "flux_quanta": n_phi, "theta_true": list(theta), "seed": seed}
    return x, side / 70, recipe


def mismatched_images(ckpt, theta: tuple[float, float], seed: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Images on the estimator's own grid that it should not trust."""
    import torch
    from scipy.ndimage import gaussian_filter

    from glsbi_plugin import make_simulator

    sim = ckpt.simulator
    P = sim.x_shape[-1]
    x0, x1, _, _ = sim.observation.extent(sim.config)
    pixel = (x1 - x0) / P
    names = sim.names
    b_hi = sim.high[names.index("field")]
    wide = make_simulator(names, config=sim.config, base=sim.base, observation=sim.instrument,
                          bounds={"eta": (sim.low[0], sim.high[0]), "field": (sim.low[1], 12 * b_hi)})
    strong = wide(torch.tensor([[theta[0], 10 * theta[1]], [theta[0], 3 * b_hi]]), seed=seed).numpy()
    stiff = dataclasses.replace(sim.config, stages=6)  # a small e stiffens A: more SK-ROCK stages, same physics
    kappa = make_simulator(names, config=stiff, base=sim.base.replace(e=0.15), observation=sim.instrument,
                           bounds={n: (lo, hi) for n, lo, hi in zip(names, sim.low, sim.high, strict=True)})
    large_kappa = kappa(torch.tensor([theta]), seed=seed)[0, 0].numpy()
    rng = np.random.default_rng(seed)
    # another model: a triangular lattice of London-like cores, rotated by 17°, blurred and noisy
    a = math.sqrt(4 * math.pi / (math.sqrt(3) * theta[1]))
    g = (np.arange(P) + 0.5) * pixel
    X, Y = np.meshgrid(g, g, indexing="ij")
    t = math.radians(17.0)
    rho = np.ones_like(X)
    for i in range(-8, 9):
        for j in range(-8, 9):
            px = a * (i + 0.5 * j) * math.cos(t) - a * math.sqrt(3) / 2 * j * math.sin(t) + 3.0
            py = a * (i + 0.5 * j) * math.sin(t) + a * math.sqrt(3) / 2 * j * math.cos(t) + 3.0
            rho *= np.tanh(np.hypot(X - px, Y - py) / 1.0) ** 2
    lattice = gaussian_filter(rho, 1.0 / pixel)
    lattice = (lattice - lattice.mean()) / lattice.std() + rng.normal(size=lattice.shape) / 10
    return {
        "pure noise": rng.normal(size=(P, P)),
        f"10x the field (B = {10 * theta[1]:.3g})": strong[0, 0],
        f"field outside the prior (B = {3 * b_hi:.3g})": strong[1, 0],
        "rotated lattice of another model": lattice,
        "larger kappa (e = 0.15 instead of 0.45)": large_kappa,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimator", default="runs/quickstart/estimator.pt", help="estimator.pt of an STM forward model")
    p.add_argument("--bank", default=None, help="its training bank (default: bank.zarr beside the estimator)")
    p.add_argument("--out", default=os.path.relpath(HERE / "experimental_map"), help="output directory")
    p.add_argument("--theta", type=float, nargs=2, default=(0.12, 0.065), metavar=("ETA", "FIELD"))
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--ppc-n", type=int, default=100)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import tifffile
    import torch

    from glsbi_plugin.apps.image import infer_image
    from glsbi_plugin.checkpoint import load_estimator

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = load_estimator(args.estimator)
    if ckpt.simulator.observation.name != "stm":
        raise SystemExit(f"this example images an STM map; {args.estimator} reads {ckpt.simulator.observation.name}")
    bank = Path(args.bank) if args.bank else Path(args.estimator).parent / "bank.zarr"
    t0 = time.perf_counter()
    x, pixel, recipe = experimental_map(ckpt, tuple(args.theta), args.seed)
    tifffile.imwrite(out / "experimental_map.tif", x.astype(np.float32))
    t_sim = time.perf_counter() - t0
    result = infer_image(out / "experimental_map.tif", ckpt, pixel_size=pixel, bank=bank, ppc=True,
                         ppc_n=args.ppc_n, out=out, seed=args.seed)
    print(result.summary())
    result.ppc.plot(out / "ppc.png", dpi=52)  # smaller than the default: the committed outputs stay < 300 kB
    checks = {}
    x0, x1, _, _ = ckpt.simulator.observation.extent(ckpt.simulator.config)
    own_pixel = (x1 - x0) / ckpt.simulator.x_shape[-1]  # the mismatched images are on the estimator's grid
    for name, img in mismatched_images(ckpt, tuple(args.theta), args.seed).items():
        r = infer_image(img, ckpt, pixel_size=own_pixel, bank=bank, seed=args.seed).misspecification
        checks[name] = {"p_value": r.p_value, "p_embedding": r.p_embedding, "p_statistics": r.p_statistics,
                        "misspecified": r.misspecified, "differs": list(r.differs)}
        print(f"{name:<45} p = {r.p_value:.3g}  {'FLAGGED' if r.misspecified else 'not flagged'}")
    summary = {
        "estimator": str(args.estimator),
        "experimental_map": recipe,
        "pixel_size": pixel,
        "simulate_s": round(t_sim, 1),
        "result": json.loads((out / "inference.json").read_text()),
        "mismatched": checks,
    }
    (out / "inference.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}/: experimental_map.tif, inference.png, ppc.png, inference.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
