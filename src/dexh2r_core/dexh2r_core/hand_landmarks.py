"""The stack's hand keypoint convention: MediaPipe Hands' 21 landmarks, in its order.

The hand tracker outputs them, the sim giver's ground truth uses them, the controller's speed and
separation monitoring, the object tracker's hand removal, the policy's giver filter and teleop's
retargeting read them (`/perception/human_hand/keypoints`, world frame).
"""

from __future__ import annotations

LANDMARK_NAMES: tuple[str, ...] = (
    "WRIST",
    "THUMB_CMC",
    "THUMB_MCP",
    "THUMB_IP",
    "THUMB_TIP",
    "INDEX_FINGER_MCP",
    "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP",
    "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP",
    "MIDDLE_FINGER_PIP",
    "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP",
    "RING_FINGER_PIP",
    "RING_FINGER_DIP",
    "RING_FINGER_TIP",
    "PINKY_MCP",
    "PINKY_PIP",
    "PINKY_DIP",
    "PINKY_TIP",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)
WRIST, MIDDLE_MCP = 0, 9
FINGERTIPS: tuple[int, ...] = (4, 8, 12, 16, 20)
