"""The paper's similarity equations (Eqs. 2-6) as pure numpy functions (Li et al., NeurIPS 2019).

Eq. 1 (the signal-to-noise weights w_a) lives in compute/experiment/reliability.py: the weights
scale the responses below.

Eq. 2  similarity of scaled population responses r_i (r_ai = w_a rho_ai): centred unit vectors
       e_i = (r_i - mean_i r_i) / ||r_i - mean_i r_i||,  S_ij = e_i . e_j          `similarity`
Eq. 3  oracle similarity: every oracle trial is its own stimulus (unit vectors from all the oracle
       trials), S_oracle_ij = mean over (t_i, t_j) of S_data(i_t, j_t), self-pairs t_i == t_j left
       out on the diagonal                                                       `oracle_similarity`
Eq. 4  fluctuation across scans  S_oracle-h_ij - mean_h S_oracle-h_ij, i < j      `scan_fluctuations`
Eq. 5  fluctuation across repeats  S_data(i_t1, i_t2) - S_oracle_ii, t1 < t2      `repeat_fluctuations`
Eq. 6  model similarity: Eq. 2 on r_hat_ai = w_a v_a rho_hat_ai                   `model_similarity`
Fig. 1D single-trial pairs of different oracle images vs S_oracle              `trial_pair_similarity`
Controls and helpers: `shuffle_similarity` (the 'Shuffle' control), `common_average` (average over
scans on their common images), `mean_by_image`, `upper`, `matrix_correlation`, `summarize`.

Conventions: inputs are (stimuli or trials, neurons); NaN/inf, wrong shapes and degenerate inputs
raise ValueError; similarity matrices come back as float32, exactly symmetric, with a unit diagonal
where Eq. 2 defines one. Means, norms and small Gram matrices are computed in float64; the large
product E E^T of `similarity` runs in float32 by default (5000 stimuli x 8000 neurons: 1-3 s on 2
cores, ~0.3 GiB beyond the input; entries within 2e-6 of a float64 product, see
benchmarks/similarity.py), `dtype=np.float64` on request.
The similarity loss of the classifiers (Eqs. 7-10: S^CNN and its match to these matrices) is differentiable
torch code and lives in `compute/classifier/similarity_loss.py` (`cnn_similarity` is S^CNN, beside S^model here).
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# Eqs. 2-6: similarity matrices

# A centred response vector shorter than this fraction of the data's scale is treated as zero
# (float64 centring leaves ~1e-16 relative residue on a stimulus that equals the mean response).
_ZERO_NORM_REL = 1e-12


def _check_matrix(x, name: str, rows: str = "stimuli", min_rows: int = 2) -> np.ndarray:
    """A 2-D real array (rows, neurons) with at least `min_rows` rows and one column."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be ({rows}, neurons), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == bool):
        raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} {rows} and 1 neuron, got shape {x.shape}")
    return x


