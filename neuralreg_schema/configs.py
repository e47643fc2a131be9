"""Named, content-addressed configuration rows (rule 5 of the design), shared by
`predictive.PredictiveModelConfig` and `classifier.ClassifierConfig`.

A configuration's key is the hash of its content, and its `config_name` identifies it too (a unique
index): one name never stands for two different configurations. The rules:

- an identical configuration returns the existing key, and keeps the name it was first added under;
- a name already given to another configuration is refused with a ValueError that names the fix;
- without an explicit name, a named recipe with overrides gets a derived name ('demo-lr0.001'), and a
  plain dict 'custom-<first 8 hex digits of its hash>', so `add("demo", lr=...)` never reuses 'demo'.

Tables stay in the schema modules; this module only takes a table class and never imports datajoint.
"""
from __future__ import annotations

NAME_LENGTH = 64          # varchar(64) of config_name


def derived_name(recipe: str | None, overrides: dict, content_hash: str) -> str:
    """The name of a configuration added without an explicit one: the recipe's name when there are no
    overrides, the recipe's name and the overrides ('paper-archresnet34-lr0.1', keys sorted) when
    there are, the recipe's name and the hash when that is too long, 'custom-<hash>' for a dict."""
    if recipe is None:
        return f"custom-{content_hash[:8]}"
    if not overrides:
        return recipe
    name = recipe + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    if len(name) <= NAME_LENGTH and " " not in name:
        return name
    return f"{recipe[:NAME_LENGTH - 9]}-{content_hash[:8]}"


def insert_named(table, key: dict, row: dict) -> dict:
    """Insert `row` (its primary key `key`, its name `row['config_name']`) into the configuration
    table `table` unless an identical configuration is there; return `key`. Refuses a name that
    already names another configuration (also when another process inserted it meanwhile)."""
    name = row["config_name"]
    if not name or len(name) > NAME_LENGTH:
        raise ValueError(f"{table.__name__}: a config name has 1 to {NAME_LENGTH} characters, got {name!r}")
    if table & key:
        return key
    _refuse_taken(table, key, name)
    try:
        table.insert1(row, skip_duplicates=True)
    except Exception:
        if table & key:           # another process inserted the same configuration meanwhile
            return key
        _refuse_taken(table, key, name)
        raise
    if not table & key:           # MySQL skips a duplicate of the unique name silently
        _refuse_taken(table, key, name)
        raise RuntimeError(f"{table.__name__}: configuration {key} was not inserted")
    return key


def _refuse_taken(table, key: dict, name: str) -> None:
    other = (table & {"config_name": name}).keys()
    if other:
        (hash_attr, stored), = other[0].items()
        raise ValueError(
            f"{table.__name__}: the name {name!r} already names another configuration "
            f"({hash_attr} {stored}, not {key[hash_attr]}): pass another name= (or delete that configuration "
            f"first: ({table.__name__} & {{'config_name': {name!r}}}).delete())")


__all__ = ["NAME_LENGTH", "derived_name", "insert_named"]
