"""Shared ROS-free pieces: typed config, the robot description, frames, message conversion, timing, the
launcher and the dexh2r CLI.
"""
