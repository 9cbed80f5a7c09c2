r"""Calibration diagnostics of a posterior on held-out simulations: SBC, expected coverage, TARP.

Typical use, on a bank's test split (θ_i drawn from the prior, x_i simulated at θ_i)::

    from glsbi_plugin.diagnostics import calibration_report

    report = calibration_report(posterior, theta_test, x_test, names=("eta", "field"), seed=0)
    report.summary()               # KS p-values, coverage at 50 % and 90 %, TARP ATC
    report.to_json("calibration.json")
    report.plot("figures/")        # sbc_ranks.png, coverage.png, tarp.png

A calibrated posterior has uniform SBC ranks, coverage on the diagonal (within the binomial band
of :math:`N` test pairs) and TARP's ATC ≈ 0. Coverage below the diagonal, ranks piled at both
ends and a negative ATC mean over-confidence (too narrow); the opposite, under-confidence.
These all average over the observations; ``report.conditional_verdicts()`` asks whether the
posterior is also calibrated within the terciles of its own posterior mean (see
:func:`binned_pit_means`), which a pass of the averaged checks does not imply.
"""

from __future__ import annotations

from ._coverage import (
    DEFAULT_LEVELS,
    binned_pit_means,
    binomial_band,
    central_coverage,
    grid_interval_hits,
    hpd_coverage,
    pit_values,
    rank_histogram_band,
)
from ._misspecification import (
    MisspecificationCheck,
    MisspecificationReference,
    embed_images,
    misspecification_check,
)
from ._predictive import ImageScales, PredictiveCheck, detect_vortices, image_statistics, posterior_predictive_check
from ._report import CalibrationReport, calibration_report, posterior_samples

__all__ = [
    "DEFAULT_LEVELS",
    "CalibrationReport",
    "ImageScales",
    "MisspecificationCheck",
    "MisspecificationReference",
    "PredictiveCheck",
    "detect_vortices",
    "embed_images",
    "image_statistics",
    "misspecification_check",
    "posterior_predictive_check",
    "binned_pit_means",
    "binomial_band",
    "calibration_report",
    "central_coverage",
    "grid_interval_hits",
    "hpd_coverage",
    "pit_values",
    "posterior_samples",
    "rank_histogram_band",
]
