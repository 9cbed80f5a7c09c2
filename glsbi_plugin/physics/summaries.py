r"""Summary statistics of a vortex image on the torus: counts, nearest neighbours, g(r), clusters, ψ₆.

The statistics a physicist reads off a vortex image, as NumPy/SciPy functions of the point pattern
that :func:`~glsbi_plugin.physics.winding_positions` returns: rows ``(x, y, n)`` at plaquette
centres of a periodic box of sides :math:`L_x = n_x h`, :math:`L_y = n_y h`, area
:math:`A = L_xL_y`. The fixed-length :func:`summary_vector` (and :func:`summary_batch` over winding
maps) is an embedding-free ``x`` for an sbi NPE on an MLP and the statistic of a posterior
predictive check.

Conventions:

- **Counts carry the winding, geometry does not.** :func:`vortex_count` weighs a plaquette by its
  winding: :math:`N_{tot} = \sum|n|`, :math:`N_{net} = \sum n` (a winding-2 plaquette counts
  twice, an antivortex :math:`n<0` once in :math:`N_{tot}` and negatively in :math:`N_{net}`). The
  geometric statistics treat every non-zero plaquette, vortex or antivortex, of any :math:`|n|`,
  as **one point**: two quanta in one plaquette are unresolved at the lattice scale (an instrument
  sees one core), and expanding them into coincident points would put a pair at distance 0, with
  no bond angle. N below is this number of points.
- **Minimum image.** Distances are :math:`r_{ij} = |\mathbf d_{ij}|` with
  :math:`d_\alpha = \Delta_\alpha - L_\alpha\,\mathrm{round}(\Delta_\alpha/L_\alpha)`
  (:func:`minimum_image`), over *other* vortices: a point's own periodic images never enter the
  nearest-neighbour distance, g(r) (:math:`r_{max} \le \min(L_x,L_y)/2`) or the cluster graph.
  Positions may lie anywhere; they are taken modulo the box.
- **Mean spacing** :math:`s = \sqrt{A/N}` is the unit of the nearest-neighbour entries of
  :func:`summary_vector`; radii (``radius``, ``r_max``) are absolute lengths, in the units of h.

Statistics:

.. math::
    d_i = \min_{j\ne i} r_{ij}, \qquad \langle d\rangle_{Poisson} \simeq \frac{1}{2\sqrt\rho}
    = \frac s2, \qquad \rho = N/A,

.. math::
    g(r) = \frac{A}{N(N-1)}\sum_{i\ne j}\frac{\delta(r - r_{ij})}{2\pi r}, \qquad
    g_b = \frac{A\,C_b}{N(N-1)\,\pi(r_{b+1}^2 - r_b^2)},

with :math:`C_b` the ordered pairs in bin :math:`[r_b, r_{b+1})`. For
:math:`r_{max} \le \min(L_x, L_y)/2` each annulus lies wholly inside the minimum-image cell, so for
N independent uniform points :math:`\mathbb E[g_b] = 1` exactly, with no edge correction. Clusters
are the connected components of the graph :math:`r_{ij} \le` ``radius`` (single linkage cut at a
radius). The bond-orientational order is

.. math::
    \psi_6(j) = \frac{1}{N_j}\sum_{k\in\partial j} e^{6i\theta_{jk}}, \qquad
    \Psi_6 = \Big|\frac1N\sum_j\psi_6(j)\Big|, \qquad
    \bar\psi_6 = \frac1N\sum_j|\psi_6(j)|,

:math:`\theta_{jk}` the angle of the bond :math:`j\to k`. The neighbours :math:`\partial j` are by
default the **Voronoi neighbours on the torus**: points whose Voronoi cells (of the 3×3 periodic
tiling, which is exact for the cells of the central copy) share an edge of length
:math:`> 10^{-6}s`. Dropping zero-length edges makes the answer unique where four points are
co-circular (a square lattice; plaquette-centre positions on the grid often are), which a
Delaunay triangulation or "the 6 nearest" would resolve arbitrarily. On the torus the mean number
of Voronoi neighbours of points in general position is exactly 6 (Euler: :math:`V - E + F = 0`).
A triangular lattice gives :math:`\Psi_6 = \bar\psi_6 = 1`; a square lattice, whose four bonds
give :math:`e^{6i\cdot 90^\circ} = -1` in turn, gives exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import Voronoi, cKDTree

from ._observables import winding_positions

__all__ = [
    "DEFAULT_BINS",
    "SUMMARY_NAMES",
    "ClusterSummary",
    "Psi6Order",
    "VortexCount",
    "bond_order_psi6",
    "cluster_sizes",
    "cluster_summary",
    "local_psi6",
    "minimum_image",
    "nearest_neighbour_distances",
    "neighbour_bonds",
    "pair_correlation",
    "summary_batch",
    "summary_names",
    "summary_vector",
    "vortex_count",
]

DEFAULT_BINS = 8
"""Number of g(r) bins in :func:`summary_vector` unless told otherwise (:data:`SUMMARY_NAMES`)."""

_VORONOI_TOL = 1e-6  # Voronoi edges shorter than this times the mean spacing are not bonds

Box = Sequence[float] | ArrayLike
Neighbours = Literal["voronoi"] | int


class VortexCount(NamedTuple):
    """:math:`N_{tot} = \\sum|n|` and :math:`N_{net} = \\sum n` (:func:`vortex_count`)."""

    total: int
    net: int


class ClusterSummary(NamedTuple):
    """Largest cluster's share of the N points and the number of clusters (:func:`cluster_summary`)."""

    largest_fraction: float
    count: int


