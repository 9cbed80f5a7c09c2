r"""The main job (``make run``, ``glsbi quickstart``): simulate → train → infer → calibrate → plot.

1. A training bank (Zarr, resumable: rerunning after a crash only fills what is missing) of
   θ = (η, B) from the prior, simulated with the default two-band preset on a small torus and
   observed as an instrument would: by default zero-bias STM conductance maps of the weak band
   (standardised, so no absolute density gives η away; tip blur, noise).
2. A held-out bank of ``num_heldout`` (300) simulations from another seed (``seed + 1``), never
   seen in training or recalibration: the calibration verdict is computed on it.
3. A recalibration bank of ``num_recalibration`` (1000) simulations from a third seed (``seed + 2``).
4. NRE-A (sbi's binary ratio classifier: recalibrated, it was the best calibrated of NRE-A/B/C,
   ``benchmarks/results/nre_vs_npe.md``) with the ResNet+GAP embedding, trained to convergence
   (early stopping on sbi's 10 % validation share) on every training simulation, each epoch shown
   under a random symmetry of
   the torus (shift, rotation, reflection: exact symmetries of p(x | θ)); optionally an ensemble of
   ``members`` estimators from different seeds, pooled in the grid posterior (``combine``).
5. The estimator's marginals recalibrated on the recalibration bank
   (:func:`~glsbi_plugin.inference.fit_recalibration`: a polynomial map of each marginal CDF, which
   undoes the shift and the excess width that differ from one training seed to the next).
6. A grid posterior for an observation simulated at a known θ, and its 90 % credible intervals.
7. A calibration report on the held-out bank (:mod:`glsbi_plugin.diagnostics`): SBC ranks with a
   plain verdict per parameter, expected coverage of central and HPD credible regions, exact
   grid-interval coverage and TARP; for the recalibrated posterior, and the verdicts of the
   estimator's own posterior beside them; and whether the posterior is calibrated also within the
   terciles of its own posterior mean (``CalibrationReport.conditional_verdicts``), which the
   averaged checks do not imply.
8. Figures (observation, posterior, marginals; ``sbc_ranks.png``, ``coverage.png``, ``tarp.png``)
   and a JSON summary (with the calibration report) in the output directory, the trained
   estimator (``estimator.pt``, for ``glsbi demo --posterior`` and ``glsbi infer``) and its
   recalibration (``recalibration.json``, which those commands apply).

The defaults are chosen to finish in a few minutes on 2 CPU cores: the forward model is
``presets.small_forward_model()`` (48² torus, SK-ROCK, snapshot at t = 80, while the clusters are
still coarsening: the forward model includes it). What each recipe step does to calibration was
measured on held-out simulations (``benchmarks/results/nre_vs_npe.md`` and the README).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._threads import torch_threads
from ..checkpoint import RECALIBRATION_FILE, ensemble_paths, file_sha256, save_estimator
from ..diagnostics import calibration_report
from ..embeddings import EmbeddingConfig
from ..inference import GridPosterior, MarginalRecalibration, fit_recalibration, train_ensemble
from ..physics import STM, AnyObservation, TDGLConfig, presets
from ..sbi_simulator import DEFAULT_BOUNDS, make_simulator
from ..store import SimulationBank

logger = logging.getLogger(__name__)

#: θ of the main job, in column order (``QuickstartSettings.bounds`` follows it).
NAMES = ("eta", "field")

#: Fewest recalibration simulations (``inference.fit_recalibration`` needs them).
MIN_RECALIBRATION = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuickstartSettings:
    """Options of the main job (every field has a CLI flag in ``glsbi quickstart``).

    Attributes:
        size: Grid side (sites) of the torus; h = 0.5.
        t_final: Snapshot time of the quench; ``None``: ``presets.T_SMALL`` (80).
        steps: Time steps of the default scheme instead of ``t_final`` (give one of the two), or ``None``.
        bounds: Prior box ``((eta_low, eta_high), (field_low, field_high))``; default the package's
            ``DEFAULT_BOUNDS``. A small torus needs a larger field to hold a flux quantum.
        num_simulations: Training bank size (sbi holds out 10 % of it for early stopping).
        num_heldout: Held-out bank size (bank seed ``seed + 1``), for the calibration report;
            0: no report.
        num_recalibration: Recalibration bank size (bank seed ``seed + 2``): the posterior's marginals
            are recalibrated on it before the held-out check; 0: no recalibration, else at least 50.
        chunk_size: Samples per bank chunk (and per vmapped JAX call).
        method: sbi method (``"NRE_A"``, ``"NRE_B"``, ``"NRE_C"``, ``"BNRE"``, ``"NPE"``). Default NRE_A:
            at 1000 STM images, recalibrated on 1000 more, its largest coverage deviation on 300
            held-out simulations was 0.038 ± 0.012 over three training seeds, against 0.070 ± 0.003
            for NRE_C and 0.050 ± 0.012 for NRE_B, at the same held-out log q.
        max_epochs: Training epochs at most (training stops earlier when the validation loss has
            not improved for ``patience`` epochs).
        patience: Early-stopping patience in epochs.
        members: Estimators trained from seeds ``seed``, ``seed + 1``, ...; more than one: their
            posteriors are combined (:class:`~glsbi_plugin.inference.GridPosterior` ensembles) and
            ``estimator.pt`` holds member 0, ``estimator_1.pt``, ... the others.
        combine: How members are combined: ``"log-mean"`` (default: their log densities averaged,
            which scored higher than the mixture on held-out simulations in every seed measured,
            ``benchmarks/results/nre_vs_npe.md``) or ``"mixture"``.
        theta_true: (η, B) of the demonstration observation.
        seed: Bank seed (θ and simulation seeds) and torch seed.
        observation: What the images show, an observation of :mod:`glsbi_plugin.physics`. Default
            ``STM()``: zero-bias conductance maps of the weak band, standardised (no absolute
            density), tip blur 1, SNR 10 — what a lab has, and informative about η
            (``benchmarks/results/observation_models.md``). ``Observation()`` is the ideal ρ₁, ρ₂.
        embedding: Image embedding. The quickstart's default is a small strided ResNet (about
            20x cheaper to train than the exactly shift-invariant default of
            :class:`EmbeddingConfig`, invariant to shifts by multiples of 4 sites), trained under
            random torus symmetries (``symmetry="torus"``).
    """

    size: int = 48
    t_final: float | None = None
    steps: int | None = None
    bounds: tuple[tuple[float, float], tuple[float, float]] = tuple(DEFAULT_BOUNDS[n] for n in NAMES)  # type: ignore[assignment]
    num_simulations: int = 1000
    num_heldout: int = 300
    num_recalibration: int = 1000
    chunk_size: int = 50
    method: str = "NRE_A"
    max_epochs: int = 100
    patience: int = 15
    members: int = 1
    combine: str = "log-mean"
    theta_true: tuple[float, float] = (0.15, 0.07)
    seed: int = 0
    observation: AnyObservation = dataclasses.field(default_factory=STM)
    embedding: EmbeddingConfig = dataclasses.field(
        default_factory=lambda: EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True, symmetry="torus")
    )

    def __post_init__(self) -> None:
        if self.combine not in ("mixture", "log-mean"):
            raise ValueError(f"combine={self.combine!r}: allowed values are ('mixture', 'log-mean')")
        if self.t_final is not None and self.steps is not None:
            raise ValueError(f"give t_final or steps, not both (t_final={self.t_final!r}, steps={self.steps!r})")
        n = self.num_recalibration
        if isinstance(n, bool) or not isinstance(n, int) or not (n == 0 or n >= MIN_RECALIBRATION):
            raise ValueError(
                f"num_recalibration={n!r}: must be 0 (no recalibration) or an integer >= {MIN_RECALIBRATION}"
            )

    def simulator_config(self) -> TDGLConfig:
        """The forward model's numerics: ``presets.small_forward_model`` at this size and time."""
        return presets.small_forward_model(size=self.size, t_final=self.t_final, steps=self.steps)


