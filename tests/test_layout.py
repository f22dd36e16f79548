"""The layout of the code: workflows import nothing that does I/O, and the README's map names every module.

A workflow module is re-imported in Temporal's sandbox and replayed for days, so it takes its types from
``pairshift/contracts`` and nothing that talks to a database, the network or a template engine. A reader finds
a concept through the README's map ("Where things are"), so a renamed, added or removed module must show up
there in the same change.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Modules a reader never looks for: package fronts, private helpers, Alembic's environment.
UNLISTED = re.compile(r"(^|/)(__init__|_[a-z_]+)\.py$|^pairshift/registry/schema/")
IO_MODULES = ("sqlalchemy", "sqlmodel", "httpx", "jinja2", "anthropic", "openai")
BOUNDARY = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for folder in ("workflows", "pairshift/contracts")
    for p in (REPO / folder).glob("*.py")
)


@pytest.mark.parametrize("module", BOUNDARY)
def test_workflow_and_contract_modules_import_no_io(module: str) -> None:
    """Imported alone in a fresh interpreter (package fronts included), nothing with I/O comes along."""
    probe = (
        "import importlib, json, sys; "
        f"importlib.import_module({module!r}); "
        f"print(json.dumps(sorted(m for m in {IO_MODULES!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [], f"{module} imports {done.stdout.strip()}"


def _map() -> tuple[set[str], set[str]]:
    """(paths the map names, folders whose row lists their files one by one).

    A row's first cell holds places (``workflows/``, ``pairshift/policy.py``); a file name in its second cell
    is resolved against the row's folder: ``migration.py`` in the ``workflows/`` row is
    ``workflows/migration.py``, ``tests/conftest.py`` anywhere is itself.
    """
    section = (REPO / "README.md").read_text().split("## Where things are", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    listing: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        place, what = line.split(" | ", 1)
        places = re.findall(r"`([^`]+)`", place)
        named.update(p.rstrip("/") for p in places)
        folders = [p for p in places if p.endswith("/")] or [""]
        for name in re.findall(r"`([\w/.-]+\.(?:py|yaml)|[\w-]+/)`", what):
            hits = [f"{folder}{name}".rstrip("/") for folder in folders if (REPO / folder / name).exists()]
            hits += [name.rstrip("/")] if "/" in name.rstrip("/") and (REPO / name).exists() else []
            named.update(hits or [f"{folders[0]}{name}".rstrip("/")])
            listing.update(folder.rstrip("/") for folder in folders if name.endswith(".py") and folder)
    return named, listing


def _modules() -> list[str]:
    return sorted(
        p.relative_to(REPO).as_posix()
        for top in ("pairshift", "workflows", "activities", "worker")
        for p in (REPO / top).rglob("*.py")
        if not UNLISTED.search(p.relative_to(REPO).as_posix())
    )


def test_every_path_on_the_map_exists() -> None:
    named, _ = _map()
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"README's map (Where things are) names paths that do not exist: {missing}"


def test_every_module_is_on_the_map() -> None:
    """Named itself, or inside a folder the map names as a whole (one that does not list its files)."""
    named, listing = _map()
    unlisted = [
        m
        for m in _modules()
        if m not in named and not any(m.startswith(f"{n}/") and n not in listing for n in named)
    ]
    assert not unlisted, f"modules missing from README's map (Where things are): {unlisted}"
