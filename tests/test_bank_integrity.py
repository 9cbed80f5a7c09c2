"""A bank that cannot serve wrong data: verified reads, self-verifying metadata, non-destructive
repairs, one writer at a time, clean interrupts, full disks, half-created banks, old banks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from glsbi_plugin import make_simulator
from glsbi_plugin.physics import TDGLConfig
from glsbi_plugin.store import (
    BankDamagedError,
    BankLockedError,
    CorruptChunkError,
    SimulationBank,
    config_hash,
)
from glsbi_plugin.store._lock import writer_lock

K = 8
CFG = TDGLConfig(shape=(16, 16), steps=300)  # ~0.1 s per chunk: a child can be stopped mid-fill
BOUNDS = {"field": (0.1, 0.4)}
SEED = 3
ARRAYS = ("theta", "seeds", "x", "checksum", "filled")


@pytest.fixture(scope="module")
def sim():
    return make_simulator(config=CFG, bounds=BOUNDS, batch_size=K)


@pytest.fixture(scope="module")
def ref(sim, tmp_path_factory):
    bank = SimulationBank.create(tmp_path_factory.mktemp("ref") / "ref.zarr", sim, n=3 * K, chunk_size=K, seed=SEED)
    bank.fill(progress=False)
    return bank


def copy(ref: SimulationBank, tmp_path: Path, name: str = "b.zarr") -> Path:
    path = tmp_path / name
    shutil.copytree(ref.path, path)
    return path


def arrays(path: Path) -> dict[str, bytes]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:].tobytes() for name in ARRAYS}


def stamps(path: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in path.rglob("*") if p.is_file() and "/c/" in f"/{p.relative_to(path)}"}


def edit_root(path: Path, edit) -> None:  # noqa: ANN001
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta, indent=2))


# -- 1. reads verify ------------------------------------------------------------------------
def test_a_silently_changed_chunk_is_refused_by_every_reader(ref, tmp_path):
    path = copy(ref, tmp_path)
    group = zarr.open_group(str(path), mode="r+")
    x = group["x"][K : 2 * K]
    x[3, 0, 5, 5] = np.nan  # decodes fine: only the checksum can tell
    group["x"][K : 2 * K] = x
    bank = SimulationBank.open(path)
    for read in (lambda: bank.to_torch(), lambda: list(bank.loader(4, split=None)),
                 lambda: bank.to_torch("train", fractions=(1.0, 0.0, 0.0), by="sample")):
        with pytest.raises(CorruptChunkError, match=r"chunk 1 \(samples 8-15\) is corrupt .*checksum mismatch: its "
                                                    r"images x .* not served.*glsbi bank fill .* --repair"):
            read()
    assert bank.to_torch(verify=False)[1].isnan().any()  # what an unverified read would have served
    report = bank.fill(repair=True, progress=False)
    assert report.repaired == [1] and report.simulated == [1]
    assert arrays(path) == arrays(ref.path)
    assert bank.to_torch()[1].numpy().tobytes() == ref.to_torch()[1].numpy().tobytes()


def test_a_flipped_bit_on_disk_is_refused_in_loader_worker_processes(ref, tmp_path):
    path = copy(ref, tmp_path)
    f = path / "x" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    loader = SimulationBank.open(path, read_only=True).loader(4, split=None, num_workers=1)
    with pytest.raises(CorruptChunkError, match="chunk 2"):
        list(loader)


# -- 2. self-verifying metadata ----------------------------------------------------------------
@pytest.mark.parametrize(("edit", "field"), [
    (lambda a: a["simulator"]["config"].update(steps=301), "simulator.config.steps: 301 now vs 300 recorded"),
    (lambda a: a.update(seed=SEED + 1), f"seed: {SEED + 1} now vs {SEED} recorded"),
    (lambda a: a.update(config_hash="0" * 64), "config_hash:"),
    (lambda a: a.update(chunk_size=4), "chunk_size: 4 now vs 8 recorded"),
    (lambda a: a["low"].__setitem__(1, 0.2), "low: "),
    (lambda a: a.pop("integrity"), "integrity"),
])
def test_an_edited_attribute_is_refused_naming_it_and_repaired(ref, tmp_path, edit, field):
    path = copy(ref, tmp_path)
    before, files = arrays(path), stamps(path)
    edit_root(path, edit)
    with pytest.raises(BankDamagedError, match=r"edited after creation \(.*" + field.replace("(", r"\(")):
        SimulationBank.open(path, read_only=True)
    bank = SimulationBank.open(path)  # writable: the bank can be repaired, nothing else
    for refused in (bank.to_torch, bank.verify, lambda: bank.fill(progress=False)):
        with pytest.raises(BankDamagedError, match="--repair"):
            refused()
    report = bank.fill(repair=True, progress=False)
    assert report.simulated == [] and report.repaired == []  # metadata only: no chunk touched
    assert arrays(path) == before and stamps(path) == files
    assert json.loads((path / "zarr.json").read_text())["attributes"] == ref.attrs
    assert SimulationBank.open(path, read_only=True).verify().ok


def test_the_config_hash_of_an_unchanged_simulator_is_unchanged(ref, sim):
    assert ref.config_hash == config_hash(sim.describe())
    SimulationBank.open(ref.path, sim)  # the same simulator is accepted


# -- 3. repairs never destroy ------------------------------------------------------------------
def test_lost_filled_and_checksum_arrays_are_rebuilt_without_losing_verified_chunks(ref, tmp_path):
    path = copy(ref, tmp_path)
    shutil.rmtree(path / "filled")
    files = stamps(path)
    bank = SimulationBank.open(path)
    report = bank.fill(repair=True, progress=False)
    assert report.simulated == [] and sorted(report.recovered) == [0, 1, 2]  # re-marked from their checksums
    assert arrays(path) == arrays(ref.path)
    assert {k: v for k, v in stamps(path).items() if not k.startswith("filled")} == files  # data never rewritten
    shutil.rmtree(path / "checksum")  # the checksums themselves: re-simulated, bytes compared
    files = stamps(path)
    report = SimulationBank.open(path).fill(repair=True, progress=False)
    assert report.repaired == [0, 1, 2]
    assert arrays(path) == arrays(ref.path)
    data = ("theta", "seeds", "x")  # their chunk files are never rewritten (the flags are re-committed)
    assert {k: v for k, v in stamps(path).items() if k.startswith(data)} == {
        k: v for k, v in files.items() if k.startswith(data)}


def test_a_deleted_flag_chunk_is_re_marked_by_a_plain_fill(ref, tmp_path):
    path = copy(ref, tmp_path)
    (path / "filled" / "c" / "1").unlink()
    bank = SimulationBank.open(path)
    assert bank.verify().recoverable == [1]
    report = bank.fill(progress=False)
    assert report.simulated == [] and report.recovered == [1]
    assert arrays(path) == arrays(ref.path)


def test_a_lost_root_zarr_json_is_restored_from_the_recorded_copy(ref, tmp_path):
    path = copy(ref, tmp_path)
    (path / "zarr.json").unlink()
    with pytest.raises(BankDamagedError, match="root metadata zarr.json is missing"):
        SimulationBank.open(path, read_only=True)
    SimulationBank.open(path).fill(repair=True, progress=False)
    assert SimulationBank.open(path, read_only=True).attrs == ref.attrs
    assert arrays(path) == arrays(ref.path)


def test_half_created_bank_is_replaced_and_a_failed_create_leaves_nothing(sim, tmp_path):
    path = tmp_path / "half.zarr"
    SimulationBank.create(path, sim, n=16, chunk_size=K, seed=1)
    meta = json.loads((path / "zarr.json").read_text())
    (path / "zarr.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "attributes"}))
    shutil.rmtree(path / "filled")  # killed before the last arrays and the commit point
    with pytest.raises(ValueError, match="half-created bank .* run the same `glsbi bank create` again"):
        SimulationBank.open(path)
    bank = SimulationBank.create(path, sim, n=16, chunk_size=K, seed=1)
    assert bank.fill(progress=False).simulated == [0, 1]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a glsbi simulation bank"):
        SimulationBank.create(plain, sim, n=8, overwrite=True)
    assert (plain / "notes.txt").read_text() == "mine"


def test_create_on_an_existing_bank_says_what_to_do(ref, sim, tmp_path):
    path = copy(ref, tmp_path)
    with pytest.raises(ValueError, match=f"already exists .* run `glsbi bank fill {path}`.*another path or pass "
                                         r"--force \(overwrite=True\)"):
        SimulationBank.create(path, sim, n=3 * K, chunk_size=K, seed=SEED)
    fresh = SimulationBank.create(path, sim, n=K, chunk_size=K, seed=9, overwrite=True)
    assert fresh.n == K and fresh.n_filled == 0


_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from glsbi_plugin import make_simulator
    from glsbi_plugin.physics import TDGLConfig
    from glsbi_plugin.store import SimulationBank
    sim = make_simulator(config=TDGLConfig(shape=(16, 16), steps=300), bounds={"field": (0.1, 0.4)}, batch_size=8)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, hard))
    try:
        SimulationBank.create(sys.argv[1] + "/new.zarr", sim, n=24, chunk_size=8, seed=3)
    except OSError as e:
        print("create:", e, file=sys.stderr)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    bank = SimulationBank.create(sys.argv[1] + "/fill.zarr", sim, n=24, chunk_size=8, seed=3)
    bank.fill(n=8, progress=False)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))  # an x chunk needs more: the disk is "full"
    try:
        bank.fill(progress=False)
    except OSError as e:
        print("fill:", type(e).__name__, e, file=sys.stderr)
""")


