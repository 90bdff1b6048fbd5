"""IK, safety filter, handover state machine and command streaming to ros2_control-style controllers."""
