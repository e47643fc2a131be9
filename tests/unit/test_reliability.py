"""Eq. 1 (signal-to-noise weight) against a direct numpy computation."""
import numpy as np
import pytest

from neuralreg_schema.compute.experiment import reliability


def direct_eq1(responses, image_ids):
    """The paper's definition written out loop by loop."""
    n_neurons = responses.shape[1]
    images = sorted(set(image_ids.tolist()))
    sigma2, eta2 = np.zeros(n_neurons), np.zeros(n_neurons)
    for a in range(n_neurons):
        means = [np.mean(responses[image_ids == i, a]) for i in images]
        variances = [np.var(responses[image_ids == i, a], ddof=1) for i in images]
        sigma2[a] = np.var(means)
        eta2[a] = np.mean(variances)
    return sigma2, eta2, np.sqrt(sigma2) / np.sqrt(eta2)


def test_eq1_matches_direct_computation():
    rng = np.random.default_rng(1)
    image_ids = np.repeat(np.arange(7), 4)
    rng.shuffle(image_ids)
    responses = rng.gamma(2.0, 1.0, size=(len(image_ids), 5)) + np.arange(5)
    snr = reliability.snr_weights(responses, image_ids)
    sigma2, eta2, w = direct_eq1(responses, image_ids)
    np.testing.assert_allclose(snr.signal_var, sigma2, rtol=1e-12)
    np.testing.assert_allclose(snr.noise_var, eta2, rtol=1e-12)
    np.testing.assert_allclose(snr.weight, w, rtol=1e-12)
    assert (snr.status == "ok").all()


def test_unequal_repeat_counts_weigh_images_equally():
    rng = np.random.default_rng(2)
    image_ids = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    responses = rng.normal(size=(10, 3))
    snr = reliability.snr_weights(responses, image_ids)
    sigma2, eta2, w = direct_eq1(responses, image_ids)
    np.testing.assert_allclose(snr.weight, w, rtol=1e-12)


def test_signal_dominated_neuron_gets_larger_weight():
    rng = np.random.default_rng(3)
    image_ids = np.repeat(np.arange(20), 10)
    signal = rng.normal(size=20)[image_ids]
    responses = np.stack([signal + 0.1 * rng.normal(size=200), 0.1 * signal + rng.normal(size=200)], axis=1)
    w = reliability.snr_weights(responses, image_ids).weight
    assert w[0] > 5 and w[1] < 0.5


def test_constant_and_noiseless_neurons_are_explicit():
    image_ids = np.repeat(np.arange(3), 2)
    responses = np.stack([np.full(6, 4.0),                     # constant: no signal, no noise
                          np.array([1., 1., 2., 2., 5., 5.]),  # identical repeats: zero noise
                          np.array([1., 2., 1., 2., 1., 2.])]  # pure noise: zero signal
                         , axis=1)
    snr = reliability.snr_weights(responses, image_ids, max_weight=50.0)
    assert snr.status.tolist() == ["constant", "noiseless", "ok"]
    assert snr.weight[0] == 0.0
    assert snr.weight[1] == 50.0
    assert snr.weight[2] == 0.0
    assert np.all(np.isfinite(snr.weight))


@pytest.mark.parametrize("responses, image_ids, message", [
    (np.ones((4, 2)), np.array([0, 0, 1]), "image ids"),
    (np.ones(4), np.array([0, 0, 1, 1]), "trials, neurons"),
    (np.array([[1.], [np.nan], [1.], [2.]]), np.array([0, 0, 1, 1]), "NaN"),
    (np.ones((3, 2)), np.array([0, 0, 1]), "at least 2 repeats"),
    (np.ones((3, 2)), np.array([0, 0, 0]), "at least 2 oracle images"),
])
def test_bad_input_refused(responses, image_ids, message):
    with pytest.raises(ValueError, match=message):
        reliability.snr_weights(responses, image_ids)


def test_oracle_groups():
    groups = reliability.oracle_groups(np.array([5, 3, 5, 3, 9]))
    assert [g.tolist() for g in groups] == [[1, 3], [0, 2], [4]]
