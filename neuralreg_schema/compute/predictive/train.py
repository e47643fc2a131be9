"""Training and evaluation of the neural predictive model (Li et al. 2019, section 2.2) for one
scan. Pure numpy/PyTorch: arrays and a config in, arrays and numbers out; never imports datajoint.

The contract follows nnfabrik's `trainer(model, dataloaders, seed)` and neuralpredictors'
`standard_trainer`:

- Data: `PredictiveData` (data.py: images once, trials pointing at them, validated).
  Everything lives as tensors on the device; batches are drawn by a seeded index permutation of
  the 'train' trials (no DataLoader). 'validation' trials drive early stopping; 'oracle' trials
  (repeated test images) are never trained on and give the test scores; 'withheld' trials are
  ignored.
- Loss per step: the Poisson loss summed over neurons and averaged over the batch's trials (the
  per-trial population negative log-likelihood), + `PredictiveNetwork.regularizer()`.
  neuralpredictors sums over the batch and scales by sqrt(n_train / batch_size); averaging
  instead makes our gamma_* = neuralpredictors' gamma_* / sqrt(n_train * batch_size). With
  `normalize_responses` the targets are responses / per-neuron sd (neuralpredictors'
  NeuroNormalizer does the same), and the network's `response_scale` buffer maps its rates back
  to the original units.
- Initialisation: the network's standardisation buffers from the train tier (image mean/sd,
  behavior and eye mean/sd per column, response sd), the readout bias so that the initial rate is
  each neuron's mean training response (as neuralpredictors' `initialize_bias`), and - a
  deviation from neuralpredictors, which starts positions at random - the readout positions at
  the peak of the correlation between the neuron's training responses and a local band-pass
  energy map of the images (readout_init.py; `init_positions='random'` restores the reference
  behaviour).
- Optimiser: Adam. Early stopping as neuralpredictors' `early_stopping`: the objective is the
  mean per-neuron Pearson r on the validation trials, evaluated after every epoch (interval 1);
  `patience` epochs without an improvement > `tolerance` restore the best state and multiply
  the learning rate by `lr_decay_factor`; after `lr_decay_steps` such rounds (or `max_epochs`, or
  a learning rate below `min_lr`) training stops and the best state is restored.
- A non-finite training loss or validation prediction raises `TrainingError`: no result is
  returned for a diverged run.
- Resume (the trainer contract of compute/common/training.py): with a `checkpoint`, the trainer saves a
  `training.TrainingState` after every epoch that training continues from (network, Adam state,
  history, the numpy and torch generator states; in `extra` the best state so far and the
  early-stopping counters) and at start continues after the epoch of a saved state of the same
  config, seed and data (`PredictiveData.fingerprint`). On the CPU a resumed run ends identical to
  an uninterrupted one.
- Deterministic on the CPU for a given seed (torch and numpy generators seeded, global RNG state
  restored afterwards). On a GPU, cuDNN and `grid_sample`'s backward are not bit-deterministic.
- Threads: on the CPU, torch's intra-op threads are capped at the cores this process may use
  (its CPU affinity; torch's default can exceed it in containers), restored afterwards.
- Steps, as classifier/train.py's: `_setup` (network, buffers, readout start, optimizer, data on
  the device, in a `_Run`), `_start` or `_Run.restore` (from a checkpoint), per epoch
  `_train_epoch`, `_evaluate_epoch` and at a plateau `_plateau`, and `_result` (the scores).

Scores (`PredictiveResult`): `val_corr`, `test_corr` (v_a of the paper: r between the model's
predictions and single-trial responses on the oracle trials, each trial with its own behavior and
eye position) and `oracle_corr` (r between the trial-averaged prediction and the repeat-averaged
response per oracle image), and `predictions`: the responses to every image under the average
behavior and eye position, the denoised responses Eq. 6 of the paper is computed from.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..common.errors import TrainingError
from .network import IMAGE_SHAPE, PredictiveNetwork, poisson_loss
from ..common.modes import eval_mode
from .data import PredictiveData, PredictiveDataError
from .readout_init import energy_positions, start_positions
from ..common.runtime import describe_device, resolve_device, torch_threads
from ..common.serialization import PREDICTIVE_NETWORK_FORMAT, torch_bytes, torch_payload
from ..common.training import Checkpoint, TrainingState, named_config, resume, with_defaults


# ---------------------------------------------------------------------------------------------
# configs

# Every key, with its default (= the "demo" value). Sizes are in pixels of the 36 x 64 image after
# `downsample` unless said otherwise.
_COMMON: dict = dict(
    # --- architecture (network.py) ---
    hidden_channels=16,      # channels per core layer; the readout sees layers * hidden_channels
    input_kern=7,            # first conv layer's kernel size
    hidden_kern=5,           # kernel size of the later conv layers ('same' padding)
    layers=3,                # conv layers in the core
    skip=2,                  # layer l >= 1 reads the concatenated outputs of the last min(skip, l)
    #                          layers (Stacked2dCore's skip; <= 1: only the previous layer)
    pad_input=True,          # 'same' padding on the first layer (False: the map shrinks by kern-1)
    depth_separable=False,   # hidden layers as 1x1 -> depthwise k x k -> 1x1 convolutions
    downsample=2,            # average-pool the standardised image by this factor before the core
    bn_momentum=0.1,         # BatchNorm running-statistics momentum
    init_positions="energy",  # readout start: 'energy' (peak of the correlation between responses
    #                          and local image energy, see readout_init.py) or 'random'
    init_mu_range=0.5,       # random readout positions start uniform in [-r, r]^2 (grid units)
    init_sigma=0.3,          # readout position sd at the start (grid units, per axis)
    align_corners=True,      # grid_sample convention (True: +-1 = centres of the corner pixels)
    shifter=True,            # eye position -> shift of all read positions
    shifter_hidden=5,        # shifter MLP width
    shifter_layers=2,        # shifter hidden layers (Linear + Tanh each)
    modulator=True,          # behavior -> per-neuron gain on the rate
    modulator_hidden=16,     # modulator MLP width
    modulator_layers=1,      # modulator hidden layers (Linear + ELU each)
    modulator_offset=False,  # the modulator also adds a per-neuron term to the drive
    amp_bf16=True,           # bf16 autocast of the core on CUDA (ignored on the CPU)
    # --- regularisation (added to the per-trial loss) ---
    gamma_input=1.0,         # weight of the normalised Laplace smoothness of layer-0 filters
    gamma_hidden=0.0,        # weight of the group sparsity of the hidden layers' kernels
    gamma_readout=1e-3,      # weight of the L1 norm of the readout feature weights (summed)
    # --- optimisation ---
    normalize_responses=True,  # train on responses / per-neuron sd (train tier)
    batch_size=32,           # trials per step
    lr=4e-3,                 # Adam initial learning rate
    lr_decay_factor=0.3,     # learning-rate factor at each plateau
    lr_decay_steps=3,        # plateaus (patience exhausted) before stopping
    min_lr=1e-5,             # stop once the learning rate falls below this
    patience=3,              # epochs without improvement that count as a plateau
    tolerance=1e-5,          # improvement of the mean validation r that counts
    max_epochs=25,           # hard limit on epochs
    eval_batch_size=512,     # trials per forward pass when evaluating
    loss_eps=1e-8,           # inside the log of the Poisson loss
)

CONFIGS: dict[str, dict] = {
    # tests: about a second on the 'tiny' simulation profile (40 neurons, 250 trials)
    "tiny": {**_COMMON, "hidden_channels": 8, "hidden_kern": 3, "batch_size": 16, "lr": 5e-3,
             "max_epochs": 20, "patience": 3, "lr_decay_steps": 2, "modulator_hidden": 8,
             "eval_batch_size": 256},
    # the demo profile (1000 neurons, 3400 trials): ~25 epochs, 60-90 s per scan on 2 CPU cores
    "demo": {**_COMMON},
    # neuralpredictors / Sinz et al. 2018-sized core at full resolution (64 channels per layer,
    # 9x9 then 7x7 kernels, 3 layers, no input padding), for thousands of neurons on a GPU
    "paper": {**_COMMON, "hidden_channels": 64, "input_kern": 9, "hidden_kern": 7, "layers": 3,
              "pad_input": False, "downsample": 1, "batch_size": 64, "lr": 5e-3, "max_epochs": 200,
              "patience": 5, "lr_decay_steps": 4, "min_lr": 1e-4, "modulator_hidden": 32,
              "eval_batch_size": 1024},
}


def default_config(name: str = "demo") -> dict:
    """A copy of a named config from CONFIGS."""
    return named_config(CONFIGS, name, "predictive")


def _check_config(config: dict) -> dict:
    """Complete `config` with the defaults of _COMMON and check types and ranges."""
    cfg = with_defaults(config, _COMMON, "predictive")
    positive_int = ("hidden_channels", "input_kern", "hidden_kern", "layers", "downsample",
                    "batch_size", "max_epochs", "patience", "lr_decay_steps", "eval_batch_size",
                    "shifter_hidden", "modulator_hidden")
    for k in positive_int:
        if int(cfg[k]) != cfg[k] or cfg[k] < 1:
            raise ValueError(f"config {k} must be a positive integer, got {cfg[k]!r}")
    for k in ("lr", "lr_decay_factor", "min_lr", "init_sigma", "init_mu_range"):
        if not cfg[k] > 0:
            raise ValueError(f"config {k} must be positive, got {cfg[k]!r}")
    for k in ("gamma_input", "gamma_hidden", "gamma_readout", "tolerance", "loss_eps"):
        if not cfg[k] >= 0:
            raise ValueError(f"config {k} must be >= 0, got {cfg[k]!r}")
    if cfg["init_positions"] not in ("energy", "random"):
        raise ValueError(f"config init_positions must be 'energy' or 'random', got "
                         f"{cfg['init_positions']!r}")
    return cfg


# ---------------------------------------------------------------------------------------------
# results and helpers


@dataclass
class PredictiveResult:
    """What `train_predictive` returns; see the module docstring for the scores."""

    state: bytes               # torch.save({"state_dict", "config", "n_neurons", "image_shape",
    #                            "format"}) of the best epoch, CPU tensors; see load_network
    history: list              # per epoch: dict(epoch, train_loss, val_corr (mean), lr, seconds)
    best_epoch: int            # epoch of the restored state (0: the initial state)
    val_corr: np.ndarray       # (n_neurons,) Pearson r on the validation trials
    test_corr: np.ndarray      # (n_neurons,) v_a: r with single-trial responses, oracle trials
    oracle_corr: np.ndarray    # (n_neurons,) r per oracle image, predictions and responses averaged
    #                            over its repeats
    predictions: np.ndarray    # float32 (n_images, n_neurons): every image of `data.images` under
    #                            the mean behavior and mean eye position (eval mode, shifter on)
    n_parameters: int          # trainable parameters
    device: str                # e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'
    seconds: float             # wall time of train_predictive, evaluation included
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint (0: trained in one run)

    @property
    def score(self) -> float:
        """The headline number of the trainer contract (training.TrainerResult): the mean over
        neurons of v_a, the held-out single-trial correlation on the oracle trials."""
        return float(np.mean(self.test_corr))


def correlation(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-column Pearson r between two (n, k) arrays (or two (n,) vectors -> a float), computed
    in float64. A column that is constant in either array (its sd below 1e-10 of its largest
    magnitude) has no defined correlation and gets 0: a constant prediction predicts nothing."""
    x = np.asarray(pred, np.float64)
    y = np.asarray(target, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"correlation of arrays with shapes {x.shape} and {y.shape}")
    vector = x.ndim == 1
    if vector:
        x, y = x[:, None], y[:, None]
    n = len(x)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    sxx, syy = (xc * xc).sum(axis=0), (yc * yc).sum(axis=0)
    ok = ((sxx > 0) & (syy > 0)
          & (sxx > n * (1e-10 * np.abs(x).max(axis=0, initial=0.0)) ** 2)
          & (syy > n * (1e-10 * np.abs(y).max(axis=0, initial=0.0)) ** 2))
    r = np.zeros(x.shape[1])
    r[ok] = (xc * yc).sum(axis=0)[ok] / np.sqrt(sxx[ok] * syy[ok])
    r = np.clip(r, -1.0, 1.0)
    return float(r[0]) if vector else r


