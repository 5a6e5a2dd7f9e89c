"""The docs live in the repository and say what the code does."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_reference_is_generated_from_the_code():
    from pipelines.config_reference import reference

    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference(), (
        "docs/configuration.md is out of date: run "
        ".venv/bin/python -m pipelines.config_reference > "
        "docs/configuration.md"
    )


def test_readme_and_docs_link_only_to_files_in_the_repository():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name} links to {target}"


def test_code_points_only_to_docs_in_the_repository():
    """A docstring or comment that names a document (`docs/design.md`, `README.md`) names
    one the repository holds: users do not have the steering folder it may have come from."""
    named = re.compile(r"(?<![\w/.-])(docs/[\w-]+\.md|[A-Z][A-Z_]+\.md)\b")
    missing = []
    for folder in ("assets", "model_code", "pipelines", "resources", "tests", "benchmarks"):
        for source in sorted((ROOT / folder).rglob("*.py")):
            for doc in named.findall(source.read_text()):
                if not (ROOT / doc).exists():
                    missing.append(f"{source.relative_to(ROOT)} names {doc}")
    assert missing == []


def test_docs_name_only_code_paths_the_repository_holds():
    """A path to the project's code or deploy files in the README or docs/ exists: a move
    (model_code by concern) that leaves a doc pointing at the old file fails here."""
    path = re.compile(
        r"`((?:assets|model_code|pipelines|resources|tests|benchmarks|deploy)/[^`]*)`"
    )
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for found in path.findall(doc.read_text()):
            target = found.split("::")[0].split(" ")[0]
            if any(c in target for c in "<{*…"):
                continue
            if not (ROOT / target).exists():
                missing.append(f"{doc.name}: {found}")
    assert missing == []


def test_the_design_draws_every_asset():
    """docs/design.md's graph names every asset of the Definitions (a per-source asset as
    `<name>/<S>`), so a new asset cannot go undrawn."""
    from pipelines.definitions import defs

    design = (ROOT / "docs" / "design.md").read_text()
    graph = defs.resolve_asset_graph()
    undrawn = []
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        drawn = re.search(rf"(?<![\w/]){re.escape(name)}(?![\w])", design)
        if len(key.path) > 1:
            drawn = drawn or f"{key.path[0]}/<S>" in design
        if not drawn:
            undrawn.append(name)
    assert undrawn == []


def test_only_the_settings_module_reads_the_environment():
    """Every environment variable is read in model_code/runtime/settings.py (and listed in
    docs/configuration.md from there): no other module reads os.environ or os.getenv (copying
    the environment for a child process, or setting defaults in it, is not reading a setting)."""
    import ast

    readers = []
    for folder in ("assets", "model_code", "pipelines", "resources"):
        for source in sorted((ROOT / folder).rglob("*.py")):
            if source == ROOT / "model_code" / "runtime" / "settings.py":
                continue
            for node in ast.walk(ast.parse(source.read_text())):
                environ = lambda n: (
                    isinstance(n, ast.Attribute)
                    and n.attr == "environ"
                    and isinstance(n.value, ast.Name)
                    and n.value.id == "os"
                )
                read = (
                    (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and (
                            (environ(node.func.value) and node.func.attr == "get")
                            or (node.func.attr == "getenv")
                        )
                    )
                    or (
                        isinstance(node, ast.Subscript)
                        and environ(node.value)
                        and isinstance(node.ctx, ast.Load)
                    )
                    or (
                        isinstance(node, ast.Compare)
                        and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
                        and any(environ(c) for c in node.comparators)
                    )
                )
                if read:
                    readers.append(f"{source.relative_to(ROOT)}:{node.lineno}")
    assert readers == []


def test_every_setting_is_listed_in_the_configuration_reference():
    from model_code.runtime.settings import SETTINGS

    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert SETTINGS and all(f"| `{s.name}` |" in reference for s in SETTINGS)
