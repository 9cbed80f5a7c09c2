"""Inputs checked at the door: seeds, generators, the whole prior box, booleans, dtypes, measurements,
temperatures, simulator descriptions and damaged checkpoints, each refused with a ValueError that
names the bad value and the allowed range, before anything is simulated."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import Measurement, TDGLConfig, presets
from glsbi_plugin.sbi_simulator import TDGLSimulator

CFG = TDGLConfig(shape=(16, 16), steps=4)
BOUNDS = {"field": (0.1, 0.4)}


@pytest.fixture(scope="module")
def sim():
    return make_simulator(config=CFG, bounds=BOUNDS, batch_size=2)


@pytest.fixture(scope="module")
def theta(sim):
    return sim.prior().sample((2,))


@pytest.mark.parametrize(("seed", "match"), [
    (1.5, r"seed=1.5: must be an integer in \[0, 2\*\*63 - 1\] \(got float\)"),
    (True, r"seed=True: must be an integer .*\(got bool\)"),
    ("3", r"seed='3': must be an integer .*\(got str\)"),
    (np.float64(2.0), r"\(got float64\)"),
    (-1, r"seed=-1: must lie in \[0, 2\*\*63 - 1\]"),
    (2**64, r"seed=18446744073709551616: must lie in"),
])
def test_bad_base_seeds(sim, theta, seed, match):
    with pytest.raises(ValueError, match=match):
        sim(theta, seed=seed)


@pytest.mark.parametrize(("seeds", "match"), [
    ([1.5, 2.5], "got dtype float64"), ([True, False], "got dtype bool"), (["1", "2"], "got dtype <U1"),
    ([-1, 3], r"seeds \[-1\] lie outside \[0, 2\*\*32 - 1\]"),
    ([2**32 + 7, 1], r"seeds \[4294967303\] lie outside \[0, 2\*\*32 - 1\] \(seeds are not wrapped\)"),
    ([2**70, 1], r"lie outside"), ([1], r"shape \(2,\), one per theta row"),
])
def test_bad_simulation_seeds_are_refused_never_wrapped(sim, theta, seeds, match):
    with pytest.raises(ValueError, match=match):
        sim.simulate_seeds(theta, seeds)


def test_integer_seeds_of_any_integer_type_work(sim, theta):
    a = sim(theta, seed=np.int64(3))
    assert torch.equal(a, sim(theta, seed=3)) and torch.equal(a, sim(theta, seed=torch.tensor(3)))
    assert torch.equal(sim.simulate_seeds(theta, np.array([1, 2], np.uint32)), sim.simulate_seeds(theta, [1, 2]))


@pytest.mark.parametrize("generator", [0, "g", np.random.default_rng(0), 1.5])
def test_generator_must_be_a_torch_generator(sim, theta, generator):
    with pytest.raises(ValueError, match=f"generator must be a torch.Generator .*got {type(generator).__name__}"):
        sim(theta, generator=generator)


@pytest.mark.parametrize(("bounds", "match"), [
    ({"field": (-0.1, 0.1)}, r"at eta=0, field=0: field=0 gives N_phi = 0"),  # inside, not at a corner
    ({"field": (0.0, 0.2)}, "N_phi = 0"),
    ({"field": ("a", 0.2)}, r"bounds for 'field' must be two numbers \(low, high\), got \('a', 0.2\)"),
    ({"field": (0.1,)}, "must be two numbers"),
    ({"field": (True, 0.2)}, "must be two numbers"),
])
def test_the_whole_prior_box_is_checked(bounds, match):
    with pytest.raises(ValueError, match=match):
        make_simulator(config=CFG, bounds=bounds)


@pytest.mark.parametrize(("kw", "match"), [
    ({"thermal": "no"}, r"thermal='no': must be True or False"),
    ({"thermal": 1}, r"thermal=1: must be True or False"),
])
def test_booleans_must_be_bool(kw, match):
    with pytest.raises(ValueError, match=match):  # the config refuses it itself, before any simulator
        make_simulator(config=TDGLConfig(shape=(16, 16), steps=4, **kw), bounds=BOUNDS)


def test_float64_without_x64_is_refused_at_the_call(theta):
    import jax

    sim64 = make_simulator(config=CFG.replace(dtype="float64"), bounds=BOUNDS, batch_size=2)  # x64 on in tests
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="dtype='float64', but 64-bit JAX is off"):
            sim64(theta, seed=0)
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize(("kw", "match"), [
    ({"psf_sigma": float("inf")}, r"psf_sigma=inf: must be finite and >= 0"),
    ({"noise_std": float("inf")}, r"noise_std=inf: must be finite and >= 0"),
    ({"downsample": 16}, r"downsample=16 on the 16x16 grid: .* >= 4 pixels per side; allowed: \[1, 2, 4\]"),
    ({"downsample": 32}, "allowed: "),
    ({"downsample": True}, r"downsample=True: must be an integer >= 1"),
])
def test_measurements_that_give_no_image_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        make_simulator(config=CFG, bounds=BOUNDS, measurement=Measurement(**kw))


def test_temperatures_that_blow_up_are_refused_before_simulating():
    with pytest.raises(ValueError, match=r"T=10: one step's thermal noise .* exceeds 0.5, which gives non-finite "
                                         r"images; allowed T <= 0.78"):
        make_simulator(config=CFG, bounds=BOUNDS, base=presets.type15().replace(T=10.0))
    with pytest.raises(ValueError, match=r"at eta=0, field=0.1, T=1e\+06: T=1e\+06"):
        make_simulator(("eta", "field", "T"), config=CFG, bounds={**BOUNDS, "T": (0.0, 1e6)})
    hot = make_simulator(config=CFG, bounds=BOUNDS, base=presets.type15().replace(T=0.5), batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(hot(hot.prior().sample((2,)), seed=0)).all()  # the largest allowed T stays finite


@pytest.mark.parametrize(("kw", "match"), [
    ({"batch_size": 2.5}, r"batch_size=2.5: must be an integer >= 1"),
    ({"batch_size": True}, r"batch_size=True"),
    ({"base": "type15"}, r"base must be TDGLParams .*got str"),
])
def test_bad_simulator_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        make_simulator(config=CFG, bounds=BOUNDS, **kw)


def test_damaged_descriptions_are_refused_naming_the_key(sim):
    d = sim.describe()
    for mutate, match in [(lambda e: e.pop("config"), r"missing keys \['config'\]"),
                          (lambda e: e.update(foo=1), r"unknown keys \['foo'\]"),
                          (lambda e: e.update(names=5), "names must be a list, got int"),
                          (lambda e: e.update(config=[1]), "config must be a mapping")]:
        e = copy.deepcopy(d)
        mutate(e)
        with pytest.raises(ValueError, match=match):
            TDGLSimulator.from_description(e)
    assert TDGLSimulator.from_description(d).describe() == d


# -- checkpoints -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from glsbi_plugin.checkpoint import save_estimator
    from glsbi_plugin.embeddings import EmbeddingConfig
    from glsbi_plugin.inference import ClassifierConfig, build_inference

    sim = make_simulator(config=CFG, bounds=BOUNDS, batch_size=1)
    emb = EmbeddingConfig(features=4, widths=(4,))
    g = torch.Generator().manual_seed(0)
    theta = sim.prior().sample((8,))
    x = torch.randn((8, *sim.x_shape), generator=g)
    estimator = build_inference("NRE_C", sim.prior(), emb, ClassifierConfig(hidden_features=8))._build_neural_net(
        theta, x)
    return save_estimator(tmp_path_factory.mktemp("ck") / "e.pt", estimator, method="NRE_C", simulator=sim,
                          embedding=emb)


def _damaged_payloads(good):
    payload = torch.load(good, weights_only=True)
    key = next(iter(payload["state_dict"]))
    for entry in ("method", "embedding", "estimator", "build_kwargs", "simulator", "state_dict"):
        yield f"no {entry}", {k: v for k, v in payload.items() if k != entry}, f"the entry '{entry}' is missing"
    yield "state_dict int", {**payload, "state_dict": 7}, "'state_dict' is a int, expected a dict"
    yield "shape", {**payload, "state_dict": {**payload["state_dict"], key: torch.zeros(3, 3, 3)}}, \
        rf"{key}: \(3, 3, 3\) in the file vs"
    yield "value", {**payload, "state_dict": {**payload["state_dict"], key: "w"}}, "are not named tensors"


def _middle_of_largest_tensor(path) -> int:  # noqa: ANN001
    import zipfile

    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    o = info.header_offset
    start = o + 30 + int.from_bytes(raw[o + 26 : o + 28], "little") + int.from_bytes(raw[o + 28 : o + 30], "little")
    return start + info.file_size // 2


def test_damaged_checkpoints_are_refused_with_one_line(checkpoint, tmp_path):
    from glsbi_plugin.checkpoint import load_estimator

    load_estimator(checkpoint)  # the intact file loads
    for name, payload, match in _damaged_payloads(checkpoint):
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(ValueError, match=match):
            load_estimator(path)
    raw = checkpoint.read_bytes()
    cases = {"truncated": raw[: len(raw) // 2], "flipped": bytearray(raw)}
    cases["flipped"][_middle_of_largest_tensor(checkpoint)] ^= 0x40  # a weight changes: silent without CRC
    for name, data in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="damaged") as err:
            load_estimator(path)
        assert "\n" not in str(err.value)