def serialize_network(network: PredictiveNetwork) -> bytes:
    """torch.save bytes of {"state_dict" (CPU tensors), "config", "n_neurons", "image_shape",
    "format"}; `load_network` rebuilds the network from them."""
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return torch_bytes({"state_dict": state, "config": dict(network.config), "n_neurons": network.n_neurons,
                        "image_shape": list(network.image_shape), "format": PREDICTIVE_NETWORK_FORMAT})


def load_network(state: bytes, device: Union[str, torch.device] = "cpu") -> PredictiveNetwork:
    """Rebuild a trained network from `PredictiveResult.state`, in eval mode on `device`."""
    blob = torch_payload(state)
    network = PredictiveNetwork(blob["config"], blob["n_neurons"],
                                tuple(blob.get("image_shape", IMAGE_SHAPE)))
    network.load_state_dict(blob["state_dict"])
    return network.to(device).eval()


def _as_tensor(a: Union[np.ndarray, torch.Tensor], device: torch.device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)


@torch.no_grad()
def predict(network: PredictiveNetwork, images: np.ndarray, behavior: np.ndarray, eye: np.ndarray,
            batch_size: int = 512) -> np.ndarray:
    """The network's rates (float32 (n, n_neurons), response units) for raw images (n, 36, 64),
    behavior (n, 3) and eye positions (n, 2), in eval mode (read positions at mu, no sampling) on
    the network's device. The network's train/eval mode is restored afterwards."""
    n = len(images)
    if np.shape(behavior) != (n, 3) or np.shape(eye) != (n, 2):
        raise ValueError(f"predict: {n} images need behavior (n, 3) and eye (n, 2), got "
                         f"{np.shape(behavior)} and {np.shape(eye)}")
    device = next(network.parameters()).device
    out = np.empty((n, network.n_neurons), np.float32)
    with eval_mode(network):
        for i in range(0, n, batch_size):
            sl = slice(i, min(i + batch_size, n))
            out[sl] = network(_as_tensor(images[sl], device), _as_tensor(behavior[sl], device),
                              _as_tensor(eye[sl], device), sample=False).cpu().numpy()
    return out


