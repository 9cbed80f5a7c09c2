"""Summary statistics of vortex images (glsbi_plugin.physics.summaries): known answers on perfect
lattices and Poisson patterns, the torus's minimum image, winding conventions, symmetries, the
fixed-length summary vector, and one real simulation (net winding = flux quanta)."""

from __future__ import annotations

import numpy as np
import pytest

from glsbi_plugin.physics import summaries as S

SQ3 = np.sqrt(3.0)


def triangular(a: float, m: int, k: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A triangular lattice of constant a held exactly by the torus of sides (a m, a (√3/2) 2k)."""
    pts = np.array([(a * (i + 0.5 * (j % 2)), a * SQ3 / 2 * j) for i in range(m) for j in range(2 * k)])
    return pts, (a * m, a * SQ3 * k)


def square(a: float, m: int) -> tuple[np.ndarray, tuple[float, float]]:
    pts = np.array([(a * (i + 0.5), a * (j + 0.5)) for i in range(m) for j in range(m)])
    return pts, (a * m, a * m)


def all_statistics(pts: np.ndarray, box: tuple[float, float], radius: float, r_max: float) -> dict[str, object]:
    return {
        "count": S.vortex_count(pts),
        "nn": S.nearest_neighbour_distances(pts, box),
        "g": S.pair_correlation(pts, box, r_max, 10)[1],
        "clusters": S.cluster_sizes(pts, box, radius),
        "psi6": np.array(S.bond_order_psi6(pts, box)),
        "x": S.summary_vector(pts, box, radius=radius, r_max=r_max, bins=10),
    }


def assert_same_statistics(a: dict[str, object], b: dict[str, object]) -> None:
    assert a["count"] == b["count"]
    np.testing.assert_allclose(a["nn"], b["nn"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["g"], b["g"], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(a["clusters"], b["clusters"])
    np.testing.assert_allclose(a["psi6"], b["psi6"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["x"], b["x"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the torus


def test_minimum_image_values():
    d = S.minimum_image([[9.7, 0.0], [-9.7, 4.9], [5.1, -5.1], [23.0, 0.0]], (10.0, 10.0))
    np.testing.assert_allclose(d, [[-0.3, 0.0], [0.3, 4.9], [-4.9, 4.9], [3.0, 0.0]], atol=1e-12)


def test_points_near_opposite_edges_are_neighbours_at_the_wrapped_distance():
    box = (10.0, 8.0)
    edge = np.array([[0.2, 4.0], [9.9, 4.0], [5.0, 4.0]])  # 0 and 1 are 0.3 apart through the seam
    np.testing.assert_allclose(S.nearest_neighbour_distances(edge, box), [0.3, 0.3, 4.8], atol=1e-12)
    np.testing.assert_array_equal(S.cluster_sizes(edge, box, radius=0.5), [2, 1])
    r, g = S.pair_correlation(edge[:2], box, r_max=1.0, bins=4)  # the one pair lands in [0.25, 0.5)
    assert np.flatnonzero(g).tolist() == [1]
    np.testing.assert_allclose(g[1], 80.0 * 2 / (2 * np.pi * (0.5**2 - 0.25**2)))
    corner = np.array([[0.1, 0.1], [9.9, 7.9]])  # through both seams: √(0.2² + 0.2²)
    np.testing.assert_allclose(S.nearest_neighbour_distances(corner, box), [np.sqrt(0.08)] * 2, atol=1e-12)
    # the bond runs through the seam too: (−0.2, −0.2) from the first point
    j, k, bond = S.neighbour_bonds(corner, box, neighbours=1)
    np.testing.assert_allclose(bond[j == 0], [[-0.2, -0.2]], atol=1e-12)
    assert k[j == 0].tolist() == [1]


def test_positions_are_taken_modulo_the_box():
    pts, box = triangular(1.0, 4, 2)
    shifted = pts + np.array([3 * box[0], -2 * box[1]])
    np.testing.assert_allclose(
        S.nearest_neighbour_distances(shifted, box), S.nearest_neighbour_distances(pts, box), atol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# counts and windings


def test_vortex_count_weighs_the_winding():
    pos = np.array([[0.25, 0.25, 1], [1.25, 0.25, 2], [2.25, 0.25, -1], [3.25, 1.25, -2]])
    assert S.vortex_count(pos) == (6, 0)
    assert S.vortex_count(pos[:3]) == S.VortexCount(total=4, net=2)
    assert S.vortex_count(pos[:, :2]) == (4, 4)  # (k, 2): unit vortices
    assert S.vortex_count(np.zeros((0, 3))) == (0, 0)


def test_multiple_winding_and_antivortices_are_one_point_each_in_the_geometry():
    rng = np.random.default_rng(1)
    box = (12.0, 12.0)
    xy = rng.uniform(0, 12, size=(20, 2))
    n = rng.choice([-2, -1, 1, 2], size=20)
    signed = np.column_stack([xy, n])
    unit = np.column_stack([xy, np.ones(20)])
    a, b = all_statistics(signed, box, 2.0, 6.0), all_statistics(unit, box, 2.0, 6.0)
    assert a["count"] == (int(np.abs(n).sum()), int(n.sum()))
    assert b["count"] == (20, 20)
    del a["count"], b["count"]
    x_a, x_b = a.pop("x"), b.pop("x")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-12)
    np.testing.assert_allclose(x_a[2:], x_b[2:], atol=1e-6)  # everything past the two counts
    np.testing.assert_allclose(x_a[:2], [np.abs(n).sum(), n.sum()])


# ---------------------------------------------------------------------------------------------
# known answers: lattices and Poisson


def test_triangular_lattice():
    a = 1.0
    pts, box = triangular(a, 6, 4)  # 48 points on a 6 × 6.93 torus
    n = len(pts)
    area = box[0] * box[1]
    np.testing.assert_allclose(S.nearest_neighbour_distances(pts, box), a, atol=1e-12)
    for neighbours in ("voronoi", 6):
        psi6 = S.bond_order_psi6(pts, box, neighbours=neighbours)
        assert abs(psi6.global_order - 1) < 1e-9 and abs(psi6.local_order - 1) < 1e-9
        np.testing.assert_allclose(np.abs(S.local_psi6(pts, box, neighbours=neighbours)), 1.0, atol=1e-9)
    j, _, bond = S.neighbour_bonds(pts, box)
    assert np.bincount(j).tolist() == [6] * n
    np.testing.assert_allclose(np.hypot(*bond.T), a, atol=1e-12)
    np.testing.assert_array_equal(S.cluster_sizes(pts, box, 1.1 * a), [n])
    np.testing.assert_array_equal(S.cluster_sizes(pts, box, 0.9 * a), [1] * n)
    # shells of 6 at a, √3 a and 2a, in bins [0.9, 1.2), [1.5, 1.8), [1.8, 2.1); nothing below a
    r, g = S.pair_correlation(pts, box, r_max=2.1, bins=7)
    np.testing.assert_allclose(r, [0.15, 0.45, 0.75, 1.05, 1.35, 1.65, 1.95])
    shell = [(3, 0.9, 1.2), (5, 1.5, 1.8), (6, 1.8, 2.1)]
    expected = np.zeros(7)
    for b, lo, hi in shell:
        expected[b] = area * 6 * n / (n * (n - 1) * np.pi * (hi**2 - lo**2))
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=0)
    assert g[r < a].max() == 0 and np.argmax(g > 0) == 3 and np.argmax(g) == 3  # first peak at a
    x = S.summary_vector(pts, box, radius=1.1 * a, r_max=2.1, bins=7)
    names = S.summary_names(7)
    v = dict(zip(names, x.tolist(), strict=True))
    assert v["n_total"] == v["n_net"] == n
    np.testing.assert_allclose(v["nn_mean"], a / np.sqrt(area / n), rtol=1e-6)  # (2/√3)^½ ≈ 1.0746
    np.testing.assert_allclose(v["nn_mean"], (2 / SQ3) ** 0.5, rtol=1e-6)
    assert abs(v["nn_std"]) < 1e-6
    assert v["cluster_largest_fraction"] == 1.0 and v["cluster_count_fraction"] == pytest.approx(1 / n)
    assert v["psi6_global"] == pytest.approx(1.0, abs=1e-6) and v["psi6_local"] == pytest.approx(1.0, abs=1e-6)


def test_square_lattice_has_no_hexatic_order():
    # four bonds at 0°, 90°, 180°, 270°: e^{6iθ} = 1, −1, 1, −1, so ψ₆(j) = 0 exactly
    a, m = 0.5, 8
    pts, box = square(a, m)
    n = len(pts)
    j, _, bond = S.neighbour_bonds(pts, box)  # the co-circular diagonals share no Voronoi edge
    assert np.bincount(j).tolist() == [4] * n
    np.testing.assert_allclose(np.hypot(*bond.T), a, atol=1e-12)
    for neighbours in ("voronoi", 4):
        psi6 = S.bond_order_psi6(pts, box, neighbours=neighbours)
        assert psi6.global_order < 1e-9 and psi6.local_order < 1e-9
    np.testing.assert_allclose(S.nearest_neighbour_distances(pts, box), a, atol=1e-12)
    # shells of 4 at a = 0.5 and √2 a = 0.707, in bins [0.45, 0.6) and [0.6, 0.75)
    r, g = S.pair_correlation(pts, box, r_max=0.75, bins=5)
    area = box[0] * box[1]
    expected = np.zeros(5)
    for b, lo, hi in ((3, 0.45, 0.6), (4, 0.6, 0.75)):
        expected[b] = area * 4 * n / (n * (n - 1) * np.pi * (hi**2 - lo**2))
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(S.cluster_sizes(pts, box, 1.01 * a), [n])
    np.testing.assert_array_equal(S.cluster_sizes(pts, box, 0.99 * a), [1] * n)


def test_poisson_pattern():
    rng = np.random.default_rng(0)
    n, box = 2000, (1.0, 1.0)
    pts = rng.uniform(size=(n, 2))
    r, g = S.pair_correlation(pts, box, r_max=0.5, bins=25)
    assert np.all(np.abs(g[r >= 0.2] - 1) < 0.1)
    assert np.all(np.abs(g[r >= 0.2] - 1) < 0.02)  # ~50000 pairs a bin: noise ~0.5 %; no edge loss at L/2
    d = S.nearest_neighbour_distances(pts, box)
    assert abs(d.mean() / (1 / (2 * np.sqrt(n))) - 1) < 0.05
    j, _, _ = S.neighbour_bonds(pts, box)
    assert len(j) == 6 * n  # Euler on the torus: mean Voronoi degree exactly 6
    psi6 = S.bond_order_psi6(pts, box)
    assert psi6.global_order < 0.05 < psi6.local_order < 0.6


def test_perturbed_triangular_lattice_keeps_most_of_its_order():
    rng = np.random.default_rng(3)
    pts, box = triangular(1.0, 6, 4)
    psi6 = S.bond_order_psi6(pts + 0.03 * rng.standard_normal(pts.shape), box)
    assert 0.9 < psi6.global_order < 1.0 and psi6.global_order <= psi6.local_order < 1.0


# ---------------------------------------------------------------------------------------------
# symmetries


def test_translation_invariance_mod_the_box():
    rng = np.random.default_rng(2)
    box = (12.0, 9.0)
    pts = rng.uniform(size=(40, 2)) * box
    moved = np.mod(pts + [7.3, -5.2], box)
    assert_same_statistics(all_statistics(pts, box, 1.5, 4.5), all_statistics(moved, box, 1.5, 4.5))
    for k in (3, 6):
        np.testing.assert_allclose(
            S.bond_order_psi6(pts, box, neighbours=k), S.bond_order_psi6(moved, box, neighbours=k), atol=1e-9
        )


def test_rotation_by_90_degrees_of_a_square_box():
    rng = np.random.default_rng(4)
    L = 10.0
    pts = rng.uniform(0, L, size=(40, 2))
    rotated = np.column_stack([pts[:, 1], L - pts[:, 0]])  # (x, y) -> (y, L − x)
    assert_same_statistics(all_statistics(pts, (L, L), 1.5, 5.0), all_statistics(rotated, (L, L), 1.5, 5.0))


def test_symmetries_on_the_plaquette_grid():
    """Winding maps put vortices on a square grid, full of co-circular quadruples and exact ties:
    np.roll and np.rot90 of the map must leave the summary unchanged all the same."""
    rng = np.random.default_rng(5)
    maps = np.zeros((4, 24, 24), dtype=np.int32)
    for m in maps:
        idx = rng.choice(24 * 24, size=rng.integers(3, 31), replace=False)
        m.flat[idx] = rng.choice([1, 1, 1, 2, -1], size=idx.size)
    maps[0] = 0
    maps[0, ::4, ::4] = 1  # a square lattice of 36 vortices
    kw = {"radius": 1.0, "r_max": 6.0, "bins": 8}
    x = S.summary_batch(maps, 0.5, **kw)
    np.testing.assert_allclose(S.summary_batch(np.roll(maps, (5, -7), axis=(1, 2)), 0.5, **kw), x, atol=1e-6)
    np.testing.assert_allclose(S.summary_batch(np.rot90(maps, axes=(1, 2)), 0.5, **kw), x, atol=1e-6)
    assert x[0, -2] < 1e-6 and x[0, -1] < 1e-6  # the square lattice: ψ₆ = 0


# ---------------------------------------------------------------------------------------------
# the summary vector and its batch


@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_summary_vector_has_a_fixed_length_and_is_finite(n):
    rng = np.random.default_rng(n)
    pos = np.column_stack([rng.uniform(0, 12, size=(n, 2)), rng.choice([-1, 1, 2], size=n)])
    for bins in (S.DEFAULT_BINS, 3):
        x = S.summary_vector(pos, (12.0, 12.0), radius=1.5, bins=bins)
        assert x.shape == (bins + 8,) == (len(S.summary_names(bins)),) and x.dtype == np.float32
        assert np.all(np.isfinite(x))
    assert len(S.SUMMARY_NAMES) == S.DEFAULT_BINS + 8 == S.summary_vector(pos, (12.0, 12.0), radius=1.5).size


def test_summary_vector_defaults_for_zero_and_one_vortex():
    names = S.SUMMARY_NAMES
    x0 = S.summary_vector(np.zeros((0, 3)), (12.0, 12.0), radius=1.5)
    assert x0.tolist() == [0.0] * len(names)
    x1 = dict(zip(names, S.summary_vector([[3.0, 4.0, 2.0]], (12.0, 12.0), radius=1.5).tolist(), strict=True))
    expected = dict.fromkeys(names, 0.0) | {
        "n_total": 2.0,
        "n_net": 2.0,
        "cluster_largest_fraction": 1.0,
        "cluster_count_fraction": 1.0,
    }
    assert x1 == expected
    assert S.nearest_neighbour_distances([[3.0, 4.0]], (12.0, 12.0)).tolist() == [np.inf]
    assert S.cluster_summary([]) == (0.0, 0)


def test_summary_batch_is_the_summary_of_winding_positions():
    from glsbi_plugin.physics import winding_positions

    rng = np.random.default_rng(6)
    maps = rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, -1, 2], size=(3, 16, 12))
    kw = {"radius": 1.2, "r_max": 2.0, "bins": 5}
    x = S.summary_batch(maps, 0.4, **kw)
    assert x.shape == (3, 13) and x.dtype == np.float32
    for m, row in zip(maps, x, strict=True):
        np.testing.assert_array_equal(row, S.summary_vector(winding_positions(m, 0.4), (16 * 0.4, 12 * 0.4), **kw))
        assert row[0] == np.abs(m).sum() and row[1] == m.sum()
    np.testing.assert_array_equal(S.summary_batch(maps.astype(np.float32), 0.4, **kw), x)  # a float channel
    assert S.summary_batch(np.zeros((0, 8, 8), np.int32), 0.5, radius=1.0).shape == (0, S.DEFAULT_BINS + 8)


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.nearest_neighbour_distances([[0.0, 0.0]], (0.0, 1.0)), r"box=.*finite and > 0"),
        (lambda: S.nearest_neighbour_distances([[0.0, 0.0]], (1.0, np.inf)), r"box=.*finite and > 0"),
        (lambda: S.minimum_image([[0.0, 0.0]], (1.0,)), r"box=.*\(Lx, Ly\)"),
        (lambda: S.vortex_count(np.zeros((3, 4))), r"shape \(k, 2\).*\(k, 3\).*got \(3, 4\)"),
        (lambda: S.vortex_count(np.zeros(3)), r"got \(3,\)"),
        (lambda: S.vortex_count([[0.0, np.nan, 1.0]]), r"positions\[0\].*not finite"),
        (lambda: S.vortex_count([[0.0, 0.0, 1.0], [1.0, 1.0, 0.5]]), r"positions\[1, 2\] = 0.5.*non-zero integer"),
        (lambda: S.vortex_count([[0.0, 0.0, 0.0]]), r"non-zero integer"),
        (lambda: S.cluster_sizes([[0.0, 0.0]], (4.0, 4.0), 0.0), r"radius=0.0: must be finite and > 0"),
        (lambda: S.pair_correlation([[0.0, 0.0]], (4.0, 6.0), r_max=2.5), r"r_max=2.5.*\(0, 2\]"),
        (lambda: S.pair_correlation([[0.0, 0.0]], (4.0, 6.0), r_max=-1.0), r"r_max=-1.0"),
        (lambda: S.pair_correlation([[0.0, 0.0]], (4.0, 6.0), bins=0), r"bins=0: must be an integer >= 1"),
        (lambda: S.bond_order_psi6([[0.0, 0.0]], (4.0, 4.0), neighbours="delaunay"), r"neighbours='delaunay'"),
        (lambda: S.bond_order_psi6([[0.0, 0.0]], (4.0, 4.0), neighbours=9), r"neighbours=9: must be < 9k = 9"),
        (lambda: S.summary_vector([[0.0, 0.0]], (4.0, 4.0), radius=1.0, r_max=3.0), r"r_max=3.0"),
        (lambda: S.summary_batch(np.zeros((8, 8)), 0.5, radius=1.0), r"\(n, nx, ny\).*got \(8, 8\)"),
        (lambda: S.summary_batch(np.full((1, 4, 4), 0.5), 0.5, radius=1.0), r"integers"),
        (lambda: S.summary_batch(np.zeros((1, 4, 4), np.int32), -0.5, radius=1.0), r"h=-0.5"),
        (lambda: S.cluster_summary([2, 0]), r"sizes=\[2, 0\].*integer >= 1"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# a real simulation


def test_net_winding_of_a_simulation_is_the_number_of_flux_quanta():
    import jax

    from glsbi_plugin.physics import TDGLConfig, flux_quanta, presets, simulate, winding, winding_positions

    cfg = TDGLConfig(shape=(32, 32), steps=300, dt=0.3125, scheme="skrock", stages=2)
    p = presets.type15(eta=0.3, field=0.3)
    state = simulate(p, jax.random.key(0), cfg)
    pc = p.astype(cfg.real_dtype)
    w = np.asarray(winding(state, pc, cfg))
    n_phi = int(flux_quanta(0.3, cfg))
    assert n_phi == 12
    # topology: the unmasked winding of each band sums to N_phi on the torus
    assert np.asarray(winding(state, pc, cfg, threshold=0.0)).sum(axis=(1, 2)).tolist() == [n_phi, n_phi]
    x = S.summary_batch(w, cfg.h, radius=2.0, r_max=4.0)
    assert np.all(np.isfinite(x))
    for band in range(2):
        v = dict(zip(S.SUMMARY_NAMES, x[band].tolist(), strict=True))
        count = S.vortex_count(winding_positions(w[band], cfg.h))
        assert (v["n_total"], v["n_net"]) == count
        assert v["n_net"] == n_phi  # no core masked away: net winding = N_phi
        assert v["n_total"] >= v["n_net"] and (v["n_total"] - v["n_net"]) % 2 == 0  # antivortices pair up
        assert 0 < v["cluster_largest_fraction"] <= 1 and 0 < v["cluster_count_fraction"] <= 1
        assert 0 <= v["psi6_global"] <= v["psi6_local"] + 1e-6 <= 1 + 1e-6
