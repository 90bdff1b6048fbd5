"""Static checks of docker/ (no Docker engine here: the image is never built by these tests).

They hold the Dockerfile, compose file and .dockerignore to the repository they describe: paths
that exist, executables that are declared, the lock filter that keeps ROS out of pip, and the
network rule (LOCALHOST by default, SUBNET only in the compose opt-in).
"""

from __future__ import annotations

import re
import runpy
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
PACKAGES = [
    "dexh2r_core",
    "dexh2r_sim",
    "dexh2r_perception",
    "dexh2r_policy",
    "dexh2r_control",
    "dexh2r_teleop",
]
SHARE = "/ws/install/dexh2r_core/share/dexh2r_core/"
LOCK_FILTER = runpy.run_path(str(DOCKER / "requirements_from_lock.py"))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def nodes_of(package: str) -> dict[str, str]:
    return dict(runpy.run_path(str(REPO / "src" / package / package / "_entry_points.py"))["NODES"])


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
            pending = ""
    return out


# --- requirements_from_lock.py -------------------------------------------------------------


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[canonical(name)] = pinned
    return pins


def test_lock_filter_keeps_no_ros_and_nothing_the_image_installs_itself():
    kept = [
        line.partition("==")[0]
        for line in LOCK_FILTER["requirements"]((REPO / "requirements.lock").read_text())
    ]
    ros_like = re.compile(r"^(ros-|rcl|rmw|rosidl|rpyutils)|_(msgs|srvs|interfaces)$", re.IGNORECASE)
    assert not [n for n in kept if ros_like.search(n)]
    assert not {canonical(n) for n in kept} & {"torch", "pip", "setuptools", "wheel", "empy", "lark-parser"}


def test_lock_filter_drops_the_ros_packages_of_the_lock():
    for name in (
        "rclpy",
        "ros-rclpy",
        "sensor_msgs",
        "builtin_interfaces",
        "rosidl_parser",
        "rmw_dds_common",
    ):
        assert LOCK_FILTER["is_dropped"](name), name
    for name in ("numpy", "mujoco", "rosbags", "mcap-ros2-support", "pin", "dex_retargeting"):
        assert not LOCK_FILTER["is_dropped"](name), name


def test_lock_filter_keeps_every_direct_non_ros_dependency_at_its_locked_version():
    import tomllib

    pins = lock_pins()
    kept = dict(
        (canonical(n), v)
        for n, _, v in (
            line.partition("==")
            for line in LOCK_FILTER["requirements"]((REPO / "requirements.lock").read_text())
        )
    )
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = canonical(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0])
        if name.startswith("ros-") or name == "torch":
            continue
        assert name in pins, f"{name} is a dependency but not in requirements.lock"
        assert kept.get(name) == pins[name], f"{name} lost by requirements_from_lock.py"


def test_lock_filter_rejects_a_line_without_an_exact_pin():
    with pytest.raises(ValueError, match="exact pin"):
        LOCK_FILTER["requirements"]("numpy>=2\n")


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_builds_on_the_official_kilted_image():
    steps = instructions(DOCKERFILE)
    assert steps[0][0] == "FROM" and re.fullmatch(
        r"ros:kilted(-ros-base|-ros-core|-perception)?(-noble)?", steps[0][1]
    )


def test_dockerfile_copies_only_paths_that_exist():
    for keyword, args in instructions(DOCKERFILE):
        if keyword == "COPY":
            *sources, _dest = shlex.split(args)
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path in the build context"


def test_dockerfile_installs_torch_cpu_and_colcon_builds_src():
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cpu \"?torch==2\.13\.0\"?", DOCKERFILE)
    assert "requirements_from_lock.py" in DOCKERFILE
    assert re.search(r"colcon build --base-paths src/dexh2r/src\b", DOCKERFILE)
    assert "--symlink-install" not in DOCKERFILE.split("colcon build", 1)[1].splitlines()[0]


def test_dockerfile_defaults_keep_dds_on_localhost_with_an_existing_profile():
    env = " ".join(args for keyword, args in instructions(DOCKERFILE) if keyword == "ENV")
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in env
    assert "SUBNET" not in env
    profile = re.search(r"FASTDDS_DEFAULT_PROFILES_FILE=(\S+)", env).group(1)
    assert profile.startswith(SHARE + "config/") and (REPO / profile.removeprefix(SHARE)).is_file()


def test_dockerfile_runs_the_demo_through_the_entrypoint():
    steps = dict(instructions(DOCKERFILE))
    assert steps["ENTRYPOINT"] == '["/bin/bash", "/dexh2r_entrypoint.sh"]'
    assert steps["CMD"] == '["dexh2r", "demo"]'
    assert (REPO / "launch" / "smoke.launch.xml").is_file()  # the build-time ros2 launch check


def test_entrypoint_is_valid_bash_that_sources_ros_and_the_workspace():
    script = (DOCKER / "entrypoint.sh").read_text()
    assert 'source "/opt/ros/${ROS_DISTRO}/setup.bash"' in script
    assert "source /ws/install/setup.bash" in script
    assert script.rstrip().endswith('exec "$@"')
    subprocess.run(["bash", "-n", str(DOCKER / "entrypoint.sh")], check=True)


def test_dockerignore_keeps_the_venv_and_git_out_but_the_sources_in():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "build", "install", "log"} <= patterns
    for needed in ("src", "config", "launch", "docker", "requirements.lock", "pyproject.toml"):
        assert needed not in patterns and f"{needed}/" not in patterns


# --- compose.yaml --------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_builds_the_image_from_the_repository_root():
    for name, service in SERVICES.items():
        build = service["build"]
        assert (DOCKER / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKER / "Dockerfile", name
        assert service["image"] == "dexh2r:kilted", name


def test_compose_is_the_explicit_subnet_opt_in_with_the_multihost_profile():
    domains = set()
    for name, service in SERVICES.items():
        env = service["environment"]
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET", name
        profile = env["FASTDDS_DEFAULT_PROFILES_FILE"]
        assert profile == SHARE + "config/fastdds_multihost.xml", name
        assert (REPO / "config" / "fastdds_multihost.xml").is_file()
        domains.add(str(env["ROS_DOMAIN_ID"]))
        assert service["networks"] == ["dds"], name
        assert service.get("network_mode") != "host" or service.get("ipc") == "host", name
        assert service["shm_size"], name
    assert len(domains) == 1, "all containers must share one ROS_DOMAIN_ID"
    assert COMPOSE["networks"]["dds"]["driver"] == "bridge"


def test_compose_default_services_run_declared_executables_on_separate_containers():
    default = {name: s for name, s in SERVICES.items() if not s.get("profiles")}
    assert len(default) >= 2
    for name, service in default.items():
        command = service["command"]
        assert command[:2] == ["ros2", "run"], name
        package, executable = command[2], command[3]
        assert executable in nodes_of(package), f"{name}: {package} declares no {executable}"
    assert SERVICES["listener"]["depends_on"] == ["talker"]
    assert "exit_after:=20" in SERVICES["listener"]["command"]


def test_compose_handover_services_name_project_packages():
    handover = {name: s for name, s in SERVICES.items() if "handover" in s.get("profiles", [])}
    assert {"perception", "policy"} <= set(handover)
    for name, service in handover.items():
        assert service["command"][:2] == ["ros2", "run"], name
        assert service["command"][2] in PACKAGES, name
