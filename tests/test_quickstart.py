"""The main job end to end on a tiny problem: bank → NRE_C → grid posterior → calibration → plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import kstest

from glsbi_plugin.apps.cli import main
from glsbi_plugin.checkpoint import load_estimator, recalibration_for
from glsbi_plugin.diagnostics import CalibrationReport, central_coverage, hpd_coverage
from glsbi_plugin.inference import GridPosterior, MarginalRecalibration
from glsbi_plugin.store import SimulationBank

# a 16² torus holds too little flux for the default field prior: the tiny run widens it
TINY = ["--size", "16", "--steps", "60", "--num-simulations", "60", "--num-heldout", "10", "--num-recalibration", "50",
        "--chunk-size", "10",
        "--max-epochs", "2",
        "--theta", "0.15", "0.25", "--bound", "field", "0.1", "0.4", "--no-progress", "--threads", "2"]


def test_quickstart_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "posterior.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["names"] == ["eta", "field"] and summary["num_test"] == 10
    for (lo, hi), low, high in zip(summary["credible_interval_90"], (0.0, 0.1), (0.3, 0.4), strict=True):
        assert low <= lo < hi <= high
    assert 1 <= summary["epochs_trained"] <= 2
    text = capsys.readouterr().out
    assert "90% interval" in text and "test coverage" in text and "TARP ATC" in text
    check_calibration(summary, out)
    check_grid_coverage(summary, out)
    assert summary["bank"] == {"chunks_simulated_now": 6, "simulations": 60}
    assert summary["heldout"] == {"seed": 1, "chunks_simulated_now": 1, "simulations": 10}
    assert len(summary["calibration_verdicts"]) == 2 and "verdict: eta: " in text
    assert len(summary["calibration_verdicts_unrecalibrated"]) == 2 and "without recalibration: eta: " in text
    assert len(summary["calibration"]["summary"]["conditional_verdicts"]) == 2 and "given x: eta: PIT means" in text
    # the recalibration: fitted on a third bank, written beside the estimator, recorded in the summary
    assert summary["recalibration_bank"] == {"seed": 2, "chunks_simulated_now": 5, "simulations": 50}
    recal = MarginalRecalibration.load(out / "recalibration.json")
    assert recal.to_dict() == summary["recalibration"] and recal.num_pairs == 50
    assert recal.info["estimators"] == ["estimator.pt"] and "recalibrated on 50 simulations of seed 2" in text
    # three banks of three seeds: no simulation seed is shared, so the held-out check is honest
    seeds = [set(SimulationBank.open(out / f"{name}.zarr", read_only=True).group["seeds"][:].tolist())
             for name in ("bank", "heldout", "recalibration")]
    assert not (seeds[0] & seeds[1]) and not (seeds[0] & seeds[2]) and not (seeds[1] & seeds[2])
    # rerun: both banks are complete, nothing is simulated again
    assert main(["quickstart", "--out", str(out), *TINY]) == 0
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["bank"] == {"chunks_simulated_now": 0, "simulations": 60}
    assert rerun["heldout"]["chunks_simulated_now"] == 0


def check_grid_coverage(summary: dict, out) -> None:  # noqa: ANN001 - a Path
    """The printed 90 % test coverage, recomputed independently: the saved estimator, a fresh grid
    posterior and the held-out bank, counting how often each 90 % interval holds the true θ."""
    ckpt = load_estimator(out / "estimator.pt")
    theta, x = SimulationBank.open(out / "heldout.zarr", read_only=True).to_torch()
    assert len(theta) == summary["num_test"] == 10
    posterior = GridPosterior(ckpt.estimator, ckpt.prior, recalibration=recalibration_for(out / "estimator.pt"))
    assert posterior.recalibration is not None
    hits = np.zeros(2)
    for t, xi in zip(theta, x, strict=True):
        lo, hi = posterior.credible_interval(0.9, xi).T
        hits += ((lo <= t) & (t <= hi)).numpy()
    np.testing.assert_allclose(summary["test_coverage_90"], hits / len(theta))


def check_calibration(summary: dict, out) -> None:  # noqa: ANN001 - a Path
    """The calibration report in summary.json is complete and self-consistent, and its figures exist."""
    for name in ("sbc_ranks.png", "coverage.png", "tarp.png"):
        data = (out / name).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 10_000, name
    cal = summary["calibration"]
    report = CalibrationReport.from_dict(cal)  # every field present and well-formed
    L, n = report.num_posterior_samples, summary["num_test"]
    assert report.names == ("eta", "field") and report.posterior == "GridPosterior"
    assert report.ranks.shape == (n, 2) and report.ranks.min() >= 0 and report.ranks.max() <= L
    assert report.hpd_ranks.shape == (n,) and 0 <= report.hpd_ranks.min() and report.hpd_ranks.max() <= L
    # the numbers follow from the ranks: recompute them independently
    expected_ks = [kstest(r, "uniform", args=(0, L)).pvalue for r in report.ranks.T]
    np.testing.assert_allclose(report.ks_pvalues, expected_ks, rtol=1e-5)
    np.testing.assert_allclose(report.coverage, central_coverage(report.ranks, L, report.levels))
    np.testing.assert_allclose(report.hpd_coverage, hpd_coverage(report.hpd_ranks, L, report.levels))
    for curve in (report.coverage, report.grid_coverage, report.hpd_coverage[:, None]):
        assert ((curve >= 0) & (curve <= 1)).all() and (np.diff(curve, axis=0) >= 0).all()  # nested regions
        assert np.allclose(curve * n, np.round(curve * n))  # fractions of the n test pairs
    assert ((0 <= report.c2st_ranks) & (report.c2st_ranks <= 1)).all()
    assert report.tarp_ecp[0] == 0 and abs(report.tarp_ecp[-1] - 1) < 1e-6 and (np.diff(report.tarp_ecp) >= 0).all()
    assert -0.5 <= report.tarp_atc <= 0.5 and 0 <= report.tarp_ks_pvalue <= 1
    assert 0 < summary["timings"]["calibrate_s"] < 60


def test_quickstart_settings_refuse_bad_recalibration_and_pooling():
    from glsbi_plugin.apps.quickstart import QuickstartSettings

    for n in (1, 49, -5, True, 100.0):
        with pytest.raises(ValueError, match="num_recalibration"):
            QuickstartSettings(num_recalibration=n)
    assert QuickstartSettings(num_recalibration=0).num_recalibration == 0
    with pytest.raises(ValueError, match="combine='mean'"):
        QuickstartSettings(combine="mean")
    assert main(["quickstart", "--num-recalibration", "10", "--out", "/nonexistent/x"]) == 2
