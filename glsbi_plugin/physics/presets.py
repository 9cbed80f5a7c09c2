r"""Parameter presets.

``type15``: the two-band model used for inference (K = ½ in both bands):

====================  =====================================================================
strong band           α₁ = −1, β₁ = 1 (u₁ = 1, ξ₁ = √2/2 at η = 0)
weak band             α₂ = −1/16, β₂ = 1/16 (u₂ = 1, ξ₂ = 2√2; field scale |α₂|/K₂ = 1/8)
charge                e = 0.45 (λ = 1.57 at η = 0): type-1.5 for η < 0.09, type-II above
dynamics              Γ = 1, σ = 10 (explicit Euler for A stable up to dt = 0.122 at h = 0.5)
noise                 T = 0.001
====================  =====================================================================

``python -m glsbi_plugin.simulators --regimes`` prints the regime table across the η prior; the
README quotes it. At e = 0.7 (the other checked point) every η in [0, 0.5] is type-1.5; at
e = 0.45 the prior η ∈ [0, 0.3] crosses from clusters to a lattice, so η shows in the images.
``single_component``: textbook one-band GL for the physics checks.
"""

from __future__ import annotations

import numpy as np

from ._config import TDGLParams

__all__ = ["type15", "single_component"]


def type15(
    eta: float = 0.2,
    field: float = 0.08,
    *,
    nu: float = 0.0,
    e: float = 0.45,
    K: tuple[float, float] = (0.5, 0.5),
    alpha: tuple[float, float] = (-1.0, -0.0625),
    beta: tuple[float, float] = (1.0, 0.0625),
    gamma: tuple[float, float] = (1.0, 1.0),
    sigma: float = 10.0,
    T: float = 0.001,
) -> TDGLParams:
    """Two-band parameters around the checked type-1.5 starting point (module docstring)."""
    return TDGLParams(
        K=np.asarray(K, np.float64),
        alpha=np.asarray(alpha, np.float64),
        beta=np.asarray(beta, np.float64),
        gamma=np.asarray(gamma, np.float64),
        eta=np.float64(eta),
        nu=np.float64(nu),
        e=np.float64(e),
        sigma=np.float64(sigma),
        T=np.float64(T),
        field=np.float64(field),
    )


def single_component(
    K: float = 0.5,
    alpha: float = -1.0,
    beta: float = 1.0,
    field: float = 0.1,
    T: float = 0.0,
    *,
    e: float = 0.7,
    gamma: float = 1.0,
    sigma: float = 4.0,
) -> TDGLParams:
    r"""One-band GL (use with ``TDGLConfig(components=1)``): :math:`H_{c2} = |\alpha|/K`,
    :math:`\lambda = 1/(e\sqrt{2K|\alpha|/\beta})`, :math:`\xi = \sqrt{K/|\alpha|}`."""
    return TDGLParams(
        K=np.asarray([K], np.float64),
        alpha=np.asarray([alpha], np.float64),
        beta=np.asarray([beta], np.float64),
        gamma=np.asarray([gamma], np.float64),
        eta=np.float64(0.0),
        nu=np.float64(0.0),
        e=np.float64(e),
        sigma=np.float64(sigma),
        T=np.float64(T),
        field=np.float64(field),
    )
