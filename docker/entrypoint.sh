#!/bin/bash
# Entry point of the dexh2r image: the ROS 2 underlay, then the colcon workspace, then the command.
# `set -u` is left out on purpose: the ROS setup scripts read variables that may be unset.
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /ws/install/setup.bash
exec "$@"
