"""`dexh2r launch`: ROS 2 XML launch files for pip installs (no ros2 CLI, no launch packages).

parser.py          XML -> typed LaunchDescription (ROS-free; errors name file and line)
substitutions.py   $(var), $(env), $(find-pkg-share), $(eval), ...
resolve.py         (pkg, exec) -> command: ament index, then <pkg>._entry_points.NODES
runner.py          one process per node, prefixed output, clean shutdown, exit codes
cli.py             the `dexh2r launch` verb

User documentation: docs/launch.md.
"""
