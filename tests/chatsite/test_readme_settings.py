"""The README's configuration table names every environment variable chatsite/settings.py
reads, with the minimum the code enforces, and nothing the code no longer reads.

The variables are found in the settings module's syntax tree (calls to chatsite.env's
``env_*`` helpers, ``os.environ.get``, ``os.environ[...]`` and ``os.getenv`` with a literal
name), so a new setting without a row fails here. No database: only files are read.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from accounts.sso_models import SECRET_ENV_PREFIX
from chatsite import env
from llm.key_envs import KEY_ENV_PREFIX

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "chatsite" / "settings.py"
README = ROOT / "README.md"
# Every strict parser of chatsite/env.py; a helper added there is scanned for too.
ENV_HELPERS = frozenset(name for name in vars(env) if name.startswith("env_"))
# Helpers that also read NAME_FILE (a path to a file holding the secret).
SECRET_HELPERS = frozenset({"env_secret"})
# Variables whose names an admin chooses (a model profile's key, an identity provider's
# secret): documented as PREFIX<NAME>.
NAMED_BY_ADMIN = (KEY_ENV_PREFIX, SECRET_ENV_PREFIX)


@dataclass(frozen=True)
class Read:
    name: str
    minimum: str | None  # the literal minimum=, as the README writes it
    secret: bool
    line: int


def _literal(node: ast.expr) -> str:
    """``5`` for ``5`` and for ``Decimal(5)``; the source text for anything else."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "Decimal" and len(node.args) == 1):
        return str(Decimal(ast.literal_eval(node.args[0])))
    try:
        return str(ast.literal_eval(node))
    except ValueError:
        return ast.unparse(node)


def _is_os_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def _first_string(args: list[ast.expr]) -> str | None:
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def environment_reads(source: str) -> list[Read]:
    """Every literal environment variable name ``source`` reads, wherever the read sits
    (a dict, an f-string, a condition)."""
    reads = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            name = _first_string([node.slice])
            if name:
                reads.append(Read(name, None, False, node.lineno))
            continue
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        helper = func.id if isinstance(func, ast.Name) and func.id in ENV_HELPERS else None
        from_os = isinstance(func, ast.Attribute) and (
            (func.attr == "get" and _is_os_environ(func.value))
            or (func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os")
        )
        name = _first_string(node.args)
        if name is None or not (helper or from_os):
            continue
        minimum = next((_literal(kw.value) for kw in node.keywords if kw.arg == "minimum"), None)
        reads.append(Read(name, minimum, helper in SECRET_HELPERS, node.lineno))
    return reads


def configuration_rows() -> dict[str, str]:
    """Each name in the first column of the README's configuration table, with its row."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Configuration\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]*(?:<NAME>)?)`", line.split("|")[1]):
                rows[name] = line
    return rows


def settings_reads() -> list[Read]:
    return environment_reads(SETTINGS.read_text(encoding="utf-8"))


def test_the_scanner_finds_each_way_settings_read_the_environment() -> None:
    source = """
import os
from decimal import Decimal
A = env_int("A", 1, minimum=2)
B = os.environ.get("B", "")
C = os.environ["C"]
D = os.getenv("D")
E = f"http://127.0.0.1:{env_int('E', 8000, minimum=1)}"
F = {"root": {"level": env_str("F", "INFO")}}
G = env_secret("G")
H = env_decimal("H", "5", minimum=Decimal(0))
I = env_str(NOT_A_LITERAL)
J = os.environ.get("J") if env_bool("K", False) else ""
L = other("L")
"""
    reads = {read.name: read for read in environment_reads(source)}

    assert set(reads) == {"A", "B", "C", "D", "E", "F", "G", "H", "J", "K"}
    assert (reads["A"].minimum, reads["E"].minimum, reads["H"].minimum) == ("2", "1", "0")
    assert reads["B"].minimum is None
    assert [name for name, read in reads.items() if read.secret] == ["G"]


def test_every_variable_settings_reads_has_a_row() -> None:
    reads = settings_reads()
    names = {read.name for read in reads}
    # The scanner sees reads inside a dict (LOG_LEVEL) and an f-string (PORT).
    assert {"DATABASE_URL", "SECRET_KEY", "LOG_LEVEL", "PORT"} <= names

    rows = configuration_rows()
    missing = sorted(f"{read.name} (settings.py:{read.line})" for read in reads
                     if read.name not in rows)
    assert not missing, f"README's Configuration table lacks a row for {missing}"


def test_every_secret_read_from_a_file_names_its_file_variable() -> None:
    secrets = {read.name for read in settings_reads() if read.secret}
    assert "SECRET_KEY" in secrets

    rows = configuration_rows()
    missing = sorted(f"{name}_FILE" for name in secrets if f"{name}_FILE" not in rows)
    assert not missing, f"README's Configuration table does not name {missing}"


def test_every_minimum_the_code_enforces_is_in_its_row() -> None:
    rows = configuration_rows()
    wrong = sorted(
        f"{read.name}: min {read.minimum}" for read in settings_reads()
        if read.minimum is not None and read.name in rows
        and not re.search(rf"\bmin {re.escape(read.minimum)}\b", rows[read.name])
    )
    assert not wrong, f"README's rows do not state these minima: {wrong}"


def test_every_row_names_a_variable_the_code_still_reads() -> None:
    reads = settings_reads()
    known = {read.name for read in reads}
    known |= {f"{read.name}_FILE" for read in reads if read.secret}
    known |= {f"{prefix}<NAME>" for prefix in NAMED_BY_ADMIN}

    stale = sorted(set(configuration_rows()) - known)
    assert not stale, f"README's Configuration table has rows for variables nothing reads: {stale}"


def test_the_variables_admins_name_have_rows_under_the_codes_prefixes() -> None:
    rows = configuration_rows()

    assert {f"{prefix}<NAME>" for prefix in NAMED_BY_ADMIN} <= set(rows)
