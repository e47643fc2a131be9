"""Why a known-answer control does (or does not) transfer noise robustness: evidence from the
trained classifiers of a `neuralreg plan controls` study, without looking at the test images.

For every trained classifier of the schema (all seeds) it measures, on the target's HELD-OUT
stimuli (never trained on) and on classification TRAINING images:

  r(S_k, T)    per similarity layer k, Pearson r between the upper triangles of the layer's Eq. 9
               similarity of the held-out stimuli (centred over them) and the held-out block of each
               target T (lowpass, highpass, the neural model's), with BatchNorm as at test time
               ('eval': running statistics) and as in the training's stimulus pass ('batch':
               statistics of stim_batch images): did the network match its target, and where?
  gamma_k      the final layer weights (Eq. 10): which layer carries the match
  noise_k      per layer, mean_i ||f_k(x_i + z_i) - f_k(x_i)|| / mean_i ||f_k(x_i) - mean f_k||, white
               noise of s.d. `--noise` on [0, 1] images (clipped), eval mode: how far noise moves the
               layer's representation, on the stimuli and on training images (lowpass should lower it)
  flip         fraction of training images whose predicted class changes under that noise
  bias_<mode>  per layer, the residual centring bias of the stimulus pass: the training stimuli pass
               in batches of stim_batch (the last one filled up, as training does) with BatchNorm as
               `mode` ('batch': each batch's own statistics; 'eval': the running ones), their features
               are centred by the EXACT mean over all of them (Eq. 9's f_bar at its best), and the
               mean off-diagonal cosine similarity within each batch is averaged over the batches.
               Zero when the pass adds nothing; about -1 / (stim_batch - 1) under batch centring
  config       the recipe's name and its stimulus_bn (`neuralreg plan bn-modes` trains both modes)
  val_acc      for a recipe trained on the first max_train training images only (bn-modes holds out
               the last 20 %): accuracy on the held-out training images, clean and under the noise
               (`val_acc_noisy`); the validation split that choices are made on, never the test images

Usage (the study's prefix, after populate):
    python benchmarks/controls_diagnosis.py --prefix neuralreg_controls --out diagnosis.csv
    python benchmarks/controls_diagnosis.py --prefix neuralreg_spikes --configs demo-val240 demo-val240-bneval
Prints one line per data set, regularizer and layer (mean over seeds) and writes every value.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralreg_schema import pipeline  # noqa: E402
from neuralreg_schema.compute.common import modes   # noqa: E402
from neuralreg_schema.compute.similarity import rsa
from neuralreg_schema.compute.classifier import network as clf_network, similarity_loss, train as train_classifier


def _features(net, x, layers, mode: str, chunk: int):
    """{k: (n, D_k) float64 numpy} of images x (n, 1, H, W), BatchNorm 'eval' or 'batch' (chunks)."""
    ctx = modes.batchnorm_eval if mode == "eval" else modes.batchnorm_batch_stats
    out = {k: [] for k in layers}
    net.train()
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            part = x[s:s + chunk]
            if mode == "batch" and len(part) < chunk:          # fill the last BatchNorm batch as training does
                part = torch.cat([part, x[:chunk - len(part)]])
            with ctx(net):
                _, f = net(part.clone(memory_format=torch.contiguous_format), layers)
            n_own = min(chunk, len(x) - s)
            for k in layers:
                out[k].append(f[k][:n_own].reshape(n_own, -1).double().numpy())
    net.eval()
    return {k: np.concatenate(v) for k, v in out.items()}


def _logits(net, x):
    with torch.no_grad():
        return net(x.clone(memory_format=torch.contiguous_format))[0].numpy()


def _sensitivity(clean: np.ndarray, noisy: np.ndarray) -> float:
    spread = np.linalg.norm(clean - clean.mean(axis=0), axis=1).mean()
    return float(np.linalg.norm(noisy - clean, axis=1).mean() / max(spread, 1e-12))


def _similarity(f: np.ndarray) -> np.ndarray:
    return similarity_loss.feature_similarity(torch.from_numpy(f), "batch").numpy()


def centring_bias(net, stim: torch.Tensor, layers, mode: str, batch: int) -> dict:
    """{k: mean off-diagonal similarity within stimulus batches, features centred by the exact mean}."""
    f = _features(net, stim, layers, mode, batch)
    out = {}
    for k in layers:
        x = f[k] - f[k].mean(axis=0)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        values = []
        for s in range(0, len(x) - batch + 1, batch):
            g = x[s:s + batch] @ x[s:s + batch].T
            values.append((g.sum() - np.trace(g)) / (batch * (batch - 1)))
        out[k] = float(np.mean(values))
    return out


def diagnose(prefix: str, noise_sd: float, n_train: int, configs: list | None = None) -> pd.DataFrame:
    mods = pipeline.activate(prefix)
    clf, sim = mods["classifier"], mods["similarity"]
    runs = (clf.RegularizedClassifier * clf.Regularizer.proj("kind", "label", "scan_group")
            * clf.ClassifierConfig.proj("config", "config_name")).to_dicts()
    if configs:
        runs = [r for r in runs if r["config_name"] in configs]
    targets = {}
    for reg in (clf.Regularizer & "kind in ('lowpass', 'highpass', 'neural-model')").to_dicts():
        t = clf.load_target(reg)
        targets[reg["label"]] = t
    ref = next(iter(targets.values()))
    for t in targets.values():
        assert np.array_equal(t.image_ids, ref.image_ids), "targets cover different stimuli"
    rows = []
    data_cache = {}
    for run in runs:
        cfg = run["config"]
        layers = list(cfg["layers"])
        _, held = train_classifier.heldout_split(len(ref.images), cfg["heldout_fraction"], cfg["heldout_max"])
        stim = torch.from_numpy(ref.images[held])[:, None].float()
        if run["dataset"] not in data_cache:
            data = clf.ClassificationDataset.load({"dataset": run["dataset"]})
            data_cache[run["dataset"]] = data
        data = data_cache[run["dataset"]]
        train_x = torch.from_numpy(data.train_images[:n_train]).float().div(255)[:, None]
        net = clf_network.load_classifier(run["weights"])
        gamma = {}
        if run["kind"] != "none":
            lw = (clf.RegularizedClassifier.LayerWeight & run).to_dicts()
            gamma = {int(r["layer"]): float(r["gamma"]) for r in lw}
        gen = np.random.default_rng(0)
        z_stim = torch.from_numpy(gen.standard_normal(stim.shape).astype(np.float32))
        z_train = torch.from_numpy(gen.standard_normal(train_x.shape).astype(np.float32))
        noisy_stim = (stim + noise_sd * z_stim).clamp(0, 1)
        noisy_train = (train_x + noise_sd * z_train).clamp(0, 1)
        base = {"dataset": run["dataset"], "config": f"{run['config_name']} ({cfg.get('stimulus_bn', 'batch')})",
                "regularizer": run["label"], "kind": run["kind"], "seed": run["seed"],
                "test_accuracy": run["test_accuracy"], "heldout_loss": run["heldout_loss"]}
        trained, _ = train_classifier.heldout_split(len(ref.images), cfg["heldout_fraction"], cfg["heldout_max"])
        stim_train = torch.from_numpy(ref.images[trained[:20 * cfg["stim_batch"]]])[:, None].float()
        bias = {mode: centring_bias(net, stim_train, layers, mode, cfg["stim_batch"]) for mode in ("batch", "eval")}
        f_eval = _features(net, stim, layers, "eval", cfg["eval_batch_size"])
        f_batch = _features(net, stim, layers, "batch", cfg["stim_batch"])
        f_noisy = _features(net, noisy_stim, layers, "eval", cfg["eval_batch_size"])
        t_eval = _features(net, train_x, layers, "eval", cfg["eval_batch_size"])
        t_noisy = _features(net, noisy_train, layers, "eval", cfg["eval_batch_size"])
        flip = float(np.mean(_logits(net, train_x).argmax(1) != _logits(net, noisy_train).argmax(1)))
        held_out = cfg["max_train"] and cfg["max_train"] < len(data.train_images)
        if held_out:
            val_x = torch.from_numpy(data.train_images[cfg["max_train"]:]).float().div(255)[:, None]
            val_y = data.train_labels[cfg["max_train"]:]
            z_val = torch.from_numpy(np.random.default_rng(1).standard_normal(val_x.shape).astype(np.float32))
            base["val_images"] = len(val_y)
            base["val_acc"] = float(np.mean(_logits(net, val_x).argmax(1) == val_y))
            base["val_acc_noisy"] = float(np.mean(_logits(net, (val_x + noise_sd * z_val).clamp(0, 1)).argmax(1) == val_y))
        for k in layers:
            row = {**base, "layer": k, "gamma": gamma.get(k, np.nan), "flip_train": flip,
                   "bias_batch": bias["batch"][k], "bias_eval": bias["eval"][k],
                   "noise_stimuli": _sensitivity(f_eval[k], f_noisy[k]),
                   "noise_train": _sensitivity(t_eval[k], t_noisy[k])}
            s_eval, s_batch = _similarity(f_eval[k]), _similarity(f_batch[k])
            for label, t in targets.items():
                block = t.matrix[np.ix_(held, held)]
                name = label.lower().replace("neural (model", "model").replace(", ", "-").strip(" ()")
                row[f"r_{name}_eval"] = rsa.matrix_correlation(s_eval, block)
                row[f"r_{name}_batch"] = rsa.matrix_correlation(s_batch, block)
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--noise", type=float, default=0.2, help="noise s.d. on [0, 1] images (default 0.2)")
    parser.add_argument("--train-images", type=int, default=500, help="classification training images used")
    parser.add_argument("--out", help="CSV of every value")
    parser.add_argument("--configs", nargs="+", help="only the classifiers of these recipe names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    df = diagnose(args.prefix, args.noise, args.train_images, args.configs)
    if args.out:
        df.to_csv(args.out, index=False)
    cols = [c for c in df.columns if c.startswith(("r_", "noise_", "gamma", "flip", "bias_", "val_acc", "heldout"))]
    summary = df.groupby(["dataset", "config", "regularizer", "layer"], sort=True)[cols].mean()
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 3):
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
