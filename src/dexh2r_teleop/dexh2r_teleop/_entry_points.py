"""Executables of this package: name -> "module:function".

The single list read by this package's setup.py (colcon), the root setup.py (pip) and the
launcher (`dexh2r launch`), so that a node is declared in exactly one place. Keep this module
free of imports: build scripts execute it.
"""

NODES: dict[str, str] = {
    "recorder_node": "dexh2r_teleop.recorder_node:main",
    "replay": "dexh2r_teleop.replay:main",
    "teleop_node": "dexh2r_teleop.teleop_node:main",
}
