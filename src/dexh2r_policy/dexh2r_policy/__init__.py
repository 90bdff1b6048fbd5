"""DynamicGrasp (grasp CVAE, MotionNet, goal alignment), DP and DP3 baselines, datasets, training and
evaluation.
"""
