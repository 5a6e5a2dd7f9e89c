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
