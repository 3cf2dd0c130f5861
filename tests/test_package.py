"""The package surface: light imports, public names."""

import subprocess
import sys


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
