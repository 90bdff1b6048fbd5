"""ament_python build script for dexh2r_perception, used by colcon on a full ROS 2 install.

Pip users install every package at once from the repository's root pyproject.toml.
Node executables are listed once, in dexh2r_perception/_entry_points.py, and read from there; version,
description, maintainer and licence come from package.xml.
"""

import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dexh2r_perception"
HERE = Path(__file__).resolve().parent
ENTRY = runpy.run_path(str(HERE / PACKAGE / "_entry_points.py"))
MANIFEST = ET.parse(HERE / "package.xml").getroot()

setup(
    name=PACKAGE,
    version=MANIFEST.findtext("version"),
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *ENTRY.get("share_files", lambda here: [])(HERE),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer=MANIFEST.findtext("maintainer"),
    maintainer_email=MANIFEST.find("maintainer").get("email"),
    description=MANIFEST.findtext("description"),
    license=MANIFEST.findtext("license"),
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in ENTRY["NODES"].items()]},
)