class Psi6Order(NamedTuple):
    """Global :math:`\\Psi_6 = |\\langle\\psi_6\\rangle|` and local :math:`\\bar\\psi_6 = \\langle|\\psi_6|\\rangle`."""

    global_order: float
    local_order: float


# ----------------------------------------------------------------------------------------------
# checks


def _check_box(box: Box) -> tuple[float, float]:
    """``(Lx, Ly)`` as floats, or a ValueError naming the bad box."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (2,) or not np.all(np.isfinite(b)) or not np.all(b > 0):
        raise ValueError(f"box={box!r}: must be (Lx, Ly) with both sides finite and > 0")
    return float(b[0]), float(b[1])


def _check_positions(positions: ArrayLike) -> np.ndarray:
    """``positions`` as a float64 ``(k, 2)`` or ``(k, 3)`` array, or a ValueError."""
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise ValueError(f"positions must have shape (k, 2) of (x, y) or (k, 3) of (x, y, n), got {p.shape}")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"positions[{i}] = {p[i].tolist()} is not finite (NaN or inf)")
    if p.shape[1] == 3:
        n = p[:, 2]
        bad = (n != np.round(n)) | (n == 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"positions[{i}, 2] = {float(n[i])!r}: the winding n must be a non-zero integer")
    return p


def _check_radius(name: str, value: float) -> float:
    r = float(value)
    if not (np.isfinite(r) and r > 0):
        raise ValueError(f"{name}={value!r}: must be finite and > 0")
    return r


def _check_r_max(r_max: float | None, box: tuple[float, float]) -> float:
    half = min(box) / 2
    if r_max is None:
        return half
    r = _check_radius("r_max", r_max)
    if r > half * (1 + 1e-12):
        raise ValueError(f"r_max={r_max!r}: must lie in (0, min(Lx, Ly)/2] = (0, {half:g}] for box={box}")
    return r


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise ValueError(f"bins={bins!r}: must be an integer >= 1")
    return int(bins)


def _check_neighbours(neighbours: Neighbours) -> Neighbours:
    if neighbours == "voronoi":
        return "voronoi"
    if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1:
        raise ValueError(f"neighbours={neighbours!r}: must be 'voronoi' or an integer >= 1")
    return int(neighbours)


def _points(positions: ArrayLike, box: tuple[float, float]) -> np.ndarray:
    """The ``(N, 2)`` points of ``positions`` wrapped into ``[0, Lx) × [0, Ly)``."""
    xy = _check_positions(positions)[:, :2]
    L = np.asarray(box)
    xy = np.mod(xy, L)
    return np.where(xy >= L, 0.0, xy)  # mod may round a tiny negative up to L itself


def _spacing(n: int, box: tuple[float, float]) -> float:
    """Mean spacing :math:`s = \\sqrt{A/N}` (N >= 1)."""
    return math.sqrt(box[0] * box[1] / n)


# ----------------------------------------------------------------------------------------------
# geometry on the torus


def minimum_image(displacement: ArrayLike, box: Box) -> np.ndarray:
    r"""Minimum-image displacements :math:`d_\alpha = \Delta_\alpha - L_\alpha\,
    \mathrm{round}(\Delta_\alpha/L_\alpha)` on the torus, each component in :math:`[-L/2, L/2]`.

    Args:
        displacement: Raw differences :math:`\Delta = \mathbf r_j - \mathbf r_i`, shape ``(..., 2)``.
        box: Box sides ``(Lx, Ly)``.

    Returns:
        The shortest periodic representative of each displacement, float64, same shape.

    Raises:
        ValueError: A box side is not finite and > 0, or the last axis is not of length 2.

    Example:
        >>> minimum_image([[9.7, -0.2], [4.0, 6.0]], (10.0, 10.0)).round(6)
        array([[-0.3, -0.2],
               [ 4. , -4. ]])
    """
    L = np.asarray(_check_box(box))
    d = np.asarray(displacement, dtype=np.float64)
    if d.shape[-1:] != (2,):
        raise ValueError(f"displacement must have shape (..., 2), got {d.shape}")
    return d - L * np.round(d / L)


def vortex_count(positions: ArrayLike) -> VortexCount:
    r"""Total and net vortex number, :math:`N_{tot} = \sum_i |n_i|`, :math:`N_{net} = \sum_i n_i`.

    A plaquette of winding 2 counts twice; an antivortex (:math:`n < 0`) adds :math:`|n|` to the
    total and :math:`n` to the net number. On the torus, with no masked plaquettes,
    :math:`N_{net} = N_\phi` (:func:`~glsbi_plugin.physics.flux_quanta`).

    Args:
        positions: ``(k, 3)`` rows ``(x, y, n)``, or ``(k, 2)`` rows ``(x, y)`` of unit vortices.

    Returns:
        ``VortexCount(total, net)`` as Python ints.

    Raises:
        ValueError: Bad shape, non-finite entries, or a winding that is not a non-zero integer.

    Example:
        >>> vortex_count([[0.25, 0.25, 1], [1.25, 0.25, 2], [2.25, 0.25, -1]])
        VortexCount(total=4, net=2)
    """
    p = _check_positions(positions)
    n = p[:, 2] if p.shape[1] == 3 else np.ones(len(p))
    return VortexCount(int(np.abs(n).sum()), int(n.sum()))


def nearest_neighbour_distances(positions: ArrayLike, box: Box) -> np.ndarray:
    r"""Per-vortex nearest-neighbour distance :math:`d_i = \min_{j\ne i} r_{ij}` on the torus.

    Every non-zero plaquette is one point (module docstring); :math:`r_{ij}` is the minimum-image
    distance to another point, so a vortex's own periodic images do not count. For a Poisson
    pattern of density :math:`\rho`, :math:`\langle d\rangle \simeq 1/(2\sqrt\rho)`; for a
    triangular lattice of constant a, :math:`d_i = a`.

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])``.
        box: Box sides ``(Lx, Ly)``.

    Returns:
        ``(k,)`` float64 distances in the input order; ``[inf]`` for a single vortex, empty for none.

    Raises:
        ValueError: Bad box or positions.

    Example:
        >>> nearest_neighbour_distances([[0.2, 5.0], [9.9, 5.0], [5.0, 5.0]], (10.0, 10.0)).round(6)
        array([0.3, 0.3, 4.8])
    """
    L = _check_box(box)
    pts = _points(positions, L)
    if len(pts) < 2:
        return np.full(len(pts), np.inf)
    d, _ = cKDTree(pts, boxsize=L).query(pts, k=2)
    return d[:, 1]


def _pairs(pts: np.ndarray, box: tuple[float, float], r: float) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs ``(m, 2)`` at minimum-image distance <= r, and their distances."""
    pairs = cKDTree(pts, boxsize=box).query_pairs(r, output_type="ndarray")
    d = minimum_image(pts[pairs[:, 1]] - pts[pairs[:, 0]], box)
    return pairs, np.hypot(d[:, 0], d[:, 1])


