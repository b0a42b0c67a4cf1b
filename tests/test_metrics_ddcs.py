import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddcs_core.errors import DDCSInputError
from ddcs_core.metrics import DDCSResult, ddcs
from ddcs_core.metrics.ddcs import hardest_first

# 4 reconstructions x 3 targets; targets 0, 1 are class 0, target 2 is class 1.
DIST = np.array([
    [0.20, 0.50, 0.10],
    [0.40, 0.90, 0.90],
    [0.05, 0.60, 0.50],
    [0.10, 0.80, 0.70],
])
RECON_LABELS = np.array([0, 0, 1, 0])
TARGET_LABELS = np.array([0, 0, 1])


def reference(dist, recon_labels, target_labels, class_agnostic=False):
    """Loop-by-loop DDCS straight from DESIGN.md §2, for comparison."""
    n_rec, n_tar = dist.shape
    assigned = {t: [] for t in range(n_tar)}
    for r in range(n_rec):
        eligible = [t for t in range(n_tar) if class_agnostic or target_labels[t] == recon_labels[r]]
        best = min(eligible, key=lambda t: (dist[r, t], t))
        assigned[best].append(r)
    d_tar = np.full(n_tar, np.inf)
    nearest = np.full(n_tar, -1)
    for t, rs in assigned.items():
        if rs:
            nearest[t] = min(rs, key=lambda r: (dist[r, t], r))
            d_tar[t] = dist[nearest[t], t]
    total = sum(1 / d_tar[t] for t in range(n_tar) if np.isfinite(d_tar[t]) and d_tar[t] > 0)
    return total / n_tar, d_tar, nearest, np.array([len(assigned[t]) for t in range(n_tar)])


