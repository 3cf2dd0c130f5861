"""Optional dependencies: without its extra, a feature stops at once with one line naming the extra.

A missing package is a fault the suite cannot cause otherwise (the dev environment has every extra), so
the tests make its import fail with `sys.modules[name] = None`, which is what Python does for a module
that is not installed: `import` raises ModuleNotFoundError.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hubckpt.errors import AnalysisError, HubckptError, MissingExtraError
from hubckpt.extras import require


def _is_the_one_line(e: MissingExtraError, extra: str, module: str) -> None:
    assert isinstance(e, HubckptError) and isinstance(e, ImportError)
    assert (e.extra, e.module, e.name) == (extra, module, module)
    assert f'pip install "hubckpt[{extra}]"' in str(e) and "\n" not in str(e)
    assert e.__cause__ is None and e.__suppress_context__  # no ImportError traceback above it


def test_plots_without_matplotlib_name_the_analysis_extra(monkeypatch):
    from hubckpt.analysis import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError) as caught:
        plots.plot_drift([1, 2], {"h.0": [0.0, 0.1]}, "unused.png")
    _is_the_one_line(caught.value, "analysis", "matplotlib")
    assert not isinstance(caught.value, AnalysisError)


def test_analyze_says_so_before_any_work(monkeypatch, tmp_path):
    import hubckpt

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # an unreachable hub: reaching it would be a different error, so the check came first
    with pytest.raises(MissingExtraError) as caught:
        hubckpt.analyze("alice/run", probe=tmp_path / "probe.txt", out=tmp_path / "out", hub="http://127.0.0.1:9")
    _is_the_one_line(caught.value, "analysis", "matplotlib")
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_missing_extra_as_one_line(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from hubckpt.cli import main\n"
        f"main(['analyze', 'alice/run', '--probe', {str(tmp_path / 'p.txt')!r}, '--out', {str(tmp_path / 'o')!r},"
        " '--hub', 'http://127.0.0.1:9'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ['Error: matplotlib is needed for plots but is not installed: pip install "hubckpt[analysis]"']


def test_trainer_callback_without_accelerate_names_the_trainer_extra(monkeypatch):
    from hubckpt.integrations.transformers import HubckptCallback

    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(MissingExtraError) as caught:
        HubckptCallback("alice/run")
    _is_the_one_line(caught.value, "trainer", "accelerate")


def test_a_broken_installation_keeps_its_own_error(tmp_path, monkeypatch):
    """Only a missing package is the one line; one that is there but fails to import keeps its cause."""
    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import a_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as caught:
        require("half_installed", extra="analysis", feature="plots")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert caught.value.__cause__.name == "a_dependency_that_is_not_there"
    assert require("json", extra="analysis", feature="plots") is sys.modules["json"]
