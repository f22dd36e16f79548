"""The fast lane (`make test-fast`, ``-m "not e2e"``) starts no stack; a test that does is marked e2e."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest
from conftest import StartsProcesses


def test_a_test_outside_the_e2e_lane_cannot_start_pairshift_or_worker_processes() -> None:
    with pytest.raises(StartsProcesses, match="mark it @pytest.mark.e2e"):
        subprocess.run([sys.executable, "-c", "from pairshift.cli import main"], check=True)
    with pytest.raises(StartsProcesses, match="mark it @pytest.mark.e2e"):
        subprocess.run(["pairshift", "worker"], check=True)
    with pytest.raises(StartsProcesses, match="mark it @pytest.mark.e2e"):
        multiprocessing.get_context("spawn").Process(target=print).start()


def test_helper_tools_may_run_in_the_fast_lane() -> None:
    # e.g. a scorer's sandboxed python or node, docker-compose checking a file
    assert subprocess.run([sys.executable, "-I", "-c", "import json"]).returncode == 0


@pytest.mark.e2e
def test_an_e2e_test_may_start_them() -> None:
    assert subprocess.run([sys.executable, "-c", "import pairshift"]).returncode == 0
