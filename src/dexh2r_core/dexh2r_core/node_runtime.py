"""The start and end of every node's `main`: one place for the exit paths.

if bad_config:
    return exit_with_error(node, f"cannot start: {exc}")   # logged, exit code 2
...
return spin_until_shutdown(node, cleanup=tracker.close)  # Ctrl-C / SIGTERM / launcher stop
"""

from __future__ import annotations

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
        if rclpy.ok():
            raise
    finally:
        if cleanup is not None:
            cleanup()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