class _DeviceData:
    """The scan's arrays as float32 tensors on the device, with trial-indexed batch access."""

    def __init__(self, data: PredictiveData, device: torch.device):
        self.images = _as_tensor(data.images, device).unsqueeze(1)     # (n_images, 1, 36, 64)
        self.trial_image = torch.as_tensor(np.asarray(data.trial_image, np.int64), device=device)
        self.responses = _as_tensor(data.responses, device)
        self.behavior = _as_tensor(data.behavior, device)
        self.eye = _as_tensor(data.eye, device)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.images[self.trial_image[idx]], self.behavior[idx], self.eye[idx],
                self.responses[idx])


@torch.no_grad()
def _predict_trials(network: PredictiveNetwork, dd: _DeviceData, trials: np.ndarray,
                    batch_size: int) -> torch.Tensor:
    """Eval-mode rates (len(trials), n_neurons) for trials of the scan, on the device."""
    network.eval()
    idx = torch.as_tensor(trials, device=dd.responses.device)
    outs = []
    for i in range(0, len(idx), batch_size):
        images, behavior, eye, _ = dd.batch(idx[i:i + batch_size])
        outs.append(network(images, behavior, eye, sample=False))
    return torch.cat(outs)


def _mean_per_image(values: np.ndarray, image_of_trial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average the rows of `values` (trials, k) over trials of the same image: (images, k)."""
    images, inverse = np.unique(image_of_trial, return_inverse=True)
    sums = np.zeros((len(images), values.shape[1]))
    np.add.at(sums, inverse, values)
    return images, sums / np.bincount(inverse)[:, None]


# ---------------------------------------------------------------------------------------------
# training


def train_step(network: PredictiveNetwork, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               behavior: torch.Tensor, eye: torch.Tensor, responses: torch.Tensor,
               eps: float = 1e-8) -> torch.Tensor:
    """One optimiser step on a batch (network in train mode): Poisson loss of rates and responses,
    both divided by the network's `response_scale`, summed over neurons and averaged over the
    batch, + the network's regulariser. Returns the detached loss (not synchronised)."""
    scale = network.response_scale
    pred = network(images, behavior, eye) / scale
    loss = poisson_loss(pred, responses / scale, eps=eps) + network.regularizer()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    network.constrain()
    return loss.detach()


def train_predictive(data: PredictiveData, config: dict, seed: int,
                     progress: Optional[Callable[[str], None]] = None,
                     device: Union[None, str, torch.device] = None, *,
                     checkpoint: Optional[Checkpoint] = None) -> PredictiveResult:
    """Train the predictive network on the 'train' trials of `data` with early stopping on the
    'validation' trials and score it on the 'oracle' trials; see the module docstring (the trainer
    contract of compute/common/training.py).

    config: a dict from `default_config` (missing keys take the defaults, unknown keys are
    refused). seed: torch and numpy seed. progress: called with one line per epoch. device: None
    -> CUDA when available, else the CPU. checkpoint: where the state after each epoch is saved
    and a run of the same config, seed and data resumes from (None: no checkpoints).

    Raises PredictiveDataError for unusable data, ValueError for a bad config, TrainingError when
    the loss or the predictions become non-finite."""
    started = time.perf_counter()
    data.validate()
    cfg = _check_config(config)
    dev = resolve_device(device)
    say = progress or (lambda line: None)
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
        if dev.type == "cuda" else []
    with torch_threads(dev), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(seed))
        run = _setup(data, cfg, int(seed), dev, say)
        state = resume(checkpoint, run.identity, cfg["max_epochs"], say)
        if state is not None:       # continue after state.epoch as if the run had not stopped
            run.restore(state)
        else:
            _start(run)
        for epoch in range(run.start_epoch + 1, cfg["max_epochs"] + 1):
            if _train_epoch(run, epoch):
                break
            if checkpoint is not None and epoch < cfg["max_epochs"]:
                checkpoint.save(run.training_state(epoch).to_bytes())
        result = _result(run)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Run:
    """One training run's state between the steps of `train_predictive`: the network, its optimizer
    and the numpy generator, the data on the device, and the early-stopping state (best state so
    far, learning rate, patience left, decays done) that a checkpoint saves."""
    data: PredictiveData
    cfg: dict
    rng: np.random.Generator
    dev: torch.device
    say: Callable[[str], None]
    identity: dict                   # config, seed and data fingerprint: what a checkpoint must match
    network: PredictiveNetwork
    optimizer: torch.optim.Optimizer
    dd: "_DeviceData"
    responses: np.ndarray            # float32 (n_trials, n_neurons)
    train: np.ndarray                # trial indices of the tiers
    val: np.ndarray
    oracle: np.ndarray
    lr: float
    history: list = field(default_factory=list)
    start_epoch: int = 0             # epochs restored from a checkpoint
    best_state: dict = field(default_factory=dict)
    best_corr: float = -math.inf
    best_epoch: int = 0
    patience_left: int = 0
    decays_done: int = 0

    def validation_corr(self) -> np.ndarray:
        pred = _predict_trials(self.network, self.dd, self.val, self.cfg["eval_batch_size"]).cpu().numpy()
        return correlation(pred, self.responses[self.val])

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def rng_states(self) -> dict:
        states = {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()}
        if self.dev.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.dev)
        return states

    def training_state(self, epoch: int) -> TrainingState:
        """The checkpoint after `epoch` finished epochs."""
        return TrainingState(
            epoch=epoch, identity=self.identity, model=self.network.state_dict(),
            optimizer=self.optimizer.state_dict(), history=self.history, rng=self.rng_states(),
            extra={"best_state": self.best_state, "best_corr": self.best_corr, "best_epoch": self.best_epoch,
                   "lr": self.lr, "patience_left": self.patience_left, "decays_done": self.decays_done})

    def restore(self, state: TrainingState) -> None:
        self.start_epoch = int(state.epoch)
        self.network.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.rng.bit_generator.state = state.rng["numpy"]
        torch.set_rng_state(state.rng["torch"])
        if self.dev.type == "cuda" and "cuda" in state.rng:
            torch.cuda.set_rng_state(state.rng["cuda"], self.dev)
        extra = state.extra
        self.best_state = {k: v.to(self.dev) for k, v in extra["best_state"].items()}
        self.best_corr, self.best_epoch = float(extra["best_corr"]), int(extra["best_epoch"])
        self.lr = float(extra["lr"])
        self.patience_left, self.decays_done = int(extra["patience_left"]), int(extra["decays_done"])
        self.history = list(state.history)


