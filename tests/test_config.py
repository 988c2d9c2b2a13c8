"""Every CANDOR_* setting is declared once, in candor.config: Settings, `candor doctor`, `candor serve
--help` and the README's table all come from (or are checked against) that one registry, and no other
module reads a setting's variable itself."""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from candor.cli.doctor import print_settings
from candor.config import SETTINGS, Address, Settings, describe, read, server_address
from candor.errors import InvalidParameter

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "candor"
TABLE_HEADER = "| variable | default | what it does |"
SETTING_NAME = re.compile(r"^(CANDOR_[A-Z0-9_]+|OLLAMA_HOST)$")


def readme_table() -> dict[str, str]:
    """The README's settings table as {variable: default}, backticks dropped."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its |---| line
    rows: dict[str, str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1]
    return rows


def test_the_readme_table_lists_exactly_the_registry_with_its_defaults() -> None:
    table = readme_table()
    assert list(table) == [s.env for s in SETTINGS], "README.md's settings table and candor.config differ"
    assert table == {s.env: s.default_text for s in SETTINGS}


def test_each_written_default_reads_as_the_default_itself() -> None:
    for setting in SETTINGS:
        if setting.default_text == "none":
            assert not setting.default(), setting.env
            continue
        try:
            written = setting.parse(setting.default_text)
        except ValueError:  # a description such as "physical cores"
            continue
        assert written == setting.default(), setting.env


def test_settings_has_one_field_per_registered_variable() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(fields) == sorted(s.key for s in SETTINGS)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_settings_read_the_environment_over_the_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CANDOR_HOME": str(tmp_path),
            "CANDOR_PARALLEL": "3",
            "CANDOR_CORS_ORIGINS": "a, b,,",
            "CANDOR_DEBUG": "1",
        }
    )
    assert (settings.home, settings.parallel, settings.cors_origins, settings.debug) == (
        tmp_path,
        3,
        ("a", "b"),
        True,
    )
    assert settings.max_queue == 32 and settings.keep_alive == "5m" and settings.api_key == ""
    assert Settings.from_env({"CANDOR_DEBUG": "0"}).debug is False


def test_ollama_host_is_read_only_when_candor_host_is_unset() -> None:
    assert server_address(environ={}) == Address("http", "127.0.0.1", 11434)
    assert server_address(environ={"OLLAMA_HOST": "0.0.0.0"}) == Address("http", "0.0.0.0", 11434)
    both = {"OLLAMA_HOST": "0.0.0.0", "CANDOR_HOST": "[::1]:9"}
    assert server_address(environ=both).url == "http://[::1]:9"
    assert server_address("10.0.0.1:2", environ=both).url == "http://10.0.0.1:2"  # a --host flag wins


@pytest.mark.parametrize(
    ("env", "raw", "says"),
    [
        ("CANDOR_PARALLEL", "four", "must be a whole number"),
        ("CANDOR_MAX_QUEUE", "-1", "must be a whole number of at least 0"),
        ("CANDOR_HOST", "host:port", r"write it as HOST\[:PORT\]"),
    ],
)
def test_a_malformed_variable_names_itself_its_valid_form_and_its_default(
    env: str, raw: str, says: str
) -> None:
    with pytest.raises(
        InvalidParameter, match=rf"{env}='{raw}' is invalid \(.*{says}.*unset it for the default"
    ):
        read(env, {env: raw})


def test_a_bad_ollama_host_is_named_as_such() -> None:
    with pytest.raises(InvalidParameter, match=r"^OLLAMA_HOST='ftp://x' is invalid"):
        read("CANDOR_HOST", {"OLLAMA_HOST": "ftp://x"})


def test_doctor_shows_every_setting_with_its_value_and_where_it_came_from() -> None:
    rows = describe({"CANDOR_CTX": "2048", "OLLAMA_HOST": "0.0.0.0:8080", "CANDOR_API_KEY": "s3cret"})
    by_env = {row.env: row for row in rows}
    assert list(by_env) == [s.env for s in SETTINGS]
    assert (by_env["CANDOR_CTX"].value, by_env["CANDOR_CTX"].source) == ("2048", "env")
    assert (by_env["CANDOR_HOST"].value, by_env["CANDOR_HOST"].source) == (
        "http://0.0.0.0:8080",
        "env OLLAMA_HOST",
    )
    assert (by_env["CANDOR_BATCH"].value, by_env["CANDOR_BATCH"].source) == ("512", "default")
    assert by_env["CANDOR_API_KEY"].value == "(set)"  # a key is never printed
    out = io.StringIO()
    print_settings([dataclasses.asdict(row) for row in rows], out)
    text = out.getvalue()
    assert "s3cret" not in text
    lines = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert set(lines) == {s.env for s in SETTINGS}
    assert lines["CANDOR_CTX"][1:3] == ["2048", "env"]
    assert lines["CANDOR_HOST"][1:4] == ["http://0.0.0.0:8080", "env", "OLLAMA_HOST"]
    assert lines["CANDOR_BATCH"][1:3] == ["512", "default"]


def test_serve_help_lists_every_setting_with_its_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "candor", "serve", "--help"], capture_output=True, text=True, check=True
    )
    listed = done.stdout.split("settings (environment variables", 1)[1]
    for setting in SETTINGS:
        assert f"  {setting.env}  " in listed
    assert "(default: 127.0.0.1:11434)" in " ".join(listed.split())


def _is_setting(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and bool(SETTING_NAME.match(node.value))
    )


def environment_reads(source: str) -> list[str]:
    """The settings' variables (CANDOR_*, OLLAMA_HOST) that `source` looks up itself: as the key of a
    `.get`/`getenv`/`.pop` call, a subscript or an `in` test, whatever mapping it is looked up in."""
    found = []
    for node in ast.walk(ast.parse(source)):
        keys: list[ast.AST] = []
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("get", "getenv", "pop", "setdefault"):
                keys = node.args[:1]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            keys = [node.slice]
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            keys = [node.left]
        found += [key.value for key in keys if _is_setting(key)]  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize(
    "source",
    [
        'import os\nx = os.environ.get("CANDOR_DEBUG")',
        'from os import environ\nx = environ["CANDOR_API_KEY"]',
        'import os\nx = os.getenv("OLLAMA_HOST", "")',
        'import os\nx = "CANDOR_HOST" in os.environ',
        'import os\nenv = os.environ\nx = env.get("CANDOR_PARALLEL", "4")',
    ],
)
def test_the_check_below_catches_each_way_to_read_a_variable(source: str) -> None:
    assert environment_reads(source)


def test_no_module_but_config_reads_a_setting_from_the_environment() -> None:
    offenders = {
        str(path.relative_to(ROOT)): reads
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "config.py" and (reads := environment_reads(path.read_text()))
    }
    assert offenders == {}, "declare the setting in candor/config.py and read it with candor.config.read()"
