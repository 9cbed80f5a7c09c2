"""``glsbi train`` and ``glsbi calibrate``: the two reports the library is used for, from a bank.

``glsbi train BANK --out estimator.pt`` trains an estimator (or ``--ensemble K`` of them) on a
bank's simulations with the main job's recipe (torus-symmetry augmentation, early stopping) and
writes checkpoints (:mod:`glsbi_plugin.checkpoint`): ``estimator.pt`` and, for an ensemble,
``estimator_1.pt`` … ``estimator_{K-1}.pt`` beside it. ``glsbi calibrate BANK estimator.pt
[estimator_1.pt ...] --out report/`` mixes the given estimators in one grid posterior and writes its
calibration report on the bank's simulations (which must not have been used in training: a bank
of another seed) as ``report.md``, ``report.json`` and the figures.

Heavy imports (torch, sbi, jax) happen inside the handlers, so ``glsbi --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .cli import _int_at_least

__all__ = ["configure_calibrate", "configure_train", "run_calibrate", "run_train"]

METHODS = ("NRE_A", "NRE_B", "NRE_C", "BNRE", "NPE")


def _add_observation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--observation", choices=("stored", "ideal", "stm", "squid", "decoration"), default="stored",
                   help="images to train on: 'stored' (default) the bank's own; from a bank of the fields "
                        "(rho1 rho2 bz) any instrument's images can be derived")
    p.add_argument("--instrument", nargs="+", default=[], metavar="KEY=VALUE",
                   help="instrument settings (see 'glsbi simulate --help'); LOW:HIGH draws one per simulation")
    p.set_defaults(channels=["rho1", "rho2"])


def _observation(args: argparse.Namespace) -> Any:
    if args.observation == "stored":
        if args.instrument:
            raise ValueError("--instrument settings need --observation stm, squid or decoration")
        return None
    from .cli import _observation as parse

    return parse(args)


def _with_observation(simulator: Any, observation: Any) -> Any:
    """The bank's simulator observing ``observation`` instead (what the checkpoint must record)."""
    if observation is None:
        return simulator
    from ..physics import Observation

    if isinstance(observation, Observation):
        return dataclasses.replace(simulator, channels=observation.channels, measurement=observation.measurement,
                                   instrument=None)
    return dataclasses.replace(simulator, instrument=observation)


def _open_bank(path: Path) -> Any:
    from ..store import SimulationBank

    if not path.exists():
        raise ValueError(f"{path}: no such bank (create one with 'glsbi bank create')")
    return SimulationBank.open(path, read_only=True)


