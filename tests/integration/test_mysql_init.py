"""docker/mysql-init on a real server: the SQL the MySQL image's entrypoint would run (the script
sourced with the entrypoint's helpers stubbed) is executed on the test server (MariaDB here; the
statements are valid on MySQL 8.4 too) for uniquely named accounts; the application account may
create a `neuralreg_...` schema, the worker account fills it but cannot drop it or touch another."""
import re
import secrets
import uuid

import pytest

from neuralreg_schema import db
from tests.unit.test_compose import _init_sql


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("-- "))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def test_init_script_accounts_on_the_server(modules):
    target = db.configured_target()
    if target.postgres:
        pytest.skip("docker/mysql-init is for the MySQL image")
    admin = db.admin_connection(target)
    if admin is None:
        pytest.skip("no administrative access to the test server to create accounts")
    tag = uuid.uuid4().hex[:8]
    app, worker = f"nr_ia{tag}", f"nr_iw{tag}"
    app_pw, worker_pw = secrets.token_urlsafe(12) + "'q", secrets.token_urlsafe(12)
    schema = f"neuralreg_i{tag}_experiment"
    try:
        # the image creates MYSQL_USER before it runs the init scripts
        db.query(admin, "CREATE USER %s@'%%' IDENTIFIED BY %s", (app, app_pw))
        out = _init_sql({"MYSQL_USER": app, "MYSQL_PASSWORD": app_pw, "NEURALREG_WORKER_USER": worker,
                         "NEURALREG_WORKER_PASSWORD": worker_pw})
        assert out.returncode == 0, out.stderr
        for statement in _statements(out.stdout):
            db.query(admin, statement)
        grants = " ".join(r[0] for r in db.query(admin, "SHOW GRANTS FOR %s@'%%'", (worker,)))
        assert "`neuralreg\\_%`" in grants and "DROP" not in grants and "ALTER" not in grants
        # both accounts exist as @'%' only, as in the image
        as_app = db.connect(target, app, app_pw)
        as_worker = db.connect(target, worker, worker_pw)
        try:
            db.query(as_app, f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            db.query(as_app, f"CREATE TABLE `{schema}`.`t` (k int PRIMARY KEY)")
            db.query(as_worker, f"INSERT INTO `{schema}`.`t` VALUES (1)")
            db.query(as_worker, f"CREATE TABLE `{schema}`.`~~t` (k int PRIMARY KEY)")   # a job table
            assert db.query(as_worker, f"SELECT k FROM `{schema}`.`t`") == ((1,),)
            for sql in (f"DROP DATABASE `{schema}`", f"ALTER TABLE `{schema}`.`t` ADD COLUMN x int",
                        "CREATE DATABASE `other_" + tag + "`", "CREATE DATABASE `neuralregx" + tag + "`"):
                with pytest.raises(Exception, match="denied"):
                    db.query(as_worker, sql)
        finally:
            as_app.close()
            as_worker.close()
    finally:
        db.query(admin, f"DROP DATABASE IF EXISTS `{schema}`")
        db.drop_account(admin, worker)
        db.drop_account(admin, app)
        admin.close()
