"""Figures a physicist reads without the README: colour bars with units, the flux-quantum bin of B, the
joint posterior zoomed with the prior box shown, and a verdict on each calibration figure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.apps._figures import channel_label, flux_bin, main_result_figure, mass_box, plot_main_result
from glsbi_plugin.diagnostics import _plots
from glsbi_plugin.diagnostics._report import CalibrationReport
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import ClassifierConfig, GridPosterior, build_inference
from glsbi_plugin.physics import STM


def test_flux_bin_is_the_range_of_one_flux_quantum():
    # the example: 6 quanta on 48² at h = 0.5 hold B in [0.060, 0.071]
    n, lo, hi = flux_bin(0.07, (48, 48), 0.5)
    assert n == 6 and round(lo, 3) == 0.060 and round(hi, 3) == 0.071
    assert hi - lo == pytest.approx(2 * math.pi / 24**2)
    for b in (lo + 1e-9, 0.5 * (lo + hi), hi - 1e-9):  # every B in the bin gives the same N_phi
        assert round(b * 24**2 / (2 * math.pi)) == n


def test_mass_box_holds_the_mass_and_stays_on_the_grid():
    x = np.linspace(0.0, 0.3, 30, endpoint=False) + 0.005
    y = np.linspace(0.03, 0.10, 40, endpoint=False) + 0.000875
    d = np.exp(-0.5 * (((x[:, None] - 0.15) / 0.01) ** 2 + ((y[None, :] - 0.07) / 0.002) ** 2))
    x0, x1, y0, y1 = mass_box(d, (x, y))
    assert 0.0 <= x0 < 0.15 < x1 <= 0.3 and 0.03 <= y0 < 0.07 < y1 <= 0.10
    assert (x1 - x0) < 0.3 / 2 and (y1 - y0) < 0.07 / 2  # zoomed in
    inside = ((x[:, None] >= x0) & (x[:, None] <= x1)) & ((y[None, :] >= y0) & (y[None, :] <= y1))
    assert d[inside].sum() / d.sum() > 0.999


def test_channel_labels_carry_units():
    assert "bulk = 1" in channel_label("rho1")
    assert "Φ₀ = 2π" in channel_label("bz")
    assert "standardised" in channel_label("stm2")


@pytest.fixture(scope="module")
def main_figure_inputs():
    """A grid posterior of an untrained (but sbi-built) NRE_C on 16² STM images; the figure does not
    care whether the estimator is any good."""
    from glsbi_plugin.apps.quickstart import QuickstartSettings

    settings = QuickstartSettings(size=16, steps=4, bounds=((0.0, 0.3), (0.1, 0.4)), theta_true=(0.15, 0.25),
                                  observation=STM(pixels=16))
    sim = make_simulator(config=settings.simulator_config(), bounds={"field": (0.1, 0.4)},
                         observation=settings.observation, batch_size=8)
    prior = sim.prior()
    theta = prior.sample((16,))
    x = sim.simulate_seeds(theta, np.arange(16), shard=False)
    inference = build_inference("NRE_C", prior, EmbeddingConfig(features=4, widths=(4,)),
                                ClassifierConfig(hidden_features=8), x_shape=sim.x_shape)
    estimator = inference._build_neural_net(theta, x).eval()
    posterior = GridPosterior(estimator, prior, resolution=40, x_o=x[0])
    summary = {"theta_map": posterior.map().tolist(), "credible_interval_90": posterior.credible_interval(0.9).tolist(),
               "test_coverage_90": [0.9, 0.9], "num_test": 10, "settings": {"num_simulations": 16}}
    return posterior, x[0], settings, sim, summary


def test_main_figure_has_units_the_flux_bin_and_a_zoom_with_the_prior_box(main_figure_inputs, monkeypatch):
    posterior, x_o, settings, sim, summary = main_figure_inputs
    # a posterior with its mass near (0.15, 0.25): the joint panel zooms there, the prior box in an inset
    eta, field = (a[:, None] if k == 0 else a[None, :] for k, a in enumerate(posterior.axes))
    peaked = -0.5 * (((eta - 0.15) / 0.01) ** 2 + ((field - 0.25) / 0.01) ** 2)
    peaked = (peaked - torch.logsumexp(peaked.ravel(), 0)).ravel()
    monkeypatch.setattr(posterior, "grid_log_prob", lambda *args: peaked)
    fig = main_result_figure(posterior, x_o, settings, sim, summary)
    colorbar_labels = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert any("standardised" in t for t in colorbar_labels)  # the observation's colour bar
    assert any(t.startswith("p(η, B") for t in colorbar_labels)  # the joint density's
    joint = next(ax for ax in fig.axes if ax.get_title().startswith("joint posterior, zoomed"))
    x0, x1 = joint.get_xlim()
    y0, y1 = joint.get_ylim()
    assert 0.0 < x0 < 0.15 < x1 < 0.3 and 0.1 < y0 < 0.25 < y1 < 0.4
    inset = [child for child in joint.child_axes if child.get_title() == "prior box"]
    assert len(inset) == 1 and inset[0].get_xlim() == pytest.approx((0.0, 0.3))
    b_marginal = next(ax for ax in fig.axes if ax.get_title() == "marginal of B")
    labels = [t.get_text() for t in b_marginal.get_legend().get_texts()]
    n_phi, lo, hi = flux_bin(0.25, (16, 16), 0.5)
    assert f"N_φ = {n_phi} bin: B the data can fix" in labels
    hatched = [p for p in b_marginal.patches if p.get_hatch() == "//"]
    assert len(hatched) == 1
    span = hatched[0]  # a Rectangle in data x (axvspan)
    assert span.get_x() == pytest.approx(lo) and span.get_x() + span.get_width() == pytest.approx(hi)


def test_a_posterior_spread_over_the_box_is_shown_whole(main_figure_inputs, monkeypatch):
    posterior, *rest = main_figure_inputs
    flat = torch.full((posterior.grid.shape[0],), -math.log(posterior.grid.shape[0]))
    monkeypatch.setattr(posterior, "grid_log_prob", lambda *args: flat)
    fig = main_result_figure(posterior, *rest)
    joint = next(ax for ax in fig.axes if ax.get_title().startswith("joint posterior"))
    assert joint.get_title() == "joint posterior over the whole prior box" and not joint.child_axes
    assert joint.get_xlim() == pytest.approx((0.0, 0.3), abs=1e-6)


def test_main_figure_is_saved_under_both_names(main_figure_inputs, tmp_path):
    paths = plot_main_result(tmp_path / "posterior.png", *main_figure_inputs)
    assert [p.name for p in paths] == ["posterior.png", "inference_result.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def _report(ranks: np.ndarray, ks: list[float], tarp_ks: float = 0.9, atc: float = 0.01) -> CalibrationReport:
    levels = np.linspace(0.05, 0.95, 19)
    cov = np.stack([levels, levels], axis=1)
    return CalibrationReport(
        names=("eta", "field"), posterior="test", num_posterior_samples=99, seed=0, ranks=ranks,
        ks_pvalues=np.asarray(ks), c2st_ranks=None, c2st_dap=None, levels=levels, coverage=cov,
        hpd_ranks=None, hpd_coverage=levels.copy(), grid_coverage=None, tarp_alpha=np.linspace(0, 1, 21),
        tarp_ecp=np.linspace(0, 1, 21), tarp_atc=atc, tarp_ks_pvalue=tarp_ks, seconds=0.0,
    )


def test_calibration_verdicts_name_how_a_posterior_fails():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=(300, 1))
    edges = np.where(rng.random((300, 1)) < 0.5, rng.integers(0, 10, (300, 1)), rng.integers(90, 100, (300, 1)))
    middle = rng.integers(40, 60, size=(300, 1))
    report = _report(np.concatenate([uniform, edges], axis=1), [0.6, 1e-9])
    assert _plots.rank_verdict(report, 0).startswith("calibrated")
    assert "over-confident" in _plots.rank_verdict(report, 1)
    report = _report(np.concatenate([middle, uniform], axis=1), [1e-9, 0.6])
    assert "under-confident" in _plots.rank_verdict(report, 0)
    assert "ok" in _plots.coverage_verdict(report) and "joint 0.90 ok" in _plots.coverage_verdict(report)
    low = dataclasses.replace(report, hpd_coverage=report.levels * 0.5)
    assert "joint 0.45 over-confident" in _plots.coverage_verdict(low)
    assert "passes" in _plots.tarp_verdict(report) and "see SBC" in _plots.tarp_verdict(report)
    assert "over-confident" in _plots.tarp_verdict(dataclasses.replace(report, tarp_ks_pvalue=0.001, tarp_atc=-0.1))


def test_calibration_figures_carry_their_verdicts(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    report = _report(rng.integers(0, 100, size=(50, 2)), [0.5, 0.001])
    titles: list[str] = []
    from matplotlib.figure import Figure

    original = Figure.savefig

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        titles.extend(ax.get_title() for ax in self.axes)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    paths = _plots.plot_report(report, tmp_path)
    assert [p.name for p in paths] == list(_plots.FIGURES) and all(p.stat().st_size > 0 for p in paths)
    assert any(t.startswith("SBC eta: calibrated") for t in titles)
    assert any(t.startswith("SBC field: NOT calibrated") for t in titles)
    assert any("at 90%" in t for t in titles) and any(t.startswith("TARP") and "joint" in t for t in titles)
