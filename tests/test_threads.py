"""Thread counts from the free cores, the overrides' precedence, XLA's device flag and JAX's platform."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glsbi_plugin import _threads
from glsbi_plugin._threads import ThreadPlan, choose_threads, configure_torch, configure_xla, cpu_only_platform


@pytest.mark.parametrize(("cores", "load", "free"), [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.4, 1), (2, 9.0, 1), (16, 3.2, 13), (4, None, 4),
])
def test_free_cores_subtracts_the_load(cores, load, free):
    assert _threads.free_cores(cores, load) == free


def test_precedence_flag_then_env_then_omp_then_free_cores():
    env = {"GLSBI_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert choose_threads(2, environ=env, cores=8, load=0.0).source == "--threads"
    assert choose_threads(2, environ=env, cores=8, load=0.0).torch == 2
    plan = choose_threads(None, environ=env, cores=8, load=0.0)
    assert (plan.torch, plan.xla_devices, plan.source) == (3, 3, "GLSBI_THREADS")
    plan = choose_threads(None, environ={"OMP_NUM_THREADS": "5"}, cores=8, load=0.0)
    assert (plan.torch, plan.source) == (4, "OMP_NUM_THREADS")  # torch capped at TORCH_MAX, XLA not
    assert plan.xla_devices == 5
    plan = choose_threads(None, environ={"GLSBI_THREADS": " "}, cores=2, load=1.5)
    assert (plan.torch, plan.xla_devices, plan.source) == (1, 1, "free cores")
    assert "torch 1 thread," in plan.describe() and "load 1.50" in plan.describe()


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_counts_are_refused_with_their_origin(bad):
    with pytest.raises(ValueError, match="GLSBI_THREADS="):
        choose_threads(None, environ={"GLSBI_THREADS": bad}, cores=2, load=0.0)
    with pytest.raises(ValueError, match="--threads="):
        choose_threads(bad, environ={}, cores=2, load=0.0)  # type: ignore[arg-type]


def test_defaults_read_this_machine():
    plan = choose_threads(None, environ={})
    assert plan.cores == len(os.sched_getaffinity(0)) and 1 <= plan.xla_devices <= plan.cores


def _plan(n: int, source: str = "free cores") -> ThreadPlan:
    return ThreadPlan(torch=n, xla_devices=n, cores=2, load=0.0, source=source)


def test_configure_xla_replaces_the_device_count_and_keeps_other_flags():
    env = {"XLA_FLAGS": "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"}
    assert configure_xla(_plan(1), env, user_flags="")
    assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=1"
    env = {}
    assert configure_xla(_plan(3), env, user_flags="")
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"


def test_configure_xla_keeps_the_users_own_count_unless_asked_explicitly():
    mine = "--xla_force_host_platform_device_count=7"
    env = {"XLA_FLAGS": mine}
    assert not configure_xla(_plan(1), env, user_flags=mine)
    assert env["XLA_FLAGS"] == mine
    assert configure_xla(_plan(1, "--threads"), env, user_flags=mine)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"


def test_configure_torch_through_the_environment_before_torch_starts():
    env: dict[str, str] = {}
    configure_torch(_plan(1), env)
    assert env == {"OMP_NUM_THREADS": "1"}


def test_torch_threads_context_restores_the_count():
    import torch

    before = torch.get_num_threads()
    with _threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_cpu_only_platform_only_where_nothing_is_requested_or_installed(monkeypatch):
    monkeypatch.setattr(_threads, "accelerator_installed", lambda: False)
    env: dict[str, str] = {}
    assert cpu_only_platform(env) and env == {"JAX_PLATFORMS": "cpu"}
    env = {"JAX_PLATFORMS": "cuda"}
    assert not cpu_only_platform(env) and env == {"JAX_PLATFORMS": "cuda"}
    monkeypatch.setattr(_threads, "accelerator_installed", lambda: True)
    env = {}
    assert not cpu_only_platform(env) and env == {}


def test_the_cli_sets_threads_and_platform_before_jax_starts(tmp_path):
    """In a fresh process: --threads reaches XLA's device count and torch, and JAX_PLATFORMS is cpu."""
    code = (
        "import os, sys\n"
        "from glsbi_plugin.apps import cli\n"
        "assert 'jax' not in sys.modules and 'torch' not in sys.modules\n"
        "plan = cli._prepare_process(1)\n"
        "import jax, torch\n"
        "print(len(jax.devices()), torch.get_num_threads(), os.environ.get('JAX_PLATFORMS'), plan.source)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS",
                                                            "GLSBI_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True)
    n_devices, n_torch, platform, source = out.stdout.split()
    assert (n_devices, n_torch, source) == ("1", "1", "--threads")
    assert platform == ("cpu" if not _threads.accelerator_installed() else "None")
    assert "Unable to initialize backend" not in out.stderr


def test_physics_module_prints_no_backend_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    out = subprocess.run([sys.executable, "-m", "glsbi_plugin.physics", "--steps", "2"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=True, timeout=300)
    assert "Final shape: (64, 64)" in out.stdout
    if not _threads.accelerator_installed():
        assert "backend" not in out.stderr.lower(), out.stderr
