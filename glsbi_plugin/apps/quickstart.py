r"""The main job (``make run``, ``glsbi quickstart``): simulate → train → infer → plot, end to end.

1. A simulation bank (Zarr, resumable: rerunning after a crash only fills what is missing) of
   θ = (η, B) from the prior, simulated with the default two-band preset on a small torus and
   observed as an instrument would: by default zero-bias STM conductance maps of the weak band
   (standardised, so no absolute density gives η away; tip blur, noise).
2. NRE-C with the ResNet+GAP embedding, trained on the bank's train split (sbi's own trainer).
3. A grid posterior for an observation simulated at a known θ, and its 90 % credible intervals.
4. A calibration report on the bank's held-out test split (:mod:`glsbi_plugin.diagnostics`): SBC
   ranks, expected coverage of central and HPD credible regions (the 90 % marginal intervals
   should cover the true θ ≈ 90 % of the time), exact grid-interval coverage and TARP.
5. Figures (observation, posterior, marginals; ``sbc_ranks.png``, ``coverage.png``, ``tarp.png``)
   and a JSON summary (with the calibration report) in the output directory, and
   the trained estimator (``estimator.pt``, for ``glsbi demo --posterior``).

The defaults are chosen to finish in a few minutes on 2 CPU cores: the forward model is
``presets.small_forward_model()`` (48² torus, SK-ROCK, snapshot at t = 80, while the clusters are
still coarsening: the forward model includes it).
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

from ..checkpoint import save_estimator
from ..diagnostics import calibration_report
from ..embeddings import EmbeddingConfig
from ..inference import GridPosterior, build_inference, train
from ..physics import STM, AnyObservation, TDGLConfig, presets
from ..sbi_simulator import DEFAULT_BOUNDS, make_simulator
from ..store import SimulationBank

logger = logging.getLogger(__name__)

#: θ of the main job, in column order (``QuickstartSettings.bounds`` follows it).
NAMES = ("eta", "field")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuickstartSettings:
    """Options of the main job (every field has a CLI flag in ``glsbi quickstart``).

    Attributes:
        size: Grid side (sites) of the torus; h = 0.5.
        t_final: Snapshot time of the quench; ``None``: ``presets.T_SMALL`` (80).
        steps: Time steps of the default scheme instead of ``t_final`` (give one of the two), or ``None``.
        bounds: Prior box ``((eta_low, eta_high), (field_low, field_high))``; default the package's
            ``DEFAULT_BOUNDS``. A small torus needs a larger field to hold a flux quantum.
        num_simulations: Bank size (train / validation / test split 80/10/10 by chunk).
        chunk_size: Samples per bank chunk (and per vmapped JAX call).
        method: sbi method (``"NRE_A"``, ``"NRE_B"``, ``"NRE_C"``, ``"BNRE"``, ``"NPE"``).
        max_epochs: Training epochs at most.
        theta_true: (η, B) of the demonstration observation.
        seed: Bank seed (θ and simulation seeds) and torch seed.
        observation: What the images show, an observation of :mod:`glsbi_plugin.physics`. Default
            ``STM()``: zero-bias conductance maps of the weak band, standardised (no absolute
            density), tip blur 1, SNR 10 — what a lab has, and informative about η
            (``benchmarks/results/observation_models.md``). ``Observation()`` is the ideal ρ₁, ρ₂.
        embedding: Image embedding. The quickstart's default is a small strided ResNet (about
            20x cheaper to train than the exactly shift-invariant default of
            :class:`EmbeddingConfig`, invariant to shifts by multiples of 4 sites).
    """

    size: int = 48
    t_final: float | None = None
    steps: int | None = None
    bounds: tuple[tuple[float, float], tuple[float, float]] = tuple(DEFAULT_BOUNDS[n] for n in NAMES)  # type: ignore[assignment]
    num_simulations: int = 1000
    chunk_size: int = 50
    method: str = "NRE_C"
    max_epochs: int = 30
    theta_true: tuple[float, float] = (0.15, 0.07)
    seed: int = 0
    observation: AnyObservation = dataclasses.field(default_factory=STM)
    embedding: EmbeddingConfig = dataclasses.field(
        default_factory=lambda: EmbeddingConfig(features=16, widths=(8, 16, 32), downsample=True)
    )

    def __post_init__(self) -> None:
        if self.t_final is not None and self.steps is not None:
            raise ValueError(f"give t_final or steps, not both (t_final={self.t_final!r}, steps={self.steps!r})")

    def simulator_config(self) -> TDGLConfig:
        """The forward model's numerics: ``presets.small_forward_model`` at this size and time."""
        return presets.small_forward_model(size=self.size, t_final=self.t_final, steps=self.steps)