def _check_vector(x, name: str, n: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (n,):
        raise ValueError(f"{name} must have one value per neuron, shape ({n},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf ({int(np.sum(~np.isfinite(x)))} of {n})")
    return x


def _check_weights(weights, n_neurons: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = _check_vector(weights, "weights", n_neurons)
    if np.any(w < 0):
        raise ValueError(f"weights must be >= 0 (w_a is a ratio of standard deviations); "
                         f"{int(np.sum(w < 0))} are negative")
    return w


def _check_block(block: int) -> int:
    if int(block) != block or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    return int(block)


def _unit_rows(r: np.ndarray, weights: np.ndarray | None, *, dtype=np.float64, block: int = 1024,
               out: np.ndarray | None = None) -> np.ndarray:
    """e_i = (r_i w - mean_i r_i w) / ||...|| for every row, computed in float64 per row block and
    stored as `dtype` (into `out` if given: `out` may be `r` itself, each block is read before it
    is overwritten). r must be a checked 2-D array."""
    n, d = r.shape
    block = _check_block(block)
    mean = np.zeros(d)
    for i0 in range(0, n, block):
        x = np.asarray(r[i0:i0 + block], dtype=np.float64)
        if not np.all(np.isfinite(x)):
            rows = i0 + np.flatnonzero(~np.all(np.isfinite(x), axis=1))
            raise ValueError(f"responses contain NaN or inf (row {int(rows[0])} and possibly others)")
        mean += x.sum(axis=0)
    mean /= n
    if weights is not None:
        mean *= weights                    # mean of the scaled responses = w * mean of the raw ones
    units = np.empty((n, d), dtype=dtype) if out is None else out
    norms = np.empty(n)
    for i0 in range(0, n, block):
        x = np.array(r[i0:i0 + block], dtype=np.float64)          # a float64 copy of the block
        if weights is not None:
            x *= weights
        x -= mean
        norm = np.sqrt(np.einsum("ij,ij->i", x, x))
        norms[i0:i0 + len(x)] = norm
        x /= np.where(norm > 0, norm, 1.0)[:, None]
        units[i0:i0 + len(x)] = x
    tol = _ZERO_NORM_REL * max(float(norms.max()), float(np.linalg.norm(mean)))
    zero = np.flatnonzero(norms <= tol)
    if len(zero):
        raise ValueError(
            f"{len(zero)} of {n} stimuli have a zero-norm centred response vector (they equal the "
            f"mean response; first: row {int(zero[0])}): their unit vector and Eq. 2 are undefined. "
            f"Drop them, or check that the weights are not all zero.")
    return units


def unit_vectors(r: np.ndarray, *, dtype=np.float64, block: int = 1024) -> np.ndarray:
    """Eq. 2 preparation: centred unit vectors e_i = (r_i - mean_i r_i) / ||r_i - mean_i r_i||.

    r: (n_stimuli, n_neurons), already scaled (r_ai = w_a rho_ai). The mean is over the stimuli
    (rows) of r. Returns (n_stimuli, n_neurons) as `dtype` (float64 by default; computed in float64
    either way). Raises ValueError for NaN/inf, fewer than 2 stimuli, or stimuli whose centred vector
    has zero norm (the message says how many)."""
    r = _check_matrix(r, "responses")
    return _unit_rows(r, None, dtype=dtype, block=block)


def _gram_blocks(units: np.ndarray, block: int) -> np.ndarray:
    """S = E E^T as float32 (n, n): upper block rows by matmul in E's dtype, lower triangle mirrored
    (exactly symmetric), diagonal set to 1 (e_i . e_i = 1 up to rounding)."""
    n = len(units)
    block = _check_block(block)
    S = np.empty((n, n), dtype=np.float32)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        S[i0:i1, i0:] = units[i0:i1] @ units[i0:].T
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        S[i1:, i0:i1] = S[i0:i1, i1:].T
        diag = S[i0:i1, i0:i1]
        lower = np.tril_indices(i1 - i0, -1)
        diag[lower] = diag.T[lower]
    np.fill_diagonal(S, 1.0)
    return S


def similarity(r: np.ndarray, weights: np.ndarray | None = None, *, block: int = 1024,
               dtype=np.float32, overwrite_input: bool = False) -> np.ndarray:
    """Eq. 2: S_ij = e_i . e_j for the scaled responses r_ai * w_a.

    r: (n_stimuli, n_neurons); weights: (n_neurons,) w_a >= 0, or None for 1. Returns float32
    (n_stimuli, n_stimuli), exactly symmetric, diagonal exactly 1.

    Memory and precision: the centring and normalisation run in float64, `block` stimuli at a time;
    the unit vectors are stored as `dtype` (float32 by default: n x n_neurons x 4 bytes) and the
    product E E^T is taken in block rows of the upper triangle, `dtype` matmul, into the float32
    result. 5000 stimuli x 8000 neurons: ~0.3 GiB beyond the input (E 153 MiB, S 95 MiB, one float64
    block 62 MiB), 1-3 s on 2 cores; entries within 2e-6 of a float64 product. `dtype=np.float64`
    doubles memory and time.
    overwrite_input=True writes the unit vectors into r when r is a C-contiguous `dtype` array (saves
    one copy of r; r is destroyed)."""
    r = _check_matrix(r, "responses")
    w = _check_weights(weights, r.shape[1])
    out = None
    if overwrite_input and r.dtype == np.dtype(dtype) and r.flags.c_contiguous and r.flags.writeable:
        out = r
    units = _unit_rows(r, w, dtype=dtype, block=block, out=out)
    return _gram_blocks(units, block)


def model_similarity(predictions: np.ndarray, snr_weight: np.ndarray, test_corr: np.ndarray, *,
                     block: int = 1024, dtype=np.float32) -> np.ndarray:
    """Eq. 6: S_model = Eq. 2 on r_hat_ai = w_a v_a rho_hat_ai.

    predictions: (n_stimuli, n_neurons) rho_hat; snr_weight: (n_neurons,) w_a (Eq. 1, >= 0);
    test_corr: (n_neurons,) v_a, the correlation of prediction and held-out response.
    v_a is clipped at 0: a neuron predicted worse than chance carries no information about the
    stimulus, so it gets weight 0 and drops out. (A negative v_a could not be used as a sign flip
    anyway: S sums products e_ai e_aj of the same neuron's column, so flipping one column's sign
    leaves S unchanged; without the clip such a neuron would enter with weight |w_a v_a|.)
    Neurons with w_a v_a = 0 are left out of the computation (identical result, less work).
    Returns float32 (n_stimuli, n_stimuli), see `similarity`."""
    predictions = _check_matrix(predictions, "predictions")
    n = predictions.shape[1]
    w = _check_weights(snr_weight, n)
    v = _check_vector(test_corr, "test_corr (v_a)", n)
    weights = w * np.clip(v, 0.0, None)
    keep = weights > 0
    if not keep.any():
        raise ValueError(f"no neuron has both w_a > 0 and v_a > 0 (of {n}): S_model is undefined")
    if not keep.all():
        predictions, weights = predictions[:, keep], weights[keep]
    return similarity(predictions, weights, block=block, dtype=dtype)


def _oracle_parts(responses, image_ids, weights):
    """Shared by Eqs. 3 and 5 and Fig. 1D: (ids, inverse, counts, G, S_oracle) with G the float64
    Gram matrix of the trials' unit vectors (every trial its own stimulus, centred on the mean over
    all the oracle trials) and S_oracle float64 (Eq. 3), via the indicator matrix M (images x trials):
    sums = M G M^T; on the diagonal the self-pairs sum_t G_tt are subtracted."""
    responses = _check_matrix(responses, "responses", rows="trials")
    image_ids = np.asarray(image_ids)
    if image_ids.ndim != 1 or len(image_ids) != len(responses):
        raise ValueError(f"need one image id per trial: {image_ids.shape} ids for "
                         f"{len(responses)} trials")
    w = _check_weights(weights, responses.shape[1])
    ids, inverse, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    if len(ids) < 2:
        raise ValueError(f"oracle similarity needs at least 2 oracle images, got {len(ids)}")
    if counts.min() < 2:
        single = ids[counts < 2]
        raise ValueError(f"every oracle image needs at least 2 repeats: {len(single)} of {len(ids)} "
                         f"images were shown once (e.g. image id {single[0]})")
    units = _unit_rows(responses, w, dtype=np.float64)
    G = units @ units.T
    G = 0.5 * (G + G.T)
    M = np.zeros((len(ids), len(image_ids)))
    M[inverse, np.arange(len(image_ids))] = 1.0
    sums = M @ G @ M.T
    sums = 0.5 * (sums + sums.T)
    pairs = np.outer(counts, counts).astype(np.float64)
    self_pairs = np.bincount(inverse, weights=np.diagonal(G), minlength=len(ids))
    diag = np.arange(len(ids))
    sums[diag, diag] -= self_pairs
    pairs[diag, diag] = counts * (counts - 1.0)
    return ids, inverse, counts, G, sums / pairs


def oracle_similarity(responses: np.ndarray, image_ids: np.ndarray,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 3 on the oracle trials.

    responses: (n_trials, n_neurons), the oracle trials only (unscaled rho; `weights` w_a applied
    here); image_ids: (n_trials,). Each trial is its own stimulus: e_t from all the oracle trials
    (centred on the mean over all of them), S_data between all trial pairs, and
    S_oracle_ij = mean over (t_i, t_j) of S_data(i_t, j_t), the self-pairs t_i == t_j left out on the
    diagonal (mean over t1 != t2). Repeat counts may differ between images; each needs >= 2.
    Returns (S_oracle float32 (n_images, n_images) in sorted-id order, the sorted unique image ids)."""
    ids, _, _, _, s_oracle = _oracle_parts(responses, image_ids, weights)
    return s_oracle.astype(np.float32), ids


def _repeat_values(inverse, G, s_oracle) -> np.ndarray:
    out = []
    for i in range(len(s_oracle)):
        trials = np.flatnonzero(inverse == i)
        a, b = np.triu_indices(len(trials), 1)
        out.append(G[trials[a], trials[b]] - s_oracle[i, i])
    return np.concatenate(out)


def _trial_pairs(inverse, G, s_oracle):
    order = np.argsort(inverse, kind="stable")
    image = inverse[order]
    a, b = np.triu_indices(len(order), 1)
    different = image[a] != image[b]
    a, b = a[different], b[different]
    pairs = np.stack([image[a], image[b]], axis=1).astype(np.int64)
    return (G[order[a], order[b]].astype(np.float32),
            s_oracle[pairs[:, 0], pairs[:, 1]].astype(np.float32), pairs)


def repeat_fluctuations(responses: np.ndarray, image_ids: np.ndarray,
                        weights: np.ndarray | None = None) -> np.ndarray:
    """Eq. 5 for one scan: S_data(i_t1, i_t2) - S_oracle_ii for every image i (sorted ids) and every
    pair of its trials t1 < t2 (trials in their order in `responses`), with the trial unit vectors
    and S_oracle of Eq. 3. Returns float64, sum_i T_i (T_i - 1) / 2 values."""
    _, inverse, _, G, s_oracle = _oracle_parts(responses, image_ids, weights)
    return _repeat_values(inverse, G, s_oracle)


def trial_pair_similarity(responses: np.ndarray, image_ids: np.ndarray,
                          weights: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fig. 1D: every trial pair (i_t, j_t') of different oracle images i < j.

    Returns (S_data of the pair (float32), the matching S_oracle_ij (float32), pair index (m, 2)
    int64: positions i < j into the sorted unique image ids of `oracle_similarity`). Order: i, then
    t (trials in their order in `responses`), then j, then t'. m = sum_{i<j} T_i T_j."""
    _, inverse, _, G, s_oracle = _oracle_parts(responses, image_ids, weights)
    return _trial_pairs(inverse, G, s_oracle)


def scan_checks(responses, image_ids, weights, predictions, test_corr) -> dict:
    """The Fig. 1 checks of one scan, from one Gram matrix of its oracle trials: S_oracle (Eq. 3) and
    its image ids, S_model (Eq. 6) on the same images (`predictions` rows in sorted-id order), the
    Eq. 5 values, r(S_model, S_oracle) over pairs i<j and r(S_data, S_oracle) over single-trial
    pairs of different images (Fig. 1D), and the spread (s.d. off the diagonal) of both matrices."""
    ids, inverse, _, G, s_oracle = _oracle_parts(responses, image_ids, weights)
    s_model = model_similarity(predictions, weights, test_corr)
    if s_model.shape != s_oracle.shape:
        raise ValueError(f"{len(predictions)} predicted images for {len(ids)} oracle images")
    s_data, s_pair, _ = _trial_pairs(inverse, G, s_oracle)
    repeats = _repeat_values(inverse, G, s_oracle)
    return {"image_ids": ids, "oracle": s_oracle.astype(np.float32), "repeat_values": repeats,
            "r_model_oracle": matrix_correlation(s_model, s_oracle),
            "r_data_oracle": float(np.corrcoef(s_data, s_pair)[0, 1]),
            "repeat_fluctuation_std": float(np.std(repeats)),
            "oracle_range": float(upper(s_oracle).std()), "model_range": float(upper(s_model).std())}


def stability(scans: list[dict]) -> tuple[dict, list[dict]]:
    """Eqs. 4-5 and Fig. 1D over a group of scans (Fig. 1C, D of the paper).

    scans: per scan, the `scan_checks` arguments as a dict (responses, image_ids, weights,
    predictions, test_corr). Eq. 4 uses the oracle images common to all scans (needs >= 2 scans,
    else None). Returns (group summary, per-scan rows)."""
    checks = [scan_checks(**scan) for scan in scans]
    common = checks[0]["image_ids"]
    for c in checks[1:]:
        common = np.intersect1d(common, c["image_ids"])
    if len(common) < 2:
        raise ValueError(f"fewer than 2 oracle images common to all {len(scans)} scans")
    scan_values = None
    if len(checks) >= 2:
        stack = [c["oracle"][np.ix_(np.isin(c["image_ids"], common), np.isin(c["image_ids"], common))]
                 for c in checks]
        scan_values = scan_fluctuations(np.stack(stack))
    repeat_values = np.concatenate([c["repeat_values"] for c in checks])
    per_scan = [{k: c[k] for k in ("r_model_oracle", "r_data_oracle", "repeat_fluctuation_std",
                                   "oracle_range", "model_range")} for c in checks]
    summary = {"n_scans": len(checks), "n_oracle_images": len(common),
               "scan_fluctuation": None if scan_values is None else summarize(scan_values),
               "repeat_fluctuation": summarize(repeat_values),
               "scan_values": None if scan_values is None else scan_values.astype(np.float32),
               "repeat_values": repeat_values.astype(np.float32),
               "r_model_oracle": float(np.mean([r["r_model_oracle"] for r in per_scan])),
               "r_data_oracle": float(np.mean([r["r_data_oracle"] for r in per_scan]))}
    return summary, per_scan


# ----------------------------------------------------------------------------------------------
# Controls, comparisons and helpers

def _check_square(S, name: str = "S") -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {S.shape}")
    return S


def shuffle_similarity(S: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The 'Shuffle' control: S[p][:, p] for p = np.random.default_rng(seed).permutation(n).

    The image labels stay where they are and the rows/columns are relabelled: image a now gets the
    similarities of image p[a], S_shuf[a, b] = S[p[a], p[b]]. The values (and the diagonal) are kept
    exactly, in S's dtype. Returns (S_shuffled, p)."""
    S = _check_square(S)
    if not np.all(np.isfinite(S)):
        raise ValueError("S contains NaN or inf")
    p = np.random.default_rng(seed).permutation(len(S))
    return S[np.ix_(p, p)], p


def _upper_mask(n: int) -> np.ndarray:
    return np.triu(np.ones((n, n), dtype=bool), 1)


def upper(S: np.ndarray) -> np.ndarray:
    """The strict upper triangle (i < j) of a square matrix, row by row (i, then j): n(n-1)/2
    values in S's dtype; the same order as S[np.triu_indices(n, 1)]."""
    S = _check_square(S)
    return S[_upper_mask(len(S))]


def matrix_correlation(A: np.ndarray, B: np.ndarray) -> float:
    """Pearson r between the strict upper triangles (i < j) of two same-shape similarity matrices
    (float64). The diagonal is left out: it is 1 by construction in Eqs. 2 and 6."""
    A, B = _check_square(A, "A"), _check_square(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"matrices differ in shape: {A.shape} vs {B.shape}")
    if len(A) < 3:
        raise ValueError(f"need at least 3 x 3 matrices (2 off-diagonal pairs), got {A.shape}")
    a, b = upper(A).astype(np.float64), upper(B).astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("matrices contain NaN or inf")
    a -= a.mean()
    b -= b.mean()
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if denominator == 0:
        raise ValueError("a matrix is constant off the diagonal: the correlation is undefined")
    return float(np.dot(a, b) / denominator)


def summarize(values) -> dict:
    """n (int), mean, std (population, ddof=0), q05, q25, median, q75, q95 (floats, linear
    quantiles) of all values (any shape, flattened). Empty input or NaN/inf -> ValueError."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("nothing to summarize: no values")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"values contain NaN or inf ({int(np.sum(~np.isfinite(v)))} of {v.size})")
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "q05": float(q[0]),
            "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "q95": float(q[4])}


def scan_fluctuations(oracle_matrices: np.ndarray) -> np.ndarray:
    """Eq. 4: Delta_hij = S_oracle-h_ij - mean_h S_oracle-h_ij for i < j.

    oracle_matrices: (h, n, n) (or a list of h (n, n)), the S_oracle of h >= 2 scans on the same
    images in the same order. Returns float64 (h * n(n-1)/2,): scan by scan, each scan's strict upper
    triangle in the order of `upper`."""
    m = np.asarray(oracle_matrices, dtype=np.float64)
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise ValueError(f"need a stack (scans, n, n) of square matrices, got shape {m.shape}")
    if m.shape[0] < 2:
        raise ValueError(f"Eq. 4 needs at least 2 scans, got {m.shape[0]}")
    if not np.all(np.isfinite(m)):
        raise ValueError("oracle matrices contain NaN or inf")
    mask = _upper_mask(m.shape[1])
    mean = m.mean(axis=0)
    return np.concatenate([(s - mean)[mask] for s in m])


def common_average(matrices: list[np.ndarray], id_lists: list[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Average similarity matrices of several scans over the images common to all of them.

    matrices[k]: (n_k, n_k) with rows/columns labelled by id_lists[k] (unique ids, any order).
    Returns (mean over scans of each matrix restricted to the common images, float64 accumulation,
    float32 (m, m); the common ids sorted). Fewer than 2 common images -> ValueError."""
    if len(matrices) != len(id_lists):
        raise ValueError(f"{len(matrices)} matrices but {len(id_lists)} id lists")
    if len(matrices) == 0:
        raise ValueError("nothing to average: no matrices")
    checked = []
    for k, (S, ids) in enumerate(zip(matrices, id_lists)):
        S, ids = _check_square(S, f"matrix {k}"), np.asarray(ids)
        if ids.shape != (len(S),):
            raise ValueError(f"scan {k}: {ids.shape} ids for a {S.shape} matrix")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"scan {k}: image ids are not unique")
        if not np.all(np.isfinite(S)):
            raise ValueError(f"scan {k}: matrix contains NaN or inf")
        checked.append((S, ids))
    common = checked[0][1]
    for _, ids in checked[1:]:
        common = np.intersect1d(common, ids)
    common = np.unique(common)
    if len(common) < 2:
        raise ValueError(f"only {len(common)} image(s) common to all {len(checked)} scans "
                         f"(images per scan: {[len(ids) for _, ids in checked]})")
    total = np.zeros((len(common), len(common)))
    for S, ids in checked:
        sorter = np.argsort(ids, kind="stable")
        pos = sorter[np.searchsorted(ids, common, sorter=sorter)]
        total += S[np.ix_(pos, pos)]
    return (total / len(checked)).astype(np.float32), common


def mean_by_image(responses: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average the trials of each image: (means (n_images, n_neurons), sorted unique ids).

    Images shown once are copied; repeated ones averaged in float64. The result keeps the dtype of
    `responses` when it is floating point (float64 otherwise)."""
    responses = _check_matrix(responses, "responses", rows="trials", min_rows=1)
    image_ids = np.asarray(image_ids)
    if image_ids.ndim != 1 or len(image_ids) != len(responses):
        raise ValueError(f"need one image id per trial: {image_ids.shape} ids for "
                         f"{len(responses)} trials")
    if not np.all(np.isfinite(responses)):
        raise ValueError("responses contain NaN or inf")
    ids, first, inverse, counts = np.unique(image_ids, return_index=True, return_inverse=True,
                                            return_counts=True)
    dtype = responses.dtype if np.issubdtype(responses.dtype, np.floating) else np.float64
    means = responses[first].astype(dtype)
    repeated = counts > 1
    if repeated.any():
        rows = np.flatnonzero(repeated[inverse])
        rows = rows[np.argsort(inverse[rows], kind="stable")]
        starts = np.r_[0, np.cumsum(counts[repeated])[:-1]]
        sums = np.add.reduceat(responses[rows].astype(np.float64), starts, axis=0)
        means[repeated] = sums / counts[repeated][:, None]
    return means, ids
