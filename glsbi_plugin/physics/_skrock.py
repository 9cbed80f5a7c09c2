r"""SK-ROCK's coefficients and stability interval (Abdulle, Almuslimani & Vilmart, SIAM/ASA J.
Uncertainty Quantif. 6, 937 (2018)); the step itself is in ``_solver``.

With :math:`\omega_0 = 1 + \epsilon/s^2`, :math:`\omega_1 = T_s(\omega_0)/T_s'(\omega_0)` (Chebyshev
polynomials :math:`T_j` at :math:`\omega_0`, damping :math:`\epsilon`):
:math:`\mu_1 = \omega_1/\omega_0`, :math:`\nu_1 = s\omega_1/2`, :math:`\kappa_1 = s\omega_1/\omega_0`,
:math:`\mu_j = 2\omega_1 T_{j-1}/T_j`, :math:`\nu_j = 2\omega_0 T_{j-1}/T_j`,
:math:`\kappa_j = -T_{j-2}/T_j`. Pure Python (no JAX): :mod:`._checks` and :mod:`._solver` both use it.
"""

from __future__ import annotations

import functools

__all__ = ["SKROCK_DAMPING", "skrock_coefficients", "skrock_stability"]

#: Damping :math:`\epsilon` of the Chebyshev recursion.
SKROCK_DAMPING = 0.05


@functools.cache
def skrock_coefficients(stages: int, damping: float = SKROCK_DAMPING) -> tuple[tuple[float, float, float], ...]:
    r"""``((μ_1, ν_1, κ_1), …, (μ_s, ν_s, κ_s))`` of SK-ROCK with s = ``stages`` (module docstring)."""
    s = stages
    w0 = 1.0 + damping / s**2
    t = [1.0, w0]  # T_j(ω0)
    dt_ = [0.0, 1.0]  # T_j'(ω0)
    for _ in range(2, s + 1):
        t.append(2 * w0 * t[-1] - t[-2])
        dt_.append(2 * t[-2] + 2 * w0 * dt_[-1] - dt_[-2])
    w1 = t[s] / dt_[s]
    coeffs = [(w1 / w0, s * w1 / 2, s * w1 / w0)]
    for j in range(2, s + 1):
        coeffs.append((2 * w1 * t[j - 1] / t[j], 2 * w0 * t[j - 1] / t[j], -t[j - 2] / t[j]))
    return tuple(coeffs)


def skrock_stability(stages: int, damping: float = SKROCK_DAMPING) -> float:
    r"""Length :math:`L_s = (1+\omega_0)/\omega_1` of SK-ROCK's real stability interval
    :math:`[-L_s, 0]` in :math:`dt\,\lambda` (Euler: 2; :math:`\approx (2 - 4\epsilon/3)s^2`)."""
    w0 = 1.0 + damping / stages**2
    mu1 = skrock_coefficients(stages, damping)[0][0]
    return (1.0 + w0) / (mu1 * w0)
