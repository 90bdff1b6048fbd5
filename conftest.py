"""Root pytest configuration: applies to every test path (src/*/test and tests/).

The ROS environment is set in `pytest_configure`, i.e. before any test module is imported, so a
module that initialises rclpy at import time also gets it: LOCALHOST discovery, the project's Fast
DDS shared-memory profile and one ROS_DOMAIN_ID per xdist worker (see
dexh2r_core.testing.configure_test_env). Fixtures shared by all packages live here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dexh2r_core.testing import NodeProcess, configure_test_env, ros_env_summary, start_node


def pytest_configure(config: pytest.Config) -> None:
    configure_test_env()


def pytest_report_header(config: pytest.Config) -> str:
    env = ros_env_summary()
    return (
        f"dexh2r ROS test env: discovery={env['ROS_AUTOMATIC_DISCOVERY_RANGE']} "
        f"domain={env['ROS_DOMAIN_ID']} (per xdist worker) profile={env['FASTDDS_DEFAULT_PROFILES_FILE']}"
    )


@pytest.fixture(scope="session", autouse=True)
def dexh2r_test_env() -> dict[str, str | None]:
    """The session's ROS environment; re-applied in case something changed os.environ since start."""
    configure_test_env()
    return ros_env_summary()


@pytest.fixture
def ros_env() -> dict[str, str]:
    """A copy of the test environment for subprocesses (`subprocess.run(..., env=ros_env)`)."""
    return dict(configure_test_env(dict(os.environ)))


@pytest.fixture
def ros_node(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An rclpy node in a fresh context, shut down after the test (imports rclpy lazily)."""
    from dexh2r_core.testing import ros_test_node

    # ROS node names allow [A-Za-z0-9_] only; parametrised test ids have more.
    with ros_test_node(re.sub(r"\W", "_", f"test_{request.node.name}")[:60]) as node:
        yield node


class NodeLauncher:
    """Starts node processes for one test (logs under the test's tmp dir) and stops them all after."""

    def __init__(self, log_dir: str | os.PathLike[str]):
        self.log_dir = log_dir
        self.processes: list[NodeProcess] = []

    def start(self, target: str | Sequence[str], *args: str, **kwargs: Any) -> NodeProcess:
        kwargs.setdefault("log_dir", self.log_dir)
        proc = start_node(target, *args, **kwargs)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


@pytest.fixture
def node_launcher(tmp_path: Path) -> Iterator[NodeLauncher]:
    """`node_launcher.start("smoke_talker", params={...})` -> NodeProcess; all stopped at teardown.

    The tails of the node logs are printed at teardown: pytest shows them when the test fails.
    """
    launcher = NodeLauncher(tmp_path / "node_logs")
    try:
        yield launcher
    finally:
        launcher.stop_all()
        for proc in launcher.processes:
            print(f"--- {proc.describe()}\n{proc.log_tail(20)}")
