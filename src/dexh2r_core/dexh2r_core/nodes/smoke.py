"""Smoke talker/listener: the minimal graph behind `launch/smoke.launch.xml` and `dexh2r demo`.

talker   publishes std_msgs/String "<greeting> <n>" on `chatter` at `rate_hz`.
listener subscribes to `chatter` and logs what it hears; `exit_after` (int, 0 = never) makes it
         exit 0 after that many messages, `fail_after` (int, 0 = never) makes it exit with code
         FAIL_EXIT_CODE (3) after that many (used to test how the launcher handles a crash).

Both exit 0 on SIGINT/SIGTERM without a traceback. `chatter` is relative, so namespaces and
`-r chatter:=...` remaps apply.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from dexh2r_core.node_runtime import install_stop_request, stopping

FAIL_EXIT_CODE = 3
TOPIC = "chatter"
# Reliable + depth 10: a slow listener still counts every message once matched.
QOS_DEPTH = 10
# Accept `rate_hz:=10` as well as `rate_hz:=10.0` (launch files type values by YAML rules).
_DYNAMIC = ParameterDescriptor(dynamic_typing=True)


def _run(node_factory, args: Sequence[str] | None) -> int:
    """Init rclpy, build the node, spin until it asks to stop; map shutdown signals to 0.

    SIGINT / SIGTERM only set a flag (node_runtime.install_stop_request): the loop ends within
    one 0.1 s spin and shuts down cleanly."""
    stop = install_stop_request()
    rclpy.init(
        args=list(args) if args is not None else sys.argv,
        signal_handler_options=SignalHandlerOptions.NO,
    )
    node = None
    try:
        node = node_factory()
        while rclpy.ok() and node.exit_code is None and not stop.is_set():
            rclpy.spin_once(node, timeout_sec=0.1)
        return node.exit_code or 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except Exception:
        # SIGINT/SIGTERM shut the context down under us (while the node is being built, or inside
        # a spin, as an RCLError or a pybind11 conversion error): a requested stop, not a crash.
        if not stopping():
            raise
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


class Talker(Node):
    def __init__(self) -> None:
        super().__init__("talker")
        self.exit_code: int | None = None
        rate_hz = float(self.declare_parameter("rate_hz", 10.0, _DYNAMIC).value)
        self._greeting = str(self.declare_parameter("greeting", "hello").value)
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self._pub = self.create_publisher(String, TOPIC, QOS_DEPTH)
        self._count = 0
        self.create_timer(1.0 / rate_hz, self._tick)
        self.get_logger().info(f"publishing on {self._pub.topic_name} at {rate_hz:g} Hz")

    def _tick(self) -> None:
        self._count += 1
        self._pub.publish(String(data=f"{self._greeting} {self._count}"))


class Listener(Node):
    def __init__(self) -> None:
        super().__init__("listener")
        self.exit_code: int | None = None
        self._exit_after = int(self.declare_parameter("exit_after", 0).value)
        self._fail_after = int(self.declare_parameter("fail_after", 0).value)
        self._heard = 0
        sub = self.create_subscription(String, TOPIC, self._on_msg, QOS_DEPTH)
        self.get_logger().info(f"listening on {sub.topic_name}")

    def _on_msg(self, msg: String) -> None:
        self._heard += 1
        self.get_logger().info(f"heard [{self._heard}]: {msg.data}")
        if self._fail_after and self._heard >= self._fail_after:
            self.get_logger().error(
                f"fail_after={self._fail_after} reached: exiting with code {FAIL_EXIT_CODE}"
            )
            self.exit_code = FAIL_EXIT_CODE
        elif self._exit_after and self._heard >= self._exit_after:
            self.get_logger().info(f"exit_after={self._exit_after} reached: done")
            self.exit_code = 0


def talker_main(args: Sequence[str] | None = None) -> int:
    return _run(Talker, args)


def listener_main(args: Sequence[str] | None = None) -> int:
    return _run(Listener, args)