def _setup(data: PredictiveData, cfg: dict, seed: int, dev: torch.device, say: Callable[[str], None]) -> _Run:
    """The network (initialised from torch's generator, seeded by the caller) with its
    standardisation buffers, readout bias and positions from the train tier, the optimizer, the
    numpy generator and the data on the device."""
    train, val, oracle = data.tier("train"), data.tier("validation"), data.tier("oracle")
    rng = np.random.default_rng(seed)
    responses = np.asarray(data.responses, np.float32)
    behavior = np.asarray(data.behavior, np.float64)
    eye = np.asarray(data.eye, np.float64)
    train_images = np.asarray(data.images, np.float64)[np.unique(data.trial_image[train])]
    network = PredictiveNetwork(cfg, data.n_neurons)
    resp_sd = responses[train].std(axis=0).astype(np.float64)
    scale = np.where(resp_sd > 1e-6, resp_sd, 1.0) if cfg["normalize_responses"] else None
    network.set_statistics(train_images.mean(), train_images.std(),
                           behavior[train].mean(axis=0), behavior[train].std(axis=0),
                           eye[train].mean(axis=0), eye[train].std(axis=0), scale)
    network.init_bias(torch.as_tensor(responses[train].mean(axis=0)))
    network.to(dev)
    if dev.type == "cuda":
        network.core.to(memory_format=torch.channels_last)
    dd = _DeviceData(data, dev)
    if cfg["init_positions"] == "energy":
        train_t = torch.as_tensor(train, device=dev)
        start_positions(network, dd.images, dd.trial_image[train_t], dd.responses[train_t])
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg["lr"])
    identity = {"config": cfg, "seed": seed, "data": data.fingerprint()}
    return _Run(data=data, cfg=cfg, rng=rng, dev=dev, say=say, identity=identity, network=network,
                optimizer=optimizer, dd=dd, responses=responses, train=train, val=val, oracle=oracle,
                lr=float(cfg["lr"]))


