"""pipeline_logs as the migrations create it, for the benchmarks' baseline
tables: read from migrations/<dialect>/0001_init.sql, so a baseline cannot
drift from the schema the agent writes into (the benchmarks compare the
agent with a bare `\\copy` or `.import` into the same columns)."""

import os
import re

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations")


def _init(dialect):
    with open(os.path.join(MIGRATIONS, dialect, "0001_init.sql")) as f:
        return re.sub(r"--[^\n]*", "", f.read())


def _body(dialect):
    """The text between the parentheses of CREATE TABLE … pipeline_logs ( … );"""
    sql = _init(dialect)
    start = re.search(r"CREATE TABLE (?:IF NOT EXISTS )?pipeline_logs \(", sql).end()
    depth, i = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        i += 1
    return sql[start:i - 1]


def _items(dialect):
    """Its comma-separated items (columns and table constraints), top level only."""
    items, depth, cur = [], 0, ""
    for c in _body(dialect):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += c
    items.append(cur.strip())
    return [i for i in items if i]


def columns(dialect, drop=(), keep=None, defaults=None):
    """The column definitions, in order: without `drop`, only `keep` if
    given, with `defaults` ({column: SQL}) replacing a column's DEFAULT."""
    out = []
    for item in _items(dialect):
        name = item.split()[0]
        if name.upper() in ("UNIQUE", "PRIMARY", "CONSTRAINT", "CHECK", "FOREIGN"):
            continue
        if name in drop or (keep is not None and name not in keep):
            continue
        if defaults and name in defaults:
            item = re.sub(r"DEFAULT\s+\S+", "DEFAULT " + defaults[name], item)
        out.append(item)
    return out


def unique_key(dialect):
    """The columns of the table's UNIQUE constraint (the idempotency key)."""
    for item in _items(dialect):
        m = re.match(r"UNIQUE\s*\(([^)]*)\)", item)
        if m:
            return [c.strip() for c in m.group(1).split(",")]
    return []


def table(dialect, extra="", **picked):
    """CREATE TABLE pipeline_logs with `columns(dialect, **picked)` and
    `extra` (more items, each starting with a comma) appended."""
    cols = ",\n    ".join(columns(dialect, **picked))
    return "CREATE TABLE pipeline_logs (\n    %s%s\n);\n" % (cols, extra)


def indexes(dialect):
    """The CREATE INDEX statements on pipeline_logs in the first migration."""
    stmts = re.findall(r"CREATE (?:UNIQUE )?INDEX[^;]*ON pipeline_logs[^;]*;", _init(dialect))
    return "\n".join(re.sub(r"\s+", " ", s.replace("IF NOT EXISTS ", "")) for s in stmts) + "\n"
