"""MuJoCo handover cell: arm + hand, giver hand and object, virtual RealSense cameras, /clock and
ground truth.
"""
