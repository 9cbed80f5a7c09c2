"""Tests of ``glsbi_plugin.bridge``: DLPack exchange (zero-copy where promised) and JAX-in-autograd."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from glsbi_plugin.bridge import to_jax, to_torch, torch_function

LOGGER = "glsbi_plugin.bridge"


@pytest.fixture
def x64() -> Iterator[None]:
    """64-bit JAX for one test (``jax.enable_x64`` is a context manager; the setting is restored)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def no_x64() -> Iterator[None]:
    """32-bit JAX for one test (``tests/conftest.py`` turns 64-bit on for the whole session)."""
    with jax.enable_x64(False):
        yield


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def _ptr(a: jax.Array) -> int:
    return a.unsafe_buffer_pointer()


# ------------------------------------------------------------------------------ zero copy


def test_torch_to_jax_shares_memory_on_cpu() -> None:
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)  # fresh allocation: 64-byte aligned
    assert t.data_ptr() % 64 == 0
    a = to_jax(t)
    assert a.dtype == jnp.float32 and a.shape == (4, 6)
    assert _ptr(a) == t.data_ptr()
    np.testing.assert_array_equal(np.asarray(a), t.numpy())


def test_jax_to_torch_shares_memory_on_cpu() -> None:
    a = jnp.arange(24, dtype=jnp.float32).reshape(4, 6)
    t = to_torch(a)
    assert t.dtype == torch.float32 and t.shape == (4, 6)
    assert t.data_ptr() == _ptr(a)
    np.testing.assert_array_equal(t.numpy(), np.asarray(a))


def test_round_trip_keeps_the_buffer() -> None:
    t = torch.randn(3, 5)
    back = to_torch(to_jax(t))
    assert back.data_ptr() == t.data_ptr()
    torch.testing.assert_close(back, t, rtol=0, atol=0)


def test_copy_flag_gives_independent_buffers() -> None:
    t = torch.randn(4, 4)
    a = to_jax(t, copy=True)
    assert _ptr(a) != t.data_ptr()
    t.zero_()
    assert float(jnp.abs(a).sum()) > 0
    b = jnp.ones((4, 4))
    u = to_torch(b, copy=True)
    assert u.data_ptr() != _ptr(b)


def test_transpose_is_imported_without_copy() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = to_jax(t.T)  # a permutation of a dense buffer: JAX adopts it as is
    assert a.shape == (4, 3)
    assert _ptr(a) == t.data_ptr()
    np.testing.assert_array_equal(np.asarray(a), t.T.numpy())


def test_unaligned_view_is_correct_and_logged(debug_log: pytest.LogCaptureFixture) -> None:
    t = torch.arange(65, dtype=torch.float32)[1:]  # offset 4 bytes: the XLA CPU client copies it
    a = to_jax(t)
    np.testing.assert_array_equal(np.asarray(a), t.numpy())
    assert "aligned" in debug_log.text


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "dtype",
    [torch.float32, torch.int32, torch.bool, torch.uint8, torch.int8, torch.float16, torch.bfloat16, torch.complex64],
)
def test_round_trip_preserves_dtype_and_values(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(5, 7, generator=g) * 10).to(dtype)
    a = to_jax(t)
    assert a.shape == (5, 7)
    assert str(a.dtype) == str(dtype).removeprefix("torch.")
    back = to_torch(a)
    assert back.dtype == dtype
    torch.testing.assert_close(back, t, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.T,
        lambda t: t[:, ::2],
        lambda t: t[1:, 1:3],
        lambda t: t.T[1:4],
        lambda t: t[:1].expand(6, 8),
        lambda t: t[:, None, :],
    ],
    ids=["transpose", "step-slice", "window", "transposed-window", "expand", "unsqueeze"],
)
def test_non_contiguous_round_trip(make) -> None:
    t = make(torch.randn(6, 8))
    a = to_jax(t)
    assert a.shape == tuple(t.shape)
    np.testing.assert_array_equal(np.asarray(a), t.numpy())
    torch.testing.assert_close(to_torch(a), t, rtol=0, atol=0)


def test_strided_slice_is_copied_with_a_log(debug_log: pytest.LogCaptureFixture) -> None:
    t = torch.randn(6, 8)[:, ::2]
    np.testing.assert_array_equal(np.asarray(to_jax(t)), t.numpy())
    assert "not a permutation of a dense buffer" in debug_log.text


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.bool])
def test_zero_dim_and_empty(dtype: torch.dtype) -> None:
    s = torch.tensor(1, dtype=dtype)
    a = to_jax(s)
    assert a.shape == () and a.dtype == jnp.dtype(str(dtype).removeprefix("torch."))
    assert to_torch(a).item() == s.item()
    e = torch.zeros(0, 3, dtype=dtype)
    assert to_jax(e).shape == (0, 3)
    assert to_torch(jnp.zeros((0, 3))).shape == (0, 3)


def test_requires_grad_is_detached() -> None:
    t = torch.randn(3, 4, requires_grad=True)
    a = to_jax(t)
    assert _ptr(a) == t.data_ptr()  # detach() is a view: still no copy
    np.testing.assert_array_equal(np.asarray(a), t.detach().numpy())


def test_conjugate_view_is_resolved() -> None:
    z = torch.randn(4, dtype=torch.complex64)
    a = to_jax(z.conj())
    np.testing.assert_array_equal(np.asarray(a), np.conj(z.numpy()))


def test_64_bit_narrowed_without_x64(no_x64: None, debug_log: pytest.LogCaptureFixture) -> None:
    a = to_jax(torch.tensor([1.5, 2.5], dtype=torch.float64))
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), [1.5, 2.5])
    assert to_jax(torch.arange(3)).dtype == jnp.int32
    assert "jax_enable_x64 is off" in debug_log.text


