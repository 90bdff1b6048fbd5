"""Fixtures for the repository-level tests (end-to-end runs of the `dexh2r` command).

The ROS environment and the fixtures shared by all packages (`ros_node`, `node_launcher`,
`ros_env`) come from the root conftest.py. The session fixture below re-applies the environment
for the case where tests/ is collected without it (e.g. `pytest -c other.ini tests/`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest

from dexh2r_core.testing import configure_test_env


@pytest.fixture(scope="session", autouse=True)
def _tests_ros_env() -> None:
    configure_test_env()


@pytest.fixture
def dexh2r_cli(tmp_path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `dexh2r <args>` in a subprocess with the test environment; cwd is the test's tmp dir.

    `dexh2r_cli("bench", "transport", "--json", "out.json", timeout=60)` -> CompletedProcess
    (text output captured; no check, so tests can assert on failures too).
    """

    def run(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None, cwd=None):
        full_env = dict(configure_test_env(dict(os.environ)))
        full_env.update(env or {})
        cmd: Sequence[str] = [sys.executable, "-m", "dexh2r_core.cli", *args]
        return subprocess.run(
            cmd, env=full_env, cwd=cwd or tmp_path, capture_output=True, text=True, timeout=timeout
        )

    return run
