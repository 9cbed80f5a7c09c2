"""``python -m glsbi_plugin.physics``: one default simulation (and, with ``--regimes``, the
regime table of the default preset across the η prior)."""

from __future__ import annotations

import argparse
import logging
import time

import jax
import numpy as np

from .._threads import cpu_only_platform
from . import Observation, forward_in_segments, length_scales, presets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glsbi_plugin.physics", description=__doc__)
    parser.add_argument("--eta", type=float, default=0.2, help="Josephson coupling η (default 0.2)")
    parser.add_argument("--field", type=float, default=0.08, help="mean induction B (default 0.08)")
    parser.add_argument(
        "--scheme",
        choices=("skrock", "euler"),
        default="skrock",
        help="time stepper with its default stages and dt (presets.SCHEME_STEPS: skrock 2 stages at dt 0.3125, "
        "the forward model's; euler dt 0.08); both run to the forward model's t = 200 (default skrock)",
    )
    parser.add_argument("--steps", type=int, default=None, help="time steps (default: t = 200)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    parser.add_argument("--regimes", action="store_true", help="print the regime table across η")
    args = parser.parse_args(argv)
    cpu_only_platform()  # no accelerator installed: do not let JAX probe (and log about) TPU and GPU backends
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("glsbi_plugin").setLevel(logging.INFO)  # this package's progress, not every library's
    if args.regimes:
        print(f"{'eta':>6} {'u1':>6} {'u2':>6} {'lambda':>7} {'xi-':>6} {'xi+':>6} {'Hc2':>6}  regime")
        for eta in np.linspace(0.0, 0.5, 11):
            ls = length_scales(presets.type15(eta=float(eta)))
            print(
                f"{eta:6.2f} {ls.u[0]:6.3f} {ls.u[1]:6.3f} {ls.lam:7.3f} {ls.xi_minus:6.3f} "
                f"{ls.xi_plus:6.3f} {ls.hc2:6.3f}  {ls.regime}"
            )
        return
    cfg = presets.forward_model(scheme=args.scheme, steps=args.steps)
    p = presets.type15(eta=args.eta, field=args.field)
    t0 = time.perf_counter()
    _, x = forward_in_segments(p, jax.random.key(args.seed), cfg, Observation(channels=("rho1",)))
    print(
        f"simulated {cfg.shape[0]}x{cfg.shape[1]}, {cfg.steps} {cfg.scheme} steps (t = {cfg.t_final:g}) "
        f"in {time.perf_counter() - t0:.2f} s"
    )
    print(f"Done. Final shape: {tuple(x.shape[1:])}")


if __name__ == "__main__":
    main()
