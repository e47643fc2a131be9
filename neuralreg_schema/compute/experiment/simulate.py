"""Simulated mouse-V1 experiment: the pipeline's embedded default dataset (works offline, seeded).

Several two-photon "scans" (different neurons, the same image set) of model V1 neurons viewing
grayscale natural images at 36 x 64 pixels, built to behave like the recordings of Li et al. (2019):

Images
    Crops of the natural photos that ship inside installed packages (scikit-image's bundled
    `skimage.data` photos and foolbox's ImageNet samples), varied in scale, position, flips and
    contrast, converted to gray by luminance, plus a fraction of synthetic dead-leaves images
    (occluding disks with power-law radii, which have natural 1/f-like spectra). Nothing is
    downloaded. 'oracle' images are shown `n_repeats` times each, 'train'/'validation' images once.
Neurons
    Gabor receptive fields (position set by the cortical position through a retinotopic map,
    orientation, spatial frequency, size, phase); simple cells (one linear Gabor) and complex cells
    (energy of a quadrature pair), divided by c50 + the local RMS contrast around the receptive
    field (contrast normalization). The drive D (rescaled to zero mean, unit variance over natural
    images) passes a static output nonlinearity, rate = gain * (baseline + amplitude *
    softplus(s * (D - threshold)) / s), in spikes per trial.
Behavior
    Per trial: pupil diameter (a.u., slow Ornstein-Uhlenbeck process dilating with running), its
    derivative (a.u./s), running speed (cm/s, bouts of a two-state switching process, smoothed) and
    eye position (camera px, fixations separated by saccades). The gain is
    exp(pupil_gain * z_pupil + running_gain * z_running) times an unobserved shared gain
    exp(L z - |L|^2 / 2) (z ~ N(0, I), 5 latent dimensions, per-neuron loadings L); z_pupil and
    z_running are the session-standardized pupil and running speed. Eye position shifts all
    receptive fields of a scan together by `eye_shift_px`.
Additive shared activity
    Spontaneous, behavior-related population activity adds to the stimulus response (Stringer et
    al. 2019, Science: large, multidimensional, partly explained by running and pupil):
    A = spont_rate * max(0, 1 + spont_behavior . (z_pupil, z_running) + S u), in spikes/trial,
    with u ~ N(0, I) an unobserved 8-dimensional latent (AR(1) over trials, lag-1 correlation
    0.6) and per-neuron loadings S (sd 0.4 / k on dimension k, plus a common positive part
    ~0.9 on dimension 1, so |S| ~ 1). spont_rate is 0.6 x log-normal(0, 0.7) times the sd of
    the neuron's evoked response to natural images. Its trial-to-trial variance is the main
    source of shared, low-dimensional noise: single-trial similarity (Eq. 2) is noisy (r with
    S_oracle ~0.3-0.5 on the 'demo' profile, paper 0.39) while the noise-free responses track
    S_oracle closely (r ~0.8-0.9).
Noise
    Gamma-Poisson (negative binomial) spike counts: count ~ Poisson(mu * G), G ~ Gamma(k, 1 / k),
    mu = rate * gain + A, so Var[count | mu] = mu + mu^2 / k. Reliability spans orders of
    magnitude across neurons (Eq. 1 weights: median ~0.5, a tail to ~2); about 10% of the
    neurons are nearly pure noise.

Ground truth (`ScanRecording.ground_truth`, numpy arrays), per neuron: 'reliability' (the true
Eq. 1 weight, see `true_reliability`), 'rf_x', 'rf_y' (px, column and row of the receptive-field
center at the centered eye), 'orientation' (rad, in [0, pi)), 'spatial_frequency' (cycles/px),
'size' (Gaussian envelope sd, px), 'aspect' (envelope aspect ratio), 'phase' (rad), 'cell_type'
(0 simple, 1 complex), 'c50' (normalization constant, contrast units of images scaled to [-1, 1]),
'threshold' (drive sd), 'sharpness' (1/drive sd), 'baseline', 'amplitude' (spikes/trial),
'overdispersion' (k), 'pupil_gain', 'running_gain' (log-gain per session sd), 'latent_loading'
(n_neurons, 5), 'spont_rate' (spikes/trial, scale of the additive activity), 'spont_behavior'
(n_neurons, 2: its relative change per session sd of pupil and running), 'spont_loading'
(n_neurons, 8: its relative change per sd of each unobserved additive latent); per trial: 'eye_shift_px' (float32 (n_trials, 2): dx, dy in image px, the
displacement of all receptive fields); and, if the profile stores it, 'noise_free' (float32
(n_images_in_set, n_neurons), rows in the order of `ImageSet.image_ids`): the expected response
(spikes/trial) to every image at the session-mean behavior and the centered eye (gain 1, no shift,
plus the additive activity's mean at z_pupil = z_running = 0).

Pure numpy/scipy/scikit-image: never imports datajoint or torch.
"""
from __future__ import annotations

import functools
import glob
import os
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from .recording import IMAGE_SHAPE, ImageSet, ScanRecording

H, W = IMAGE_SHAPE
TRIAL_PERIOD_S = 0.9           # s between image onsets (500 ms image + gray interval)
FOV_UM = 600.0                 # side of the square imaging field, um
DEPTH_UM = (200.0, 400.0)      # imaging depth range, um below the pia (layer 2/3)
MAX_EYE_SHIFT_PX = 4.0         # saturation of the receptive-field shift caused by eye movements
_CHUNK = 512                   # trials per matrix product (bounds memory)
_N_CALIBRATION = 512           # images used to normalize each neuron's drive
N_GAIN_LATENT = 5              # dimensions of the unobserved multiplicative shared gain
N_SPONT_LATENT = 8             # dimensions of the unobserved additive shared activity
SPONT_RHO = 0.6                # lag-1 (trial-to-trial) correlation of the additive latent

# Photos bundled with scikit-image (load offline; `skimage.data.download_all` is never called).
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "grass", "gravel", "brick",
                  "moon", "coins", "page", "text", "clock")
FOOLBOX_PATTERN = "imagenet_*.jpg"   # ImageNet sample photos shipped in foolbox/data


