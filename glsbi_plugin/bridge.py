r"""Zero-copy PyTorch ↔ JAX array exchange and JAX functions as differentiable torch operations.

:func:`to_jax` and :func:`to_torch` pass arrays through DLPack, so on the same device the result
*shares memory* with its source; they fall back to a copy (through the host and numpy) only when
DLPack cannot serve, and log the reason at ``DEBUG`` on :data:`logger`. :func:`torch_function` turns
a pure JAX function into a callable on torch tensors that torch autograd can differentiate (the
backward pass is JAX's ``vjp``).

What is zero-copy (measured on jax 0.10.2 / torch 2.13, CPU):

* torch → JAX: every dtype both sides know (float16/32, bfloat16, complex64, signed/unsigned
  integers, bool) and 64-bit types when ``jax_enable_x64`` is on; C-contiguous tensors and
  permutations of them (``t.T``, ``t.permute(...)``); 0-d tensors. The XLA CPU client imports
  memory in place only when the data pointer is 64-byte aligned; a fresh torch allocation is,
  a view at an offset (``t[1:]``) usually is not, and JAX then copies it (logged here).
* JAX → torch: every single-device array of a dtype torch has.

What is copied:

* tensors that require grad (detached first: no copy), a conjugate/negative view bit, or a
  sparse layout (resolved in torch);
* 64-bit dtypes while ``jax_enable_x64`` is off: cast in torch to the 32-bit type, since JAX would
  otherwise narrow them silently;
* strided views that are not a permutation of a dense buffer (``t[:, ::2]``, ``expand``): made
  contiguous in torch first;
* devices the other framework cannot see (a CUDA tensor when JAX has no GPU backend, a JAX array
  on a GPU/TPU when torch has no CUDA, arrays sharded over several devices): through the host.

Aliasing: a zero-copy result and its source are one buffer. JAX assumes its arrays are immutable,
so do not modify a tensor in place while a JAX array made from it (or a torch tensor made from a
JAX array) is alive; pass ``copy=True`` when you need independence.

Example:
    >>> import jax.numpy as jnp, torch
    >>> from glsbi_plugin.bridge import to_jax, to_torch, torch_function
    >>> a = to_jax(torch.arange(6.0).reshape(2, 3))
    >>> to_torch(a * 2).shape
    torch.Size([2, 3])
    >>> sq = torch_function(lambda x: jnp.sum(x**2))
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> sq(x).backward(); x.grad
    tensor([2., 4.])
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

__all__ = ["to_jax", "to_torch", "torch_function"]

logger = logging.getLogger(__name__)

# 64-bit dtypes and the 32-bit types they are cast to while jax_enable_x64 is off.
_NARROW: dict[torch.dtype, torch.dtype] = {
    torch.float64: torch.float32,
    torch.int64: torch.int32,
    torch.uint64: torch.uint32,
    torch.complex128: torch.complex64,
}
# The XLA CPU client adopts external host memory only at this alignment (copies otherwise).
_CPU_ALIGNMENT = 64
_CONVERSION_ERRORS = (BufferError, RuntimeError, TypeError, ValueError)


# ------------------------------------------------------------------------------ torch -> JAX


def to_jax(t: torch.Tensor, *, copy: bool = False) -> jax.Array:
    """A JAX array with the values of a torch tensor, sharing its memory where DLPack allows.

    A CUDA tensor stays on its GPU when JAX has a GPU backend; otherwise the array lands on JAX's
    default device through the host. See the module docstring for what is zero-copy.

    Args:
        t: Any torch tensor (also non-contiguous, 0-d, bool, requiring grad: it is detached).
        copy: Return an array that owns its memory instead of aliasing ``t``.

    Returns:
        A ``jax.Array`` of ``t``'s shape; dtype as ``t``, except 64-bit types become 32-bit while
        ``jax_enable_x64`` is off.

    Raises:
        TypeError: ``t`` is not a torch tensor.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"to_jax expects a torch.Tensor, got {type(t).__name__}")
    x = t.detach()
    if x.layout != torch.strided:
        logger.debug("to_jax: %s tensor densified before export (DLPack needs a strided layout)", x.layout)
        x = x.to_dense()
    if x.is_conj() or x.is_neg():
        logger.debug("to_jax: conjugate/negative view bit resolved by a copy (DLPack cannot carry it)")
        x = x.resolve_conj().resolve_neg()
    if x.dtype in _NARROW and not jax.config.jax_enable_x64:
        logger.debug(
            "to_jax: %s cast to %s by a copy because jax_enable_x64 is off "
            "(enable it with jax.config.update('jax_enable_x64', True) to keep 64-bit values)",
            x.dtype,
            _NARROW[x.dtype],
        )
        x = x.to(_NARROW[x.dtype])
    if x.device.type != "cpu" and not (x.device.type == "cuda" and _jax_has_gpu()):
        logger.debug("to_jax: %s tensor copied to the host: JAX has no backend for that device", x.device)
        x = x.cpu()
    if not _is_compact(x):
        logger.debug(
            "to_jax: strides %s of shape %s are not a permutation of a dense buffer; copied contiguous",
            tuple(x.stride()),
            tuple(x.shape),
        )
        x = x.contiguous()
    if copy:
        x = x.clone(memory_format=torch.contiguous_format) if x.data_ptr() == t.data_ptr() else x
    elif x.device.type == "cpu" and x.numel() and x.data_ptr() % _CPU_ALIGNMENT:
        logger.debug(
            "to_jax: data pointer not %d-byte aligned (a view at an offset?); the XLA CPU client copies it",
            _CPU_ALIGNMENT,
        )
    try:
        return jax.dlpack.from_dlpack(x)
    except _CONVERSION_ERRORS as err:
        logger.debug("to_jax: DLPack import failed (%s: %s); copying through numpy", type(err).__name__, err)
        return jnp.asarray(_torch_to_numpy(x))


