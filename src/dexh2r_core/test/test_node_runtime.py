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


def test_install_stop_request_turns_sigint_and_sigterm_into_a_flag() -> None:
    import os
    import signal

    from dexh2r_core.node_runtime import install_stop_request

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            stop = install_stop_request()
            assert not stop.is_set()
            os.kill(os.getpid(), signum)  # no KeyboardInterrupt, no exit
            time.sleep(0.05)
            assert stop.is_set()
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
