"""Regenerate the figures of docs/physics.md: ``python docs/make_figures.py [--out DIR]``.

The default forward model (``presets.forward_model()`` = ``glsbi_plugin.DEFAULT_CONFIG``: 64² torus,
h = 0.5, SK-ROCK at its ``presets.SCHEME_STEPS`` step, snapshot at t = ``presets.T_FINAL``; type15
preset, e = 0.45, T = 0.001), run through :func:`glsbi_plugin.physics.forward` at low and high η,
B = 0.08, same key; the panels show the final state it returns.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from glsbi_plugin.physics import (  # noqa: E402
    densities,
    field_map,
    flux_quanta,
    forward,
    length_scales,
    presets,
    vortex_positions,
)

HERE = Path(__file__).parent
FIELD = 0.08


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: docs/)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = presets.forward_model()
    n_phi = int(flux_quanta(FIELD, cfg))
    for eta in (0.0, 0.3):
        p = presets.type15(eta=eta, field=FIELD)
        s, _ = forward(p, jax.random.key(0), cfg, return_state=True)
        rho = np.asarray(densities(s))
        bz = np.asarray(field_map(s, p, cfg))
        ls = length_scales(p)
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), constrained_layout=True)
        L = cfg.shape[0] * cfg.h
        for ax, img, title in zip(axes, (rho[0], rho[1], bz), ("|ψ₁|²", "|ψ₂|²", "B_z"), strict=True):
            im = ax.imshow(img.T, origin="lower", extent=(0, L, 0, L), cmap="magma" if title != "B_z" else "viridis")
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(title)
        for a, marker in ((0, "x"), (1, "+")):
            v = vortex_positions(s, p, cfg, component=a)
            axes[2].scatter(
                v[:, 0], v[:, 1], marker=marker, c="w", s=25, label=f"windings ψ{a + 1}: {int(v[:, 2].sum())}"
            )
        axes[2].legend(loc="upper right", fontsize=7, framealpha=0.4)
        fig.suptitle(
            f"η = {eta}, B = {FIELD} (Nφ = {n_phi}), t = {cfg.t_final:g}: {ls.regime} "
            f"(λ = {ls.lam:.2f}, ξ₋ = {ls.xi_minus:.2f}, ξ₊ = {ls.xi_plus:.2f})"
        )
        fig.savefig(args.out / f"vortices_eta{eta:.1f}.png", dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main()