def run_quickstart(
    out_dir: str | Path, settings: QuickstartSettings | None = None, *, progress: bool = False
) -> dict[str, Any]:
    """Run the main job; write ``bank.zarr``, ``heldout.zarr``, ``recalibration.zarr``, ``estimator.pt``,
    ``recalibration.json``, ``posterior.png``, ``inference_result.png`` and ``summary.json`` to
    ``out_dir``, and the calibration figures ``sbc_ranks.png``, ``coverage.png``, ``tarp.png``.

    Args:
        out_dir: Output directory (created). Existing banks there are reused and completed.
        settings: Options; default :class:`QuickstartSettings`.
        progress: Show progress bars (simulation, training epochs, calibration; the CLI sets it).
            Without them every stage still logs at INFO.

    Returns:
        The summary dictionary written to ``summary.json``.
    """
    s = settings or QuickstartSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    timings: dict[str, float] = {}

    names = NAMES
    simulator = make_simulator(names, config=s.simulator_config(), bounds=dict(zip(names, s.bounds, strict=True)),
                               observation=s.observation, batch_size=s.chunk_size)
    prior = simulator.prior()
    t0 = time.perf_counter()
    with torch_threads(1):  # JAX simulates: torch's threads would only compete with XLA's
        bank, fill = _bank(out / "bank.zarr", simulator, s.num_simulations, s.chunk_size, s.seed, progress)
        heldout = heldout_fill = recal_bank = recal_fill = None
        if s.num_heldout:
            heldout, heldout_fill = _bank(out / "heldout.zarr", simulator, s.num_heldout, s.chunk_size, s.seed + 1,
                                          progress)
        if s.num_recalibration:
            recal_bank, recal_fill = _bank(out / "recalibration.zarr", simulator, s.num_recalibration,
                                           s.chunk_size, s.seed + 2, progress)
    timings["simulate_s"] = time.perf_counter() - t0
    logger.info("bank: %d simulations (%d chunks simulated now)", bank.n_filled, len(fill.simulated))

    t0 = time.perf_counter()
    theta, x = bank.to_torch()
    theta, x = theta[: s.num_simulations], x[: s.num_simulations]
    bar = _EpochBar(s.max_epochs, s.members) if progress else None
    try:
        estimators = train_ensemble(
            s.method, prior, theta, x, members=s.members, seed=s.seed, embedding=s.embedding,
            x_shape=simulator.x_shape, max_epochs=s.max_epochs, stop_after_epochs=s.patience,
            progress=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
    timings["train_s"] = time.perf_counter() - t0
    epochs = _EpochBar.epochs_of(estimators)
    for estimator, path in zip(estimators, ensemble_paths(out / "estimator.pt", s.members), strict=True):
        save_estimator(path, estimator, method=s.method, simulator=simulator, embedding=s.embedding)

    # one observation at a time is latency-bound: one torch thread (and none competing with XLA's)
    with torch_threads(1):
        recalibration: MarginalRecalibration | None = None
        raw = GridPosterior(estimators, prior, combine=s.combine)
        if recal_bank is not None:
            t0 = time.perf_counter()
            theta_cal, x_cal = recal_bank.to_torch()
            logger.info("recalibration on %d simulations (seed %d)", len(theta_cal), recal_bank.seed)
            recalibration = fit_recalibration(
                raw, theta_cal, x_cal, names=simulator.names,
                info={"bank": str(out / "recalibration.zarr"), "bank_seed": recal_bank.seed,
                      "estimators": [p.name for p in ensemble_paths(out / "estimator.pt", s.members)],
                      "estimator_sha256": [file_sha256(p) for p in ensemble_paths(out / "estimator.pt", s.members)],
                      "combine": raw.combine, "temperature": raw.temperature},
            )
            recalibration.save(out / RECALIBRATION_FILE)
            timings["recalibrate_s"] = time.perf_counter() - t0
            for line in recalibration.describe():
                logger.info("recalibration: %s", line)
        elif (out / RECALIBRATION_FILE).exists():  # from an earlier run with other settings: it would mislead
            (out / RECALIBRATION_FILE).unlink()
        t0 = time.perf_counter()
        theta_o = torch.tensor([s.theta_true], dtype=torch.float32)
        x_o = simulator(theta_o, seed=s.seed + 10_000)
        posterior = raw.with_recalibration(recalibration).set_default_x(x_o[0])
        interval = posterior.credible_interval(0.9)
        theta_map = posterior.map()
        timings["infer_s"] = time.perf_counter() - t0

        report = raw_report = None
        num_test = 0
        coverage = np.full(len(simulator.names), np.nan)
        if heldout is not None:
            t0 = time.perf_counter()
            theta_test, x_test = heldout.to_torch()
            num_test = len(theta_test)
            logger.info("calibration on %d held-out simulations (seed %d)", num_test, heldout.seed)
            report = calibration_report(posterior, theta_test, x_test, names=simulator.names, seed=s.seed,
                                        progress=progress)
            report.plot(out)
            if recalibration is not None:  # the estimator's own posterior, for comparison
                raw_report = calibration_report(raw, theta_test, x_test, names=simulator.names, seed=s.seed,
                                                c2st=False)
            timings["calibrate_s"] = time.perf_counter() - t0
            coverage = np.asarray(report.coverage_at(0.9)["grid"])  # exact: GridPosterior.credible_interval(0.9)
            for line in report.verdicts():
                logger.info("calibration: %s", line)
            for line in report.conditional_verdicts():
                logger.info("calibration given x: %s", line)

    summary = {
        "settings": {
            **dataclasses.asdict(s),
            "embedding": s.embedding.to_dict(),
            "observation": simulator.observation.to_dict(),
        },
        "names": list(simulator.names),
        "theta_true": list(s.theta_true),
        "theta_map": theta_map.tolist(),
        "credible_interval_90": interval.tolist(),
        "truth_inside_90": [bool(lo <= t <= hi) for t, (lo, hi) in zip(s.theta_true, interval.tolist(), strict=True)],
        "test_coverage_90": coverage.tolist(),
        "num_test": num_test,
        "bank": {"chunks_simulated_now": len(fill.simulated), "simulations": bank.n_filled},
        "heldout": None if heldout is None else {
            "seed": heldout.seed, "chunks_simulated_now": len(heldout_fill.simulated),
            "simulations": heldout.n_filled,
        },
        "recalibration_bank": None if recal_bank is None else {
            "seed": recal_bank.seed, "chunks_simulated_now": len(recal_fill.simulated),
            "simulations": recal_bank.n_filled,
        },
        "recalibration": None if recalibration is None else recalibration.to_dict(),
        "members": s.members,
        "epochs_trained": epochs[0],
        "epochs_trained_per_member": epochs,
        "best_validation_loss": float(estimators[0]._glsbi_best_validation_loss),
        "timings": timings,
        "calibration": None if report is None else report.to_dict(),
        "calibration_verdicts": None if report is None else report.verdicts(),
        "calibration_unrecalibrated": None if raw_report is None else raw_report.to_dict()["summary"],
        "calibration_verdicts_unrecalibrated": None if raw_report is None else raw_report.verdicts(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    from ._figures import plot_main_result

    plot_main_result(out / "posterior.png", posterior, x_o[0], s, simulator, summary)
    return summary


def _bank(path: Path, simulator: Any, n: int, chunk_size: int, seed: int, progress: bool) -> tuple[SimulationBank, Any]:
    """Open (and complete) or create and fill the bank at ``path``."""
    if path.exists():
        try:
            bank = SimulationBank.open(path, simulator)
        except ValueError as e:  # e.g. a bank of an older forward model: keep it, say what to do
            raise ValueError(
                f"{path} was simulated with other settings ({e}); keep it and choose another --out, "
                "or delete it to simulate afresh"
            ) from e
        if bank.n < n:
            raise ValueError(f"{path} holds {bank.n} samples, fewer than the {n} asked for")
        if bank.seed != seed:
            raise ValueError(f"{path} has bank seed {bank.seed}, not {seed}; choose another --out")
    else:
        bank = SimulationBank.create(path, simulator, n, chunk_size=chunk_size, seed=seed)
    return bank, bank.fill(progress=progress)


class _EpochBar:
    """A tqdm bar over the training epochs of every ensemble member, with the latest losses."""

    def __init__(self, max_epochs: int, members: int) -> None:
        from tqdm.auto import tqdm

        self.members = members
        self.bar = tqdm(total=max_epochs * members, desc="train", unit="epoch", leave=True)
        self.max_epochs = max_epochs

    def update(self, member: int, record: Any) -> None:
        # member k's epochs fill the k-th stretch of the bar; an early stop skips the rest of its stretch
        self.bar.update(member * self.max_epochs + record.epoch - self.bar.n)
        who = f"member {member + 1}/{self.members}, " if self.members > 1 else ""
        self.bar.set_postfix_str(
            f"{who}train {record.training_loss:.3f}, val {record.validation_loss:.3f} "
            f"(best {record.best_validation_loss:.3f} @ {record.best_epoch}), {record.seconds:.1f} s/epoch"
        )

    def close(self) -> None:
        self.bar.close()

    @staticmethod
    def epochs_of(estimators: list[Any]) -> list[int]:
        return [int(e._glsbi_epochs_trained) for e in estimators]
