"""The ``glsbi`` command line: ``glsbi simulate``, ``glsbi bank create|fill|info``, ``glsbi quickstart``,
``glsbi train``, ``glsbi calibrate``, ``glsbi infer``, ``glsbi demo``.

Adding a subcommand: write a function that configures an ``argparse`` sub-parser and sets
``func`` (called with the parsed namespace, returning an exit code), and register it::

    @command("train", help="train a neural posterior on a bank")
    def _train(p: argparse.ArgumentParser) -> None:
        p.add_argument("bank", help="...")
        p.set_defaults(func=_run_train)

Commands appear in ``glsbi --help`` in registration order. Building the parser must stay cheap
(``glsbi --help`` and every ``--help`` answer in well under a second): ``configure`` imports
nothing heavy (no torch, sbi, jax, matplotlib; not ``glsbi_plugin.physics`` or ``.quickstart``,
which import them) and quotes library defaults from the tables below (:data:`FORWARD_DEFAULTS`,
:data:`QUICKSTART_DEFAULTS`, checked against the library by ``tests/test_cli.py``); the handler
(``func``) imports what it needs in its body. Options left at ``None`` take the library's default.
Before the handler runs, ``main`` fixes the thread counts (:mod:`glsbi_plugin._threads`: the
global ``--threads N``, ``GLSBI_THREADS``, or the free cores) and ``JAX_PLATFORMS`` — XLA reads
its flags when jax is first imported, so a handler must not need jax before that. User mistakes (bad values, a path that
is not a bank, a config mismatch) raise :class:`UsageError`, ``ValueError`` or ``OSError``; ``main``
prints them as one line ``glsbi: error: ...`` and returns 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: Registered subcommands: name -> (help, configure(parser)).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


class UsageError(Exception):
    """A user mistake: reported as ``glsbi: error: <message>`` with exit code 2."""


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable]:
    """Register a subcommand (see the module docstring)."""

    def register(configure: Callable[[argparse.ArgumentParser], None]) -> Callable:
        if name in COMMANDS:
            raise ValueError(f"glsbi subcommand {name!r} is registered twice")
        COMMANDS[name] = (help, configure)
        return configure

    return register


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit code 2), pointing at ``--help``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"glsbi: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_above(minimum: float) -> Callable[[str], float]:
    """A finite float > ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and value > minimum):
            raise argparse.ArgumentTypeError(f"must be a finite number > {minimum:g}, got {text}")
        return value

    parse.__name__ = f"number > {minimum:g}"
    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


_finite_float.__name__ = "finite number"

#: The forward model's defaults as quoted in ``--help`` (``physics.presets``: ``forward_model()``,
#: ``SCHEME_STEPS``, ``T_FINAL``), so that building the parser imports no JAX. The handlers take the
#: library's own defaults (an option left at ``None`` is not passed); a test checks this table.
FORWARD_DEFAULTS = {"size": 64, "h": 0.5, "scheme": "skrock", "schemes": ("skrock", "euler"), "t_final": 200.0,
                    "steps": 640, "skrock": (2, 0.3125), "euler": (1, 0.08)}
#: The main job's defaults as quoted in ``glsbi quickstart --help`` (``apps.quickstart``:
#: ``QuickstartSettings()``, ``NAMES``), so that building the parser imports no torch; a test checks it.
QUICKSTART_DEFAULTS = {"names": ("eta", "field"), "size": 48, "t_final": 80.0, "steps": 256, "scheme": "skrock",
                       "dt": 0.3125, "bounds": ((0.0, 0.3), (0.03, 0.1)), "num_simulations": 1000, "num_heldout": 300,
                       "num_recalibration": 1000, "chunk_size": 50, "method": "NRE_A", "max_epochs": 100,
                       "patience": 15, "members": 1, "combine": "log-mean", "theta_true": (0.15, 0.07), "seed": 0}
#: The fewest simulations ``glsbi quickstart`` trains on: sbi holds out ``n - int(0.9 n)`` of them
#: for validation, and NRE-C's contrastive loss needs mini-batches (training and validation) of
#: at least 3 pairs (``num_atoms`` >= 3): ``n - int(0.9 n) >= 3`` first holds at n = 21.
MIN_SIMULATIONS = 21


