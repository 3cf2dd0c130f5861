"""The package surface: light imports, public names."""

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from . import environment as test_env


def test_import_is_light():
    code = (
        "import sys, hubckpt; hubckpt.Publisher; hubckpt.convert; "
        "print(sorted(m for m in ('torch', 'transformers', 'starlette', 'uvicorn', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_resolve():
    import hubckpt

    for name in hubckpt.__all__:
        assert getattr(hubckpt, name) is not None, name


# -- the installed package (run against the installed wheel by `make wheel-check`) ----------------------

CHECKOUT = Path(__file__).resolve().parents[1]
# What a wheel must ship beside the code, whatever the checkout beside it holds.
PACKAGE_DATA = [
    "__init__.pyi",
    "py.typed",
    "model_cards/revision.md.j2",
    "model_cards/repo.md.j2",
    "server/web/templates/base.html",
    "server/web/templates/model.html",
    "server/web/templates/tree.html",
    "server/web/static/style.css",
    "server/web/static/favicon.svg",
]


def _data_files_of_the_checkout() -> list[str]:
    """Every file under the checkout's hubckpt/ that is not code (templates, static files, stubs...)."""
    source = CHECKOUT / "hubckpt"
    if not source.is_dir():
        return []
    found = []
    for folder, dirs, names in os.walk(source, followlinks=True):  # through the model_cards link
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [str((Path(folder) / n).relative_to(source)) for n in names if not n.endswith((".py", ".pyc"))]
    return sorted(found)


def test_the_installed_package_has_all_its_data():
    """A wheel without its templates, web assets or stubs fails here, not in a user's hands."""
    package = resources.files("hubckpt")
    expected = sorted(set(PACKAGE_DATA) | set(_data_files_of_the_checkout()))
    missing = [name for name in expected if not package.joinpath(*name.split("/")).is_file()]
    assert missing == [], f"not in the installed package {package}: {missing}"


def test_templates_load_from_the_installed_package():
    from hubckpt.cards import REPO_TEMPLATE, REVISION_TEMPLATE, _environment
    from hubckpt.server.web.render import environment as pages

    cards = _environment(None)
    assert "{{" in cards.loader.get_source(cards, REVISION_TEMPLATE)[0]
    assert "{{" in cards.loader.get_source(cards, REPO_TEMPLATE)[0]
    names = pages().list_templates()
    assert {"base.html", "model.html", "tree.html", "blob.html"} <= set(names)
    for name in names:
        pages().get_template(name)  # compiles


@pytest.mark.skipif(test_env.installed_in() is None, reason="only under `make wheel-check`")
def test_the_package_under_test_is_the_installed_one():
    """Under `make wheel-check` the suite must import the wheel installed in the fresh venv, never the checkout."""
    import hubckpt

    venv = test_env.installed_in()
    assert venv is not None
    venv = venv.resolve()
    assert Path(hubckpt.__file__).resolve().is_relative_to(venv)
    assert not Path(hubckpt.__file__).resolve().is_relative_to(CHECKOUT)


def test_the_package_and_its_data_work_from_a_zip(tmp_path):
    """Package data is read through the package's loader, never a guessed path: zipimport works too."""
    import zipfile

    import hubckpt

    source = Path(hubckpt.__file__).parent  # the package under test: a checkout or an installed wheel
    archive = tmp_path / "hubckpt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for folder, dirs, names in os.walk(source, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in names:
                path = Path(folder) / name
                z.write(path, Path("hubckpt") / path.relative_to(source))
    code = f"""
import sys
sys.path.insert(0, {str(archive)!r})
import hubckpt
assert hubckpt.__file__.startswith({str(archive)!r}), hubckpt.__file__
assert hubckpt.CardOptions and "MissingExtraError" in hubckpt.__all__
from hubckpt.cards import REVISION_TEMPLATE, _environment
cards = _environment(None)
assert "{{{{" in cards.loader.get_source(cards, REVISION_TEMPLATE)[0]
from hubckpt.server.web.render import environment
environment().get_template("model.html")
from hubckpt.server.web import routes
assert (routes._STATIC / "style.css").read_bytes() and "favicon.svg" in routes._STATIC_FILES
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
