"""Every table definition of the package follows the design's rule 6 (docs: "every attribute has a
comment with its unit or meaning", DataJoint Elements style): each definition starts with a
`# comment`, each attribute line carries a non-empty comment, and a unit in parentheses comes
first ('# (um) cortical depth'), not last. Foreign-key lines (`-> Table`) and
index lines bring no new attribute of their own and need none. No database: the definitions are
read from the unbound classes."""
from __future__ import annotations

import importlib
import inspect
import re

import pytest

from neuralreg_schema import pipeline

# a unit written last, in parentheses: Elements write it first ('# (um) cortical depth')
UNIT_LAST = re.compile(r"\((um|mm|s|ms|Hz|px|pixels|radians|degrees|a\.u\.|a\.u\./s|cm/s|dimensionless|response unit\^2)\)\s*$")
ATTRIBUTE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s*(=\s*(?P<default>.+?))?\s*:\s*(?P<type>[^#]+?)\s*(#\s*(?P<comment>.*))?$")


def split_comment(line: str) -> tuple[str, str | None]:
    """(code, comment) of one definition line; a '#' inside a quoted default is not a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), None


def definition_problems(definition: str) -> list[str]:
    """What breaks rule 6 in one definition string: the missing table comment and each attribute
    without a comment (by name)."""
    lines = [line.strip() for line in definition.strip().splitlines()]
    lines = [line for line in lines if line]
    problems = []
    if not lines or not lines[0].startswith("#") or not lines[0].lstrip("#").strip():
        problems.append("no '# table comment' on the first line")
    for line in lines:
        if line.startswith("#") or line.startswith("---") or line.startswith("->"):
            continue
        if re.match(r"^(unique\s+)?index\s*\(", line, re.I):
            continue
        code, comment = split_comment(line)
        match = ATTRIBUTE.match(code)
        if not match:
            problems.append(f"unparsed line {line!r}")
            continue
        if not comment:
            problems.append(f"attribute {match['name']!r} has no comment")
        elif UNIT_LAST.search(comment):
            problems.append(f"attribute {match['name']!r}: its unit comes last, not first")
    return problems


EXTENSIONS = tuple(m for ms in pipeline.EXTENSIONS.values() for m in ms)   # tables in another module's schema


def table_classes():
    """(qualified name, class) of every table and part table declared in the schema modules."""
    found = []
    for module_name in pipeline.MODULES + EXTENSIONS:
        module = importlib.import_module(f"neuralreg_schema.{module_name}")
        for name, cls in vars(module).items():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and isinstance(getattr(cls, "definition", None), str)):
                continue
            found.append((f"{module_name}.{name}", cls))
            for part_name, part in vars(cls).items():
                if inspect.isclass(part) and isinstance(getattr(part, "definition", None), str):
                    found.append((f"{module_name}.{name}.{part_name}", part))
    return found


def test_the_parser_catches_what_rule_6_forbids():
    good = """
    # a table
    key_id : int32            # identifier
    ---
    -> Other
    note = '#1' : varchar(8)  # a default with a hash inside quotes
    depth : float32           # (um) cortical depth, the unit first
    unique index (note)
    """
    assert definition_problems(good) == []
    bad = """
    key_id : int32            # identifier
    ---
    note = '#1' : varchar(8)
    size : float32            #
    depth : float32           # cortical depth (um)
    """
    assert definition_problems(bad) == ["no '# table comment' on the first line",
                                        "attribute 'note' has no comment", "attribute 'size' has no comment",
                                        "attribute 'depth': its unit comes last, not first"]


def test_every_schema_module_has_tables():
    modules = {name.split(".")[0] for name, _ in table_classes()}
    assert modules == set(pipeline.MODULES) | set(EXTENSIONS)


@pytest.mark.parametrize("name,cls", table_classes(), ids=[n for n, _ in table_classes()])
def test_every_attribute_has_a_comment(name, cls):
    problems = definition_problems(cls.definition)
    assert not problems, f"{name}: " + "; ".join(problems)