@dataclass(frozen=True)
class SimProfile:
    """Size of a simulated experiment. `n_images` counts the single-presentation (train +
    validation) images; each scan shows all of them once and the `n_oracle` images `n_repeats`
    times, so a scan has n_images + n_oracle * n_repeats trials."""

    name: str
    n_scans: int
    n_neurons: int                      # per scan
    n_images: int                       # single-presentation images (train + validation)
    n_oracle: int                       # repeated test images
    n_repeats: int                      # presentations of each oracle image
    validation_fraction: float = 0.1    # of the single-presentation images
    synthetic_fraction: float = 0.3     # of all images: dead-leaves instead of photo crops
    sessions_per_animal: int = 2        # scans k, k+1 share an animal (and its retinotopy)
    n_virtual_repeats: int = 64         # behavior states averaged over for the true reliability
    store_noise_free: bool = True       # put ground_truth['noise_free'] in each scan

    @property
    def n_trials(self) -> int:
        return self.n_images + self.n_oracle * self.n_repeats


PROFILES: dict[str, SimProfile] = {
    "tiny": SimProfile("tiny", n_scans=2, n_neurons=40, n_images=150, n_oracle=20, n_repeats=5,
                       n_virtual_repeats=32),
    "demo": SimProfile("demo", n_scans=4, n_neurons=1000, n_images=2400, n_oracle=100, n_repeats=10),
    "full": SimProfile("full", n_scans=4, n_neurons=8000, n_images=5000, n_oracle=100, n_repeats=10),
}


@dataclass(frozen=True)
class Tuning:
    """The receptive-field statistics of a simulated population (`sample_population`).

    'mouse' is the default population, modelled on mouse V1 (see `sample_population`); 'low' and
    'high' are known-answer populations whose similarity structure is close to a pixel target
    (compute/similarity/pixel_targets.py), so that what the whole chain (spikes -> Eq. 1 ->
    predictive model -> S_model -> classifier) transfers can be predicted before any training:

    low   coarse, luminance-sensitive linear units: Gabor wavelengths log-normal around 40 px
          (24-80 px) under a Gaussian envelope of 0.12-0.25 wavelengths (3-10 px), the envelope's
          mean NOT removed (`zero_mean=False`: ON and OFF subfields that respond to the local mean
          luminance, like blurred pixels), all simple cells, no contrast normalisation, output
          thresholds -1.5..0.5 drive sd (mostly in the near-linear part of the softplus). Their
          noise-free similarity correlates with the lowpass target (sigma 2 px) at r ~0.9.
    high  fine linear units: wavelengths log-normal around 3.5 px (2.5-6 px: near the pixel limit),
          envelopes 0.3-0.55 wavelengths (1-3 px), zero-mean, 90 % simple cells, contrast
          normalisation as mouse (it helps: it equalises textured and smooth images), thresholds
          -1.5..0.5. r ~0.5 with the highpass target (whose off-diagonal spread is small).

    Everything else (gains, noise, behaviour, additive shared activity) is the mouse population's.
    The numbers are measured on the stimuli of the demo profile: docs/controls.md and
    benchmarks/populations.py."""
    name: str
    wavelength_median: float = 14.0        # px
    wavelength_log_sd: float = 0.35
    wavelength_range: tuple = (8.0, 30.0)  # px, clipped
    envelope: tuple = (0.3, 0.55)          # Gaussian envelope sd, in wavelengths (uniform)
    size_range: tuple = (2.5, 10.0)        # px, envelope sd clipped
    complex_fraction: float = 0.55
    zero_mean: bool = True                 # remove the envelope's mean (no response to uniform luminance)
    normalization: bool = True             # divide by c50 + local RMS contrast
    threshold: tuple = (-0.5, 2.0)         # output threshold, drive sd (uniform)


TUNINGS: dict[str, Tuning] = {
    "mouse": Tuning("mouse"),
    "low": Tuning("low", wavelength_median=40.0, wavelength_log_sd=0.3, wavelength_range=(24.0, 80.0),
                  envelope=(0.12, 0.25), size_range=(3.0, 10.0), complex_fraction=0.0, zero_mean=False,
                  normalization=False, threshold=(-1.5, 0.5)),
    "high": Tuning("high", wavelength_median=3.5, wavelength_log_sd=0.25, wavelength_range=(2.5, 6.0),
                   envelope=(0.3, 0.55), size_range=(1.0, 3.0), complex_fraction=0.1, threshold=(-1.5, 0.5)),
}


def tuning_of(name: Union[str, Tuning]) -> Tuning:
    if isinstance(name, Tuning):
        return name
    if name not in TUNINGS:
        raise ValueError(f"unknown tuning {name!r}; valid tunings: {', '.join(TUNINGS)}")
    return TUNINGS[name]


@dataclass
class SimulatedExperiment:
    """All scans of one simulated experiment; every scan shows the images of `image_set`."""

    image_set: ImageSet
    scans: list[ScanRecording]
    profile: str
    seed: int
    tuning: str = "mouse"


# ---------------------------------------------------------------------------------------------
# images


def _luminance(img: np.ndarray) -> np.ndarray:
    """Gray levels 0..255 (float32) of an 8-bit gray, RGB or RGBA image (Rec. 709 luminance)."""
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    return img.astype(np.float32)


@functools.lru_cache(maxsize=1)
def source_photos() -> tuple[tuple[str, tuple[np.ndarray, ...]], ...]:
    """The packaged photos as (name, pyramid) pairs, in a fixed order. A pyramid holds the gray
    photo (float32, 0..255) at scales 1, 2^-1/4, 2^-1/2, 2^-3/4, so that crops of any size can be
    downsampled by integer block averaging. Cached: loaded once per process."""
    import importlib.util

    import skimage.data
    from skimage.io import imread
    from skimage.transform import rescale

    photos = []
    for name in SKIMAGE_PHOTOS:
        photos.append((f"skimage:{name}", _luminance(getattr(skimage.data, name)())))
    spec = importlib.util.find_spec("foolbox")    # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("foolbox is not installed; its sample photos are part of the "
                                  "simulated image set")
    folder = os.path.join(spec.submodule_search_locations[0], "data")
    paths = sorted(glob.glob(os.path.join(folder, FOOLBOX_PATTERN)))
    if not paths:
        raise FileNotFoundError(f"no foolbox sample photos {FOOLBOX_PATTERN} in {folder}")
    photos += [(f"foolbox:{os.path.basename(p)}", _luminance(imread(p))) for p in paths]
    out = []
    for name, gray in photos:
        levels = [gray] + [rescale(gray, 2 ** (-j / 4), order=1, anti_aliasing=False,
                                   preserve_range=True).astype(np.float32) for j in (1, 2, 3)]
        for lev in levels:
            lev.setflags(write=False)
        out.append((name, tuple(levels)))
    return tuple(out)


