"""``glsbi train`` and ``glsbi calibrate`` on the banks of a tiny main job."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_quickstart import TINY  # tests/ is on sys.path

from glsbi_plugin.apps.cli import main
from glsbi_plugin.checkpoint import load_estimator
from glsbi_plugin.diagnostics import CalibrationReport, calibration_report
from glsbi_plugin.inference import GridPosterior, MarginalRecalibration, fit_recalibration
from glsbi_plugin.store import SimulationBank


@pytest.fixture(scope="module")
def run(tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("qs") / "qs"
    assert main(["quickstart", "--out", str(out), *TINY]) == 0
    return out


def test_train_an_ensemble_then_calibrate_it(run, tmp_path, capsys) -> None:  # noqa: ANN001
    est = tmp_path / "est.pt"
    assert main(["train", str(run / "bank.zarr"), "--out", str(est), "--ensemble", "2", "--max-epochs", "2",
                 "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "member 0" in text and "member 1" in text and "glsbi calibrate" in text
    members = [load_estimator(p) for p in (est, tmp_path / "est_1.pt")]
    bank = SimulationBank.open(run / "bank.zarr", read_only=True)
    assert members[0].simulator.describe() == bank.simulator.describe()
    w0, w1 = (next(m.estimator.parameters()).detach() for m in members)
    assert not np.allclose(w0.numpy(), w1.numpy())  # two seeds, two networks

    report_dir = tmp_path / "report"
    assert main(["calibrate", str(run / "heldout.zarr"), str(est), str(tmp_path / "est_1.pt"), "--out",
                 str(report_dir), "--num-posterior-samples", "200", "--resolution", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "eta: " in text and "field: " in text and "TARP ATC" in text
    assert {p.name for p in report_dir.iterdir()} >= {"report.md", "report.json", "sbc_ranks.png", "coverage.png",
                                                       "tarp.png"}
    report = CalibrationReport.from_dict(json.loads((report_dir / "report.json").read_text()))
    assert report.num_test == 10 and report.num_posterior_samples == 200
    assert "## Verdict" in (report_dir / "report.md").read_text()
    # the same numbers from the library: the mixture of the two members on the held-out bank
    theta, x = SimulationBank.open(run / "heldout.zarr", read_only=True).to_torch()
    direct = calibration_report(GridPosterior([m.estimator for m in members], members[0].prior, resolution=32),
                                theta, x, num_posterior_samples=200, seed=0, names=("eta", "field"))
    np.testing.assert_array_equal(direct.ranks, report.ranks)


def test_train_and_calibrate_refuse_bad_input(run, tmp_path, capsys) -> None:  # noqa: ANN001
    assert main(["train", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "e.pt")]) == 2
    assert "no such bank" in capsys.readouterr().err
    assert main(["train", str(run / "bank.zarr"), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    missing = str(tmp_path / "missing.pt")
    assert main(["calibrate", str(run / "heldout.zarr"), missing, "--out", str(tmp_path / "r")]) == 2
    assert "no such estimator" in capsys.readouterr().err
    assert main(["train", str(run / "bank.zarr"), "--out", str(tmp_path / "e.pt"), "--ensemble", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_calibrate_recalibrates_on_another_bank(run, tmp_path, capsys) -> None:  # noqa: ANN001
    """--recalibrate fits on the main job's calibration bank (the library's fit), writes the file and
    reports the recalibrated posterior beside the estimator's own verdicts; --recalibration reuses it."""
    est = run / "estimator.pt"
    out = tmp_path / "report"
    assert main(["calibrate", str(run / "heldout.zarr"), str(est), "--recalibrate", str(run / "recalibration.zarr"),
                 "--out", str(out), "--num-posterior-samples", "100", "--resolution", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "recalibration: eta: " in text and "without recalibration: eta: " in text
    recal = MarginalRecalibration.load(out / "recalibration.json")
    ckpt = load_estimator(est)
    theta, x = SimulationBank.open(run / "recalibration.zarr", read_only=True).to_torch()
    direct = fit_recalibration(GridPosterior(ckpt.estimator, ckpt.prior, resolution=32), theta, x)
    assert recal.weights == direct.weights  # the same pairs, the same grid: the same fit
    assert "Without the recalibration" in (out / "report.md").read_text()
    assert "given x: eta: PIT means" in text and "## Calibration given x" in (out / "report.md").read_text()
    again = tmp_path / "again"
    assert main(["calibrate", str(run / "heldout.zarr"), str(est), "--recalibration", str(out / "recalibration.json"),
                 "--out", str(again), "--num-posterior-samples", "100", "--resolution", "32", "--no-progress"]) == 0
    first, second = (json.loads((d / "report.json").read_text())["sbc"]["ranks"] for d in (out, again))
    assert first == second
    # recalibrating on the bank being checked would prove nothing: refused
    assert main(["calibrate", str(run / "heldout.zarr"), str(est), "--recalibrate", str(run / "heldout.zarr"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "is the bank being checked" in capsys.readouterr().err
