"""ament_python build script for dexh2r_sim, used by colcon on a full ROS 2 install.

Pip users install every package at once from the repository's root pyproject.toml.
Node executables are listed once, in dexh2r_sim/_entry_points.py, and read from there.
"""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dexh2r_sim"
HERE = Path(__file__).resolve().parent
ENTRY = runpy.run_path(str(HERE / PACKAGE / "_entry_points.py"))

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *ENTRY.get("share_files", lambda here: [])(HERE),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="DexH2R stack developers",
    maintainer_email="dexh2r@example.org",
    description="MuJoCo handover cell: arm + hand, giver hand and object, virtual RealSense cameras, /clock and ground truth.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in ENTRY["NODES"].items()]},
)
