"""The quickstart notebook runs top to bottom in a real Jupyter kernel (nbclient), with the
quick settings (shorter videos): bundled demo, demo --quick, own-photo sampling, the
sharded segment program."""

import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    monkeypatch.setenv("OMNIJAX_QUICKSTART_DIR", str(tmp_path))
    monkeypatch.setenv("OMNIJAX_QUICKSTART_QUICK", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)   # a user's kernel: one CPU device (not conftest's 8)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert sum(c.cell_type == "code" for c in nb.cells) >= 6
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "lip-sync peak correlation" in outputs and "stage-3 losses" in outputs
    assert (tmp_path / "demo" / "video.mp4").stat().st_size > 0
    assert (tmp_path / "from_scratch" / "models" / "s3" / "export.json").exists()
    assert (tmp_path / "mine.mp4").stat().st_size > 0
