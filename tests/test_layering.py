"""The layering stays true: no module imports a layer above its own.

``features`` <- ``models`` <- ``serving`` <- ``pipelines``: each package may import only the
ones to its left. Inside ``models`` the wings keep their own order too: ``deals`` (the deal
models) <- ``forecast`` (which runs them) ; ``anomalies`` reads only ``forecast.newbiz``'s
Prophet helpers and nothing of ``deals``. Every import in every module is parsed — including
imports inside functions — so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("features", "models", "serving", "pipelines")

# (importing module prefix, imported module prefix) pairs that are not allowed inside models/.
FORBIDDEN_WINGS = (
    ("models.deals", "models.forecast"),
    ("models.deals", "models.anomalies"),
    ("models.forecast", "models.anomalies"),
    ("models.anomalies", "models.deals"),
    ("models.metrics", "models."),
)
ALLOWED_ANOMALY_FORECAST = ("models.forecast.newbiz",)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every absolute module an import statement in ``path`` names, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    package = _module_name(path, root).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from models import metrics` names the module models.metrics
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _modules(root: Path) -> list[Path]:
    return sorted(p for layer in LAYERS for p in (root / layer).rglob("*.py"))


def upward_imports(root: Path = ROOT) -> list[str]:
    """``file:line: a imports b`` for every import that runs up the layers or across wings."""
    problems: dict[str, str] = {}  # one report per import line
    for path in _modules(root):
        name = _module_name(path, root)
        own = LAYERS.index(name.split(".")[0])
        for line, target in _imports(path, root):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in LAYERS and LAYERS.index(top) > own:
                problems.setdefault(where, f"{where}: {name} ({LAYERS[own]}) imports {target}")
                continue
            for source, banned in FORBIDDEN_WINGS:
                if (name == source or name.startswith(source + ".")) and (
                    target.startswith(banned) and not target.startswith(source)
                ):
                    problems.setdefault(where, f"{where}: {name} imports {target} across wings")
            if name.startswith("models.anomalies") and target.startswith("models.forecast."):
                if not target.startswith(ALLOWED_ANOMALY_FORECAST):
                    problems.setdefault(where, f"{where}: {name} imports {target} across wings")
    return list(problems.values())


def test_the_scan_sees_every_package() -> None:
    names = {_module_name(p, ROOT) for p in _modules(ROOT)}
    for wing in ("models.deals", "models.forecast", "models.anomalies", "features.kpis"):
        assert any(n.startswith(wing + ".") for n in names), wing
    assert len(names) > 80


def test_no_import_runs_up_the_layers() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The check can fail: a features module importing models, and a lazy serving import of
    pipelines, are both reported."""
    fake_root = tmp_path
    for layer in LAYERS:
        (fake_root / layer).mkdir()
        (fake_root / layer / "__init__.py").write_text("")
    (fake_root / "features" / "bad.py").write_text("from models.deals import probability\n")
    (fake_root / "serving" / "lazy.py").write_text(
        "def f():\n    import pipelines.cli\n    return pipelines.cli\n"
    )
    (fake_root / "models" / "deals").mkdir()
    (fake_root / "models" / "deals" / "x.py").write_text("from models.forecast import revenue\n")
    found = upward_imports(fake_root)
    assert any("features/bad.py:1" in p and "models.deals" in p for p in found)
    assert any("serving/lazy.py:2" in p and "pipelines.cli" in p for p in found)
    assert any("models/deals/x.py:1" in p and "across wings" in p for p in found)
    assert len(found) == 3
