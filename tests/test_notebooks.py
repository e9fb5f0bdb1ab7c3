"""The quickstart notebook runs top to bottom (its code cells, in order, in one namespace)."""

import json
import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNIJAX_QUICKSTART_DIR", str(tmp_path))
    monkeypatch.setenv("OMNIJAX_QUICKSTART_STEPS", "20")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {}
    code_cells = [c for c in cells if c["cell_type"] == "code"]
    assert len(code_cells) >= 4
    for i, cell in enumerate(code_cells):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{i}]", "exec"), namespace)
    losses = namespace["losses"]
    assert losses and losses[-1][0] == 20
    assert (tmp_path / "run" / "checkpoints").is_dir()
