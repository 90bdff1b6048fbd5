"""Executables of this package: name -> "module:function".

The single list read by this package's setup.py (colcon), the root setup.py (pip) and the
launcher (`dexh2r launch`), so that a node is declared in exactly one place. Keep this module
free of imports: build scripts execute it.
"""

NODES: dict[str, str] = {
    "dynamic_grasp_node": "dexh2r_policy.dynamic_grasp_node:main",
}
