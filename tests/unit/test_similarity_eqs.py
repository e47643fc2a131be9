"""Eqs. 2-6, the controls and helpers of compute.similarity.rsa against direct, loop-by-loop computations."""
import numpy as np
import pytest

from neuralreg_schema.compute.similarity import rsa


# ---- the paper's definitions written out loop by loop ------------------------------------------

def direct_units(r):
    """e_i = (r_i - r_bar) / ||r_i - r_bar||, r_bar the mean over stimuli, by explicit loops."""
    n, d = r.shape
    r_bar = [sum(r[i, a] for i in range(n)) / n for a in range(d)]
    units = np.zeros((n, d))
    for i in range(n):
        centred = [r[i, a] - r_bar[a] for a in range(d)]
        norm = sum(c * c for c in centred) ** 0.5
        units[i] = [c / norm for c in centred]
    return units


def direct_eq2(r, w=None):
    n, d = r.shape
    w = np.ones(d) if w is None else w
    e = direct_units(np.array([[r[i, a] * w[a] for a in range(d)] for i in range(n)]))
    return np.array([[sum(e[i, a] * e[j, a] for a in range(d)) for j in range(n)] for i in range(n)])


def direct_trials(responses, image_ids, w=None):
    """S_data between all oracle trials (each trial its own stimulus), and the trials per image."""
    s_data = direct_eq2(responses, w)
    images = sorted(set(image_ids.tolist()))
    trials = {i: [t for t in range(len(image_ids)) if image_ids[t] == i] for i in images}
    return s_data, images, trials


def direct_eq3(responses, image_ids, w=None):
    s_data, images, trials = direct_trials(responses, image_ids, w)
    out = np.zeros((len(images), len(images)))
    for a, i in enumerate(images):
        for b, j in enumerate(images):
            values = [s_data[ti, tj] for ti in trials[i] for tj in trials[j] if ti != tj]
            out[a, b] = sum(values) / len(values)
    return out, np.array(images)


def direct_eq5(responses, image_ids, w=None):
    s_data, images, trials = direct_trials(responses, image_ids, w)
    s_oracle, _ = direct_eq3(responses, image_ids, w)
    out = []
    for a, i in enumerate(images):
        t = trials[i]
        for x in range(len(t)):
            for y in range(x + 1, len(t)):
                out.append(s_data[t[x], t[y]] - s_oracle[a, a])
    return np.array(out)