def _add_model_options(p: argparse.ArgumentParser) -> None:
    d = FORWARD_DEFAULTS
    (s_stages, s_dt), (_, e_dt) = d["skrock"], d["euler"]
    g = p.add_argument_group("forward model (presets.forward_model)")
    g.add_argument("--size", type=_int_at_least(4), default=None, help=f"grid side in sites (default {d['size']})")
    g.add_argument("--steps", type=_int_at_least(0), default=None,
                   help=f"time steps (default: t = {d['t_final']:g}, i.e. {d['steps']} for skrock at dt {s_dt})")
    g.add_argument("--h", type=_float_above(0), default=None, help=f"lattice spacing (default {d['h']})")
    g.add_argument("--scheme", choices=d["schemes"], default=d["scheme"],
                   help=f"time stepper (default {d['scheme']}); euler is Euler-Maruyama, one force per step")
    g.add_argument("--stages", type=_int_at_least(1), default=None,
                   help=f"SK-ROCK stages (default {s_stages}; euler: 1)")
    g.add_argument("--dt", type=_float_above(0), default=None,
                   help=f"time step (default {s_dt} for skrock, {e_dt} for euler); a step above the stability bound "
                        "(euler: 0.101 at eta=0.3 for h=0.5; SK-ROCK with s stages: about 0.97 s^2 times that) "
                        "is refused with the bound")
    g.add_argument("--channels", nargs="+", default=["rho1", "rho2"], metavar="CH",
                   help="channels of the ideal observation: rho1 rho2 bz winding1 winding2 (default rho1 rho2)")
    g.add_argument("--observation", choices=("ideal", "stm", "squid", "decoration"), default="ideal",
                   help="what is observed: the ideal channels, or an instrument (STM conductance maps, scanning-SQUID "
                        "B_z at a height, Bitter decoration); default ideal")
    g.add_argument("--instrument", nargs="+", default=[], metavar="KEY=VALUE",
                   help="instrument settings, e.g. bands=2 blur=1.0 snr=10 pixels=32 field_of_view=16 (stm), height=1 "
                        "loop=0.5 (squid), jitter=0.2 blob=1 (decoration); LOW:HIGH makes a setting a nuisance "
                        "parameter drawn uniformly per simulation")


def _observation(args: argparse.Namespace):  # noqa: ANN202 - an observation of glsbi_plugin.physics
    """The observation of ``--observation``/``--instrument``/``--channels``."""
    from ..physics import Observation, make_observation

    if args.observation == "ideal":
        if args.instrument:
            raise UsageError("--instrument settings need --observation stm, squid or decoration")
        return Observation(channels=tuple(args.channels))
    if args.channels != ["rho1", "rho2"]:
        raise UsageError(f"--channels selects channels of the ideal observation, not of {args.observation}")
    settings = {}
    for item in args.instrument:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--instrument {item!r}: expected KEY=VALUE, e.g. snr=10, or snr=5:20 for a range")
        settings[key] = _setting(text)
    try:
        return make_observation(args.observation, **settings)
    except ValueError as e:  # an unknown or bad setting
        raise UsageError(f"--instrument: {e}") from None


def _setting(text: str) -> object:
    """``5:20`` → Range(5, 20); ``1,2`` → (1, 2); ``true``/``false``; an int; a float (``inf`` too)."""
    from ..physics import Range

    if ":" in text:
        lo, _, hi = text.partition(":")
        return Range(_number(lo), _number(hi))
    if "," in text:
        return tuple(int(_number(t)) for t in text.split(","))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return _number(text)


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"--instrument: {text!r} is not a number") from None


def _config(args: argparse.Namespace):  # noqa: ANN202 - TDGLConfig, imported lazily
    from ..physics import presets

    given = {k: getattr(args, k) for k in ("size", "h") if getattr(args, k) is not None}
    return presets.forward_model(**given, steps=args.steps, scheme=args.scheme, stages=args.stages, dt=args.dt)