def _is_compact(x: torch.Tensor) -> bool:
    """Whether ``x``'s strides are a permutation of a C-contiguous layout (what JAX imports)."""
    if x.numel() == 0:
        return True
    dims = sorted((st, n) for n, st in zip(x.shape, x.stride(), strict=True) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def _torch_to_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.cpu().contiguous()
    try:
        return x.numpy()
    except TypeError:  # a dtype numpy lacks (bfloat16, float8_*): reinterpret the bits via ml_dtypes
        name = str(x.dtype).removeprefix("torch.")
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[x.element_size()]
        return x.view(bits).numpy().view(jnp.dtype(name))


# ------------------------------------------------------------------------------ JAX -> torch


def to_torch(a: jax.Array, *, copy: bool = False) -> torch.Tensor:
    """A torch tensor with the values of a JAX array, sharing its memory where DLPack allows.

    A GPU array stays on its GPU when torch has CUDA; arrays on devices torch cannot see, or
    sharded over several devices, come through the host (a CPU tensor).

    Args:
        a: A concrete ``jax.Array`` (not a tracer inside ``jit``/``grad``).
        copy: Return a tensor that owns its memory instead of aliasing ``a``'s (immutable) buffer.

    Returns:
        A torch tensor of ``a``'s shape and dtype.

    Raises:
        TypeError: ``a`` is not a concrete JAX array, or its dtype has no torch counterpart.
    """
    if isinstance(a, jax.core.Tracer):
        raise TypeError("to_torch got a traced JAX value; convert concrete arrays outside jit/grad/vmap")
    if not isinstance(a, jax.Array):
        raise TypeError(f"to_torch expects a jax.Array, got {type(a).__name__}")
    devices = a.devices()
    if len(devices) != 1:
        logger.debug("to_torch: array sharded over %d devices; gathered through the host", len(devices))
        return _numpy_to_torch(np.array(a))
    platform = next(iter(devices)).platform
    if platform != "cpu" and not (platform == "gpu" and torch.cuda.is_available()):
        logger.debug("to_torch: array on a %s device torch cannot use; copied through the host", platform)
        return _numpy_to_torch(np.array(a))
    try:
        t = torch.from_dlpack(a)
    except _CONVERSION_ERRORS as err:
        logger.debug("to_torch: DLPack export failed (%s: %s); copying through numpy", type(err).__name__, err)
        return _numpy_to_torch(np.array(a))
    return t.clone() if copy else t


def _numpy_to_torch(arr: np.ndarray) -> torch.Tensor:
    try:
        return torch.from_numpy(arr)
    except TypeError:  # an ml_dtypes type (bfloat16, float8_*): reinterpret the bits
        dtype = getattr(torch, arr.dtype.name, None)
        bits = {1: np.uint8, 2: np.int16, 4: np.int32}.get(arr.dtype.itemsize)
        if not isinstance(dtype, torch.dtype) or bits is None:
            raise TypeError(f"JAX dtype {arr.dtype} has no torch counterpart") from None
        return torch.from_numpy(arr.view(bits)).view(dtype)


# ------------------------------------------------------------------------------ autograd


def torch_function(fn: Callable[..., jax.Array]) -> Callable[..., torch.Tensor]:
    r"""Wrap a pure JAX function of arrays as a torch callable that torch autograd differentiates.

    ``fn(*arrays) -> array`` is jitted once here. Called on torch tensors, the wrapper converts
    them with :func:`to_jax`; when grad mode is on and a floating/complex input requires grad it
    runs ``jax.vjp`` (jitted, over the inputs that require grad only), keeps the vjp closure for
    the backward pass, and returns the output as a torch tensor (:func:`to_torch`). Backward
    converts the incoming gradient to JAX, applies the vjp and returns torch gradients (``None``
    for inputs that do not require grad), cast to each input's dtype and device. Complex inputs
    follow torch's conjugate-Wirtinger convention (JAX's cotangents are conjugated both ways).

    Batching is the caller's: pass ``jax.vmap(f)`` to map over a leading batch axis. Non-array
    arguments (options, configs) should be bound first with ``functools.partial``. Only first
    derivatives are supported (the backward is ``once_differentiable``). In-place changes to an
    input or to the output between forward and backward raise torch's usual version-counter error.

    Args:
        fn: Pure JAX function of one or more arrays returning one array.

    Returns:
        ``wrapped(*tensors) -> torch.Tensor``; the jitted JAX function is ``wrapped.jax_fn``.

    Example:
        >>> import jax, jax.numpy as jnp, torch
        >>> batched = torch_function(jax.vmap(lambda w, x: jnp.dot(w, x), in_axes=(None, 0)))
        >>> w = torch.ones(3, requires_grad=True)
        >>> batched(w, torch.ones(5, 3)).sum().backward(); w.grad
        tensor([5., 5., 5.])
    """
    jitted = jax.jit(fn)

    @functools.partial(jax.jit, static_argnums=0)
    def forward_vjp(mask: tuple[bool, ...], *xs: jax.Array) -> tuple[jax.Array, Callable[..., Any]]:
        def of_differentiable(*diff: jax.Array) -> jax.Array:
            it = iter(diff)
            return jitted(*(next(it) if m else x for x, m in zip(xs, mask, strict=True)))

        return jax.vjp(of_differentiable, *(x for x, m in zip(xs, mask, strict=True) if m))

    backward_vjp = jax.jit(lambda vjp_fn, ct: vjp_fn(ct))

    def wrapped(*tensors: torch.Tensor) -> torch.Tensor:
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"argument {i} is a {type(t).__name__}; the wrapped function takes torch tensors only "
                    "(bind other arguments with functools.partial before wrapping)"
                )
        mask = tuple(bool(t.requires_grad and (t.is_floating_point() or t.is_complex())) for t in tensors)
        if torch.is_grad_enabled() and any(mask):
            return _JaxFunction.apply(forward_vjp, backward_vjp, mask, *tensors)
        return to_torch(_single_output(jitted(*(to_jax(t) for t in tensors))))

    functools.update_wrapper(wrapped, fn)
    wrapped.jax_fn = jitted  # type: ignore[attr-defined]
    return wrapped


