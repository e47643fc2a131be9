"""`neuralreg export --key NAME=VALUE ... --out model.pt` and `export(key, out)`: one trained classifier
of RegularizedClassifier as a torch.export file that loads with torch alone (compute/classifier/export.py;
docs/robustness.md shows AutoAttack and RobustBench run on it).

The archive carries, in its extra file `neuralreg.json`: the classifier's key, its recipe
(ClassifierConfig), its regularizer, its data set's name and md5, the test accuracy, the code version
that exported it and the one that trained it, and the input layout.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import settings

_WHOLE = re.compile(r"[+-]?\d+")


def _typed_key(table, texts: dict) -> dict:
    """NAME=VALUE texts parsed by the types of the table's primary key (whole numbers for integer
    attributes, text otherwise); ValueError naming an unknown attribute or a value that does not parse."""
    heading = table.heading
    key = {}
    for name, text in texts.items():
        if name not in heading.primary_key:
            raise ValueError(f"--key {name}: not an attribute of the classifier key; known: "
                             f"{', '.join(heading.primary_key)}")
        sql_type = str(heading.attributes[name].type).lower()
        if "int" in sql_type:
            if not _WHOLE.fullmatch(text):
                raise ValueError(f"--key {name}={text!r}: not a whole number ({name} is {sql_type})")
            key[name] = int(text)
        else:
            key[name] = text
    return key


def export(key: dict, out, *, input: str = "rgb", modules: dict | None = None) -> Path:
    """Write the classifier of RegularizedClassifier that `key` selects (exactly one row) to `out`;
    returns the path. `modules`: the activated schema modules (default: the active prefix's)."""
    from . import pipeline
    from .compute.classifier.export import INPUTS, export_classifier
    if input not in INPUTS:
        raise ValueError(f"--input {input!r}: choose one of {', '.join(INPUTS)}")
    if modules is None:
        modules = pipeline.open_existing(pipeline.active_prefix() or settings.DEFAULT_PREFIX)
    clf = modules["classifier"]
    rel = clf.RegularizedClassifier & key
    n = len(rel)
    if n != 1:
        raise ValueError(f"--key selects {n} classifiers; give enough of {', '.join(clf.RegularizedClassifier.primary_key)} "
                         "to select one (`neuralreg status` / RegularizedClassifier.keys() list them)")
    full = rel.keys()[0]
    row = (rel.proj("test_accuracy", "code_version") * clf.ClassifierConfig.proj("config_name", "config", "alpha")
           * clf.Regularizer.proj("kind", "label", "scan_group")).fetch1()
    data = (clf.ClassificationDataset & full).fetch1()
    net = clf.RegularizedClassifier().network(full)
    size = (int(data["image_height"]), int(data["image_width"]))
    meta = {"key": {k: (int(v) if k == "seed" else v) for k, v in full.items()},
            "config_name": row["config_name"], "config": row["config"], "alpha": float(row["alpha"]),
            "regularizer": {"kind": row["kind"], "label": row["label"], "scan_group": row["scan_group"]},
            "dataset": {"name": data["dataset"], "content_md5": data["content_md5"]},
            "test_accuracy": float(row["test_accuracy"]), "trained_by": row["code_version"],
            "code_version": settings.code_version(), "schema": clf.RegularizedClassifier.full_table_name}
    return export_classifier(net, out, input=input, size=size, metadata=meta)


def cmd_export(args) -> int:
    from . import pipeline
    prefix = getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX") or settings.DEFAULT_PREFIX
    modules = pipeline.open_existing(prefix)
    texts = {}
    for item in args.key:
        name, sep, value = item.partition("=")
        if not sep or not name or name in texts:
            raise ValueError(f"--key {item!r}: write NAME=VALUE, each name once")
        texts[name] = value
    key = _typed_key(modules["classifier"].RegularizedClassifier, texts)
    path = export(key, args.out, input=args.input, modules=modules)
    print(f"wrote {path} ({args.input} input; load it with torch alone: torch.export.load(path).module())")
    return 0


def add_command(command) -> None:
    """Register `neuralreg export` with the CLI's subcommand factory."""
    p = command("export", cmd_export, help="write one trained classifier as a torch.export file (loads without neuralreg)")
    p.add_argument("--key", nargs="+", required=True, metavar="NAME=VALUE",
                   help="the classifier: dataset=..., clf_hash=..., reg_hash=..., seed=... (enough to select one)")
    p.add_argument("--out", required=True, help="the file to write, e.g. model.pt")
    p.add_argument("--input", choices=["rgb", "gray"], default="rgb",
                   help="rgb: (B, 3, 32, 32) converted to luma inside (default); gray: (B, 1, 32, 32)")


__all__ = ["add_command", "cmd_export", "export"]
