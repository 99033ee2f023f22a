"""Layers run one way: common <- decoding <- asr <- pruning <- speechprune (the application).

Reads every import statement (including ones inside functions) of every module with ``ast``, so a lazy
import that runs up the layers is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["common", "decoding", "asr", "pruning", "speechprune"]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_higher_layer(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1 :])
    modules = sorted((ROOT / layer).rglob("*.py"))
    assert modules, f"no modules found under {layer}/"
    offending = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & higher)
        for path in modules
        if imported_packages(path) & higher
    }
    assert not offending, f"imports that run up the layers: {offending}"


def test_the_checker_sees_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from pruning.job import prune\n    import speechprune.cli\n")
    assert imported_packages(module) == {"pruning", "speechprune"}
