"""The interactive demo, headless (Agg): frames are physical, widgets re-simulate, the posterior panel
shows the grid posterior of the very image on display; the estimator checkpoint round-trips; the CLI."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from matplotlib.backend_bases import MouseEvent

from glsbi_plugin import make_prior, make_simulator
from glsbi_plugin.apps.cli import _interactive_backend, main
from glsbi_plugin.apps.demo import DemoFigure, DemoModel, describe_frame
from glsbi_plugin.checkpoint import load_estimator, save_estimator
from glsbi_plugin.embeddings import EmbeddingConfig
from glsbi_plugin.inference import ClassifierConfig, GridPosterior, build_inference
from glsbi_plugin.physics import TDGLConfig, flux_quanta, length_scales, presets, winding

# 32² torus (area 256) with the default prior: B in [0.03, 0.1] holds 1..4 flux quanta, and t = 16
# is enough for vortices to form. `glsbi demo --size 32 --steps 200` is the same compiled program.
CFG = TDGLConfig(shape=(32, 32), h=0.5, dt=0.08, steps=200)
AREA = 32 * 32 * 0.5**2
MODEL = ["--size", "32", "--steps", "200"]


@pytest.fixture(scope="module")
def model() -> DemoModel:
    return DemoModel(CFG)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An NRE_C estimator for CFG's images, saved with save_estimator.

    Built by the same sbi builder that ``train`` uses, with its standardisation fitted on 32
    simulations, but not trained: training (tests/test_inference.py, test_quickstart.py) would
    add seconds, and freshly initialised random weights make the round trip just as telling.
    """
    sim = make_simulator(config=CFG, batch_size=1)  # width 1: one program, shared below
    prior = make_prior()
    g = torch.Generator().manual_seed(0)
    low, high = torch.tensor(sim.low), torch.tensor(sim.high)
    theta = low + (high - low) * torch.rand((32, 2), generator=g)
    x = sim.simulate_seeds(theta, np.arange(32), shard=False)
    emb = EmbeddingConfig(features=4, widths=(4,))
    inference = build_inference("NRE_C", prior, emb, ClassifierConfig(hidden_features=8), x_shape=sim.x_shape)
    estimator = inference._build_neural_net(theta, x).eval()  # what sbi's train() builds first
    path = tmp_path_factory.mktemp("ckpt") / "estimator.pt"
    save_estimator(path, estimator, method="NRE_C", simulator=sim, embedding=emb)  # the estimator knows its config
    return path, estimator, sim, prior, x


_winding = jax.jit(winding, static_argnums=2)


def rendered_winding(frame):
    """Masked windings recomputed from the frame's state with the public observable."""
    return np.asarray(_winding(frame.state, frame.params.astype(CFG.real_dtype), CFG))


def mouse(demo: DemoFigure, name: str, ax, fx: float, fy: float = 0.5) -> None:
    """Send a left-button mouse event at axes fraction (fx, fy) through the figure's canvas."""
    x, y = ax.transAxes.transform((fx, fy))
    canvas = demo.figure.canvas
    canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, button=1))


# -- the model (no widgets) -------------------------------------------------------------------
def test_frame_is_physical_and_reproducible(model):
    f = model.frame(0.1, 0.09, seed=0)
    n_phi = round(0.09 * AREA / (2 * np.pi))  # 3.67 -> 4
    assert f.n_phi == n_phi == int(flux_quanta(0.09, CFG))
    assert abs(f.flux - n_phi) < 1e-4  # the B_z image carries exactly N_phi flux quanta
    assert f.net_winding == (n_phi, n_phi)  # total winding of each band = N_phi on the torus
    counts = tuple(int(np.abs(w).sum()) for w in rendered_winding(f))
    assert f.vortex_counts == counts and min(counts) >= 1
    assert f.rho.min() >= 0 and 0.3 < f.rho[0].mean() < 1.2  # the strong band's condensate formed
    assert f.scales.regime == length_scales(presets.type15(eta=0.1, field=0.09)).regime
    assert f.x.shape == (2, 32, 32) and np.array_equal(f.x, f.rho.astype(np.float32))
    assert f.posterior is None
    again = model.frame(0.1, 0.09, seed=0)
    assert np.array_equal(again.rho, f.rho) and np.array_equal(again.bz, f.bz)
    assert not np.allclose(model.frame(0.1, 0.09, seed=1).rho, f.rho)
    text = describe_frame(f, CFG)
    assert f"N_phi = {n_phi}" in text and f"vortices: ψ1 {counts[0]}, ψ2 {counts[1]}" in text
    assert f"regime {f.scales.regime}" in text and f"λ = {f.scales.lam:.3f}" in text


