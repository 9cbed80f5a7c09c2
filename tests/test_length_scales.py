"""Length scales, ground state, Hc2 and regimes against closed forms and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from glsbi_plugin.physics import ground_state, hc2_lattice, length_scales, presets


def test_single_component_closed_forms():
    K, alpha, beta, e = 0.5, -1.0, 2.0, 0.3
    ls = length_scales(presets.single_component(K=K, alpha=alpha, beta=beta, e=e))
    u2 = -alpha / beta
    assert ls.u[0] == pytest.approx(np.sqrt(u2))
    assert ls.lam == pytest.approx(1 / (e * np.sqrt(2 * K * u2)))
    assert ls.xi_minus == pytest.approx(np.sqrt(2) / np.sqrt(-2 * alpha / K))
    assert ls.hc2 == pytest.approx(-alpha / K)
    assert ls.regime == "type-II"
    assert length_scales(presets.single_component(e=3.0)).regime == "type-I"


@pytest.mark.parametrize("eta,nu", [(0.0, 0.0), (0.2, 0.0), (0.4, 0.3), (-0.3, 0.1), (0.05, -0.02)])
def test_ground_state_minimises_the_potential(eta, nu):
    p = presets.type15(eta=eta, nu=nu)
    a, b = np.asarray(p.alpha), np.asarray(p.beta)

    def V(r):
        return np.sum(a * r**2 + 0.5 * b * r**4) - 2 * abs(eta) * r[0] * r[1] + nu * r[0] ** 2 * r[1] ** 2

    best = min(
        (minimize(V, x0, bounds=[(0, None)] * 2, tol=1e-14) for x0 in ([1, 1], [2, 0.1], [0.1, 2])), key=lambda r: r.fun
    )
    np.testing.assert_allclose(length_scales(p).u, best.x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ground_state(p)), best.x, rtol=1e-4, atol=1e-6)


def test_two_band_masses_at_zero_coupling_and_hc2_root():
    p = presets.type15(eta=0.0, e=0.7)
    ls = length_scales(p)
    assert ls.m_plus == pytest.approx(2.0) and ls.m_minus == pytest.approx(0.5)
    assert ls.m_A == pytest.approx(0.7 * np.sqrt(2.0))
    assert ls.regime == "type-1.5" and ls.weak_band_field == pytest.approx(0.125)
    p = presets.type15(eta=0.3)
    K, a = np.asarray(p.K), np.asarray(p.alpha)
    hc2 = length_scales(p).hc2
    assert (a[0] + K[0] * hc2) * (a[1] + K[1] * hc2) == pytest.approx(0.3**2)
    assert hc2 > -a[0] / K[0]  # the coupling raises Hc2


def test_type15_to_type2_crossover_near_documented_eta():
    """PHYSICS.md: at e = 0.45 the type-1.5/II crossover sits near η ≈ 0.09."""
    regimes = {eta: length_scales(presets.type15(eta=eta, e=0.45)).regime for eta in (0.0, 0.07, 0.12, 0.3)}
    assert regimes == {0.0: "type-1.5", 0.07: "type-1.5", 0.12: "type-II", 0.3: "type-II"}


def test_lattice_hc2_expansion():
    h = 0.5
    b = hc2_lattice(1.0, h)
    assert b - b * b * h * h / 8 == pytest.approx(1.0)
    assert b == pytest.approx(1.0 * (1 + 1.0 * h * h / 8), rel=5e-3)  # first order in Hc2 h²
