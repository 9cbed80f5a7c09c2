r"""A small residual CNN with global average pooling, invariant to circular shifts of its input.

The vortex images come from a simulation on a torus (periodic boundaries), so a configuration and
any of its circular shifts (``torch.roll`` along H or W) are the same physical state. With circular
padding, stride 1 everywhere and a global average over pixels, every layer before the pooling is
*equivariant* to circular shifts and the pooling turns that into exact *invariance*: the summary
statistics, and hence the inferred posterior, do not depend on where the lattice happens to sit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._validation import is_int

__all__ = ["EmbeddingConfig", "ResNetGAP", "torus_symmetry"]

PaddingMode = Literal["circular", "zeros", "reflect"]
Activation = Literal["gelu", "relu", "silu", "elu", "tanh"]
Symmetry = Literal["none", "torus"]

_SYMMETRIES: tuple[str, ...] = ("none", "torus")

_PADDING_MODES: tuple[str, ...] = ("circular", "zeros", "reflect")
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}
_MAX_GROUPS = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    r"""Options of :class:`ResNetGAP` (frozen, hashable, JSON round-trippable, checked at construction).

    Args:
        features: Size of the output summary vector; an integer >= 1.
        widths: Channels of each stage; a non-empty sequence of integers >= 1 (stored as a tuple).
        blocks_per_stage: Residual blocks per stage; an integer >= 1.
        padding_mode: ``"circular"`` (the torus; exact shift invariance), ``"zeros"`` or
            ``"reflect"`` (open samples; no exact invariance).
        activation: One of ``"gelu"``, ``"relu"``, ``"silu"``, ``"elu"``, ``"tanh"``.
        downsample: Halve the resolution (stride-2 convolution) at the start of every stage but the
            first. Cheaper, but only ``False`` gives exact invariance to *all* circular shifts:
            with ``True`` the output is invariant only to shifts by multiples of
            ``2 ** (len(widths) - 1)`` pixels.
        symmetry: Data augmentation while training (``net.train()``; ``eval()`` is untouched):
            ``"torus"`` applies to each image an independent uniformly random element of the
            square torus's symmetry group: a circular shift along H and W, one of the four 90°
            rotations (two when H ≠ W) and a reflection (:func:`torus_symmetry`). These are exact
            symmetries of the forward model's distribution p(x | θ) for every observation of
            :mod:`glsbi_plugin.physics`: shifts and rotations map a solution of the periodic
            TDGL equations on the square lattice to another with the same θ; a reflection maps
            field B to −B, and ψ → ψ*, A → −A maps it back to +B with the same densities and the
            same B_z image (tested in ``tests/test_symmetry.py``). ``"none"``: no augmentation.

    Raises:
        ValueError: If a value is outside its allowed range.
    """

    features: int = 32
    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 1
    padding_mode: PaddingMode = "circular"
    activation: Activation = "gelu"
    downsample: bool = False
    symmetry: Symmetry = "none"

    def __post_init__(self) -> None:
        if not is_int(self.features) or self.features < 1:
            raise ValueError(f"features={self.features!r}: must be an integer >= 1")
        if isinstance(self.widths, (str, bytes)) or not isinstance(self.widths, Sequence):
            raise ValueError(f"widths={self.widths!r}: must be a non-empty sequence of integers >= 1")
        widths = tuple(self.widths)
        if not widths or not all(is_int(w) and w >= 1 for w in widths):
            raise ValueError(f"widths={self.widths!r}: must be a non-empty sequence of integers >= 1")
        object.__setattr__(self, "widths", widths)
        if not is_int(self.blocks_per_stage) or self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage={self.blocks_per_stage!r}: must be an integer >= 1")
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode={self.padding_mode!r}: allowed values are {_PADDING_MODES}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}: allowed values are {tuple(_ACTIVATIONS)}")
        if not isinstance(self.downsample, bool):
            raise ValueError(f"downsample={self.downsample!r}: must be True or False")
        if self.symmetry not in _SYMMETRIES:
            raise ValueError(f"symmetry={self.symmetry!r}: allowed values are {_SYMMETRIES}")

    @property
    def shift_invariant(self) -> bool:
        """Whether the network is exactly invariant to every circular shift of its input."""
        return self.padding_mode == "circular" and not self.downsample

    def build(self, in_channels: int) -> ResNetGAP:
        """Builds a freshly initialised network with these options.

        Args:
            in_channels: Number of image channels ``C``.

        Returns:
            The embedding network.
        """
        return ResNetGAP(in_channels, **dataclasses.asdict(self))

    def to_dict(self) -> dict[str, Any]:
        """Returns the options as a JSON-serialisable dict (``widths`` as a list)."""
        data = dataclasses.asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Args:
            data: Mapping of option names to values, e.g. parsed from JSON.

        Returns:
            The configuration.

        Raises:
            ValueError: If ``data`` has unknown keys or a value is outside its allowed range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EmbeddingConfig keys {unknown}; allowed keys are {sorted(known)}")
        return cls(**data)


def _group_norm(width: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: its statistics are per sample, so the embedding of an image does
    # not depend on the rest of the batch. sbi's ratio estimators (NRE-A/B/C, BNRE) evaluate x in
    # varying batch compositions (contrastive atoms, repeated x), and BatchNorm would also make
    # train() and eval() differ. Mean and variance over pixels are unchanged by a circular shift.
    groups = max(g for g in range(1, min(_MAX_GROUPS, width) + 1) if width % g == 0)
    return nn.GroupNorm(groups, width)


def _conv3x3(in_width: int, out_width: int, stride: int, padding_mode: str) -> nn.Conv2d:
    # No bias: the GroupNorm that follows has its own.
    return nn.Conv2d(in_width, out_width, 3, stride=stride, padding=1, padding_mode=padding_mode, bias=False)


class _ResidualBlock(nn.Module):
    """``act(norm(conv(act(norm(conv(x))))) + skip(x))``; ``skip`` is a 1x1 conv if the shape changes."""

    def __init__(self, in_width: int, out_width: int, *, stride: int, padding_mode: str, activation: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_width, out_width, stride, padding_mode)
        self.norm1 = _group_norm(out_width)
        self.conv2 = _conv3x3(out_width, out_width, 1, padding_mode)
        self.norm2 = _group_norm(out_width)
        self.act = _ACTIVATIONS[activation]()
        if in_width != out_width or stride != 1:
            self.skip: nn.Module = nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.skip(x))


class ResNetGAP(nn.Module):
    r"""Residual CNN + global average pooling + MLP head: ``(batch, C, H, W) -> (batch, features)``.

    The head takes the pooled trunk features together with each input channel's image mean and
    variance (after standardisation), so absolute density levels survive the GroupNorms.

    Accepts any image size (no layer depends on H or W). With the defaults (circular padding, no
    downsampling) the output is exactly invariant, up to float rounding, to circular shifts of the
    input along H and W. All layers are built eagerly, so ``state_dict()`` loads into a fresh
    instance built with the same arguments.

    Inputs are first standardised per channel with the buffers ``x_mean`` and ``x_std`` (0 and 1
    until :meth:`fit_standardization` is called; they are saved in the ``state_dict``). Use this
    instead of sbi's ``z_score_x``, and pass ``z_score_x="none"`` to sbi: ``"independent"``
    standardises each pixel separately (not shift invariant) and ``"structured"`` takes the std
    over dim 1, the channels: NaN for one-channel ``(n, 1, H, W)`` images (sbi then fails an
    assertion) and a mix of channels otherwise.

    Example:
        >>> import torch
        >>> from sbi.neural_nets import classifier_nn
        >>> x_train = torch.rand(16, 2, 8, 8)
        >>> net = ResNetGAP(2, features=4, widths=(8,)).fit_standardization(x_train)
        >>> builder = classifier_nn("mlp", z_score_x="none", embedding_net_x=net)
        >>> net(x_train).shape
        torch.Size([16, 4])

    Args:
        in_channels: Number of image channels ``C``; an integer >= 1.
        features: Size of the output summary vector.
        widths: Channels of each stage.
        blocks_per_stage: Residual blocks per stage.
        padding_mode: ``"circular"`` (periodic images), ``"zeros"`` or ``"reflect"``.
        activation: Name of the non-linearity, e.g. ``"gelu"`` or ``"relu"``.
        downsample: Stride-2 at the start of every stage but the first; see :class:`EmbeddingConfig`.
        symmetry: ``"torus"``: random torus symmetries of the input while training; see
            :class:`EmbeddingConfig`.

    Raises:
        ValueError: If an option is outside its allowed range (see :class:`EmbeddingConfig`).
    """

    x_mean: Tensor
    x_std: Tensor

    def __init__(
        self,
        in_channels: int,
        *,
        features: int = 32,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks_per_stage: int = 1,
        padding_mode: PaddingMode = "circular",
        activation: Activation = "gelu",
        downsample: bool = False,
        symmetry: Symmetry = "none",
    ) -> None:
        super().__init__()
        if not is_int(in_channels) or in_channels < 1:
            raise ValueError(f"in_channels={in_channels!r}: must be an integer >= 1")
        self.in_channels = in_channels
        self.config = EmbeddingConfig(
            features=features,
            widths=widths,  # any sequence; stored as a tuple
            blocks_per_stage=blocks_per_stage,
            padding_mode=padding_mode,
            activation=activation,
            downsample=downsample,
            symmetry=symmetry,
        )
        cfg = self.config
        self.register_buffer("x_mean", torch.zeros(in_channels))
        self.register_buffer("x_std", torch.ones(in_channels))

        layers: list[nn.Module] = [
            _conv3x3(in_channels, cfg.widths[0], 1, cfg.padding_mode),
            _group_norm(cfg.widths[0]),
            _ACTIVATIONS[cfg.activation](),
        ]
        width = cfg.widths[0]
        for stage, out_width in enumerate(cfg.widths):
            for block in range(cfg.blocks_per_stage):
                stride = 2 if cfg.downsample and stage > 0 and block == 0 else 1
                layers.append(
                    _ResidualBlock(
                        width, out_width, stride=stride, padding_mode=cfg.padding_mode, activation=cfg.activation
                    )
                )
                width = out_width
        self.trunk = nn.Sequential(*layers)
        # the head also sees each channel's image mean and variance: the trunk's GroupNorm removes
        # absolute levels (with one channel per group it is an InstanceNorm), and the condensate
        # densities' levels carry information (e.g. on η). Both are shift invariant.
        self.head = nn.Sequential(
            nn.Linear(width + 2 * in_channels, width),
            _ACTIVATIONS[cfg.activation](),
            nn.Linear(width, cfg.features),
        )

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (batch, C, H, W) with C={self.in_channels}, got shape {tuple(x.shape)}"
            )

    @torch.no_grad()
    def fit_standardization(self, x: Tensor, *, min_std: float = 1e-7) -> ResNetGAP:
        """Sets ``x_mean``/``x_std`` to the per-channel mean and std of a batch of training images.

        Statistics are taken over the batch and all pixels, so they preserve shift invariance.
        Images with non-finite values are left out, as sbi does for its own z-scoring.

        Args:
            x: Training images of shape ``(batch, C, H, W)``.
            min_std: Lower bound on the std (a constant channel would otherwise divide by zero).

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: If ``x`` has the wrong shape or no image is entirely finite.
        """
        self._check_input(x)
        finite = torch.isfinite(x).flatten(1).all(dim=1)
        if not bool(finite.any()):
            raise ValueError(f"fit_standardization: none of the {x.shape[0]} images is entirely finite")
        # per-channel sums in float64, a block of images at a time (no float64 copy of the set)
        total = torch.zeros(self.in_channels, dtype=torch.float64)
        total_sq = torch.zeros(self.in_channels, dtype=torch.float64)
        for block in x[finite].split(256):
            b = block.to(torch.float64)
            total += b.sum(dim=(0, 2, 3))
            total_sq += b.square().sum(dim=(0, 2, 3))
        count = int(finite.sum()) * x.shape[2] * x.shape[3]
        mean = total / count
        var = (total_sq - count * mean.square()).clamp_min(0.0) / max(count - 1, 1)
        std = var.sqrt() if count > 1 else torch.ones_like(mean)
        std = torch.where(std > min_std, std, torch.full_like(std, min_std))  # also replaces NaN
        self.x_mean.copy_(mean)
        self.x_std.copy_(std)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Embeds a batch of images.

        Args:
            x: Images of shape ``(batch, C, H, W)``.

        Returns:
            Summary vectors of shape ``(batch, features)``.

        Raises:
            ValueError: If ``x`` is not 4-D or has a channel count other than ``in_channels``.
        """
        self._check_input(x)
        if self.training and self.config.symmetry == "torus":
            x = torus_symmetry(x)
        x = (x - self.x_mean[:, None, None]) / self.x_std[:, None, None]
        mean = x.mean(dim=(-2, -1))
        var = (x - mean[..., None, None]).square().mean(dim=(-2, -1))
        return self.head(torch.cat([self.trunk(x).mean(dim=(-2, -1)), mean, var], dim=1))


