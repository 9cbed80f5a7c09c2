r"""Eager checks of parameters against a config: finiteness, signs, shapes, stability of the
time step (explicit Euler's bound, stretched by :math:`L_s/2` for SK-ROCK), flux quantisation.
Nothing here runs under ``jit``."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ._config import (
    COMPONENT_FIELDS,
    MAX_STAGES,
    SCALAR_FIELDS,
    TDGLConfig,
    TDGLConfigError,
    TDGLParams,
    drag_bound,
    flux_quanta,
)
from ._length_scales import ground_state, potential_hessian
from ._skrock import skrock_stability


def stability_bounds(params: TDGLParams, cfg: TDGLConfig) -> tuple[float, float]:
    r"""Largest stable explicit-Euler steps ``(dt_psi, dt_a)`` over a (possibly batched) parameter set.

    Euler is stable when dt times the largest relaxation rate is at most 2. Gershgorin bounds on
    the linearisation about the ground state :math:`u` give

    .. math::
        dt_\psi = \min_a \frac{2\Gamma_a}{8(K_a + |\nu_d|/2)/h^2 + \tfrac12\sum_b|H_{ab}|},\qquad
        dt_a = \frac{2\sigma}{8/(e^2h^2) + \sum_a 2K_a u_a^2 + 2|\nu_d|u_1u_2},

    with :math:`H = \mathrm{Hess}\,V(u)` of the potential in the amplitudes (``potential_hessian``
    at :math:`|\eta|`, the ground state's phase-locked coupling). Without the
    potential and supercurrent terms these are the familiar :math:`\Gamma h^2/4K` and
    :math:`\sigma e^2h^2/4`; the extra terms matter at large η (the strong band's amplitude mode).
    The kinetic part of the ψ rate is the checkerboard mode :math:`8/h^2` times the kinetic matrix
    :math:`M = ((K_1, \nu_d/2), (\nu_d/2, K_2))`; its Gershgorin row sum :math:`K_a + |\nu_d|/2` is
    the largest eigenvalue of :math:`M` when :math:`K_1 = K_2` (every preset) and an upper bound on
    it otherwise. The drag adds :math:`2\nu_d u_1u_2\cos(\varphi_2-\varphi_1)` to the link curvature
    of the A equation, bounded by :math:`2|\nu_d|u_1u_2`. Without drag both are the formulas above
    at :math:`\nu_d = 0`, operation for operation.
    """
    K = np.asarray(params.K, np.float64)
    alpha = np.asarray(params.alpha, np.float64)
    beta = np.asarray(params.beta, np.float64)
    gamma = np.asarray(params.gamma, np.float64)
    u = np.asarray(ground_state(params), np.float64)
    h2 = cfg.h**2
    hess = potential_hessian(u, alpha, beta, np.abs(np.asarray(params.eta, np.float64)), params.nu)
    rows = np.sum(np.abs(hess), axis=-1)
    e = np.asarray(params.e, np.float64)
    sigma = np.asarray(params.sigma, np.float64)
    if params.drag is None or K.shape[-1] != 2:
        dt_psi = float(np.min(2 * gamma / (8 * K / h2 + rows / 2)))
        dt_a = float(np.min(2 * sigma / (8 / (e**2 * h2) + np.sum(2 * K * u**2, axis=-1))))
        return dt_psi, dt_a
    drag = np.abs(np.asarray(params.drag, np.float64))
    kin = K + drag[..., None] / 2  # Gershgorin rows of the kinetic matrix
    dt_psi = float(np.min(2 * gamma / (8 * kin / h2 + rows / 2)))
    stiff = np.sum(2 * K * u**2, axis=-1) + 2 * drag * u[..., 0] * u[..., 1]
    dt_a = float(np.min(2 * sigma / (8 / (e**2 * h2) + stiff)))
    return dt_psi, dt_a


def _check_skrock(dt: float, stages: int, euler_psi: float, euler_a: float) -> None:
    """SK-ROCK with s stages is stable for dt·λ <= L_s: the Euler bounds (dt·λ <= 2) times L_s/2."""
    euler = min(euler_psi, euler_a)
    bound = euler * skrock_stability(stages) / 2
    if dt <= bound:
        return
    need = next((s for s in range(stages + 1, MAX_STAGES + 1) if dt <= euler * skrock_stability(s) / 2), None)
    which = "psi" if euler_psi <= euler_a else "A"
    hint = f"use stages >= {need} or lower dt" if need else f"lower dt (even {MAX_STAGES} stages are not enough)"
    raise TDGLConfigError(
        f"dt={dt:g} exceeds the SK-ROCK bound for {which} with stages={stages}, "
        f"dt <= (L_s/2)·dt_Euler = {skrock_stability(stages) / 2:.4g} x {euler:.4g} = {bound:.4g}; {hint}"
    )


def _check_euler(
    dt: float, h: float, v: dict[str, np.ndarray], cfg: TDGLConfig, bound_psi: float, bound_a: float
) -> None:
    """Explicit Euler is stable for dt·λ <= 2 on every relaxation rate (:func:`stability_bounds`)."""
    if dt > bound_psi:
        kin = "8(K + |drag|/2)/h²" if "drag" in v else "8K/h²"
        raise TDGLConfigError(
            f"dt={dt:g} exceeds the explicit-Euler bound for psi, dt <= 2Γ/({kin} + |Hess V|/2) = {bound_psi:.4g} "
            f"(Γh²/(4K) = {float(np.min(v['gamma'] * h**2 / (4 * v['K']))):.4g} before the potential's curvature); "
            "lower dt, or use scheme='skrock'"
        )
    if cfg.gauge == "dynamic" and dt > bound_a:
        raise TDGLConfigError(
            f"dt={dt:g} exceeds the explicit-Euler bound for A, dt <= 2σ/(8/(e²h²) + Σ2Ku²) = {bound_a:.4g} "
            f"(σ e² h²/4 = {float(np.min(v['sigma'] * v['e'] ** 2 * h**2 / 4)):.4g} before the supercurrent term); "
            "raise sigma (it does not change equilibria), lower dt, or use scheme='skrock'"
        )


def _check_drag(v: dict[str, np.ndarray], components: int) -> None:
    """The kinetic matrix ((K1, ν_d/2), (ν_d/2, K2)) must be positive definite: |ν_d| < 2√(K1 K2)."""
    if components != 2:
        raise TDGLConfigError("params.drag couples two condensates; components=1 has no drag term (use drag=None)")
    drag, bound = np.broadcast_arrays(v["drag"], drag_bound(v["K"]))
    bad = np.abs(drag) >= bound
    if bad.any():
        raise TDGLConfigError(
            f"params.drag={drag[bad].ravel()[0]:g}: the kinetic matrix ((K1, drag/2), (drag/2, K2)) must be positive "
            f"definite, |drag| < 2·sqrt(K1·K2) = {bound[bad].ravel()[0]:.4g}"
        )


def _concrete(tree: object) -> dict[str, np.ndarray] | None:
    """Leaves as numpy arrays (fields that are ``None`` left out), or None when any leaf is a tracer
    (inside jit/vmap)."""
    try:
        return {
            f.name: np.asarray(getattr(tree, f.name), dtype=np.float64)
            for f in dataclasses.fields(tree)  # type: ignore[arg-type]
            if getattr(tree, f.name) is not None
        }
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_params(params: TDGLParams, cfg: TDGLConfig) -> None:
    r"""Refuse parameters the solver cannot run, naming the bad value and the allowed range.

    Works on a single parameter set or a batch (leading axes). Does nothing on traced values
    (inside ``jit``/``vmap``), where the caller's eager entry point has already checked.

    Raises:
        TDGLConfigError: (a ``ValueError``) for ``dtype='float64'`` without 64-bit JAX, NaN/inf,
            non-positive K, β, Γ, e, σ, negative T, a component axis that does not match
            ``cfg.components``, a drag with one component or outside the bound
            :math:`|\nu_d| < 2\sqrt{K_1K_2}` of a positive-definite kinetic matrix,
            a step above the bounds of :func:`stability_bounds` (Euler; times
            :math:`L_s/2` for SK-ROCK, with the number of stages that would do), or a torus field
            with :math:`N_\phi = 0`.
    """
    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise TDGLConfigError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before simulating, or use dtype='float32'"
        )
    v = _concrete(params)
    if v is None:
        return
    C = cfg.components
    for name in COMPONENT_FIELDS:
        if v[name].ndim < 1 or v[name].shape[-1] != C:
            raise TDGLConfigError(f"params.{name} has shape {v[name].shape}; expected (..., {C}) for components={C}")
    batch = np.broadcast_shapes(
        *(v[n].shape[:-1] for n in COMPONENT_FIELDS), *(v[n].shape for n in SCALAR_FIELDS if n in v)
    )
    del batch  # only to raise on incompatible batch shapes
    for name, arr in v.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            raise TDGLConfigError(
                f"params.{name} contains non-finite values ({arr[bad].ravel()[:3]}); all must be finite"
            )
    for name in ("K", "beta", "gamma", "e", "sigma"):
        if (v[name] <= 0).any():
            raise TDGLConfigError(f"params.{name}={v[name].min():g}: must be > 0")
    if (v["T"] < 0).any():
        raise TDGLConfigError(f"params.T={v['T'].min():g}: the temperature must be >= 0")
    if "drag" in v:
        _check_drag(v, C)
    h, dt = cfg.h, cfg.dt
    bound_psi, bound_a = stability_bounds(params, cfg)
    if cfg.scheme == "skrock":
        _check_skrock(dt, cfg.stages, bound_psi, bound_a if cfg.gauge == "dynamic" else np.inf)
    else:
        _check_euler(dt, h, v, cfg, bound_psi, bound_a)
    if cfg.torus:
        n_phi = np.asarray(flux_quanta(v["field"], cfg))
        if (n_phi == 0).any():
            nx, ny = cfg.shape
            bmin = 2 * np.pi / (nx * ny * h**2)
            bad = v["field"][n_phi == 0].ravel()[0]
            raise TDGLConfigError(
                f"field={bad:g} gives N_phi = 0 flux quanta on the {nx}x{ny} torus (h={h:g}); "
                f"|field| must be >= {bmin / 2:.4g} (one quantum is B = {bmin:.4g})"
            )
