"""Experiment schema: recordings, stimuli, trials, oracle repeats and the Eq. 1 neuron weights.

Tables only; the numbers come from `compute/` (experiment/reliability.snr_weights) and the data from
`compute/experiment/simulate.py` or `compute/experiment/sensorium.py`, both returning `compute.experiment.recording` objects that
`ingest()` validates and inserts in one transaction.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .compute.experiment import reliability
from .compute.experiment.recording import ImageSet as ImageSetData, RecordingError, ScanRecording
from .settings import STORE, import_datajoint

dj = import_datajoint()

schema = dj.Schema()

# computed tables of this module, in the order a worker populates them
POPULATE_ORDER = ("Neuron",)


@schema
class ImageSet(dj.Manual):
    definition = """
    # a stimulus set: the images shown in one or more scans
    image_set : varchar(32)              # e.g. 'sim-demo-0' (simulation profile and seed), 'sensorium2022'
    ---
    description = '' : varchar(1024)     # where the images come from
    """


@schema
class Image(dj.Manual):
    definition = """
    # one stimulus image: 36 x 64 pixels, grayscale
    -> ImageSet
    image_id : int64                     # id within the set (Sensorium: meta/trials/frame_image_id)
    ---
    pixels : <blob>                      # float32 (36, 64), gray levels 0..255 (8-bit luminance scale)
    pixel_hash : char(32)                # md5 of the float32 pixels: refuses an id reused for another image
    """


@schema
class Scan(dj.Manual):
    definition = """
    # one two-photon scan: a population of neurons recorded over a sequence of trials
    animal_id : int32                    # mouse id
    session : int16                      # recording session (day) of this mouse
    scan_idx : int16                     # scan within the session
    ---
    -> ImageSet
    source : enum('simulated', 'sensorium2022')   # where the recording comes from
    source_path : varchar(1024)          # imported folder/zip (name only), or 'profile/seed' of a simulation
    n_neurons : int32                    # units recorded (rows of Scan.Unit)
    n_trials : int32                     # trials (rows of Trial)
    n_oracle_images : int32              # distinct oracle images with responses (0: none, Neuron is not computed)
    responses : <npy@main>               # (simulated: spike counts; Sensorium: deconvolved activity, a.u.) float32 (n_trials, n_neurons); row = Trial.row, column = Scan.Unit.column
    data_hash : char(32)                 # md5 of responses, trial order, image ids, units and tiers: re-ingesting different data under this key is refused
    notes = '' : varchar(4000)           # problems detected at import and tolerated (e.g. withheld test responses)
    ingested_at = CURRENT_TIMESTAMP : datetime   # when the scan was inserted
    """

    class Unit(dj.Part):
        definition = """
        # one recorded unit (neuron) of the scan
        -> master
        unit_id : int32                  # unit id within the scan (Sensorium: meta/neurons/unit_ids)
        ---
        column : int32                   # column of this unit in Scan.responses
        cortex_x : float32               # (um) cortical position x
        cortex_y : float32               # (um) cortical position y
        cortex_z : float32               # (um) cortical depth z
        """


@schema
class SimulatedUnit(dj.Manual):
    definition = """
    # ground truth of a simulated unit (simulated scans only): what the estimates are checked against
    -> Scan.Unit
    ---
    true_reliability : float64           # (dimensionless) true Eq. 1 signal-to-noise ratio sigma/eta (noise and behavior averaged exactly)
    rf_x : float32                       # (pixels of the 36 x 64 image) receptive field centre, horizontal
    rf_y : float32                       # (pixels) receptive field centre, vertical
    orientation : float32                # (radians) preferred orientation
    spatial_frequency : float32          # (cycles/pixel) preferred spatial frequency
    rf_size : float32                    # (pixels) Gaussian envelope s.d.
    cell_type : enum('simple', 'complex')  # linear (half-rectified Gabor) or energy model
    pupil_gain : float32                 # (log-gain per s.d. of pupil) gain modulation by the standardized pupil
    running_gain : float32               # (log-gain per s.d. of running) gain modulation by the standardized running speed
    """


@schema
class Trial(dj.Manual):
    definition = """
    # one stimulus presentation in a scan, with the behavior measured during it
    -> Scan
    trial_idx : int32                    # presentation order within the scan (Sensorium: meta/trials/trial_idx)
    ---
    -> Image                             # the image shown (its image_set is the scan's)
    row : int32                          # row of this trial in Scan.responses
    tier : enum('train', 'validation', 'oracle', 'withheld')   # oracle: repeated test images; withheld: responses not published
    pupil : float32                      # (a.u.) pupil diameter
    dpupil : float32                     # (a.u./s) temporal derivative of the pupil diameter
    running : float32                    # (cm/s) treadmill running speed
    eye_x : float32                      # (camera pixels) eye position, horizontal (pupil centre)
    eye_y : float32                      # (camera pixels) eye position, vertical (pupil centre)
    """


@schema
class OracleTrial(dj.Manual):
    definition = """
    # each repeat of each oracle image: the trials that Eq. 1 (and Eq. 3) average over
    -> Trial
    ---
    repeat : int16                       # 0-based repeat number of this image within the scan, in presentation order
    """


@schema
class Neuron(dj.Computed):
    """One job per scan (Eq. 1 needs all oracle trials of the scan at once), one Neuron.Unit row per
    unit. A per-unit Computed table with a per-scan key_source cannot be populated with
    reserve_jobs in DataJoint 2.3 (its job table is keyed by the unit), hence master and part."""

    definition = """
    # Eq. 1 of the paper for every unit of a scan, from its oracle repeats (per-unit values in Neuron.Unit)
    -> Scan
    ---
    n_oracle_images : int32              # distinct oracle images used
    n_oracle_trials : int32              # oracle trials used (images x repeats)
    median_weight : float64              # (dimensionless) median w_a over the scan's units
    n_constant : int32                   # units that never vary on the oracle trials (w_a = 0)
    """
    reserve_timeout = 1800   # s a job may stay reserved before populate.jobs reclaims it (Eq. 1 of one scan takes seconds)

    class Unit(dj.Part):
        definition = """
        # signal-to-noise weight w_a of one unit (Eq. 1)
        -> master
        -> Scan.Unit
        ---
        signal_var : float64             # (response unit^2) sigma_a^2 = Var_i(E_t r_ait): variance over oracle images of the mean over repeats
        noise_var : float64              # (response unit^2) eta_a^2 = E_i(Var_t r_ait): mean over oracle images of the variance over repeats, ddof=1
        snr_weight : float64             # (dimensionless) w_a = sigma_a / eta_a; 0 for a constant unit, capped for a noiseless one
        snr_status : enum('ok', 'constant', 'noiseless')   # how w_a was obtained (see compute/experiment/reliability.SNR)
        """

    @property
    def key_source(self):
        # scans whose oracle responses were withheld (n_oracle_images = 0) have no Eq. 1
        return (Scan & "n_oracle_images >= 2").proj()

    def make(self, key):
        rows, image_ids = (Trial * OracleTrial & key).to_arrays("row", "image_id", order_by="trial_idx")
        responses = scan_responses(key)
        units = (Scan.Unit & key).to_dicts(order_by="column")
        snr = reliability.snr_weights(responses[np.asarray(rows)], np.asarray(image_ids))
        self.insert1({**key, "n_oracle_images": len(np.unique(image_ids)), "n_oracle_trials": len(rows),
                      "median_weight": float(np.median(snr.weight)),
                      "n_constant": int(np.sum(snr.status == "constant"))})
        self.Unit.insert([
            {**key, "unit_id": u["unit_id"], "signal_var": float(snr.signal_var[u["column"]]),
             "noise_var": float(snr.noise_var[u["column"]]), "snr_weight": float(snr.weight[u["column"]]),
             "snr_status": snr.status[u["column"]]}
            for u in units])


def scan_responses(key) -> np.ndarray:
    """Scan.responses of one scan as a float32 array (trials x units; rows = Trial.row)."""
    ref = (Scan & key).fetch1("responses")
    return np.asarray(ref.load() if hasattr(ref, "load") else ref, dtype=np.float32)


def image_pixels(image_set: str, image_ids) -> np.ndarray:
    """float32 (n, 36, 64) pixels of `image_ids` (in that order) from one image set."""
    ids = [int(i) for i in image_ids]
    pixels = dict(zip(*(Image & {"image_set": image_set}).to_arrays("image_id", "pixels")))
    missing = [i for i in ids if i not in pixels]
    if missing:
        raise ValueError(f"image set {image_set!r} lacks image ids {missing[:5]}")
    return np.stack([np.asarray(pixels[i], dtype=np.float32) for i in ids])


# ---------------------------------------------------------------- ingest

def _md5(*arrays: np.ndarray, text: str = "") -> str:
    md5 = hashlib.md5()
    for array in arrays:
        md5.update(np.ascontiguousarray(array).tobytes())
    md5.update(text.encode())
    return md5.hexdigest()


def _pixel_hash(pixels: np.ndarray) -> str:
    return _md5(np.asarray(pixels, dtype=np.float32))


def data_hash(scan: ScanRecording) -> str:
    """Fingerprint of what a scan row stands for: responses, trial order, image ids, units and tiers."""
    return _md5(np.asarray(scan.responses, dtype=np.float32), np.asarray(scan.trial_idx, dtype=np.int64),
                np.asarray(scan.image_ids, dtype=np.int64), np.asarray(scan.unit_ids, dtype=np.int64),
                text="|".join(map(str, scan.tiers)))


def scan_key(scan: ScanRecording) -> dict:
    return {"animal_id": int(scan.animal_id), "session": int(scan.session), "scan_idx": int(scan.scan_idx)}


def _oracle_repeats(scan: ScanRecording) -> np.ndarray:
    """0-based repeat number of every trial's image, in trial order (meaningful for oracle trials)."""
    repeat = np.zeros(scan.n_trials, dtype=np.int64)
    seen: dict[int, int] = {}
    for t, image_id in enumerate(scan.image_ids.tolist()):
        repeat[t] = seen.get(image_id, 0)
        seen[image_id] = repeat[t] + 1
    return repeat


