"""Pip entry to the whole stack: installs the six ament_python packages and the `dexh2r` command.

Executables come from each package's `_entry_points.py`, the same list colcon's setup.py files read.
"""

import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
PACKAGES = [
    "dexh2r_core",
    "dexh2r_sim",
    "dexh2r_perception",
    "dexh2r_policy",
    "dexh2r_control",
    "dexh2r_teleop",
]

scripts = ["dexh2r = dexh2r_core.cli:main"]
for package in PACKAGES:
    nodes = runpy.run_path(str(ROOT / "src" / package / package / "_entry_points.py"))["NODES"]
    scripts += [f"{name} = {target}" for name, target in nodes.items()]

setup(entry_points={"console_scripts": scripts})
