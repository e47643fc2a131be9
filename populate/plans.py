"""Study plans: the rows that define a study, inserted before workers populate the graph.

    STUDIES                 the named studies (`neuralreg plan STUDY`): predictive recipe, data set,
                            classifier recipe(s), seeds, regularizer kinds, noise levels, attack suite
    plan_similarity(...)    a predictive-model config and the paper's similarity configs for it
    plan_study(...)         every row of a study (idempotent); returns the ClassifierPlan keys
    DEMO_*                  what `neuralreg demo` plans per simulation profile, and its schema prefix

Plans only insert configuration rows (Lookup/Manual tables); the workers (populate/worker.py) compute
everything downstream of them.
"""
from __future__ import annotations

from neuralreg_schema import pipeline, settings


def _say(message: str) -> None:
    print(message, flush=True)


DEMO_PREFIX = "neuralreg_demo"
TUNED_POPULATIONS = ("low", "high")      # compute/experiment/simulate.TUNINGS other than mouse
# predictive-model recipe per simulation profile
DEMO_MODEL = {"tiny": "tiny", "demo": "demo", "full": "paper"}
# study planned by the demo per simulation profile (classifiers sized for two CPU cores)
DEMO_STUDY = {"tiny": "tiny", "demo": "demo", "full": "demo"}


def plan_similarity(prefix: str, model: str, vgg: bool | None = None, model_seed: int = 0) -> dict:
    """Insert the predictive-model config `model`, its seed `model_seed` and the paper's similarity
    configs for that model; returns its key {'model_hash', 'model_seed'}.
    vgg=None includes the VGG control only when its ImageNet weights are already on this machine.
    All or nothing: the recipe and the seed are checked before anything is written, and the rows are
    written in one transaction."""
    _check_model(model, model_seed)
    vgg = _vgg_wanted(vgg)
    modules = pipeline.activate(prefix)                     # DDL (if any) before the transaction
    with settings.transaction(modules["predictive"].schema.connection):
        return _insert_similarity(modules, model, vgg, model_seed)


def _check_model(model: str, model_seed: int) -> None:
    """Refuse an unknown or invalid predictive-model recipe and a negative seed (before any write)."""
    from neuralreg_schema.compute.predictive import train as train_predictive
    if not isinstance(model_seed, int) or model_seed < 0:
        raise ValueError(f"--model-seed {model_seed!r}: a predictive model's seed is an integer >= 0")
    train_predictive.check_config(train_predictive.default_config(model))      # unknown name: ValueError


def _vgg_wanted(vgg: bool | None) -> bool:
    from neuralreg_schema.compute.similarity import vgg as vgg_models
    if vgg is None:
        vgg = vgg_models.weights_available()
        if not vgg:
            _say("  VGG19 ImageNet weights are not on this machine: the 'vgg' control is left out "
                 f"(put them at {vgg_models.weights_location()} or name the file with NEURALREG_VGG19_WEIGHTS)")
    return bool(vgg)


def _insert_similarity(modules: dict, model: str, vgg: bool, model_seed: int) -> dict:
    predictive = modules["predictive"]
    key = predictive.model_key(predictive.PredictiveModelConfig.add(model), model_seed)
    labels = modules["similarity"].SimilarityConfig.add_standard(key, vgg=vgg)
    _say(f"  predictive model config {model!r} ({key['model_hash'][:8]}), seed {key['model_seed']}; "
         f"similarity: {', '.join(labels)}")
    return key


