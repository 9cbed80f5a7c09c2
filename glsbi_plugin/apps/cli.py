"""The ``glsbi`` command line: ``glsbi simulate``, ``glsbi bank create|fill|info``, ``glsbi quickstart``,
``glsbi demo``.

Adding a subcommand: write a function that configures an ``argparse`` sub-parser and sets
``func`` (called with the parsed namespace, returning an exit code), and register it::

    @command("train", help="train a neural posterior on a bank")
    def _train(p: argparse.ArgumentParser) -> None:
        p.add_argument("bank", help="...")
        p.set_defaults(func=_run_train)

Commands appear in ``glsbi --help`` in registration order. User mistakes (bad values, a path that
is not a bank, a config mismatch) raise :class:`UsageError`, ``ValueError`` or ``OSError``; ``main``
prints them as one line ``glsbi: error: ...`` and returns 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
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


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from ..physics import presets

    d = presets.forward_model()
    (s_stages, s_dt), (_, e_dt) = presets.SCHEME_STEPS["skrock"], presets.SCHEME_STEPS["euler"]
    g = p.add_argument_group("forward model (presets.forward_model)")
    g.add_argument("--size", type=_int_at_least(4), default=d.shape[0],
                   help=f"grid side in sites (default {d.shape[0]})")
    g.add_argument("--steps", type=_int_at_least(0), default=None,
                   help=f"time steps (default: t = {presets.T_FINAL:g}, i.e. {d.steps} for skrock at dt {d.dt})")
    g.add_argument("--h", type=float, default=d.h, help=f"lattice spacing (default {d.h})")
    g.add_argument("--scheme", choices=tuple(presets.SCHEME_STEPS), default=d.scheme,
                   help=f"time stepper (default {d.scheme}); euler is Euler-Maruyama, one force per step")
    g.add_argument("--stages", type=_int_at_least(1), default=None,
                   help=f"SK-ROCK stages (default {s_stages}; euler: 1)")
    g.add_argument("--dt", type=float, default=None,
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

    return presets.forward_model(args.size, steps=args.steps, scheme=args.scheme, stages=args.stages, dt=args.dt,
                                 h=args.h)


# -- glsbi simulate -------------------------------------------------------------------------
@command("simulate", help="simulate one vortex image and save it with the vortices marked")
def _simulate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eta", type=float, default=0.2, help="Josephson coupling η, any physical value (default 0.2)")
    p.add_argument("--field", type=float, default=0.08, help="mean induction B (default 0.08)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("vortices.png"), help="output image (default vortices.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from ..physics import check_params, forward_in_segments, presets, vortex_positions

    cfg = _config(args)
    observation = _observation(args)
    observation.check(cfg)
    params = presets.type15(eta=args.eta, field=args.field)
    check_params(params, cfg)
    if not args.out.parent.is_dir():
        raise UsageError(f"cannot write {args.out}: directory {args.out.parent} does not exist")
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
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, ch, img in zip(axes[0], names, image, strict=True):
        ax.imshow(img.T, origin="lower", extent=extent, cmap="viridis")
        comps = [int(ch[-1]) - 1] if ch[-1] in "12" else list(range(cfg.components))
        for a, marker in zip(comps, ("o", "s"), strict=False):
            v = vortices[a][inside[a]]
            ax.scatter(v[:, 0], v[:, 1], s=30, marker=marker, facecolors="none", edgecolors="w", linewidths=1.2,
                       label=f"vortices ψ{a + 1} ({len(v)})")
        ax.set_title(ch)
        ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"η = {args.eta:g}, B = {args.field:g}, t = {cfg.t_final:g}, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    counts = ", ".join(f"{int(abs(v[:, 2]).sum())} in ψ{a + 1}" for a, v in enumerate(vortices))
    print(f"wrote {args.out}: vortex windings {counts}")
    return 0


# -- glsbi bank ... -------------------------------------------------------------------------
@command("bank", help="create, fill and inspect simulation banks (Zarr)")
def _bank_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bank_command", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create an empty bank", description="Create an empty simulation bank.")
    c.add_argument("path", type=Path, help="bank directory (a Zarr store; must not exist)")
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
    f.add_argument("--workers", type=_int_at_least(1), default=2, help="workers of --scheduler local (default 2)")
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

    bounds = _parse_bounds(args.bound, args.names, "--names")
    sim = make_simulator(args.names, config=_config(args), bounds=bounds, observation=_observation(args))
    bank = SimulationBank.create(args.path, sim, args.n, chunk_size=args.chunk_size, seed=args.seed,
                                 batch_size=args.batch_size)
    print(f"created {bank.path}: {bank.n} samples in {bank.n_chunks} chunks of {bank.chunk_size}, "
          f"seed {bank.seed}, config {bank.config_hash[:12]}")
    return 0


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
    from ..store import SimulationBank

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
    from .quickstart import NAMES, QuickstartSettings

    d = QuickstartSettings()
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"),
                   help="output directory: bank.zarr, estimator.pt, posterior.png, summary.json "
                        "(default runs/quickstart)")
    p.add_argument("--size", type=_int_at_least(8), default=d.size, help=f"grid side in sites (default {d.size})")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--t-final", type=float, default=None,
                      help=f"snapshot time of the quench (default {d.simulator_config().t_final:g}: "
                           f"{d.simulator_config().steps} {d.simulator_config().scheme} steps of dt "
                           f"{d.simulator_config().dt})")
    when.add_argument("--steps", type=_int_at_least(1), default=None, help="time steps instead of --t-final")
    p.add_argument("--bound", nargs=3, action="append", default=[], metavar=("NAME", "LOW", "HIGH"),
                   help="prior bounds of eta or field (repeatable; default " + ", ".join(
                       f"{n} {lo:g} {hi:g}" for n, (lo, hi) in zip(NAMES, d.bounds, strict=True)) + ")")
    p.add_argument("--num-simulations", type=_int_at_least(10), default=d.num_simulations,
                   help=f"bank size (default {d.num_simulations})")
    p.add_argument("--chunk-size", type=_int_at_least(1), default=d.chunk_size,
                   help=f"samples per bank chunk (default {d.chunk_size})")
    p.add_argument("--method", choices=("NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE"), default=d.method,
                   help=f"sbi method (default {d.method})")
    p.add_argument("--max-epochs", type=_int_at_least(1), default=d.max_epochs,
                   help=f"training epochs at most (default {d.max_epochs})")
    p.add_argument("--theta", type=float, nargs=2, default=list(d.theta_true), metavar=("ETA", "FIELD"),
                   help=f"true (eta, field) of the demonstration observation (default {d.theta_true})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"bank and torch seed (default {d.seed})")
    p.add_argument("--threads", type=_int_at_least(1), default=None,
                   help="torch threads (default: the number of CPUs, at most 4)")
    p.add_argument("--observation", choices=("ideal", "stm", "squid", "decoration"), default="stm",
                   help="what the images show: an instrument (default stm: conductance maps of the weak band), or "
                        "the ideal densities rho1 rho2")
    p.add_argument("--instrument", nargs="+", default=[], metavar="KEY=VALUE",
                   help="instrument settings (see 'glsbi simulate --help'); LOW:HIGH draws one per simulation")
    p.set_defaults(channels=["rho1", "rho2"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    import os

    import torch

    from .quickstart import NAMES, QuickstartSettings, run_quickstart

    torch.set_num_threads(args.threads or min(os.cpu_count() or 1, 4))
    bounds = dict(zip(NAMES, QuickstartSettings().bounds, strict=True))
    bounds.update(_parse_bounds(args.bound, NAMES, "the quickstart's parameters"))
    settings = QuickstartSettings(
        size=args.size, t_final=args.t_final, steps=args.steps, bounds=tuple(bounds[n] for n in NAMES),
        num_simulations=args.num_simulations, chunk_size=args.chunk_size,
        method=args.method, max_epochs=args.max_epochs, theta_true=tuple(args.theta), seed=args.seed,
        observation=_observation(args),
    )
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
    print(f"  simulate {t['simulate_s']:.1f} s, train {t['train_s']:.1f} s, infer {t['infer_s'] * 1e3:.0f} ms")
    if summary.get("calibration"):
        cal = summary["calibration"]["summary"]
        ks = ", ".join(f"{p:.2g}" for p in cal["ks_pvalues"])
        hpd = cal.get("coverage_90", {}).get("hpd")
        print(f"  calibration ({t['calibrate_s']:.1f} s): SBC KS p = {ks}; joint 90% HPD coverage "
              f"{'n/a' if hpd is None else f'{hpd:.2f}'}; TARP ATC {cal['tarp_atc']:+.3f}; figures "
              f"{args.out / 'sbc_ranks.png'}, {args.out / 'coverage.png'}, {args.out / 'tarp.png'}")
    print(f"wrote {args.out / 'posterior.png'}, {args.out / 'summary.json'} and {args.out / 'estimator.pt'}")
    return 0


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
        model = DemoModel.from_checkpoint(args.posterior, resolution=args.resolution)
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, (help_text, configure) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + "."))
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glsbi``; returns the exit code (0 ok, 1 a failed check, 2 a usage error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argument errors
        return e.code if isinstance(e.code, int) else 0
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _persistent_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, OSError) as e:
        print(f"glsbi: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glsbi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
