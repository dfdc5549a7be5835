"""The repository's shape: one importable package, contract folders that never shadow libraries."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# receiver -> ingest -> store; api -> query -> store; nothing below imports what is above it
LAYERS = {
    "otelog.store": {
        "otelog.receiver",
        "otelog.ingest",
        "otelog.query",
        "otelog.api",
        "otelog.server",
    },
    "otelog.query": {"otelog.receiver", "otelog.ingest", "otelog.api", "otelog.server"},
    "otelog.ingest": {"otelog.receiver", "otelog.query", "otelog.api", "otelog.server"},
    "otelog.receiver": {"otelog.query", "otelog.api", "otelog.server"},
    "otelog.api": {"otelog.receiver", "otelog.ingest", "otelog.server"},
}


def test_only_otelog_is_an_importable_package_at_the_root() -> None:
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())
    assert packages == ["otelog"]
    assert not (ROOT / "graphql.py").exists()
    for folder in ("graphql", "storage", "protos", "charts"):
        assert not list((ROOT / folder).rglob("*.py")), f"{folder}/ must hold no Python files"


def test_imports_point_one_way() -> None:
    violations = []
    for path in (ROOT / "otelog").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        forbidden = next((v for k, v in LAYERS.items() if module.startswith(k)), set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    violations.append(f"{module} imports {name}")
    assert violations == []
