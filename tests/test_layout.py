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


# Each module is imported in a process of its own, forked from one interpreter that has loaded only the
# libraries every one of them needs (pydantic, temporalio.workflow; checked to bring no I/O module): the same
# question as a fresh `python -c "import module"` per module, without paying ~1 s of interpreter start and
# those imports 22 times per run.
_PROBE_SERVER = """
import importlib, json, os, sys, traceback
io = json.loads(sys.argv[1])
import pydantic, temporalio.workflow
print(json.dumps(sorted(m for m in io if m in sys.modules)), flush=True)
for line in sys.stdin:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(line.strip())
            out = {"io": sorted(m for m in io if m in sys.modules)}
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as answer:
        data = answer.read()
    os.waitpid(pid, 0)
    print(data.decode() or json.dumps({"error": "the probe died"}), flush=True)
"""


@pytest.fixture(scope="module")
def import_probe():
    """``probe(module)`` -> the I/O modules importing ``module`` alone brought in (or an error)."""
    server = subprocess.Popen(
        [sys.executable, "-c", _PROBE_SERVER, json.dumps(IO_MODULES)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    preloaded = json.loads(server.stdout.readline())
    assert preloaded == [], f"the probe's shared libraries import {preloaded}"

    def probe(module: str) -> dict:
        server.stdin.write(module + "\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    try:
        yield probe
    finally:
        server.stdin.close()
        server.wait(timeout=30)


@pytest.mark.parametrize("module", BOUNDARY)
def test_workflow_and_contract_modules_import_no_io(module: str, import_probe) -> None:
    """Imported alone in a fresh process (package fronts included), nothing with I/O comes along."""
    answer = import_probe(module)
    assert "error" not in answer, answer.get("error")
    assert answer["io"] == [], f"{module} imports {answer['io']}"


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