# -- glsbi train ----------------------------------------------------------------------------------
def configure_train(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glsbi train``."""
    p.add_argument("bank", type=Path, help="a filled simulation bank (glsbi bank create/fill, or a main job's)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="checkpoint to write, e.g. estimator.pt (ensemble members: estimator_1.pt, ... beside it)")
    p.add_argument("--method", choices=METHODS, default="NRE_C", help="sbi method (default NRE_C)")
    p.add_argument("--ensemble", type=_int_at_least(1), default=1, metavar="K",
                   help="train K estimators from seeds seed, seed+1, ... (default 1)")
    p.add_argument("--split", choices=("all", "train"), default="all",
                   help="bank rows to train on: all (default; keep a bank of another seed for calibration) or "
                        "the bank's train+validation split (its test split stays unseen)")
    p.add_argument("--max-epochs", type=_int_at_least(1), default=100, help="epochs at most (default 100)")
    p.add_argument("--patience", type=_int_at_least(1), default=15,
                   help="stop after this many epochs without validation improvement (default 15)")
    p.add_argument("--no-augment", action="store_true",
                   help="no torus-symmetry augmentation (shifts, rotations, reflections) while training")
    p.add_argument("--seed", type=int, default=0, help="torch seed of member 0 (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_observation_flags(p)


def run_train(args: argparse.Namespace) -> int:
    """Train and save; print one line per member and where the checkpoints are."""
    from ..checkpoint import ensemble_paths, save_estimator
    from ..embeddings import EmbeddingConfig
    from ..inference import train_ensemble
    from .quickstart import _EpochBar

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file name such as {args.out / 'estimator.pt'}")
    if not args.out.parent.is_dir():
        raise ValueError(f"--out {args.out}: directory {args.out.parent} does not exist")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    bank = _open_bank(args.bank)
    observation = _observation(args)
    simulator = _with_observation(bank.simulator, observation)
    if args.split == "train":
        theta, x = bank.to_torch("train", observation=observation)
        theta_v, x_v = bank.to_torch("validation", observation=observation)
        import torch

        theta, x = torch.cat([theta, theta_v]), torch.cat([x, x_v])
    else:
        theta, x = bank.to_torch(observation=observation)
    if len(theta) < 20:
        raise ValueError(f"{args.bank} holds {len(theta)} filled simulations in split {args.split!r}; "
                         "at least 20 are needed to train (sbi holds out 10 % for early stopping)")
    embedding = EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True,
                                symmetry="none" if args.no_augment else "torus")
    print(f"training {args.ensemble} x {args.method} on {len(theta)} simulations, images {tuple(x.shape[1:])}",
          flush=True)
    bar = None if args.no_progress else _EpochBar(args.max_epochs, args.ensemble)
    t0 = time.perf_counter()
    try:
        members = train_ensemble(args.method, simulator.prior(), theta, x, members=args.ensemble, seed=args.seed,
                                 embedding=embedding, x_shape=simulator.x_shape, max_epochs=args.max_epochs,
                                 stop_after_epochs=args.patience, progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    paths = ensemble_paths(args.out, args.ensemble)
    for k, (estimator, path) in enumerate(zip(members, paths, strict=True)):
        save_estimator(path, estimator, method=args.method, simulator=simulator, embedding=embedding)
        print(f"  member {k}: {estimator._glsbi_epochs_trained} epochs, best validation loss "
              f"{estimator._glsbi_best_validation_loss:.4f} -> {path}")
    print(f"trained in {seconds:.0f} s; calibrate with: glsbi calibrate HELD_OUT_BANK "
          f"{' '.join(str(p) for p in paths)} --out report/")
    return 0


# -- glsbi calibrate ------------------------------------------------------------------------------
def configure_calibrate(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glsbi calibrate``."""
    p.add_argument("bank", type=Path, help="held-out bank: simulations never used in training (another seed)")
    p.add_argument("estimators", type=Path, nargs="+", metavar="ESTIMATOR",
                   help="checkpoints from glsbi train or glsbi quickstart; several are mixed as an ensemble")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory (created)")
    p.add_argument("--split", choices=("all", "test"), default="all",
                   help="bank rows to check: all (default) or the bank's test split")
    p.add_argument("--num-posterior-samples", type=_int_at_least(1), default=1000,
                   help="posterior draws per observation for SBC and TARP (default 1000)")
    p.add_argument("--resolution", type=_int_at_least(1), default=100, help="grid cells per axis (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the report's random draws (default 0)")
    recal = p.add_mutually_exclusive_group()
    recal.add_argument("--recalibrate", type=Path, default=None, metavar="BANK",
                       help="first recalibrate the posterior's marginals on this bank (simulations of a seed used "
                            "neither in training nor in BANK; at least 50); writes recalibration.json to --out")
    recal.add_argument("--recalibration", type=Path, default=None, metavar="FILE",
                       help="apply this recalibration.json (from glsbi quickstart or --recalibrate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pairs(path: Path, sim: Any, split: str | None) -> tuple[Any, Any]:
    """θ and the estimator's images of the bank at ``path`` (derived if the bank stores fields), checked
    against the estimator's image shape and prior box."""
    import torch

    bank = _open_bank(path)
    observation = None if bank.simulator.observation == sim.observation else sim.observation
    theta, x = bank.to_torch(split, observation=observation)
    if tuple(x.shape[1:]) != tuple(sim.x_shape):
        raise ValueError(f"{path} holds images of shape {tuple(x.shape[1:])}; the estimator expects "
                         f"{tuple(sim.x_shape)} (another grid or observation)")
    if len(theta) < 2:
        raise ValueError(f"{path} holds {len(theta)} filled simulations in split {split or 'all'!r}; need >= 2")
    low, high = (torch.tensor(v) for v in (sim.low, sim.high))
    if bool(((theta < low) | (theta > high)).any()):
        raise ValueError(f"{path}'s θ leave the estimator's prior box {list(zip(sim.low, sim.high, strict=True))}")
    return theta, x


def run_calibrate(args: argparse.Namespace) -> int:
    """Write ``report.md``, ``report.json`` and the figures; print the verdicts."""
    from ..checkpoint import RECALIBRATION_FILE, file_sha256, load_estimator
    from ..diagnostics import calibration_report
    from ..inference import MIN_RECALIBRATION_PAIRS, GridPosterior, MarginalRecalibration, fit_recalibration

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a directory for the report")
    for path in args.estimators:
        if not path.is_file():
            raise ValueError(f"{path}: no such estimator file (glsbi train or glsbi quickstart writes them)")
    ckpts = [load_estimator(path) for path in args.estimators]
    first = ckpts[0].simulator.describe()
    for path, ckpt in zip(args.estimators[1:], ckpts[1:], strict=True):
        if ckpt.simulator.describe() != first:
            raise ValueError(f"{path} was trained on another forward model or observation than {args.estimators[0]}")
    sim = ckpts[0].simulator
    theta, x = _pairs(args.bank, sim, None if args.split == "all" else "test")
    raw = GridPosterior([c.estimator for c in ckpts], ckpts[0].prior, resolution=args.resolution)
    recalibration = None
    if args.recalibrate is not None:
        if args.recalibrate.resolve() == args.bank.resolve():
            raise ValueError(f"--recalibrate {args.recalibrate} is the bank being checked: recalibrate on simulations "
                             "of another seed, or the check proves nothing")
        theta_cal, x_cal = _pairs(args.recalibrate, sim, None)
        if len(theta_cal) < MIN_RECALIBRATION_PAIRS:
            raise ValueError(f"--recalibrate {args.recalibrate} holds {len(theta_cal)} filled simulations; "
                             f"need >= {MIN_RECALIBRATION_PAIRS}")
        print(f"recalibrating on {len(theta_cal)} simulations of {args.recalibrate}", flush=True)
        recalibration = fit_recalibration(raw, theta_cal, x_cal, names=tuple(sim.names), info={
            "bank": str(args.recalibrate), "estimators": [p.name for p in args.estimators],
            "estimator_sha256": [file_sha256(p) for p in args.estimators], "combine": raw.combine,
            "temperature": raw.temperature})
    elif args.recalibration is not None:
        recalibration = MarginalRecalibration.load(args.recalibration)
    posterior = raw.with_recalibration(recalibration)
    print(f"calibrating {len(ckpts)} estimator(s) on {len(theta)} simulations of {args.bank}"
          + (" (recalibrated)" if recalibration is not None else ""), flush=True)
    report = calibration_report(posterior, theta, x, num_posterior_samples=args.num_posterior_samples,
                                seed=args.seed, names=sim.names, progress=not args.no_progress)
    raw_report = None if recalibration is None else calibration_report(
        raw, theta, x, num_posterior_samples=args.num_posterior_samples, seed=args.seed, names=sim.names, c2st=False)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.recalibrate is not None:
        recalibration.save(args.out / RECALIBRATION_FILE)
    figures = report.plot(args.out)
    report.to_json(args.out / "report.json")
    (args.out / "report.md").write_text(_markdown(report, args, figures, recalibration, raw_report))
    for line in [] if recalibration is None else recalibration.describe():
        print(f"  recalibration: {line}")
    for line in report.verdicts():
        print(f"  {line}")
    for line in [] if raw_report is None else raw_report.verdicts():
        print(f"  without recalibration: {line}")
    for line in report.conditional_verdicts():
        print(f"  given x: {line}")
    print(f"  TARP ATC {report.tarp_atc:+.3f} (< 0: over-confident); 90% interval coverage "
          f"{', '.join(f'{v:.2f}' for v in report.coverage_at(0.9)['grid'])}")
    print(f"wrote {args.out / 'report.md'}, {args.out / 'report.json'} and {len(figures)} figures")
    return 0


def _markdown(report: Any, args: argparse.Namespace, figures: list[Path], recalibration: Any = None,
              raw_report: Any = None) -> str:
    source = args.recalibrate or args.recalibration
    lines = [
        "# Calibration report",
        "",
        f"Bank `{args.bank}` ({report.num_test} simulations, split {args.split}); estimators "
        f"{', '.join(f'`{p}`' for p in args.estimators)}; grid {args.resolution} cells per axis; "
        f"{report.num_posterior_samples} posterior draws per observation; seed {args.seed}.",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in report.verdicts()],
        "",
    ]
    if recalibration is not None:
        lines += [
            f"The posterior's marginals were recalibrated (from `{source}`, {recalibration.num_pairs} pairs):",
            "",
            *[f"- {line}" for line in recalibration.describe()],
            "",
            "Without the recalibration:",
            "",
            *[f"- {line}" for line in raw_report.verdicts()],
            "",
        ]
    lines += [
        "## Calibration given x",
        "",
        "The checks above average over all held-out simulations. Within the terciles of each parameter's "
        "posterior mean (the simulations the posterior places lowest, in the middle, highest) a posterior "
        "calibrated for every image has PIT means of 0.5; a recalibration cannot change differences between "
        "the terciles, since it applies one map to every image:",
        "",
        *[f"- {line}" for line in report.conditional_verdicts()],
        "",
        "## Numbers",
        "",
        "| parameter | SBC KS p | 50 % coverage | 90 % coverage |",
        "|---|---:|---:|---:|",
    ]
    c50, c90 = report.coverage_at(0.5)["grid"], report.coverage_at(0.9)["grid"]
    for k, name in enumerate(report.names):
        lines.append(f"| {name} | {report.ks_pvalues[k]:.3g} | {c50[k]:.3f} | {c90[k]:.3f} |")
    hpd = report.coverage_at(0.9)["hpd"]
    lines += [
        "",
        f"Joint 90 % HPD coverage: {'n/a' if hpd is None else f'{hpd:.3f}'}; TARP ATC {report.tarp_atc:+.3f} "
        f"(KS p {report.tarp_ks_pvalue:.3g}). SBC tests each parameter's marginal ranks; TARP tests the joint "
        "distribution through random reference points and can pass where a marginal fails.",
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
        f"```json\n{json.dumps(report.summary(), indent=1)}\n```",
    ]
    return "\n".join(lines) + "\n"