def run_quickstart(
    out_dir: str | Path, settings: QuickstartSettings | None = None, *, progress: bool = False
) -> dict[str, Any]:
    """Run the main job; write ``bank.zarr``, ``estimator.pt``, ``posterior.png``, ``summary.json`` to ``out_dir``,
    and the calibration figures ``sbc_ranks.png``, ``coverage.png``, ``tarp.png``.

    Args:
        out_dir: Output directory (created). An existing bank there is reused and completed.
        settings: Options; default :class:`QuickstartSettings`.
        progress: Show progress bars (the CLI sets it).

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
    bank_path = out / "bank.zarr"
    if bank_path.exists():
        try:
            bank = SimulationBank.open(bank_path, simulator)
        except ValueError as e:  # e.g. a bank of an older forward model: keep it, say what to do
            raise ValueError(
                f"{bank_path} was simulated with other settings ({e}); keep it and choose another --out, "
                "or delete it to simulate afresh"
            ) from e
        if bank.n < s.num_simulations:
            raise ValueError(f"{bank_path} holds {bank.n} samples, fewer than num_simulations={s.num_simulations}")
    else:
        bank = SimulationBank.create(bank_path, simulator, s.num_simulations, chunk_size=s.chunk_size, seed=s.seed)
    fill = bank.fill(progress=progress)
    timings["simulate_s"] = time.perf_counter() - t0
    logger.info("bank: %d simulations (%d chunks simulated now)", bank.n_filled, len(fill.simulated))

    t0 = time.perf_counter()
    theta, x = bank.to_torch("train")
    theta_val, x_val = bank.to_torch("validation")
    inference = build_inference(s.method, prior, s.embedding, x_shape=simulator.x_shape)
    # sbi draws its own random hold-out; we give it the bank's train+validation rows and the
    # validation split's share. The test split stays unseen for the coverage check.
    n_val = len(theta_val)
    estimator = train(
        inference,
        torch.cat([theta, theta_val]),
        torch.cat([x, x_val]),
        max_epochs=s.max_epochs,
        validation_fraction=n_val / (len(theta) + n_val) if n_val else 0.1,
    )
    timings["train_s"] = time.perf_counter() - t0
    epochs = int(inference.summary["epochs_trained"][-1])
    save_estimator(out / "estimator.pt", estimator, method=s.method, simulator=simulator, embedding=s.embedding)

    t0 = time.perf_counter()
    theta_o = torch.tensor([s.theta_true], dtype=torch.float32)
    x_o = simulator(theta_o, seed=s.seed + 10_000)
    posterior = GridPosterior(estimator, prior, x_o=x_o[0])
    interval = posterior.credible_interval(0.9)
    theta_map = posterior.map()
    timings["infer_s"] = time.perf_counter() - t0

    theta_test, x_test = bank.to_torch("test")
    report = None
    if len(theta_test):
        t0 = time.perf_counter()
        report = calibration_report(posterior, theta_test, x_test, names=simulator.names, seed=s.seed)
        report.plot(out)
        timings["calibrate_s"] = time.perf_counter() - t0
        coverage = np.asarray(report.coverage_at(0.9)["grid"])  # exact: GridPosterior.credible_interval(0.9)
    else:
        coverage = np.full(len(simulator.names), np.nan)

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
        "num_test": len(theta_test),
        "bank": {"chunks_simulated_now": len(fill.simulated), "simulations": bank.n_filled},
        "epochs_trained": epochs,
        "best_validation_loss": float(inference.summary["best_validation_loss"][-1]),
        "timings": timings,
        "calibration": None if report is None else report.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    from ._figures import plot_main_result

    plot_main_result(out / "posterior.png", posterior, x_o[0], s, simulator, summary)
    return summary
