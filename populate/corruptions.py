"""`neuralreg corruptions`: import a common-corruptions set into a study (neuralreg_schema/corruptions.py).

    neuralreg corruptions import FOLDER [--dataset cifar10] [--name cifar10-c] [--corruptions NAME ...]
        the published grayscale-able CIFAR-10-C (Hendrycks & Dietterich 2019): a folder with
        labels.npy and one <corruption>.npy per corruption (default: all 19 are required)
    neuralreg corruptions local --dataset offline-photos [--name ...] [--seed 0]
        a LOCAL set for a data set with no published one (the offline stand-ins): nine of the
        published corruption functions with their CIFAR severities applied to its test images
        (compute/evaluation/corruption_functions.py), written in the published layout into a
        temporary folder and imported from it like the published files. It is not CIFAR-10-C.

Then `neuralreg populate` (or `python -m populate.worker --tables CorruptionAccuracy`) scores every
classifier of the data set on it; `neuralreg report` draws it.
"""
from __future__ import annotations

import os
import tempfile

from neuralreg_schema import pipeline, settings


def _say(message: str) -> None:
    print(message, flush=True)


def _prefix(args) -> str:
    return getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX") or settings.DEFAULT_PREFIX


def _require_study(prefix: str, dataset: str) -> None:
    """A corruption set belongs to a data set of a planned study: on a prefix without one, refuse before
    any schema is created."""
    pipeline.require_schemas(prefix, f"no data set {dataset!r} to add a corruption set to",
                             f"plan a study on it first (`neuralreg --prefix {prefix} plan ... --dataset {dataset}`)")


def import_published(prefix: str, folder, dataset: str = "cifar10", name: str = "cifar10-c",
                     corruptions=None) -> dict:
    from neuralreg_schema.compute.evaluation import corruptions as C
    C.validate_folder(folder, corruptions, n_classes=10 if dataset == "cifar10" else 100)   # before any schema
    _require_study(prefix, dataset)
    pipeline.activate(prefix)
    from neuralreg_schema import corruptions as tables
    key = tables.CorruptionSet.import_folder(folder, dataset, name, corruptions=corruptions, is_published=True,
                                             source=f"published CIFAR-10-C layout from {folder}", progress=_say)
    _say(f"corruption set {name!r} of {dataset!r}: {len(tables.CorruptionSet.Corruption & key)} corruptions")
    return key


def import_local(prefix: str, dataset: str, name: str | None = None, seed: int = 0) -> dict:
    from neuralreg_schema.compute.evaluation import corruption_functions as F
    _require_study(prefix, dataset)
    modules = pipeline.activate(prefix)
    from neuralreg_schema import corruptions as tables
    clf = modules["classifier"]
    if not (clf.ClassificationDataset & {"dataset": dataset}):
        raise LookupError(f"data set {dataset!r} is not registered in prefix {prefix!r} (plan a study on it first)")
    data = clf.ClassificationDataset.load({"dataset": dataset})
    name = name or f"{dataset}-local-c"
    _say(f"building the local corruption set {name!r} ({', '.join(F.LOCAL)}; 5 severities) of "
         f"{len(data.test_images)} test images of {dataset!r}: NOT CIFAR-10-C")
    with tempfile.TemporaryDirectory(prefix="neuralreg-local-c-") as folder:
        F.write_local_set(data.test_images, data.test_labels, folder, seed=seed)
        key = tables.CorruptionSet.import_folder(
            folder, dataset, name, corruptions=F.LOCAL, is_published=False, data=data, progress=_say,
            source=(f"LOCAL corruption set (not CIFAR-10-C): {len(F.LOCAL)} of Hendrycks & Dietterich's corruption "
                    f"functions with their CIFAR severities (compute/evaluation/corruption_functions.py, seed {seed}) "
                    f"on the test images of {dataset}"))
    _say(f"corruption set {name!r} of {dataset!r} imported")
    return key


def cmd_corruptions(args) -> int:
    if args.action == "import":
        if not args.folder:
            raise ValueError("corruptions import: name the folder (FOLDER)")
        import_published(_prefix(args), args.folder, args.dataset or "cifar10", args.name or "cifar10-c",
                         args.corruptions)
    else:
        if not args.dataset:
            raise ValueError("corruptions local: name the data set (--dataset offline-photos or offline)")
        import_local(_prefix(args), args.dataset, args.name, args.seed)
    return 0


def register(command) -> None:
    """Add `corruptions` to the CLI through cli.build_parser's command(name, func, **kwargs)."""
    p = command("corruptions", cmd_corruptions, help="import a common-corruptions set (CIFAR-10-C, or a local one)",
                description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["import", "local"])
    p.add_argument("folder", nargs="?", help="import: the folder with labels.npy and <corruption>.npy files")
    p.add_argument("--dataset", help="registered data set the images belong to (import: default cifar10)")
    p.add_argument("--name", help="name of the corruption set (default: cifar10-c; local: <dataset>-local-c)")
    p.add_argument("--corruptions", nargs="+", metavar="NAME",
                   help="import: only these corruptions (default: all 19 published ones are required)")
    p.add_argument("--seed", type=int, default=0, help="local: seed of the random corruptions")