def _start(run: _Run) -> None:
    """Before the first epoch of a run trained from scratch: the initial state is the best so far,
    scored on the validation trials."""
    run.best_state = run.snapshot()
    run.best_corr = float(run.validation_corr().mean())
    run.best_epoch = 0
    run.history = []
    run.patience_left, run.decays_done = run.cfg["patience"], 0


def _train_epoch(run: _Run, epoch: int) -> bool:
    """One epoch (1-based `epoch`): steps on batches of a permutation of the train trials drawn from
    the numpy generator, then `_evaluate_epoch`. Returns True when training stops."""
    cfg, dev, bs = run.cfg, run.dev, int(run.cfg["batch_size"])
    t0 = time.perf_counter()
    run.network.train()
    order = torch.as_tensor(run.rng.permutation(run.train), device=dev)
    total = torch.zeros((), device=dev)
    n_steps = 0
    for i in range(0, len(run.train), bs):
        idx = order[i:i + bs]
        if len(idx) < 2:          # BatchNorm cannot normalise a single trial
            continue
        total += train_step(run.network, run.optimizer, *run.dd.batch(idx), eps=cfg["loss_eps"])
        n_steps += 1
    train_loss = float(total) / max(n_steps, 1)
    if not math.isfinite(train_loss):
        raise TrainingError(f"epoch {epoch}: the training loss became non-finite "
                            f"({train_loss}); lower the learning rate (lr={run.lr:g}) or check "
                            "the responses' scale")
    return _evaluate_epoch(run, epoch, train_loss, t0)


