"""`hubckpt.environment`: the one module that reads `HUBCKPT_*` variables, and every one of them documented."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

import hubckpt
from hubckpt import environment

from . import environment as test_environment

PACKAGE = Path(hubckpt.__file__).parent
CHECKOUT = Path(__file__).resolve().parents[1]  # tests/ and bench/ (the package may be an installed wheel)
NAME = re.compile(r"HUBCKPT_[A-Z0-9_]*[A-Z0-9]")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "environment.py" or p.parent != PACKAGE)


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ` (from os import environ)."""
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _hubckpt_key(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("HUBCKPT_")


def _reads(tree: ast.AST) -> list[int]:
    """Lines that read a `HUBCKPT_*` variable from the process environment."""
    lines = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            method = func.attr if isinstance(func, ast.Attribute) else None
            if method == "getenv" or (method in ("get", "pop", "setdefault") and _is_environ(func.value)):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            key = node.left
        if _hubckpt_key(key):
            lines.append(node.lineno)
    return lines


def test_only_environment_reads_hubckpt_variables():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{line}" for line in _reads(tree)]
        # a variable's name held in a constant elsewhere (FOO_ENV = "HUBCKPT_FOO") would hide a read from the check
        offenders += [
            f"{path.relative_to(PACKAGE.parent)}:{node.lineno} (name {node.value!r})"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value)
        ]
    assert offenders == [], "read HUBCKPT_* through hubckpt.environment, not os.environ: " + ", ".join(offenders)


def test_tests_and_bench_read_hubckpt_variables_only_through_their_registry():
    """Test- and bench-only knobs live in tests/environment.py (not the package's registry, nor its docs); every
    `HUBCKPT_*` name read or set anywhere is in one of the two registries, and only those two modules read them."""
    package = {v.name for v in environment.VARIABLES}
    tests_only = {v.name for v in test_environment.VARIABLES}
    assert package & tests_only == set()
    for var in test_environment.VARIABLES:
        assert NAME.fullmatch(var.name) and len(var.description) > 20, var.name
    registry = Path(test_environment.__file__).resolve()
    offenders = []
    for folder in (CHECKOUT / "tests", CHECKOUT / "bench"):
        for path in sorted(folder.rglob("*.py")):
            if path.resolve() != registry:
                tree = ast.parse(path.read_text(), filename=str(path))
                offenders += [f"{path.relative_to(CHECKOUT)}:{line}" for line in _reads(tree)]
    assert offenders == [], (
        "tests and bench read HUBCKPT_* variables through tests/environment.py (registered there): "
        + ", ".join(offenders)
    )
    # what the scripts around the tests set (`make wheel-check` sets HUBCKPT_TEST_INSTALLED_IN for the tests)
    scripts = [CHECKOUT / "Makefile", *sorted((CHECKOUT / ".ci").glob("*"))]
    named = {m for path in scripts if path.is_file() for m in NAME.findall(path.read_text())}
    assert named - package - tests_only == set()


def test_the_check_sees_reads():
    code = (
        "import os\nfrom os import environ\n"
        "a = os.environ.get('HUBCKPT_X')\nb = os.environ['HUBCKPT_Y']\nc = os.getenv('HUBCKPT_Z')\n"
        "d = 'HUBCKPT_W' in environ\nos.environ['HUBCKPT_DEBUG'] = '1'\ne = os.environ.get('HOME')\n"
    )
    assert _reads(ast.parse(code)) == [3, 4, 5, 6]


def test_every_variable_is_documented():
    names = [v.name for v in environment.VARIABLES]
    assert len(names) == len(set(names))
    for var in environment.VARIABLES:
        assert isinstance(var, environment.EnvVar)
        assert NAME.fullmatch(var.name), var.name
        assert len(var.description) > 20, var.name
        assert var.default is None or isinstance(var.default, str)
    # every HUBCKPT_* name the package mentions (code, docstrings, CLI help) is in the registry
    mentioned = {m for path in PACKAGE.rglob("*.py") for m in NAME.findall(path.read_text())}
    assert mentioned - set(names) == set()
    with pytest.raises(AttributeError):
        environment.HUB.name = "other"  # type: ignore[misc]


def test_defaults_and_overrides(monkeypatch, tmp_path):
    for var in environment.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert environment.hub() == "local"
    assert environment.hub_root() == Path.home() / ".cache" / "hubckpt" / "hub"
    assert environment.spool() == Path.home() / ".cache" / "hubckpt" / "spool"
    assert environment.token() is None
    assert (environment.http_timeout(), environment.connect_timeout()) == (120.0, 10.0)
    assert environment.direct_io() is True
    assert environment.progress_bars() is None
    assert environment.debug() is False
    assert environment.fault() == ""

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert environment.hub() == "http://127.0.0.1:1"
    monkeypatch.setenv("HUBCKPT_HUB", "hf")
    assert environment.hub() == "hf"
    monkeypatch.setenv("HUBCKPT_HUB_ROOT", str(tmp_path / "hub"))
    monkeypatch.setenv("HUBCKPT_SPOOL", "~/spool")
    assert environment.hub_root() == tmp_path / "hub"
    assert environment.spool() == Path.home() / "spool"
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "3.5")
    monkeypatch.setenv("HUBCKPT_CONNECT_TIMEOUT", "not a number")
    assert (environment.http_timeout(), environment.connect_timeout()) == (3.5, 10.0)
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0")
    assert environment.http_timeout() == 120.0
    monkeypatch.setenv("HUBCKPT_DIRECT_IO", "0")
    assert environment.direct_io() is False
    monkeypatch.setenv("HUBCKPT_DEBUG", "1")
    assert environment.debug() is True


@pytest.mark.parametrize(
    ("disable", "old", "expected"),
    [("1", None, False), ("true", None, False), ("0", None, True), (None, "1", True), ("1", "1", False)],
)
def test_progress_bars_one_variable(monkeypatch, disable, old, expected):
    for name, value in (("HUBCKPT_DISABLE_PROGRESS_BARS", disable), ("HUBCKPT_PROGRESS_BARS", old)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(environment, "_warned_progress_bars", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert environment.progress_bars() is expected
        environment.progress_bars()
    deprecations = [w for w in caught if issubclass(w.category, FutureWarning)]
    if disable is None:  # the old name alone: it still works, and says once what to use instead
        assert len(deprecations) == 1
        assert "HUBCKPT_DISABLE_PROGRESS_BARS=0" in str(deprecations[0].message)
    else:
        assert deprecations == []
