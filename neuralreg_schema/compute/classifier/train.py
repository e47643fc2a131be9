"""Joint training of an image classifier and the neural similarity regularizer (Li et al. 2019,
Sec. 3, Fig. 3, Eqs. 7-10). Pure numpy/PyTorch: arrays, a config and a seed in, a result out;
never imports datajoint.

What one step does
------------------
1. Classification: a batch of `batch_size` training images (random crop with zero padding and a
   horizontal flip, drawn on the device) goes through the ResNet; cross-entropy on the logits.
2. Similarity (when a target is given and alpha > 0): `stim_batch` stimulus images, drawn at
   random from the training part of the target's images, go through the same convolutional core;
   at the layers `layers` (conv indices, see resnet.py) their features, centred by the
   running feature mean (below), give S^CNN (Eq. 9, combined by gamma = softmax(logits), Eq. 10)
   and the loss is Eq. 8 averaged over all stim_batch (stim_batch - 1) / 2 pairs of the batch
   against the target matrix.
3. L = L_task + alpha L_similarity (Eq. 7); one SGD step on the network and the layer logits;
   then the running feature mean moves towards this stimulus batch's mean.

Eq. 9's centre f_bar (the mean of each layer's features over the stimulus IMAGES, as Eq. 2 centres
the responses by their mean over all ~5000 stimuli, and as the target is centred): the mean of a
network that is being trained cannot be recomputed over all stimuli every step, so it is kept as a
per-layer running mean (similarity_loss.RunningFeatureMean, detached: the loss trains the network
through the features, never through the mean). Chosen because it is Eq. 9 at the cost of one
vector update per step. Warm-up: before the first step one no-grad pass over all training stimuli
computes it exactly (`stimulus_feature_mean`: the stimulus pass's BatchNorm handling, in chunks of
stim_batch images, as a step sees them; 21-28 plain steps' time per 1000 stimuli on the CPU: ~60
plain steps for the demo's 2272 stimuli, about a quarter of its regularized training; under a
seventh of one CIFAR epoch for the paper's ~4500). After each step it moves towards the step's
stimulus-batch mean, f_bar += center_momentum (batch mean - f_bar), momentum 0.1: it follows the
network's drift with a lag of ~10 steps and averages over ~19 batches (230-1200 images at 12-64
stimuli), whose sampling error adds about momentum / ((2 - momentum) B) to the off-diagonal
similarities (+0.004 at B = 12), against about -1/(B - 1) = -0.09 forced by centring over the
batch. It is updated after the step's loss, so no batch is centred by a mean containing itself.
Why not the step's batch mean (what an earlier version did): it forces the batch's mean off-diagonal
S^CNN to about -1/(B - 1) whatever the network computes, so even features equal to the responses
that generated the target cannot reach zero loss; on synthetic data (compute/classifier/centering.py,
benchmarks/centering.py) that floor is 1.04 times the loss of predicting S = 0 at 8 stimuli, 0.48 at
12 and 0.04 at 64, against 0.015, 0.010 and 0.002 with the running mean. Why not a recomputation
every epoch: the network moves much within an epoch at lr 0.1, and each would cost a pass over all
stimuli. The mean is saved in the checkpoint (a resumed run is bit-exact on the CPU) and in the
stored network (`load_feature_mean`); the held-out loss is centred by it too.

Two forward passes, not one: the classification images are 32 x 32 and the stimuli 36 x 64 (the
paper's downsampled scan images), so they cannot share one batch tensor; the paper, too, first
processes the classification batch and then the stimulus batch (Sec. 3). Pairs: the paper feeds
stimulus pairs (i, j) as separate images, as many stimulus images as classification images per
step (64 images, 32 pairs); the paper recipe here passes as many images too (stim_batch = 64) but
lets every pair of them enter Eq. 8: 2016 pairs per step, 63 times the paper's 32, for the same
images. The demo recipe passes 12 stimuli (66 pairs), sized for two CPU cores: 2.4 times the pairs
of 8 stimuli for 10-15 % more step time. Measured on 2 shared CPU cores, 1 thread, interleaved, two
runs (benchmarks/classifier.py, batch 64; docs/training.md): the regularized step costs 1.42-1.49x the plain
one for the demo (width 16, 12 stimuli; 1.24-1.37x with 8) and 3.8-4.2x for the paper recipe
(width 64, 64 stimuli), the same as the paper's 64 images in 32 pairs (3.85-4.03x): the pair terms
cost nothing next to the forward and backward passes of the images.

Batch normalisation (`stimulus_bn`): by default ('batch') the stimulus pass normalises every
BatchNorm layer by the stimulus batch's own statistics, as the classification pass does with its
batch, and leaves the running statistics untouched (momentum 0 during the pass). So (a) the
test-time statistics are those of the classification data alone (the stimuli are other images, of
another size), and (b) both losses train the same train-mode function. The alternative 'eval' runs
the stimulus pass on the running statistics (the features the trained network computes at test
time, image by image). Measured on the demo before Eq. 9's running mean (centring over the step's 8
stimuli; ResNet18 width 16, 8 epochs, alpha 20, the demo's S_model target, seeds 0 and 1):
'eval' made training unstable (test accuracy 0.52 and 0.94, swinging between 0.10 and 0.87 from
epoch to epoch) where 'batch' reached 0.87 and 0.95 with a lower held-out loss (0.057, 0.048 vs
0.058, 0.084). With the running mean (issue 20, `neuralreg plan bn-modes`, docs/controls.md: 3 seeds
on the photo patches, 2 on the digits, chosen on a validation split) 'eval' trains stably and removes
the residual centring bias of 'batch' (-0.024 for Lowpass with the exact mean), but puts gamma on
layer 1 alone (0.98-1.00) and lowers the neural target's held-out match in the test-time network
(r 0.62 / 0.41 against 0.73 / 0.68), so 'batch' stays the default. The held-out loss is measured
with the same BatchNorm handling as training (with 'batch', in batches of stim_batch held-out images).
Gradients reach every convolution and the BatchNorm affine parameters through the stimulus pass.

Recipes, the learning-rate schedule and the config checks: recipes.py; the network, its
serialization and accuracy: network.py.

Resume (the trainer contract of compute/common/training.py): after every epoch the trainer hands
`checkpoint.save(bytes)` a `training.TrainingState` (network, optimizer, history, epoch; in `extra`
the layer logits, the running feature mean and the initial held-out loss); at start
`checkpoint.load()` may return such bytes, and training continues after that epoch. Batch order,
crops and stimulus draws come from a generator seeded by (seed, epoch), so a resumed run draws what
an uninterrupted one would have drawn; on the CPU it reproduces the uninterrupted run. A checkpoint whose config, seed or data fingerprints
differ is ignored (and reported through `progress`).

Speed: on a GPU the data stay on the device, the network runs in channels_last with bf16 autocast
(the similarity itself in float32), and step timings synchronise before reading the clock.
Held-out stimulus pairs: a fixed fraction of the target's images (split with a fixed seed, the
same for every classifier seed) never enters training; the similarity loss over all their pairs is
measured after every epoch (`heldout_similarity_loss`), and before the first.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import similarity_loss
from .augment import crop_flip
from .data import ClassificationData
from .network import ClassifierNet, accuracy, serialize_classifier
from .recipes import check_config, learning_rate
from ..common.errors import TrainingError
from ..common.modes import batchnorm_batch_stats, batchnorm_eval
from ..common.runtime import autocast, describe_device, prepare_input, resolve_device, torch_threads
from ..common.training import Checkpoint, TrainingState, resume

HELDOUT_SPLIT_SEED = 0          # the held-out stimulus images are the same for every classifier seed


class ClassifierDataError(ValueError):
    """The classification data or the similarity target cannot be trained on (the message says why)."""


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class SimilarityTarget:
    """What the similarity loss matches: stimulus images and their (n, n) neural similarity."""
    images: np.ndarray          # float32 (n, H, W), pixel values in [0, 1]
    matrix: np.ndarray          # float32 (n, n), symmetric, values in [-1, 1], rows follow images
    image_ids: np.ndarray       # int64 (n,): which stimuli (provenance)
    label: str = ""             # e.g. 'model/stimulus' (for logs)

    def validate(self) -> "SimilarityTarget":
        images, matrix = np.asarray(self.images), np.asarray(self.matrix)
        n = len(images)
        if images.ndim != 3 or n < 4:
            raise ClassifierDataError(f"target images must be (n >= 4, H, W), got {images.shape}")
        if matrix.shape != (n, n):
            raise ClassifierDataError(f"target matrix must be ({n}, {n}) for {n} images, got {matrix.shape}")
        if len(np.asarray(self.image_ids)) != n:
            raise ClassifierDataError(f"{len(self.image_ids)} image ids for {n} target images")
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ClassifierDataError("target images must be finite and in [0, 1] "
                                      f"(got {np.nanmin(images):.3g}..{np.nanmax(images):.3g})")
        if not np.isfinite(matrix).all():
            raise ClassifierDataError(f"target matrix {self.label!r} holds {int((~np.isfinite(matrix)).sum())} "
                                      "non-finite values")
        if np.abs(matrix).max() > 1 + 1e-4:
            raise ClassifierDataError(f"target matrix {self.label!r} has values outside [-1, 1] "
                                      f"(max |S| = {np.abs(matrix).max():.4f})")
        if not np.allclose(matrix, matrix.T, atol=1e-5):
            raise ClassifierDataError(f"target matrix {self.label!r} is not symmetric")
        return self

    def fingerprint(self) -> str:
        md5 = hashlib.md5()
        for a in (np.asarray(self.images, np.float32), np.asarray(self.matrix, np.float32),
                  np.asarray(self.image_ids, np.int64)):
            md5.update(np.ascontiguousarray(a).tobytes())
        return md5.hexdigest()


def data_fingerprint(data: ClassificationData) -> str:
    """md5 of the images and labels of both splits: identical data on every worker."""
    md5 = hashlib.md5()
    for a in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        md5.update(np.ascontiguousarray(a).tobytes())
    return md5.hexdigest()


def heldout_split(n: int, fraction: float, maximum: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of n target images: round(fraction n) (at most `maximum`, and
    none if fewer than 2) drawn with the fixed HELDOUT_SPLIT_SEED; both sorted."""
    k = min(int(round(fraction * n)), maximum)
    if k < 2:
        k = 0
    if n - k < 2:
        raise ClassifierDataError(f"{n} target images leave {n - k} for training: need at least 2")
    perm = np.random.default_rng(HELDOUT_SPLIT_SEED).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def stimulus_mode(module: nn.Module, config: dict):
    """The BatchNorm handling of the stimulus pass that config['stimulus_bn'] names."""
    return batchnorm_eval(module) if config.get("stimulus_bn") == "eval" else batchnorm_batch_stats(module)