@st.composite
def problems(draw):
    """Random distances > 0 with target labels covering every reconstruction label."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_rec, n_tar = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    rng = np.random.default_rng(seed)
    target_labels = rng.integers(0, 3, n_tar)
    recon_labels = rng.choice(target_labels, n_rec)
    dist = rng.uniform(0.01, 1.0, (n_rec, n_tar))
    return dist, recon_labels, target_labels, rng


FEW = settings(max_examples=25, deadline=None)


def test_hand_computed_conditional():
    res = ddcs(DIST, RECON_LABELS, TARGET_LABELS)
    # t0 <- r0 (0.2), r1 (0.4), r3 (0.1); t1 <- none; t2 <- r2 (0.5)
    np.testing.assert_array_equal(res.d_tar, [0.1, np.inf, 0.5])
    np.testing.assert_array_equal(res.nearest, [3, -1, 2])
    np.testing.assert_array_equal(res.n_assigned, [3, 0, 1])
    np.testing.assert_array_equal(res.matched, [True, False, True])
    assert res.ddcs == pytest.approx((1 / 0.1 + 1 / 0.5) / 3)
    assert res.ddcs_avg == pytest.approx((1 / (0.7 / 3) + 1 / 0.5) / 3)
    np.testing.assert_allclose(res.contribution, [1 / 0.3, 0.0, 1 / 1.5])
    assert (res.n_targets, res.n_matched, res.n_exact_copies) == (3, 2, 0)
    assert res.matched_fraction == pytest.approx(2 / 3)


def test_hand_computed_class_agnostic():
    res = ddcs(DIST, RECON_LABELS, TARGET_LABELS, class_agnostic=True)
    # t0 <- r1 (0.4), r2 (0.05), r3 (0.1); t1 <- none; t2 <- r0 (0.1)
    np.testing.assert_array_equal(res.d_tar, [0.05, np.inf, 0.1])
    np.testing.assert_array_equal(res.nearest, [2, -1, 0])
    np.testing.assert_array_equal(res.n_assigned, [3, 0, 1])
    assert res.ddcs == pytest.approx((1 / 0.05 + 1 / 0.1) / 3)
    assert res.ddcs_avg == pytest.approx((1 / (0.55 / 3) + 1 / 0.1) / 3)


def test_result_types():
    res = ddcs(DIST, RECON_LABELS, TARGET_LABELS)
    assert isinstance(res, DDCSResult)
    assert isinstance(res.ddcs, float) and isinstance(res.ddcs_avg, float)
    assert res.d_tar.dtype == np.float64 and res.contribution.dtype == np.float64
    assert res.nearest.dtype == np.int64 and res.n_assigned.dtype == np.int64
    assert res.matched.dtype == bool and res.exact_copy.dtype == bool


def test_ties_go_to_lowest_index():
    dist = np.array([[0.3, 0.3], [0.3, 0.3], [0.2, 0.2]])
    res = ddcs(dist, np.zeros(3, int), np.zeros(2, int))
    np.testing.assert_array_equal(res.n_assigned, [3, 0])
    np.testing.assert_array_equal(res.nearest, [2, -1])
    dist = np.array([[0.3, 0.1], [0.3, 0.1]])
    assert ddcs(dist, np.zeros(2, int), np.zeros(2, int)).nearest.tolist() == [-1, 0]


def test_exact_copy_is_flagged_and_ddcs_stays_finite():
    dist = DIST.copy()
    dist[2, 2] = 0.0
    res = ddcs(dist, RECON_LABELS, TARGET_LABELS)
    assert res.d_tar[2] == 0.0 and res.exact_copy.tolist() == [False, False, True]
    assert res.contribution[2] == np.inf and res.n_exact_copies == 1
    assert np.isfinite(res.ddcs) and res.ddcs == pytest.approx((1 / 0.1) / 3)
    assert np.isfinite(res.ddcs_avg) and res.ddcs_avg == pytest.approx((1 / (0.7 / 3)) / 3)


def test_exact_copy_among_other_assigned_keeps_positive_mean():
    dist = np.array([[0.0], [0.4]])
    res = ddcs(dist, [0, 0], [0])
    assert res.exact_copy.tolist() == [True] and res.ddcs == 0.0
    assert res.ddcs_avg == pytest.approx(1 / 0.2)


def test_tiny_negative_clamped_to_exact_copy():
    dist = DIST.copy()
    dist[3, 0] = -1e-9
    res = ddcs(dist, RECON_LABELS, TARGET_LABELS)
    assert res.d_tar[0] == 0.0 and res.exact_copy[0]


def test_no_reconstructions_matches_nothing():
    res = ddcs(np.zeros((0, 3)), np.zeros(0, int), TARGET_LABELS)
    assert res.ddcs == 0.0 and res.n_matched == 0 and res.nearest.tolist() == [-1, -1, -1]


def test_many_classes_match_reference():
    rng = np.random.default_rng(0)
    target_labels = rng.integers(0, 12, 30)
    recon_labels = rng.choice(target_labels, 200)
    dist = rng.uniform(0.01, 1.0, (200, 30))
    res = ddcs(dist, recon_labels, target_labels)
    score, d_tar, nearest, n_assigned = reference(dist, recon_labels, target_labels)
    assert res.ddcs == pytest.approx(score)
    np.testing.assert_array_equal(res.d_tar, d_tar)
    np.testing.assert_array_equal(res.nearest, nearest)
    np.testing.assert_array_equal(res.n_assigned, n_assigned)


def test_string_labels():
    res = ddcs(DIST, np.array(["a", "a", "b", "a"]), np.array(["a", "a", "b"]))
    np.testing.assert_array_equal(res.d_tar, [0.1, np.inf, 0.5])


@pytest.mark.parametrize(
    "dist, recon, target, match",
    [
        (np.array([[np.nan, 0.1]]), [0], [0, 0], "dist"),
        (np.array([[np.inf, 0.1]]), [0], [0, 0], "dist"),
        (np.array([[-0.1, 0.1]]), [0], [0, 0], "dist"),
        (np.array([0.1, 0.2]), [0], [0, 0], "dist"),
        (np.zeros((2, 0)), [0, 0], [], "dist"),
        (np.array([["a", "b"]]), [0], [0, 0], "dist"),
        (np.ones((2, 2)), [0], [0, 0], "recon_labels"),
        (np.ones((2, 2)), [0, 0], [0, 0, 0], "target_labels"),
        (np.ones((2, 2)), [[0, 0]], [0, 0], "recon_labels"),
        (np.ones((2, 2)), [0, 2], [0, 1], "recon_labels"),
    ],
)
def test_bad_input_raises(dist, recon, target, match):
    with pytest.raises(DDCSInputError, match=match):
        ddcs(dist, np.asarray(recon), np.asarray(target))


def test_missing_class_allowed_when_class_agnostic():
    res = ddcs(np.array([[0.2, 0.3]]), np.array([5]), np.array([0, 1]), class_agnostic=True)
    assert res.nearest.tolist() == [0, -1]


@FEW
@given(problems(), st.booleans())
def test_matches_loop_reference(problem, agnostic):
    dist, rl, tl, _ = problem
    res = ddcs(dist, rl, tl, class_agnostic=agnostic)
    score, d_tar, nearest, n_assigned = reference(dist, rl, tl, agnostic)
    assert res.ddcs == pytest.approx(score)
    np.testing.assert_array_equal(res.d_tar, d_tar)
    np.testing.assert_array_equal(res.nearest, nearest)
    np.testing.assert_array_equal(res.n_assigned, n_assigned)


@FEW
@given(problems(), st.booleans())
def test_duplicating_reconstructions_changes_nothing(problem, agnostic):
    dist, rl, tl, _ = problem
    res = ddcs(dist, rl, tl, class_agnostic=agnostic)
    dup = ddcs(np.vstack([dist, dist]), np.concatenate([rl, rl]), tl, class_agnostic=agnostic)
    assert dup.ddcs == res.ddcs
    np.testing.assert_array_equal(dup.d_tar, res.d_tar)
    np.testing.assert_array_equal(dup.nearest, res.nearest)
    np.testing.assert_array_equal(dup.n_assigned, 2 * res.n_assigned)
    assert dup.ddcs_avg == pytest.approx(res.ddcs_avg)


@FEW
@given(problems(), st.booleans())
def test_permuting_reconstructions_changes_nothing(problem, agnostic):
    dist, rl, tl, rng = problem
    perm = rng.permutation(dist.shape[0])
    res = ddcs(dist, rl, tl, class_agnostic=agnostic)
    out = ddcs(dist[perm], rl[perm], tl, class_agnostic=agnostic)
    assert out.ddcs == pytest.approx(res.ddcs) and out.ddcs_avg == pytest.approx(res.ddcs_avg)
    np.testing.assert_array_equal(out.d_tar, res.d_tar)
    np.testing.assert_array_equal(out.n_assigned, res.n_assigned)
    matched = res.matched
    np.testing.assert_array_equal(perm[out.nearest[matched]], res.nearest[matched])


@FEW
@given(problems(), st.booleans())
def test_permuting_targets_permutes_per_target_arrays(problem, agnostic):
    dist, rl, tl, rng = problem
    perm = rng.permutation(dist.shape[1])
    res = ddcs(dist, rl, tl, class_agnostic=agnostic)
    out = ddcs(dist[:, perm], rl, tl[perm], class_agnostic=agnostic)
    assert out.ddcs == pytest.approx(res.ddcs)
    for field in ("d_tar", "nearest", "n_assigned", "contribution", "matched", "exact_copy"):
        np.testing.assert_array_equal(getattr(out, field), getattr(res, field)[perm])


@FEW
@given(problems(), st.booleans())
def test_contributions_sum_to_ddcs(problem, agnostic):
    dist, rl, tl, _ = problem
    res = ddcs(dist, rl, tl, class_agnostic=agnostic)
    assert res.contribution.sum() == pytest.approx(res.ddcs)
    assert (res.contribution[~res.matched] == 0).all() and not res.exact_copy.any()


def test_ddcs_from_assignment_agrees_with_dense_matrix():
    from ddcs_core.metrics.ddcs import ddcs_from_assignment

    rng = np.random.default_rng(7)
    dist = rng.random((40, 12))
    r_lab, t_lab = rng.integers(0, 3, 40), np.arange(12) % 3
    dense = ddcs(dist, r_lab, t_lab)
    assigned = np.array([np.flatnonzero(t_lab == l)[dist[i, t_lab == l].argmin()] for i, l in enumerate(r_lab)])
    streamed = ddcs_from_assignment(assigned, dist[np.arange(40), assigned], 12)
    assert streamed.ddcs == pytest.approx(dense.ddcs)
    assert streamed.ddcs_avg == pytest.approx(dense.ddcs_avg)
    np.testing.assert_array_equal(streamed.nearest, dense.nearest)
    with pytest.raises(DDCSInputError, match="target index"):
        ddcs_from_assignment(np.array([0, 12]), np.array([0.1, 0.2]), 12)


def test_hardest_first_puts_unmatched_first_then_the_farthest_ties_by_index():
    d_tar = np.array([0.5, np.inf, 0.1, 0.5, np.inf, 0.9])
    matched = np.array([1, 0, 1, 1, 0, 1], bool)
    assert hardest_first(d_tar, matched).tolist() == [1, 4, 5, 0, 3, 2]
    assert hardest_first(np.array([]), np.array([], bool)).tolist() == []