def test_model_refuses_bad_input(model):
    with pytest.raises(ValueError, match=r"eta=0.5 is outside the demo's range \[0, 0.3\]"):
        model.frame(0.5, 0.09)
    with pytest.raises(ValueError, match="seed"):
        model.frame(0.1, 0.09, seed=-1)
    with pytest.raises(ValueError, match="N_phi = 0"):  # the default field bounds on a 16² torus
        DemoModel(CFG.replace(shape=(16, 16)))
    with pytest.raises(ValueError, match="two-band torus"):
        DemoModel(CFG.replace(boundary="open"))
    with pytest.raises(ValueError, match="θ is"):
        DemoModel(CFG, bounds={"nu": (0.0, 0.1)})


# -- the figure ---------------------------------------------------------------------------------
def test_slider_change_resimulates_and_redraws(model):
    demo = DemoFigure(model, eta=0.1, field=0.09, seed=0)
    before = {k: im.get_array().copy() for k, im in demo.images.items()}
    demo.eta_slider.set_val(0.25)
    f = demo.frame
    assert (f.eta, f.field, f.seed) == (0.25, 0.09, 0)
    for k, im in demo.images.items():
        assert not np.array_equal(np.asarray(im.get_array()), before[k]), k
    np.testing.assert_array_equal(demo.images["rho2"].get_array(), f.rho[1].T)
    counts = [int(np.abs(w).sum()) for w in rendered_winding(f)]
    for a, name in enumerate(("rho1", "rho2")):
        assert demo.images[name].axes.get_title().startswith(f"|ψ{a + 1}|²: {counts[a]} vortices")
        assert len(demo._markers[name].get_offsets()) == np.count_nonzero(rendered_winding(f)[a])

    demo.field_slider.set_val(0.05)  # 0.05 * 256 / 2π = 2.04 -> 2 flux quanta
    shown_bz = np.asarray(demo.images["bz"].get_array(), np.float64)
    assert demo.frame.n_phi == 2
    assert abs(shown_bz.sum() * CFG.h**2 / (2 * np.pi) - 2) < 1e-4
    assert "N_phi = 2 flux quanta" in demo.info.get_text()
    assert demo.images["bz"].axes.get_title().startswith("B_z: N_phi = 2")
    demo.figure.canvas.draw()  # renders


def test_slider_drag_simulates_once_on_release(model):
    demo = DemoFigure(model, eta=0.1, field=0.09, seed=0)
    first = demo.frame
    ax = demo.eta_slider.ax
    mouse(demo, "button_press_event", ax, 0.5)
    mouse(demo, "motion_notify_event", ax, 0.8)
    assert demo.frame is first and "release" in demo.status.get_text()
    assert demo.eta_slider.val == pytest.approx(0.24)
    mouse(demo, "button_release_event", ax, 0.8)
    assert demo.frame is not first and demo.frame.eta == pytest.approx(0.24)
    assert "release" not in demo.status.get_text()


def test_seed_box_and_new_seed_button(model):
    demo = DemoFigure(model, eta=0.1, field=0.09, seed=0)
    rho0 = demo.frame.rho.copy()
    ax = demo.resimulate_button.ax
    mouse(demo, "button_press_event", ax, 0.5)
    mouse(demo, "button_release_event", ax, 0.5)
    assert demo.frame.seed == 1 and demo.seed_box.text == "1"
    assert not np.allclose(demo.frame.rho, rho0)
    shown = demo.frame
    demo.seed_box.set_val("x")
    assert demo.frame is shown and "seed must be an integer" in demo.status.get_text()
    demo.seed_box.set_val("0")
    np.testing.assert_array_equal(demo.frame.rho, rho0)


