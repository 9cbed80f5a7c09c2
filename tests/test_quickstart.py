"""The main job end to end on a tiny problem: bank → NRE_C → grid posterior → coverage → plot."""

from __future__ import annotations

import json

from glsbi_plugin.cli import main

TINY = ["--size", "16", "--steps", "60", "--num-simulations", "60", "--chunk-size", "10", "--max-epochs", "2",
        "--theta", "0.15", "0.25", "--no-progress", "--threads", "2"]


def test_quickstart_runs_end_to_end_and_resumes(tmp_path, capsys, monkeypatch):
    import glsbi_plugin._simulator as sim

    # a 16² torus holds too little flux for the default field prior; widen it for the tiny run
    monkeypatch.setitem(sim.DEFAULT_BOUNDS, "field", (0.1, 0.4))
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "posterior.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["names"] == ["eta", "field"] and summary["num_test"] == 10
    for (lo, hi), low, high in zip(summary["credible_interval_90"], (0.0, 0.1), (0.3, 0.4), strict=True):
        assert low <= lo < hi <= high
    assert 1 <= summary["epochs_trained"] <= 2
    text = capsys.readouterr().out
    assert "90% interval" in text and "test coverage" in text
    # rerun: the bank is complete, nothing is simulated again
    assert main(["quickstart", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "summary.json").read_text())["timings"]["simulate_s"] < summary["timings"]["simulate_s"]
