"""The real-robot launch file brings up no sim and forwards its safety-relevant arguments to the
controller (every shipped file loading at all is tests/test_launch_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dexh2r_core.launch.parser import LaunchFileError, load_launch

LAUNCH = Path(__file__).resolve().parents[3] / "launch"
REQUIRED = {
    "real_handover.launch.xml": {
        "object_id": "prim/box_small",
        "calibration": "calibration/sim_two_cameras.yaml",
    }
}


def test_real_handover_has_no_sim_and_only_the_controller_commands_the_robot() -> None:
    args = {
        **REQUIRED["real_handover.launch.xml"],
        "dry_run": "true",
        "arm_topic": "/scaled_jtc/joint_trajectory",
    }
    desc = load_launch(LAUNCH / "real_handover.launch.xml", args)
    execs = [n.executable for n in desc.nodes]
    assert "sim_node" not in execs
    assert execs == [
        "realsense_node",
        "hand_tracker_node",
        "object_tracker_node",
        "dynamic_grasp_node",
        "controller_node",
    ]
    controller = desc.nodes[-1].effective_params()
    assert controller["dry_run"] is True and controller["arm_topic"] == "/scaled_jtc/joint_trajectory"
    assert controller["watchdog_timeout_s"] == pytest.approx(0.1)
    # The sim closed loop's settings (docs/closed_loop.md); armed by /handover/start (no autostart).
    assert controller["wrist_ik"] is True and controller["follow_measured"] is True
    assert controller["handover"] == "policy" and "autostart" not in controller
    assert desc.nodes[3].effective_params()["style"] == "closed_loop"
    for node in desc.nodes:  # a crashed node takes the whole graph down: the robot holds
        assert node.required, node.label
    others = {k for n in desc.nodes[:-1] for k in n.effective_params()}
    assert not others & {"arm_topic", "hand_topic"}


def test_real_handover_needs_the_object_and_the_calibration() -> None:
    with pytest.raises(LaunchFileError, match="'object_id' is required"):
        load_launch(LAUNCH / "real_handover.launch.xml", {"calibration": "x.yaml"})
