"""The start and end of every node's `main`: one place for the exit paths.

if bad_config:
    return exit_with_error(node, f"cannot start: {exc}")   # logged, exit code 2
...
return spin_until_shutdown(node, cleanup=tracker.close)  # Ctrl-C / SIGTERM / launcher stop
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

START_ERROR_EXIT_CODE = 2


def exit_with_error(node: Any, message: str) -> int:
    """Log `message` as fatal, tear the node down, and return the start-up error exit code."""
    import rclpy

    node.get_logger().fatal(message)
    node.destroy_node()
    rclpy.try_shutdown()
    return START_ERROR_EXIT_CODE


def install_stop_request() -> threading.Event:
    """SIGINT / SIGTERM set the returned event instead of raising KeyboardInterrupt.

    For a node that spins in its own loop with a timeout, started with
    `rclpy.init(..., signal_handler_options=SignalHandlerOptions.NO)`: a KeyboardInterrupt raised
    at an arbitrary bytecode inside rclpy can leave half-built objects whose `__del__` prints a
    traceback; a flag the loop checks cannot. Call from the main thread.
    """
    import signal

    stop = threading.Event()

    def request(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request)
    signal.signal(signal.SIGTERM, request)
    return stop


def stopping(grace_s: float = 0.5) -> bool:
    """True if rclpy is shutting down, or does so within `grace_s`.

    rclpy's SIGINT handler raises KeyboardInterrupt in the main thread at once but shuts the
    contexts down from its own thread a moment later. A KeyboardInterrupt raised inside a
    pybind11 call surfaces as a RuntimeError ("Unable to convert call argument") while
    `rclpy.ok()` is still True, so an exception is only a crash if the context stays up.
    """
    import time

    import rclpy

    deadline = time.monotonic() + grace_s
    while rclpy.ok():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def spin_until_shutdown(node: Any, cleanup: Callable[[], None] | None = None) -> int:
    """Spin until Ctrl-C or an external shutdown, then clean up, destroy the node and shut down.

    An exception raised while rclpy is shutting down (a callback racing the context) is not an
    error; one raised while it is still up is re-raised.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not stopping():
            raise
    finally:
        if cleanup is not None:
            cleanup()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
