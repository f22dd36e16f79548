"""The database URL's password is masked everywhere it is printed or logged (issue 15, Build 7): the settings'
repr, the registry's repr, the `pairshift api` banner (tests/test_api_auth.py), and the errors and logs of a
command whose registry does not answer."""

from __future__ import annotations

import logging

import pytest

from pairshift.registry.store import Registry
from pairshift.settings import get_settings, masked_url

URL = "postgresql://registry:hunter2@127.0.0.1:1/pairshift"


@pytest.fixture
def leaky_url(pairshift_env, monkeypatch):
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", URL)
    get_settings.cache_clear()
    yield URL
    get_settings.cache_clear()


def test_settings_and_registry_reprs_hide_the_password(leaky_url):
    assert get_settings().registry_url == URL  # the code still connects with it
    assert "hunter2" not in repr(get_settings()) and "hunter2" not in str(get_settings())
    assert masked_url(URL) == "postgresql://registry:***@127.0.0.1:1/pairshift"
    reg = Registry.__new__(Registry)
    reg.url = URL
    assert repr(reg) == "Registry('postgresql://registry:***@127.0.0.1:1/pairshift')"


@pytest.mark.parametrize("argv", [["get", "deployments"], ["tokens", "list"], ["migrate", "list"]])
def test_a_command_whose_registry_is_down_never_prints_the_password(leaky_url, cli, caplog, argv):
    caplog.set_level(logging.DEBUG)
    r = cli(*argv)
    assert r.code != 0, r.out
    assert "hunter2" not in r.out + r.err
    assert "hunter2" not in caplog.text
