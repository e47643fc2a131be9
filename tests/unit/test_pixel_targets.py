"""The known-answer control targets (compute/similarity/pixel_targets.py) against a direct numpy computation."""
import numpy as np
import pytest

from neuralreg_schema.compute.similarity import pixel_targets


def direct_blur(image, sigma, truncate=4.0):
    """2-D convolution with the outer-product Gaussian kernel, pixel by pixel, mirrored borders
    (edge pixel repeated: index -1 -> 0, -2 -> 1, n -> n-1)."""
    radius = int(np.ceil(truncate * sigma))
    t = np.arange(-radius, radius + 1)
    k1 = np.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    h, w = image.shape

    def mirror(i, n):
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - i - 1
        return i

    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(k2[a + radius, b + radius] * image[mirror(y + a, h), mirror(x + b, w)]
                            for a in t for b in t)
    return out


def direct_eq2(vectors):
    """Eq. 2 written out: centre over all images, unit length, dot products."""
    centred = vectors - vectors.mean(axis=0)
    n = len(vectors)
    S = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            S[i, j] = centred[i] @ centred[j] / (np.linalg.norm(centred[i]) * np.linalg.norm(centred[j]))
    return S


@pytest.fixture
def images():
    rng = np.random.default_rng(3)
    smooth = rng.normal(size=(7, 3, 4)).repeat(4, axis=1).repeat(4, axis=2)      # coarse blocks
    return (100 + 40 * smooth + 10 * rng.normal(size=(7, 12, 16))).astype(np.float32)


def test_blur_matches_a_direct_convolution(images):
    for sigma in (0.7, 2.0):
        ours = pixel_targets.gaussian_blur(images[:2], sigma)
        for i in range(2):
            np.testing.assert_allclose(ours[i], direct_blur(images[i].astype(float), sigma), rtol=1e-10)


def test_blur_matches_scipy(images):
    from scipy import ndimage
    ours = pixel_targets.gaussian_blur(images, 1.5)
    ref = np.stack([ndimage.gaussian_filter(im.astype(float), 1.5, mode="reflect", truncate=4.0) for im in images])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("method", ["lowpass", "highpass"])
def test_similarity_matches_direct_eq2(images, method):
    sigma = 1.3
    low = np.stack([direct_blur(im.astype(float), sigma) for im in images])
    kept = low if method == "lowpass" else images.astype(float) - low
    expected = direct_eq2(kept.reshape(len(images), -1))
    S = pixel_targets.pixel_similarity(images, method, sigma)
    assert S.dtype == np.float32 and S.shape == (7, 7)
    np.testing.assert_allclose(S, expected, atol=2e-6)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diag(S), 1)


def test_lowpass_plus_highpass_is_the_image_and_constants_stay(images):
    low = pixel_targets.filtered(images, "lowpass", 2.0)
    high = pixel_targets.filtered(images, "highpass", 2.0)
    np.testing.assert_allclose(low + high, images, rtol=1e-12)
    flat = np.full((2, 9, 11), 7.0)
    np.testing.assert_allclose(pixel_targets.gaussian_blur(flat, 3.0), flat)
    assert pixel_targets.gaussian_kernel(2.0).sum() == pytest.approx(1.0)


def test_noise_moves_lowpass_far_less_than_highpass():
    rng = np.random.default_rng(0)
    # natural-like images: smooth structure from blurred noise, in [0, 1]
    base = pixel_targets.gaussian_blur(rng.normal(size=(20, 36, 64)), 3.0)
    base = 0.5 + 0.2 * base / base.std()
    low = pixel_targets.noise_sensitivity(base, "lowpass", 2.0, noise_sd=0.1)
    high = pixel_targets.noise_sensitivity(base, "highpass", 2.0, noise_sd=0.1)
    assert low < 0.5 * high, (low, high)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="sigma"):
        pixel_targets.gaussian_blur(np.zeros((2, 4, 4)), 0)
    with pytest.raises(ValueError, match="method"):
        pixel_targets.pixel_similarity(np.zeros((2, 4, 4)), "bandpass")
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        pixel_targets.pixel_similarity(np.zeros((4, 4)), "lowpass")
    with pytest.raises(ValueError, match="NaN"):
        pixel_targets.pixel_similarity(np.full((3, 4, 4), np.nan), "lowpass")
    with pytest.raises(ValueError, match="zero-norm"):            # identical images: Eq. 2 undefined
        pixel_targets.pixel_similarity(np.ones((3, 4, 4)), "lowpass")
