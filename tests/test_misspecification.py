"""glsbi_plugin.diagnostics.misspecification_check: held-out simulations pass, unlike images are flagged.

On the tiny problem of test_image.py (STM maps of a 32² torus, B ∈ [0.06, 0.2]), against the
bank's training split: images of another field outside the prior, of 10× a field in the prior,
a rotated triangular lattice from another model (London-like cores, no TDGL) and pure noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from test_image import TinyRun, tiny_run  # tests/ is on sys.path (rootdir-relative imports)

from glsbi_plugin import make_simulator
from glsbi_plugin.checkpoint import load_estimator
from glsbi_plugin.diagnostics import (
    ImageScales,
    MisspecificationCheck,
    MisspecificationReference,
    misspecification_check,
)

N_SHUFFLE = 300


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpt(run: TinyRun):
    return load_estimator(run.estimator)


@pytest.fixture(scope="module")
def reference(ckpt, run) -> MisspecificationReference:
    return MisspecificationReference.build(ckpt.estimator, run.x_train, ImageScales.of(ckpt.simulator))


@pytest.fixture(scope="module")
def check(ckpt, reference):
    def check(x) -> MisspecificationCheck:  # noqa: ANN001
        return misspecification_check(ckpt.estimator, x, reference, n_shuffle=N_SHUFFLE)

    return check


@pytest.fixture(scope="module")
def strong_fields(ckpt):
    """STM maps of the same forward model at B = 0.5 (2.5× the prior's top) and 0.7 (10× B = 0.07)."""
    sim = ckpt.simulator
    wide = make_simulator(config=sim.config, base=sim.base, bounds={"field": (0.06, 1.0)}, observation=sim.instrument)
    return wide(torch.tensor([[0.15, 0.5], [0.15, 0.7]]), seed=7)


def test_held_out_simulations_pass(check, run):
    """At α = 0.05 a consistent image is flagged at most 5 % of the time: of 12 held-out simulations
    at most 2 may be (binomial tail 2 %)."""
    results = [check(x) for x in run.x_test[:12]]
    assert all(0.0 <= r.p_value <= 1.0 for r in results)
    assert sum(r.misspecified for r in results) <= 2
    ok = next(r for r in results if not r.misspecified)
    assert ok.verdict.startswith("consistent with the training simulations") and ok.num_reference == len(run.x_train)


def test_a_field_outside_the_prior_is_flagged(check, strong_fields):
    r = check(strong_fields[0])
    assert r.misspecified and r.p_value < 0.05
    assert r.verdict.startswith("MISSPECIFIED") and "do not trust the posterior" in r.verdict
    assert r.differs  # says what differs


def test_ten_times_the_field_is_flagged(check, strong_fields):
    r = check(strong_fields[1])
    assert r.misspecified and r.differs


def test_pure_noise_is_flagged_and_named(check):
    rng = np.random.default_rng(3)
    r = check(torch.tensor(rng.normal(size=(1, 32, 32)), dtype=torch.float32))
    assert r.misspecified and r.p_statistics < 0.01
    assert any(d.startswith("noise level") and "above the training range" for d in r.differs)
    assert any(d.startswith("vortex count 0 is below the training range") for d in r.differs)


def lattice_image(angle_deg: float, field: float, *, core: float = 1.0, seed: int = 0) -> np.ndarray:
    """Another model: a rotated triangular Abrikosov lattice of London-like cores ρ = Π tanh²(r/ξ) on
    the 16 × 16 window (pixels of 0.5), tip blur 1 and noise at SNR 10, standardised."""
    a = np.sqrt(4 * np.pi / (np.sqrt(3) * field))
    g = (np.arange(32) + 0.5) * 0.5
    X, Y = np.meshgrid(g, g, indexing="ij")
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    rho = np.ones_like(X)
    for i in range(-6, 7):
        for j in range(-6, 7):
            p = rot @ np.array([a * (i + 0.5 * j), a * np.sqrt(3) / 2 * j]) + 3.0
            rho *= np.tanh(np.hypot(X - p[0], Y - p[1]) / core) ** 2
    img = gaussian_filter(rho, 2.0)  # σ = 1 length unit
    img = (img - img.mean()) / img.std()
    img = img + np.random.default_rng(seed).normal(size=img.shape) / 10
    return ((img - img.mean()) / img.std())[None].astype(np.float32)


def test_a_rotated_lattice_from_another_model_is_flagged(check):
    r = check(torch.from_numpy(lattice_image(17.0, 0.13)))
    assert r.misspecified and r.differs


def test_deterministic_json_and_refusals(check, ckpt, run, tmp_path):
    x = run.x_test[0]
    a, b = check(x), check(x)
    assert a == b  # seeded: the same p-values and verdict
    scales = ImageScales.of(ckpt.simulator)
    assert misspecification_check(ckpt.estimator, x, run.x_train, scales, n_shuffle=N_SHUFFLE) == a  # raw images
    data = json.loads(a.to_json(tmp_path / "m.json").read_text())
    assert data["misspecified"] is a.misspecified and data["verdict"] == a.verdict
    assert set(data["observed"]) >= {"vortex_count", "noise_level", "contrast", "core_radius"}
    with pytest.raises(ValueError, match="at least 20 reference simulations, got 5"):
        misspecification_check(ckpt.estimator, x, run.x_train[:5], scales)
    with pytest.raises(ValueError, match=r"must be one image of the references' shape \(1, 32, 32\)"):
        misspecification_check(ckpt.estimator, x[:, :16], run.x_train, scales)
    with pytest.raises(ValueError, match=r"alpha=1.5: must be in \(0, 1\)"):
        misspecification_check(ckpt.estimator, x, run.x_train, scales, alpha=1.5)
