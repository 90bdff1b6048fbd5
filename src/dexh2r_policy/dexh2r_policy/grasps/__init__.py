"""Grasp pools (object-frame grasp candidates) and the paper's MuJoCo stability test."""
