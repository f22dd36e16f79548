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


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("observations", "prune", "--older-than-days", "0"), "Invalid value for '--older-than-days'"),
        (("observations", "prune", "--older-than-days", "abc"), "Invalid value for '--older-than-days'"),
        (("eval", "--epochs", "0"), "'--epochs'"),
        (("observations", "prune", "--bogus"), "No such option: --bogus"),
        (("no-such-command",), "No such command"),
    ],
    ids=["below min", "not a number", "epochs 0", "unknown option", "unknown command"],
)
def test_a_usage_error_is_one_line_and_exit_2(cli, args, words):
    """typer vendors its own click: its usage errors must still be exit 2 with one line, never exit 1."""
    result = cli(*args)
    assert result.code == 2, result.err
    assert words in result.err and len(result.err.strip().splitlines()) == 1
