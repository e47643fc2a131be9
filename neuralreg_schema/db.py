"""Database bring-up: `neuralreg db up` / `neuralreg db status` / `neuralreg db down`.

`up` is idempotent and tries, in order:
1. the configured server (datajoint.json / DJ_HOST / DJ_PORT), if it answers;
2. `docker compose up -d db` (docker-compose.yml), if a Docker engine answers;
3. a private local MariaDB/MySQL server with its data under `.local/mariadb/` (Debian's
   mariadb-server is installed first when the binary is missing and we run as root).
It then makes sure the application user exists with the password in `.secrets/` (generated on
first use, never committed), that DataJoint-friendly settings are in force where we may set them,
and that a DataJoint connection works. Administrative access, needed only to create that user,
comes from DJ_ADMIN_USER / DJ_ADMIN_PASS, else root without password over TCP, else the server's
unix socket as the current OS user (Debian's unix_socket authentication).
"""
from __future__ import annotations

import getpass
import os
import secrets as _secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import settings

APP_USER = "neuralreg"
# schemas the application user owns: the default prefix and every prefix that starts with it
SCHEMA_PATTERN = "neuralreg%"
# DataJoint-friendly server settings (also in docker-compose.yml)
SERVER_SETTINGS = {
    "max_allowed_packet": 268435456,       # 256 MiB: large <blob> rows
    "wait_timeout": 28800,                 # s: idle connections of long-running workers
    "interactive_timeout": 28800,          # s
    "net_read_timeout": 600,               # s
    "net_write_timeout": 600,              # s
}


class DatabaseError(RuntimeError):
    """The database could not be reached or prepared; the message says what to do."""


@dataclass
class Target:
    host: str
    port: int

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")


def configured_target() -> Target:
    dj = settings.configure()
    host = dj.config["database.host"] or "127.0.0.1"
    port = dj.config["database.port"]
    if ":" in host and port is None:
        host, port = host.rsplit(":", 1)
    return Target(host=host, port=int(port or 3306))