# study plans: predictive recipe, data set, classifier recipe(s) (+ "config": overrides of it, e.g. the
# arch), seeds, regularizer kinds
STUDIES = {
    "tiny": {"model": "tiny", "dataset": "offline", "classifier": "tiny", "seeds": 1, "attacks": "tiny", "noise": "wide",
             "kinds": ("none", "neural-model", "neural-data", "shuffle")},
    # the demo trains on the natural-image stand-in: noise degrades it within the CIFAR levels and the
    # known-answer controls separate on it (docs/controls.md); the digits: --dataset offline
    "demo": {"model": "demo", "dataset": "offline-photos", "classifier": "demo", "seeds": 2, "attacks": "demo",
             "noise": "wide", "kinds": ("none", "neural-model", "neural-data", "shuffle")},
    # known-answer controls at demo size: does similarity matching transfer a property at all? Lowpass
    # (blurred pixels: noise-robust) and Highpass (fine detail) targets next to None, Neural (model) and
    # Shuffle; both noise level sets for any data set; the report writes controls.csv
    "controls": {"model": "demo", "dataset": "offline", "classifier": "demo", "seeds": 5, "attacks": None,
                 "noise_sets": ("default", "wide"), "kinds": ("none", "neural-model", "shuffle", "lowpass", "highpass")},
    # known answers from spikes (docs/controls.md): the whole chain, spikes -> Eq. 1 -> predictive model ->
    # S_model -> classifier, from simulated populations whose similarity is known before training (the
    # `low` and `high` tunings of `neuralreg ingest simulated --tuning`, groups <group>-low / -high),
    # next to the mouse population (Neural (model), Shuffle) and the pixel targets; the demo attack suite
    "neuron-controls": {"model": "demo", "dataset": "offline-photos", "classifier": "demo", "seeds": 5,
                        "attacks": "demo", "noise_sets": ("default", "wide"),
                        "kinds": ("none", "neural-model", "shuffle", "lowpass", "highpass"),
                        "populations": {"low": ("neural-model",), "high": ("neural-model",)}},
    # supplement Fig. 6 at demo size: alpha 2 .. 40 (0 = None) for Neural (model) and Lowpass, 3 seeds; noise only
    "dose-response": {"model": "demo", "dataset": "offline-photos", "classifier": "demo", "seeds": 3, "attacks": None,
                      "noise_sets": ("default", "wide"), "kinds": ("none", "neural-model", "lowpass"),
                      "alphas": (2.0, 5.0, 10.0, 20.0, 40.0)},
    # the stimulus pass's BatchNorm: the recipe's 'batch' (each stimulus batch's own statistics) against
    # 'eval' (the running statistics: those of the network that is tested), 3 seeds; noise only. The last
    # 20 % of the (shuffled) training images are held out of training (max_train) as a validation split,
    # so that the choice between the modes never looks at the test images (benchmarks/controls_diagnosis.py)
    "bn-modes": {"model": "demo", "dataset": "offline-photos", "classifier": "demo", "seeds": 3, "attacks": None,
                 "noise_sets": ("default", "wide"), "kinds": ("none", "neural-model", "lowpass"),
                 "validation_fraction": 0.2, "variants": {"": {}, "-bneval": {"stimulus_bn": "eval"}}},
    "paper": {"model": "paper", "dataset": "cifar10", "classifier": "paper", "seeds": 5, "attacks": "paper",
              "autoattack": "paper", "kinds": ("none", "neural-model", "neural-data", "shuffle", "vgg")},
    # supplement Fig. 6 / Table 1: alpha 0 (= None), 2, 4, 8, 16, 32 with the model target, 3 seeds;
    # noise only (the supplement attacks the main-text models)
    "alpha-sweep": {"model": "paper", "dataset": "cifar10", "classifier": "paper", "seeds": 3, "attacks": None,
                    "kinds": ("none", "neural-model"), "alphas": (2.0, 4.0, 8.0, 16.0, 32.0)},
    # Fig. 4B: ResNet34 on grayscale CIFAR-100 (the paper recipe with arch resnet34, its K = 5 layers
    # uniformly located: 1/9/17/25/33), None / Neural (model) / Shuffle x 5 seeds; noise only
    "paper-cifar100": {"model": "paper", "dataset": "cifar100", "classifier": "paper", "seeds": 5, "attacks": None,
                       "config": {"arch": "resnet34"}, "kinds": ("none", "neural-model", "shuffle")},
}


