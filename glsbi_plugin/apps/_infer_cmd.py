"""``glsbi infer IMAGE --estimator estimator.pt``: a posterior for one's own vortex image.

Reads the image (``.npy``, ``.png``, ``.tif``/``.tiff``), maps it onto the estimator's observation
grid, prints MAP, mean and 68/90 % intervals per parameter, the misspecification verdict against
the training bank (a loud warning when p < 0.05) and, with ``--ppc``, the posterior predictive
p-values; writes ``inference.png``, ``inference.json`` (and ``ppc.png``) to ``--out``. See
:mod:`glsbi_plugin.apps.image`. Heavy imports (torch, sbi, jax) happen in :func:`run` only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import _float_above, _int_at_least

_BANNER = "!" * 78


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``glsbi infer`` to ``p`` and set ``func`` to :func:`run`."""
    p.add_argument("image", metavar="IMAGE", help="the image: .npy, .png, .tif or .tiff")
    p.add_argument("--estimator", required=True, help="estimator.pt written by glsbi quickstart")
    p.add_argument("--bank", default=None,
                   help="training bank for the misspecification check (default: bank.zarr beside the estimator, "
                        "if there is one)")
    p.add_argument("--no-check", action="store_true", help="skip the misspecification check")
    size = p.add_argument_group("image metadata (model length units: those of the lattice spacing h)")
    size.add_argument("--pixel-size", type=_float_above(0), default=None, help="side of one (square) pixel")
    size.add_argument("--field-of-view", type=_float_above(0), default=None, help="side of the (square) image")
    size.add_argument("--height", type=_float_above(0), default=None, help="height of a SQUID map above the surface")
    size.add_argument("--channel", default=None,
                      help="channel of a colour or multi-channel image: an index, or r, g, b")
    p.add_argument("--ppc", action="store_true", help="run the posterior predictive check")
    p.add_argument("--ppc-n", type=_int_at_least(10), default=100,
                   help="simulations of the predictive check (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the checks (default 0)")
    p.add_argument("--out", default=None,
                   help="output directory for inference.png, inference.json, ppc.png (default: IMAGE's stem + "
                        "'_inference' beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``glsbi infer``; print the posterior, the verdict and the PPC p-values. Returns 0.

    Raises:
        ValueError: Errors the user can fix (an unreadable or unmappable image, bad metadata, a
            bank of another forward model), with a one-line message.
        OSError: If a file cannot be read.
    """
    from .image import infer_image

    image = Path(args.image)
    estimator = Path(args.estimator)
    if not estimator.is_file():
        raise ValueError(f"--estimator {estimator}: no such file (glsbi quickstart writes <out>/estimator.pt)")
    if args.no_check:
        bank = None
    elif args.bank is not None:
        bank = Path(args.bank)
        if not bank.exists():
            raise ValueError(f"--bank {bank}: no such bank")
    else:
        bank = "auto"
    channel = args.channel
    if channel is not None and channel.lstrip("-").isdigit():
        channel = int(channel)
    out = Path(args.out) if args.out is not None else image.with_name(image.stem + "_inference")
    result = infer_image(image, estimator, pixel_size=args.pixel_size, field_of_view=args.field_of_view,
                         height=args.height, channel=channel, bank=bank, ppc=args.ppc, ppc_n=args.ppc_n,
                         out=out, seed=args.seed)
    print(result.summary())
    check = result.misspecification
    if check is None and not args.no_check:
        print("misspecification check skipped: no bank.zarr beside the estimator (give --bank)")
    if check is not None and check.misspecified:
        print(f"{_BANNER}\nWARNING: {check.verdict}\n{_BANNER}")
    print(f"wrote {out / 'inference.png'}, {out / 'inference.json'}" + (f", {out / 'ppc.png'}" if args.ppc else ""))
    return 0
