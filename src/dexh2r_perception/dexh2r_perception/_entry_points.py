"""Executables of this package: name -> "module:function".

The single list read by this package's setup.py (colcon), the root setup.py (pip) and the
launcher (`dexh2r launch`), so that a node is declared in exactly one place. Keep this module
free of imports: build scripts execute it.
"""

NODES: dict[str, str] = {
    "realsense_node": "dexh2r_perception.realsense_node:main",
    "object_tracker_node": "dexh2r_perception.object_tracker_node:main",
    "hand_tracker_node": "dexh2r_perception.hand_tracker_node:main",
}
