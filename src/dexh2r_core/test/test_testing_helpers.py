"""dexh2r_core.testing: node processes, graph waits and their failure messages."""

from __future__ import annotations

import os
import sys
import time
import uuid

import pytest

from dexh2r_core.testing import (
    NodeProcessDiedError,
    TopicWaitTimeoutError,
    node_command,
    start_node,
    wait_for_messages,
    wait_for_topic_match,
)

# A tiny node of our own (no dependency on other packages' nodes): publishes String on argv[1]
# every 50 ms and subscribes to argv[2].
TINY_NODE = r"""
import sys
import rclpy
from rclpy.executors import ExternalShutdownException
from std_msgs.msg import String

rclpy.init()
node = rclpy.create_node("tiny_node")
pub = node.create_publisher(String, sys.argv[1], 10)
node.create_subscription(String, sys.argv[2], lambda msg: None, 10)
count = [0]

def tick():
    pub.publish(String(data=f"hello {count[0]}"))
    count[0] += 1

node.create_timer(0.05, tick)
print("tiny node up", flush=True)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def _topic(name: str) -> str:
    # Unique per test run: a stale process elsewhere in the domain cannot satisfy the wait.
    return f"/dexh2r_test_helpers/{name}_{uuid.uuid4().hex[:8]}"


@pytest.mark.ros
def test_start_node_and_wait_for_match_and_messages(ros_node, node_launcher):
    out, into = _topic("out"), _topic("in")
    proc = node_launcher.start([sys.executable, "-c", TINY_NODE, out, into], name="tiny")
    assert proc.alive() and proc.log_path.parent.is_dir()

    assert wait_for_topic_match(ros_node, out, "publisher", timeout=20.0, processes=[proc]) >= 1
    assert wait_for_topic_match(ros_node, into, kind="subscriber", timeout=20.0, processes=[proc]) == 1
    msgs = wait_for_messages(ros_node, out, "std_msgs/msg/String", count=3, timeout=20.0, processes=[proc])
    assert len(msgs) == 3 and all(m.data.startswith("hello ") for m in msgs)
    # Type taken from the graph when not given.
    assert wait_for_messages(ros_node, out, count=1, timeout=20.0)[0].data.startswith("hello ")
    proc.wait_for_log("tiny node up", timeout=5.0)

    assert proc.stop() is not None
    assert not proc.alive()
    assert "tiny node up" in proc.log_text()


@pytest.mark.ros
def test_timeout_error_names_the_topic(ros_node):
    topic = _topic("nobody")
    t0 = time.monotonic()
    with pytest.raises(TopicWaitTimeoutError, match=topic) as info:
        wait_for_topic_match(ros_node, topic, "publisher", timeout=0.5)
    assert time.monotonic() - t0 < 5.0
    assert "publisher" in str(info.value) and "0.5 s" in str(info.value)

    with pytest.raises(TopicWaitTimeoutError, match=f"message.*{topic}"):
        wait_for_messages(ros_node, topic, "std_msgs/msg/String", timeout=0.5)
    with pytest.raises(ValueError, match="kind"):
        wait_for_topic_match(ros_node, topic, "service", timeout=0.1)  # type: ignore[arg-type]


@pytest.mark.ros
def test_dead_node_process_fails_fast(ros_node, node_launcher):
    proc = node_launcher.start(
        [sys.executable, "-c", "print('going away'); raise SystemExit(3)"], name="quitter"
    )
    t0 = time.monotonic()
    with pytest.raises(NodeProcessDiedError, match="going away"):
        wait_for_topic_match(ros_node, _topic("never"), timeout=30.0, processes=[proc])
    assert time.monotonic() - t0 < 15.0
    assert proc.returncode == 3


def test_stop_ends_the_whole_process_group(tmp_path):
    # The node forks a grandchild; stop() must not leave it running.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = start_node([sys.executable, "-c", code], name="parent", log_dir=tmp_path)
    child_pid = int(proc.wait_for_log(r"child (\d+)", timeout=20.0).group(1))
    proc.stop(timeout=2.0)
    assert not proc.alive()
    deadline = time.monotonic() + 5.0
    while _pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(child_pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): treat it as ended.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_child_env_is_localhost_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.setenv("ROS_STATIC_PEERS", "192.0.2.10")
    code = "import os; print(os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'], os.environ.get('ROS_STATIC_PEERS'))"
    proc = start_node([sys.executable, "-c", code], env={"ROS_DOMAIN_ID": "7"}, log_dir=tmp_path)
    proc.popen.wait(30)
    proc.stop()
    assert "LOCALHOST None" in proc.log_text()


def test_node_command_forms():
    assert node_command("dexh2r_core.nodes.smoke", "-x") == [
        sys.executable,
        "-m",
        "dexh2r_core.nodes.smoke",
        "-x",
    ]
    argv = node_command("dexh2r_core.nodes.smoke:talker_main", "a")
    assert argv[:2] == [sys.executable, "-c"] and "talker_main" in argv[2] and argv[3:] == ["a"]
    assert node_command(["/bin/echo", "hi"], "there") == ["/bin/echo", "hi", "there"]
    assert node_command("dexh2r")[0].endswith("dexh2r")  # console script of this venv
    with pytest.raises(FileNotFoundError, match="no_such_script"):
        node_command("no_such_script_xyz")


def _udp_sockets() -> list[tuple[str, int]]:
    """(local IPv4 address, port) of every UDP socket in this network namespace (Linux)."""
    out = []
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            hex_addr, hex_port = line.split()[1].split(":")
            ip = ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))  # little endian
            out.append((ip, int(hex_port, 16)))
    return out


@pytest.mark.ros
@pytest.mark.skipif(not os.path.exists("/proc/net/udp"), reason="needs Linux /proc/net/udp")
def test_dds_ports_of_the_test_domain_are_loopback_only(ros_node):
    # RTPS well-known ports: 7400 + 250 * domain + {0: discovery multicast, 10 + 2 i / 11 + 2 i: unicast}.
    domain = int(os.environ["ROS_DOMAIN_ID"])
    block = range(7400 + 250 * domain, 7400 + 250 * (domain + 1))
    ours = [(ip, port) for ip, port in _udp_sockets() if port in block]
    assert ours, f"no DDS socket of domain {domain} found"
    assert all(ip == "127.0.0.1" for ip, _ in ours), ours
    assert block.start not in {port for _, port in ours}, "a discovery multicast port is open"
