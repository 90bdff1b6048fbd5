"""ROS 2 environment defaults shared by the CLI, the launcher, the tests and the benches.

DDS discovery stays on this machine unless a user opts in to multi-host explicitly
(`ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET`), and large messages go through the project's Fast DDS
shared-memory profile (`config/fastdds_shm.xml`): with default transports and best-effort QoS only
a few percent of 640x480 images arrive at 30 Hz.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from dexh2r_core.paths import share_dir

LOCALHOST = "LOCALHOST"
# 0..101 is the range that is safe on every OS (port arithmetic of the DDS spec).
MAX_DOMAIN_ID = 101


def fastdds_profile_path(multihost: bool = False) -> str:
    """The project's Fast DDS profile: loopback-only UDP + SHM, or the multi-host variant."""
    name = "fastdds_multihost.xml" if multihost else "fastdds_shm.xml"
    return str(share_dir("dexh2r_core") / "config" / name)


def apply_ros_defaults(
    env: MutableMapping[str, str] | None = None,
    *,
    domain_id: int | None = None,
    force_localhost: bool = False,
) -> MutableMapping[str, str]:
    """Fill in the project's ROS defaults in `env` (default: os.environ) and return it.

    Values the user already set win, except that `force_localhost` (tests, CI) always pins
    discovery to this machine. An empty FASTDDS_DEFAULT_PROFILES_FILE is removed: Fast DDS
    fails to parse an empty path.
    """
    env = os.environ if env is None else env
    if force_localhost or not env.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = LOCALHOST
    if domain_id is not None:
        if not 0 <= domain_id <= MAX_DOMAIN_ID:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..{MAX_DOMAIN_ID}, got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    if not env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        # The localhost profile pins UDP to 127.0.0.1: a user who opted in to SUBNET gets the other one.
        multihost = env["ROS_AUTOMATIC_DISCOVERY_RANGE"].upper() == "SUBNET"
        profile = fastdds_profile_path(multihost=multihost)
        if os.path.exists(profile):
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def private_domain_id(seed: int | None = None) -> int:
    """A domain id for one run (demo, bench) so that concurrent runs do not hear each other."""
    seed = os.getpid() if seed is None else seed
    return 1 + seed % MAX_DOMAIN_ID


def apply_run_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """`apply_ros_defaults` for a run that starts its own nodes (the demo, `eval closed-loop
    --ros`, the smoke test): a private domain unless ROS_DOMAIN_ID is set, so that two such runs
    do not drive each other's robots. Fills in `env` (default: os.environ) and returns it."""
    env = os.environ if env is None else env
    return apply_ros_defaults(env, domain_id=None if env.get("ROS_DOMAIN_ID") else private_domain_id())