def photo_crops(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n crops (float32, (n, 36, 64), gray levels 0..255) of the packaged photos: a random photo,
    a random 16:9 window 2 to ~14 times the output size (log-uniform), block-averaged down,
    flipped left-right (p=0.5) or upside-down (p=0.1), contrast scaled by 0.4..1.6 (log-uniform)
    and mean luminance pulled toward mid-gray by 0..50%.

    Also returns each crop's provenance, int64 (n, 7): index into `source_photos()`, pyramid level,
    block size q (window = 36q x 64q px of that level), window top row, left column, flipped
    left-right (0/1), flipped upside-down (0/1)."""
    photos = source_photos()
    out = np.empty((n, H, W), np.float32)
    provenance = np.empty((n, 7), np.int64)
    for k in range(n):
        photo = rng.integers(len(photos))
        pyramid = photos[photo][1]
        level = rng.integers(len(pyramid))
        img = pyramid[level]
        q_max = min(img.shape[0] // H, img.shape[1] // W)
        q = int(np.floor(np.exp(rng.uniform(np.log(2), np.log(q_max + 1)))))
        q = min(max(q, 2), q_max)
        y0 = rng.integers(img.shape[0] - q * H + 1)
        x0 = rng.integers(img.shape[1] - q * W + 1)
        crop = img[y0:y0 + q * H, x0:x0 + q * W].reshape(H, q, W, q).mean(axis=(1, 3))
        flip_lr, flip_ud = rng.random() < 0.5, rng.random() < 0.1
        if flip_lr:
            crop = crop[:, ::-1]
        if flip_ud:
            crop = crop[::-1]
        mean = crop.mean()
        contrast = np.exp(rng.uniform(np.log(0.4), np.log(1.6)))
        new_mean = mean + rng.uniform(0.0, 0.5) * (127.5 - mean)
        out[k] = np.clip(new_mean + contrast * (crop - mean), 0, 255)
        provenance[k] = photo, level, q, y0, x0, flip_lr, flip_ud
    return out, provenance


def dead_leaves(n: int, rng: np.random.Generator, r_min: float = 3.0, r_max: float = 80.0,
                max_disks: int = 4096, batch: int = 128) -> np.ndarray:
    """n synthetic dead-leaves images (float32, (n, 36, 64), gray levels 0..255).

    Disks with radii drawn from p(r) ~ r^-3 on [r_min, r_max] (px of a 2x-oversampled canvas) and
    uniformly placed centers are stacked front to back; each canvas pixel takes the gray level of
    the first disk covering it. This occlusion model has the scale invariance (power spectrum
    ~ 1/f^2) of natural images. Leaf gray levels ~ 255 * Beta(2, 2); pixels left uncovered after
    `max_disks` disks (rare) take the image mean; the canvas is 2x2 block-averaged (anti-aliasing)."""
    h2, w2 = 2 * H, 2 * W
    row, col = (c.ravel() for c in np.mgrid[0:h2, 0:w2])
    a, b = r_min ** -2, r_max ** -2
    out = np.empty((n, H, W), np.float32)
    for k in range(n):
        r = ((a - rng.random(max_disks) * (a - b)) ** -0.5).astype(np.float32)
        cy = rng.uniform(-r_max, h2 + r_max, max_disks).astype(np.float32)
        cx = rng.uniform(-r_max, w2 + r_max, max_disks).astype(np.float32)
        gray = 255.0 * rng.beta(2.0, 2.0, max_disks)
        visible = (cy + r >= 0) & (cy - r <= h2) & (cx + r >= 0) & (cx - r <= w2)
        r, cy, cx, gray = r[visible], cy[visible], cx[visible], gray[visible]
        dy2 = (np.arange(h2, dtype=np.float32)[:, None] - cy) ** 2     # (rows, disks)
        dx2 = (np.arange(w2, dtype=np.float32)[:, None] - cx) ** 2     # (columns, disks)
        r2 = r ** 2
        canvas = np.full(h2 * w2, np.nan)
        todo = np.arange(h2 * w2)          # pixels no disk covers yet
        for d0 in range(0, len(r), batch):
            d = slice(d0, d0 + batch)
            if d0 == 0:
                hit = (dy2[:, None, d] + dx2[None, :, d] <= r2[d]).reshape(h2 * w2, -1)
            else:
                hit = dy2[row[todo], d] + dx2[col[todo], d] <= r2[d]
            covered = hit.any(axis=1)
            canvas[todo[covered]] = gray[d][hit[covered].argmax(axis=1)]
            todo = todo[~covered]
            if not len(todo):
                break
        canvas[todo] = np.nanmean(canvas)
        out[k] = canvas.reshape(H, 2, W, 2).mean(axis=(1, 3))
    return out


def make_image_set(name: str, n_images: int, synthetic_fraction: float,
                   rng: np.random.Generator) -> ImageSet:
    """`n_images` images, ids 0..n_images-1; a random `synthetic_fraction` of them dead-leaves, the
    others photo crops."""
    n_synth = int(round(synthetic_fraction * n_images))
    images = np.concatenate([photo_crops(n_images - n_synth, rng)[0], dead_leaves(n_synth, rng)])
    images = images[rng.permutation(n_images)]
    desc = (f"simulated experiment: {n_images} grayscale 36x64 images, {n_images - n_synth} crops of "
            f"the photos packaged with scikit-image ({', '.join(SKIMAGE_PHOTOS)}) and foolbox "
            f"({FOOLBOX_PATTERN}), {n_synth} synthetic dead-leaves images")
    return ImageSet(name=name, image_ids=np.arange(n_images, dtype=np.int64), images=images,
                    description=desc)


def _normalize(images: np.ndarray) -> np.ndarray:
    """Gray levels 0..255 -> contrast relative to mid-gray, in [-1, 1] (float32)."""
    return (np.asarray(images, np.float32) - 127.5) / 127.5


def shift_images(images: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """What receptive fields displaced by `shift_px` see: out[t](y, x) = images[t](y + dy, x + dx),
    bilinear, edges extended. images (n, 36, 64); shift_px (n, 2) = (dx, dy) in px. Returns float32
    (n, 36 * 64)."""
    n = len(images)
    shift_px = np.asarray(shift_px, np.float32)
    ys = np.clip(np.arange(H, dtype=np.float32) + shift_px[:, 1:2], 0, H - 1)    # (n, H)
    xs = np.clip(np.arange(W, dtype=np.float32) + shift_px[:, 0:1], 0, W - 1)    # (n, W)
    y0 = np.minimum(ys.astype(np.int64), H - 2)
    x0 = np.minimum(xs.astype(np.int64), W - 2)
    fy = (ys - y0)[:, :, None]
    fx = (xs - x0)[:, None, :]
    corner = (np.arange(n)[:, None, None] * H + y0[:, :, None]) * W + x0[:, None, :]
    flat = np.ascontiguousarray(images, dtype=np.float32).reshape(-1)
    top = flat[corner] * (1 - fx) + flat[corner + 1] * fx
    bottom = flat[corner + W] * (1 - fx) + flat[corner + W + 1] * fx
    return (top * (1 - fy) + bottom * fy).reshape(n, H * W)


# ---------------------------------------------------------------------------------------------
# behavior


@dataclass
class Behavior:
    """Behavioral time series of one session, one row per trial in presentation order."""

    pupil: np.ndarray          # (n_trials,) pupil diameter, a.u.
    dpupil: np.ndarray         # (n_trials,) d pupil / dt, a.u./s
    running: np.ndarray        # (n_trials,) treadmill speed, cm/s, >= 0
    pupil_center: np.ndarray   # (n_trials, 2) eye position x, y, camera px
    eye_center: np.ndarray     # (2,) the eye position of zero receptive-field shift, camera px

    def covariates(self) -> np.ndarray:
        """(n_trials, 2): pupil and running speed standardized over the session (z-scores)."""
        x = np.stack([self.pupil, self.running], axis=1).astype(np.float64)
        return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)


def simulate_behavior(n_trials: int, rng: np.random.Generator) -> Behavior:
    """One session of behavior.

    Running: a two-state (still / running) Markov chain over trials (mean bouts of 25 trials
    running, 40 still), a target speed of 5-30 cm/s per bout, the speed following the target as a
    first-order low-pass (time constant ~3 trials) plus jitter (sd 1.5 cm/s) while running; speeds
    below 0.1 cm/s read 0. Pupil: a baseline (12-25 a.u.) plus an Ornstein-Uhlenbeck process
    (sd 2.5 a.u., lag-1 correlation 0.97) plus a dilation of 0.15 a.u. per cm/s of (slowly
    smoothed) running. Eye: fixations at positions ~ N(0, 5 camera px) around a
    per-session center, separated by saccades (probability 0.05 per trial, 0.15 while running),
    plus fixational jitter (sd 0.3 camera px)."""
    p_start, p_stop = 1 / 40, 1 / 25
    running_state = np.zeros(n_trials, bool)
    target = np.zeros(n_trials)
    state, bout_speed = rng.random() < 0.4, rng.uniform(5, 30)
    for t in range(n_trials):
        if rng.random() < (p_stop if state else p_start):
            state = not state
            bout_speed = rng.uniform(5, 30)
        running_state[t], target[t] = state, bout_speed if state else 0.0
    jitter = rng.normal(0, 1.5, n_trials) * running_state
    speed = np.empty(n_trials)
    level = target[0]
    for t in range(n_trials):
        level = 0.7 * level + 0.3 * target[t]
        speed[t] = level
    speed = speed + jitter
    speed[speed < 0.1] = 0.0      # treadmill encoder resolution: standing still reads 0

    rho, sd = 0.97, 2.5
    ou = np.empty(n_trials)
    ou[0] = rng.normal(0, sd)
    noise = rng.normal(0, sd * np.sqrt(1 - rho ** 2), n_trials)
    slow_run = np.empty(n_trials)
    s = speed[0]
    for t in range(n_trials):
        if t:
            ou[t] = rho * ou[t - 1] + noise[t]
        s = 0.85 * s + 0.15 * speed[t]
        slow_run[t] = s
    pupil = np.maximum(rng.uniform(12, 25) + ou + 0.15 * slow_run, 2.0)
    dpupil = np.gradient(pupil) / TRIAL_PERIOD_S

    eye_center = np.array([rng.uniform(280, 360), rng.uniform(200, 260)])
    saccade = rng.random(n_trials) < np.where(running_state, 0.15, 0.05)
    fixation_idx = np.cumsum(saccade)
    fixations = rng.normal(0, 5.0, (fixation_idx[-1] + 1, 2))
    pupil_center = eye_center + fixations[fixation_idx] + rng.normal(0, 0.3, (n_trials, 2))
    return Behavior(pupil=pupil, dpupil=dpupil, running=speed, pupil_center=pupil_center,
                    eye_center=eye_center)


def simulate_latent(n_trials: int, n_latent: int, rng: np.random.Generator,
                    rho: float = 0.3) -> np.ndarray:
    """Unobserved internal state (e.g. arousal or attention not visible in pupil and running):
    (n_trials, n_latent) stationary AR(1) processes with N(0, 1) marginals, lag-1 correlation rho."""
    z = np.empty((n_trials, n_latent))
    z[0] = rng.normal(size=n_latent)
    innovations = rng.normal(0, np.sqrt(1 - rho ** 2), (n_trials, n_latent))
    for t in range(1, n_trials):
        z[t] = rho * z[t - 1] + innovations[t]
    return z


def eye_shift(pupil_center: np.ndarray, eye_center: np.ndarray, eye_map: np.ndarray) -> np.ndarray:
    """Receptive-field displacement (n, 2: dx, dy in image px) for eye positions (n, 2, camera px):
    a linear map (2x2, image px per camera px) of the deviation from `eye_center`, saturating
    smoothly (tanh) at MAX_EYE_SHIFT_PX."""
    lin = (np.asarray(pupil_center, np.float64) - eye_center) @ eye_map.T
    return MAX_EYE_SHIFT_PX * np.tanh(lin / MAX_EYE_SHIFT_PX)


# ---------------------------------------------------------------------------------------------
# neurons


@functools.lru_cache(maxsize=4)
def _blur_matrix(size: int, sigma_px: float) -> np.ndarray:
    """(size, size) float32 matrix M: M @ v is v blurred by a Gaussian of sd `sigma_px` (truncated
    at 4 sd, edges extended by repeating the border value)."""
    radius = int(4 * sigma_px + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel /= kernel.sum()
    m = np.zeros((size, size))
    for i in range(size):
        np.add.at(m[i], np.clip(i + offsets, 0, size - 1), kernel)
    return m.astype(np.float32)


def local_contrast(x: np.ndarray, sigma_px: float = 6.0) -> np.ndarray:
    """Local RMS contrast (float32, (n, 36, 64)) of normalized images x (n, 36*64): the sd of the
    pixel values under a Gaussian window of sd `sigma_px` around each pixel."""
    by, bx = _blur_matrix(H, sigma_px), _blur_matrix(W, sigma_px)
    n = len(x)

    def blur(v):   # (n, H*W) -> (n, H, W), as two plain matrix products
        v = (v.reshape(n * H, W) @ bx.T).reshape(n, H, W).transpose(1, 0, 2).reshape(H, n * W)
        return (by @ v).reshape(H, n, W).transpose(1, 0, 2)

    mean = blur(x)
    mean_sq = blur(x * x)
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


@dataclass
class Population:
    """The model neurons of one scan. Filters act on images normalized by `_normalize`."""

    filters: np.ndarray        # float32 (36*64, n_neurons + n_complex): Gabor per neuron, then the
    #                            quadrature partners of the complex cells, unit L2 norm
    complex_idx: np.ndarray    # int64 (n_complex,): which neurons are complex cells
    drive_offset: np.ndarray   # (n_neurons,) subtracted from the raw drive ...
    drive_scale: np.ndarray    # (n_neurons,) ... then divided: D has mean 0, sd 1 on natural images
    params: dict               # per-neuron parameters (see the module docstring), float64 arrays
    normalization: bool = True  # divide by c50 + local contrast (Tuning.normalization)

    @property
    def n_neurons(self) -> int:
        return len(self.drive_offset)

    def raw_drive(self, x: np.ndarray) -> np.ndarray:
        """x (n, 36*64) normalized images -> (n, n_neurons): the linear Gabor output (simple cells)
        or the quadrature-pair energy amplitude sqrt(u1^2 + u2^2) (complex cells), divided by
        c50 + the local RMS contrast around the receptive field (divisive normalization)."""
        u = x @ self.filters
        n = self.n_neurons
        d = u[:, :n].copy()
        d[:, self.complex_idx] = np.sqrt(d[:, self.complex_idx] ** 2 + u[:, n:] ** 2)
        if not self.normalization:
            return d
        row = np.rint(self.params["rf_y"]).astype(np.int64)
        col = np.rint(self.params["rf_x"]).astype(np.int64)
        return d / (self.params["c50"] + local_contrast(x)[:, row, col])

    def calibrate(self, x: np.ndarray) -> None:
        """Set drive_offset/scale so that the drive on images x (n, 36*64) has mean 0 (complex
        cells; simple cells keep offset 0, their linear drive being already centered on gray) and
        sd 1."""
        d = self.raw_drive(x).astype(np.float64)
        self.drive_offset = np.zeros(self.n_neurons)
        self.drive_offset[self.complex_idx] = d[:, self.complex_idx].mean(axis=0)
        self.drive_scale = np.maximum((d - self.drive_offset).std(axis=0), 1e-6)

    def rates(self, x: np.ndarray, log_gain: np.ndarray) -> np.ndarray:
        """Expected spike counts (float64, (n, n_neurons)) for normalized images x (n, 36*64),
        already shifted for the eye position, and log-gains (n, n_neurons) or (n_neurons,)."""
        p = self.params
        drive = (self.raw_drive(x) - self.drive_offset) / self.drive_scale
        z = p["sharpness"] * (drive - p["threshold"])
        stim = np.logaddexp(0.0, z) / p["sharpness"]
        return np.exp(log_gain) * (p["baseline"] + p["amplitude"] * stim)

    def log_gain(self, covariates: np.ndarray) -> np.ndarray:
        """(n, 2) session-standardized pupil and running -> (n, n_neurons) log-gains."""
        return covariates @ np.stack([self.params["pupil_gain"], self.params["running_gain"]])

    def spont_moments(self, covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and second moments over the unobserved additive latent of the additive activity
        (`spont`) for covariates (n, 2): each (n, n_neurons), spikes/trial and (spikes/trial)^2.
        With m = spont_rate (1 + spont_behavior . c) and s = spont_rate |S| the additive activity
        is max(0, m + s Z), Z ~ N(0, 1), a rectified Gaussian: E = m Phi(m/s) + s phi(m/s),
        E[.^2] = (m^2 + s^2) Phi(m/s) + m s phi(m/s)."""
        from scipy.special import ndtr

        rate = self.params["spont_rate"]
        m = rate * (1.0 + covariates @ self.params["spont_behavior"].T)
        s = np.maximum(rate * np.sqrt((self.params["spont_loading"] ** 2).sum(axis=1)), 1e-12)
        a = m / s
        cdf, pdf = ndtr(a), np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
        return m * cdf + s * pdf, (m * m + s * s) * cdf + m * s * pdf

    def spont(self, covariates: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Additive shared activity (float64, (n, n_neurons), spikes/trial >= 0) for covariates
        (n, 2) and the unobserved additive latent u (n, N_SPONT_LATENT) ~ N(0, I):
        spont_rate * max(0, 1 + spont_behavior . c + spont_loading . u)."""
        p = self.params
        return p["spont_rate"] * np.maximum(
            0.0, 1.0 + covariates @ p["spont_behavior"].T + latent @ p["spont_loading"].T)

    def latent_log_gain(self, latent: np.ndarray) -> np.ndarray:
        """(n, n_latent) unobserved internal state ~ N(0, I) -> (n, n_neurons) log-gains
        L z - |L|^2 / 2, so that the gain has mean 1 and second moment exp(|L|^2)."""
        loading = self.params["latent_loading"]
        return latent @ loading.T - 0.5 * (loading ** 2).sum(axis=1)


def gabor_bank(rf_x, rf_y, orientation, wavelength, size, aspect, phase, zero_mean: bool = True) -> np.ndarray:
    """Unit-norm Gabor filters (float64, (36*64, n)) on the 36x64 pixel grid: envelope
    exp(-(x'^2 + aspect^2 y'^2) / (2 size^2)), carrier cos(2 pi x' / wavelength + phase), x' along
    the direction of `orientation` (rad); centers rf_x (column), rf_y (row) in px. zero_mean: the
    envelope times the filter's mean is subtracted (no response to uniform luminance)."""
    yy, xx = np.mgrid[0:H, 0:W].reshape(2, -1, 1).astype(np.float64)
    dx, dy = xx - rf_x, yy - rf_y
    c, s = np.cos(orientation), np.sin(orientation)
    xr, yr = dx * c + dy * s, -dx * s + dy * c
    env = np.exp(-(xr ** 2 + (aspect * yr) ** 2) / (2 * size ** 2))
    g = env * np.cos(2 * np.pi * xr / wavelength + phase)
    if zero_mean:
        g -= env * (g.sum(axis=0) / env.sum(axis=0))
    return g / np.linalg.norm(g, axis=0)


def sample_population(n: int, rng: np.random.Generator, retinotopy: dict,
                      calibration_images: np.ndarray, tuning: Union[str, Tuning] = "mouse"
                      ) -> tuple[Population, np.ndarray]:
    """n neurons of one scan and their cortical positions (float32 (n, 3), um).

    retinotopy: 'center' (2,) the RF position (px) of the field's center, 'matrix' (2, 2) px per um,
    'scatter' (px, sd of the RF-position scatter around the map). Parameter distributions:
    orientation uniform; wavelength log-normal (median 14 px, clipped to 8-30 px); envelope sd
    0.3-0.55 wavelengths (2.5-10 px); aspect 0.5-1; phase uniform; 55% complex cells; thresholds
    -0.5..2 drive sd; softplus sharpness 2-4; baseline log-normal (median 0.3 spikes/trial);
    amplitude log-normal (median 3 spikes/trial per drive sd, log-sd 0.8), 10% of neurons nearly
    pure noise (amplitude x 0.01-0.05); overdispersion k log-normal (median 20, log-sd 1.2, clipped
    to 0.5-200); pupil gains N(0.05, 0.08) and running gains N(0.15, 0.1) (log-gain per session
    sd), each x 3 in a random 15% of neurons (strongly modulated). Additive shared activity (see
    the module docstring): spont_rate = 0.6 x log-normal(0, 0.7) x the sd of the evoked rate on
    `calibration_images`; spont_behavior N(0.1, 0.1) (pupil) and N(0.25, 0.2) (running);
    spont_loading N(0, (0.4 / k)^2) on dimension k, + 0.9 on dimension 1, all x log-normal(0, 0.3)
    per neuron. These are the 'mouse' tuning's; `tuning` (a Tuning or a name of TUNINGS) sets the
    wavelength, envelope, complex fraction, zero mean, normalisation and thresholds; the random draws
    are the same in number and order for every tuning."""
    tuning = tuning_of(tuning)
    pos = np.column_stack([rng.uniform(0, FOV_UM, n), rng.uniform(0, FOV_UM, n),
                           rng.uniform(*DEPTH_UM, n)])
    rf = retinotopy["center"] + (pos[:, :2] - FOV_UM / 2) @ retinotopy["matrix"].T
    rf += rng.normal(0, retinotopy["scatter"], (n, 2))
    rf_x = np.clip(rf[:, 0], 4, W - 5)
    rf_y = np.clip(rf[:, 1], 4, H - 5)
    orientation = rng.uniform(0, np.pi, n)
    wavelength = np.clip(np.exp(rng.normal(np.log(tuning.wavelength_median), tuning.wavelength_log_sd, n)),
                         *tuning.wavelength_range)
    size = np.clip(wavelength * rng.uniform(*tuning.envelope, n), *tuning.size_range)
    aspect = rng.uniform(0.5, 1.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    is_complex = rng.random(n) < tuning.complex_fraction
    cidx = np.flatnonzero(is_complex)
    main = gabor_bank(rf_x, rf_y, orientation, wavelength, size, aspect, phase, tuning.zero_mean)
    quad = gabor_bank(rf_x[cidx], rf_y[cidx], orientation[cidx], wavelength[cidx], size[cidx],
                      aspect[cidx], phase[cidx] + np.pi / 2, tuning.zero_mean)
    amplitude = np.exp(rng.normal(np.log(3.0), 0.8, n))
    amplitude[rng.random(n) < 0.10] *= rng.uniform(0.01, 0.05)
    strong = np.where(rng.random((2, n)) < 0.15, 3.0, 1.0)
    params = dict(
        rf_x=rf_x, rf_y=rf_y, orientation=orientation, spatial_frequency=1 / wavelength,
        size=size, aspect=aspect, phase=phase, cell_type=is_complex.astype(np.int64),
        c50=np.exp(rng.uniform(np.log(0.03), np.log(0.3), n)),
        threshold=rng.uniform(*tuning.threshold, n), sharpness=rng.uniform(2.0, 4.0, n),
        baseline=np.exp(rng.normal(np.log(0.3), 0.6, n)), amplitude=amplitude,
        overdispersion=np.clip(np.exp(rng.normal(np.log(20.0), 1.2, n)), 0.5, 200),
        pupil_gain=rng.normal(0.05, 0.08, n) * strong[0],
        running_gain=rng.normal(0.15, 0.1, n) * strong[1],
        latent_loading=np.column_stack([rng.normal(0.15, 0.05, n),
                                        rng.normal(0, 0.1, (n, N_GAIN_LATENT - 1))])
        * np.exp(rng.normal(0, 0.6, (n, 1))),
    )
    # additive shared activity: loadings of sd 0.4 / k on latent dimension k (a power-law
    # spectrum, Stringer et al. 2019), dimension 1 also with a common positive part (arousal-like)
    spont_loading = rng.normal(0, 1, (n, N_SPONT_LATENT)) * (0.4 / np.arange(1, N_SPONT_LATENT + 1))
    spont_loading[:, 0] += 0.9
    spont_loading *= np.exp(rng.normal(0, 0.3, (n, 1)))
    spont_ratio = 0.6 * np.exp(rng.normal(0.0, 0.7, n))
    params.update(
        spont_loading=spont_loading,
        spont_behavior=np.column_stack([rng.normal(0.1, 0.1, n), rng.normal(0.25, 0.2, n)]),
    )
    pop = Population(filters=np.concatenate([main, quad], axis=1).astype(np.float32),
                     complex_idx=cidx, drive_offset=np.zeros(n), drive_scale=np.ones(n),
                     params=params, normalization=tuning.normalization)
    pop.calibrate(calibration_images)
    # the additive activity's scale follows the sd of the neuron's evoked response (gain 1)
    params["spont_rate"] = spont_ratio * pop.rates(calibration_images, np.zeros(n)).std(axis=0)
    return pop, pos.astype(np.float32)


def true_reliability(pop: Population, oracle_images: np.ndarray, log_gain: np.ndarray,
                     shift_px: np.ndarray, covariates: Optional[np.ndarray] = None) -> np.ndarray:
    """The true Eq. 1 weight w_a = sigma_a / eta_a of every neuron (float64, (n_neurons,)).

    Expectations run over the gamma-Poisson noise, the latent gain and the additive latent
    (exactly) and over the session's behavior and eye position (averaging over the given states:
    behavioral log_gain (m, n_neurons), shift_px (m, 2) and the standardized pupil and running
    `covariates` (m, 2) of the same states, e.g. m trials spread evenly through the session;
    covariates None means all zero). With rate lambda in state j (before the latent gain, which
    has mean 1 and second moment exp(|L|^2)) and the additive activity A, independent of the
    gain, with moments a1_j = E[A | j], a2_j = E[A^2 | j] (`Population.spont_moments`), the
    expected count mu = lambda G_latent + A has E[mu] = lambda + a1_j and
    E[mu^2] = lambda^2 exp(|L|^2) + 2 lambda a1_j + a2_j, so
    E[r] = mean_j (lambda + a1_j), E[r^2] = mean_j (E[mu] + E[mu^2] (1 + 1/k)), then
    sigma^2 = Var_i E[r | i] over the oracle images, eta^2 = mean_i Var[r | i]."""
    x = _normalize(oracle_images)
    n_img, m = len(x), len(shift_px)
    if covariates is None:
        covariates = np.zeros((m, 2))
    a1, a2 = pop.spont_moments(np.asarray(covariates, np.float64))   # (m, n_neurons): E[A^p | j]
    s1 = np.zeros((n_img, pop.n_neurons))
    s2 = np.zeros_like(s1)
    s_cross = np.zeros_like(s1)
    per_chunk = max(1, _CHUNK // n_img)
    for j0 in range(0, m, per_chunk):
        js = np.arange(j0, min(j0 + per_chunk, m))
        xs = shift_images(np.repeat(x, len(js), axis=0), np.tile(shift_px[js], (n_img, 1)))
        lam = pop.rates(xs, np.tile(log_gain[js], (n_img, 1))).reshape(n_img, len(js), -1)
        s1 += lam.sum(axis=1)
        s2 += (lam ** 2).sum(axis=1)
        s_cross += (lam * a1[js]).sum(axis=1)
    gain_m2 = np.exp((pop.params["latent_loading"] ** 2).sum(axis=1))
    mean = (s1 + a1.sum(axis=0)) / m
    mu_m2 = (s2 * gain_m2 + 2 * s_cross + a2.sum(axis=0)) / m    # E[mu^2 | i]
    second = mean + mu_m2 * (1 + 1 / pop.params["overdispersion"])
    signal_var = mean.var(axis=0)
    noise_var = (second - mean ** 2).mean(axis=0)
    return np.sqrt(signal_var / noise_var)


# ---------------------------------------------------------------------------------------------
# experiment


def animal_id_base(profile: SimProfile, seed: int, tuning: Union[str, Tuning] = "mouse") -> int:
    """Simulated animal ids are 9PSSSSTA: P the profile (1 tiny, 2 demo, 3 full, 9 custom), SSSS the
    seed, T the tuning (0 mouse, 1 low, 2 high: the index in TUNINGS), A the animal (1..9); so
    experiments of different profiles, seeds or tunings never share a scan key and never collide
    with real (Sensorium) animal ids, which have 5 digits."""
    if not 0 <= int(seed) < 10_000:
        raise ValueError(f"seed {seed}: simulated experiments take seeds 0..9999")
    animals = -(-profile.n_scans // profile.sessions_per_animal)
    if animals > 9:
        raise ValueError(f"profile {profile.name!r} has {animals} animals; simulated ids hold at most 9")
    digit = {"tiny": 1, "demo": 2, "full": 3}.get(profile.name, 9)
    return 90_000_000 + digit * 1_000_000 + int(seed) * 100 + 10 * list(TUNINGS).index(tuning_of(tuning).name)


def _scan_layout(profile: SimProfile, rng: np.random.Generator, animal_base: int) -> list[dict]:
    """(animal_id, session, scan_idx), retinotopic map and eye-to-RF map of each scan. Scans of the
    same animal share its retinotopy (up to a small field-of-view offset between sessions) and eye
    map."""
    layout, animal = [], None
    for k in range(profile.n_scans):
        a, session = divmod(k, profile.sessions_per_animal)
        if session == 0:
            angle = rng.uniform(-0.3, 0.3)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            eye_angle = rng.uniform(-0.2, 0.2)
            eye_rot = np.array([[np.cos(eye_angle), -np.sin(eye_angle)],
                                [np.sin(eye_angle), np.cos(eye_angle)]])
            animal = dict(center=np.array([W / 2 + rng.uniform(-8, 8), H / 2 + rng.uniform(-4, 4)]),
                          matrix=rot @ np.diag([0.045, 0.032]) * rng.uniform(0.85, 1.15),
                          eye_map=eye_rot * rng.uniform(0.2, 0.3))
        fov_offset = rng.normal(0, 1.0, 2)
        layout.append(dict(animal_id=animal_base + a + 1, session=session + 1, scan_idx=1,
                           retinotopy=dict(center=animal["center"] + fov_offset,
                                           matrix=animal["matrix"], scatter=2.5),
                           eye_map=animal["eye_map"]))
    return layout


def _simulate_scan(profile: SimProfile, image_set: ImageSet, is_oracle: np.ndarray,
                   tiers_of_image: np.ndarray, layout: dict,
                   ss: np.random.SeedSequence, tuning: Tuning) -> ScanRecording:
    """One scan: neurons, trial order, behavior, responses and ground truth."""
    rng_pop, rng_order, rng_beh, rng_noise, rng_spont = (np.random.default_rng(s)
                                                         for s in ss.spawn(5))
    n_set = len(image_set.image_ids)
    x_all = _normalize(image_set.images)
    calib = np.linspace(0, n_set - 1, min(_N_CALIBRATION, n_set)).round().astype(int)
    pop, positions = sample_population(profile.n_neurons, rng_pop, layout["retinotopy"],
                                       x_all[calib].reshape(len(calib), -1), tuning)

    oracle_idx = np.flatnonzero(is_oracle)
    trial_img = np.concatenate([np.flatnonzero(~is_oracle), np.repeat(oracle_idx, profile.n_repeats)])
    trial_img = trial_img[rng_order.permutation(len(trial_img))]   # oracle repeats interleaved
    n_trials = len(trial_img)

    beh = simulate_behavior(n_trials, rng_beh)
    shift = eye_shift(beh.pupil_center, beh.eye_center, layout["eye_map"])
    covariates = beh.covariates()
    log_gain = pop.log_gain(covariates)
    latent = simulate_latent(n_trials, pop.params["latent_loading"].shape[1], rng_noise)
    spont_latent = simulate_latent(n_trials, N_SPONT_LATENT, rng_spont, rho=SPONT_RHO)

    responses = np.empty((n_trials, pop.n_neurons), np.float32)
    k = pop.params["overdispersion"]
    for t0 in range(0, n_trials, _CHUNK):
        sl = slice(t0, min(t0 + _CHUNK, n_trials))
        lam = pop.rates(shift_images(x_all[trial_img[sl]], shift[sl]),
                        log_gain[sl] + pop.latent_log_gain(latent[sl]))
        lam += pop.spont(covariates[sl], spont_latent[sl])
        g = rng_noise.gamma(k, 1 / k, size=lam.shape)
        responses[sl] = rng_noise.poisson(lam * g)

    states = np.linspace(0, n_trials - 1, min(profile.n_virtual_repeats, n_trials)).round().astype(int)
    reliability = true_reliability(pop, image_set.images[oracle_idx], log_gain[states], shift[states],
                                   covariates[states])
    truth = dict(pop.params, reliability=reliability)
    truth["eye_shift_px"] = shift.astype(np.float32)
    if profile.store_noise_free:
        noise_free = np.empty((n_set, pop.n_neurons), np.float32)
        spont_at_mean = pop.spont_moments(np.zeros((1, 2)))[0]      # E[A] at z_pupil = z_running = 0
        for i0 in range(0, n_set, _CHUNK):
            sl = slice(i0, min(i0 + _CHUNK, n_set))
            noise_free[sl] = (pop.rates(x_all[sl].reshape(-1, H * W), np.zeros(pop.n_neurons))
                              + spont_at_mean)
        truth["noise_free"] = noise_free

    scan = ScanRecording(
        animal_id=layout["animal_id"], session=layout["session"], scan_idx=layout["scan_idx"],
        image_set=image_set.name, source="simulated",
        unit_ids=np.arange(1, pop.n_neurons + 1, dtype=np.int64), cell_positions=positions,
        trial_idx=np.arange(n_trials, dtype=np.int64),
        image_ids=image_set.image_ids[trial_img].astype(np.int64),
        tiers=tiers_of_image[trial_img],
        responses=responses,
        behavior=np.column_stack([beh.pupil, beh.dpupil, beh.running]).astype(np.float32),
        pupil_center=beh.pupil_center.astype(np.float32),
        ground_truth=truth)
    return scan


def simulate_experiment(profile: Union[str, SimProfile] = "demo", seed: int = 0,
                        progress: Optional[Callable[[str], None]] = None,
                        tuning: Union[str, Tuning] = "mouse") -> SimulatedExperiment:
    """Simulate every scan of `profile` (a key of PROFILES, or a SimProfile) with `seed`, its neurons
    tuned as `tuning` (a name of TUNINGS, or a Tuning).

    The same (profile, seed, tuning) gives bit-identical arrays on a given machine and library stack.
    Every tuning of one (profile, seed) shows the same images in the same roles (train, validation,
    oracle), so their similarity matrices compare image by image; the neurons, trial orders and
    behaviour of another tuning are drawn from streams of their own ('mouse' keeps the streams it
    always had). `progress`, if given, is called with a short message before each long step."""
    tuning = tuning_of(tuning)
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown simulation profile {profile!r}; valid profiles: "
                             f"{', '.join(PROFILES)}")
        profile = PROFILES[profile]
    animal_id_base(profile, seed, tuning)   # refuses an out-of-range seed before any work
    say = progress or (lambda message: None)
    root = np.random.SeedSequence([int(seed), zlib.crc32(profile.name.encode())])
    ss_images, ss_layout, *ss_scans = root.spawn(2 + profile.n_scans)
    if tuning.name != "mouse":
        ss_scans = np.random.SeedSequence([int(seed), zlib.crc32(profile.name.encode()),
                                           zlib.crc32(tuning.name.encode())]).spawn(profile.n_scans)
    rng_images = np.random.default_rng(ss_images)

    n_set = profile.n_images + profile.n_oracle
    say(f"simulating {n_set} images")
    image_set = make_image_set(f"sim-{profile.name}-{seed}", n_set, profile.synthetic_fraction,
                               rng_images)
    roles = rng_images.permutation(n_set)
    is_oracle = np.zeros(n_set, bool)
    is_oracle[roles[:profile.n_oracle]] = True
    tiers_of_image = np.full(n_set, "train", dtype="<U10")
    tiers_of_image[is_oracle] = "oracle"
    n_val = int(round(profile.validation_fraction * profile.n_images))
    tiers_of_image[roles[profile.n_oracle:profile.n_oracle + n_val]] = "validation"

    layouts = _scan_layout(profile, np.random.default_rng(ss_layout), animal_id_base(profile, seed, tuning))
    scans = []
    for k, (layout, ss) in enumerate(zip(layouts, ss_scans)):
        say(f"simulating scan {k + 1}/{profile.n_scans}: {profile.n_neurons} {tuning.name}-tuned neurons, "
            f"{profile.n_trials} trials")
        scans.append(_simulate_scan(profile, image_set, is_oracle, tiers_of_image, layout, ss, tuning))
    return SimulatedExperiment(image_set=image_set, scans=scans, profile=profile.name, seed=int(seed),
                               tuning=tuning.name)
