r"""Input checks at the door of every torch-side layer: θ, observations x, box priors, counts.

One home for the simulator, the inference layer, the diagnostics and the bank (the JAX physics
checks its own parameters in :mod:`glsbi_plugin.physics`). sbi's own checks are either missing or
surface late as assertion errors deep inside a network (e.g. an unbatched image ``(C, H, W)`` is
read by ``process_x`` as ``C`` i.i.d. trials of an ``(H, W)`` observation). These fail early, with
a ``ValueError`` that names the bad value and the expected shape or range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

__all__ = [
    "MAX_SEED",
    "MAX_SIMULATION_SEED",
    "as_batched_x",
    "as_tensor_2d",
    "box_bounds",
    "check_bool",
    "check_count",
    "check_generator",
    "check_seed",
    "check_seeds",
    "check_theta",
    "is_int",
]

#: Largest base seed (``simulator(theta, seed=s)``, bank seeds): ``2**63 - 1``.
MAX_SEED = 2**63 - 1
#: Largest per-simulation seed (``simulate_seeds``): the forward model keys JAX with 32 bits.
MAX_SIMULATION_SEED = 2**32 - 1


def check_theta(
    theta: object,
    low: Tensor | None = None,
    high: Tensor | None = None,
    *,
    dim: int | None = None,
    names: Sequence[str] | None = None,
) -> Tensor:
    """θ as an ``(n, d)`` float32 tensor, or a ``ValueError`` naming the expected shape/range.

    Args:
        theta: A floating tensor (or floating numpy array, as sbi's ``simulate_for_sbi`` hands its
            workers) of shape ``(n, d)`` or ``(d,)``.
        low: Lower bounds ``(d,)`` of the support (inclusive); ``None`` skips the range check.
        high: Upper bounds ``(d,)`` of the support (inclusive).
        dim: Expected ``d`` when no bounds are given.
        names: Parameter names, used in error messages only.

    Returns:
        θ as a float32 tensor of shape ``(n, d)`` (a 1-D input gains a leading batch dimension).

    Raises:
        ValueError: ``theta`` is not a floating tensor, has the wrong shape, holds NaN/inf or lies
            outside ``[low, high]``.
    """
    d = int(low.numel()) if low is not None else dim
    expected = f"(n, {d})" if d is not None else "(n, d)"
    if isinstance(theta, np.ndarray) and theta.dtype.kind == "f":  # sbi's joblib workers pass numpy
        theta = torch.from_numpy(np.ascontiguousarray(theta))
    if not isinstance(theta, Tensor):
        raise ValueError(f"theta must be a torch.Tensor of shape {expected}, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating tensor (float32) of shape {expected}, got dtype {theta.dtype}")
    if theta.ndim == 1:
        theta = theta[None]
    if theta.ndim != 2 or (d is not None and theta.shape[1] != d):
        params = f" for parameters {tuple(names)}" if names is not None else ""
        raise ValueError(f"theta must have shape {expected}{params}, got {tuple(theta.shape)}")
    if not torch.isfinite(theta).all():
        raise ValueError("theta contains NaN or inf")
    theta = theta.detach().to(torch.float32)
    if low is not None and high is not None:
        lo, hi = low.to(theta.device), high.to(theta.device)
        outside = (theta < lo) | (theta > hi)
        if outside.any():
            row, col = (int(v) for v in outside.nonzero()[0])
            label = f" ({names[col]})" if names is not None else ""
            raise ValueError(
                f"theta[{row}, {col}] = {float(theta[row, col]):.6g}{label} is outside the prior support "
                f"[{float(low[col]):g}, {float(high[col]):g}]"
            )
    return theta


def box_bounds(prior: Distribution) -> tuple[Tensor, Tensor]:
    """The finite box ``[low, high]`` that supports ``prior`` (e.g. an sbi ``BoxUniform``).

    Args:
        prior: A distribution over ``(d,)`` vectors whose support is a product of intervals.

    Returns:
        ``(low, high)``: float32 tensors of shape ``(d,)``.

    Raises:
        ValueError: If the support is not a finite box over a 1-D event.
    """
    try:
        support = prior.support
    except (AttributeError, NotImplementedError) as err:
        raise ValueError(f"the prior ({type(prior).__name__}) does not declare its support") from err
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    lower = getattr(support, "lower_bound", None)
    upper = getattr(support, "upper_bound", None)
    if lower is None or upper is None:
        raise ValueError(f"the prior's support must be a box (product of intervals), got {prior.support!r}")
    event_shape = tuple(prior.event_shape) or tuple(prior.sample().shape[-1:])
    if len(event_shape) != 1:
        raise ValueError(f"the prior must be over vectors θ of shape (d,), got event shape {event_shape}")
    low = torch.as_tensor(lower, dtype=torch.float32).detach().cpu().expand(event_shape).clone()
    high = torch.as_tensor(upper, dtype=torch.float32).detach().cpu().expand(event_shape).clone()
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low < high).all()):
        raise ValueError(f"the prior's support must be a finite box with low < high, got low={low}, high={high}")
    return low, high


def as_batched_x(x: object, x_shape: Sequence[int]) -> Tensor:
    """Observations with a batch dimension: ``(C, H, W)`` → ``(1, C, H, W)``; ``(n, C, H, W)`` as is.

    sbi's ``process_x`` cannot tell an unbatched image from a batch (it only adds a dimension to
    1-D data), and ratio-based potentials then treat the ``C`` channels as ``C`` i.i.d. trials.

    Args:
        x: A tensor (or array) of shape ``x_shape`` or ``(n, *x_shape)``.
        x_shape: Event shape of one observation, e.g. ``(C, H, W)``.

    Returns:
        A float32 tensor of shape ``(n, *x_shape)``.

    Raises:
        ValueError: If ``x`` has another shape, is empty or holds NaN/inf.
    """
    x_shape = tuple(int(s) for s in x_shape)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape {x_shape} or (n, *{x_shape}), got {type(x).__name__}")
    if tuple(x.shape) == x_shape:
        x = x[None]
    if x.ndim != len(x_shape) + 1 or tuple(x.shape[1:]) != x_shape:
        raise ValueError(f"x must have shape {x_shape} or (n, *{x_shape}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x.detach().to(torch.float32)


def as_tensor_2d(theta: object, name: str = "theta_test") -> Tensor:
    """``theta`` as a finite float32 ``(N, d)`` tensor (a ``(N,)`` vector counts as ``d = 1``)."""
    if not isinstance(theta, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, d), got {type(theta).__name__}")
    if theta.ndim == 1:
        theta = theta[:, None]
    if theta.ndim != 2 or theta.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N >= 1, got {tuple(theta.shape)}")
    if not theta.is_floating_point() or not torch.isfinite(theta).all():
        raise ValueError(f"{name} must be a finite floating tensor")
    return theta.detach().to(torch.float32)


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    return int(value)


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(value: Any, name: str = "seed", maximum: int = MAX_SEED) -> int:
    """``value`` as an int seed in ``[0, maximum]``, or a ValueError naming it and the range.

    Python and numpy integers (and 0-d integer tensors/arrays) pass; bool, float, str and anything
    else are refused, and nothing is wrapped modulo a word size.
    """
    if isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0:
        is_integer = not value.dtype.is_floating_point and value.dtype != torch.bool if isinstance(value, Tensor) \
            else value.dtype.kind in "iu"
        if is_integer:
            value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}={value!r}: must be an integer in [0, {_fmt_max(maximum)}] "
                         f"(got {type(value).__name__})")
    if not 0 <= int(value) <= maximum:
        raise ValueError(f"{name}={int(value)}: must lie in [0, {_fmt_max(maximum)}]")
    return int(value)


def check_seeds(seeds: Any, n: int, maximum: int = MAX_SIMULATION_SEED) -> np.ndarray:
    """Per-simulation seeds as an int64 array ``(n,)`` with values in ``[0, maximum]``.

    Raises:
        ValueError: not integers (floats, bools, strings), the wrong length, or out of range
            (seeds are never wrapped: ``2**32 + 7`` is refused, not taken for ``7``).
    """
    if isinstance(seeds, Tensor):
        seeds = seeds.detach().cpu().numpy()
    try:
        arr = np.asarray(seeds)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"seeds must be integers in [0, {_fmt_max(maximum)}], one per theta row: {e}") from None
    if arr.dtype == object:  # Python ints beyond int64, or mixed types
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr.ravel()):
            raise ValueError(f"seeds must be integers in [0, {_fmt_max(maximum)}], got {seeds!r}")
        big = [int(v) for v in arr.ravel() if not 0 <= int(v) <= maximum]
        raise ValueError(f"seeds {big[:3]} lie outside [0, {_fmt_max(maximum)}]")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"seeds must be integers in [0, {_fmt_max(maximum)}], got dtype {arr.dtype} ({seeds!r:.60})")
    if arr.shape != (n,):
        raise ValueError(f"seeds must have shape ({n},), one per theta row; got {arr.shape}")
    bad = (arr < 0) | (arr > maximum) if arr.dtype.kind == "i" else arr > maximum
    if bad.any():
        raise ValueError(f"seeds {arr[bad][:3].tolist()} lie outside [0, {_fmt_max(maximum)}] (seeds are not wrapped)")
    return arr.astype(np.int64)


def check_generator(generator: Any) -> torch.Generator | None:
    """``None`` or a CPU ``torch.Generator``; anything else is a ValueError naming its type."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (or None), got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU (seeds are drawn on the host), got {generator.device}")
    return generator


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy bools too), else a ValueError: ``"no"``, ``1``, ``None`` are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r}: must be True or False")
    return bool(value)


def _fmt_max(maximum: int) -> str:
    for k in (63, 32, 31):
        if maximum == 2**k - 1:
            return f"2**{k} - 1"
    return str(maximum)