def test_full_disk_during_create_and_fill(ref, tmp_path):
    out = subprocess.run([sys.executable, "-c", _DISK_FULL, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "create: cannot create bank" in out.stderr and "nothing was left behind" in out.stderr
    assert not (tmp_path / "new.zarr").exists()
    assert "fill:" in out.stderr
    bank = SimulationBank.open(tmp_path / "fill.zarr")
    report = bank.verify()
    assert report.ok and report.filled == [0]  # the chunk that did not fit was never marked
    assert bank.fill(progress=False).simulated == [1, 2]
    assert arrays(bank.path) == arrays(ref.path)


# -- 4. one writer at a time; 5. Ctrl-C ----------------------------------------------------------
def test_a_second_writer_waits_or_leaves(ref, tmp_path):
    path = copy(ref, tmp_path)
    bank = SimulationBank.open(path)
    with writer_lock(path, action="fill"):
        with pytest.raises(BankLockedError, match="another process is filling or repairing"):
            bank.fill(progress=False)
        t0 = time.monotonic()
        with pytest.raises(BankLockedError, match="after waiting 0.3 s"):
            bank.fill(progress=False, wait=0.3)
        assert time.monotonic() - t0 >= 0.3
        with pytest.raises(BankLockedError):
            bank.extend(4 * K)
    assert bank.fill(progress=False).simulated == []  # released: the fill proceeds
    with pytest.raises(ValueError, match="wait=-1"):
        bank.fill(wait=-1)


_CHILD_FILL = textwrap.dedent("""
    import signal
    import sys
    # a terminal's Ctrl-C: Python's own handler, even when the test runner was started in the
    # background (POSIX shells start background jobs with SIGINT ignored, and children inherit it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from glsbi_plugin.store import FillInterrupted, SimulationBank
    try:
        SimulationBank.open(sys.argv[1]).fill(progress=False)
    except FillInterrupted as e:
        print(e, file=sys.stderr)
        sys.exit(130)
""")


def test_ctrl_c_mid_fill_one_line_resumable_and_a_second_fill_only_counts_its_own(sim, tmp_path):
    n_chunks = 400  # ~40 s of work: a loaded machine cannot finish it before the Ctrl-C
    bank = SimulationBank.create(tmp_path / "c.zarr", sim, n=n_chunks * K, chunk_size=K, seed=SEED)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD_FILL, str(bank.path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not (bank.path / "filled" / "c" / "1").exists():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the child filled nothing in 120 s"
            time.sleep(0.01)
        with pytest.raises(BankLockedError):  # the child holds the lock
            bank.fill(progress=False)
        os.kill(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and f"resume with `glsbi bank fill {bank.path}`" in lines[0]
    done = SimulationBank.open(bank.path).verify()
    assert done.ok and 2 <= len(done.filled) < n_chunks
    m = max(done.filled) + 3  # resume a little past where it stopped
    report = SimulationBank.open(bank.path).fill(m * K, progress=False)
    assert report.simulated == [c for c in range(m) if c not in done.filled]  # only what it did
    assert report.n_simulations == K * len(report.simulated)
    theta, seeds = SimulationBank.open(bank.path).chunk_inputs(m - 1)
    assert np.array_equal(zarr.open_group(str(bank.path), mode="r")["seeds"][(m - 1) * K : m * K], seeds)


def test_the_heartbeat_shows_progress_while_a_chunk_runs():
    from tqdm import tqdm

    from glsbi_plugin.store._progress import heartbeat

    buf = io.StringIO()
    with tqdm(total=8, file=buf, mininterval=0) as bar, heartbeat(bar, "chunk 0 (1/1)", True, every=0.05):
        assert "chunk 0 (1/1): started" in buf.getvalue()  # at once, before any result
        time.sleep(0.3)
    assert "chunk 0 (1/1): 0 s" in buf.getvalue()


# -- old banks ---------------------------------------------------------------------------------
def _as_legacy(path: Path) -> None:
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["integrity"]
    del group["theta"].attrs["glsbi_bank_record"]


def test_a_bank_written_before_the_digest_opens_and_is_upgraded_without_touching_data(ref, sim, tmp_path):
    path = copy(ref, tmp_path)
    _as_legacy(path)
    files, before = stamps(path), arrays(path)
    old = SimulationBank.open(path, sim, read_only=True)
    assert old.config_hash == ref.config_hash and old.verify().ok
    assert old.to_torch()[1].numpy().tobytes() == ref.to_torch()[1].numpy().tobytes()
    assert SimulationBank.open(path).fill(progress=False).simulated == []  # the upgrade
    assert "integrity" in zarr.open_group(str(path), mode="r").attrs
    assert stamps(path) == files and arrays(path) == before
    assert SimulationBank.open(path, sim, read_only=True).config_hash == ref.config_hash


def test_an_edited_old_bank_is_refused(ref, tmp_path):
    path = copy(ref, tmp_path)
    _as_legacy(path)
    edit_root(path, lambda a: a.update(seed=SEED + 1))
    with pytest.raises(BankDamagedError, match=r"chunk 0 do not derive from the recorded seed 4"):
        SimulationBank.open(path)
    path2 = copy(ref, tmp_path, "c.zarr")
    _as_legacy(path2)
    edit_root(path2, lambda a: a["simulator"]["config"].update(steps=301))
    with pytest.raises(BankDamagedError, match="config_hash .* does not match the recorded simulator description"):
        SimulationBank.open(path2)
    path3 = copy(ref, tmp_path, "d.zarr")
    _as_legacy(path3)
    edit_root(path3, lambda a: a.update(chunk_size=4))
    with pytest.raises(BankDamagedError, match=r"array 'theta': chunks \(8, 2\) in theta/zarr.json, but the bank's "
                                               r"attributes give \(4, 2\)"):
        SimulationBank.open(path3)


def test_ctrl_c_during_a_dask_fill_is_one_clean_stop(tmp_path, capfd):
    """A terminal's Ctrl-C reaches the client and every worker process: the client stops with one
    FillInterrupted, the workers (started with SIGINT ignored) print nothing, the bank resumes."""
    pytest.importorskip("distributed")
    import threading

    import psutil

    from glsbi_plugin.store import FillInterrupted

    slow = make_simulator(config=CFG.replace(steps=1000), bounds=BOUNDS, batch_size=K)
    n_chunks = 200  # far more than a loaded machine fills before the Ctrl-C
    bank = SimulationBank.create(tmp_path / "d.zarr", slow, n=n_chunks * K, chunk_size=K, seed=SEED)

    def ctrl_c() -> None:
        deadline = time.monotonic() + 240
        while not any((bank.path / "filled" / "c" / str(c)).exists() for c in range(n_chunks)):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ctrl_c, daemon=True)
    # Python's Ctrl-C handler, even when the test runner runs in the background with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        thread.start()
        with pytest.raises(FillInterrupted, match=r"resume with `glsbi bank fill .*d.zarr`"):
            bank.fill(scheduler="local", n_workers=2, progress=False)
        thread.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    time.sleep(1.0)  # anything the workers would still print
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert len([ln for ln in err.splitlines() if ln.strip()]) <= 1, err[-3000:]
    done = SimulationBank.open(bank.path).verify()
    assert done.ok and 1 <= len(done.filled) < n_chunks
    assert SimulationBank.open(bank.path).fill(progress=False, n=2 * K).simulated == \
        [c for c in (0, 1) if c not in done.filled]
