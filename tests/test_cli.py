"""The ``glsbi`` console script: help texts, simulate, bank create/fill/info, one-line usage errors."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from glsbi_plugin.apps import cli
from glsbi_plugin.apps.cli import COMMANDS, build_parser, main

MODEL = ["--size", "16", "--steps", "300"]  # the configuration of tests/test_store.py
BANK = [*MODEL, "--bound", "field", "0.1", "0.4", "--chunk-size", "8", "--seed", "7"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("glsbi: error: "), err
    return lines[0]


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


# -- help -------------------------------------------------------------------------------------
def test_every_option_is_documented(capsys):
    parsers = list(_all_parsers(build_parser()))
    progs = {p.prog for p in parsers}
    assert {"glsbi", "glsbi simulate", "glsbi bank", "glsbi bank create", "glsbi bank fill", "glsbi bank info"} <= progs
    for p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(a.help for a in action._choices_actions), p.prog
            else:
                assert action.help and action.help != argparse.SUPPRESS, (p.prog, action.dest)
        assert run(capsys, *p.prog.split()[1:], "--help")[0] == 0
    code, out, _ = run(capsys, "bank", "fill", "--help")
    assert code == 0 and "--scheduler" in out and "--repair" in out and "tcp://HOST:PORT" in out


def test_console_script_and_module_entry_points():
    exe = shutil.which("glsbi", path=os.path.dirname(sys.executable))
    assert exe, "the glsbi console script is not installed next to this python"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("glsbi ")
    r = subprocess.run([sys.executable, "-m", "glsbi_plugin.apps.cli", "bank", "create", "x", "--n", "-3"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == (
        "glsbi: error: argument --n: must be >= 1, got -3 (see 'glsbi bank create --help')")


def test_registry_leaves_room_for_more_commands(capsys, monkeypatch):
    assert list(COMMANDS)[:2] == ["simulate", "bank"]
    monkeypatch.setattr(cli, "COMMANDS", dict(COMMANDS))

    @cli.command("later", help="a later subcommand")
    def _later(p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", type=int, default=3, help="a number")
        p.set_defaults(func=lambda args: print(f"later {args.k}") or 0)

    assert run(capsys, "later", "--k", "5")[:2] == (0, "later 5\n")
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("later", help="again")(_later)
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("demo", help="again")(_later)  # the real demo is registered


# -- simulate ---------------------------------------------------------------------------------
def test_simulate_writes_an_image_for_any_physical_value(capsys, tmp_path):
    out = tmp_path / "img.png"
    # field 0.3 lies outside the default prior (0.03-0.10): simulate does not use the bounded simulator
    code, text, err = run(capsys, "simulate", "--eta", "0.35", "--field", "0.3", *MODEL, "--out", str(out),
                          "--channels", "rho1", "rho2", "bz", "--no-progress")
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "vortex windings" in text


@pytest.mark.parametrize(("argv", "expected"), [
    ([], dict(scheme="skrock", stages=2, dt=0.3125, steps=640)),
    (["--scheme", "euler"], dict(scheme="euler", stages=1, dt=0.08, steps=2500)),
    (["--stages", "4", "--dt", "1.0"], dict(scheme="skrock", stages=4, dt=1.0, steps=200)),
    (["--steps", "10"], dict(scheme="skrock", stages=2, dt=0.3125, steps=10)),
])
def test_model_options_default_to_the_forward_model_time(argv, expected):
    """Without --steps every scheme runs to the forward model's t = 200."""
    cfg = cli._config(build_parser().parse_args(["simulate", *argv]))
    assert {k: getattr(cfg, k) for k in expected} == expected
    if "--steps" not in argv:
        assert cfg.t_final == pytest.approx(200.0)


