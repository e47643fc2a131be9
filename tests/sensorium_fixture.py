"""A small synthetic Sensorium 2022 static scan, written in the published layout (see
neuralreg_schema/compute/experiment/sensorium.py for the format and its sources).

The scan folder is named like the real ones (static<animal>-<session>-<scan>-GrayImageNet-<hash>);
its data/<kind>/<i>.npy files are in random order relative to trial_idx, row i of every
meta/trials array describing file i. Images are uint8 (1, 144, 256); responses float32
(n_neurons,); behavior float32 (3,); pupil_center float32 (2,). Test (oracle) images are repeated
`n_repeats` times. Options reproduce what the competition scans withhold (zeroed test responses,
zeroed behavior, hashed trial_idx); tests make malformed scans by editing the written files.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

SCAN_HASH = "94c6ff995dac583098847cfecd43e7b6"
IMAGE_SIZE = (144, 256)
_STATISTICS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}


def scan_folder_name(animal_id: int, session: int, scan_idx: int) -> str:
    return f"static{animal_id}-{session}-{scan_idx}-GrayImageNet-{SCAN_HASH}"


def write_sensorium_fixture(root: Path, *, n_neurons: int = 12, n_train: int = 30, n_validation: int = 8,
                            n_oracle: int = 5, n_repeats: int = 4, animal_id: int = 21067, session: int = 10,
                            scan_idx: int = 18, zip: bool = False, seed: int = 0, n_final_test: int = 0,
                            withheld_tiers: tuple[str, ...] = (), withheld_behavior: bool = False,
                            hashed_trial_idx: bool = False) -> Path:
    """Write a scan under `root`; return its folder, or with zip=True its .zip (the folder removed).

    n_oracle test images and n_final_test final_test images are each shown n_repeats times.
    withheld_tiers: source tiers ('test', 'final_test', ...) whose responses are written as zeros;
    withheld_behavior: behavior and pupil_center all zero; hashed_trial_idx: trial_idx written as
    hex strings (all three as in the competition scans)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / scan_folder_name(animal_id, session, scan_idx)

    # trials: one per train/validation image, n_repeats per test/final_test image; shuffled file order
    n_once = n_train + n_validation
    n_images = n_once + n_oracle + n_final_test
    image_ids = rng.choice(np.arange(1, 100 * n_images), size=n_images, replace=False).astype(np.int64)
    pixels = rng.integers(0, 256, size=(n_images, 1, *IMAGE_SIZE), dtype=np.uint8)
    tiers = np.array(["train"] * n_train + ["validation"] * n_validation
                     + ["test"] * (n_oracle * n_repeats) + ["final_test"] * (n_final_test * n_repeats))
    image_of_trial = np.concatenate([np.arange(n_once),
                                     np.repeat(np.arange(n_once, n_once + n_oracle), n_repeats),
                                     np.repeat(np.arange(n_once + n_oracle, n_images), n_repeats)])
    shuffle = rng.permutation(len(tiers))
    tiers, image_of_trial = tiers[shuffle], image_of_trial[shuffle]
    n_trials = len(tiers)
    trial_idx = rng.choice(10 * n_trials, size=n_trials, replace=False).astype(np.int64)

    responses = rng.gamma(2.0, 0.5, size=(n_trials, n_neurons)).astype(np.float32)
    responses[np.isin(tiers, withheld_tiers)] = 0
    behavior = np.column_stack([rng.normal(15, 3, n_trials), rng.normal(0, 1, n_trials),
                                np.abs(rng.normal(0, 5, n_trials))]).astype(np.float32)
    pupil_center = rng.normal([320, 240], 10, size=(n_trials, 2)).astype(np.float32)
    if withheld_behavior:
        behavior[:], pupil_center[:] = 0, 0

    data = {"images": pixels[image_of_trial], "responses": responses,
            "behavior": behavior, "pupil_center": pupil_center}
    for kind, values in data.items():
        (folder / "data" / kind).mkdir(parents=True)
        for i, value in enumerate(values):
            np.save(folder / "data" / kind / f"{i}.npy", value)

    condition_hashes = np.array([f"{h:020x}" for h in rng.integers(0, 2**63, n_images)])
    _save_all(folder / "meta" / "trials", {
        "tiers": tiers,
        "frame_image_id": image_ids[image_of_trial],
        "trial_idx": np.array([f"{t:032x}" for t in trial_idx]) if hashed_trial_idx else trial_idx,
        "frame_image_class": np.full(n_trials, "imagenet"),
        "condition_hash": condition_hashes[image_of_trial],
    })
    _save_all(folder / "meta" / "neurons", {
        "unit_ids": np.sort(rng.choice(np.arange(1, 10 * n_neurons + 1), n_neurons, replace=False)),
        "animal_ids": np.full(n_neurons, animal_id),
        "sessions": np.full(n_neurons, session),
        "scan_idx": np.full(n_neurons, scan_idx),
        "cell_motor_coordinates": np.column_stack([rng.uniform(-500, 500, (n_neurons, 2)),
                                                   rng.uniform(100, 400, n_neurons)]),
        "area": np.full(n_neurons, "V1"),
        "layer": np.full(n_neurons, "L2/3"),
    })
    for kind, values in data.items():
        axis = None if kind == "images" else 0
        stats = {name: np.asarray(fn(values, axis=axis)) for name, fn in _STATISTICS.items()}
        for subset in ("all", "stimulus_frame"):
            _save_all(folder / "meta" / "statistics" / kind / subset, stats)

    if not zip:
        return folder
    archive = zip_folder(folder, folder.parent / f"{folder.name}.zip")
    shutil.rmtree(folder)
    return archive


def zip_folder(folder: Path, archive: Path, *, top_folder: bool = True) -> Path:
    """Zip a scan folder as the published archives are (neuralpredictors' zip_dir): members under
    the folder's name, folder entries included. top_folder=False puts data/ and meta/ at the root."""
    base = folder.parent if top_folder else folder
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(base))
    return archive


def _save_all(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