def _image_path(out: Path, option: str = "--out") -> Path:
    """``out`` as an image file matplotlib can write (``.png`` added when it has no suffix), checked
    before any work: not a directory, a supported format, a writable directory."""
    if out.is_dir():
        raise UsageError(f"{option} {out} is a directory; give an image file, e.g. {out / 'vortices.png'}")
    if not out.suffix:
        out = out.with_suffix(".png")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise UsageError(f"{option} {out}: matplotlib cannot write {out.suffix!r} images; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    _check_writable_dir(out.parent, f"cannot write {out}")
    return out


def _check_writable_dir(directory: Path, what: str) -> None:
    if not directory.is_dir():
        raise UsageError(f"{what}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: directory {directory} is not writable")


def _check_output_dir(out: Path, option: str = "--out") -> None:
    """``out`` is, or can be created as, a writable directory (checked before any work)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file; the output is a directory, e.g. {out.with_suffix('')}_run")
    if out.is_dir():
        _check_writable_dir(out, f"cannot write into {option} {out}")
        return
    parent = next((a for a in out.absolute().parents if a.exists()), None)
    if parent is None or not parent.is_dir():
        raise UsageError(f"cannot create {option} {out}: {parent} is not a directory")
    _check_writable_dir(parent, f"cannot create {option} {out}")


# -- glsbi simulate -------------------------------------------------------------------------
@command("simulate", help="simulate one vortex image and save it with the vortices marked")
def _simulate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eta", type=_finite_float, default=0.2,
                   help="Josephson coupling η, any physical value (default 0.2)")
    p.add_argument("--field", type=_finite_float, default=0.08, help="mean induction B (default 0.08)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("vortices.png"),
                   help="output image, .png (added if the name has no suffix), .pdf, .svg, ... (default vortices.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import matplotlib

    out = _image_path(args.out)
    import jax

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from ..physics import check_params, forward_in_segments, presets, vortex_positions

    cfg = _config(args)
    observation = _observation(args)
    observation.check(cfg)
    params = presets.type15(eta=args.eta, field=args.field)
    check_params(params, cfg)
    # the forward model of the sbi simulator (same key streams: simulate_seeds(θ, [seed]) gives this
    # image), in segments for the progress bar
    with tqdm(total=cfg.steps, unit="step", desc="simulate", disable=args.no_progress) as bar:
        state, image = forward_in_segments(params, jax.random.key(args.seed), cfg, observation, segments=25,
                                           on_segment=lambda done: bar.update(done - bar.n))
    vortices = [vortex_positions(state, params, cfg, component=a) for a in range(cfg.components)]
    extent = observation.extent(cfg)  # the image's window, sites or plaquettes (vortices at (i + 1/2) h)
    inside = [(v[:, 0] >= extent[0]) & (v[:, 0] < extent[1]) & (v[:, 1] >= extent[2]) & (v[:, 1] < extent[3])
              for v in vortices]
    names = observation.channel_names
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    from ._figures import LENGTH_LABEL, channel_label

    for ax, ch, img in zip(axes[0], names, image, strict=True):
        im = ax.imshow(img.T, origin="lower", extent=extent, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(channel_label(ch, observation), fontsize=8)
        ax.set_xlabel(LENGTH_LABEL.format(h=cfg.h), fontsize=8)
        comps = [int(ch[-1]) - 1] if ch[-1] in "12" else list(range(cfg.components))
        for a, marker in zip(comps, ("o", "s"), strict=False):
            v = vortices[a][inside[a]]
            ax.scatter(v[:, 0], v[:, 1], s=30, marker=marker, facecolors="none", edgecolors="w", linewidths=1.2,
                       label=f"vortices ψ{a + 1} ({len(v)})")
        ax.set_title(ch)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"η = {args.eta:g}, B = {args.field:g}, t = {cfg.t_final:g}, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    counts = ", ".join(f"{int(abs(v[:, 2]).sum())} in ψ{a + 1}" for a, v in enumerate(vortices))
    print(f"wrote {out}: vortex windings {counts}")
    return 0


# -- glsbi bank ... -------------------------------------------------------------------------
@command("bank", help="create, fill and inspect simulation banks (Zarr)")
def _bank_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bank_command", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create an empty bank", description="Create an empty simulation bank.")
    c.add_argument("path", type=Path, help="bank directory (a Zarr store; must not exist, unless --force)")
    c.add_argument("--force", action="store_true",
                   help="if PATH holds a bank, delete it (and everything simulated in it; what is removed is printed) "
                        "and create a new one; never deletes a directory that is not a bank")
    c.add_argument("--n", type=_int_at_least(1), required=True, help="number of samples")
    c.add_argument("--chunk-size", type=_int_at_least(1), default=64, help="samples per chunk (default 64)")
    c.add_argument("--seed", type=_int_at_least(0), default=None, help="bank seed (default: random, recorded)")
    c.add_argument("--batch-size", type=_int_at_least(1), default=None,
                   help="vmapped JAX width, fixed for the bank's life (default: the chunk size)")
    c.add_argument("--names", nargs="+", default=["eta", "field"], metavar="NAME",
                   help="inferred parameters, θ's columns (default eta field)")
    c.add_argument("--bound", nargs=3, action="append", default=[], metavar=("NAME", "LOW", "HIGH"),
                   help="prior bounds of one parameter (repeatable; default: the package defaults)")
    _add_model_options(c)
    c.set_defaults(func=_run_bank_create)

    f = sub.add_parser("fill", help="simulate the missing chunks", description="Fill a bank (resumable).")
    f.add_argument("path", type=Path, help="bank directory")
    f.add_argument("--scheduler", default=None,
                   help="'local' (dask LocalCluster) or 'tcp://HOST:PORT' (existing dask scheduler); "
                        "default: this process")
    f.add_argument("--workers", type=_int_at_least(1), default=2,
                   help="workers of --scheduler local, at most the usable cores (default 2)")
    f.add_argument("--n", type=_int_at_least(1), default=None, help="fill only the first N samples (whole chunks)")
    f.add_argument("--repair", action="store_true", help="verify first and re-simulate corrupt chunks")
    f.add_argument("--batch-size", type=_int_at_least(1), default=None,
                   help="must equal the bank's batch size if given (it fixes the bits)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar (log instead)")
    f.set_defaults(func=_run_bank_fill)

    i = sub.add_parser("info", help="counts, configuration, hash and integrity of a bank",
                       description="Describe a bank and verify its filled chunks.")
    i.add_argument("path", type=Path, help="bank directory")
    i.add_argument("--no-verify", action="store_true", help="skip re-reading the chunks")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_run_bank_info)


def _run_bank_create(args: argparse.Namespace) -> int:
    from ..sbi_simulator import make_simulator
    from ..store import SimulationBank

    old = _existing_bank(args.path)
    if old is not None and not args.force:
        raise UsageError(f"{args.path} already holds a bank ({old}): run 'glsbi bank fill {args.path}' to complete "
                         f"it, choose another path, or pass --force to delete it and create a new one")
    bounds = _parse_bounds(args.bound, args.names, "--names")
    sim = make_simulator(args.names, config=_config(args), bounds=bounds, observation=_observation(args))
    if old is not None:  # every option checked: only now is the old bank deleted, and it is said so
        print(f"--force: deleting the bank at {args.path} ({old})")
    bank = SimulationBank.create(args.path, sim, args.n, chunk_size=args.chunk_size, seed=args.seed,
                                 batch_size=args.batch_size, overwrite=args.force)
    print(f"created {bank.path}: {bank.n} samples in {bank.n_chunks} chunks of {bank.chunk_size}, "
          f"seed {bank.seed}, config {bank.config_hash[:12]}")
    return 0


def _existing_bank(path: Path) -> str | None:
    """What the bank at ``path`` holds, in words, or ``None`` if there is no readable bank there (the
    library decides about other contents: an empty or half-created directory, a non-bank path)."""
    if not path.is_dir():
        return None
    from ..store import SimulationBank

    try:
        bank = SimulationBank.open(path, read_only=True)
    except (ValueError, OSError):
        return None
    return (f"{bank.n_filled} of {bank.n} samples simulated, {len(bank.filled_chunks())}/{bank.n_chunks} chunks, "
            f"config {bank.config_hash[:12]}")


def _parse_bounds(given: list[list[str]], names: Sequence[str], where: str) -> dict[str, tuple[float, float]]:
    """``--bound NAME LOW HIGH`` options as ``{name: (low, high)}``; names must be among ``names``
    (``where`` says where they come from, for the message)."""
    bounds = {}
    for name, lo, hi in given:
        try:
            bounds[name] = (float(lo), float(hi))
        except ValueError:
            raise UsageError(f"--bound {name} {lo} {hi}: LOW and HIGH must be numbers") from None
    unknown = sorted(set(bounds) - set(names))
    if unknown:
        raise UsageError(f"--bound given for {unknown}, which are not in {where} {list(names)}")
    return bounds


def _run_bank_fill(args: argparse.Namespace) -> int:
    from .._threads import usable_cores
    from ..store import SimulationBank

    if args.scheduler == "local" and args.workers > usable_cores():
        raise UsageError(f"--workers {args.workers}: this machine lets glsbi use {usable_cores()} cores; a local "
                         f"cluster of more workers than cores only competes for them (and for memory, about 1 GB "
                         f"each); use --workers {usable_cores()} or fewer, or a remote scheduler tcp://HOST:PORT")

    bank = SimulationBank.open(args.path)
    report = bank.fill(args.n, batch_size=args.batch_size, progress=not args.no_progress,
                       scheduler=args.scheduler, repair=args.repair, n_workers=args.workers)
    rep = f", {len(report.repaired)} repaired" if report.repaired else ""
    print(f"simulated {len(report.simulated)} chunks ({report.n_simulations} simulations{rep}) in "
          f"{report.seconds:.1f} s ({report.sims_per_second:.2f} sims/s); "
          f"{len(bank.filled_chunks())}/{bank.n_chunks} chunks filled")
    return 0


def _run_bank_info(args: argparse.Namespace) -> int:
    from ..store import SimulationBank

    bank = SimulationBank.open(args.path, read_only=True)
    info = bank.info()
    report = None if args.no_verify else bank.verify()
    if report is not None:
        info["verify"] = {"ok": report.ok, "corrupt": {str(k): v for k, v in report.corrupt.items()},
                          "stray_files": report.stray_files, "summary": report.summary()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if report is None or report.ok else 1
    cfg = info["simulator"]["config"]
    bounds = ", ".join(f"{n} ∈ [{lo:g}, {hi:g}]" for n, lo, hi in zip(info["names"], info["low"], info["high"],
                                                                       strict=True))
    print(f"bank      {info['path']}")
    print(f"filled    {info['chunks_filled']}/{info['chunks_total']} chunks, "
          f"{info['samples_filled']}/{info['n']} samples (chunk size {info['chunk_size']})")
    print(f"prior     {bounds}")
    print(f"x         {tuple(info['x_shape'])} channels {info['simulator']['channels']}")
    if info["simulator"].get("observation"):
        settings = {k: v for k, v in info["simulator"]["observation"].items() if k != "name"}
        print(f"observed  {info['simulator']['observation']['name']} {json.dumps(settings, sort_keys=True)}")
    print(f"config    {json.dumps(cfg, sort_keys=True)}")
    print(f"hash      {info['config_hash']}")
    print(f"seed      {info['seed']}  batch size {info['batch_size']}  glsbi {info['package_version']}")
    if report is not None:
        print(f"verify    {'ok' if report.ok else 'CORRUPT'}: {report.summary()}")
        if not report.ok:
            print(f"          repair with: glsbi bank fill {args.path} --repair")
    return 0 if report is None or report.ok else 1


# -- glsbi quickstart -----------------------------------------------------------------------
@command("quickstart", help="the main job: simulate a bank, train NRE, infer, check coverage, plot")
def _quickstart_parser(p: argparse.ArgumentParser) -> None:
    d = QUICKSTART_DEFAULTS
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"),
                   help="output directory: bank.zarr, estimator.pt, posterior.png, inference_result.png, "
                        "summary.json, calibration figures (default runs/quickstart)")
    p.add_argument("--size", type=_int_at_least(8), default=None, help=f"grid side in sites (default {d['size']})")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--t-final", type=_float_above(0), default=None,
                      help=f"snapshot time of the quench (default {d['t_final']:g}: {d['steps']} {d['scheme']} "
                           f"steps of dt {d['dt']})")
    when.add_argument("--steps", type=_int_at_least(1), default=None, help="time steps instead of --t-final")
    p.add_argument("--bound", nargs=3, action="append", default=[], metavar=("NAME", "LOW", "HIGH"),
                   help="prior bounds of eta or field (repeatable; default " + ", ".join(
                       f"{n} {lo:g} {hi:g}" for n, (lo, hi) in zip(d["names"], d["bounds"], strict=True)) + ")")
    p.add_argument("--num-simulations", type=_int_at_least(MIN_SIMULATIONS), default=None,
                   help=f"training bank size, at least {MIN_SIMULATIONS} (default {d['num_simulations']})")
    p.add_argument("--num-heldout", type=_int_at_least(0), default=None,
                   help=f"held-out simulations (another seed) for the calibration report; 0: no report (default "
                        f"{d['num_heldout']})")
    p.add_argument("--num-recalibration", type=_int_at_least(0), default=None,
                   help=f"simulations of a third seed on which the posterior's marginals are recalibrated before "
                        f"the held-out check; 0: no recalibration, else at least 50 (default {d['num_recalibration']})")
    p.add_argument("--chunk-size", type=_int_at_least(1), default=None,
                   help=f"samples per bank chunk (default {d['chunk_size']})")
    p.add_argument("--method", choices=("NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE"), default=None,
                   help=f"sbi method (default {d['method']})")
    p.add_argument("--max-epochs", type=_int_at_least(1), default=None,
                   help=f"training epochs at most; it stops earlier when the validation loss stalls (default "
                        f"{d['max_epochs']})")
    p.add_argument("--patience", type=_int_at_least(1), default=None,
                   help=f"stop after this many epochs without validation improvement (default {d['patience']})")
    p.add_argument("--members", type=_int_at_least(1), default=None,
                   help=f"ensemble members trained from seeds seed, seed+1, ... and pooled in the posterior "
                        f"(default {d['members']})")
    p.add_argument("--combine", choices=("log-mean", "mixture"), default=None,
                   help=f"how members are pooled: their log densities averaged, or mixed (default {d['combine']})")
    p.add_argument("--theta", type=_finite_float, nargs=2, default=None, metavar=("ETA", "FIELD"),
                   help=f"true (eta, field) of the demonstration observation, inside the prior (default "
                        f"{d['theta_true']})")
    p.add_argument("--seed", type=_int_at_least(0), default=None, help=f"bank and torch seed (default {d['seed']})")
    p.add_argument("--observation", choices=("ideal", "stm", "squid", "decoration"), default="stm",
                   help="what the images show: an instrument (default stm: conductance maps of the weak band), or "
                        "the ideal densities rho1 rho2")
    p.add_argument("--instrument", nargs="+", default=[], metavar="KEY=VALUE",
                   help="instrument settings (see 'glsbi simulate --help'); LOW:HIGH draws one per simulation")
    p.set_defaults(channels=["rho1", "rho2"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_quickstart)


def _quickstart_settings(args: argparse.Namespace):  # noqa: ANN202 - QuickstartSettings, imported lazily
    """The settings of ``glsbi quickstart``'s options, checked before any work: options not given take
    :class:`QuickstartSettings`' defaults."""
    from .quickstart import NAMES, QuickstartSettings

    defaults = QuickstartSettings()
    bounds = dict(zip(NAMES, defaults.bounds, strict=True))
    bounds.update(_parse_bounds(args.bound, NAMES, "the quickstart's parameters"))
    for name, (lo, hi) in bounds.items():
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise UsageError(f"--bound {name} {lo:g} {hi:g}: need finite LOW < HIGH")
    theta = defaults.theta_true if args.theta is None else tuple(args.theta)
    outside = [f"{n} = {t:g} not in [{bounds[n][0]:g}, {bounds[n][1]:g}]" for n, t in zip(NAMES, theta, strict=True)
               if not bounds[n][0] <= t <= bounds[n][1]]
    if outside:
        raise UsageError(f"--theta {theta[0]:g} {theta[1]:g} lies outside the prior ({'; '.join(outside)}); the "
                         "demonstration observation must be one the estimator can have seen")
    given = {k: getattr(args, k) for k in ("size", "t_final", "steps", "num_simulations", "num_heldout",
                                           "num_recalibration", "chunk_size", "method", "max_epochs", "patience",
                                           "members", "combine", "seed")
             if getattr(args, k) is not None}
    return QuickstartSettings(**given, bounds=tuple(bounds[n] for n in NAMES), theta_true=theta,
                              observation=_observation(args))


def _run_quickstart(args: argparse.Namespace) -> int:
    _check_output_dir(args.out)
    settings = _quickstart_settings(args)
    settings.simulator_config()  # the forward model's numerics, refused now if bad, not after the bank

    from .quickstart import run_quickstart

    summary = run_quickstart(args.out, settings, progress=not args.no_progress)
    names = summary["names"]
    print(f"{settings.method}: {summary['epochs_trained']} epochs, best validation loss "
          f"{summary['best_validation_loss']:.4f}")
    for k, name in enumerate(names):
        lo, hi = summary["credible_interval_90"][k]
        print(f"  {name}: true {summary['theta_true'][k]:.4f}, MAP {summary['theta_map'][k]:.4f}, "
              f"90% interval [{lo:.4f}, {hi:.4f}], test coverage of 90% intervals "
              f"{summary['test_coverage_90'][k]:.2f} (n = {summary['num_test']})")
    t = summary["timings"]
    print(f"  simulate {t['simulate_s']:.1f} s, train {t['train_s']:.1f} s, infer {t['infer_s'] * 1e3:.0f} ms; "
          f"{args.thread_plan.describe() if getattr(args, 'thread_plan', None) else ''}")
    recal = summary.get("recalibration")
    if recal:
        bank = summary["recalibration_bank"]
        print(f"  recalibrated on {bank['simulations']} simulations of seed {bank['seed']} "
              f"({args.out / 'recalibration.json'}):")
        from ..inference import MarginalRecalibration  # torch is loaded by now

        for line in MarginalRecalibration.from_dict(recal).describe():
            print(f"    {line}")
    if summary.get("calibration"):
        cal = summary["calibration"]["summary"]
        ks = ", ".join(f"{p:.2g}" for p in cal["ks_pvalues"])
        hpd = cal.get("coverage_90", {}).get("hpd")
        which = "recalibrated posterior" if recal else "posterior"
        print(f"  calibration of the {which} on {summary['num_test']} held-out simulations of seed "
              f"{summary['heldout']['seed']} ({t['calibrate_s']:.1f} s): SBC KS p = {ks}; joint 90% HPD coverage "
              f"{'n/a' if hpd is None else f'{hpd:.2f}'}; TARP ATC {cal['tarp_atc']:+.3f}; figures "
              f"{args.out / 'sbc_ranks.png'}, {args.out / 'coverage.png'}, {args.out / 'tarp.png'}")
        for line in summary.get("calibration_verdicts") or []:
            print(f"  verdict: {line}")
        for line in summary.get("calibration_verdicts_unrecalibrated") or []:
            print(f"  without recalibration: {line}")
        for line in cal.get("conditional_verdicts") or []:
            print(f"  given x: {line}")
    print(f"wrote {args.out / 'posterior.png'} (also {args.out / 'inference_result.png'}), "
          f"{args.out / 'summary.json'} and {args.out / 'estimator.pt'}")
    return 0


# -- glsbi train, glsbi calibrate, glsbi infer (their handlers live in their own modules) ----------
@command("train", help="train an estimator (or an ensemble) on a bank with the main job's recipe")
def _train_parser(p: argparse.ArgumentParser) -> None:
    from ._train_cmd import configure_train

    configure_train(p)
    p.set_defaults(func=_handler("_train_cmd", "run_train"))


@command("calibrate", help="calibration report (SBC, coverage, TARP) of estimators on a held-out bank")
def _calibrate_parser(p: argparse.ArgumentParser) -> None:
    from ._train_cmd import configure_calibrate

    configure_calibrate(p)
    p.set_defaults(func=_handler("_train_cmd", "run_calibrate"))


@command("infer", help="posterior of one image file, with a misspecification check and a predictive check")
def _infer_parser(p: argparse.ArgumentParser) -> None:
    from ._infer_cmd import configure

    configure(p)
    p.set_defaults(func=_handler("_infer_cmd", "run"))


def _handler(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``name`` of ``glsbi_plugin.apps.<module>``, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        from importlib import import_module

        return getattr(import_module(f".{module}", __package__), name)(args)

    return run


# -- glsbi demo -----------------------------------------------------------------------------
@command("demo", help="interactive virtual lab: sliders for η and B, live vortex images, optional posterior")
def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_int_at_least(8), default=None,
                   help="grid side in sites (default 48; with --posterior: the posterior's, and only that)")
    p.add_argument("--steps", type=_int_at_least(1), default=None,
                   help="time steps of the default scheme (default: presets.small_forward_model, SK-ROCK to t = 80; "
                        "with --posterior: the posterior's)")
    p.add_argument("--posterior", type=Path, default=None, metavar="PATH",
                   help="trained estimator, e.g. runs/quickstart/estimator.pt from 'glsbi quickstart': adds the "
                        "panel p(η, B | image) with the true θ marked")
    p.add_argument("--resolution", type=_int_at_least(2), default=100,
                   help="posterior grid cells per axis (default 100)")
    p.add_argument("--save", type=Path, default=None, metavar="PNG",
                   help="render one frame to this image and exit (no window; works headless)")
    p.add_argument("--eta", type=float, default=None, help="initial η (default: the middle of the prior)")
    p.add_argument("--field", type=float, default=None, help="initial B (default: the middle of the prior)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="initial seed (default 0)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import matplotlib

    from .demo import DemoFigure, DemoModel, describe_frame

    if args.save is not None and not args.save.parent.is_dir():
        raise UsageError(f"cannot write {args.save}: directory {args.save.parent} does not exist")
    if args.posterior is not None:
        if not args.posterior.is_file():
            raise UsageError(f"--posterior {args.posterior}: no such file (glsbi quickstart writes estimator.pt)")
        import torch

        # one image at a time is latency-bound: more torch threads only add synchronisation (and
        # contend with XLA's), which made a 6 ms evaluation take 20-400 ms on a busy 2-core machine
        torch.set_num_threads(1)
        model = _demo_from_checkpoint(DemoModel, args.posterior, args.resolution)
        cfg = model.config
        for flag, given, own in (("--size", args.size, cfg.shape[0]), ("--steps", args.steps, cfg.steps)):
            if given is not None and given != own:
                raise UsageError(f"{flag} {given}: the posterior was trained on {flag} {own}; omit {flag}")
    else:
        from ..physics import presets

        changes = {k: v for k, v in (("size", args.size), ("steps", args.steps)) if v is not None}
        model = DemoModel(presets.small_forward_model(**changes))
    if args.save is not None:
        demo = DemoFigure(model, eta=args.eta, field=args.field, seed=args.seed)  # an Agg figure
        demo.figure.savefig(args.save, dpi=100)
        print(f"wrote {args.save}\n{describe_frame(demo.frame, model.config)}")
        return 0
    import matplotlib.pyplot as plt

    if not _interactive_backend(matplotlib.get_backend()):
        raise UsageError(f"matplotlib backend {matplotlib.get_backend()!r} cannot open a window (no display?); "
                         "use --save PNG, or set MPLBACKEND to an interactive backend")
    fig = plt.figure(figsize=DemoFigure.figsize(model))
    demo = DemoFigure(model, eta=args.eta, field=args.field, seed=args.seed, figure=fig)
    plt.show()
    del demo  # the widgets live as long as the window
    return 0


def _demo_from_checkpoint(demo_model: type, path: Path, resolution: int):  # noqa: ANN202 - a DemoModel
    """``DemoModel.from_checkpoint``, with whatever a damaged or foreign file raises as one usage error."""
    import pickle
    import zipfile

    try:
        return demo_model.from_checkpoint(path, resolution=resolution)
    except (ValueError, OSError):  # the library's own messages (not a checkpoint, wrong θ, unreadable)
        raise
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile) as e:
        raise UsageError(f"--posterior {path}: not a usable glsbi estimator checkpoint ({type(e).__name__}: {e}); "
                         "'glsbi quickstart' writes one as estimator.pt") from None


def _interactive_backend(name: str) -> bool:
    """Whether matplotlib backend ``name`` opens windows (Agg, PDF, SVG, ... do not)."""
    try:
        from matplotlib.backends import BackendFilter, backend_registry
    except ImportError:  # matplotlib < 3.9
        from matplotlib.rcsetup import non_interactive_bk as non_interactive
    else:
        non_interactive = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    return name.lower() not in {b.lower() for b in non_interactive}


# -- entry point ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``glsbi`` parser with every registered subcommand."""
    from .. import __version__

    parser = _Parser(prog="glsbi", description="Simulation-based inference of two-component Ginzburg-Landau "
                     "couplings from vortex images.")
    parser.add_argument("--version", action="version", version=f"glsbi {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    threads = ("threads for torch and XLA's CPU devices (default: the free cores, i.e. the usable cores less the "
               "load average, at least 1; or $GLSBI_THREADS); fix it for results reproducible to the bit")
    parser.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N", help=threads)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (help_text, configure) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        configure(p)
        # also after the subcommand (glsbi quickstart --threads 1); SUPPRESS keeps a global --threads
        p.add_argument("--threads", type=_int_at_least(1), default=argparse.SUPPRESS, metavar="N", help=threads)
    return parser


def _all_parsers_help() -> list[str]:
    """The help text of ``glsbi`` and of every (sub)command: what ``--help`` prints, without exiting."""
    texts, todo = [], [build_parser()]
    while todo:
        p = todo.pop()
        texts.append(p.format_help())
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return texts


def _persistent_compilation_cache() -> None:
    """Let repeated ``glsbi`` runs reuse compiled XLA programs (a few seconds each).

    ``$JAX_COMPILATION_CACHE_DIR`` if set (JAX reads it itself), else ``$XDG_CACHE_HOME/glsbi/jax``
    (``~/.cache/glsbi/jax``). Only the command line does this; the library leaves JAX's config alone.
    """
    import os

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    jax.config.update("jax_compilation_cache_dir", str(base / "glsbi" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _prepare_process(requested: int | None):  # noqa: ANN202 - a ThreadPlan
    """Thread counts and JAX's platform, set before any handler imports torch or jax."""
    from .. import _threads

    plan = _threads.choose_threads(requested)
    _threads.configure_xla(plan)
    _threads.configure_torch(plan)
    _threads.cpu_only_platform()
    logging.getLogger(__name__).info("threads: %s", plan.describe())
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glsbi``; returns the exit code (0 ok, 1 a failed check, 2 a usage error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argument errors
        return e.code if isinstance(e.code, int) else 0
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.thread_plan = _prepare_process(args.threads)
        _persistent_compilation_cache()
        return int(args.func(args) or 0)
    except (UsageError, ValueError, OSError) as e:
        print(f"glsbi: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt as e:  # a fill's FillInterrupted says how to resume
        detail = " ".join(str(e).split())
        print(f"glsbi: interrupted{': ' + detail if detail else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
