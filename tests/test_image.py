"""glsbi_plugin.apps.image: reading a user's image, mapping it onto the estimator's grid, inferring.

The tiny problem (:func:`tiny_run`, shared with test_misspecification.py and test_predictive.py
through the session's temporary directory): STM maps (weak band, blur 1, SNR 10) of a 32² torus
(h = 0.5, 200 SK-ROCK steps), θ = (η, B) with B ∈ [0.06, 0.2] (2–8 flux quanta), a 240-sample
bank and an NRE-C on a small strided embedding, trained for 30 epochs (about 40 s on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glsbi_plugin.apps import _infer_cmd
from glsbi_plugin.apps.image import infer_image, map_to_observation, read_image
from glsbi_plugin.checkpoint import load_estimator
from glsbi_plugin.inference import GridPosterior

BOUNDS = {"field": (0.06, 0.2)}


@dataclasses.dataclass
class TinyRun:
    root: Path
    estimator: Path
    bank: Path
    theta_test: torch.Tensor
    x_test: torch.Tensor
    x_train: torch.Tensor


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The trained tiny estimator and its bank (built once per session, then read from disk).

    Under pytest-xdist the workers share the parent of their temporary directories: the first
    worker to get here builds the run there, the others wait on the lock and read it.
    """
    from filelock import FileLock

    from glsbi_plugin.store import SimulationBank

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny_image_run"
    est_path, bank_path = root / "estimator.pt", root / "bank.zarr"
    with FileLock(str(root) + ".lock"):
        if not est_path.exists():  # written last: a run that exists is complete
            _build_tiny_run(root, est_path, bank_path)
    bank = SimulationBank.open(bank_path, read_only=True)
    theta_test, x_test = bank.to_torch("test")
    return TinyRun(root, est_path, bank_path, theta_test, x_test, bank.to_torch("train")[1])


def _build_tiny_run(root: Path, est_path: Path, bank_path: Path) -> None:
    from glsbi_plugin import make_simulator
    from glsbi_plugin.checkpoint import save_estimator
    from glsbi_plugin.embeddings import EmbeddingConfig
    from glsbi_plugin.inference import build_inference, train
    from glsbi_plugin.physics import STM, presets
    from glsbi_plugin.store import SimulationBank

    if bank_path.exists():  # a build interrupted before its estimator was saved
        shutil.rmtree(bank_path)
    root.mkdir(exist_ok=True)
    sim = make_simulator(config=presets.small_forward_model(size=32, steps=200), bounds=BOUNDS,
                         observation=STM(), batch_size=40)
    bank = SimulationBank.create(bank_path, sim, 240, chunk_size=40, seed=0)
    bank.fill()
    theta, x = bank.to_torch("train")
    emb = EmbeddingConfig(features=8, widths=(8, 16), downsample=True)
    torch.manual_seed(0)
    inference = build_inference("NRE_C", sim.prior(), emb, x_shape=sim.x_shape)
    estimator = train(inference, theta, x, max_epochs=30, training_batch_size=25, learning_rate=2e-3,
                      validation_fraction=0.1)
    save_estimator(est_path, estimator, method="NRE_C", simulator=sim, embedding=emb)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpt(run: TinyRun):
    return load_estimator(run.estimator)


