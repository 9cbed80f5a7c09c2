"""``CalibrationReport.verdicts`` on a conjugate Gaussian model whose posterior is known exactly:
the exact posterior passes, a too-wide one is called under-confident, a too-narrow one
over-confident and a shifted one biased (statistics on 300 held-out pairs, as the main job)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kstest
from torch import Tensor

from glsbi_plugin.diagnostics import calibration_report

N = 300  # held-out pairs, as the main job


class GaussianPosterior:
    r"""θ ~ N(0, 1), x = θ + N(0, 1/4): p(θ | x) = N(0.8 x, 0.2); ``scale`` widens it, ``shift`` moves it."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        self.scale, self.shift = scale, shift

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return 0.8 * x[..., 0] + self.shift, torch.full_like(x[..., 0], self.scale * math.sqrt(0.2))

    def sample_batched(self, shape, x: Tensor, show_progress_bars: bool = False) -> Tensor:  # noqa: ANN001
        mean, sd = self._moments(x)
        return (mean + sd * torch.randn(*shape, x.shape[0]))[..., None]

    def log_prob(self, theta: Tensor, x: Tensor) -> Tensor:
        mean, sd = self._moments(x)
        return torch.distributions.Normal(mean, sd).log_prob(theta[..., 0])


@pytest.fixture(scope="module")
def pairs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    theta = torch.randn(N, 1, generator=g)
    return theta, theta + 0.5 * torch.randn(N, 1, generator=g)


@pytest.mark.parametrize(
    ("scale", "shift", "expected"),
    [
        (1.0, 0.0, "calibrated"),
        (1.6, 0.0, "under-confident"),
        (0.6, 0.0, "over-confident"),
        (1.0, 0.3, "biased high"),  # the posterior sits above the truth
        (1.0, -0.3, "biased low"),
    ],
)
def test_verdict_names_the_failure(pairs, scale: float, shift: float, expected: str) -> None:
    report = calibration_report(GaussianPosterior(scale, shift), *pairs, num_posterior_samples=500, names=["theta"],
                                c2st=False, seed=2)
    (line,) = report.verdicts()
    assert line.startswith("theta: ")
    assert expected in line, line
    if expected == "calibrated":
        assert "FAILS" not in line
    else:
        assert "FAILS SBC" in line and "300 held-out" in line
        # by how much: the KS distance of the ranks, the statistic behind the p-value
        d = kstest(report.ranks[:, 0], "uniform", args=(0, 500)).statistic
        assert f"rank CDF off the diagonal by up to {d:.3f}" in line and d > 0.08
    mean, var = report.pit_moments()
    if scale > 1:
        assert var[0] < 1 / 12  # ∩-shaped ranks
    if shift > 0:
        assert mean[0] < 0.5  # the posterior sits above the truth: the truth ranks low
    assert report.summary()["verdicts"] == [line]