@pytest.mark.parametrize(("argv", "match"), [
    (["simulate", "--size", "2"], "--size: must be >= 4"),
    (["simulate", "--field", "0.001", "--size", "16"], "N_phi = 0"),
    (["simulate", "--channels", "rho3", "--size", "16", "--steps", "1"], "channels"),
    (["simulate", "--size", "16", "--out", "/nonexistent-dir/x.png"], "does not exist"),
    (["simulate", "--eta", "abc"], "invalid float value"),
    (["simulate", "--eta", "0.8", "--scheme", "euler", "--dt", "0.1", "--size", "16"],
     "dt=0.1 exceeds the explicit-Euler bound for psi"),
    (["simulate", "--eta", "0.3", "--dt", "2", "--size", "16"], "SK-ROCK bound for psi with stages=2"),
    (["simulate", "--scheme", "euler", "--stages", "2", "--size", "16"], "scheme='euler' has one stage"),
    (["frobnicate"], "invalid choice"),
])
def test_simulate_usage_errors(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    assert code == 2 and match in one_error_line(err)


# -- bank -------------------------------------------------------------------------------------
def test_bank_create_fill_info_repair(capsys, tmp_path):
    path = str(tmp_path / "b.zarr")
    code, out, err = run(capsys, "bank", "create", path, "--n", "20", *BANK)
    assert code == 0 and "3 chunks of 8" in out, err
    code, out, _ = run(capsys, "bank", "info", path, "--no-verify")
    assert code == 0 and "0/3 chunks" in out
    code, out, err = run(capsys, "bank", "fill", path, "--n", "8", "--no-progress")
    assert code == 0 and "simulated 1 chunks (8 simulations)" in out and "1/3 chunks filled" in out, err
    code, out, err = run(capsys, "bank", "fill", path, "--batch-size", "8")  # progress bar on stderr
    assert code == 0 and "simulated 2 chunks" in out and "sim/s" in err
    code, out, _ = run(capsys, "bank", "info", path)
    assert code == 0 and "3/3 chunks, 20/20 samples" in out and "verify    ok" in out and "hash      " in out
    info = json.loads(run(capsys, "bank", "info", path, "--json")[1])
    assert info["chunks_filled"] == 3 and info["verify"]["ok"] and info["simulator"]["config"]["steps"] == 300

    from glsbi_plugin.store import SimulationBank

    bank = SimulationBank.open(path)
    x_before = bank.group["x"][:]
    bank._chunk_file("x", 2).write_bytes(b"not a zstd frame")
    code, out, _ = run(capsys, "bank", "info", path)
    assert code == 1 and "CORRUPT" in out and "chunk 2: unreadable" in out and "--repair" in out
    code, out, _ = run(capsys, "bank", "fill", path, "--repair", "--no-progress")
    assert code == 0 and "1 repaired" in out
    assert run(capsys, "bank", "info", path)[0] == 0
    assert bank.group["x"][:].tobytes() == x_before.tobytes()


def test_bank_usage_errors(capsys, tmp_path):
    path = str(tmp_path / "b.zarr")
    assert run(capsys, "bank", "create", path, "--n", "8", *BANK)[0] == 0
    (tmp_path / "file").write_text("x")
    (tmp_path / "plain").mkdir()
    cases = [
        (["bank", "create", path, "--n", "8", *BANK], "already exists"),
        (["bank", "create", str(tmp_path / "c.zarr"), "--n", "0"], "--n: must be >= 1"),
        (["bank", "create", str(tmp_path / "c.zarr"), "--n", "8", "--chunk-size", "-1"], "--chunk-size: must be >= 1"),
        (["bank", "create", str(tmp_path / "file" / "b.zarr"), "--n", "8", *BANK], "cannot create bank"),
        (["bank", "create", str(tmp_path / "c.zarr"), "--n", "8", "--bound", "nu", "0", "1"], "not in --names"),
        (["bank", "create", str(tmp_path / "c.zarr"), "--n", "8", "--bound", "eta", "0", "x"], "must be numbers"),
        (["bank", "create", str(tmp_path / "c.zarr"), "--n", "8", "--names", "eta", "zeta"], "unknown parameter"),
        (["bank", "fill", str(tmp_path / "missing.zarr")], "does not exist"),
        (["bank", "info", str(tmp_path / "plain")], "not a glsbi simulation bank"),
        (["bank", "fill", path, "--batch-size", "3"], "batch_size=3"),
        (["bank", "fill", path, "--n", "9"], "exceeds"),
        (["bank", "fill", path, "--scheduler", "nonsense"], "scheduler='nonsense'"),
        (["bank"], "required"),
    ]
    for argv, match in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and match in one_error_line(err), (argv, err)
    assert not (tmp_path / "c.zarr").exists()


# -- instruments ----------------------------------------------------------------------------------
def test_instrument_options_reach_the_bank_and_its_info(tmp_path, capsys):
    path = str(tmp_path / "stm.zarr")
    code, out, err = run(capsys, "bank", "create", path, "--n", "8", *BANK, "--observation", "stm",
                         "--instrument", "bands=2", "snr=5:20", "pixels=8")
    assert code == 0, err
    from glsbi_plugin.physics import STM, Range
    from glsbi_plugin.store import SimulationBank

    bank = SimulationBank.open(path, read_only=True)
    assert bank.simulator.observation == STM(bands=(2,), snr=Range(5.0, 20.0), pixels=8)
    assert bank.x_shape == (1, 8, 8)
    code, out, _ = run(capsys, "bank", "info", path, "--no-verify")
    # canonical JSON: integral floats as ints
    assert code == 0 and "observed  stm" in out and '"snr": {"high": 20, "low": 5}' in out


def test_instrument_option_errors(capsys):
    cases = [
        (["simulate", "--size", "16", "--instrument", "snr=3"], "need --observation"),
        (["simulate", "--size", "16", "--observation", "stm", "--instrument", "foo=1"], "unknown settings ['foo']"),
        (["simulate", "--size", "16", "--observation", "stm", "--instrument", "snr"], "expected KEY=VALUE"),
        (["simulate", "--size", "16", "--observation", "stm", "--instrument", "snr=abc"], "'abc' is not a number"),
        (["simulate", "--size", "16", "--observation", "squid", "--channels", "bz"], "ideal observation"),
        (["simulate", "--size", "16", "--observation", "stm", "--instrument", "field_of_view=100"], "allowed (0, 8]"),
    ]
    for argv, match in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and match in one_error_line(err), (argv, err)
