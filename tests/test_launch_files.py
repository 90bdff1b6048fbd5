"""Every shipped launch file parses and names executables that exist (no process is started)."""

from pathlib import Path

import pytest

from dexh2r_core.launch.parser import load_launch
from dexh2r_core.launch.resolve import resolve_executable

LAUNCH_FILES = sorted((Path(__file__).resolve().parents[1] / "launch").glob("*.launch.xml"))
# Launch arguments without a default (the real robot's object and camera calibration).
REQUIRED = {
    "real_handover.launch.xml": {
        "object_id": "prim/box_small",
        "calibration": "calibration/sim_two_cameras.yaml",
    },
    "handover_sim.launch.xml": {"scenario": "easy_can_right", "object_id": "prim/cylinder_can"},
}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_resolves(path):
    description = load_launch(str(path), REQUIRED.get(path.name, {}))
    assert description.nodes, f"{path.name} starts no node"
    for node in description.nodes:
        assert resolve_executable(node.package, node.executable)
