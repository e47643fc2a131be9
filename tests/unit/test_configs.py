"""The naming rule of configuration rows (neuralreg_schema.configs), without a database."""
import pytest

from neuralreg_schema import configs


class FakeTable:
    """Just enough of a DataJoint table for insert_named: rows keyed by 'h', restriction by a dict."""
    __name__ = "FakeTable"

    def __init__(self, rows=(), skip_silently=False):
        self.rows = list(rows)
        self.skip_silently = skip_silently      # a MySQL duplicate of the unique name, skipped without error

    def __and__(self, restriction):
        table = FakeTable([r for r in self.rows if all(r.get(k) == v for k, v in restriction.items())])
        return table

    def __bool__(self):
        return bool(self.rows)

    def keys(self):
        return [{"h": r["h"]} for r in self.rows]

    def insert1(self, row, skip_duplicates=False):
        if any(r["config_name"] == row["config_name"] for r in self.rows):
            if self.skip_silently:
                return
            raise RuntimeError("Duplicate entry for key 'config_name'")
        self.rows.append(dict(row))


def test_derived_names():
    assert configs.derived_name("demo", {}, "0123456789abcdef") == "demo"
    assert configs.derived_name("demo", {"lr": 0.1, "alpha": 5.0}, "0123456789abcdef") == "demo-alpha5.0-lr0.1"
    assert configs.derived_name(None, {}, "0123456789abcdef") == "custom-01234567"
    long = configs.derived_name("paper", {"x" * 80: 1}, "0123456789abcdef")
    assert long == "paper-01234567" and len(long) <= configs.NAME_LENGTH
    assert configs.derived_name("paper", {"arch": "res net"}, "0123456789abcdef") == "paper-01234567"


def test_insert_named_keeps_one_name_per_config():
    table = FakeTable()
    assert configs.insert_named(table, {"h": "a"}, {"h": "a", "config_name": "demo"}) == {"h": "a"}
    # the same content under another name: the existing key, under its first name
    assert configs.insert_named(table, {"h": "a"}, {"h": "a", "config_name": "other"}) == {"h": "a"}
    assert [r["config_name"] for r in table.rows] == ["demo"]
    with pytest.raises(ValueError, match="'demo' already names another configuration .h a, not b"):
        configs.insert_named(table, {"h": "b"}, {"h": "b", "config_name": "demo"})
    with pytest.raises(ValueError, match="1 to 64 characters"):
        configs.insert_named(table, {"h": "c"}, {"h": "c", "config_name": "x" * 65})


def test_insert_named_refuses_a_name_taken_meanwhile():
    """Another process inserts the name between the check and the insert: refused whether the
    database raises (PostgreSQL) or skips the row silently (MySQL's ON DUPLICATE KEY)."""
    for silently in (False, True):
        table = FakeTable(skip_silently=silently)
        original = table.__and__
        calls = []

        def racing(restriction, original=original, table=table):
            if restriction == {"config_name": "demo"} and not calls:
                calls.append(1)                                 # the check passes, then the other process wins
                result = original(restriction)
                table.rows.append({"h": "z", "config_name": "demo"})
                return result
            return original(restriction)

        table.__and__ = racing
        with pytest.raises(ValueError, match="already names another configuration"):
            configs.insert_named(FakeProxy(table), {"h": "b"}, {"h": "b", "config_name": "demo"})


class FakeProxy:
    """Routes `&` through the instance attribute (operators look up the class, not the instance)."""
    __name__ = "FakeTable"

    def __init__(self, table):
        self.table = table

    def __and__(self, restriction):
        return self.table.__and__(restriction)

    def insert1(self, row, skip_duplicates=False):
        self.table.insert1(row, skip_duplicates=skip_duplicates)