# -------------------------------------------------------------------------------------- reading
def test_reads_npy_png_and_tiff_alike(tmp_path):
    import imageio.v3 as iio
    import tifffile

    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, size=(20, 30)).astype(np.uint16)
    np.save(tmp_path / "a.npy", img)
    iio.imwrite(tmp_path / "a.png", img)
    tifffile.imwrite(tmp_path / "a.tif", img.astype(np.float32))
    tifffile.imwrite(tmp_path / "a.tiff", img)
    for name in ("a.npy", "a.png", "a.tif", "a.tiff"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.float64 and out.shape == (20, 30), name
        np.testing.assert_array_equal(out, img.astype(np.float64), err_msg=name)


def test_colour_needs_a_channel(tmp_path):
    import imageio.v3 as iio

    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    iio.imwrite(tmp_path / "c.png", rgb)
    with pytest.raises(ValueError, match=r"colour image with 3 channels.*channel=0\.\.2"):
        read_image(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png", channel="g").mean() == 20
    assert read_image(tmp_path / "c.png", channel=2).mean() == 30
    with pytest.raises(ValueError, match="channels 0..2"):
        read_image(tmp_path / "c.png", channel=5)
    stack = np.stack([np.full((10, 12), v, np.float32) for v in (1.0, 2.0)])  # pages first
    np.save(tmp_path / "s.npy", stack)
    assert read_image(tmp_path / "s.npy", channel=1).mean() == 2.0


def test_refuses_what_it_cannot_read(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot be read"):
        read_image(tmp_path / "obj.npy")  # a pickle is never loaded
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot be read as a .png"):
        read_image(tmp_path / "fake.png")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown image type '\.jpg'; readable: \.npy, \.png"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.npy")


# -------------------------------------------------------------------------------------- mapping
def test_mapping_inverts_block_refinement_and_cropping(ckpt, run):
    """An image at half the estimator's pixel size with a border around the estimator's window maps
    back onto the simulated image exactly (area weights of 2×2 blocks, the central window)."""
    x = run.x_test[0, 0].double().numpy()  # 32 × 32 pixels of 0.5: window 16
    fine = np.kron(x, np.ones((2, 2)))  # 64 × 64 pixels of 0.25
    bordered = np.pad(fine, 8, mode="reflect")  # 80 × 80 pixels: side 20, window at offset 2
    x_o, mapping = map_to_observation(bordered, ckpt.simulator, pixel_size=0.25)
    assert tuple(x_o.shape) == (1, 32, 32) and x_o.dtype == torch.float32
    np.testing.assert_allclose(x_o[0].numpy(), (x - x.mean()) / x.std(), atol=2e-5)
    assert mapping.window == 16.0 and mapping.window_origin == (2.0, 2.0) and mapping.upsampling == 0.5
    # the same image by its field of view, and an affine change of units (offset, gain) changes nothing
    x_fov, _ = map_to_observation(3.0 + 7.0 * bordered, ckpt.simulator, field_of_view=20.0)
    np.testing.assert_allclose(x_fov.numpy(), x_o.numpy(), atol=2e-5)


def test_mapping_averages_down_by_area(ckpt):
    """A coarser target than the input: each estimator pixel is the mean of the input pixels it covers."""
    rng = np.random.default_rng(1)
    img = rng.normal(size=(96, 96))  # pixels of 1/6 over the window 16: 3 × 3 input pixels per output pixel
    x_o, mapping = map_to_observation(img, ckpt.simulator, pixel_size=16 / 96)
    block = img.reshape(32, 3, 32, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(x_o[0].numpy(), (block - block.mean()) / block.std(), atol=2e-5)
    assert mapping.upsampling == pytest.approx(1 / 3)


def _ramp(n: int, m: int) -> np.ndarray:
    return np.add.outer(np.arange(n, dtype=np.float64), 0.5 * np.arange(m))


def _with_nan() -> np.ndarray:
    img = _ramp(40, 40)
    img[3, 5] = np.nan
    return img


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (_with_nan(), {"pixel_size": 0.5}, r"1 NaN/inf pixels \(first at row 3, column 5\)"),
        (np.ones((40, 40)), {"pixel_size": 0.5}, "the image is constant"),
        (_ramp(6, 40), {"pixel_size": 0.5}, "too few pixels: the image is 6x40; at least 8x8"),
        (_ramp(40, 40), {}, "give pixel_size"),
        (_ramp(40, 40), {"pixel_size": -1.0}, r"pixel_size=-1.0: must be a finite number > 0"),
        (_ramp(40, 40), {"pixel_size": 0.5, "field_of_view": 30.0}, "disagrees with field_of_view=30"),
        (_ramp(40, 30), {"field_of_view": 20.0}, "field_of_view is ambiguous for a 40x30 image"),
        (_ramp(40, 40), {"pixel_size": 0.1}, r"4 x 4 is smaller than a vortex spacing \(a = 11 at the prior's lowest"),
        (_ramp(40, 40), {"pixel_size": 0.375}, r"smaller than the estimator's window 16 \(32 pixels of 0\.5\)"),
        (_ramp(12, 12), {"pixel_size": 1.5}, r"too few pixels: .* needs at least 16 \(a pixel_size <= 1\)"),
        (_ramp(40, 40), {"pixel_size": 0.5, "height": 1.0}, "height=1 applies to SQUID maps; this estimator reads stm"),
    ],
)
def test_mapping_refuses_what_cannot_be_mapped(ckpt, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        map_to_observation(image, ckpt.simulator, **kwargs)


def test_the_refusals_control_maps(ckpt):
    x_o, mapping = map_to_observation(_ramp(40, 40), ckpt.simulator, field_of_view=20.0)
    assert tuple(x_o.shape) == (1, 32, 32) and mapping.window_origin == (2.0, 2.0)
    assert abs(float(x_o.mean())) < 1e-6 and abs(float(x_o.std(correction=0)) - 1) < 1e-5  # standardised like STM


# -------------------------------------------------------------------------------------- inference
def test_infer_image_is_the_grid_posterior_of_the_mapped_image(ckpt, run, tmp_path):
    """From a file of a held-out simulation at a finer pixel: MAP, mean and intervals equal those of
    the grid posterior of the simulation itself, nested and inside the prior; JSON and figure written."""
    x = run.x_test[3, 0].double().numpy()
    np.save(tmp_path / "map.npy", np.kron(x, np.ones((2, 2))))
    result = infer_image(tmp_path / "map.npy", ckpt, pixel_size=0.25, bank=run.bank, out=tmp_path / "out",
                         n_shuffle=200, resolution=60)
    post = GridPosterior(ckpt.estimator, ckpt.prior, resolution=60, x_o=run.x_test[3])
    np.testing.assert_allclose(result.theta_map, post.map().numpy(), atol=1e-6)
    np.testing.assert_allclose(result.intervals[0.9], post.credible_interval(0.9).numpy(), atol=2e-3)
    low, high = np.asarray(ckpt.simulator.low), np.asarray(ckpt.simulator.high)
    i68, i90 = result.intervals[0.68], result.intervals[0.9]
    assert ((low <= i90[:, 0]) & (i90[:, 0] <= i68[:, 0]) & (i68[:, 0] < i68[:, 1]) & (i68[:, 1] <= i90[:, 1])
            & (i90[:, 1] <= high)).all()
    torch.manual_seed(0)
    samples = post.sample((20_000,)).numpy()
    np.testing.assert_allclose(result.theta_mean, samples.mean(0), atol=4 * samples.std(0).max() / np.sqrt(20_000))
    np.testing.assert_allclose(result.theta_std, samples.std(0), rtol=0.05)
    data = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert data["names"] == ["eta", "field"] and data["map"] == pytest.approx(result.theta_map.tolist())
    assert set(data["intervals"]) == {"68", "90"} and data["misspecification"]["misspecified"] is False
    assert (tmp_path / "out" / "inference.png").read_bytes()[:4] == b"\x89PNG"
    assert "MAP" in result.summary() and "consistent with the training simulations" in result.summary()


def test_the_field_is_read_off_a_held_out_image(ckpt, run):
    """Statistics, not one case: over the test split, the 90 % interval of B from infer_image holds
    the true field about 90 % of the time and the MAP follows the truth (the tiny estimator learns B)."""
    hits, maps = [], []
    for theta, x in zip(run.theta_test[:24], run.x_test[:24], strict=True):
        r = infer_image(x[0].numpy(), ckpt, pixel_size=0.5, bank=None, resolution=50)
        lo, hi = r.intervals[0.9][1]
        hits.append(lo <= float(theta[1]) <= hi)
        maps.append(r.theta_map[1])
    assert np.mean(hits) >= 0.7
    assert np.corrcoef(maps, run.theta_test[:24, 1].numpy())[0, 1] > 0.6


# -------------------------------------------------------------------------------------- command line
def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    _infer_cmd.configure(p)
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_prints_posterior_verdict_and_ppc(run, tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "map.tif", run.x_test[5, 0].numpy())
    code = _cli([str(tmp_path / "map.tif"), "--estimator", str(run.estimator), "--pixel-size", "0.5", "--ppc",
                 "--ppc-n", "12", "--out", str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert code == 0
    assert "eta" in text and "MAP" in text and "68% [" in text and "90% [" in text  # the bank beside it: checked
    assert "misspecification check" in text and "consistent with the training simulations" in text
    assert "posterior predictive check (12 simulations" in text and "vortex_count" in text
    data = json.loads((tmp_path / "o" / "inference.json").read_text())
    assert set(data["ppc"]["p_values"]) >= {"vortex_count", "nn_mean", "g_r", "pixel_histogram"}
    assert (tmp_path / "o" / "ppc.png").exists()


def test_cli_warns_loudly_on_noise_and_refuses_bad_input(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "noise.npy", rng.normal(size=(32, 32)))
    assert _cli([str(tmp_path / "noise.npy"), "--estimator", str(run.estimator), "--pixel-size", "0.5",
                 "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "!" * 78 in text and "WARNING: MISSPECIFIED" in text and "noise level" in text
    with pytest.raises(ValueError, match="give pixel_size"):
        _cli([str(tmp_path / "noise.npy"), "--estimator", str(run.estimator), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no such file"):
        _cli([str(tmp_path / "noise.npy"), "--estimator", str(tmp_path / "none.pt"), "--pixel-size", "0.5"])
    with pytest.raises(SystemExit):
        _cli([str(tmp_path / "noise.npy"), "--estimator", str(run.estimator), "--pixel-size", "-2"])


# -------------------------------------------------------------------------------------- other instruments
def _blobs(n: int, pixel: float, centres: list[tuple[float, float]], width: float) -> np.ndarray:
    g = (np.arange(n) + 0.5) * pixel
    return sum(np.exp(-((g[:, None] - cx) ** 2 + (g[None, :] - cy) ** 2) / (2 * width**2)) for cx, cy in centres)


def _simulator(observation):  # noqa: ANN001, ANN202
    from glsbi_plugin import make_simulator
    from glsbi_plugin.physics import presets

    return make_simulator(config=presets.small_forward_model(size=32, steps=10), bounds=BOUNDS, observation=observation)


def test_squid_maps_are_continued_up_to_the_estimators_height_never_down(caplog):
    from glsbi_plugin.physics import SQUID

    sim = _simulator(SQUID(height=1.0, snr=20.0))
    img = _blobs(32, 0.5, [(4.0, 4.0), (12.0, 9.0)], 0.6) / (2 * np.pi)  # flux quanta per area, at the surface
    same, m0 = map_to_observation(img, sim, pixel_size=0.5, height=1.0)
    np.testing.assert_allclose(same[0].numpy(), img, atol=1e-6)  # in flux quanta per area, as given
    up, m1 = map_to_observation(img, sim, pixel_size=0.5, height=0.25)
    assert m0.height_continued == 0 and m1.height_continued == 0.75
    assert float(up.max()) < 0.6 * img.max() and abs(float(up.mean()) - img.mean()) < 0.02 * img.mean()  # k = 0 kept
    with pytest.raises(ValueError, match=r"height=2: the estimator was trained at height 1.0; .* height <= 1"):
        map_to_observation(img, sim, pixel_size=0.5, height=2.0)
    with caplog.at_level("WARNING"):
        map_to_observation(img, sim, pixel_size=0.5)
    assert "no SQUID height given" in caplog.text


def test_decoration_maps_are_scaled_to_one_blob_per_vortex():
    from glsbi_plugin.physics import Decoration

    sim = _simulator(Decoration(blob=1.0))
    centres = [(3.25, 3.25), (11.25, 5.25), (7.25, 12.25)]  # at pixel centres
    img = _blobs(32, 0.5, centres, 1.0)
    x_o, mapping = map_to_observation(5.0 + 3.0 * img, sim, pixel_size=0.5)  # offset and gain of the camera
    one = (1.0 * np.sqrt(2 * np.pi) / 0.5 * math.erf(0.5 / (2 * np.sqrt(2) * 1.0))) ** 2  # a blob's pixel mean
    peaks = [float(x_o[0, int(cx / 0.5), int(cy / 0.5)]) for cx, cy in centres]
    assert np.median(peaks) == pytest.approx(one, rel=1e-6) and mapping.units.startswith("background 0")
    again, _ = map_to_observation(img, sim, pixel_size=0.5)
    np.testing.assert_allclose(again.numpy(), x_o.numpy(), atol=1e-5)  # the offset and gain do not matter
    with pytest.raises(ValueError, match="shows no vortex peak"):
        map_to_observation(-img, sim, pixel_size=0.5)


def test_the_recalibration_beside_the_estimator_is_applied(run, tmp_path):
    """A recalibration.json fitted for this estimator file (same name and SHA-256) changes the posterior
    infer_image reports, and the result says so; an estimator given as a loaded checkpoint is used as it is."""
    import shutil

    from glsbi_plugin.checkpoint import RECALIBRATION_FILE, file_sha256
    from glsbi_plugin.inference import MarginalRecalibration

    est = tmp_path / "estimator.pt"
    shutil.copy(run.estimator, est)
    recal = MarginalRecalibration(weights=((0.05, 0.9, 0.05), (0.1, 0.8, 0.1)), info={
        "estimators": ["estimator.pt"], "estimator_sha256": [file_sha256(est)]})
    recal.save(tmp_path / RECALIBRATION_FILE)
    x = run.x_test[2, 0].numpy()
    plain = infer_image(x, load_estimator(est), pixel_size=0.5, bank=None, resolution=40)
    applied = infer_image(x, est, pixel_size=0.5, bank=None, resolution=40, out=tmp_path / "o")
    assert plain.posterior.recalibration is None and applied.posterior.recalibration == recal
    width = lambda r: r.intervals[0.9][:, 1] - r.intervals[0.9][:, 0]  # noqa: E731
    assert (width(applied) < width(plain)).all()  # this map sharpens both marginals
    assert "recalibrated marginals" in applied.summary() and "recalibrated" not in plain.summary()
    assert json.loads((tmp_path / "o" / "inference.json").read_text())["recalibration"] == recal.to_dict()
