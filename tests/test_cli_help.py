"""Every command says what it does."""

import pytest
from typer.main import get_command

from pairshift.cli import app


def _commands(group, prefix=()):
    for name, cmd in sorted(getattr(group, "commands", {}).items()):
        yield prefix + (name,), cmd
        yield from _commands(cmd, prefix + (name,))


ALL = list(_commands(get_command(app)))


def test_root_help(cli):
    result = cli("--help")
    assert result.code == 0 and "migrations of LLM prompt x model pairs" in result.out


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help(cli, path, cmd):
    assert (cmd.help or "").strip(), f"`pairshift {' '.join(path)}` has no help text"
    result = cli(*path, "--help")
    assert result.code == 0 and "Usage" in result.out