def pair_correlation(
    positions: ArrayLike, box: Box, r_max: float | None = None, bins: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    r"""Radial pair-correlation function with the torus's exact normalisation,

    .. math::
        g_b = \frac{A\,C_b}{N(N-1)\,\pi(r_{b+1}^2 - r_b^2)},

    :math:`C_b` the number of ordered pairs :math:`i \ne j` with minimum-image distance in
    :math:`[r_b, r_{b+1})` (the last bin closed), over ``bins`` equal bins of :math:`[0, r_{max}]`.
    Since each annulus lies in the minimum-image cell, N independent uniform points give
    :math:`\mathbb E[g_b] = 1` in every bin.

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])`` (one point per row).
        box: Box sides ``(Lx, Ly)``.
        r_max: Outer radius, in :math:`(0, \min(L_x, L_y)/2]`; ``None`` takes :math:`\min(L_x, L_y)/2`.
        bins: Number of equal-width bins, >= 1.

    Returns:
        ``(centres, g)``: bin centres and :math:`g_b`, both ``(bins,)`` float64. With fewer than two
        points there are no pairs and g is 0.

    Raises:
        ValueError: Bad box or positions, ``r_max`` outside its range, ``bins`` not an integer >= 1.

    Example:
        >>> r, g = pair_correlation([[1.0, 1.0], [2.0, 1.0]], (4.0, 4.0), r_max=2.0, bins=4)
        >>> r.tolist(), g.round(4).tolist()   # one pair at r = 1: g = 16·2 / (2·π(1.5² - 1²))
        ([0.25, 0.75, 1.25, 1.75], [0.0, 0.0, 4.0744, 0.0])
    """
    L = _check_box(box)
    r_max = _check_r_max(r_max, L)
    bins = _check_bins(bins)
    pts = _points(positions, L)
    edges = np.linspace(0.0, r_max, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    n = len(pts)
    if n < 2:
        return centres, np.zeros(bins)
    _, r = _pairs(pts, L, r_max)
    ordered = 2.0 * np.histogram(r, edges)[0]
    return centres, L[0] * L[1] * ordered / (n * (n - 1) * np.pi * np.diff(edges**2))


def cluster_sizes(positions: ArrayLike, box: Box, radius: float) -> np.ndarray:
    r"""Cluster sizes of single linkage cut at ``radius``: the connected components of the graph
    whose edges join points at minimum-image distance :math:`r_{ij} \le` ``radius``.

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])`` (one point per row).
        box: Box sides ``(Lx, Ly)``.
        radius: Linkage radius, > 0 (absolute length).

    Returns:
        Sizes (number of points) of the clusters, int64, sorted largest first; they sum to k.
        Empty for no vortex.

    Raises:
        ValueError: Bad box, positions or radius.

    Example:
        >>> cluster_sizes([[0.5, 0.5], [9.5, 0.5], [5.0, 5.0]], (10.0, 10.0), radius=1.5)
        array([2, 1])
    """
    L = _check_box(box)
    radius = _check_radius("radius", radius)
    pts = _points(positions, L)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs, _ = _pairs(pts, L, radius)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.sort(np.bincount(labels))[::-1].astype(np.int64)


def cluster_summary(sizes: ArrayLike) -> ClusterSummary:
    """Largest cluster's fraction :math:`\\max_c |c| / N` and the number of clusters.

    Args:
        sizes: Cluster sizes (:func:`cluster_sizes`), positive integers.

    Returns:
        ``ClusterSummary(largest_fraction, count)``; ``(0.0, 0)`` for no vortex.

    Raises:
        ValueError: A size that is not a positive integer.

    Example:
        >>> cluster_summary([3, 1])
        ClusterSummary(largest_fraction=0.75, count=2)
    """
    s = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if s.size and (not np.all(np.isfinite(s)) or np.any(s < 1) or np.any(s != np.round(s))):
        raise ValueError(f"sizes={np.asarray(sizes).tolist()!r}: each must be an integer >= 1")
    if s.size == 0:
        return ClusterSummary(0.0, 0)
    return ClusterSummary(float(s.max() / s.sum()), int(s.size))


# ----------------------------------------------------------------------------------------------
# bond-orientational order


def _tiling(pts: np.ndarray, box: tuple[float, float]) -> np.ndarray:
    """The 3×3 periodic tiling, central copy first: rows ``c·N + i`` are point i shifted by copy c."""
    shifts = [(0, 0)] + [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    offsets = np.asarray(shifts, dtype=np.float64) * np.asarray(box)
    return (offsets[:, None, :] + pts[None, :, :]).reshape(-1, 2)


def neighbour_bonds(
    positions: ArrayLike, box: Box, neighbours: Neighbours = "voronoi"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Bonds :math:`j \to k` from each point to its neighbours on the torus.

    ``"voronoi"``: k shares an edge of length :math:`> 10^{-6}\sqrt{A/N}` with j's Voronoi cell,
    computed on the 3×3 periodic tiling (exact for the central copy: a neighbour of a point of
    :math:`[0,L_x)\times[0,L_y)` lies within :math:`[-L_x, L_x]\times[-L_y, L_y]` of it). An integer
    m: the m nearest points of the tiling (ties broken by the k-d tree). In both, a point's own
    periodic image may be its neighbour (a small box), and the bond vector is the displacement to
    that image, not a minimum-image one.

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])`` (one point per row).
        box: Box sides ``(Lx, Ly)``.
        neighbours: ``"voronoi"`` or the number m >= 1 of nearest neighbours (m < 9k).

    Returns:
        ``(j, k, bond)``: int64 indices of the centre and of the neighbour (into ``positions``) and
        the ``(nbonds, 2)`` bond vectors, grouped by centre.

    Raises:
        ValueError: Bad box or positions, or ``neighbours`` neither ``"voronoi"`` nor an integer
            in ``[1, 9k)``.

    Example:
        >>> j, k, bond = neighbour_bonds([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]], (2.0, 2.0))
        >>> np.bincount(j).tolist()   # a square lattice: four Voronoi neighbours each
        [4, 4, 4, 4]
    """
    L = _check_box(box)
    pts = _points(positions, L)
    n = len(pts)
    neighbours = _check_neighbours(neighbours)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty, np.zeros((0, 2))
    tiled = _tiling(pts, L)
    if neighbours == "voronoi":
        vor = Voronoi(tiled)
        ridge_points = vor.ridge_points
        ridge_vertices = np.asarray(vor.ridge_vertices, dtype=np.int64).reshape(-1, 2)
        touch = (ridge_points < n).any(axis=1)
        ridge_points, ridge_vertices = ridge_points[touch], ridge_vertices[touch]
        ends = vor.vertices[ridge_vertices]
        length = np.where((ridge_vertices >= 0).all(axis=1), np.linalg.norm(ends[:, 0] - ends[:, 1], axis=1), np.inf)
        ridge_points = ridge_points[length > _VORONOI_TOL * _spacing(n, L)]
        centre = np.concatenate([ridge_points[:, 0], ridge_points[:, 1]])
        other = np.concatenate([ridge_points[:, 1], ridge_points[:, 0]])
        central = centre < n
        centre, other = centre[central], other[central]
    else:
        m = int(neighbours)
        if m + 1 > len(tiled):
            raise ValueError(f"neighbours={m}: must be < 9k = {len(tiled)} for k = {n} points")
        _, idx = cKDTree(tiled).query(pts, k=m + 1)
        not_self = idx != np.arange(n)[:, None]
        pick = np.argsort(~not_self, axis=1, kind="stable")[:, :m]  # the m nearest other tiles
        other = np.take_along_axis(idx, pick, axis=1).reshape(-1)
        centre = np.repeat(np.arange(n), m)
    order = np.lexsort((other, centre))
    centre, other = centre[order].astype(np.int64), other[order].astype(np.int64)
    return centre, other % n, tiled[other] - tiled[centre]


def local_psi6(positions: ArrayLike, box: Box, *, neighbours: Neighbours = "voronoi") -> np.ndarray:
    r"""Local bond-orientational order :math:`\psi_6(j) = N_j^{-1}\sum_{k\in\partial j} e^{6i\theta_{jk}}`.

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])`` (one point per row).
        box: Box sides ``(Lx, Ly)``.
        neighbours: Neighbour definition of :func:`neighbour_bonds`.

    Returns:
        ``(k,)`` complex128 :math:`\psi_6(j)`; 0 for a point without a neighbour.

    Raises:
        ValueError: As :func:`neighbour_bonds`.

    Example:
        >>> psi = local_psi6([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]], (2.0, 2.0))
        >>> bool(np.abs(psi).max() < 1e-12)   # square lattice: (1 - 1 + 1 - 1)/4
        True
    """
    centre, _, bond = neighbour_bonds(positions, box, neighbours)
    n = len(_check_positions(positions))
    phase = np.exp(6j * np.arctan2(bond[:, 1], bond[:, 0]))
    total = np.bincount(centre, weights=phase.real, minlength=n) + 1j * np.bincount(
        centre, weights=phase.imag, minlength=n
    )
    degree = np.bincount(centre, minlength=n)
    return np.where(degree > 0, total / np.maximum(degree, 1), 0.0)


def bond_order_psi6(positions: ArrayLike, box: Box, *, neighbours: Neighbours = "voronoi") -> Psi6Order:
    r"""Global and local hexatic order,
    :math:`\Psi_6 = |N^{-1}\sum_j\psi_6(j)|` and :math:`\bar\psi_6 = N^{-1}\sum_j|\psi_6(j)|`.

    Both are 1 on a perfect triangular lattice; :math:`\Psi_6 \le \bar\psi_6`, and
    :math:`\Psi_6 \ll \bar\psi_6` for crystallites of different orientation. Invariant under
    translations and rotations of the pattern (a rotation by φ multiplies :math:`\psi_6` by
    :math:`e^{6i\varphi}`).

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])`` (one point per row).
        box: Box sides ``(Lx, Ly)``.
        neighbours: ``"voronoi"`` (default) or the number of nearest neighbours (:func:`neighbour_bonds`).

    Returns:
        ``Psi6Order(global_order, local_order)``; ``(0.0, 0.0)`` for no vortex.

    Raises:
        ValueError: As :func:`neighbour_bonds`.

    Example:
        >>> a, m, k = 1.0, 4, 2                  # triangular lattice of 4 × 2k points
        >>> pts = [(a * (i + 0.5 * (j % 2)), a * np.sqrt(3) / 2 * j) for i in range(m) for j in range(2 * k)]
        >>> psi = bond_order_psi6(pts, (a * m, a * np.sqrt(3) * k))
        >>> round(psi.global_order, 9), round(psi.local_order, 9)
        (1.0, 1.0)
    """
    psi = local_psi6(positions, box, neighbours=neighbours)
    if psi.size == 0:
        return Psi6Order(0.0, 0.0)
    return Psi6Order(float(abs(psi.mean())), float(np.abs(psi).mean()))


# ----------------------------------------------------------------------------------------------
# the summary vector


def summary_names(bins: int = DEFAULT_BINS) -> tuple[str, ...]:
    """One name per entry of :func:`summary_vector` with ``bins`` g(r) bins.

    Example:
        >>> summary_names(2)[:6], len(summary_names(2))
        (('n_total', 'n_net', 'nn_mean', 'nn_std', 'g_0', 'g_1'), 10)
        >>> SUMMARY_NAMES[-4:]
        ('cluster_largest_fraction', 'cluster_count_fraction', 'psi6_global', 'psi6_local')
    """
    bins = _check_bins(bins)
    return (
        ("n_total", "n_net", "nn_mean", "nn_std")
        + tuple(f"g_{b}" for b in range(bins))
        + ("cluster_largest_fraction", "cluster_count_fraction", "psi6_global", "psi6_local")
    )


SUMMARY_NAMES = summary_names(DEFAULT_BINS)
"""Names of the :func:`summary_vector` entries for the default ``bins`` (:data:`DEFAULT_BINS`)."""


def summary_vector(
    positions: ArrayLike,
    box: Box,
    *,
    radius: float,
    r_max: float | None = None,
    bins: int = DEFAULT_BINS,
    neighbours: Neighbours = "voronoi",
) -> np.ndarray:
    r"""Fixed-length summary of one vortex image, float32 of length ``bins + 8`` (:func:`summary_names`).

    Entries, with N the number of points (non-zero plaquettes) and :math:`s = \sqrt{A/N}`:

    - ``n_total``, ``n_net``: :math:`\sum|n|`, :math:`\sum n` (:func:`vortex_count`);
    - ``nn_mean``, ``nn_std``: mean and standard deviation of :math:`d_i / s`
      (:func:`nearest_neighbour_distances`; Poisson ≈ 0.5, triangular lattice
      :math:`(2/\sqrt3)^{1/2} \approx 1.075`, square lattice 1);
    - ``g_0 … g_{bins-1}``: :func:`pair_correlation` on ``bins`` bins of :math:`[0, r_{max}]`
      (absolute radii);
    - ``cluster_largest_fraction``, ``cluster_count_fraction``: largest cluster size / N and number
      of clusters / N at the linkage ``radius`` (:func:`cluster_sizes`);
    - ``psi6_global``, ``psi6_local``: :math:`\Psi_6`, :math:`\bar\psi_6` (:func:`bond_order_psi6`).

    Defaults where a statistic is undefined, so the vector is always finite: N = 0 gives all zeros;
    N = 1 gives ``nn_*``, ``g_*`` and ``psi6_*`` equal to 0 (no pair, no bond angle) and both
    cluster entries 1 (one cluster of one).

    Args:
        positions: ``(k, 2)`` or ``(k, 3)`` array of ``(x, y[, n])``, e.g. from
            :func:`~glsbi_plugin.physics.winding_positions`.
        box: Box sides ``(Lx, Ly)``.
        radius: Cluster linkage radius, > 0 (absolute length).
        r_max: Outer g(r) radius in :math:`(0, \min(L_x, L_y)/2]`; ``None``: :math:`\min(L_x, L_y)/2`.
        bins: Number of g(r) bins, >= 1.
        neighbours: ψ₆ neighbour definition (:func:`neighbour_bonds`).

    Returns:
        ``(bins + 8,)`` float32 vector.

    Raises:
        ValueError: A bad box, positions, radius, ``r_max``, ``bins`` or ``neighbours``.

    Example:
        >>> x = summary_vector(np.zeros((0, 3)), (12.0, 12.0), radius=2.0)
        >>> x.shape, str(x.dtype), float(np.abs(x).max())
        ((16,), 'float32', 0.0)
    """
    L = _check_box(box)
    radius = _check_radius("radius", radius)
    r_max = _check_r_max(r_max, L)
    bins = _check_bins(bins)
    neighbours = _check_neighbours(neighbours)
    p = _check_positions(positions)
    n = len(p)
    out = np.zeros(bins + 8, dtype=np.float64)
    out[0:2] = vortex_count(p)
    if n >= 1:
        out[bins + 4 : bins + 6] = cluster_summary(cluster_sizes(p, L, radius))
        out[bins + 5] /= n
    if n >= 2:
        d = nearest_neighbour_distances(p, L) / _spacing(n, L)
        out[2:4] = d.mean(), d.std()
        out[4 : bins + 4] = pair_correlation(p, L, r_max, bins)[1]
        out[bins + 6 : bins + 8] = bond_order_psi6(p, L, neighbours=neighbours)
    return out.astype(np.float32)


def summary_batch(winding_maps: ArrayLike, h: float, **kw: object) -> np.ndarray:
    r""":func:`summary_vector` of each of n winding maps of one band, on the torus of sides
    :math:`(n_x h, n_y h)`; the positions are :func:`~glsbi_plugin.physics.winding_positions`.

    Args:
        winding_maps: ``(n, nx, ny)`` integer winding maps (e.g. ``winding(state, p, cfg)[band]``
            stacked, or a float ``"winding1"`` channel holding integers).
        h: Lattice spacing, > 0.
        **kw: Keyword arguments of :func:`summary_vector` (``radius`` is required).

    Returns:
        ``(n, bins + 8)`` float32 array, rows in the order of the maps: an sbi ``x``.

    Raises:
        ValueError: Maps not of shape ``(n, nx, ny)`` or not integer-valued, a bad ``h``, or a bad
            keyword (as :func:`summary_vector`).

    Example:
        >>> maps = np.zeros((2, 8, 8), dtype=np.int32)
        >>> maps[1, 2, 3] = 1
        >>> summary_batch(maps, 0.5, radius=1.0, bins=2)[:, :2].tolist()
        [[0.0, 0.0], [1.0, 1.0]]
    """
    w = np.asarray(winding_maps)
    if w.ndim != 3:
        raise ValueError(f"winding_maps must have shape (n, nx, ny) (one band), got {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        wf = np.asarray(w, dtype=np.float64)
        if not np.all(np.isfinite(wf)) or np.any(wf != np.round(wf)):
            raise ValueError("winding_maps must hold integers (winding numbers); found non-integer values")
        w = wf.astype(np.int64)
    h = _check_radius("h", h)
    box = (w.shape[1] * h, w.shape[2] * h)
    empty = summary_vector(np.zeros((0, 3)), box, **kw)  # type: ignore[arg-type]  # checks kw, gives d
    out = np.zeros((w.shape[0], empty.size), dtype=np.float32)
    for i, m in enumerate(w):
        out[i] = summary_vector(winding_positions(m, h), box, **kw)  # type: ignore[arg-type]
    return out