def answers(target: Target, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return True
    except OSError:
        return False


def _pymysql():
    import pymysql
    return pymysql


def _connect(target: Target, user: str, password: str | None = None, unix_socket: str | None = None,
             timeout: int = 5):
    pymysql = _pymysql()
    kwargs = dict(user=user, password=password or "", connect_timeout=timeout, autocommit=True)
    if unix_socket:
        return pymysql.connect(unix_socket=unix_socket, **kwargs)
    return pymysql.connect(host=target.host, port=target.port, **kwargs)


def app_credentials() -> tuple[str | None, str | None]:
    dj = settings.configure()
    return dj.config["database.user"], dj.config["database.password"]


def can_login(target: Target, user: str | None, password: str | None) -> bool:
    if not user:
        return False
    try:
        _connect(target, user, password).close()
        return True
    except Exception:
        return False


def candidate_sockets() -> list[str]:
    """Unix sockets an administrative login may use: our private server's, $DJ_ADMIN_SOCKET, and the
    one the installed server's own option files name (`my_print_defaults`)."""
    paths = [str(local_dir() / "mysqld.sock")]
    paths += [p for p in os.environ.get("DJ_ADMIN_SOCKET", "").split(os.pathsep) if p]
    if shutil.which("my_print_defaults"):
        run = subprocess.run(["my_print_defaults", "mysqld", "client", "client-server"],
                             capture_output=True, text=True)
        paths += [line.split("=", 1)[1] for line in run.stdout.splitlines() if line.startswith("--socket=")]
    return [p for p in dict.fromkeys(paths) if Path(p).exists()]


def admin_connection(target: Target):
    """A connection with the right to create users, or None (tried: env, root over TCP, sockets)."""
    attempts = []
    if os.environ.get("DJ_ADMIN_USER"):
        attempts.append(dict(user=os.environ["DJ_ADMIN_USER"], password=os.environ.get("DJ_ADMIN_PASS", "")))
    attempts.append(dict(user="root", password=""))
    if target.is_local:
        for path in candidate_sockets():
            attempts += [dict(user=getpass.getuser(), unix_socket=path), dict(user="root", unix_socket=path)]
    for attempt in attempts:
        try:
            connection = _connect(target, **attempt)
        except Exception:
            continue
        # a socket may belong to another server on this machine: accept it only if it is the target
        if attempt.get("unix_socket") and int(_query(connection, "SELECT @@port")[0][0]) != target.port:
            connection.close()
            continue
        return connection
    return None


def _query(connection, sql: str, args=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def ensure_app_user(admin, user: str, password: str) -> None:
    """Create (or reset the password of) the application user, granted on SCHEMA_PATTERN schemas."""
    for host in ("localhost", "127.0.0.1", "%"):
        _query(admin, "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
        _query(admin, "ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
        _query(admin, "GRANT ALL PRIVILEGES ON `" + SCHEMA_PATTERN.replace('%', '%%') + "`.* TO %s@%s", (user, host))
    _query(admin, "FLUSH PRIVILEGES")


# what a worker needs on the pipeline's schemas: read and write rows, create its job tables (CREATE,
# INDEX, REFERENCES); no DROP, ALTER, GRANT or access to other databases
WORKER_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "INDEX", "REFERENCES", "LOCK TABLES",
                     "CREATE TEMPORARY TABLES")


def ensure_worker_user(admin, user: str, password: str) -> None:
    """Create (or reset) a least-privilege worker account on SCHEMA_PATTERN schemas: it fills tables
    and job queues that exist, but cannot drop or alter them. All workers of one study share one
    account (jobs.reclaim sees only the connections of its own account)."""
    if not user or user == app_credentials()[0]:
        raise ValueError(f"the worker account needs its own name, not {user!r}")
    for host in ("localhost", "127.0.0.1", "%"):
        _query(admin, "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
        _query(admin, "ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
        _query(admin, f"GRANT {', '.join(WORKER_PRIVILEGES)} ON `" + SCHEMA_PATTERN.replace('%', '%%')
               + "`.* TO %s@%s", (user, host))
    _query(admin, "FLUSH PRIVILEGES")


def worker_user(name: str = "neuralreg_worker", say=print) -> Path:
    """Create the worker account `name` with a generated password, stored in .secrets/ (0600);
    returns the password file. Needs the administrative access `up` uses."""
    target = configured_target()
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(f"no administrative access to {target.host}:{target.port} to create {name!r} "
                            "(set DJ_ADMIN_USER / DJ_ADMIN_PASS)")
    password = _secrets.token_urlsafe(24)
    try:
        ensure_worker_user(admin, name, password)
    finally:
        admin.close()
    path = settings.write_secret(f"worker.{name}.password", password)
    say(f"worker account {name!r} on {target.host}:{target.port} ({', '.join(WORKER_PRIVILEGES)} on "
        f"`{SCHEMA_PATTERN}` schemas); its password is in {path}. Workers use: DJ_USER={name} DJ_PASS=<that password>")
    return path


def user_exists(admin, user: str) -> bool:
    try:
        return bool(_query(admin, "SELECT 1 FROM mysql.user WHERE User = %s", (user,)))
    except Exception:      # no read access to mysql.user: assume it exists, never reset silently
        return True


def apply_server_settings(admin) -> list[str]:
    """Raise the server's limits to SERVER_SETTINGS where it allows; return what could not be set."""
    failed = []
    for name, value in SERVER_SETTINGS.items():
        try:
            current = int(_query(admin, f"SELECT @@GLOBAL.{name}")[0][0])
            if current < value:
                _query(admin, f"SET GLOBAL {name} = {int(value)}")
        except Exception as exc:
            failed.append(f"{name}: {exc}")
    return failed


def server_report(connection) -> dict:
    rows = dict(_query(connection, "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                                   "('version', 'max_allowed_packet', 'collation_server', 'wait_timeout')"))
    return rows


# ------------------------------------------------------------------ docker

def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_env_file(root: Path) -> dict:
    """The ignored `.env` docker compose reads: passwords generated once, mode 600."""
    path = root / ".env"
    values = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip()
    changed = False
    for name in ("MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD"):
        if not values.get(name):
            values[name] = _secrets.token_urlsafe(24)
            changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# generated by `neuralreg db up`; never commit this file\n")
            f.writelines(f"{k}={v}\n" for k, v in values.items())
    return values


def docker_up(root: Path, target: Target, say) -> None:
    env = ensure_env_file(root)
    settings.write_secret("database.user", APP_USER)
    settings.write_secret("database.password", env["MYSQL_PASSWORD"])
    say("starting the database with `docker compose up -d db`")
    run = subprocess.run(["docker", "compose", "up", "-d", "db"], cwd=root, capture_output=True, text=True)
    if run.returncode != 0:
        raise DatabaseError(f"`docker compose up -d db` failed:\n{run.stderr.strip()}")
    wait_for_login(target, APP_USER, env["MYSQL_PASSWORD"], timeout=180, say=say)


# ------------------------------------------------------------------ local server

def local_dir(root: Path | None = None) -> Path:
    return (root or settings.project_root()) / ".local" / "mariadb"


def find_server_binary() -> str | None:
    for name in ("mariadbd", "mysqld"):
        for path in (shutil.which(name), f"/usr/sbin/{name}"):
            if path and Path(path).is_file():
                return path
    return None


def install_mariadb(say) -> str:
    if os.geteuid() != 0:
        raise DatabaseError("no MariaDB/MySQL server binary found and not running as root: install one "
                            "(`sudo apt-get install mariadb-server`), or start Docker, or point DJ_HOST at a server")
    say("installing Debian's mariadb-server (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "mariadb-server"]):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise DatabaseError(f"`{' '.join(cmd)}` failed:\n{run.stderr.strip()[-2000:]}")
    binary = find_server_binary()
    if not binary:
        raise DatabaseError("mariadb-server installed but no mariadbd binary found")
    return binary


def start_local_server(datadir: Path, port: int, say=print, binary: str | None = None) -> Path:
    """Start a private MariaDB/MySQL server on 127.0.0.1:`port` with its data under `datadir`.

    Initialises the data directory on first use. Returns the unix socket path. The server runs in the
    background (its pid in `datadir.parent / 'mysqld.pid'`, its log in `mysqld.log`).
    """
    binary = binary or find_server_binary() or install_mariadb(say)
    base = datadir.parent
    base.mkdir(parents=True, exist_ok=True)
    sock = base / "mysqld.sock"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    if not (datadir / "mysql").is_dir():
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if installer:
            cmd = [installer, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=socket",
                   "--skip-test-db", *as_root]
        else:   # MySQL 8
            cmd = [binary, "--no-defaults", "--initialize-insecure", f"--datadir={datadir}", *as_root]
        say(f"initialising a local database in {datadir}")
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            shutil.rmtree(datadir, ignore_errors=True)
            raise DatabaseError(f"initialising {datadir} failed:\n{(run.stdout + run.stderr).strip()[-2000:]}")
    args = [binary, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
            "--bind-address=127.0.0.1", f"--pid-file={base / 'mysqld.pid'}", f"--log-error={base / 'mysqld.log'}",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
            "--innodb-buffer-pool-size=256M", *as_root,
            *[f"--{k.replace('_', '-')}={v}" for k, v in SERVER_SETTINGS.items()]]
    say(f"starting a local server on 127.0.0.1:{port} (data in {datadir})")
    with open(base / "mysqld.out", "ab") as log:
        subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if sock.exists() and answers(Target("127.0.0.1", port)):
            return sock
        time.sleep(0.5)
    tail = (base / "mysqld.log").read_text()[-2000:] if (base / "mysqld.log").exists() else ""
    raise DatabaseError(f"the local server did not answer on 127.0.0.1:{port} within 60 s. Log:\n{tail}")


def process_gone(pid: int) -> bool:
    """True when process `pid` has exited (our own exited child is reaped; a zombie counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return False


def stop_local_server(base: Path, timeout: float = 30) -> bool:
    pidfile = base / "mysqld.pid"
    if not pidfile.is_file():
        return False
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.2)
    return True


def wait_for_login(target: Target, user: str, password: str, timeout: float = 60, say=print) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            _connect(target, user, password).close()
            return
        except Exception as exc:       # server still starting
            last = exc
            time.sleep(1)
    raise DatabaseError(f"cannot log in as {user} at {target.host}:{target.port} after {timeout:.0f} s: {last}")


# ------------------------------------------------------------------ up / status / down

def _provision_account(target: Target, user: str | None, password: str | None, reset_password: bool,
                       say) -> tuple[str, str]:
    """Create the application account, or set its password; an existing account is changed only with
    `reset_password`, so that a new checkout cannot lock out the workers of another one."""
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(
            f"{target.host}:{target.port} answers, but the application user cannot log in and no "
            "administrative login works: set DJ_USER/DJ_PASS to an existing account, or DJ_ADMIN_USER/"
            "DJ_ADMIN_PASS to an account that may create users")
    try:
        user = user or APP_USER
        if user_exists(admin, user) and not reset_password:
            known = "the configured password is wrong" if password else "its password is unknown here"
            raise DatabaseError(
                f"the account {user!r} already exists on {target.host}:{target.port} but {known}: put the right "
                f"one in {settings.secrets_dir() / 'database.password'} (or DJ_USER/DJ_PASS), or run "
                "`neuralreg db up --reset-password` (workers using the old password will fail to reconnect)")
        if not password:
            password = _secrets.token_urlsafe(24)
            settings.write_secret("database.user", user)
            settings.write_secret("database.password", password)
            say(f"created credentials for {user!r} in {settings.secrets_dir()}")
        ensure_app_user(admin, user, password)
    finally:
        admin.close()
    dj = settings.configure()
    dj.config["database.user"], dj.config["database.password"] = user, password
    return user, password


def up(say=print, reset_password: bool = False) -> dict:
    """Bring a usable database up (see module docstring and `_provision_account`); return a summary."""
    root = settings.project_root()
    target = configured_target()
    mode = "configured server"
    if not answers(target):
        if docker_engine_answers() and (root / "docker-compose.yml").is_file() and target.is_local:
            docker_up(root, target, say)
            mode = "docker compose"
        elif target.is_local:
            start_local_server(local_dir(root) / "data", target.port, say=say)
            mode = "local server"
        else:
            raise DatabaseError(f"the configured server {target.host}:{target.port} does not answer, and it is "
                                "not local, so none can be started for it: check DJ_HOST/DJ_PORT or the network")
    user, password = app_credentials()
    if not can_login(target, user, password):
        user, password = _provision_account(target, user, password, reset_password, say)
    wait_for_login(target, user, password, timeout=30, say=say)
    if not (settings.user_secrets_dir() / "database.password").is_file() and not os.environ.get("DJ_PASS"):
        settings.write_secret("database.user", user)          # let other checkouts here reuse the account
        settings.write_secret("database.password", password)
    problems = []
    admin = admin_connection(target)
    if admin is not None:
        problems = apply_server_settings(admin)
        admin.close()
    connection = _connect(target, user, password)
    report = server_report(connection)
    connection.close()
    if int(report.get("max_allowed_packet", 0)) < SERVER_SETTINGS["max_allowed_packet"]:
        problems.append(f"max_allowed_packet is {report.get('max_allowed_packet')} (< 256M): large in-table "
                        "blobs will fail; raise it in the server configuration")
    summary = {"mode": mode, "host": target.host, "port": target.port, "user": user,
               "version": report.get("version"), "max_allowed_packet": report.get("max_allowed_packet"),
               "collation_server": report.get("collation_server"), "warnings": problems}
    say(f"database ready ({mode}): {user}@{target.host}:{target.port}, server {report.get('version')}")
    for problem in problems:
        say(f"  warning: {problem}")
    return summary


def status() -> dict:
    root = settings.project_root()
    target = configured_target()
    user, password = app_credentials()
    info = {"host": target.host, "port": target.port, "user": user, "answers": answers(target),
            "login": False, "local_server_pid": None, "docker": None}
    pidfile = local_dir(root) / "mysqld.pid"
    if pidfile.is_file():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, 0)
            info["local_server_pid"] = pid
        except ProcessLookupError:
            pass
    if docker_engine_answers():
        run = subprocess.run(["docker", "compose", "ps", "--format", "{{.Service}}: {{.State}}"], cwd=root,
                             capture_output=True, text=True)
        info["docker"] = run.stdout.strip() or None
    if info["answers"] and can_login(target, user, password):
        info["login"] = True
        connection = _connect(target, user, password)
        info.update(server_report(connection))
        info["schemas"] = [r[0] for r in _query(connection, "SHOW DATABASES") if r[0].startswith("neuralreg")]
        connection.close()
    return info


def down(say=print) -> None:
    root = settings.project_root()
    if stop_local_server(local_dir(root)):
        say("stopped the local server")
    elif docker_engine_answers() and (root / "docker-compose.yml").is_file():
        subprocess.run(["docker", "compose", "stop", "db"], cwd=root)
    else:
        say("nothing of ours to stop (a configured server is left running)")
