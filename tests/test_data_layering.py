"""Imports point down the data's way (models <- diffusion <- data <- train / sample <- eval
<- cli), and each shared mechanism has one home. Read from the source with `ast`, so lazy
imports inside functions count too."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "omnijax"
# layer of each top-level part of the package; modules outside the table (errors,
# module_io) are shared utilities any layer may use
LAYER = {"models": 0, "diffusion": 1, "data": 2, "train": 3, "sample": 3, "export": 4,
         "eval": 4, "demo": 5, "cli": 5}
SHARED = {"errors", "module_io"}


def _modules(part: str):
    root = PKG / part
    return sorted(root.rglob("*.py")) if root.is_dir() else [PKG / f"{part}.py"]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every omnijax import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            # `from omnijax import train` names the part in the imported names
            if node.module == "omnijax":
                out += [(node.lineno, f"omnijax.{a.name}") for a in node.names]
    return [(n, m) for n, m in out if m == "omnijax" or m.startswith("omnijax.")]


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("part", ["models", "diffusion", "data"])
def test_lower_layers_import_nothing_above_them(part):
    bad = []
    for path in _modules(part):
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target in SHARED:
                continue
            if LAYER.get(target, 99) > LAYER[part]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_data_imports_nothing_from_train():
    hits = [f"{p.relative_to(PKG.parent)}:{n} {m}" for p in _modules("data")
            for n, m in _imports(p) if _part(m) == "train"]
    assert not hits, hits


def _definitions(kind, name_ok):
    """(file, name) of every top-level def / assignment in the package matching name_ok."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if kind == "def" and isinstance(node, ast.FunctionDef) and name_ok(node.name):
                out.append((str(path.relative_to(PKG)), node.name))
            if kind == "assign" and isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                out += [(str(path.relative_to(PKG)), t.id) for t in targets
                        if isinstance(t, ast.Name) and name_ok(t.id)]
    return out


def test_conditions_are_defined_once():
    assert _definitions("assign", lambda n: n == "CONDITIONS") == [("models/conditions.py", "CONDITIONS")]


def test_one_batch_sharding_function():
    assert _definitions("def", lambda n: "batch_sharding" in n) == \
        [("models/partitioning.py", "batch_sharding")]
    # no second table of batch axes to drift from the `batch` rule
    assert _definitions("assign", lambda n: n == "BATCH_AXES") == []
    # one function turns process-local rows into global arrays
    assert _definitions("def", lambda n: n in ("to_global", "global_batch")) == \
        [("data/pipeline.py", "to_global")]


def test_moved_modules_are_gone():
    # moved, not forwarded: importers use the new homes
    for old in ("train/curriculum.py", "train/data.py"):
        assert not (PKG / old).exists(), old
    assert not (PKG.parent / "configs" / "common.py").exists()
