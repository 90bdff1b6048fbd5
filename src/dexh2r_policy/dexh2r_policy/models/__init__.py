"""Shared pieces of the learned policies: pose geometry (6-D rotations, slerp) and the hand's
surface points (forward kinematics). ROS-free."""