def _stimulus_chunks(n: int, config: dict, order: torch.Tensor | None = None):
    """(own rows, rows through the network) of n stimuli, chunked as the training's stimulus pass
    sees them: with stimulus_bn 'batch' (BatchNorm by the batch's statistics) chunks of stim_batch
    images, the last one filled up with images from the start of `order` so that every BatchNorm
    batch holds stim_batch images (only its own rows are kept); with 'eval' chunks of
    eval_batch_size (the features do not depend on the chunk)."""
    order = torch.arange(n) if order is None else order
    batch = config.get("stimulus_bn", "batch") == "batch"
    size = config["stim_batch"] if batch else config["eval_batch_size"]
    for s in range(0, n, size):
        own = order[s:s + size]
        rows = torch.cat([own, order[:size - len(own)]]) if batch and len(own) < size else own
        yield own, rows


@torch.no_grad()
def stimulus_feature_mean(net: ClassifierNet, images: torch.Tensor, layers, config: dict,
                          generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
    """Eq. 9's f_bar^(k) exactly: {k: (D_k,) float32} the mean over ALL `images` (n, 1, H, W) of
    their flattened layer-k features, computed as the stimulus pass of a training step computes them
    (BatchNorm per config['stimulus_bn'], in chunks of stim_batch images drawn in the order of a
    random permutation from `generator`; `_stimulus_chunks`); the network's mode is restored."""
    was = net.training
    net.train()
    dev = next(net.parameters()).device
    n = len(images)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    sums: dict[int, torch.Tensor] = {}
    try:
        for own, rows in _stimulus_chunks(n, config, order):
            with stimulus_mode(net, config), autocast(dev):
                _, f = net(prepare_input(images[rows.to(images.device)], dev), layers)
            for k in layers:
                part = f[k][:len(own)].reshape(len(own), -1).double().sum(dim=0)
                sums[k] = part if k not in sums else sums[k] + part
        return {k: (v / n).float() for k, v in sums.items()}
    finally:
        net.train(was)


@torch.no_grad()
def heldout_similarity_loss(net: ClassifierNet, gamma: torch.Tensor, images: torch.Tensor, target: torch.Tensor,
                            layers, clip: float, config: dict, center: dict[int, torch.Tensor]) -> float:
    """Eq. 8 over all pairs of the held-out stimuli: features computed as in the training's stimulus
    pass (BatchNorm per config['stimulus_bn'], in chunks of stim_batch images; `_stimulus_chunks`),
    centred by `center`, the training's running f_bar (Eq. 9: the mean over the stimulus images)."""
    was = net.training
    net.train()
    dev = next(net.parameters()).device
    try:
        feats: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
        for own, rows in _stimulus_chunks(len(images), config):
            with stimulus_mode(net, config), autocast(dev):
                _, f = net(prepare_input(images[rows.to(images.device)], dev), layers)
            for k in layers:
                feats[k].append(f[k][:len(own)].float().reshape(len(own), -1))
        full = {k: torch.cat(v) for k, v in feats.items()}
        return float(similarity_loss.similarity_loss(full, target, gamma, center=center, clip=clip))
    finally:
        net.train(was)


# ---------------------------------------------------------------------------------------------
# one step


@dataclass
class StepData:
    """Everything a step reads, on the device: data in [0, 1], labels, stimuli and their target."""
    train_x: torch.Tensor                      # (N, 1, h, w)
    train_y: torch.Tensor                      # (N,) int64
    stim_x: Optional[torch.Tensor] = None      # (n_stim, 1, H, W): the training stimuli
    stim_target: Optional[torch.Tensor] = None  # (n_stim, n_stim)


def train_step(net: ClassifierNet, layer_weights: similarity_loss.LayerWeights | None, optimizer: torch.optim.Optimizer,
               data: StepData, batch_idx: torch.Tensor, stim_idx: torch.Tensor | None, config: dict,
               crops: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
               feature_mean: similarity_loss.RunningFeatureMean | None = None) -> tuple[torch.Tensor, ...]:
    """One SGD step of Eq. 7. With stimuli (stim_idx), Eq. 9 centres their features by
    `feature_mean` (required then), which is updated with this batch's mean after the loss.
    Returns detached (task loss, similarity loss or nan, correct count)."""
    dev = data.train_x.device
    x = data.train_x[batch_idx]
    if crops is not None:
        x = crop_flip(x, *crops, padding=config["crop_padding"])
    y = data.train_y[batch_idx]
    with autocast(dev):
        logits, _ = net(prepare_input(x, dev))
    task = F.cross_entropy(logits.float(), y)
    loss = task
    sim = torch.tensor(float("nan"), device=dev)
    if stim_idx is not None:
        if feature_mean is None:
            raise ValueError("a step with the similarity loss needs the running feature mean (Eq. 9's f_bar)")
        with stimulus_mode(net, config), autocast(dev):
            _, feats = net(prepare_input(data.stim_x[stim_idx], dev), config["layers"])
        feats = {k: v.float() for k, v in feats.items()}
        target = data.stim_target[stim_idx][:, stim_idx]
        sim = similarity_loss.similarity_loss(feats, target, layer_weights.gamma(), center=feature_mean.center(),
                                        clip=config["clip"])
        loss = similarity_loss.total_loss(task, sim, config["alpha"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if stim_idx is not None:
        feature_mean.update(feats)          # after the loss: no batch is centred by its own mean
    correct = (logits.detach().argmax(1) == y).sum()
    return task.detach(), sim.detach(), correct


def make_optimizer(net: ClassifierNet, layer_weights: similarity_loss.LayerWeights | None, config: dict):
    groups = [{"params": list(net.parameters()), "weight_decay": config["weight_decay"]}]
    if layer_weights is not None:
        groups.append({"params": list(layer_weights.parameters()), "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"])


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class ClassifierResult:
    state: bytes                       # serialize_classifier of the final network (load_classifier)
    history: list                      # per epoch: see `train_classifier`
    test_accuracy: float               # clean test accuracy of the final network
    train_accuracy: float              # running accuracy over the last epoch's (augmented) batches
    gamma: Optional[np.ndarray]        # (K,) final softmax layer weights, None without a target
    layers: list                       # the K conv indices of gamma
    initial_heldout_loss: Optional[float]   # Eq. 8 over the held-out pairs before training
    heldout_loss: Optional[float]      # ... after training
    n_parameters: int
    n_stimuli_train: int
    n_stimuli_heldout: int
    pairs_per_step: int                # similarity pairs per step (0 without a target)
    resumed_from_epoch: int            # epochs taken from a checkpoint (0: trained from scratch)
    device: str
    seconds: float                     # wall time of this call
    meta: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The headline number of the trainer contract (training.TrainerResult): clean test accuracy."""
        return float(self.test_accuracy)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + int(epoch) + 1)


@dataclass
class _Run:
    """One training run's state between the steps of `train_classifier`: network and optimizer, the
    data on the device, and the counts and history the result reports."""
    cfg: dict
    seed: int
    dev: torch.device
    say: Callable[[str], None]
    regularized: bool
    net: ClassifierNet
    layer_weights: Optional[similarity_loss.LayerWeights]
    optimizer: torch.optim.Optimizer
    feature_mean: Optional[similarity_loss.RunningFeatureMean]
    step_data: StepData                      # training images, labels and training stimuli on the device
    test_x: torch.Tensor
    test_y: torch.Tensor
    held_x: Optional[torch.Tensor]           # held-out stimuli and their target (None: no held-out pairs)
    held_target: Optional[torch.Tensor]
    n_train: int
    n_stim: int
    n_held: int
    fingerprints: dict
    history: list = field(default_factory=list)
    start_epoch: int = 0                     # epochs restored from a checkpoint
    initial_held: Optional[float] = None

    @property
    def n_steps(self) -> int:
        return self.n_train // self.cfg["batch_size"]

    @property
    def pairs(self) -> int:
        return self.cfg["stim_batch"] * (self.cfg["stim_batch"] - 1) // 2 if self.regularized else 0

    @property
    def identity(self) -> dict:
        """What a checkpoint must match to be resumed: the config, the seed and the data."""
        return {"config": self.cfg, "seed": self.seed, "fingerprints": self.fingerprints}

    def held_loss(self) -> Optional[float]:
        if self.held_x is None:
            return None
        return heldout_similarity_loss(self.net, self.layer_weights.gamma().detach(), self.held_x, self.held_target,
                                       self.cfg["layers"], self.cfg["clip"], self.cfg, self.feature_mean.center())

    def training_state(self, epoch: int) -> TrainingState:
        """The checkpoint after `epoch` finished epochs (the batch draws need no generator state: each
        epoch's generator is seeded by (seed, epoch))."""
        lw, fm = self.layer_weights, self.feature_mean
        return TrainingState(
            epoch=epoch, identity=self.identity, model=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
            history=self.history,
            extra={"initial_heldout_loss": self.initial_held,
                   "layer_weights": lw.state_dict() if lw is not None else None,
                   "feature_mean": fm.state_dict() if fm is not None else None})

    def restore(self, state: TrainingState) -> None:
        self.net.load_state_dict(state.model)
        if self.layer_weights is not None:
            self.layer_weights.load_state_dict(state.extra["layer_weights"])
        self.optimizer.load_state_dict(state.optimizer)
        if self.feature_mean is not None:
            self.feature_mean.load_state_dict(state.extra["feature_mean"], device=self.dev)
        self.history = list(state.history)
        self.start_epoch = int(state.epoch)
        self.initial_held = state.extra.get("initial_heldout_loss")


def train_classifier(data: ClassificationData, target: SimilarityTarget | None, config: dict, seed: int, *,
                     progress: Callable[[str], None] | None = None, device=None,
                     checkpoint: Checkpoint | None = None) -> ClassifierResult:
    """Train a ResNet on `data` (+ the similarity loss towards `target`, unless None or alpha = 0);
    the trainer contract of compute/common/training.py.

    history entries: epoch (1-based), lr, task_loss and similarity_loss (means over the epoch's
    steps; similarity_loss None when unregularized), train_accuracy, test_accuracy,
    heldout_similarity_loss (None without held-out pairs), gamma (list, None when unregularized),
    seconds."""
    t_start = time.perf_counter()
    say = progress or (lambda message: None)
    cfg = check_config(config)
    data.validate()
    if target is not None:
        target.validate()
    dev = resolve_device(device)
    with torch_threads(dev):
        torch.manual_seed(int(seed))
        run = _setup(data, target, cfg, int(seed), dev, say)
        state = resume(checkpoint, run.identity, cfg["epochs"], say)
        if state is not None:
            run.restore(state)
        else:
            _start(run)
        say(f"{cfg['arch']} width {cfg['width']} on {data.summary()}; "
            + (f"target {target.label or 'similarity'}: {run.n_stim} training stimuli, {run.n_held} held out, "
               f"{run.pairs} pairs per step, alpha {cfg['alpha']:g}" if run.regularized else "no similarity loss")
            + f"; {run.n_steps} steps per epoch on {describe_device(dev)}")
        run.net.train()
        for epoch in range(run.start_epoch, cfg["epochs"]):
            run.history.append(_train_epoch(run, epoch))
            if checkpoint is not None and epoch + 1 < cfg["epochs"]:
                checkpoint.save(run.training_state(epoch + 1).to_bytes())
        return _result(run, t_start)


def _setup(data: ClassificationData, target: SimilarityTarget | None, cfg: dict, seed: int, dev: torch.device,
           say: Callable[[str], None]) -> _Run:
    """The network (initialised from torch's generator, seeded by the caller), the optimizer, the
    data on the device and the split of the target's stimuli."""
    regularized = target is not None and cfg["alpha"] > 0
    n_train = len(data.train_images) if not cfg["max_train"] else min(cfg["max_train"], len(data.train_images))
    if n_train < cfg["batch_size"]:
        raise ClassifierDataError(f"{data.name}: {n_train} training images, fewer than one batch of "
                                  f"{cfg['batch_size']}")
    train_u8 = torch.as_tensor(data.train_images[:n_train])
    pixel_mean = float(train_u8.float().mean() / 255.0)
    pixel_sd = float(train_u8.float().std() / 255.0) or 1.0
    net = ClassifierNet(cfg["arch"], data.n_classes, cfg["width"], pixel_mean, pixel_sd).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    layer_weights = similarity_loss.LayerWeights(cfg["layers"]).to(dev) if regularized else None
    optimizer = make_optimizer(net, layer_weights, cfg)
    step_data = StepData(train_x=train_u8.to(dev)[:, None].float().div_(255.0),
                         train_y=torch.as_tensor(data.train_labels[:n_train]).to(dev))
    test_x = torch.as_tensor(data.test_images).to(dev)[:, None].float().div_(255.0)
    test_y = torch.as_tensor(data.test_labels).to(dev)
    n_stim = n_held = 0
    held_x = held_target = None
    if regularized:
        tr, held = heldout_split(len(target.images), cfg["heldout_fraction"], cfg["heldout_max"])
        n_stim, n_held = len(tr), len(held)
        if n_stim < cfg["stim_batch"]:
            raise ClassifierDataError(f"{n_stim} training stimuli, fewer than stim_batch = {cfg['stim_batch']}")
        stim = torch.as_tensor(np.asarray(target.images, np.float32))[:, None]
        matrix = torch.as_tensor(np.asarray(target.matrix, np.float32))
        step_data.stim_x = stim[tr].to(dev)
        step_data.stim_target = matrix[tr][:, tr].to(dev)
        if n_held:
            held_x, held_target = stim[held].to(dev), matrix[held][:, held].to(dev)
    fingerprints = {"data": data_fingerprint(data), "target": target.fingerprint() if regularized else None}
    feature_mean = (similarity_loss.RunningFeatureMean(cfg["layers"], cfg["center_momentum"])
                    if regularized else None)
    return _Run(cfg=cfg, seed=seed, dev=dev, say=say, regularized=regularized, net=net,
                layer_weights=layer_weights, optimizer=optimizer, feature_mean=feature_mean, step_data=step_data,
                test_x=test_x, test_y=test_y, held_x=held_x, held_target=held_target, n_train=n_train,
                n_stim=n_stim, n_held=n_held, fingerprints=fingerprints)


def _start(run: _Run) -> None:
    """Before the first epoch of a run trained from scratch: Eq. 9's f_bar, exact over all training
    stimuli (seeded chunk order), and the held-out loss of the initial network."""
    if run.regularized:
        t_mean = time.perf_counter()
        run.feature_mean.reset(stimulus_feature_mean(run.net, run.step_data.stim_x, run.cfg["layers"], run.cfg,
                                                     _epoch_generator(run.seed, -1)))
        run.say(f"feature mean over {run.n_stim} training stimuli: {time.perf_counter() - t_mean:.1f} s")
    run.initial_held = run.held_loss()


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One epoch (0-based `epoch`): its learning rate, n_steps steps on batches, crops and stimuli
    drawn from the epoch's generator, then the evaluation. Returns the history record."""
    cfg, dev = run.cfg, run.dev
    t0 = time.perf_counter()
    lr = learning_rate(cfg, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    gen = _epoch_generator(run.seed, epoch)
    perm = torch.randperm(run.n_train, generator=gen)
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    for step in range(run.n_steps):
        idx = perm[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]].to(dev)
        crops = None
        if cfg["augment"]:
            b, span = len(idx), 2 * cfg["crop_padding"] + 1
            crops = (torch.randint(0, span, (b,), generator=gen), torch.randint(0, span, (b,), generator=gen),
                     torch.rand(b, generator=gen) < 0.5)
        stim_idx = None
        if run.regularized:
            stim_idx = torch.randperm(run.n_stim, generator=gen)[:cfg["stim_batch"]].to(dev)
        task, sim, correct = train_step(run.net, run.layer_weights, run.optimizer, run.step_data, idx, stim_idx,
                                        cfg, crops, run.feature_mean)
        if not bool(torch.isfinite(task)) or (run.regularized and not bool(torch.isfinite(sim))):
            raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                f"(task {float(task):.4g}, similarity {float(sim):.4g}); lr {lr:g}")
        sums += torch.stack([task.double(), (sim.double() if run.regularized else task.double() * 0),
                             correct.double()])
    return _evaluate_epoch(run, epoch, lr, sums.cpu().numpy(), t0)


def _evaluate_epoch(run: _Run, epoch: int, lr: float, sums: np.ndarray, t0: float) -> dict:
    """The history record of an epoch from its summed (task loss, similarity loss, correct) and the
    evaluation after it: test accuracy, held-out similarity loss, gamma; reported through `say`."""
    cfg, n_steps = run.cfg, run.n_steps
    record = {"epoch": epoch + 1, "lr": lr, "task_loss": float(sums[0] / n_steps),
              "similarity_loss": float(sums[1] / n_steps) if run.regularized else None,
              "train_accuracy": float(sums[2] / (n_steps * cfg["batch_size"])),
              "test_accuracy": accuracy(run.net, run.test_x, run.test_y, cfg["eval_batch_size"]),
              "heldout_similarity_loss": run.held_loss(),
              "gamma": run.layer_weights.gamma().detach().cpu().tolist() if run.layer_weights is not None else None}
    if run.dev.type == "cuda":
        torch.cuda.synchronize(run.dev)
    record["seconds"] = time.perf_counter() - t0
    run.say(f"epoch {epoch + 1}/{cfg['epochs']}: lr {lr:.3g}, task {record['task_loss']:.3f}"
            + (f", similarity {record['similarity_loss']:.3f}" if run.regularized else "")
            + f", train acc {record['train_accuracy']:.3f}, test acc {record['test_accuracy']:.3f}"
            + (f", held-out similarity {record['heldout_similarity_loss']:.3f}"
               if record["heldout_similarity_loss"] is not None else "") + f" ({record['seconds']:.1f} s)")
    return record


def _result(run: _Run, t_start: float) -> ClassifierResult:
    """The trained network in eval mode, its final test accuracy and the run's counts; `seconds`
    counts from `t_start` to the end of the final evaluation."""
    run.net.eval()
    last = run.history[-1]
    lw = run.layer_weights
    return ClassifierResult(
        state=serialize_classifier(run.net, lw, run.feature_mean), history=run.history,
        test_accuracy=accuracy(run.net, run.test_x, run.test_y, run.cfg["eval_batch_size"]),
        train_accuracy=last["train_accuracy"], gamma=lw.gamma().detach().cpu().numpy() if lw is not None else None,
        layers=list(run.cfg["layers"]), initial_heldout_loss=run.initial_held,
        heldout_loss=last["heldout_similarity_loss"], n_parameters=sum(p.numel() for p in run.net.parameters()),
        n_stimuli_train=run.n_stim, n_stimuli_heldout=run.n_held, pairs_per_step=run.pairs,
        resumed_from_epoch=run.start_epoch, device=describe_device(run.dev),
        seconds=time.perf_counter() - t_start,
        meta={"n_train": run.n_train, "steps_per_epoch": run.n_steps, "fingerprints": run.fingerprints})
