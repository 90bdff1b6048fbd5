"""The launcher with real processes: plain shell commands (no ROS) and the rclpy smoke graph."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dexh2r_core.launch.parser import load_launch
from dexh2r_core.launch.runner import LaunchRunner
from dexh2r_core.paths import share_dir

SMOKE = share_dir("dexh2r_core") / "launch" / "smoke.launch.xml"
TIMEOUT = 30.0  # generous: DDS discovery is usually < 0.2 s but can take 3 s


@pytest.fixture(autouse=True)
def _localhost_ros(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDS stays on this machine, one domain per worker: the root conftest's fixture, else ours."""
    try:
        request.getfixturevalue("dexh2r_test_env")
    except pytest.FixtureLookupError:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


class Launcher:
    """`dexh2r launch ...` in a subprocess; output lines are collected as they arrive."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dexh2r_core.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if re.search(pattern, line):
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + "\n".join(self.lines))

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(r"\(pid (\d+)\)", line))]


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def run_file(tmp_path: Path, body: str, **kwargs) -> tuple[int, str, str]:
    path = tmp_path / "t.launch.xml"
    path.write_text(textwrap.dedent(body))
    out, err = io.StringIO(), io.StringIO()
    result = LaunchRunner(load_launch(path), out=out, err=err, **kwargs).run()
    return result.exit_code, out.getvalue(), err.getvalue()


# -- runner semantics with plain shell processes (fast, no DDS) -----------------------------------


def test_prefixed_output_and_clean_exit(tmp_path: Path) -> None:
    code, out, err = run_file(
        tmp_path,
        """<launch>
          <node exec="sh" name="one" args="-c 'echo hello; echo world >&amp;2'"/>
          <node exec="sh" name="two" args="-c 'echo $0'"><env name="X" value="1"/></node>
        </launch>""",
    )
    assert code == 0, err
    assert "[one] hello" in out and "[one] world" in out
    assert "[two] --ros-args" in out  # the ROS arguments come after the node's own
    assert "'one' finished cleanly" in err


def test_crash_of_non_required_node_fails_the_launch(tmp_path: Path) -> None:
    code, _out, err = run_file(
        tmp_path,
        """<launch>
          <node exec="sh" name="bad" args="-c 'exit 4'"/>
          <node exec="sh" name="good" args="-c 'sleep 0.3'"/>
        </launch>""",
    )
    assert code == 1
    assert "node 'bad' died with exit code 4" in err and "failed: 'bad' (code 4) crashed" in err


def test_required_node_exit_stops_the_rest_with_sigterm_escalation(tmp_path: Path) -> None:
    started = time.monotonic()
    code, _out, err = run_file(
        tmp_path,
        """<launch>
          <node exec="sh" name="stubborn" sigterm_timeout="0.3" args="-c 'trap &quot;&quot; INT; sleep 30'"/>
          <node exec="sh" name="deaf" sigterm_timeout="0.2" sigkill_timeout="0.2"
                args="-c 'trap &quot;&quot; INT TERM; sleep 30'"/>
          <node exec="sh" name="boss" on_exit="shutdown" args="-c 'sleep 0.2'"/>
        </launch>""",
    )
    assert code == 0, err
    assert "required node 'boss' exited with code 0; shutting down (stopping stubborn, deaf)" in err
    assert "'stubborn' still running after SIGINT: sending SIGTERM" in err
    assert "'deaf' still running after SIGTERM: sending SIGKILL" in err
    assert time.monotonic() - started < 10


def test_respawn_and_timeout(tmp_path: Path) -> None:
    code, out, err = run_file(
        tmp_path,
        """<launch>
          <node exec="sh" name="flaky" respawn="true" respawn_delay="0.05" respawn_max_retries="2"
                args="-c 'echo run'"/>
          <node exec="sh" name="sleeper" args="-c 'sleep 30'"/>
        </launch>""",
        timeout=1.0,
    )
    assert code == 0, err
    assert out.count("[flaky] run") == 3  # first start + 2 respawns
    assert "timeout of 1 s reached" in err


# -- the smoke graph: real rclpy nodes talking over DDS -------------------------------------------


@pytest.mark.ros
def test_smoke_launch_talks_and_exits_zero() -> None:
    launcher = Launcher("launch", str(SMOKE), "count:=5", "rate_hz:=50.0")
    assert launcher.wait() == 0, launcher.output
    assert "[talker]" in launcher.output
    assert "[listener]" in launcher.output and "heard [5]:" in launcher.output
    assert "hello from smoke_params.yaml" in launcher.output  # the param file reached the node
    assert "/smoke/smoke_chatter" in launcher.output  # namespace + remap


@pytest.mark.ros
def test_required_node_crash_exits_nonzero_with_message() -> None:
    launcher = Launcher("launch", str(SMOKE), "fail_after:=2", "rate_hz:=50.0")
    assert launcher.wait() == 1, launcher.output
    assert "[launch] required node 'listener' exited with code 3; shutting down" in launcher.output
    assert all(gone(pid) for pid in launcher.pids())


@pytest.mark.ros
def test_sigint_stops_every_node() -> None:
    launcher = Launcher("launch", str(SMOKE), "count:=0", "rate_hz:=50.0")
    launcher.wait_for(r"\[listener\].*heard \[2\]")
    pids = launcher.pids()
    assert len(pids) == 2
    launcher.proc.send_signal(signal.SIGINT)
    assert launcher.wait() == 128 + signal.SIGINT, launcher.output
    assert "SIGINT received" in launcher.output
    assert "crashed" not in launcher.output and "Traceback" not in launcher.output
    assert all(gone(pid) for pid in pids)


@pytest.mark.ros
def test_smoke_command() -> None:
    launcher = Launcher("smoke", "--count", "5", "--rate-hz", "50")
    assert launcher.wait() == 0, launcher.output
    assert "smoke: OK: listener heard 5/5 messages" in launcher.output
