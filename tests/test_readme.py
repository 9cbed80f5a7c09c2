"""Every Python snippet of the README runs verbatim (in a fresh namespace, in a scratch directory)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _block(first_import: str) -> str:
    """The README's Python block that contains ``first_import``."""
    found = [b for b in BLOCKS if first_import in b]
    assert len(found) == 1, f"expected one README block with {first_import!r}, found {len(found)}"
    return found[0]


def test_every_block_is_covered() -> None:
    covered = {"simulate_for_sbi", '("eta", "field", "nu")', "presets.forward_model()", "calibration_report",
               "Decoration(jitter=0.2"}
    assert len(BLOCKS) == len(covered)
    for key in covered:
        _block(key)


def _run(code: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the project's own README
    return namespace


def test_sbi_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _run(_block("simulate_for_sbi"), tmp_path, monkeypatch)
    assert ns["x"].shape == (300, 2, 48, 48) and ns["samples"].shape == (1000, 2)
    lo, hi = ns["posterior"].credible_interval(0.9).T
    assert ((ns["prior"].support.base_constraint.lower_bound <= lo) & (lo < hi)).all()
    assert not (tmp_path / "sbi-logs").exists()


def test_other_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _run(_block('("eta", "field", "nu")'), tmp_path, monkeypatch)
    assert ns["sim"].x_shape == (3, 48, 48) and ns["prior"].sample((2,)).shape == (2, 3)


def test_solver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _run(_block("presets.forward_model()"), tmp_path, monkeypatch)
    assert ns["x"].shape == (3, 64, 64) and ns["state"].psi.shape == (2, 32, 32)


def test_instruments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _run(_block("Decoration(jitter=0.2"), tmp_path, monkeypatch)
    x = ns["x"]
    assert x.shape == (4, 1, 32, 32)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x[0].std(unbiased=False)) - 1) < 1e-3  # standardised maps


def test_calibration_after_make_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    from test_quickstart import TINY  # tests/ is on sys.path (rootdir-relative imports)

    from glsbi_plugin.apps.cli import main

    out = tmp_path / "runs" / "quickstart"
    assert main(["quickstart", "--out", str(out), *TINY, "--num-heldout", "10"]) == 0
    ns = _run(_block("calibration_report"), tmp_path, monkeypatch)
    num_test = json.loads((out / "summary.json").read_text())["num_test"]
    assert num_test == 10 and ns["report"].ranks.shape == (num_test, 2)
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"sbc_ranks.png", "coverage.png", "tarp.png"}
    assert (tmp_path / "calibration.json").stat().st_size > 0
    # the snippet's recalibration is the one the main job saved beside its estimator
    from glsbi_plugin.inference import MarginalRecalibration

    saved = MarginalRecalibration.load(out / "recalibration.json")
    assert ns["recalibration"].weights == saved.weights and ns["posterior"].recalibration is not None
