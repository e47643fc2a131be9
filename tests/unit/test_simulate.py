"""Unit tests of the simulated mouse-V1 experiment (neuralreg_schema/compute/experiment/simulate.py)."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from neuralreg_schema.compute.experiment import simulate as sim
from neuralreg_schema.compute.experiment.recording import IMAGE_SHAPE
from neuralreg_schema.compute.experiment.reliability import snr_weights

TINY = sim.PROFILES["tiny"]
# big enough for Eq. 1 to rank neurons reliably, still ~1 s
MODERATE = sim.SimProfile("moderate", n_scans=1, n_neurons=200, n_images=100, n_oracle=50,
                          n_repeats=10)


@pytest.fixture(scope="module")
def tiny():
    return sim.simulate_experiment("tiny", seed=0)


def _arrays(exp):
    """Every array of an experiment, by name, for exact comparisons."""
    out = {"images": exp.image_set.images, "image_ids": exp.image_set.image_ids}
    for k, scan in enumerate(exp.scans):
        for name in ("unit_ids", "cell_positions", "trial_idx", "image_ids", "tiers", "responses",
                     "behavior", "pupil_center"):
            out[f"{k}.{name}"] = getattr(scan, name)
        for name, value in scan.ground_truth.items():
            out[f"{k}.truth.{name}"] = np.asarray(value)
    return out


def test_profiles_have_the_documented_sizes():
    assert set(sim.PROFILES) == {"tiny", "demo", "full"}
    full = sim.PROFILES["full"]
    assert (full.n_images, full.n_oracle, full.n_repeats) == (5000, 100, 10)
    assert full.n_trials == 6000
    for name, p in sim.PROFILES.items():
        assert p.name == name and p.n_scans >= 2


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ValueError, match="tiny.*demo.*full"):
        sim.simulate_experiment("huge")


def test_shapes_dtypes_and_validation(tiny):
    p = TINY
    iset = tiny.image_set
    iset.validate()
    assert iset.name == "sim-tiny-0" and tiny.profile == "tiny" and tiny.seed == 0
    assert iset.images.shape == (p.n_images + p.n_oracle, *IMAGE_SHAPE)
    assert iset.images.dtype == np.float32 and iset.image_ids.dtype == np.int64
    assert iset.images.min() >= 0 and iset.images.max() <= 255
    assert len(tiny.scans) == p.n_scans
    for scan in tiny.scans:
        scan.validate(iset.image_ids)
        assert scan.source == "simulated" and scan.image_set == iset.name
        assert scan.responses.shape == (p.n_trials, p.n_neurons)
        assert scan.responses.dtype == np.float32 and scan.responses.min() >= 0
        assert scan.behavior.dtype == np.float32 and scan.pupil_center.dtype == np.float32
        assert scan.cell_positions.dtype == np.float32
        assert scan.unit_ids.dtype == np.int64 and scan.image_ids.dtype == np.int64
        np.testing.assert_array_equal(scan.trial_idx, np.arange(p.n_trials))
        x, y, z = scan.cell_positions.T
        assert x.min() >= 0 and x.max() <= sim.FOV_UM and y.min() >= 0 and y.max() <= sim.FOV_UM
        assert z.min() >= 200 and z.max() <= 400
        gt = scan.ground_truth
        for key in ("reliability", "rf_x", "rf_y", "orientation", "spatial_frequency", "size",
                    "phase", "cell_type", "pupil_gain", "running_gain"):
            assert gt[key].shape == (p.n_neurons,), key
        assert gt["eye_shift_px"].shape == (p.n_trials, 2)
        assert gt["noise_free"].shape == (len(iset.image_ids), p.n_neurons)
        assert gt["noise_free"].dtype == np.float32
        assert set(np.unique(gt["cell_type"])) == {0, 1}
        wavelength = 1 / gt["spatial_frequency"]
        assert wavelength.min() >= 8 and wavelength.max() <= 30
        assert (gt["rf_x"].min() >= 0 and gt["rf_x"].max() <= IMAGE_SHAPE[1] - 1
                and gt["rf_y"].min() >= 0 and gt["rf_y"].max() <= IMAGE_SHAPE[0] - 1)


def test_scans_are_distinct_and_share_the_image_set(tiny):
    names = [s.name for s in tiny.scans]
    assert len(set(names)) == len(names)
    shown = [set(s.image_ids.tolist()) for s in tiny.scans]
    assert all(ids == set(tiny.image_set.image_ids.tolist()) for ids in shown)
    for a, b in zip(tiny.scans, tiny.scans[1:]):
        assert not np.array_equal(a.image_ids, b.image_ids)      # each scan its own order
        assert not np.array_equal(a.ground_truth["rf_x"], b.ground_truth["rf_x"])
        for tier in ("train", "validation", "oracle"):           # tiers are properties of images
            assert set(a.image_ids[a.tiers == tier]) == set(b.image_ids[b.tiers == tier])


def test_tiers_and_oracle_repeats(tiny):
    p = TINY
    for scan in tiny.scans:
        assert set(np.unique(scan.tiers)) == {"train", "validation", "oracle"}
        n_val = (scan.tiers == "validation").sum()
        assert n_val == round(p.validation_fraction * p.n_images)
        assert (scan.tiers == "train").sum() == p.n_images - n_val
        oracle = scan.tiers == "oracle"
        ids, counts = np.unique(scan.image_ids[oracle], return_counts=True)
        assert len(ids) == p.n_oracle and np.all(counts == p.n_repeats)
        single = scan.image_ids[~oracle]
        assert len(np.unique(single)) == len(single) == p.n_images
        assert not np.intersect1d(ids, single).size
        # repeats are interleaved through the session, not presented as a block
        pos = np.flatnonzero(oracle)
        assert pos.min() < 0.2 * p.n_trials and pos.max() > 0.8 * p.n_trials
        assert np.diff(pos).max() < 0.2 * p.n_trials


def test_same_seed_is_bit_identical_and_seeds_differ(tiny):
    again = _arrays(sim.simulate_experiment("tiny", seed=0))
    first = _arrays(tiny)
    assert first.keys() == again.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    other = sim.simulate_experiment("tiny", seed=1)
    assert other.image_set.name == "sim-tiny-1"
    assert not np.array_equal(other.image_set.images, tiny.image_set.images)
    assert not np.array_equal(other.scans[0].responses, tiny.scans[0].responses)


def test_progress_is_reported():
    messages = []
    sim.simulate_experiment(sim.SimProfile("p", n_scans=2, n_neurons=5, n_images=20, n_oracle=3,
                                           n_repeats=2), progress=messages.append)
    assert len(messages) == 3 and all(isinstance(m, str) for m in messages)


def test_reliability_is_heterogeneous_with_pure_noise_neurons(tiny):
    w = np.concatenate([s.ground_truth["reliability"] for s in tiny.scans])
    assert np.all(np.isfinite(w)) and w.min() >= 0
    p10, p50, p90 = np.percentile(w, [10, 50, 90])
    assert p90 / p10 > 5
    assert 0.2 < p50 < 1.2
    assert (w < 0.1).mean() >= 0.03                  # some neurons are nearly pure noise


def test_eq1_on_simulated_oracle_trials_recovers_true_reliability():
    exp = sim.simulate_experiment(MODERATE, seed=0)
    scan = exp.scans[0]
    oracle = scan.tiers == "oracle"
    w = snr_weights(scan.responses[oracle], scan.image_ids[oracle]).weight
    assert spearmanr(w, scan.ground_truth["reliability"])[0] > 0.85


def test_reliable_neurons_are_driven_by_the_image(tiny):
    """The trial responses of reliable neurons follow their noise-free responses to the images."""
    for scan in tiny.scans:
        gt = scan.ground_truth
        expected = gt["noise_free"][scan.image_ids]          # image ids are 0..n-1 row indices
        good = np.flatnonzero(gt["reliability"] > np.percentile(gt["reliability"], 75))
        r = [np.corrcoef(expected[:, a], scan.responses[:, a])[0, 1] for a in good]
        assert np.median(r) > 0.4


def test_images_are_natural_not_noise(tiny):
    images = tiny.image_set.images.astype(np.float64)
    neighbour = [np.corrcoef(im[:, :-1].ravel(), im[:, 1:].ravel())[0, 1]
                 for im in images if im.std() > 1]
    assert np.median(neighbour) > 0.8
    power = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(IMAGE_SHAPE[0])[:, None]
    fx = np.fft.fftfreq(IMAGE_SHAPE[1])[None, :]
    f = np.hypot(fx, fy)
    bands = [power.mean(axis=0)[(f >= lo) & (f < 2 * lo)].mean() for lo in (0.03, 0.06, 0.12, 0.24)]
    assert all(a > 2 * b for a, b in zip(bands, bands[1:]))   # falls steeply with frequency
    assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)


def test_crops_come_from_the_packaged_photos():
    photos = sim.source_photos()
    names = [name for name, _ in photos]
    assert "skimage:camera" in names and "skimage:astronaut" in names
    assert sum(n.startswith("foolbox:imagenet_") for n in names) >= 10
    crops, provenance = sim.photo_crops(20, np.random.default_rng(0))
    h, w = IMAGE_SHAPE
    for crop, (photo, level, q, y0, x0, flip_lr, flip_ud) in zip(crops, provenance):
        src = photos[photo][1][level][y0:y0 + q * h, x0:x0 + q * w]
        ref = src.reshape(h, q, w, q).mean(axis=(1, 3))
        if flip_lr:
            ref = ref[:, ::-1]
        if flip_ud:
            ref = ref[::-1]
        if ref.std() > 1 and crop.std() > 1:
            assert np.corrcoef(ref.ravel(), crop.ravel())[0, 1] > 0.95


def test_dead_leaves_have_natural_statistics():
    images = sim.dead_leaves(10, np.random.default_rng(0))
    assert images.shape == (10, *IMAGE_SHAPE) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    neighbour = [np.corrcoef(im[:, :-1].ravel(), im[:, 1:].ravel())[0, 1] for im in images]
    assert np.median(neighbour) > 0.8


def test_behavior_is_smooth_and_plausible(tiny):
    for scan in tiny.scans:
        pupil, dpupil, running = scan.behavior.T.astype(np.float64)

        def lag1(v):
            return np.corrcoef(v[:-1], v[1:])[0, 1]

        assert lag1(pupil) > 0.8 and lag1(running) > 0.7
        assert lag1(scan.pupil_center[:, 0]) > 0.5 and lag1(scan.pupil_center[:, 1]) > 0.5
        assert running.min() >= 0 and running.max() > 5 and (running == 0).any()
        assert pupil.min() > 0
        np.testing.assert_allclose(dpupil, np.gradient(pupil) / sim.TRIAL_PERIOD_S,
                                   rtol=1e-4, atol=1e-4)


def test_eye_shift_is_a_smooth_bounded_function_of_eye_position(tiny):
    shift = tiny.scans[0].ground_truth["eye_shift_px"]
    assert np.abs(shift).max() <= sim.MAX_EYE_SHIFT_PX and shift.std(axis=0).min() > 0.2
    center = np.array([300.0, 230.0])
    eye_map = np.array([[0.25, 0.0], [0.0, 0.25]])
    np.testing.assert_allclose(sim.eye_shift(center[None], center, eye_map), 0, atol=1e-12)
    small = sim.eye_shift(center + [[2.0, 0.0]], center, eye_map)
    np.testing.assert_allclose(small, [[0.5, 0.0]], rtol=1e-2)
    far = sim.eye_shift(center + [[1e4, -1e4]], center, eye_map)
    np.testing.assert_allclose(np.abs(far), sim.MAX_EYE_SHIFT_PX)


def test_shift_images_translates():
    rng = np.random.default_rng(0)
    img = rng.random((1, *IMAGE_SHAPE)).astype(np.float32)
    out = sim.shift_images(img, np.array([[3.0, -2.0]])).reshape(IMAGE_SHAPE)
    np.testing.assert_allclose(out[2:, :-3], img[0, :-2, 3:])        # out(y, x) = img(y - 2, x + 3)
    half = sim.shift_images(img, np.array([[0.5, 0.0]])).reshape(IMAGE_SHAPE)
    np.testing.assert_allclose(half[:, :-1], 0.5 * (img[0, :, :-1] + img[0, :, 1:]), rtol=1e-6)


def test_eye_position_moves_receptive_fields():
    """For a fixed image, responses depend on the eye shift, exactly as if the image moved."""
    rng = np.random.default_rng(0)
    images = sim.make_image_set("t", 64, 0.3, rng).images
    x = sim._normalize(images)
    retinotopy = dict(center=np.array([32.0, 18.0]), matrix=np.diag([0.03, 0.02]), scatter=1.0)
    pop, _ = sim.sample_population(200, rng, retinotopy, x.reshape(len(x), -1))
    img = x[:1].copy()
    img[:, :4], img[:, -4:], img[:, :, :4], img[:, :, -4:] = 0, 0, 0, 0   # mid-gray frame
    no_gain = np.zeros(pop.n_neurons)
    at_rest = pop.rates(sim.shift_images(img, np.zeros((1, 2))), no_gain)
    shifted = pop.rates(sim.shift_images(img, np.array([[3.0, 2.0]])), no_gain)
    # a large fraction changes by > 10% (not all: sparse high-threshold cells idle at baseline)
    assert (np.abs(shifted - at_rest) > 0.1 * at_rest).mean() > 0.25
    # receptive fields displaced by (dx, dy) = (3, 2) px see the image moved by (-3, -2) px
    moved = np.roll(img, (-2, -3), axis=(1, 2)).reshape(1, -1)
    np.testing.assert_allclose(shifted, pop.rates(moved, no_gain), rtol=1e-4)


def test_cortical_position_maps_to_retinotopy(tiny):
    for scan in tiny.scans:
        x_um, y_um = scan.cell_positions[:, 0], scan.cell_positions[:, 1]
        gt = scan.ground_truth
        assert abs(np.corrcoef(x_um, gt["rf_x"])[0, 1]) > 0.5
        assert abs(np.corrcoef(y_um, gt["rf_y"])[0, 1]) > 0.3


# Fig. 1 of the paper on simulated data: Eqs. 1-5 as small local helpers (compute/experiment/reliability.py owns the real ones)
FIG1 = sim.SimProfile("fig1", n_scans=2, n_neurons=1000, n_images=50, n_oracle=100, n_repeats=10,
                      n_virtual_repeats=16)


def _unit_rows(r):
    r = r - r.mean(axis=0)                        # centred on the mean over all rows used
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def _fig1_similarities(scan):
    """Per scan: image ids, single-trial similarities S_data (Eq. 2) as (n, T, n, T), S_oracle
    (Eq. 3, (n, n)) and S_model (noise-free responses, (n, n)); every response scaled by its Eq. 1
    weight from the oracle trials."""
    oracle = np.flatnonzero(scan.tiers == "oracle")
    oracle = oracle[np.argsort(scan.image_ids[oracle], kind="stable")]     # image-major order
    ids = np.unique(scan.image_ids[oracle])
    n, t = len(ids), len(oracle) // len(ids)
    w = snr_weights(scan.responses[oracle], scan.image_ids[oracle]).weight
    e = _unit_rows(scan.responses[oracle].astype(np.float64) * w)
    s_data = (e @ e.T).reshape(n, t, n, t)
    block = s_data.sum(axis=(1, 3))
    s_oracle = block / t ** 2
    same = block.diagonal() - np.einsum("itit->i", s_data)     # leave out the self-pairs t_i == t_j
    s_oracle[np.diag_indices(n)] = same / (t * (t - 1))
    model = _unit_rows(scan.ground_truth["noise_free"][ids].astype(np.float64) * w)
    return ids, s_data, s_oracle, model @ model.T


def test_model_similarity_beats_single_trial_similarity_and_scans_agree():
    """Fig. 1: single-trial similarity is noisy (paper r = 0.39), the ideal (noise-free) model's
    similarity tracks S_oracle much better (paper r = 0.73 for a learned model), and S_oracle
    varies less across scans (Eq. 4) than single trials of the same image (Eq. 5)."""
    exp = sim.simulate_experiment(FIG1, seed=0)
    oracles, repeat_deltas = [], []
    for scan in exp.scans:
        ids, s_data, s_oracle, s_model = _fig1_similarities(scan)
        n, t = s_data.shape[:2]
        iu = np.triu_indices(n, 1)
        pairs = s_data[iu[0], :, iu[1], :]                       # single trials of image pairs i != j
        r_data = np.corrcoef(pairs.ravel(), np.repeat(s_oracle[iu], t * t))[0, 1]
        r_model = np.corrcoef(s_model[iu], s_oracle[iu])[0, 1]
        assert 0.15 < r_data < 0.65, r_data          # the old, too clean simulation: ~0.85
        assert r_model > 0.7 and r_model > r_data + 0.25, (r_model, r_data)
        it = np.triu_indices(t, 1)
        repeat_deltas.append(np.stack([s_data[i, :, i, :][it] - s_oracle[i, i] for i in range(n)]))
        oracles.append(s_oracle)
        np.testing.assert_array_equal(ids, np.unique(exp.scans[0].image_ids[exp.scans[0].tiers
                                                                             == "oracle"]))
    oracles = np.stack(oracles)
    iu = np.triu_indices(oracles.shape[1], 1)
    scan_spread = (oracles - oracles.mean(axis=0))[:, iu[0], iu[1]].std()          # Eq. 4
    repeat_spread = np.concatenate(repeat_deltas, axis=None).std()                 # Eq. 5
    assert scan_spread < 0.5 * repeat_spread, (scan_spread, repeat_spread)


def test_scan_keys_differ_between_profiles_and_seeds():
    exp_a = sim.simulate_experiment("tiny", seed=1)
    exp_b = sim.simulate_experiment("tiny", seed=2)
    keys = lambda e: {(s.animal_id, s.session, s.scan_idx) for s in e.scans}
    assert len(keys(exp_a)) == len(exp_a.scans)
    assert not keys(exp_a) & keys(exp_b)
    assert all(91_000_000 < s.animal_id < 92_000_000 for s in exp_a.scans)
    with pytest.raises(ValueError, match="seeds 0..9999"):
        sim.simulate_experiment("tiny", seed=10_000)


# ---------------------------------------------------------------------------------------------
# known-answer populations (tunings)

def test_mouse_tuning_is_the_default_and_tunings_share_the_images(tiny):
    mouse = sim.simulate_experiment("tiny", 0, tuning="mouse")
    for a, b in zip(tiny.scans, mouse.scans):          # the default is the mouse tuning, bit for bit
        assert np.array_equal(a.responses, b.responses)
    ids = {s.animal_id for s in tiny.scans}
    for k, name in enumerate(("low", "high"), start=1):
        other = sim.simulate_experiment("tiny", 0, tuning=name)
        assert other.tuning == name
        assert np.array_equal(other.image_set.images, tiny.image_set.images)   # the same stimuli ...
        for scan, base in zip(other.scans, tiny.scans):
            assert scan.animal_id == base.animal_id + 10 * k     # 9PSSSSTA: T the tuning
            assert not np.array_equal(scan.responses, base.responses)
            assert set(scan.image_ids) == set(base.image_ids)
        assert not ids & {s.animal_id for s in other.scans}
        again = sim.simulate_experiment("tiny", 0, tuning=name)
        assert np.array_equal(again.scans[0].responses, other.scans[0].responses)
    with pytest.raises(ValueError, match="unknown tuning 'medium'; valid tunings: mouse, low, high"):
        sim.simulate_experiment("tiny", 0, tuning="medium")


def test_gabor_bank_keeps_the_luminance_response_only_when_asked():
    args = [np.array([30.0]), np.array([18.0]), np.array([0.3]), np.array([50.0]), np.array([5.0]),
            np.array([0.8]), np.array([0.0])]
    zero, dc = sim.gabor_bank(*args), sim.gabor_bank(*args, zero_mean=False)
    assert abs(zero.sum()) < 1e-9 and dc.sum() > 0.5 * np.abs(dc).sum()
    assert np.allclose(np.linalg.norm(dc, axis=0), 1)


def test_tuned_populations_resemble_their_pixel_targets():
    """The known answers before training: the noise-free similarity (z-scored per neuron, Eq. 2) of
    the 'low' population correlates with the lowpass target, the 'high' population's with the
    highpass target more than with the lowpass one; the mouse population with neither as much."""
    from neuralreg_schema.compute.similarity import pixel_targets, rsa
    profile = sim.SimProfile("popcheck", n_scans=1, n_neurons=400, n_images=240, n_oracle=10, n_repeats=2,
                             n_virtual_repeats=4)
    r = {}
    for name in sim.TUNINGS:
        exp = sim.simulate_experiment(profile, 0, tuning=name)
        images = exp.image_set.images / 255.0
        free = exp.scans[0].ground_truth["noise_free"].astype(np.float64)
        s = rsa.similarity((free - free.mean(0)) / free.std(0), dtype=np.float64)
        r[name] = {m: rsa.matrix_correlation(s, pixel_targets.pixel_similarity(images, m))
                   for m in pixel_targets.METHODS}
    assert r["low"]["lowpass"] > 0.6 and r["low"]["lowpass"] > r["mouse"]["lowpass"] + 0.4, r
    assert r["high"]["highpass"] > r["high"]["lowpass"] + 0.2, r
    assert r["high"]["highpass"] > r["mouse"]["highpass"], r
    assert r["mouse"]["lowpass"] < 0.3, r