def ingest(image_set: ImageSetData, scans: list[ScanRecording], *, source_path: str = "",
           progress=None) -> list[dict]:
    """Validate everything, then insert the image set and the new scans in one transaction.

    Scans already in the database are skipped (ingest is idempotent). An image id already stored
    with other pixels, or any invalid array, raises RecordingError before anything is written.
    Returns the keys of the scans inserted.
    """
    say = progress or (lambda message: None)
    image_set.validate()
    for scan in scans:
        if scan.image_set != image_set.name:
            raise RecordingError(f"scan {scan.name}", f"refers to image set {scan.image_set!r}, not {image_set.name!r}")
        scan.validate(image_set.image_ids)
    keys = [scan_key(s) for s in scans]
    if len({tuple(k.values()) for k in keys}) != len(keys):
        raise RecordingError(image_set.name, "two scans with the same (animal_id, session, scan_idx)")
    new = []
    for scan, key in zip(scans, keys):
        stored = (Scan & key).to_arrays("data_hash")
        if len(stored) == 0:
            new.append((scan, key))
        elif stored[0] == data_hash(scan):
            say(f"scan {scan.name} already ingested: skipped")
        else:
            raise RecordingError(f"scan {scan.name}", "already ingested with different data (a changed file or "
                                 "simulator version?): delete it first ((Scan & key).delete()) or use another "
                                 "schema prefix")
    if not new:
        return []
    used = np.unique(np.concatenate([s.image_ids for s, _ in new]))
    index = {int(i): n for n, i in enumerate(image_set.image_ids.tolist())}
    hashes = {int(i): _pixel_hash(image_set.images[index[int(i)]]) for i in used}
    stored = dict(zip(*(Image & {"image_set": image_set.name}).to_arrays("image_id", "pixel_hash")))
    clash = [i for i, h in hashes.items() if i in stored and stored[i] != h]
    if clash:
        raise RecordingError(image_set.name, f"image ids {clash[:5]} are already stored with different pixels")
    connection = Scan.connection
    try:
        with connection.transaction:
            ImageSet.insert1({"image_set": image_set.name, "description": image_set.description[:1024]},
                             skip_duplicates=True)
            Image.insert(({"image_set": image_set.name, "image_id": i,
                           "pixels": image_set.images[index[i]].astype(np.float32), "pixel_hash": h}
                          for i, h in hashes.items() if i not in stored))
            for scan, key in new:
                say(f"inserting scan {scan.name}: {scan.n_neurons} neurons x {scan.n_trials} trials")
                _insert_scan(scan, key, image_set.name, source_path)
    except BaseException:
        remove_unreferenced_scan_objects([k for _, k in new])
        raise
    return [k for _, k in new]