def _evaluate_epoch(run: _Run, epoch: int, train_loss: float, t0: float) -> bool:
    """The validation r after an epoch: its history record (reported through `say`), the best state
    kept, and early stopping. Returns True when training stops."""
    cfg = run.cfg
    val_mean = float(run.validation_corr().mean())
    if not math.isfinite(val_mean):
        raise TrainingError(f"epoch {epoch}: validation predictions are non-finite")
    if run.dev.type == "cuda":
        torch.cuda.synchronize(run.dev)
    seconds = time.perf_counter() - t0
    run.history.append(dict(epoch=epoch, train_loss=train_loss, val_corr=val_mean, lr=run.lr,
                            seconds=seconds))
    if val_mean > run.best_corr + cfg["tolerance"]:
        run.best_corr, run.best_epoch, run.best_state = val_mean, epoch, run.snapshot()
        run.patience_left = cfg["patience"]
    else:
        run.patience_left -= 1
    run.say(f"epoch {epoch}/{cfg['max_epochs']} loss {train_loss:.4f} val r {val_mean:.4f} "
            f"(best {run.best_corr:.4f} @{run.best_epoch}) lr {run.lr:.2g} {seconds:.1f}s")
    return run.patience_left <= 0 and _plateau(run)


def _plateau(run: _Run) -> bool:
    """Patience exhausted: True when this was the last allowed decay (or the learning rate would
    fall below min_lr); otherwise restore the best state and decay the learning rate."""
    cfg = run.cfg
    run.decays_done += 1
    if run.decays_done >= cfg["lr_decay_steps"] or run.lr * cfg["lr_decay_factor"] < cfg["min_lr"]:
        return True
    run.network.load_state_dict(run.best_state)
    run.lr *= cfg["lr_decay_factor"]
    for group in run.optimizer.param_groups:
        group["lr"] = run.lr
    run.patience_left = cfg["patience"]
    return False


