"""The rules of docs/architecture.md that can be checked mechanically (the ones marked *(checked)*
there), read from the source and from the unbound table classes: no database.

- compute/ never imports datajoint (every file's AST, imports inside functions included; and
  importing every compute module in a fresh interpreter leaves datajoint out of sys.modules), nor
  anything of the package outside compute/;
- compute/ is one folder per schema stage plus common/: a stage imports only common/, itself and the
  stages before it, common/ no stage, and each schema module only its own stage's folder (and
  common/); no module of the package or of populate/ is part of an import circle;
- no module of the package is over 600 lines, the simulator aside;
- within the package only cli.py imports populate/;
- every schema module declares `schema = dj.Schema()` unbound;
- every computed table states its reserve_timeout, and one whose jobs may run longer than half an
  hour uses the three-part make;
- the content-addressed configuration tables are keyed by one char(32) hash; seeds are rows in the
  keys of what they seed;
- every store codec names its store, and none is <blob@...> or <attach@...>.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "neuralreg_schema"
COMPUTE = PACKAGE / "compute"
SCHEMA_MODULES = ("experiment", "predictive", "similarity", "classifier", "evaluation")
TABLE_MODULES = SCHEMA_MODULES + ("corruptions", "autoattack")   # tables in the evaluation schema (pipeline.EXTENSIONS)
LONG_JOB_S = 1800         # rule 3: longer than half an hour -> three-part make
HASHED_CONFIGS = {"predictive": ["PredictiveModelConfig"], "similarity": ["SimilarityConfig"],
                  "classifier": ["ClassifierConfig", "Regularizer"], "evaluation": ["AttackConfig"],
                  "autoattack": ["AutoAttackConfig"]}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            # `from . import x`: x may be a module
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if not node.module]
    return found


COMPUTE_FILES = sorted(COMPUTE.rglob("*.py"))


def compute_path(path: Path) -> str:
    return path.relative_to(COMPUTE).as_posix()


def test_the_compute_layer_is_found():
    names = {compute_path(p) for p in COMPUTE_FILES}
    assert {"similarity/rsa.py", "classifier/similarity_loss.py", "classifier/train.py", "predictive/train.py",
            "evaluation/attacks.py", "common/runtime.py"} <= names
    assert {p.parent.name for p in COMPUTE_FILES} == {"compute", "common", *SCHEMA_MODULES}


def _stage(module: str) -> int | None:
    """Position of a compute module's folder in data-flow order: common -1, the stages 0..4 as the schema
    modules, kernelcheck (and compute/'s own files) above them all; None outside compute/."""
    parts = module.split(".")
    if parts[:2] != ["neuralreg_schema", "compute"]:
        return None
    if len(parts) == 2 or parts[2] not in ("common", *SCHEMA_MODULES):
        return len(SCHEMA_MODULES)
    return -1 if parts[2] == "common" else SCHEMA_MODULES.index(parts[2])


def _package_modules() -> dict[str, Path]:
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "populate").rglob("*.py"))
    return {module_name(p): p for p in files}


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package and populate/ it imports (a `from x import y` counts as
    importing x.y when that is a module, else x)."""
    modules = _package_modules()
    graph = {}
    for name, path in modules.items():
        found = set()
        for _, target in imported_modules(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
        graph[name] = found
    return graph


@pytest.mark.parametrize("path", COMPUTE_FILES, ids=compute_path)
def test_compute_stages_import_only_earlier_stages(path):
    own = _stage(module_name(path))
    for line, target in imported_modules(path):
        stage = _stage(target)
        if stage is None or target == "neuralreg_schema.compute":
            continue
        assert stage <= own, (f"compute/{compute_path(path)}:{line} imports {target}, a later stage: "
                              "compute/ flows common -> experiment -> predictive -> similarity -> classifier -> evaluation")


@pytest.mark.parametrize("name", SCHEMA_MODULES)
def test_each_schema_module_sits_above_its_own_compute_folder(name):
    own = SCHEMA_MODULES.index(name)
    for line, target in imported_modules(PACKAGE / f"{name}.py"):
        stage = _stage(target)
        if stage is not None and target != "neuralreg_schema.compute":
            assert stage in (-1, own), f"{name}.py:{line} imports {target}, not compute/{name}/ or compute/common/"


def test_no_import_circles():
    graph = _import_graph()
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):                      # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"
    assert graph["populate.jobs"] and "populate.watchdog" not in graph["populate.jobs"]


def test_the_circle_finder_finds_a_circle(monkeypatch):
    """The check above can fail: two modules that import each other are found."""
    real = imported_modules
    fake = {"populate.jobs": "populate.watchdog", "populate.watchdog": "populate.jobs"}

    def spy(path):
        extra = fake.get(module_name(path))
        return real(path) + ([(1, extra)] if extra else [])

    monkeypatch.setitem(globals(), "imported_modules", spy)
    with pytest.raises(AssertionError, match="import circles"):
        test_no_import_circles()


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 600 and p.name != "simulate.py"}
    assert not long, f"split these modules by what they hold: {long}"


@pytest.mark.parametrize("path", COMPUTE_FILES, ids=lambda p: str(p.relative_to(COMPUTE)))
def test_compute_imports_no_datajoint_and_nothing_outside_compute(path):
    for line, target in imported_modules(path):
        top = target.split(".")[0]
        assert top != "datajoint", f"{path.relative_to(ROOT)}:{line} imports {target}"
        assert top != "populate", f"{path.relative_to(ROOT)}:{line} imports {target}"
        if top == "neuralreg_schema":
            assert target.startswith("neuralreg_schema.compute"), \
                f"{path.relative_to(ROOT)}:{line} imports {target}, outside the compute layer"


def test_importing_every_compute_module_does_not_load_datajoint():
    modules = [module_name(p) for p in COMPUTE_FILES]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'datajoint' or m.startswith('datajoint.')))\n"
            "print(len([m for m in sys.modules if m.startswith('neuralreg_schema.compute')]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, count = out.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", f"importing compute/ loaded {loaded}"
    assert int(count) >= len(modules) - 1       # the modules really were imported (the package itself aside)


def test_only_the_cli_imports_populate():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "cli.py":
            continue
        for line, target in imported_modules(path):
            assert target.split(".")[0] != "populate", f"{path.relative_to(ROOT)}:{line} imports {target}"


@pytest.mark.parametrize("name", SCHEMA_MODULES)
def test_schema_modules_declare_an_unbound_schema(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = [n for n in tree.body if isinstance(n, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "schema" for t in n.targets)]
    assert len(found) == 1, f"{name}.py: one module-level `schema = dj.Schema()`"
    call = found[0].value
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "dj.Schema", ast.unparse(call)
    assert not call.args and not call.keywords, f"{name}.py binds its schema at import: {ast.unparse(call)}"


def tables(name: str):
    """(class name, class) of every table class defined in a schema module (imported unbound)."""
    mod = importlib.import_module(f"neuralreg_schema.{name}")
    return [(n, c) for n, c in vars(mod).items()
            if inspect.isclass(c) and c.__module__ == mod.__name__ and isinstance(getattr(c, "definition", None), str)]


def computed_tables():
    import datajoint as dj
    return [(f"{m}.{n}", c) for m in TABLE_MODULES for n, c in tables(m)
            if issubclass(c, (dj.Computed, dj.Imported))]


def test_computed_tables_are_found():
    names = {n for n, _ in computed_tables()}
    assert {"predictive.PredictiveModel", "classifier.RegularizedClassifier", "evaluation.AttackResult",
            "autoattack.AutoAttackResult"} <= names


@pytest.mark.parametrize("name,table", computed_tables(), ids=lambda x: x if isinstance(x, str) else "")
def test_long_jobs_use_the_three_part_make(name, table):
    timeout = vars(table).get("reserve_timeout")
    assert isinstance(timeout, int) and timeout > 0, f"{name} states no reserve_timeout of its own"
    own = vars(table)
    three_part = all(m in own for m in ("make_fetch", "make_compute", "make_insert"))
    if timeout > LONG_JOB_S:
        assert three_part and "make" not in own, \
            f"{name}: jobs of up to {timeout} s need make_fetch / make_compute / make_insert, not a plain make"
    else:
        assert three_part or "make" in own, f"{name} defines no make"


def primary_key_lines(definition: str) -> list[str]:
    lines = [l.split("#")[0].strip() for l in definition.strip().splitlines()]
    lines = [l for l in lines if l]
    return lines[:lines.index("---")] if "---" in lines else lines


@pytest.mark.parametrize("module,name", [(m, n) for m, names in HASHED_CONFIGS.items() for n in names])
def test_configurations_are_content_addressed(module, name):
    table = dict(tables(module))[name]
    key = primary_key_lines(table.definition)
    assert len(key) == 1 and re.fullmatch(r"\w+_hash\s*:\s*char\(32\)", key[0]), f"{name}: primary key {key}"
    assert callable(getattr(table, "add", None)), f"{name} has no add()"


def test_seeds_are_rows_in_the_keys_of_what_they_seed():
    predictive, classifier = dict(tables("predictive")), dict(tables("classifier"))
    assert primary_key_lines(predictive["PredictiveSeed"].definition)[0].startswith("model_seed")
    assert "-> PredictiveSeed" in primary_key_lines(predictive["PredictiveModel"].definition)
    assert primary_key_lines(classifier["Seed"].definition)[0].startswith("seed")
    assert "-> Seed" in primary_key_lines(classifier["ClassifierPlan"].definition)


def test_store_codecs_name_their_store():
    for module in TABLE_MODULES:
        for name, table in tables(module):
            parts = [table] + [p for p in vars(table).values()
                               if inspect.isclass(p) and isinstance(getattr(p, "definition", None), str) and p is not table]
            for t in parts:
                for codec, store in re.findall(r"<(\w+)@(\w*)>", t.definition):
                    assert store, f"{module}.{name}: <{codec}@> names no store"
                    assert codec not in ("blob", "attach"), f"{module}.{name}: <{codec}@{store}> fails on MariaDB"


def test_architecture_page_names_every_compute_and_populate_module():
    """docs/architecture.md stays true to the layout: each module of compute/ is named there by its
    path below compute/ (`classifier/train.py`), each of populate/ as `name.py`, and each module it
    names there exists."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    names = [compute_path(p) for p in COMPUTE_FILES if p.name != "__init__.py"] \
        + [p.name for p in sorted((ROOT / "populate").glob("*.py")) if p.name != "__init__.py"]
    missing = [n for n in names if f"`{n}`" not in page]
    assert not missing, f"docs/architecture.md does not name {missing}"
    existing = ({compute_path(p) for p in COMPUTE_FILES} | {p.name for p in PACKAGE.rglob("*.py")}
                | {p.name for p in (ROOT / "populate").glob("*.py")} | {p.name for p in (ROOT / "tests").rglob("*.py")}
                | {str(p.relative_to(ROOT)) for p in ROOT.glob("[pt]*/**/*.py")})
    named = set(re.findall(r"`([a-z_/0-9]+\.py)`", page))
    assert named <= existing, f"docs/architecture.md names modules that do not exist: {sorted(named - existing)}"
