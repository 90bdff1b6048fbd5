"""Teleoperation by hand retargeting, deadman, episode recorder and dataset export."""
