"""The layers hold: model_code never imports Dagster (each piece runs on its own, under torchrun
or in a pod), nor the orchestration packages; the search page imports no asset module."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(source: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_model_code_imports_neither_dagster_nor_the_orchestration_packages():
    wrong = {
        f"{source.relative_to(ROOT)}: {name}"
        for source in _modules("model_code")
        for name in _imports(source)
        if name.split(".")[0] in ("dagster", "assets", "pipelines", "resources")
    }
    assert wrong == set()


def test_importing_every_model_code_module_loads_no_dagster():
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules("model_code")
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_search_page_imports_no_asset_module():
    wrong = {
        f"{source.relative_to(ROOT)}: {name}"
        for source in _modules("pipelines/search")
        for name in _imports(source)
        if name.split(".")[0] == "assets"
    }
    assert wrong == set()


def test_the_store_alone_lays_out_the_data_root():
    """Assets, the launcher, the search page and the demo name the place they read or write
    (`store.shard(p)`, `store.scores(source, seed)`, `store.report("ablation_table.md")`), and
    resources/storage.py alone turns it into a path: no module joins folder names under the
    root by itself."""
    import re

    joined = re.compile(r"\bstore\.path\(\s*[^)\s]")
    found = [
        f"{source.relative_to(ROOT)}:{n}"
        for folder in ("assets", "pipelines", "resources")
        for source in _modules(folder)
        if source != ROOT / "resources" / "storage.py"
        for n, line in enumerate(source.read_text().splitlines(), 1)
        if joined.search(line)
    ]
    assert found == []