def plan_study(prefix: str, study: str, *, groups: list[str] | None = None, dataset: str | None = None,
               seeds: int | None = None, vgg: bool | None = None, classifier: str | None = None,
               model: str | None = None, data_root: str | None = None, model_seed: int = 0,
               attacks: str | None = None, autoattack: str | None = None) -> list[dict]:
    """Insert every row that defines `study` (idempotent): the predictive and similarity configs (the
    neural-model and shuffle targets from the predictive model of seed `model_seed`), the data set,
    the classifier recipe(s), the seeds, the regularizers towards each scan group's target and the
    planned combinations, the default noise levels and the study's attack suite. Returns the
    ClassifierPlan keys. attacks: the attack suite (a recipe of compute/evaluation/recipes.py) instead of
    the study's, 'none' for no suite. autoattack: AutoAttack at the standard budgets of both norms
    (a recipe of compute/evaluation/autoattack.py: its sample count) instead of the study's (the paper
    study's: 'paper'; the others: none), 'none' for none.

    All or nothing: everything is checked before the first write (the study, seeds >= 1, the recipes,
    the attack suite, the noise levels, the scan groups, the data set: it is loaded), and every row is
    written in one transaction, so a plan that fails leaves no row behind. A prefix with nothing
    ingested is refused without creating its schemas."""
    from neuralreg_schema.compute.classifier import datasets, recipes
    from neuralreg_schema.compute.evaluation import noise as noise_levels
    from neuralreg_schema.compute.evaluation.autoattack import RECIPES as AUTOATTACK_RECIPES
    from neuralreg_schema.compute.evaluation.recipes import RECIPES as ATTACK_RECIPES, recipe as attack_recipe
    from neuralreg_schema.compute.similarity import vgg as vgg_models
    # 1. the arguments alone
    pipeline.check_prefix(prefix)
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    spec = dict(STUDIES[study])
    if attacks is not None:
        if attacks != "none" and attacks not in ATTACK_RECIPES:
            raise ValueError(f"unknown attack suite {attacks!r}; choose one of {', '.join(ATTACK_RECIPES)} or none")
        spec["attacks"] = None if attacks == "none" else attacks
    if autoattack is not None:
        if autoattack != "none" and autoattack not in AUTOATTACK_RECIPES:
            raise ValueError(f"unknown AutoAttack recipe {autoattack!r}; choose one of "
                             f"{', '.join(AUTOATTACK_RECIPES)} or none")
        spec["autoattack"] = None if autoattack == "none" else autoattack
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"--seeds {seeds!r}: a study trains at least 1 seed (seeds 0 .. N-1)")
    n_seeds = seeds if seeds is not None else spec["seeds"]
    model = model or spec["model"]
    _check_model(model, model_seed)
    dataset = dataset or spec["dataset"]
    if dataset.lower() not in datasets.DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(datasets.DATASETS)}")
    base = classifier or spec["classifier"]
    overrides = dict(spec.get("config", {}))                # e.g. {"arch": "resnet34"} (Fig. 4B)
    for changes in [{}] + [{"alpha": a} for a in spec.get("alphas", ())] + list(spec.get("variants", {}).values()):
        recipes.check_config({**recipes.default_config(base), **overrides, **changes})   # unknown recipe: KeyError
    if spec["attacks"]:
        attack_recipe(spec["attacks"])
    # the noise levels: 'wide' for the offline digits (they barely change below sd 0.1), else 'default'
    noise = spec.get("noise", "default") if dataset == "offline" else "default"
    noise_sets = spec.get("noise_sets", (noise,))          # a study may name its level sets for any data set
    for name in noise_sets:
        noise_levels.check_sigmas(noise_levels.LEVELS.get(name, noise_levels.DEFAULT_SIGMAS))
    # 2. the scan groups (reads only: a prefix with nothing ingested is refused, not created)
    if "similarity" not in pipeline.existing_prefixes().get(prefix, []):
        raise ValueError(f"prefix {prefix!r} has no scan group to regularize towards: nothing is ingested there "
                         f"yet. Ingest first (`neuralreg --prefix {prefix} ingest simulated`, or `ingest "
                         "sensorium PATH ...` and `neuralreg group NAME --image-set SET`), then plan")
    modules = pipeline.activate(prefix)                     # tables a newer version adds: DDL before the transaction
    clf, sim = modules["classifier"], modules["similarity"]
    kinds = list(spec["kinds"])
    if "vgg" in kinds or vgg:
        if vgg is None:
            vgg = vgg_models.weights_available()
        if not vgg:
            _say("  the VGG control is left out: its ImageNet weights are not on this machine")
        kinds = [k for k in kinds if k != "vgg"] + (["vgg"] if vgg else [])
    populations = spec.get("populations", {})
    all_groups = list(sim.ScanGroup.to_arrays("scan_group", order_by="scan_group"))
    if not groups:       # by default the mouse groups; a tuned twin (<group>-low) only through `populations`
        groups = [g for g in all_groups if not any(g.endswith(f"-{t}") and g[:-len(t) - 1] in all_groups
                                                   for t in TUNED_POPULATIONS)]
    if not groups:
        raise ValueError(f"prefix {prefix!r} has no scan group to regularize towards: ingest scans first "
                         "(or `neuralreg group NAME --image-set SET`)")
    unknown = [g for g in groups if g not in all_groups]
    if unknown:
        raise ValueError(f"no scan group {', '.join(map(repr, unknown))} in prefix {prefix!r}; its scan groups: "
                         f"{', '.join(all_groups) or 'none'} (`neuralreg group NAME --image-set SET` defines one)")
    tuned = {(g, t): f"{g}-{t}" for g in groups for t in populations}
    missing = [name for name in tuned.values() if name not in all_groups]
    if missing:
        raise ValueError(f"study {study!r} needs the scan groups {', '.join(missing)} of the tuned populations: "
                         + "; ".join(f"`neuralreg ingest simulated --profile PROFILE --seed SEED --tuning {t}`"
                                     for t in populations))
    # 3. the data set: loaded (and checked) before anything is written
    _say(f"  loading data set {dataset!r}")
    if data_root:
        place_dataset(dataset, data_root)
    data = datasets.load_dataset(dataset)
    tag = "".join(f"-{v}" for v in overrides.values())
    if spec.get("validation_fraction"):                     # a validation split: the last training images
        n_train = int(data.train_images.shape[0])
        n_val = int(round(spec["validation_fraction"] * n_train))
        overrides["max_train"] = min(recipes.default_config(base)["max_train"] or n_train, n_train - n_val)
        tag += f"-val{n_val}"
    # 4. every row in one transaction: an error on the way (e.g. a config name taken) rolls all back
    with settings.transaction(clf.schema.connection):
        model_key = _insert_similarity(modules, model, "vgg" in kinds, model_seed)
        data_key = clf.ClassificationDataset.add(dataset, data=data)
        keys = _insert_plans(modules, spec, data_key, base, overrides, tag, kinds, groups, tuned, populations,
                             model_key, n_seeds)
        for name in noise_sets:
            modules["evaluation"].NoiseConfig.add(name)
        if spec["attacks"]:
            # a suite attacks every classifier of the schema (the same samples for each)
            modules["evaluation"].AttackSuite.add_recipe(spec["attacks"])
        if spec.get("autoattack"):
            # the suites' sample choice (seed 0): a suite's samples are among AutoAttack's (the cross-check)
            modules["autoattack"].AutoAttackConfig.add_recipe(spec["autoattack"])
    _say(f"  study {study!r}: {len(keys)} classifiers planned ({', '.join(kinds)}; scan groups "
         f"{', '.join(groups + list(tuned.values()))}; "
         f"{n_seeds} seed(s); data set {data_key['dataset']})")
    return keys