# -- checkpoint and posterior panel ---------------------------------------------------------------
def test_checkpoint_round_trip(checkpoint, tmp_path):
    path, estimator, sim, prior, x = checkpoint
    ckpt = load_estimator(path)
    assert ckpt.method == "NRE_C" and ckpt.simulator.describe() == sim.describe()
    assert ckpt.estimator_config == ClassifierConfig(hidden_features=8) and ckpt.build_kwargs == {}
    a = GridPosterior(estimator, prior, resolution=12).grid_log_prob(x[3])
    b = GridPosterior(ckpt.estimator, ckpt.prior, resolution=12).grid_log_prob(x[3])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a glsbi estimator checkpoint"):
        load_estimator(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format 'other'"):
        load_estimator(tmp_path / "other.pt")


def test_posterior_panel_shows_the_posterior_of_the_displayed_image(checkpoint):
    path, _, sim, _, _ = checkpoint
    model = DemoModel.from_checkpoint(path, resolution=20)
    assert model.config == CFG and model.bounds == {"eta": (0.0, 0.3), "field": (0.03, 0.1)}
    demo = DemoFigure(model, eta=0.1, field=0.09, seed=5)
    f = demo.frame
    # the image the posterior sees is the sbi simulator's for this θ and seed
    x_sim = sim.simulate_seeds(torch.tensor([[0.1, 0.09]]), [5], shard=False)[0].numpy()
    np.testing.assert_allclose(f.x, x_sim, rtol=1e-4, atol=1e-4)
    post = f.posterior
    cell = (0.3 / 20) * (0.07 / 20)
    assert post.density.shape == (20, 20) and abs(post.density.sum() * cell - 1) < 1e-4
    lp = model.posterior.grid_log_prob(torch.tensor(f.x)).exp().reshape(20, 20).numpy()
    np.testing.assert_allclose(post.density, lp, rtol=1e-5)
    assert 0 <= post.theta_map[0] <= 0.3 and 0.03 <= post.theta_map[1] <= 0.1 and post.infer_ms > 0
    np.testing.assert_array_equal(demo.posterior_image.get_array(), post.density.T)
    assert tuple(demo.truth_marker.get_xydata()[0]) == pytest.approx((0.1, 0.09))
    assert "ms" in demo._posterior_ax.get_title() and "posterior in" in demo.info.get_text()
    density = post.density
    demo.field_slider.set_val(0.05)
    assert tuple(demo.truth_marker.get_xydata()[0]) == pytest.approx((0.1, 0.05))
    assert not np.array_equal(demo.posterior_image.get_array(), density.T)
    with pytest.raises(ValueError, match="prior box"):
        DemoModel(CFG, bounds={"field": (0.03, 0.2)}, posterior=model.posterior)


# -- command line -------------------------------------------------------------------------------
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("glsbi: error: "), err
    return lines[0]


def test_cli_demo_save(tmp_path, capsys, checkpoint):
    png = tmp_path / "demo.png"
    assert main(["demo", *MODEL, "--eta", "0.05", "--save", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG" and "η = 0.0500" in out and "N_phi = " in out
    png2 = tmp_path / "posterior.png"
    assert main(["demo", "--posterior", str(checkpoint[0]), "--resolution", "16", "--save", str(png2)]) == 0
    out = capsys.readouterr().out
    assert png2.read_bytes()[:4] == b"\x89PNG" and "posterior in" in out and "MAP η" in out


def test_cli_demo_errors(tmp_path, capsys, checkpoint):
    png = str(tmp_path / "x.png")
    cases = [
        (["--size", "16", "--save", png], "N_phi = 0"),
        ([*MODEL, "--eta", "0.9", "--save", png], "outside the demo's range"),
        (["--save", str(tmp_path / "missing" / "x.png")], "does not exist"),
        (["--posterior", str(tmp_path / "none.pt"), "--save", png], "no such file"),
        (["--posterior", str(checkpoint[0]), "--size", "24", "--save", png], "trained on --size 32"),
    ]
    for argv, message in cases:
        assert main(["demo", *argv]) == 2, argv
        assert message in one_error_line(capsys), argv
    import matplotlib

    matplotlib.use("Agg")  # headless: no window can open
    assert main(["demo", *MODEL]) == 2
    assert "use --save PNG" in one_error_line(capsys)
    assert _interactive_backend("TkAgg") and _interactive_backend("QtAgg") and not _interactive_backend("agg")


def test_an_instrument_is_drawn_as_the_posterior_reads_it():
    """With an instrument the demo adds a panel of the observation x itself (what a posterior reads)."""
    from glsbi_plugin.physics import STM

    model = DemoModel(CFG, bounds={"field": (0.05, 0.2)}, observation=STM(pixels=16))
    demo = DemoFigure(model, eta=0.1, field=0.1, seed=2)
    x = demo.frame.x
    assert x.shape == (1, 16, 16) and abs(float(x.mean())) < 1e-5  # a standardised STM map
    np.testing.assert_array_equal(demo.images["x"].get_array(), x[0].T)
    assert demo.images["x"].get_extent() == list(STM(pixels=16).extent(CFG))
    assert DemoFigure.figsize(model)[0] > DemoFigure.figsize(DemoModel(CFG, bounds={"field": (0.05, 0.2)}))[0]