def _single_output(out: object) -> jax.Array:
    if not isinstance(out, jax.Array):
        raise TypeError(f"the wrapped JAX function must return one array, got {type(out).__name__}")
    return out


class _JaxFunction(torch.autograd.Function):
    """``torch.autograd.Function`` around a jitted ``jax.vjp`` (see :func:`torch_function`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        forward_vjp: Callable[..., tuple[jax.Array, Any]],
        backward_vjp: Callable[..., tuple[jax.Array, ...]],
        mask: tuple[bool, ...],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        xs = [to_jax(t) for t in tensors]
        out, vjp_fn = forward_vjp(mask, *xs)
        out = _single_output(out)
        result = to_torch(out)
        ctx.vjp_fn = vjp_fn
        ctx.backward_vjp = backward_vjp
        ctx.mask = mask
        ctx.out_dtype = out.dtype
        ctx.complex_out = jnp.iscomplexobj(out)
        ctx.input_meta = [(t.dtype, t.device, t.is_complex()) for t in tensors]
        if not (jnp.issubdtype(out.dtype, jnp.floating) or ctx.complex_out):
            ctx.mark_non_differentiable(result)
        # Saved only for torch's version-counter check: the vjp residuals may alias these buffers.
        ctx.save_for_backward(*tensors, result)
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        _ = ctx.saved_tensors  # raises if an input or the output was modified in place
        ct = to_jax(grad_output)
        if ctx.complex_out:
            ct = jnp.conj(ct)
        ct = ct.astype(ctx.out_dtype)
        diff_grads = iter(ctx.backward_vjp(ctx.vjp_fn, ct))
        grads: list[torch.Tensor | None] = []
        for i, (m, (dtype, device, is_complex)) in enumerate(zip(ctx.mask, ctx.input_meta, strict=True)):
            if not m:
                grads.append(None)
                continue
            g = next(diff_grads)
            if not ctx.needs_input_grad[3 + i]:
                grads.append(None)
                continue
            if is_complex:
                g = jnp.conj(g)
            grads.append(to_torch(g).to(dtype=dtype, device=device))
        return (None, None, None, *grads)
