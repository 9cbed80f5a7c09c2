"""glsbi_plugin.diagnostics: image statistics, predictive p-values and the posterior predictive check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import kstest
from test_image import TinyRun, tiny_run  # tests/ is on sys.path (rootdir-relative imports)

from glsbi_plugin.checkpoint import load_estimator
from glsbi_plugin.diagnostics import (
    ImageScales,
    detect_vortices,
    image_statistics,
    posterior_predictive_check,
)
from glsbi_plugin.diagnostics._predictive import SCALAR_STATISTICS, VECTOR_STATISTICS, predictive_p_values
from glsbi_plugin.inference import GridPosterior


def test_predictive_p_values_are_uniform_under_the_null_and_small_off_it():
    rng = np.random.default_rng(0)
    null, off = [], []
    for _ in range(400):
        pred = {"s": rng.normal(size=99), "v": rng.normal(size=(99, 5))}
        obs = {"s": rng.normal(), "v": rng.normal(size=5)}
        far = {"s": 4.0, "v": rng.normal(size=5) + 3.0}
        null.append(list(predictive_p_values(obs, pred).values()))
        off.append(list(predictive_p_values(far, pred).values()))
    null, off = np.asarray(null), np.asarray(off)
    for k in range(2):
        assert kstest(null[:, k], "uniform").pvalue > 0.01
    assert (off <= 0.03).mean() > 0.95


def _dips(centres: np.ndarray, n: int, pixel: float, width: float) -> np.ndarray:
    """Periodic Gaussian dips at ``centres`` (length units) on an n × n grid of ``pixel``."""
    g = (np.arange(n) + 0.5) * pixel
    L = n * pixel
    img = np.zeros((n, n))
    for cx, cy in centres:
        dx = g[:, None] - cx
        dy = g[None, :] - cy
        dx, dy = dx - L * np.round(dx / L), dy - L * np.round(dy / L)
        img -= np.exp(-(dx**2 + dy**2) / (2 * width**2))
    return img


def test_detect_vortices_finds_a_lattice_and_its_statistics():
    """A centred rectangular lattice of 36 dips on a periodic 24 × 24 box: every vortex found at its
    pixel, the nearest-neighbour ratio of that lattice (1), g(r) zero at short range, no opposite
    extrema, and the same with bright blobs."""
    a, pixel = 4.0, 0.25
    n = 96  # box 24 = 6 a
    rows = 6
    pts = np.array([((i + 0.5 * (j % 2)) * a + 1.0, j * 24 / rows + 1.0) for i in range(6) for j in range(rows)])
    img = _dips(pts, n, pixel, width=0.6)
    scales = ImageScales(pixel_size=pixel, spacing=a, polarity=-1)
    pos, heights = detect_vortices(img, scales)
    assert len(pos) == len(pts) and (heights > 1).all()
    d = np.hypot(*(pos[:, None, :] - pts[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert d.max() <= pixel  # at the pixel of the true centre
    stats = image_statistics(img[None, None], scales)
    assert stats["vortex_count"][0] == 36 and stats["opposite_extrema"][0] == 0
    assert 0.9 < stats["nn_mean"][0] < 1.1 and stats["g_r"][0, 0] == 0
    bright = image_statistics(-img[None, None], ImageScales(pixel_size=pixel, spacing=a, polarity=1))
    assert bright["vortex_count"][0] == 36
    # white noise: no vortex, noise level ≈ 1; a smooth field: noise level ≈ 0
    rng = np.random.default_rng(1)
    noise = image_statistics(rng.normal(size=(3, 1, 64, 64)), scales)
    assert (noise["noise_level"] > 0.9).all() and (noise["vortex_count"] <= 3).all()
    smooth = image_statistics(gaussian_filter(rng.normal(size=(64, 64)), 6, mode="wrap")[None, None], scales)
    assert smooth["noise_level"][0] < 0.05


def test_core_radius_follows_the_core_width():
    """The half-height radius of the mean profile grows with the dips' width: for a Gaussian of
    width w smoothed by one pixel it is √(2 ln 2 (w² + p²))."""
    pts = np.array([[6.0, 6.0], [18.0, 6.0], [6.0, 18.0], [18.0, 18.0]])
    scales = ImageScales(pixel_size=0.25, spacing=12.0, polarity=-1)
    for w in (0.8, 1.6):
        r = image_statistics(_dips(pts, 96, 0.25, w)[None, None], scales)["core_radius"][0]
        assert r == pytest.approx(np.sqrt(2 * np.log(2) * (w**2 + 0.25**2)), rel=0.08)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def posterior(run: TinyRun):
    ckpt = load_estimator(run.estimator)
    return ckpt, GridPosterior(ckpt.estimator, ckpt.prior, resolution=50)


def test_ppc_of_a_held_out_simulation(posterior, run, tmp_path):
    ckpt, post = posterior
    ppc = posterior_predictive_check(post, run.x_test[2], ckpt.simulator, n=30, seed=1)
    assert ppc.n == 30 and ppc.theta.shape == (30, 2) and ppc.examples.shape == (12, 1, 32, 32)
    assert set(ppc.p_values) == set(SCALAR_STATISTICS + VECTOR_STATISTICS)
    assert all(1 / 31 <= p <= 1.0 for p in ppc.p_values.values())
    # the observation is a draw of this model: no statistic in the extreme tail (p >= 2/31 for scalars)
    assert min(ppc.p_values.values()) > 0.04, ppc.summary()
    assert ppc.predictive["vortex_count"].min() <= ppc.observed["vortex_count"] <= ppc.predictive["vortex_count"].max()
    low, high = np.asarray(ckpt.simulator.low), np.asarray(ckpt.simulator.high)
    assert ((ppc.theta >= low) & (ppc.theta <= high)).all()
    data = json.loads(ppc.to_json(tmp_path / "ppc.json").read_text())
    assert data["p_values"] == pytest.approx(ppc.p_values) and len(data["observed"]["g_r"]) == 8
    assert ppc.plot(tmp_path / "ppc.png").read_bytes()[:4] == b"\x89PNG"
    again = posterior_predictive_check(post, run.x_test[2], ckpt.simulator, n=30, seed=1)
    assert again.p_values == ppc.p_values  # seeded


def test_ppc_rejects_an_image_the_model_cannot_make(posterior):
    """Pure noise: whatever θ the posterior proposes, the simulations have vortices and smooth maps."""
    ckpt, post = posterior
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(1, 32, 32)), dtype=torch.float32)
    ppc = posterior_predictive_check(post, x, ckpt.simulator, n=20, seed=0)
    assert ppc.p_values["noise_level"] <= 2 / 21 and ppc.p_values["pixel_histogram"] <= 2 / 21
    assert ppc.worst()[1] <= 2 / 21


def test_ppc_refuses_bad_input(posterior, run):
    ckpt, post = posterior
    with pytest.raises(ValueError, match="n=5: .* >= 10"):
        posterior_predictive_check(post, run.x_test[0], ckpt.simulator, n=5)
    with pytest.raises(ValueError, match=r"x_o has shape \(1, 16, 32\); the simulator's images are \(1, 32, 32\)"):
        posterior_predictive_check(post, run.x_test[0][:, :16], ckpt.simulator, n=10)
