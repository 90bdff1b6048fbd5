"""Print the pip requirements of the Docker image: requirements.lock minus what ROS 2 and the image own.

    python3 docker/requirements_from_lock.py requirements.lock > requirements.txt

requirements.lock is a `pip freeze` of the pip-only venv, where ROS 2 itself comes from the
`ros-*` wheels. On a real ROS 2 install (the ros:kilted image) ROS comes from apt under
/opt/ros, and pip must not install any of it a second time, so these lines are dropped:

* `ros-*`: the ROS 2 wheels themselves;
* the Python distributions those wheels install under their ROS names (rclpy, rcutils,
  rcl_interfaces, rmw_dds_common, rosidl_*, rpyutils, every *_msgs / *_srvs / *_interfaces);
* empy and lark-parser: build tools that only the rosidl wheels pull in; the image keeps the
  versions its ROS packages were released with;
* torch: the Dockerfile installs it on its own from the CPU wheel index (a plain PyPI `torch`
  is a multi-GB CUDA build);
* pip, setuptools and wheel: the venv brings pip; the image pins setuptools itself (< 80,
  which `colcon build --symlink-install` still works with).

Everything else is printed as `name==version`, exactly as locked. Standard library only: this
runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# ROS 2 distributions, by (case-insensitive) name.
_ROS = re.compile(
    r"^(ros-.+|rclpy|rcutils|rpyutils|rcl_.+|rmw_.+|rosidl_.+|.+_msgs|.+_srvs|.+_interfaces)$",
    re.IGNORECASE,
)
# Installed separately by the Dockerfile, or owned by the ROS install.
_IMAGE_OWNED = {"torch", "pip", "setuptools", "wheel", "empy", "lark-parser"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_dropped(name: str) -> bool:
    return bool(_ROS.match(name)) or _canonical(name) in _IMAGE_OWNED


def requirements(lock_text: str) -> list[str]:
    """The kept `name==version` lines of a pip-freeze text, in their original order."""
    kept = []
    for raw in lock_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, _version = line.partition("==")
        if not sep:
            raise ValueError(f"not an exact pin (name==version): {raw!r}")
        if not is_dropped(name.strip()):
            kept.append(line)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: requirements_from_lock.py requirements.lock", file=sys.stderr)
        return 2
    print("\n".join(requirements(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
