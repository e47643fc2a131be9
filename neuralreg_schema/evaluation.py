"""Evaluation schema: robustness of the trained classifiers (paper Sec. 4, Figs. 4, 5, 7).

    NoiseConfig            noise sds and the noise seed (one standard-normal image per test image)
    NoiseRobustness        test accuracy of a classifier at every noise level (+ .Level per sd)
    AttackSuite            a set of attacks on a fixed subset of test samples (the same for every model)
      .Member              one AttackConfig of the suite
    AttackConfig           one attack with its hyperparameter grid and repeats (compute/attacks.py)
    AttackResult           per classifier and attack: minimal adversarial distance per sample and norm
    MinimalPerturbation    per classifier and suite: the minimum over the suite's attacks (+ .Norm);
                           its median is the paper's robustness score

The numbers come from compute/noise.py and compute/attacks.py; this module fetches and inserts.
Every row records the device, torch version, code version and host that computed it.
"""
from __future__ import annotations

import logging
import socket

import numpy as np

from . import settings
from .classifier import ClassificationDataset, RegularizedClassifier
from .predictive import config_hash
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.evaluation")

schema = dj.Schema()

POPULATE_ORDER = ("NoiseRobustness", "AttackResult", "MinimalPerturbation")


def _provenance(device: str) -> dict:
    import torch
    return {"device": str(device)[:128], "torch_version": torch.__version__[:32],
            "code_version": settings.code_version()[:64], "host": socket.gethostname()[:255]}


def _device():
    from .compute.train_predictive import describe_device, resolve_device
    dev = resolve_device(None)
    return dev, describe_device(dev)


@schema
class NoiseConfig(dj.Lookup):
    definition = """
    # Gaussian noise levels of the Fig. 4 evaluation
    noise_name : varchar(32)             # e.g. 'default'
    ---
    sigmas : json                        # noise sds on [0, 1] images, ascending (0 = clean)
    noise_seed : int32                   # seed of the standard-normal noise images (identical for every model)
    max_samples = 0 : int32              # evaluate the first max_samples test images (0: all)
    """

    @classmethod
    def add(cls, name: str = "default", sigmas=None, *, noise_seed: int = 0, max_samples: int = 0) -> dict:
        """Insert a noise configuration (default sds: compute.noise.DEFAULT_SIGMAS); idempotent, and
        refuses other settings under an existing name."""
        from .compute import noise
        row = {"noise_name": name, "sigmas": noise.check_sigmas(sigmas if sigmas is not None else noise.DEFAULT_SIGMAS),
               "noise_seed": int(noise_seed), "max_samples": int(max_samples)}
        if row["max_samples"] < 0:
            raise ValueError("max_samples must be >= 0")
        key = {"noise_name": name}
        if cls & key:
            stored = (cls & key).fetch1()
            if [float(s) for s in stored["sigmas"]] != row["sigmas"] or stored["noise_seed"] != row["noise_seed"] \
                    or stored["max_samples"] != row["max_samples"]:
                raise ValueError(f"noise config {name!r} exists with other settings; choose another name")
            return key
        cls.insert1(row)
        return key


@schema
class NoiseRobustness(dj.Computed):
    definition = """
    # test accuracy of a classifier under additive Gaussian noise (Fig. 4)
    -> RegularizedClassifier
    -> NoiseConfig
    ---
    n_samples : int32                    # test images evaluated
    clean_accuracy : float64             # at sigma 0 (the first level when it is 0), else at the lowest level
    mean_accuracy : float64              # mean over the levels (area under the Fig. 4 curve / number of levels)
    seconds : float64
    device : varchar(128)
    torch_version : varchar(32)
    code_version : varchar(64)
    host : varchar(255)
    evaluated_at = CURRENT_TIMESTAMP : datetime
    """
    reserve_timeout = 7200   # s: 10000 test images x 9 levels of a ResNet18 take ~10 min on a CPU

    class Level(dj.Part):
        definition = """
        # accuracy at one noise level
        -> master
        level : int32                    # index into NoiseConfig.sigmas
        ---
        sigma : float64                  # noise sd on [0, 1] images
        accuracy : float64
        correct : <blob>                 # bool (n_samples,): per test image (paired comparisons between models)
        """

    def make(self, key):
        import time
        from .compute import noise
        t0 = time.perf_counter()
        cfg = (NoiseConfig & key).fetch1()
        data = ClassificationDataset.load(key)
        n = len(data.test_images) if not cfg["max_samples"] else min(cfg["max_samples"], len(data.test_images))
        dev, described = _device()
        net = RegularizedClassifier().network(key, device=dev)
        accuracy, correct = noise.noise_accuracy(net, data.test_images[:n], data.test_labels[:n], cfg["sigmas"],
                                                 seed=cfg["noise_seed"], device=dev)
        sigmas = [float(s) for s in cfg["sigmas"]]
        self.insert1({**key, "n_samples": n, "clean_accuracy": float(accuracy[0]),
                      "mean_accuracy": float(np.mean(accuracy)), "seconds": time.perf_counter() - t0,
                      **_provenance(described)})
        self.Level.insert([{**key, "level": i, "sigma": s, "accuracy": float(a), "correct": correct[i]}
                           for i, (s, a) in enumerate(zip(sigmas, accuracy))])
