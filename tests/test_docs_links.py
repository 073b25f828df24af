"""The README and docs/ link only to files a clone has (no ``../shared``), and every one exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
"""A markdown link's target: ``[text](target)``."""
CODE_PATH = re.compile(r"`((?:\.\./|[\w.-]+/)[\w./-]*\.(?:md|py|toml))`")
"""A file path written as code: ```docs/ingest.md```, ```features/contract.py```."""


def _anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the headings of a markdown file."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_outside_the_repo(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{doc.name} points at ../shared, which a clone has not"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or ROOT not in (file, *file.parents):
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    for path in CODE_PATH.findall(text):
        # written from the repo root (README, docs) or from the doc's own directory
        if not any((base / path).exists() for base in (ROOT, doc.parent)):
            broken.append(f"`{path}`")
    assert not broken, f"{doc.name}: links to missing files: {broken}"


def test_the_data_contract_names_every_canonical_column() -> None:
    from features.contract import REQUIRED, SCHEMAS

    text = (ROOT / "docs" / "data-contract.md").read_text(encoding="utf-8")
    for table, columns in SCHEMAS.items():
        section = text.split(f"## {table} ", 1)[1].split("\n## ", 1)[0]
        for column in columns:
            assert f"| `{column}` |" in section, f"{table}.{column} is not documented"
        for column in REQUIRED[table]:
            row = next(line for line in section.splitlines() if f"| `{column}` |" in line)
            assert "| yes" in row, f"{table}.{column} is required but not documented so"