def torus_symmetry(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Each image of ``x`` under its own uniformly random symmetry of the square torus.

    For image :math:`b` draws shifts :math:`s_y \in \{0..H-1\}`, :math:`s_x \in \{0..W-1\}`, a
    rotation by :math:`k \cdot 90°` (:math:`k \in \{0, 1, 2, 3\}`; :math:`\{0, 2\}` when
    :math:`H \ne W`) and a reflection :math:`f \in \{0, 1\}`, and returns
    :math:`x'_b = F^f R^k T_{s}\, x_b` (a circular shift, then the rotation, then a transpose or
    a flip). The draws use ``generator`` (default: torch's global one).

    Args:
        x: Images ``(batch, C, H, W)``.
        generator: Source of the random draws.

    Returns:
        The transformed images, same shape and dtype.

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(5, 1, 1, 1)
        >>> y = torus_symmetry(x, torch.Generator().manual_seed(0))
        >>> bool((y.flatten(1).sort().values == x.flatten(1).sort().values).all())  # pixels permuted
        True
    """
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (batch, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if n == 0:
        return x
    dev = x.device
    sy = torch.randint(h, (n,), generator=generator).to(dev)
    sx = torch.randint(w, (n,), generator=generator).to(dev)
    rows = (torch.arange(h, device=dev)[None, :] + sy[:, None]) % h  # (n, H)
    cols = (torch.arange(w, device=dev)[None, :] + sx[:, None]) % w  # (n, W)
    batch = torch.arange(n, device=dev)[:, None, None]
    x = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    square = h == w
    k = torch.randint(4 if square else 2, (n,), generator=generator) * (1 if square else 2)
    flip = torch.randint(2, (n,), generator=generator)
    out = torch.empty_like(x)
    for kk in range(4):
        for ff in range(2):
            idx = ((k == kk) & (flip == ff)).nonzero().flatten().to(dev)
            if idx.numel() == 0:
                continue
            y = torch.rot90(x[idx], kk, dims=(-2, -1))
            out[idx] = y.flip(-1) if ff else y
    return out