def _result(run: _Run) -> PredictiveResult:
    """The best state restored, in eval mode, and scored: validation, test (single trials) and
    oracle (trial-averaged) correlations, and the predictions for every image under the mean
    behavior and eye position. `seconds` is left to the caller."""
    data, cfg, network, responses, oracle = run.data, run.cfg, run.network, run.responses, run.oracle
    network.load_state_dict(run.best_state)
    network.eval()
    val_corr = run.validation_corr()
    test_pred = _predict_trials(network, run.dd, oracle, cfg["eval_batch_size"]).cpu().numpy()
    test_corr = correlation(test_pred, responses[oracle])
    _, mean_pred = _mean_per_image(test_pred, data.trial_image[oracle])
    _, mean_resp = _mean_per_image(responses[oracle], data.trial_image[oracle])
    oracle_corr = correlation(mean_pred, mean_resp)

    n_images = len(data.images)
    mean_beh = np.broadcast_to(np.asarray(data.behavior, np.float64).mean(axis=0), (n_images, 3))
    mean_eye = np.broadcast_to(np.asarray(data.eye, np.float64).mean(axis=0), (n_images, 2))
    predictions = predict(network, data.images, mean_beh, mean_eye, cfg["eval_batch_size"])
    if not np.all(np.isfinite(predictions)):
        raise TrainingError(f"epoch {run.best_epoch} (best state): predictions are non-finite")
    return PredictiveResult(state=serialize_network(network), history=run.history, best_epoch=run.best_epoch,
                            val_corr=val_corr, test_corr=test_corr, oracle_corr=oracle_corr,
                            predictions=predictions, n_parameters=network.n_parameters(),
                            device=describe_device(run.dev), seconds=0.0,
                            resumed_from_epoch=run.start_epoch)


__all__ = ["PredictiveData", "PredictiveDataError", "TrainingError", "PredictiveResult", "CONFIGS",
           "default_config", "train_predictive", "load_network", "predict", "correlation",
           "serialize_network", "train_step", "check_config", "energy_positions"]


def check_config(config: dict) -> dict:
    """`config` completed with the defaults and checked (ValueError naming a bad or unknown key)."""
    return _check_config(config)
