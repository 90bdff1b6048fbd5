"""node_runtime.stopping: an exception is a crash only while the context stays up."""

from __future__ import annotations

import threading
import time

import pytest

from dexh2r_core.node_runtime import stopping

rclpy = pytest.importorskip("rclpy")


def test_stopping_is_true_at_once_when_rclpy_is_down() -> None:
    started = time.monotonic()
    assert stopping(grace_s=2.0)
    assert time.monotonic() - started < 0.5


def test_stopping_waits_for_a_shutdown_from_another_thread() -> None:
    rclpy.init()
    try:
        assert not stopping(grace_s=0.05)  # up, and stays up: a real crash
        timer = threading.Timer(0.1, rclpy.try_shutdown)
        timer.start()
        started = time.monotonic()
        assert stopping(grace_s=2.0)  # the deferred shutdown lands within the grace period
        assert time.monotonic() - started < 1.0
        timer.join()
    finally:
        rclpy.try_shutdown()