# `neuralreg plan` options -> plan_study arguments (cli.cmd_plan passes them through)
PLAN_ARGS = {"groups": "group", "dataset": "dataset", "seeds": "seeds", "vgg": "vgg", "classifier": "classifier",
             "model": "model", "data_root": "data_root", "model_seed": "model_seed", "attacks": "attacks",
             "autoattack": "autoattack"}


def _insert_plans(modules, spec, data, base, overrides, tag, kinds, groups, tuned, populations, model,
                  n_seeds) -> list[dict]:
    """The classifier configs, regularizers and ClassifierPlan rows of a study (inside its transaction)."""
    clf, sim = modules["classifier"], modules["similarity"]
    config = clf.ClassifierConfig.add(base, name=base + tag, **overrides)
    none = clf.Regularizer.add("none")
    keys = clf.ClassifierPlan.add(data, config, none, list(range(n_seeds)))
    targeted = [clf.Regularizer.add(k, g, model=model if k in ("neural-model", "shuffle") else None)
                for g in groups for k in kinds if k != "none"]
    if populations:      # the pixel targets on the oracle images too: S_oracle against them (population_targets)
        for method in ("lowpass", "highpass"):
            sim.SimilarityConfig.add(method, "oracle")
    for (g, t), name in tuned.items():                     # e.g. 'Neural (model, low)' towards sim-demo-0-low
        for k in populations[t]:
            label = clf.KINDS[k][1]
            targeted.append(clf.Regularizer.add(k, name, model=model if k in ("neural-model", "shuffle") else None,
                                                label=f"{label[:-1]}, {t})" if label.endswith(")") else f"{label} ({t})"))
    for alpha in spec.get("alphas", ()):
        keys += clf.ClassifierPlan.add(data, clf.ClassifierConfig.add(base, name=f"{base}{tag}-alpha{alpha:g}",
                                                                           alpha=alpha, **overrides),
                                       targeted, list(range(n_seeds)))
    for suffix, changes in spec.get("variants", {}).items():
        keys += clf.ClassifierPlan.add(data, clf.ClassifierConfig.add(base, name=f"{base}{tag}{suffix}",
                                                                           **{**overrides, **changes}),
                                       targeted, list(range(n_seeds)))
    if "alphas" not in spec and "variants" not in spec:
        keys += clf.ClassifierPlan.add(data, config, targeted, list(range(n_seeds)))
    return keys


def place_dataset(name: str, root: str) -> None:
    """Make the data set in `root` available where workers look ($NEURALREG_DATA): an archive there is
    md5-checked and extracted into it; an extracted folder elsewhere is refused with the fix."""
    from neuralreg_schema.compute.classifier import datasets
    datasets.load_dataset(name, root=root, download=False)       # checks it; extracts an archive into the cache
    try:
        datasets.load_dataset(name, download=False)
    except datasets.DatasetError:
        raise ValueError(f"{name} in {root} is an extracted folder, which workers do not look in: set "
                         f"NEURALREG_DATA to the folder that holds it (now {datasets.cache_dir()}), or pass "
                         "the folder holding the .tar.gz archive") from None
