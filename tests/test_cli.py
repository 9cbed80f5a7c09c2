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
    (["simulate", "--eta", "abc"], "--eta: expected a number, got 'abc'"),
    (["simulate", "--dt", "0"], "--dt: must be a finite number > 0, got 0"),
    (["simulate", "--h", "-0.5"], "--h: must be a finite number > 0"),
    (["simulate", "--field", "nan"], "--field: must be finite"),
    (["simulate", "--seed", "-1"], "--seed: must be >= 0"),
    (["simulate", "--size", "16", "--out", "img.txt"], "matplotlib cannot write '.txt' images"),
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
        (["bank", "create", path, "--n", "8", *BANK], f"run 'glsbi bank fill {path}' to complete it"),
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
        (["bank", "fill", path, "--scheduler", "local", "--workers", "64"], "--workers 64: this machine lets"),
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


# -- fast start, threads ------------------------------------------------------------------------
def test_building_the_parser_imports_nothing_heavy():
    """--help and --version must not wait for torch, sbi, jax or matplotlib (a fresh process)."""
    code = (
        "import sys\n"
        "from glsbi_plugin.apps.cli import _all_parsers_help\n"
        "_all_parsers_help()\n"
        "heavy = sorted(m for m in ('torch', 'sbi', 'jax', 'matplotlib', 'zarr', 'dask') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_quotes_the_library_defaults():
    from glsbi_plugin.apps.quickstart import NAMES, QuickstartSettings
    from glsbi_plugin.physics import presets

    d, cfg = cli.FORWARD_DEFAULTS, presets.forward_model()
    assert (d["size"], d["h"], d["scheme"], d["steps"], d["t_final"]) == (cfg.shape[0], cfg.h, cfg.scheme, cfg.steps,
                                                                          presets.T_FINAL)
    assert d["schemes"] == tuple(presets.SCHEME_STEPS)
    assert (d["skrock"], d["euler"]) == (presets.SCHEME_STEPS["skrock"], presets.SCHEME_STEPS["euler"])
    q, s = cli.QUICKSTART_DEFAULTS, QuickstartSettings()
    small = s.simulator_config()
    assert q["names"] == NAMES
    assert (q["size"], q["t_final"], q["steps"], q["scheme"], q["dt"]) == (s.size, small.t_final, small.steps,
                                                                          small.scheme, small.dt)
    assert q["bounds"] == tuple(tuple(b) for b in s.bounds)
    for key in ("num_simulations", "num_heldout", "num_recalibration", "chunk_size", "method", "max_epochs",
                "members", "combine", "theta_true", "seed"):
        assert q[key] == getattr(s, key), key


def test_quickstart_options_left_out_take_the_librarys_defaults():
    from glsbi_plugin.apps.quickstart import QuickstartSettings

    args = build_parser().parse_args(["quickstart"])
    settings = cli._quickstart_settings(args)
    assert dataclasses_equal(settings, QuickstartSettings())
    args = build_parser().parse_args(["quickstart", "--num-simulations", "21", "--seed", "3", "--method", "NPE"])
    settings = cli._quickstart_settings(args)
    assert (settings.num_simulations, settings.seed, settings.method) == (21, 3, "NPE")


def dataclasses_equal(a, b) -> bool:  # noqa: ANN001
    import dataclasses

    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a) if f.name != "observation") \
        and a.observation.to_dict() == b.observation.to_dict()


def test_threads_option_before_or_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["--threads", "3", "simulate"]).threads == 3
    assert parser.parse_args(["simulate", "--threads", "2"]).threads == 2
    assert parser.parse_args(["quickstart"]).threads is None
    code, _, err = run_argv("--threads", "0", "simulate")
    assert code == 2 and "--threads: must be >= 1" in err


def run_argv(*argv: str) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-m", "glsbi_plugin.apps.cli", *argv], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def test_bad_threads_environment_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("GLSBI_THREADS", "many")
    code, _, err = run(capsys, "bank", "info", "nonexistent.zarr")
    assert code == 2 and "GLSBI_THREADS='many'" in one_error_line(err)


