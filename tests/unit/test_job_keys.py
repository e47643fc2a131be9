"""`jobs retry / prioritize / ignore --key NAME=VALUE`: each value is parsed by its attribute's type,
as either backend reports it (MySQL/MariaDB: int, smallint, char(32); PostgreSQL: integer, ...), and
what does not parse exactly is refused with a message that names the attribute and holds no SQL."""
from collections import namedtuple

import pytest

from neuralreg_schema import cli
from populate import jobs

Attr = namedtuple("Attr", "name type original_type uuid")


def attr(name, sql_type, original=None):
    return Attr(name, sql_type, original, False)


@pytest.mark.parametrize("sql_type", ["int", "int(11)", "integer"])
@pytest.mark.parametrize("text", ["1 OR 1=1", "1; DROP TABLE x", "1.0", "1e3", "0x10", "", " 1", "1 ", "one",
                                  "2147483648", "-2147483649", "1--", "'1'"])
def test_an_int32_refuses_what_is_not_exactly_one_int32(sql_type, text):
    with pytest.raises(ValueError) as refused:
        jobs.parse_value(attr("animal_id", sql_type), text)
    message = str(refused.value)
    assert "animal_id" in message
    assert not any(word in message.upper() for word in ("SELECT", "WHERE", "UPDATE ", "DELETE"))


@pytest.mark.parametrize("sql_type,text,value", [
    ("int", "17", 17), ("integer", "-5", -5), ("int", "2147483647", 2 ** 31 - 1), ("smallint", "32767", 32767),
    ("bigint", "-9223372036854775808", -2 ** 63), ("tinyint unsigned", "255", 255),
    ("char(32)", "a" * 32, "a" * 32), ("character(32)", "abc", "abc"), ("varchar(32)", "offline", "offline"),
    ("character varying(32)", "cifar10", "cifar10"), ("enum('a','b')", "b", "b"), ("double", "0.5", 0.5),
    ("double precision", "-1e-3", -1e-3), ("tinyint(1)", "true", True), ("boolean", "0", False)])
def test_values_of_each_type_parse_exactly(sql_type, text, value):
    parsed = jobs.parse_value(attr("x", sql_type), text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("sql_type,text", [
    ("smallint", "32768"), ("smallint", "1 OR 1=1"), ("tinyint unsigned", "-1"), ("bigint", "9223372036854775808"),
    ("char(32)", "a" * 33), ("varchar(32)", "x\n' OR 1=1"), ("enum('a','b')", "a' OR 'x'='x"),
    ("double", "nan"), ("double", "inf"), ("double", "1 OR 1"), ("tinyint(1)", "yes"), ("date", "2020-01-01 OR 1"),
    ("blob", "x"), ("longtext", "x")])
def test_other_types_refuse_what_does_not_parse(sql_type, text):
    with pytest.raises(ValueError, match="--key x"):
        jobs.parse_value(attr("x", sql_type), text)


def test_the_command_line_keeps_values_as_text_and_refuses_a_name_given_twice():
    assert cli._parse_key(["animal_id=1 OR 1=1", "session=2"]) == {"animal_id": "1 OR 1=1", "session": "2"}
    for items in (["animal_id=1", "animal_id=2"], ["=1"], ["animal_id"]):
        with pytest.raises(ValueError):
            cli._parse_key(items)
