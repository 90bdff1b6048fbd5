"""apply_ros_defaults / configure_test_env: where DDS traffic may go (ROS-free, no rclpy)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from dexh2r_core.paths import config_path
from dexh2r_core.ros_env import MAX_DOMAIN_ID, apply_ros_defaults, fastdds_profile_path, private_domain_id
from dexh2r_core.testing import configure_test_env, worker_domain_id

NS = {"f": "http://www.eprosima.com"}


def test_defaults_fill_an_empty_env():
    env = apply_ros_defaults({})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == fastdds_profile_path()
    assert os.path.isfile(env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert "ROS_DOMAIN_ID" not in env


def test_user_subnet_is_respected_unless_forced():
    assert (
        apply_ros_defaults({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        == "SUBNET"
    )
    forced = apply_ros_defaults({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, force_localhost=True)
    assert forced["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_empty_profile_var_is_replaced_and_user_profile_kept():
    # Fast DDS fails to parse an empty path: never pass "" through.
    assert apply_ros_defaults({"FASTDDS_DEFAULT_PROFILES_FILE": ""})["FASTDDS_DEFAULT_PROFILES_FILE"] != ""
    mine = apply_ros_defaults({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"})
    assert mine["FASTDDS_DEFAULT_PROFILES_FILE"] == "/etc/my_profile.xml"


def test_empty_profile_var_is_removed_when_no_profile_exists(monkeypatch):
    monkeypatch.setattr(
        "dexh2r_core.ros_env.fastdds_profile_path", lambda multihost=False: "/nonexistent/fastdds_shm.xml"
    )
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in apply_ros_defaults({"FASTDDS_DEFAULT_PROFILES_FILE": ""})


@pytest.mark.parametrize("domain", [0, 42, MAX_DOMAIN_ID])
def test_domain_id_in_range(domain):
    assert apply_ros_defaults({}, domain_id=domain)["ROS_DOMAIN_ID"] == str(domain)


@pytest.mark.parametrize("domain", [-1, MAX_DOMAIN_ID + 1, 232])
def test_domain_id_out_of_range(domain):
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        apply_ros_defaults({}, domain_id=domain)


def test_private_domain_id_range():
    ids = {private_domain_id(seed) for seed in range(1000)}
    assert min(ids) >= 1 and max(ids) <= MAX_DOMAIN_ID


def test_worker_domains_differ_and_stay_in_range():
    run = {"PYTEST_XDIST_TESTRUNUID": "abc123", "PYTEST_XDIST_WORKER_COUNT": "4"}
    ids = [worker_domain_id({**run, "PYTEST_XDIST_WORKER": f"gw{i}"}) for i in range(4)]
    assert ids == list(range(ids[0], ids[0] + 4))  # gw0 -> base, gw1 -> base + 1, ...
    assert ids[0] >= 1 and ids[-1] <= MAX_DOMAIN_ID
    other_run = worker_domain_id({**run, "PYTEST_XDIST_TESTRUNUID": "def456", "PYTEST_XDIST_WORKER": "gw0"})
    assert 1 <= other_run <= MAX_DOMAIN_ID
    assert worker_domain_id({"DEXH2R_TEST_DOMAIN_BASE": "10", "PYTEST_XDIST_WORKER": "gw3"}) == 13


def test_configure_test_env_pins_everything():
    env = configure_test_env(
        {
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(config_path("fastdds_multihost.xml")),
            "ROS_STATIC_PEERS": "192.0.2.10",
            "ROS_DISCOVERY_SERVER": "192.0.2.10:11811",
            "PYTEST_XDIST_WORKER": "gw1",
            "PYTEST_XDIST_TESTRUNUID": "xyz",
        }
    )
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == fastdds_profile_path()
    assert "ROS_STATIC_PEERS" not in env and "ROS_DISCOVERY_SERVER" not in env
    assert env["ROS_DOMAIN_ID"] == str(worker_domain_id(env))
    assert env["MUJOCO_GL"] == "egl"
    assert configure_test_env({"MUJOCO_GL": "osmesa"})["MUJOCO_GL"] == "osmesa"


def test_this_session_runs_localhost_only():
    # Set by the root conftest before any test ran.
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == fastdds_profile_path()
    assert 0 <= int(os.environ["ROS_DOMAIN_ID"]) <= MAX_DOMAIN_ID


def _transports(path):
    root = ET.parse(path).getroot()
    descriptors = {
        d.findtext("f:transport_id", namespaces=NS): d for d in root.iterfind(".//f:transport_descriptor", NS)
    }
    participant = root.find("f:participant", NS)
    used = [t.text for t in participant.iterfind("f:rtps/f:userTransports/f:transport_id", NS)]
    builtin = participant.findtext("f:rtps/f:useBuiltinTransports", namespaces=NS)
    return participant, [descriptors[t] for t in used], builtin


@pytest.mark.parametrize("name", ["fastdds_shm.xml", "fastdds_multihost.xml"])
def test_profiles_large_shm_segment_and_no_builtin_transports(name):
    participant, transports, builtin = _transports(config_path(name))
    assert participant.get("is_default_profile") == "true"
    assert builtin == "false"
    kinds = {t.findtext("f:type", namespaces=NS): t for t in transports}
    assert set(kinds) == {"SHM", "UDPv4"}
    assert kinds["SHM"].findtext("f:segment_size", namespaces=NS) == "33554432"
    assert kinds["SHM"].findtext("f:maxMessageSize", namespaces=NS) == "4194304"


def test_default_profile_keeps_udp_on_loopback():
    _participant, transports, _builtin = _transports(config_path("fastdds_shm.xml"))
    udp = next(t for t in transports if t.findtext("f:type", namespaces=NS) == "UDPv4")
    allowed = [a.text for a in udp.iterfind("f:interfaceWhiteList/f:address", NS)]
    assert allowed == ["127.0.0.1"]
    # The multi-host profile is the one that may leave the machine: no allowlist there.
    _p, multi, _b = _transports(config_path("fastdds_multihost.xml"))
    udp_multi = next(t for t in multi if t.findtext("f:type", namespaces=NS) == "UDPv4")
    assert udp_multi.find("f:interfaceWhiteList", NS) is None


def test_subnet_opt_in_gets_the_multihost_profile():
    from dexh2r_core.ros_env import apply_ros_defaults

    env = apply_ros_defaults({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_multihost.xml")
    env = apply_ros_defaults({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, force_localhost=True)
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_shm.xml")
