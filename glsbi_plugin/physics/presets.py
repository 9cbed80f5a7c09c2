r"""Parameter presets.

``type15``: the two-band model used for inference (K = ½ in both bands):

====================  =====================================================================
strong band           α₁ = −1, β₁ = 1 (u₁ = 1, ξ₁ = √2/2 at η = 0)
weak band             α₂ = −1/16, β₂ = 1/16 (u₂ = 1, ξ₂ = 2√2; field scale |α₂|/K₂ = 1/8)
charge                e = 0.45 (λ = 1.57 at η = 0): type-1.5 for η < 0.09, type-II above
dynamics              Γ = 1, σ = 10 (explicit Euler for A stable up to dt = 0.122 at h = 0.5)
noise                 T = 0.001
====================  =====================================================================

``python -m glsbi_plugin.physics --regimes`` prints the regime table across the η prior; the
README quotes it. At e = 0.7 (the other checked point) every η in [0, 0.5] is type-1.5; at
e = 0.45 the prior η ∈ [0, 0.3] crosses from clusters to a lattice, so η shows in the images.
``single_component``: textbook one-band GL for the physics checks.

``forward_model``: the numerics of the forward model (grid, scheme, step, snapshot time), the one
place where they are chosen. The default is a 64² torus at h = 0.5 quenched to t = 200 by SK-ROCK
with 2 stages at dt = 0.3125 (640 steps): 80 % of its stability bound at the prior's largest η
(0.39 at η = 0.3), 3.9× the explicit-Euler step. ``benchmarks/scheme_agreement.py``: 1.8× faster
than Euler at dt = 0.08 (2500 steps), vortex and energy statistics equal within noise, and the same
density of vortex–antivortex pairs early in the quench (dt = 0.625 was faster but left 1.5–2× as
many pairs at t = 20: the quench itself needs dt of about 0.3, whatever the stability).
``small_forward_model``: the same on a 48² torus at t = 80, the quickstart's and the demo's.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ._config import TDGLConfig, TDGLConfigError, TDGLParams

__all__ = [
    "SCHEME_STEPS",
    "T_FINAL",
    "T_SMALL",
    "forward_model",
    "run_to",
    "single_component",
    "small_forward_model",
    "type15",
]

#: Default ``(stages, dt)`` of each time stepper: SK-ROCK's is set by the accuracy of the quench
#: (module docstring), Euler's by its stability bound (0.101 at η = 0.3, h = 0.5).
SCHEME_STEPS: dict[str, tuple[int, float]] = {"skrock": (2, 0.3125), "euler": (1, 0.08)}
#: Snapshot time of the default forward model.
T_FINAL = 200.0
#: Snapshot time of the small forward model (quickstart, demo): the clusters are still coarsening.
T_SMALL = 80.0


def forward_model(
    size: int | tuple[int, int] = 64,
    *,
    t_final: float | None = None,
    steps: int | None = None,
    scheme: Literal["skrock", "euler"] = "skrock",
    stages: int | None = None,
    dt: float | None = None,
    h: float = 0.5,
) -> TDGLConfig:
    r"""The forward model's numerics: a ``size``² torus quenched to ``t_final`` (module docstring).

    Args:
        size: Grid side in sites, or ``(nx, ny)``.
        t_final: Snapshot time; ``steps = round(t_final / dt)``. Default :data:`T_FINAL` (200).
        steps: Number of steps instead of ``t_final`` (give one of the two).
        scheme: ``"skrock"`` (default) or ``"euler"``.
        stages: SK-ROCK stages; default from :data:`SCHEME_STEPS` (2; Euler: 1).
        dt: Time step; default from :data:`SCHEME_STEPS` (0.3125 for SK-ROCK, 0.08 for Euler).
        h: Lattice spacing.

    Raises:
        TDGLConfigError: (a ``ValueError``) an unknown scheme, both or a negative ``t_final`` and
            ``steps``, or what :class:`TDGLConfig` refuses (a non-positive ``dt``, a bad size).

    Example:
        >>> from glsbi_plugin.physics import presets
        >>> cfg = presets.forward_model()
        >>> cfg.scheme, cfg.stages, cfg.dt, cfg.steps, cfg.t_final
        ('skrock', 2, 0.3125, 640, 200.0)
        >>> presets.forward_model(48, t_final=80, scheme="euler").steps
        1000
    """
    if scheme not in SCHEME_STEPS:
        raise TDGLConfigError(f"scheme={scheme!r}: allowed values are {tuple(SCHEME_STEPS)}")
    default_stages, default_dt = SCHEME_STEPS[scheme]
    stages = default_stages if stages is None else stages
    dt = default_dt if dt is None else float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise TDGLConfigError(f"dt={dt!r}: the time step must be finite and > 0")
    if t_final is not None and steps is not None:
        raise TDGLConfigError(f"give t_final or steps, not both (t_final={t_final!r}, steps={steps!r})")
    if steps is None:
        t = T_FINAL if t_final is None else float(t_final)
        if not (math.isfinite(t) and t >= 0):
            raise TDGLConfigError(f"t_final={t_final!r}: must be finite and >= 0")
        steps = _steps_to(t, dt)
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    return TDGLConfig(shape=shape, h=h, dt=dt, steps=steps, scheme=scheme, stages=stages)


def run_to(cfg: TDGLConfig, t_final: float) -> TDGLConfig:
    """``cfg`` with the steps of its own ``dt`` that reach ``t_final`` (at least one if ``t_final > 0``).

    Example:
        >>> from glsbi_plugin.physics import presets
        >>> presets.run_to(presets.forward_model(), 20.0).steps
        64
    """
    t = float(t_final)
    if not (math.isfinite(t) and t >= 0):
        raise TDGLConfigError(f"t_final={t_final!r}: must be finite and >= 0")
    return cfg.replace(steps=max(1, _steps_to(t, cfg.dt)) if t > 0 else 0)


def _steps_to(t: float, dt: float) -> int:
    return round(t / dt)


def small_forward_model(**changes: object) -> TDGLConfig:
    """:func:`forward_model` on a 48² torus at t = :data:`T_SMALL` (80): the quickstart's and the
    demo's default, small enough to train on in minutes. ``changes`` go to :func:`forward_model`.

    Example:
        >>> from glsbi_plugin.physics import presets
        >>> cfg = presets.small_forward_model()
        >>> cfg.shape, cfg.steps, cfg.t_final
        ((48, 48), 256, 80.0)
    """
    changes = {k: v for k, v in changes.items() if v is not None}  # None: this preset's default
    kwargs: dict = {"size": 48, "t_final": None if "steps" in changes else T_SMALL}
    kwargs.update(changes)
    return forward_model(**kwargs)


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
    drag: float | None = None,
) -> TDGLParams:
    r"""Two-band parameters around the checked type-1.5 starting point (module docstring).

    ``drag``: the mixed-gradient coupling :math:`\nu_d` (``None`` or 0: no drag term; with
    K = ½ it must satisfy :math:`|\nu_d| < 2\sqrt{K_1K_2} = 1`)."""
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
        drag=None if drag is None else np.float64(drag),
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