# -- values checked before any work (issue 15) -----------------------------------------------------
def test_simulate_out_must_be_a_writable_image_file(capsys, tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    for out, match in [(tmp_path / "adir", "is a directory"), (tmp_path / "afile" / "x.png", "does not exist")]:
        code, _, err = run(capsys, "simulate", "--size", "16", "--steps", "2", "--out", str(out), "--no-progress")
        assert code == 2 and match in one_error_line(err), err
    # a name without suffix becomes .png, and the message names the file actually written
    code, text, err = run(capsys, "simulate", "--size", "16", "--steps", "2", "--field", "0.3",
                          "--out", str(tmp_path / "noext"), "--no-progress")
    assert code == 0, err
    assert (tmp_path / "noext.png").is_file() and not (tmp_path / "noext").exists()
    assert f"wrote {tmp_path / 'noext.png'}:" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_simulate_out_in_a_read_only_directory(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    code, _, err = run(capsys, "simulate", "--size", "16", "--out", str(ro / "x.png"))
    assert code == 2 and "is not writable" in one_error_line(err)


def test_quickstart_values_are_checked_before_any_work(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = str(tmp_path / "qs")
    cases = [
        (["--num-simulations", "10"], f"--num-simulations: must be >= {cli.MIN_SIMULATIONS}"),
        (["--theta", "0.5", "0.07"], "eta = 0.5 not in [0, 0.3]"),
        (["--theta", "0.1", "0.2"], "field = 0.2 not in [0.03, 0.1]"),
        (["--bound", "field", "0.1", "0.4"], "field = 0.07 not in [0.1, 0.4]"),  # the default theta, another box
        (["--bound", "eta", "0.3", "0.1"], "need finite LOW < HIGH"),
        (["--t-final", "0"], "--t-final: must be a finite number > 0"),
        (["--out", str(tmp_path / "afile")], "is a file"),
        (["--out", str(tmp_path / "afile" / "sub")], "is not a directory"),
    ]
    for argv, match in cases:
        argv = argv if "--out" in argv else [*argv, "--out", out]
        code, _, err = run(capsys, "quickstart", *argv)
        assert code == 2 and match in one_error_line(err), (argv, err)
    assert not (tmp_path / "qs").exists()  # nothing was started


def test_min_simulations_is_what_training_needs():
    """The parser's minimum is the smallest budget sbi's NRE-C trains on (validation batches of >= 3)."""
    import torch

    from glsbi_plugin import make_prior
    from glsbi_plugin.embeddings import EmbeddingConfig
    from glsbi_plugin.inference import build_inference, train

    def fit(n: int) -> None:
        torch.manual_seed(0)
        prior = make_prior()
        inference = build_inference("NRE_C", prior, EmbeddingConfig(features=4, widths=(4,)), x_shape=(1, 8, 8))
        train(inference, prior.sample((n,)), torch.randn(n, 1, 8, 8), max_epochs=1)

    fit(cli.MIN_SIMULATIONS)
    with pytest.raises(Exception):  # noqa: B017 - sbi's own failure (a RuntimeError or an assertion)
        fit(cli.MIN_SIMULATIONS - 1)


def test_demo_with_a_damaged_checkpoint_is_one_line(capsys, tmp_path):
    import torch

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": 1, "weights": [1, 2, 3]}, foreign)
    for path in (garbage, foreign):
        code, _, err = run(capsys, "demo", "--posterior", str(path), "--save", str(tmp_path / "d.png"))
        assert code == 2 and str(path) in one_error_line(err), err
    assert not (tmp_path / "d.png").exists()


def test_bank_create_force_says_what_it_deletes_and_never_deletes_other_things(capsys, tmp_path):
    path = tmp_path / "b.zarr"
    assert run(capsys, "bank", "create", str(path), "--n", "8", *BANK)[0] == 0
    assert run(capsys, "bank", "fill", str(path), "--no-progress")[0] == 0
    code, out, err = run(capsys, "bank", "create", str(path), "--n", "16", *BANK, "--force")
    assert code == 0, err
    assert f"--force: deleting the bank at {path} (8 of 8 samples simulated, 1/1 chunks" in out
    assert "created" in out and "16 samples in 2 chunks" in out
    # a bad option is refused before anything is deleted
    code, _, err = run(capsys, "bank", "create", str(path), "--n", "16", *BANK, "--force", "--instrument", "snr=3")
    assert code == 2 and "need --observation" in one_error_line(err)
    from glsbi_plugin.store import SimulationBank

    assert SimulationBank.open(path, read_only=True).n == 16
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    code, _, err = run(capsys, "bank", "create", str(other), "--n", "8", *BANK, "--force")
    assert code == 2 and "not a glsbi simulation bank" in one_error_line(err)
    assert (other / "keep.txt").read_text() == "precious"
