"""Connection and object-store settings.

Sources, highest priority first (DataJoint's own rules, plus two project conventions):
1. `DJ_*` environment variables (`DJ_HOST`, `DJ_PORT`, `DJ_USER`, `DJ_PASS`, `DJ_BACKEND`, `DJ_STORES`).
2. `datajoint.json` (committed, no secrets) found from the working directory upwards; when the working
   directory is outside the project (a notebook elsewhere), the project's own file is loaded.
3. `.secrets/database.user`, `.secrets/database.password` next to `datajoint.json` (ignored by git;
   written by `neuralreg db up`), then the same files in `~/.config/neuralreg/secrets/` (the per-user
   copy that other checkouts on this machine reuse; `NEURALREG_SECRETS` names another folder), or
   `/run/secrets/datajoint/` in containers.

The object store `main` holds every large array and weight file. By default it is a file store; a
relative `location` is taken relative to the project root (the folder holding `datajoint.json`),
and `NEURALREG_STORE` overrides it: a folder, or `s3://<bucket>/<location>` (see `store_spec`). For S3 (or MinIO) set, in `datajoint.json` or `DJ_STORES`:
    "stores": {"default": "main", "main": {"protocol": "s3", "endpoint": "s3.amazonaws.com",
               "bucket": "my-bucket", "location": "neuralreg", "access_key": "..."}}
with the secret in `.secrets/stores.main.secret_key` (never in the JSON), or the whole block in `DJ_STORES`
(a JSON string; it wins over the file, as in DataJoint). Needs the `s3` extra (s3fs).

Backend: MySQL 8.4 / MariaDB (the default) or PostgreSQL 15+ with `DJ_BACKEND=postgresql` (or
"database": {"backend": "postgresql"}). On PostgreSQL the pipeline's schemas live in one database,
`database.name` (DJ_DATABASE_NAME), default PG_DATABASE; the port defaults to 5432 unless DJ_PORT names one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import warnings
from pathlib import Path

STORE = "main"                      # the one store every table names: <npy@main>, <hash@main>, ...
DEFAULT_PREFIX = "neuralreg"        # schema names are f"{prefix}_{module}"
PG_DATABASE = "neuralreg"           # PostgreSQL: the database that holds the pipeline's schemas
DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
PACKAGE_ROOT = Path(__file__).resolve().parent


class _JobTableNoise(logging.Filter):
    """DataJoint 2.3 warns about native integer types when it declares a job table (its foreign-key
    columns carry no core-type comment); our own definitions use core types only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Native type '")


def import_datajoint():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No datajoint.json found")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import datajoint as dj
    warnings.filterwarnings("ignore", message="MariaDB is not officially supported")
    logger = logging.getLogger("datajoint")
    if not any(isinstance(f, _JobTableNoise) for f in logger.filters):
        logger.addFilter(_JobTableNoise())
    return dj


def project_root() -> Path:
    """The folder holding the project's datajoint.json (NEURALREG_HOME overrides)."""
    if os.environ.get("NEURALREG_HOME"):
        return Path(os.environ["NEURALREG_HOME"]).resolve()
    dj = import_datajoint()
    found = getattr(dj.config, "_config_path", None)
    if found:
        return Path(found).resolve().parent
    checkout = PACKAGE_ROOT.parent          # an editable install or a source checkout
    if (checkout / "datajoint.json").is_file():
        return checkout
    return Path.cwd().resolve()


def secrets_dir() -> Path:
    return project_root() / ".secrets"


