"""Regenerate the figures of docs/physics.md: ``python docs/make_figures.py``.

Default forward model (``glsbi_plugin.DEFAULT_CONFIG``: 64² torus, h = 0.5, SK-ROCK with 2 stages,
dt = 0.3125, 640 steps = t 200; type15 preset, e = 0.45, T = 0.001) at low and high η, B = 0.08
(13 flux quanta), same seed.
"""

from __future__ import annotations

from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from glsbi_plugin import DEFAULT_CONFIG  # noqa: E402
from glsbi_plugin.simulators import (  # noqa: E402
    densities,
    field_map,
    length_scales,
    presets,
    simulate,
    vortex_positions,
)

HERE = Path(__file__).parent


def main() -> None:
    cfg = DEFAULT_CONFIG
    for eta in (0.0, 0.3):
        p = presets.type15(eta=eta, field=0.08)
        s = simulate(p, jax.random.key(0), cfg)
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
            f"η = {eta}, B = 0.08 (Nφ = 13), t = {cfg.t_final:g}: {ls.regime} "
            f"(λ = {ls.lam:.2f}, ξ₋ = {ls.xi_minus:.2f}, ξ₊ = {ls.xi_plus:.2f})"
        )
        fig.savefig(HERE / f"vortices_eta{eta:.1f}.png", dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main()