def test_float64_autograd_without_x64(no_x64: None) -> None:
    """JAX computes in float32; the gradient comes back in the input's dtype."""
    f = torch_function(lambda x: jnp.sum(x**2))
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    y = f(x)
    assert y.dtype == torch.float32
    y.backward()
    assert x.grad is not None and x.grad.dtype == torch.float64
    torch.testing.assert_close(x.grad, torch.tensor([2.0, -4.0], dtype=torch.float64))


def test_64_bit_kept_with_x64(x64: None) -> None:
    t = torch.randn(4, 3, dtype=torch.float64)
    a = to_jax(t)
    assert a.dtype == jnp.float64 and _ptr(a) == t.data_ptr()
    i = to_jax(torch.arange(5))
    assert i.dtype == jnp.int64
    assert to_torch(a).dtype == torch.float64


def test_type_errors() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        to_jax(np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="jax.Array"):
        to_torch(np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="traced"):
        jax.jit(lambda x: to_torch(x).sum().item())(jnp.ones(2))


# ------------------------------------------------------------------------------ autograd


def test_gradcheck_sum_of_squares_and_matmul(x64: None) -> None:
    g = torch.Generator().manual_seed(0)
    sq = torch_function(lambda x: jnp.sum(x**2))
    x = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(sq, (x,))
    sq(x).backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=0, atol=0)

    mm = torch_function(jnp.matmul)
    a = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    torch.testing.assert_close(mm(a, b), a @ b)
    assert torch.autograd.gradcheck(mm, (a, b))
    assert torch.autograd.gradcheck(mm, (a.detach().T.contiguous().T.requires_grad_(), b))


def test_gradcheck_complex(x64: None) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, dtype=torch.complex128, generator=g, requires_grad=True)
    w = torch.randn(3, dtype=torch.complex128, generator=g, requires_grad=True)
    real_out = torch_function(lambda z, w: jnp.sum(jnp.abs(z * w) ** 2 + jnp.real(z)))
    complex_out = torch_function(lambda z, w: z * jnp.sin(w) + jnp.conj(z) * w)
    assert torch.autograd.gradcheck(real_out, (z, w))
    assert torch.autograd.gradcheck(complex_out, (z, w))


def test_grads_only_for_inputs_that_require_them() -> None:
    f = torch_function(lambda x, y, n: jnp.sum(x * y) * n)
    x = torch.randn(4, requires_grad=True)
    y = torch.randn(4)
    n = torch.tensor(3, dtype=torch.int32)
    out = f(x, y, n)
    out.backward()
    torch.testing.assert_close(x.grad, 3 * y)
    assert y.grad is None


def test_batched_with_vmap_matches_torch() -> None:
    def energy(w: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.tanh(x @ w).sum()

    f = torch_function(jax.vmap(energy, in_axes=(None, 0)))
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 2, generator=g, requires_grad=True)
    x = torch.randn(7, 4, 3, generator=g, requires_grad=True)
    out = f(w, x)
    assert out.shape == (7,)
    (out * torch.arange(7.0)).sum().backward()

    w_ref = w.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.tanh(x_ref @ w_ref).sum(dim=(1, 2))
    (ref * torch.arange(7.0)).sum().backward()
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_no_grad_path_and_output_checks() -> None:
    f = torch_function(lambda x: jnp.sin(x))
    x = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        y = f(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, torch.sin(x.detach()))
    assert f.jax_fn is not None
    two = torch_function(lambda x: (x, x))
    with pytest.raises(TypeError, match="one array"):
        two(x)
    with pytest.raises(TypeError, match="torch tensors only"):
        f(1.0)


def test_in_place_change_of_output_is_caught() -> None:
    f = torch_function(jnp.exp)  # the vjp residual is the output itself
    x = torch.randn(3, requires_grad=True)
    y = f(x)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="inplace"):
        y.sum().backward()


def test_gradient_of_quench_observable_matches_finite_differences(x64: None) -> None:
    """d mean(rho1) / d(eta, nu) after a deterministic (T = 0) quench: autograd vs central FD.

    ``nu`` rather than the field: on the torus the field is rounded to whole flux quanta, so its
    derivative is zero almost everywhere. ``init_noise=0.3`` puts the condensate in the nonlinear
    regime within 20 steps, where nu matters (at the default 0.01 d/dnu is ~1e-9).
    """
    from glsbi_plugin.physics import TDGLConfig, observe, presets
    from glsbi_plugin.physics._forward import _simulate  # jitted and traceable (simulate is eager)

    cfg = TDGLConfig(shape=(8, 8), steps=20, thermal=False, dtype="float64", init_noise=0.3)
    base = presets.type15(eta=0.2, field=0.4, T=0.0)

    def mean_rho1(theta: jax.Array) -> jax.Array:
        p = base.replace(eta=theta[0], nu=theta[1])
        state = _simulate(p, jax.random.key(0), cfg)
        return jnp.mean(observe(state, p, cfg, channels=("rho1",)))

    f = torch_function(mean_rho1)
    theta = torch.tensor([0.2, 0.3], dtype=torch.float64, requires_grad=True)
    f(theta).backward()
    grad = theta.grad
    assert grad is not None and torch.all(grad.abs() > 1e-4)

    eps = 1e-5
    fd = torch.empty(2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(2):
            e = torch.zeros(2, dtype=torch.float64)
            e[i] = eps
            fd[i] = (f(theta + e) - f(theta - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-4, atol=0)
