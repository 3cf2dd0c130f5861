"""The notebooks in notebooks/ run top to bottom on a fresh kernel of this environment, so they cannot rot.

Each notebook starts its own local hub over a temporary folder on a random port (nothing under
~/.cache); here the kernel also gets a temporary HF_HOME, HUBCKPT_HUB_ROOT and Jupyter/IPython dirs,
and a kernelspec written for this test that runs `sys.executable` (the venv) with this checkout first
on PYTHONPATH. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "hubckpt-test"
# What each notebook must have printed: evidence it did the work, not just that no cell raised.
EXPECTED = {
    "01_publish_during_training.ipynb": ["step-0000060", "Trainer left on disk", "step-0000030"],
    "02_browse_and_load.ipynb": ["best:", "bytes received", "fine-tuned 40 steps"],
    "03_representations.ipynb": ["results.json", "CKA of transformer.h.2", "drift of transformer.h.0"],
}


def test_the_notebooks_are_committed_without_outputs():
    import nbformat

    assert {nb.name for nb in NOTEBOOKS} == set(EXPECTED)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "hubckpt-nb-" in "".join(c.source for c in nb.cells), f"{path.name} must use a temporary hub"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec for this interpreter and an environment that keeps the kernel off the user's dirs."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "hubckpt tests",
                "language": "python",
                "env": {
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                },
            }
        )
    )
    for var in ("HF_ENDPOINT", "HUBCKPT_HUB", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HUBCKPT_HUB_ROOT", str(tmp_path / "default-hub"))
    monkeypatch.setenv("HUBCKPT_SPOOL", str(tmp_path / "default-spool"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the notebooks' mkdtemp() lands here, cleaned by pytest
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # tiny models: one thread each is fastest, and two spinning thread pools on a busy 2-core machine crawl
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_fresh_kernel(path, kernel_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(path, as_version=4)
    workdir = kernel_env / "cwd"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=300, startup_timeout=120, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any failing cell
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(
                out.get("text", "")
                if out.get("output_type") == "stream"
                else json.dumps(out.get("data", {}).get("text/plain", ""))
            )
    printed = "\n".join(text)
    for needle in EXPECTED[path.name]:
        assert needle in printed, f"{path.name} did not print {needle!r}:\n{printed[-3000:]}"
    # the notebook's own hub lived under a temporary folder: nothing was written to the default root
    assert not (kernel_env / "default-hub").exists() and not (kernel_env / "default-spool").exists()
    assert [p.name[:11] for p in (kernel_env / "tmp").iterdir() if p.name.startswith("hubckpt-nb-")] == ["hubckpt-nb-"]