def scan_store_folder(key: dict) -> str:
    """Where DataJoint puts a Scan row's schema-addressed objects (`<npy@main>` responses) in the store:
    {schema_prefix}/{schema}/scan/animal_id=../session=../scan_idx=.. (datajoint/builtin_codecs/npy.py)."""
    prefix = dj.config.stores[STORE].get("schema_prefix", "_schema")
    return "/".join([prefix, Scan.database, Scan.table_name] + [f"{k}={key[k]}" for k in ("animal_id", "session", "scan_idx")])


def remove_unreferenced_scan_objects(keys: list[dict]) -> list[str]:
    """After a failed ingest: delete the store folders of the scans that are not in the table (the
    transaction that referenced their objects rolled back, and the random file names would leave a
    new orphan on every attempt). Returns the folders removed."""
    from datajoint.hash_registry import get_store_backend
    backend = get_store_backend(STORE)
    removed = []
    for key in keys:
        if key in Scan():
            continue
        folder = scan_store_folder(key)
        if backend.isdir(folder):
            backend.remove_folder(folder)
            removed.append(folder)
    return removed


def _insert_scan(scan: ScanRecording, key: dict, image_set: str, source_path: str) -> None:
    oracle = scan.tiers == "oracle"
    Scan.insert1({
        **key, "image_set": image_set, "source": scan.source,
        "source_path": (source_path or scan.source)[:1024],
        "n_neurons": scan.n_neurons, "n_trials": scan.n_trials,
        "n_oracle_images": int(len(np.unique(scan.image_ids[oracle]))),
        "responses": np.ascontiguousarray(scan.responses, dtype=np.float32), "data_hash": data_hash(scan),
        "notes": "; ".join(scan.notes)[:4000]})
    pos = np.asarray(scan.cell_positions, dtype=np.float64)
    Scan.Unit.insert([{**key, "unit_id": int(u), "column": c, "cortex_x": pos[c, 0],
                       "cortex_y": pos[c, 1], "cortex_z": pos[c, 2]}
                      for c, u in enumerate(scan.unit_ids.tolist())])
    beh = np.asarray(scan.behavior, dtype=np.float64)
    eye = np.asarray(scan.pupil_center, dtype=np.float64)
    Trial.insert([{**key, "trial_idx": int(t), "image_set": image_set, "image_id": int(scan.image_ids[r]),
                   "row": r, "tier": str(scan.tiers[r]), "pupil": beh[r, 0], "dpupil": beh[r, 1],
                   "running": beh[r, 2], "eye_x": eye[r, 0], "eye_y": eye[r, 1]}
                  for r, t in enumerate(scan.trial_idx.tolist())])
    repeats = _oracle_repeats(scan)
    OracleTrial.insert([{**key, "trial_idx": int(scan.trial_idx[r]), "repeat": int(repeats[r])}
                        for r in np.flatnonzero(oracle)])
    if scan.ground_truth is not None:
        _insert_truth(scan, key)


def _insert_truth(scan: ScanRecording, key: dict) -> None:
    gt = scan.ground_truth
    cell_type = np.asarray(gt["cell_type"])
    SimulatedUnit.insert([
        {**key, "unit_id": int(u), "true_reliability": float(gt["reliability"][c]),
         "rf_x": float(gt["rf_x"][c]), "rf_y": float(gt["rf_y"][c]),
         "orientation": float(gt["orientation"][c]), "spatial_frequency": float(gt["spatial_frequency"][c]),
         "rf_size": float(gt["size"][c]), "cell_type": "complex" if int(cell_type[c]) else "simple",
         "pupil_gain": float(gt["pupil_gain"][c]), "running_gain": float(gt["running_gain"][c])}
        for c, u in enumerate(scan.unit_ids.tolist())])