def oracle_data(seed=0, repeats=(3, 2, 4, 3, 2), n_neurons=9):
    """Oracle trials with unequal repeat counts in shuffled order, ids not 0..n-1."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.array([40, 7, 13, 99, 21])[:len(repeats)], repeats)
    rng.shuffle(ids)
    signal = rng.normal(size=(100, n_neurons))
    responses = signal[ids] + 0.7 * rng.normal(size=(len(ids), n_neurons)) + 3.0
    return responses, ids, rng.uniform(0.2, 2.0, n_neurons)


# ---- Eq. 2 ---------------------------------------------------------------------------------------

def test_unit_vectors_match_direct():
    r = np.random.default_rng(1).gamma(2.0, 1.0, size=(8, 6)) + 5.0
    e = rsa.unit_vectors(r)
    np.testing.assert_allclose(e, direct_units(r), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-14)
    assert e.dtype == np.float64


@pytest.mark.parametrize("weighted", [False, True])
def test_eq2_matches_direct(weighted):
    rng = np.random.default_rng(2)
    r = rng.gamma(2.0, 1.0, size=(12, 7)).astype(np.float32)
    w = rng.uniform(0, 3, 7) if weighted else None
    S = rsa.similarity(r, w)
    assert S.dtype == np.float32 and S.shape == (12, 12)
    np.testing.assert_allclose(S, direct_eq2(r.astype(np.float64), w), atol=2e-6)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diagonal(S), 1.0)


def test_eq2_in_blocks_larger_than_block():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(23, 5)) + rng.normal(size=5)
    w = rng.uniform(0.5, 2, 5)
    expected = direct_eq2(r, w)
    for block in (1, 4, 7, 23, 100):
        S = rsa.similarity(r, w, block=block)
        np.testing.assert_allclose(S, expected, atol=2e-6, err_msg=f"block={block}")
        np.testing.assert_array_equal(S, S.T)
        np.testing.assert_array_equal(np.diagonal(S), 1.0)
    S64 = rsa.similarity(r, w, block=4, dtype=np.float64)
    assert S64.dtype == np.float32
    np.testing.assert_allclose(S64, expected, atol=1e-7)


def test_eq2_overwrite_input_gives_same_result():
    r = np.random.default_rng(4).normal(size=(10, 6)).astype(np.float32)
    expected = rsa.similarity(r.copy())
    work = r.copy()
    S = rsa.similarity(work, overwrite_input=True, block=3)
    np.testing.assert_array_equal(S, expected)
    np.testing.assert_allclose(np.linalg.norm(work, axis=1), 1.0, rtol=1e-6)   # work was reused


def test_eq2_scale_invariance_and_weights():
    rng = np.random.default_rng(5)
    r = rng.normal(size=(9, 4))
    np.testing.assert_allclose(rsa.similarity(r, np.full(4, 7.0)), rsa.similarity(r), atol=1e-6)
    # a zero weight removes the neuron
    w = np.array([1.0, 0.0, 2.0, 1.0])
    np.testing.assert_allclose(rsa.similarity(r, w), rsa.similarity(r[:, [0, 2, 3]] * w[[0, 2, 3]]),
                               atol=1e-6)


# ---- Eq. 6 ---------------------------------------------------------------------------------------

def test_eq6_is_eq2_on_w_v_rho():
    rng = np.random.default_rng(6)
    pred = rng.gamma(2.0, 1.0, size=(11, 8)).astype(np.float32)
    w, v = rng.uniform(0.1, 3, 8), rng.uniform(0.05, 0.9, 8)
    S = rsa.model_similarity(pred, w, v)
    scaled = np.array([[w[a] * v[a] * pred[i, a] for a in range(8)] for i in range(11)])
    np.testing.assert_allclose(S, direct_eq2(scaled), atol=2e-6)
    np.testing.assert_array_equal(S, rsa.similarity(pred, w * v))


def test_eq6_clips_negative_v():
    rng = np.random.default_rng(7)
    pred = rng.normal(size=(10, 6))
    w = rng.uniform(0.5, 2, 6)
    v = np.array([0.5, -0.4, 0.3, -0.1, 0.8, 0.2])
    S = rsa.model_similarity(pred, w, v)
    keep = v > 0
    np.testing.assert_allclose(S, direct_eq2(pred[:, keep], (w * v)[keep]), atol=2e-6)
    # without the clip the negative neurons would enter with |w v| (sign flips leave S unchanged)
    unclipped = rsa.similarity(pred, np.abs(w * v))
    assert np.abs(S - unclipped).max() > 1e-3
    with pytest.raises(ValueError, match="v_a > 0"):
        rsa.model_similarity(pred, w, -np.abs(v))


def test_sign_flip_of_a_column_leaves_similarity_unchanged():
    r = np.random.default_rng(8).normal(size=(8, 5))
    flipped = r.copy()
    flipped[:, 2] *= -1
    np.testing.assert_allclose(rsa.similarity(flipped), rsa.similarity(r), atol=1e-6)


# ---- Eq. 3, 5 and Fig. 1D ------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
def test_eq3_matches_direct_with_unequal_repeats(weighted):
    responses, ids, w = oracle_data(seed=9)
    w = w if weighted else None
    S, got_ids = rsa.oracle_similarity(responses, ids, w)
    expected, expected_ids = direct_eq3(responses, ids, w)
    np.testing.assert_array_equal(got_ids, expected_ids)
    assert S.dtype == np.float32 and S.shape == (5, 5)
    np.testing.assert_allclose(S, expected, atol=1e-6)
    np.testing.assert_array_equal(S, S.T)


def test_eq3_diagonal_excludes_self_pairs():
    responses, ids, _ = oracle_data(seed=10)
    S, _ = rsa.oracle_similarity(responses, ids)
    assert np.all(np.diagonal(S) < 0.999)        # the self-pairs (== 1) would pull it towards 1


def test_eq5_matches_direct():
    responses, ids, w = oracle_data(seed=11)
    got = rsa.repeat_fluctuations(responses, ids, w)
    expected = direct_eq5(responses, ids, w)
    # sorted ids 7, 13, 21, 40, 99 with 2, 4, 2, 3, 3 repeats: 1 + 6 + 1 + 3 + 3 trial pairs
    assert got.shape == (14,)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # per image, the fluctuations of Eq. 5 average to zero (S_oracle_ii is their mean)
    np.testing.assert_allclose(got[0], 0, atol=1e-12)
    np.testing.assert_allclose(got[1:7].mean(), 0, atol=1e-12)


def test_trial_pairs_match_direct():
    responses, ids, w = oracle_data(seed=12)
    s_data, s_oracle, pairs = rsa.trial_pair_similarity(responses, ids, w)
    direct_data, images, trials = direct_trials(responses, ids, w)
    direct_oracle, _ = direct_eq3(responses, ids, w)
    expected = []
    for a, i in enumerate(images):
        for ti in trials[i]:
            for b in range(a + 1, len(images)):
                for tj in trials[images[b]]:
                    expected.append((direct_data[ti, tj], direct_oracle[a, b], a, b))
    expected = np.array(expected)
    counts = np.array([len(trials[i]) for i in images])
    assert len(s_data) == (counts.sum() ** 2 - (counts ** 2).sum()) // 2
    np.testing.assert_allclose(s_data, expected[:, 0], atol=1e-6)
    np.testing.assert_allclose(s_oracle, expected[:, 1], atol=1e-6)
    np.testing.assert_array_equal(pairs, expected[:, 2:].astype(int))
    assert np.all(pairs[:, 0] < pairs[:, 1])


# ---- Eq. 4 ---------------------------------------------------------------------------------------

def test_eq4_matches_direct():
    rng = np.random.default_rng(13)
    h, n = 3, 6
    stack = rng.uniform(-1, 1, (h, n, n)).astype(np.float32)
    stack = (stack + stack.transpose(0, 2, 1)) / 2
    expected = []
    for k in range(h):
        for i in range(n):
            for j in range(i + 1, n):
                expected.append(stack[k, i, j] - sum(float(stack[g, i, j]) for g in range(h)) / h)
    got = rsa.scan_fluctuations(stack)
    assert got.shape == (h * n * (n - 1) // 2,)
    np.testing.assert_allclose(got, expected, atol=1e-7)
    np.testing.assert_allclose(rsa.scan_fluctuations(list(stack)), got)


# ---- controls and helpers ------------------------------------------------------------------------

def test_shuffle_is_a_seeded_relabelling():
    rng = np.random.default_rng(14)
    S = rsa.similarity(rng.normal(size=(12, 5)))
    shuffled, p = rsa.shuffle_similarity(S, seed=3)
    np.testing.assert_array_equal(p, np.random.default_rng(3).permutation(12))
    for a in range(12):
        for b in range(12):
            assert shuffled[a, b] == S[p[a], p[b]]
    again, p2 = rsa.shuffle_similarity(S, seed=3)
    np.testing.assert_array_equal(again, shuffled)
    np.testing.assert_array_equal(p2, p)
    other, p3 = rsa.shuffle_similarity(S, seed=4)
    assert not np.array_equal(p3, p)
    assert shuffled.dtype == S.dtype
    np.testing.assert_array_equal(np.diagonal(shuffled), 1.0)
    np.testing.assert_array_equal(shuffled, shuffled.T)
    np.testing.assert_array_equal(np.sort(rsa.upper(shuffled)), np.sort(rsa.upper(S)))


def test_upper_order_and_matrix_correlation():
    rng = np.random.default_rng(15)
    A = rng.normal(size=(7, 7))
    expected = [A[i, j] for i in range(7) for j in range(i + 1, 7)]
    np.testing.assert_array_equal(rsa.upper(A), expected)
    B = rng.normal(size=(7, 7))
    a, b = np.array(expected), rsa.upper(B)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    r = sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (
        sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
    assert rsa.matrix_correlation(A, B) == pytest.approx(r, abs=1e-12)
    # the diagonal and the lower triangle do not enter
    A2 = A.copy()
    A2[np.tril_indices(7)] = 99.0
    assert rsa.matrix_correlation(A2, B) == pytest.approx(r, abs=1e-12)


def test_summarize():
    v = np.random.default_rng(16).normal(size=(40, 3))
    s = rsa.summarize(v)
    flat = sorted(v.ravel().tolist())
    assert s["n"] == 120
    assert s["mean"] == pytest.approx(sum(flat) / 120)
    assert s["std"] == pytest.approx((sum((x - s["mean"]) ** 2 for x in flat) / 120) ** 0.5)
    assert s["median"] == pytest.approx((flat[59] + flat[60]) / 2)
    assert s["q05"] < s["q25"] < s["median"] < s["q75"] < s["q95"]
    assert set(s) == {"n", "mean", "std", "q05", "q25", "median", "q75", "q95"}
    assert all(isinstance(s[k], float) for k in s if k != "n")


def test_common_average_picks_the_intersection():
    rng = np.random.default_rng(17)
    ids_a, ids_b, ids_c = np.array([5, 1, 9, 3, 7]), np.array([3, 9, 2, 5]), np.array([9, 5, 3, 8])
    mats = [rng.normal(size=(len(i), len(i))).astype(np.float32) for i in (ids_a, ids_b, ids_c)]
    S, common = rsa.common_average(mats, [ids_a, ids_b, ids_c])
    np.testing.assert_array_equal(common, [3, 5, 9])
    assert S.dtype == np.float32
    for x, i in enumerate(common):
        for y, j in enumerate(common):
            values = [float(m[list(ids).index(i), list(ids).index(j)])
                      for m, ids in zip(mats, (ids_a, ids_b, ids_c))]
            assert S[x, y] == pytest.approx(sum(values) / 3, abs=1e-6)


def test_mean_by_image():
    rng = np.random.default_rng(18)
    ids = np.array([4, 2, 4, 8, 2, 4, 6])
    responses = rng.normal(size=(7, 3)).astype(np.float32)
    means, uniq = rsa.mean_by_image(responses, ids)
    np.testing.assert_array_equal(uniq, [2, 4, 6, 8])
    assert means.dtype == np.float32
    for x, i in enumerate(uniq):
        rows = [t for t in range(7) if ids[t] == i]
        np.testing.assert_allclose(means[x], sum(responses[t].astype(float) for t in rows) / len(rows),
                                   rtol=1e-6)
    np.testing.assert_array_equal(means[2], responses[6])          # shown once: copied exactly
    m2, u2 = rsa.mean_by_image(np.arange(6).reshape(3, 2), [1, 2, 3])
    assert m2.dtype == np.float64


# ---- bad inputs ----------------------------------------------------------------------------------

def _nan(shape, where=(1, 1)):
    x = np.random.default_rng(0).normal(size=shape)
    x[where] = np.nan
    return x


@pytest.mark.parametrize("call, message", [
    (lambda: rsa.unit_vectors(_nan((5, 3))), "NaN"),
    (lambda: rsa.unit_vectors(np.ones(5)), "stimuli, neurons"),
    (lambda: rsa.unit_vectors(np.ones((1, 5))), "at least 2 stimuli"),
    (lambda: rsa.unit_vectors(np.ones((4, 3))), "4 of 4 stimuli have a zero-norm"),
    (lambda: rsa.unit_vectors(np.array([[1., 2.], [3., 1.], [2., 1.5]])), "1 of 3 stimuli"),
    (lambda: rsa.similarity(np.full((4, 3), np.inf)), "NaN or inf"),
    (lambda: rsa.similarity(np.eye(4), np.ones(3)), r"shape \(4,\)"),
    (lambda: rsa.similarity(np.eye(4), np.array([1, 1, np.nan, 1])), "weights contains NaN"),
    (lambda: rsa.similarity(np.eye(4), np.array([1, -1, 1, 1])), ">= 0"),
    (lambda: rsa.similarity(np.eye(4), np.zeros(4)), "zero-norm"),
    (lambda: rsa.similarity(np.eye(4), block=0), "block"),
    (lambda: rsa.model_similarity(np.eye(4), np.ones(4), np.array([.5, np.nan, .5, .5])), "test_corr"),
    (lambda: rsa.model_similarity(np.eye(4), np.ones(3), np.ones(4)), "weights"),
    (lambda: rsa.oracle_similarity(np.ones((5, 3)) + np.eye(5, 3), [0, 0, 1, 1, 2]), "at least 2 repeats"),
    (lambda: rsa.oracle_similarity(np.eye(4), [0, 0, 0, 0]), "at least 2 oracle images"),
    (lambda: rsa.oracle_similarity(np.eye(4), [0, 0, 1]), "one image id per trial"),
    (lambda: rsa.oracle_similarity(_nan((4, 3)), [0, 0, 1, 1]), "NaN"),
    (lambda: rsa.repeat_fluctuations(np.eye(3), [0, 0, 1]), "at least 2 repeats"),
    (lambda: rsa.trial_pair_similarity(np.eye(3), [0, 0, 1]), "at least 2 repeats"),
    (lambda: rsa.scan_fluctuations(np.ones((1, 3, 3))), "at least 2 scans"),
    (lambda: rsa.scan_fluctuations(np.ones((2, 3, 4))), "square"),
    (lambda: rsa.scan_fluctuations(_nan((2, 3, 3), (0, 1, 2))), "NaN"),
    (lambda: rsa.shuffle_similarity(np.ones((3, 4)), 0), "square"),
    (lambda: rsa.shuffle_similarity(_nan((3, 3)), 0), "NaN"),
    (lambda: rsa.upper(np.ones(3)), "square"),
    (lambda: rsa.matrix_correlation(np.eye(3), np.eye(4)), "shape"),
    (lambda: rsa.matrix_correlation(np.eye(3), np.random.rand(3, 3)), "constant"),
    (lambda: rsa.matrix_correlation(_nan((4, 4), (0, 2)), np.random.rand(4, 4)), "NaN"),
    (lambda: rsa.summarize([]), "no values"),
    (lambda: rsa.summarize([1.0, np.nan]), "NaN"),
    (lambda: rsa.common_average([np.eye(3), np.eye(3)], [[1, 2, 3], [3, 4, 5]]),
     r"only 1 image\(s\) common to all 2 scans \(images per scan: \[3, 3\]\)"),
    (lambda: rsa.common_average([np.eye(3)], [[1, 2, 2]]), "not unique"),
    (lambda: rsa.common_average([np.eye(3)], [[1, 2]]), "ids for"),
    (lambda: rsa.common_average([np.eye(3)], []), "id lists"),
    (lambda: rsa.mean_by_image(np.eye(3), [1, 2]), "one image id per trial"),
    (lambda: rsa.mean_by_image(_nan((3, 3)), [1, 2, 2]), "NaN"),
])
def test_bad_input_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scan_checks_and_stability_agree_with_the_separate_equations():
    rng = np.random.default_rng(11)
    scans = []
    for _ in range(2):
        ids = np.repeat(np.arange(6), 4)
        responses = rng.poisson(3, (len(ids), 9)).astype(float)
        scans.append({"responses": responses, "image_ids": ids, "weights": rng.uniform(0.2, 2, 9),
                      "predictions": rng.uniform(0.5, 3, (6, 9)), "test_corr": rng.uniform(-0.2, 0.8, 9)})
    summary, rows = rsa.stability(scans)
    oracles = []
    for scan, row in zip(scans, rows):
        s_oracle, _ = rsa.oracle_similarity(scan["responses"], scan["image_ids"], scan["weights"])
        s_model = rsa.model_similarity(scan["predictions"], scan["weights"], scan["test_corr"])
        s_data, s_pair, _ = rsa.trial_pair_similarity(scan["responses"], scan["image_ids"], scan["weights"])
        rep = rsa.repeat_fluctuations(scan["responses"], scan["image_ids"], scan["weights"])
        assert row["r_model_oracle"] == pytest.approx(rsa.matrix_correlation(s_model, s_oracle))
        assert row["r_data_oracle"] == pytest.approx(np.corrcoef(s_data, s_pair)[0, 1])
        assert row["repeat_fluctuation_std"] == pytest.approx(np.std(rep))
        oracles.append(s_oracle)
    np.testing.assert_allclose(summary["scan_values"], rsa.scan_fluctuations(np.stack(oracles)), atol=1e-6)
    assert summary["n_scans"] == 2 and summary["n_oracle_images"] == 6
    assert summary["repeat_fluctuation"]["n"] == 2 * 6 * 6
