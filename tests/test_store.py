"""SimulationBank: determinism, resume, integrity, dask, splits/loaders, crash safety, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from glsbi_plugin import __version__, make_prior, make_simulator
from glsbi_plugin.physics import TDGLConfig
from glsbi_plugin.store import SimulationBank, config_hash, description_diff

K = 8  # chunk size = vmapped width
CFG = TDGLConfig(shape=(16, 16), steps=300)  # ~0.1 s per chunk: slow enough to kill a fill mid-way
BOUNDS = {"field": (0.1, 0.4)}
SEED = 7


@pytest.fixture(scope="module")
def sim():
    return make_simulator(config=CFG, bounds=BOUNDS, batch_size=K)


@pytest.fixture(scope="module")
def ref(sim, tmp_path_factory):
    """A 20-sample bank (chunks of 8, 8, 4) filled in one go, in this process."""
    bank = SimulationBank.create(tmp_path_factory.mktemp("ref") / "ref.zarr", sim, n=20, chunk_size=K, seed=SEED)
    report = bank.fill(progress=False)
    assert report.simulated == [0, 1, 2] and report.n_simulations == 20
    return bank


def as_legacy(path: Path) -> zarr.Group:
    """Make a bank look as banks written before the integrity digest do (no digest, no recorded copy)."""
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["integrity"]
    del group["theta"].attrs["glsbi_bank_record"]
    return group


def arrays(bank: SimulationBank) -> dict[str, np.ndarray]:
    return {k: bank.group[k][:] for k in ("theta", "seeds", "x", "checksum", "filled")}


def assert_same_bank(a: SimulationBank, b: SimulationBank) -> None:
    for (name, u), v in zip(arrays(a).items(), arrays(b).values(), strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape, name
        assert u.tobytes() == v.tobytes(), f"{name} differs"


# -- creation, attributes, determinism -----------------------------------------------------
def test_attributes_and_pure_chunks(ref, sim, tmp_path):
    a = ref.attrs
    assert a["config_hash"] == config_hash(sim.describe()) and len(a["config_hash"]) == 64
    assert a["simulator"]["config"]["steps"] == 300 and a["names"] == ["eta", "field"]
    assert a["low"] == [0.0, 0.1] and a["high"] == [0.3, 0.4] and a["seed"] == SEED
    assert a["package_version"] == __version__ and a["chunk_size"] == K and a["batch_size"] == K
    assert ref.group["x"].chunks == (K, 2, 16, 16) and ref.group["theta"].dtype == np.float32
    # chunk c is a pure function of (seed, c); θ inside the box; chunks differ
    other = SimulationBank.create(tmp_path / "b.zarr", sim, n=1000, chunk_size=K, seed=SEED)
    for c in range(3):
        t1, s1 = ref.chunk_inputs(c)
        t2, s2 = other.chunk_inputs(c)
        assert np.array_equal(t1, t2) and np.array_equal(s1, s2)
        assert torch.all(make_prior(bounds=BOUNDS).support.check(torch.from_numpy(t1)))
    assert not np.array_equal(ref.chunk_inputs(0)[0], ref.chunk_inputs(1)[0])
    assert not np.array_equal(ref.chunk_inputs(0)[0], SimulationBank.create(
        tmp_path / "c.zarr", sim, n=8, chunk_size=K, seed=SEED + 1).chunk_inputs(0)[0])
    # stored rows are the simulator's output for the stored θ and seeds at the bank's width
    theta, seeds = ref.chunk_inputs(1)
    assert np.array_equal(ref.group["theta"][8:16], theta) and np.array_equal(ref.group["seeds"][8:16], seeds)
    x_chunk = sim.simulate_seeds(torch.from_numpy(theta), seeds, shard=False).numpy()  # as the bank does
    assert np.array_equal(ref.group["x"][8:16], x_chunk)


def test_resume_and_any_order_are_bit_identical(ref, sim, tmp_path):
    bank = SimulationBank.create(tmp_path / "b.zarr", sim, n=20, chunk_size=K, seed=SEED)
    assert bank.fill(n=3, progress=False).simulated == [0]  # whole chunks
    assert bank.fill(chunks=[2], progress=False).simulated == [2]
    again = SimulationBank.open(bank.path, sim)  # "another worker" resumes
    assert again.fill(progress=False).simulated == [1]
    assert again.fill(progress=False).simulated == []  # nothing left: nothing rewritten
    assert_same_bank(again, ref)
    # sample i does not depend on the bank's length: a 16-sample bank is ref's prefix
    short = SimulationBank.create(tmp_path / "s.zarr", sim, n=16, chunk_size=K, seed=SEED)
    short.fill(progress=False)
    assert short.group["x"][:].tobytes() == ref.group["x"][:16].tobytes()


def test_config_mismatch_is_refused_with_the_differing_fields(ref, tmp_path):
    other = make_simulator(config=CFG.replace(steps=500), bounds={"field": (0.1, 0.5)}, batch_size=K)
    with pytest.raises(ValueError, match=r"config\.steps: 300 \(bank\) vs 500 \(given\)") as e:
        SimulationBank.open(ref.path, other)
    assert "high: [0.3, 0.4] (bank) vs [0.3, 0.5] (given)" in str(e.value)
    with pytest.raises(ValueError, match="appending to a bank with another simulator configuration"):
        SimulationBank.open(ref.path).extend(40, simulator=other)
    assert description_diff({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}) == ["a.b: [1, 2] (bank) vs [1, 3] (given)"]
    assert config_hash({"h": 1}) == config_hash({"h": 1.0})  # canonical numbers


def test_bank_written_before_the_scheme_option_still_opens(ref, sim, tmp_path):
    """A bank whose stored description lacks ``scheme``/``stages`` (written before SK-ROCK existed)
    was simulated with Euler: it opens with the Euler simulator and refuses an SK-ROCK one."""
    old = tmp_path / "old.zarr"
    shutil.copytree(ref.path, old)
    group = as_legacy(old)
    desc = dict(group.attrs["simulator"])
    desc["config"] = {k: v for k, v in desc["config"].items() if k not in ("scheme", "stages")}
    group.attrs.update({"simulator": desc, "config_hash": config_hash(desc)})
    bank = SimulationBank.open(old, sim)
    assert bank.fill(progress=False).simulated == [], "every chunk is already there"
    assert bank.group["x"][:].tobytes() == ref.group["x"][:].tobytes()
    skrock = make_simulator(config=CFG.replace(scheme="skrock", stages=2), bounds=BOUNDS, batch_size=K)
    expected = r'config\.scheme: "euler" \(bank\) vs "skrock" \(given\); config\.stages: 1 \(bank\) vs 2'
    with pytest.raises(ValueError, match=expected):
        SimulationBank.open(old, skrock)


def test_extend_keeps_filled_chunks(sim, tmp_path):
    bank = SimulationBank.create(tmp_path / "b.zarr", sim, n=16, chunk_size=K, seed=SEED)
    bank.fill(progress=False)
    before = arrays(bank)
    bank.extend(24, simulator=sim)
    assert bank.n == 24 and bank.filled_chunks() == [0, 1]
    assert bank.fill(progress=False).simulated == [2]
    after = arrays(bank)
    assert after["x"][:16].tobytes() == before["x"].tobytes()
    with pytest.raises(ValueError, match="must be >= 25"):
        bank.extend(24)


# -- integrity --------------------------------------------------------------------------------
def test_corrupt_and_truncated_chunks_are_detected_and_repaired(ref, tmp_path):
    path = tmp_path / "b.zarr"
    shutil.copytree(ref.path, path)
    bank = SimulationBank.open(path)
    assert bank.verify().ok
    bank._chunk_file("x", 1).write_bytes(b"\x00garbage" * 7)  # overwritten chunk
    bank._chunk_file("theta", 2).unlink()  # truncated: a chunk file deleted
    intact = bank._chunk_file("x", 0)
    stamp = (intact.read_bytes(), intact.stat().st_mtime_ns)
    report = bank.verify()
    assert not report.ok and sorted(report.corrupt) == [1, 2]
    assert report.corrupt[1].startswith("unreadable") and "theta missing" in report.corrupt[2]
    assert bank.fill(progress=False).simulated == []  # without repair: nothing touched
    fixed = bank.fill(repair=True, progress=False)
    assert fixed.repaired == [1, 2] and fixed.simulated == [1, 2]
    assert bank.verify().ok
    assert_same_bank(bank, ref)
    assert (intact.read_bytes(), intact.stat().st_mtime_ns) == stamp  # the valid chunk was never rewritten
    bank._chunk_file("filled", 0).write_bytes(b"\xff" * 9)  # a garbled commit flag
    assert bank.verify().corrupt == {0: "filled flag unreadable (RuntimeError)"}  # zstd cannot decode it
    with pytest.raises(ValueError, match=r"filled flags of chunks \[0\] are unreadable"):
        bank.fill(progress=False)
    assert bank.fill(repair=True, progress=False).repaired == [0]
    assert_same_bank(bank, ref)


# -- dask -------------------------------------------------------------------------------------
def test_local_cluster_fill_equals_in_process(ref, sim, tmp_path):
    pytest.importorskip("distributed")
    bank = SimulationBank.create(tmp_path / "b.zarr", sim, n=20, chunk_size=K, seed=SEED)
    bank.fill(n=1, progress=False)  # chunk 0 here, the rest on two worker processes
    report = bank.fill(scheduler="local", n_workers=2, progress=False)
    assert report.simulated == [1, 2]
    assert bank.verify().ok
    assert_same_bank(bank, ref)
    with pytest.raises(ValueError, match="scheduler='nonsense'"):
        bank.fill(scheduler="nonsense")


# -- reading ----------------------------------------------------------------------------------
def test_splits_never_overlap_and_are_stable(sim, tmp_path):
    bank = SimulationBank.create(tmp_path / "b.zarr", sim, n=100, chunk_size=K, seed=SEED)  # 13 chunks
    bank.group["filled"][:] = True  # mark only (no simulation): the splits read the flags alone
    for by in ("chunk", "sample"):
        s = bank.split_indices((0.6, 0.2, 0.2), seed=3, by=by)
        sets = [set(v.tolist()) for v in s.values()]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert set().union(*sets) == set(range(100))
        if by == "chunk":  # whole chunks stay together
            for v in s.values():
                for c in np.unique(v // K):
                    assert np.isin(np.arange(c * K, min(c * K + K, 100)), v).all()
        else:
            assert [len(v) for v in s.values()] == [60, 20, 20]
        bank.group["filled"][4] = False  # a sample keeps its split while the bank fills
        partial = bank.split_indices((0.6, 0.2, 0.2), seed=3, by=by)
        for name in s:
            assert set(partial[name].tolist()) == set(s[name].tolist()) - set(range(32, 40))
        bank.group["filled"][4] = True
    with pytest.raises(ValueError, match="fractions"):
        bank.split_indices((0.5, 0.2, 0.2))


def test_to_torch_and_chunked_loader(ref):
    theta, x = ref.to_torch()
    assert theta.shape == (20, 2) and x.shape == (20, 2, 16, 16) and x.dtype == torch.float32
    from glsbi_plugin.inference import build_inference

    build_inference("NPE", make_prior(bounds=BOUNDS)).append_simulations(theta, x)  # accepted as is
    kw = {"fractions": (0.5, 0.0, 0.5), "by": "sample", "split_seed": 1}
    t_tr, x_tr = ref.to_torch(split="train", fractions=(0.5, 0.0, 0.5), by="sample", seed=1)
    batches = list(ref.loader(3, split="train", shuffle=False, **kw))
    assert [len(b[0]) for b in batches] == [3, 3, 3, 1] and len(ref.loader(3, split="train", **kw)) == 4
    assert torch.equal(torch.cat([b[0] for b in batches]), t_tr)
    assert torch.equal(torch.cat([b[1] for b in batches]), x_tr)
    shuffled = list(ref.loader(4, split="train", seed=5, drop_last=True, **kw))
    assert [len(b[0]) for b in shuffled] == [4, 4]
    rows = {tuple(r.tolist()) for b in shuffled for r in b[0]}
    assert rows <= {tuple(r.tolist()) for r in t_tr}
    t_te, _ = ref.to_torch(split="test", fractions=(0.5, 0.0, 0.5), by="sample", split_seed=1)
    test_rows = {tuple(r.tolist()) for r in t_te}
    assert not rows & test_rows


# -- crash safety -----------------------------------------------------------------------------
_FILL = (
    "import sys; from glsbi_plugin.store import SimulationBank; SimulationBank.open(sys.argv[1]).fill(progress=False)"
)


def test_sigkill_mid_fill_then_resume(sim, tmp_path):
    n_chunks = 12
    bank = SimulationBank.create(tmp_path / "crash.zarr", sim, n=n_chunks * K, chunk_size=K, seed=11)
    # the child compiles on its own (no shared compilation cache): a cross-process bit-identity check too
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    proc = subprocess.Popen([sys.executable, "-c", _FILL, str(bank.path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while not bank._chunk_file("filled", 0).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child filled nothing in 90 s"
            time.sleep(0.002)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    reopened = SimulationBank.open(bank.path, sim)
    report = reopened.verify()
    done = report.filled
    assert report.ok and 1 <= len(done) < n_chunks, report.summary()  # every marked chunk is intact
    rerun = reopened.fill(progress=False)
    assert rerun.simulated == [c for c in range(n_chunks) if c not in done]  # only the rest
    whole = SimulationBank.create(tmp_path / "whole.zarr", sim, n=n_chunks * K, chunk_size=K, seed=11)
    whole.fill(progress=False)
    assert_same_bank(reopened, whole)
    print(f"crash test: {len(done)} chunks filled before SIGKILL, {len(rerun.simulated)} simulated on rerun")


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "match"), [
    ({"n": 0}, "n=0: must be >= 1"), ({"n": -5}, "n=-5"), ({"n": 2.5}, "must be an integer"),
    ({"n": 10, "chunk_size": 0}, "chunk_size=0"),
    ({"n": 10, "seed": -1}, r"seed=-1: the bank seed must be an integer in \[0, 2\*\*63 - 1\]"),
    ({"n": 10, "batch_size": 0}, "batch_size=0"),
])
def test_bad_counts(sim, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        SimulationBank.create(tmp_path / "b.zarr", sim, **kw)
    assert not (tmp_path / "b.zarr").exists()


def test_bad_paths_and_arguments(ref, sim, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SimulationBank.open(tmp_path / "nowhere.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a glsbi simulation bank"):
        SimulationBank.open(tmp_path / "plain")
    zarr.open_group(store=str(tmp_path / "other.zarr"), mode="w").create_array("a", shape=(3,), dtype="f4")
    with pytest.raises(ValueError, match="not a glsbi simulation bank"):
        SimulationBank.open(tmp_path / "other.zarr")
    with pytest.raises(ValueError, match="already exists"):
        SimulationBank.create(ref.path, sim, n=20, chunk_size=K, seed=SEED)
    assert SimulationBank.create(ref.path, sim, n=20, chunk_size=K, seed=SEED, exist_ok=True).n_filled == 20
    with pytest.raises(ValueError, match=r"seed: 7 \(bank\) vs 8 \(given\)"):
        SimulationBank.create(ref.path, sim, n=20, chunk_size=K, seed=8, exist_ok=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot create bank"):  # a path under a regular file fails even for root
        SimulationBank.create(tmp_path / "file" / "bank.zarr", sim, n=8)
    for bad, match in [({"n": 0}, "n=0"), ({"n": 21}, "exceeds"), ({"batch_size": 4}, "batch_size=4"),
                       ({"chunks": [3]}, "chunks must lie")]:
        with pytest.raises(ValueError, match=match):
            ref.fill(progress=False, **bad)


def test_read_only_directory(sim, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing (the path-under-a-file case "
                    "in test_bad_paths_and_arguments covers unwritable locations)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot create bank"):
            SimulationBank.create(ro / "bank.zarr", sim, n=8)
    finally:
        ro.chmod(0o700)


def test_bank_dir_keeps_no_stray_files_after_normal_fill(ref):
    assert not list(Path(ref.path).rglob("*.partial"))


def test_create_exist_ok_without_seed_reopens(sim, tmp_path):
    bank = SimulationBank.create(tmp_path / "b.zarr", sim, 16, chunk_size=K)
    again = SimulationBank.create(tmp_path / "b.zarr", sim, 16, chunk_size=K, exist_ok=True)
    assert again.seed == bank.seed
    with pytest.raises(ValueError, match="seed"):
        SimulationBank.create(tmp_path / "b.zarr", sim, 16, chunk_size=K, seed=bank.seed + 1, exist_ok=True)


def test_loader_reshuffles_every_epoch_in_worker_processes(ref):
    kw = {"fractions": (1.0, 0.0, 0.0), "by": "sample"}
    loader = ref.loader(4, split="train", shuffle=True, seed=3, num_workers=1, **kw)
    torch.manual_seed(0)
    epochs = [torch.cat([t for t, _ in loader]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == sorted(epochs[1].tolist())  # the same samples
    assert not torch.equal(epochs[0], epochs[1])  # in a new order