def user_secrets_dir() -> Path:
    """Per-user copy of the credentials, shared by every checkout of this user on this machine, so
    a second clone reuses the database account instead of resetting its password. NEURALREG_SECRETS
    names another folder (a SLURM worker's 0600 files, a container's /run/secrets/neuralreg)."""
    if os.environ.get("NEURALREG_SECRETS"):
        return Path(os.environ["NEURALREG_SECRETS"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "neuralreg" / "secrets"


def tighten(path: Path, mode: int) -> None:
    """chmod `path` to `mode` when it has other bits (a secret folder 0700, a secret file 0600): a user's
    `chmod 644` is undone whenever the project writes or reads its secrets. A path owned by another user
    is left alone (chmod would fail)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
        os.chmod(path, mode)


def tighten_secrets(folder: Path) -> None:
    """A secrets folder 0700 and every file in it 0600."""
    if not folder.is_dir():
        return
    tighten(folder, 0o700)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            tighten(path, 0o600)


def read_secret(name: str) -> str | None:
    """A secret from the project's .secrets/, else from the per-user folder (NEURALREG_SECRETS, when
    set, first); both folders' modes are tightened back to 0700/0600 on every read."""
    found = None
    named = bool(os.environ.get("NEURALREG_SECRETS"))        # the folder named for this process comes first
    for folder in ((user_secrets_dir(), secrets_dir()) if named else (secrets_dir(), user_secrets_dir())):
        tighten_secrets(folder)
        path = folder / name
        if found is None and path.is_file():
            found = path.read_text().strip()
    return found


def write_secret(name: str, value: str) -> Path:
    """Write one secret file (mode 600) under .secrets/ (folder mode 700), and the per-user copy. The
    modes are set on existing folders and files too (O_CREAT's mode applies to new files only), and
    before the value is written."""
    for folder in (user_secrets_dir(), secrets_dir()):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tighten_secrets(folder)
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(value + "\n")
    return path


def configure() -> "object":
    """Complete dj.config from the project files and return the datajoint module.

    Idempotent. Loads the project's datajoint.json when DataJoint did not find one from the working
    directory, fills credentials from .secrets/ when no DJ_USER/DJ_PASS is set, and makes sure the
    store `main` exists (a file store's folder is created).
    """
    dj = import_datajoint()
    root = project_root()
    cfg_file = root / "datajoint.json"
    if getattr(dj.config, "_config_path", None) is None and cfg_file.is_file() \
            and os.environ.get("DJ_IGNORE_CONFIG_FILE", "").lower() != "true":
        dj.config.load(cfg_file)
        if os.environ.get("DJ_STORES"):          # load() merged the file's stores over DJ_STORES: env wins
            dj.config._apply_stores_env()
    _backend_defaults(dj)
    for folder in (secrets_dir(), user_secrets_dir()):        # a `chmod 644` of them is undone on every use
        tighten_secrets(folder)
    if dj.config["database.user"] is None:
        dj.config["database.user"] = read_secret("database.user")
    if dj.config["database.password"] is None:
        dj.config["database.password"] = read_secret("database.password")
    stores = dj.config.stores
    if STORE not in stores:
        stores[STORE] = {"protocol": "file", "location": "store/main"}
    stores.setdefault("default", STORE)
    if os.environ.get("NEURALREG_STORE"):
        stores[STORE] = store_spec(os.environ["NEURALREG_STORE"])
    spec = stores[STORE]
    if spec.get("protocol", "file") == "file":
        location = Path(os.path.expanduser(spec["location"]))
        if not location.is_absolute():
            location = root / location
        location.mkdir(parents=True, exist_ok=True)
        spec["location"] = str(location)
    return dj


def store_spec(value: str) -> dict:
    """The store `main` named by NEURALREG_STORE: a folder (file store), or `s3://<bucket>/<location>`,
    an S3 / MinIO store at NEURALREG_S3_ENDPOINT (default s3.amazonaws.com; `http://host:port` for a
    MinIO without TLS) with NEURALREG_S3_ACCESS_KEY / NEURALREG_S3_SECRET_KEY (else
    .secrets/stores.main.access_key / secret_key, else botocore's own chain: AWS_* variables, roles)."""
    if not value.startswith("s3://"):
        return {"protocol": "file", "location": value}
    bucket, _, location = value[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"NEURALREG_STORE={value!r}: name the bucket, s3://<bucket>/<location>")
    endpoint = os.environ.get("NEURALREG_S3_ENDPOINT") or "s3.amazonaws.com"
    spec = {"protocol": "s3", "endpoint": endpoint, "bucket": bucket, "location": location.strip("/") or "neuralreg",
            "secure": not endpoint.startswith("http://")}
    for attr, env in (("access_key", "NEURALREG_S3_ACCESS_KEY"), ("secret_key", "NEURALREG_S3_SECRET_KEY")):
        found = os.environ.get(env) or read_secret(f"stores.{STORE}.{attr}")
        if found:
            spec[attr] = found
    return spec


def backend(dj=None) -> str:
    """'mysql' (MySQL 8.4, MariaDB) or 'postgresql', as DataJoint's `database.backend` says."""
    dj = dj or import_datajoint()
    name = str(dj.config["database.backend"]).lower()
    return "postgresql" if name in ("postgresql", "postgres") else "mysql"


def _backend_defaults(dj) -> None:
    """PostgreSQL: the port defaults to 5432 (datajoint.json names MySQL's 3306, and DataJoint does not
    change the port with the backend) and the database to PG_DATABASE, unless configured."""
    if backend(dj) != "postgresql":
        return
    if not os.environ.get("DJ_PORT") and dj.config["database.port"] in (None, DEFAULT_PORTS["mysql"]):
        dj.config["database.port"] = DEFAULT_PORTS["postgresql"]
    if not dj.config["database.name"]:
        dj.config["database.name"] = PG_DATABASE


def connection_summary() -> str:
    dj = configure()
    host = dj.config["database.host"]
    port = dj.config["database.port"] or DEFAULT_PORTS[backend(dj)]
    user = dj.config["database.user"]
    database = f"/{dj.config['database.name']}" if backend(dj) == "postgresql" else ""
    return f"{user}@{host}:{port}{database}"


def code_version() -> str:
    """'<package version>+g<commit>[.dirty]' from the checkout's git; where there is no checkout (the
    worker image), the commit the image was built from ($NEURALREG_GIT_COMMIT, a build argument);
    else the package version alone."""
    import subprocess
    from importlib import metadata
    try:
        version = metadata.version("neuralreg")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    if sha:
        return f"{version}+g{sha}{'.dirty' if dirty else ''}"
    built = os.environ.get("NEURALREG_GIT_COMMIT", "").strip()
    return f"{version}+g{built}" if built and built != "unknown" else version


# the columns every computed row of a model or an evaluation ends with (table definitions include it)
PROVENANCE = """
    device : varchar(128)                # where it ran, e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'
    torch_version : varchar(32)          # torch.__version__
    code_version : varchar(64)           # neuralreg version and git commit
    host : varchar(255)                  # machine that computed it
"""


def provenance(device: str) -> dict:
    """The PROVENANCE values of this process for a row computed on `device` (a description)."""
    import socket

    import torch
    return {"device": str(device)[:128], "torch_version": torch.__version__[:32],
            "code_version": code_version()[:64], "host": socket.gethostname()[:255]}


@contextlib.contextmanager
def transaction(connection):
    """One transaction on `connection`: commits at the end, rolls everything back on an exception. Inside
    a transaction already open on it (a plan that writes several tables at once), it joins that one, so
    the outermost caller decides: DataJoint refuses nested transactions. Declare tables before: DDL
    commits implicitly on MySQL."""
    if connection.in_transaction:
        yield connection
        return
    with connection.transaction:
        yield connection
