"""Database bring-up: `neuralreg db up` / `neuralreg db status` / `neuralreg db down` / `db worker-user`.

Two backends, as DataJoint 2.3 has them: MySQL (8.4 LTS; MariaDB 10.11+ works, unofficially) and
PostgreSQL 15+ (`DJ_BACKEND=postgresql`). `up` is idempotent and tries, in order:
1. the configured server (datajoint.json / DJ_HOST / DJ_PORT / DJ_BACKEND), if it answers;
2. `docker compose up -d db` (or the `postgres` profile's service), if a Docker engine answers;
3. MySQL family only: a private local MariaDB/MySQL server with its data under `.local/mariadb/`
   (Debian's mariadb-server is installed first when the binary is missing and we run as root).
It then makes sure the application account exists with the password in `.secrets/` (generated on
first use, never committed), that DataJoint-friendly settings are in force where we may set them,
and that a DataJoint connection works. Administrative access, needed only to create accounts,
comes from DJ_ADMIN_USER / DJ_ADMIN_PASS, else the compose `.env`'s root password (local targets),
else root (postgres on PostgreSQL) without password over TCP, else the server's unix socket as the
current OS user (Debian's unix_socket / peer authentication).

The package: `connection` (targets, DB-API connections, server report), `accounts` (accounts and grants per
backend, administrative access), `servers` (docker compose and the private local server); this module
orchestrates them (`up`, `status`, `down`) and re-exports the names other modules use.
"""
from __future__ import annotations

import os
import secrets as _secrets
import subprocess

from .. import settings
from .accounts import (WORKER_QUEUE_PRIVILEGES, WORKER_RESULT_PRIVILEGES, WORKER_SCHEMA_PRIVILEGES, MySQLAccounts,
                       PostgresAccounts, accounts, admin_connection, apply_server_settings, candidate_sockets,
                       declare_study, drop_account, ensure_app_user, ensure_worker_user, user_exists, worker_user)
from .connection import (APP_USER, MYSQL_HOSTS, SCHEMA_PATTERN, SERVER_SETTINGS, WORKER_USER, DatabaseError, Target,
                         answers, app_credentials, backend_of, can_login, configured_target, connect, driver_errors,
                         query, schemas, server_report)
from .servers import (ENV_PASSWORDS, docker_engine_answers, docker_up, ensure_env_file, find_server_binary,
                      install_mariadb, local_dir, process_gone, start_local_server, stop_local_server,
                      update_env_file, wait_for_login)
__all__ = [
    'APP_USER', 'DatabaseError', 'ENV_PASSWORDS', 'MYSQL_HOSTS', 'MySQLAccounts', 'WORKER_QUEUE_PRIVILEGES',
    'WORKER_RESULT_PRIVILEGES', 'WORKER_SCHEMA_PRIVILEGES', 'PostgresAccounts', 'SCHEMA_PATTERN', 'SERVER_SETTINGS', 'Target', 'WORKER_USER',
    'accounts', 'admin_connection', 'answers', 'app_credentials', 'apply_server_settings', 'backend_of',
    'can_login', 'candidate_sockets', 'configured_target', 'connect', 'docker_engine_answers', 'docker_up',
    'declare_study', 'driver_errors', 'drop_account', 'ensure_app_user', 'ensure_env_file', 'ensure_worker_user',
    'find_server_binary', 'install_mariadb', 'local_dir', 'process_gone', 'query', 'schemas', 'server_report',
    'start_local_server', 'stop_local_server', 'update_env_file', 'user_exists', 'wait_for_login',
    'worker_user', 'up', 'status', 'down',
]


def _provision_account(target: Target, user: str | None, password: str | None, reset_password: bool,
                       say) -> tuple[str, str]:
    """Create the application account, or set its password; an existing account is changed only with
    `reset_password`, so that a new checkout cannot lock out the workers of another one."""
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(
            f"{target} answers, but the application user cannot log in and no "
            "administrative login works: set DJ_USER/DJ_PASS to an existing account, or DJ_ADMIN_USER/"
            "DJ_ADMIN_PASS to an account that may create users")
    try:
        user = user or APP_USER
        if user_exists(admin, user) and not reset_password:
            known = "the configured password is wrong" if password else "its password is unknown here"
            raise DatabaseError(
                f"the account {user!r} already exists on {target} but {known}: put the right "
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
        elif target.is_local and target.postgres:
            raise DatabaseError(
                f"no PostgreSQL answers at {target.host}:{target.port}: start it (Debian: `apt-get install "
                "postgresql`, then `pg_ctlcluster 15 main start`), or `docker compose --profile postgres up -d "
                "postgres`, or point DJ_HOST/DJ_PORT at your server")
        elif target.is_local:
            start_local_server(local_dir(root) / "data", target.port, say=say)
            mode = "local server"
        else:
            raise DatabaseError(f"the configured server {target} does not answer, and it is "
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
    connection = connect(target, user, password)
    report = server_report(connection)
    connection.close()
    if not target.postgres and int(report.get("max_allowed_packet", 0)) < SERVER_SETTINGS["max_allowed_packet"]:
        problems.append(f"max_allowed_packet is {report.get('max_allowed_packet')} (< 256M): large in-table "
                        "blobs will fail; raise it in the server configuration")
    summary = {"mode": mode, "backend": target.backend, "host": target.host, "port": target.port,
               "database": target.database, "user": user, "version": report.get("version"),
               "max_allowed_packet": report.get("max_allowed_packet"),
               "collation_server": report.get("collation_server") or report.get("lc_collate"), "warnings": problems}
    say(f"database ready ({mode}): {user}@{target}, {target.backend} server {report.get('version')}")
    for problem in problems:
        say(f"  warning: {problem}")
    return summary


def status() -> dict:
    root = settings.project_root()
    target = configured_target()
    user, password = app_credentials()
    info = {"backend": target.backend, "host": target.host, "port": target.port, "database": target.database,
            "user": user, "answers": answers(target), "login": False, "local_server_pid": None, "docker": None}
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
        connection = connect(target, user, password)
        info.update(server_report(connection))
        info["schemas"] = schemas(connection)
        connection.close()
    return info


def down(say=print) -> None:
    root = settings.project_root()
    if stop_local_server(local_dir(root)):
        say("stopped the local server")
    elif docker_engine_answers() and (root / "docker-compose.yml").is_file():
        subprocess.run(["docker", "compose", "--profile", "postgres", "stop", "db", "postgres"], cwd=root)
    else:
        say("nothing of ours to stop (a configured server is left running)")
