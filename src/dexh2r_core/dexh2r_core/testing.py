"""Helpers for ROS tests of any dexh2r package: environment, node processes, graph waits.

- `configure_test_env()` pins DDS to this machine (LOCALHOST discovery, the project's Fast DDS
  shared-memory profile) and gives every pytest-xdist worker its own ROS_DOMAIN_ID, so parallel
  workers and concurrent pytest runs do not hear each other. The root conftest.py calls it.
- `start_node(...)` runs a node as a separate OS process (its own process group, output in a log
  file) and `NodeProcess.stop()` ends the whole group.
- `wait_for_topic_match(...)` / `wait_for_messages(...)` wait on the ROS graph with a timeout.
  Discovery usually takes 0.1 s but sometimes 3 s: never replace these with a fixed sleep.

Importing this module does not import rclpy (ROS-free tests and tools can use the env helpers).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dexh2r_core.ros_env import MAX_DOMAIN_ID, apply_ros_defaults, fastdds_profile_path

if TYPE_CHECKING:
    from rclpy.node import Node

# Variables that could make a test participant talk to other hosts or another DDS setup.
# ROS_STATIC_PEERS adds remote initial peers even with LOCALHOST; ROS_DISCOVERY_SERVER and
# FASTDDS_ENVIRONMENT_FILE turn Fast DDS into a client of a (possibly remote) discovery server.
_UNSAFE_VARS = ("ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER", "FASTDDS_ENVIRONMENT_FILE", "ROS_LOCALHOST_ONLY")


class TopicWaitTimeoutError(TimeoutError):
    """A topic did not reach the expected publisher/subscriber/message count in time."""


class NodeProcessDiedError(RuntimeError):
    """A node process that a wait depended on exited early."""


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def xdist_worker_index(env: Mapping[str, str] | None = None) -> int:
    """0 for gw0 (and for a run without xdist), 1 for gw1, ..."""
    env = os.environ if env is None else env
    match = re.fullmatch(r"gw(\d+)", env.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def worker_domain_id(env: Mapping[str, str] | None = None) -> int:
    """ROS_DOMAIN_ID for this pytest worker: a per-run base plus the xdist worker index.

    The base comes from the xdist run id (shared by all workers of one run) or, without xdist,
    from this process id, so two pytest runs on one machine rarely share a domain. Domain 0 (the
    one a developer's own ROS graph uses by default) is skipped. DEXH2R_TEST_DOMAIN_BASE pins
    the base (e.g. in CI jobs that share a host).
    """
    env = os.environ if env is None else env
    workers = max(1, int(env.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    index = xdist_worker_index(env)
    span = max(1, MAX_DOMAIN_ID - workers + 1)  # bases 1..span keep base+index <= MAX_DOMAIN_ID
    if env.get("DEXH2R_TEST_DOMAIN_BASE"):
        base = int(env["DEXH2R_TEST_DOMAIN_BASE"])
    else:
        run_id = env.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
        base = 1 + zlib.crc32(run_id.encode()) % span
    domain = base + index
    if not 0 <= domain <= MAX_DOMAIN_ID:
        # More workers than domains: wrap instead of failing; such runs may cross-talk.
        domain = 1 + (domain - 1) % MAX_DOMAIN_ID
    return domain


def configure_test_env(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set the project's test environment in `env` (default: os.environ) and return it.

    Forces LOCALHOST discovery, the project's Fast DDS profile, Fast DDS as the rmw and this
    worker's ROS_DOMAIN_ID; removes variables that could reach other hosts; sets MUJOCO_GL=egl if
    unset. Must run before rclpy.init in this process (the rmw reads the variables then).
    Idempotent: the domain is a function of the xdist run id and worker (or of the pid), so the
    root conftest and tests/conftest agree, and xdist workers do not keep the domain they inherit
    from the controller process.
    """
    env = os.environ if env is None else env
    for name in _UNSAFE_VARS:
        env.pop(name, None)
    domain = worker_domain_id(env)
    # A user's own profile (e.g. the multi-host one) must not leak into tests: always ours.
    profile = fastdds_profile_path()
    if os.path.exists(profile):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    apply_ros_defaults(env, domain_id=domain, force_localhost=True)
    env.setdefault("MUJOCO_GL", "egl")
    return env


def ros_env_summary(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The ROS/DDS variables that decide where traffic goes (for logs and bench reports)."""
    env = os.environ if env is None else env
    names = (
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
        "ROS_DOMAIN_ID",
        "FASTDDS_DEFAULT_PROFILES_FILE",
        "RMW_IMPLEMENTATION",
        "ROS_STATIC_PEERS",
    )
    return {name: env.get(name) for name in names}


# --------------------------------------------------------------------------------------------
# Node processes
# --------------------------------------------------------------------------------------------

_LIVE: set[NodeProcess] = set()
_LIVE_LOCK = threading.Lock()
_COUNTER = itertools.count()


class NodeProcess:
    """A node running as a separate OS process in its own process group.

    Output (stdout and stderr) goes to `log_path`. Use as a context manager or call `stop()`;
    processes still running when the interpreter exits are killed.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: str | os.PathLike[str] | None = None,
    ):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {shlex.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() reaches its children too
        )
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.returncode}"
        return f"node process '{self.name}' (pid {self.pid}, {state}, log {self.log_path})"

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait until the log matches the regex `pattern` (raises TimeoutError / NodeProcessDiedError)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if not self.alive():
                raise NodeProcessDiedError(
                    f"{self.describe()} before printing /{pattern}/:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.describe()} did not print /{pattern}/ within {timeout} s")
            time.sleep(0.05)  # polling interval, not a readiness assumption

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGINT the process group (clean rclpy shutdown), then SIGTERM, then SIGKILL."""
        try:
            if self.popen.poll() is None:
                for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0)):
                    self._signal_group(sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.popen.wait(wait_s)
                        break
                else:
                    self._signal_group(signal.SIGKILL)
                    self.popen.wait(5.0)
            # Children that outlived the leader would keep DDS participants alive.
            self._signal_group(signal.SIGKILL)
        finally:
            self._log.close()
            with _LIVE_LOCK:
                _LIVE.discard(self)
        return self.popen.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NodeProcess {self.describe()}>"


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for proc in leftovers:
        proc.stop(timeout=1.0)


def node_command(target: str | Sequence[str], *args: str) -> list[str]:
    """The argv that runs `target`.

    `target` is a console script name ("smoke_talker"), a module run with `python -m`
    ("dexh2r_core.nodes.smoke"), a "module:function" called with sys.argv set (its return value is
    the exit code), or a ready argv list (used as is; `args` appended).
    """
    if not isinstance(target, str):
        return [*target, *args]
    if ":" in target:
        module, _, func = target.partition(":")
        code = f"import sys; from {module} import {func} as f; sys.exit(f())"
        return [sys.executable, "-c", code, *args]
    if "." in target:
        return [sys.executable, "-m", target, *args]
    # Console scripts of this venv first, so tests work without an activated venv.
    local = Path(sys.executable).parent / target
    found = str(local) if local.exists() else shutil.which(target)
    if found is None:
        raise FileNotFoundError(f"console script '{target}' not found next to {sys.executable} or on PATH")
    return [found, *args]


def _ros_args(
    node_name: str | None, params: Mapping[str, Any] | None, remap: Mapping[str, str] | None
) -> list[str]:
    out: list[str] = []
    if node_name:
        out += ["-r", f"__node:={node_name}"]
    for src, dst in (remap or {}).items():
        out += ["-r", f"{src}:={dst}"]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = str(value).lower()
        out += ["-p", f"{key}:={value}"]
    return ["--ros-args", *out] if out else []


def start_node(
    target: str | Sequence[str],
    *args: str,
    name: str | None = None,
    node_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    remap: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> NodeProcess:
    """Start a node as a separate OS process with the project's localhost-only ROS environment.

    `target`: see `node_command`. `node_name`/`params`/`remap` become `--ros-args -r/-p` (rclpy
    nodes only). `env` entries override the inherited environment (ROS_DOMAIN_ID included);
    discovery is always forced to LOCALHOST. Output goes to `<log_dir>/<name>-<n>.log`
    (log_dir default: $DEXH2R_TEST_LOG_DIR or a temporary folder).
    """
    argv = node_command(target, *args) + _ros_args(node_name, params, remap)
    child_env = dict(os.environ)
    child_env.update(env or {})
    domain = child_env.get("ROS_DOMAIN_ID")
    apply_ros_defaults(child_env, domain_id=int(domain) if domain else None, force_localhost=True)
    for var in _UNSAFE_VARS:
        child_env.pop(var, None)
    child_env.setdefault("PYTHONUNBUFFERED", "1")  # logs readable while the node runs
    child_env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    label = name or node_name or Path(str(argv[0])).name
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    folder = Path(log_dir or os.environ.get("DEXH2R_TEST_LOG_DIR") or _default_log_dir())
    log_path = folder / f"{label}-{next(_COUNTER)}.log"
    return NodeProcess(label, argv, child_env, log_path, cwd=cwd)


_DEFAULT_LOG_DIR: Path | None = None


def _default_log_dir() -> Path:
    global _DEFAULT_LOG_DIR
    if _DEFAULT_LOG_DIR is None:
        _DEFAULT_LOG_DIR = Path(tempfile.mkdtemp(prefix="dexh2r-nodes-"))
    return _DEFAULT_LOG_DIR


# --------------------------------------------------------------------------------------------
# Graph waits
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ros_test_node(name: str | None = None, *, domain_id: int | None = None) -> Iterator[Node]:
    """An rclpy node in its own, freshly initialised context; all of it is shut down on exit.

    Installs no signal handlers (pytest keeps Ctrl-C). The domain comes from ROS_DOMAIN_ID unless
    `domain_id` is given.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = rclpy.create_node(name or f"dexh2r_test_{uuid.uuid4().hex[:8]}", context=context)
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()


class _Spinner:
    """Runs the node's callbacks while a helper waits, or just paces the polling loop."""

    def __init__(self, node: Node, spin: bool):
        self.node = node
        self.spin = spin
        self.executor = None
        self.previous = None

    def __enter__(self) -> _Spinner:
        if self.spin:
            from rclpy.executors import SingleThreadedExecutor

            self.previous = self.node.executor
            self.executor = SingleThreadedExecutor(context=self.node.context)
            self.executor.add_node(self.node)
        return self

    def step(self, period: float, event: threading.Event | None = None) -> None:
        if self.executor is not None:
            self.executor.spin_once(timeout_sec=period)
        elif event is not None:
            event.wait(period)
        else:
            time.sleep(period)  # polling interval; graph queries need no spinning

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.remove_node(self.node)
            # Hand the node back to the executor it had before (if any).
            self.node.executor = self.previous
            self.executor.shutdown(timeout_sec=1.0)


def _check_processes(processes: Sequence[NodeProcess] | None, what: str) -> None:
    for proc in processes or ():
        if not proc.alive():
            raise NodeProcessDiedError(f"{proc.describe()} while waiting for {what}:\n{proc.log_tail()}")


def _graph_hint(node: Node) -> str:
    try:
        topics = sorted(name for name, _types in node.get_topic_names_and_types())
    except Exception as exc:  # the hint must never hide the real error
        return f"(graph query failed: {exc})"
    return "topics seen: " + (", ".join(topics) if topics else "none")


def wait_for_topic_match(
    node: Node,
    topic: str,
    kind: Literal["publisher", "subscriber"] = "publisher",
    count: int = 1,
    timeout: float = 15.0,
    *,
    spin: bool = True,
    processes: Sequence[NodeProcess] | None = None,
    poll: float = 0.02,
) -> int:
    """Wait until at least `count` publishers (or subscribers) of `topic` are in `node`'s graph.

    Returns the count seen. Raises TopicWaitTimeoutError (message names the topic and what the graph
    holds) after `timeout` s, or NodeProcessDiedError at once if one of `processes` exits. `spin=True`
    runs the node's callbacks meanwhile; pass False when another thread spins the node.
    The count comes from DDS discovery: a publisher listed here has matched at the DDS level
    only if QoS is compatible, so also wait for messages when that matters.
    """
    if kind not in ("publisher", "subscriber"):
        raise ValueError(f"kind must be 'publisher' or 'subscriber', got {kind!r}")
    name = _resolve(node, topic)
    counter: Callable[[str], int] = node.count_publishers if kind == "publisher" else node.count_subscribers
    deadline = time.monotonic() + timeout
    with _Spinner(node, spin) as spinner:
        while True:
            seen = counter(name)
            if seen >= count:
                return seen
            _check_processes(processes, f"{kind}s on {name}")
            if time.monotonic() > deadline:
                raise TopicWaitTimeoutError(
                    f"timed out after {timeout} s waiting for {count} {kind}(s) on topic '{name}' "
                    f"(saw {seen}; domain {os.environ.get('ROS_DOMAIN_ID')}, "
                    f"discovery {os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}); {_graph_hint(node)}"
                )
            spinner.step(poll)


def _resolve(node: Node, topic: str) -> str:
    try:
        return node.resolve_topic_name(topic)
    except Exception:  # older rclpy or an unusual name: query as given
        return topic


def import_message_type(type_name: str) -> type:
    """'sensor_msgs/msg/Image' (or 'sensor_msgs/Image') -> the Python message class."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"not a ROS type name: {type_name!r}")
    package, sub, cls = parts
    return getattr(importlib.import_module(f"{package}.{sub}"), cls)


def wait_for_messages(
    node: Node,
    topic: str,
    msg_type: type | str | None = None,
    count: int = 1,
    timeout: float = 15.0,
    *,
    qos: Any = None,
    spin: bool = True,
    processes: Sequence[NodeProcess] | None = None,
    poll: float = 0.02,
) -> list[Any]:
    """Subscribe to `topic` and return the first `count` messages (TopicWaitTimeoutError after `timeout`).

    `msg_type` may be a class, a type name ('std_msgs/msg/String') or None (taken from the graph,
    waiting for a publisher first). Default QoS is best effort, volatile, depth max(10, count):
    it matches both reliable and best-effort publishers; pass `qos` for latched topics.
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    name = _resolve(node, topic)
    deadline = time.monotonic() + timeout
    if msg_type is None:
        wait_for_topic_match(node, name, "publisher", 1, timeout, spin=spin, processes=processes, poll=poll)
        types = dict(node.get_topic_names_and_types()).get(name) or []
        if not types:
            raise TopicWaitTimeoutError(f"topic '{name}' has publishers but no type in the graph")
        msg_type = types[0]
    if isinstance(msg_type, str):
        msg_type = import_message_type(msg_type)
    if qos is None:
        qos = QoSProfile(depth=max(10, count), reliability=ReliabilityPolicy.BEST_EFFORT)
    received: list[Any] = []
    done = threading.Event()

    def on_message(msg: Any) -> None:
        if len(received) < count:
            received.append(msg)
            if len(received) >= count:
                done.set()

    subscription = node.create_subscription(msg_type, name, on_message, qos)
    try:
        with _Spinner(node, spin) as spinner:
            while not done.is_set():
                _check_processes(processes, f"messages on {name}")
                if time.monotonic() > deadline:
                    raise TopicWaitTimeoutError(
                        f"timed out after {timeout} s waiting for {count} message(s) on topic '{name}' "
                        f"(got {len(received)}, publishers {node.count_publishers(name)}); "
                        f"{_graph_hint(node)}"
                    )
                spinner.step(poll, done)
    finally:
        node.destroy_subscription(subscription)
    return list(received)


def call_trigger(node: Node, name: str, timeout: float = 20.0) -> str:
    """Call a std_srvs/Trigger service from `node`; its message, or RuntimeError / TimeoutError
    naming the service when it is missing, silent or answers success=False."""
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available within {timeout} s")
        future = client.call_async(Trigger.Request())
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        try:
            executor.spin_until_future_complete(future, timeout_sec=timeout)
        finally:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)
        result = future.result()
        if result is None or not result.success:
            raise RuntimeError(f"{name} failed: {result.message if result else 'no answer'}")
        return result.message
    finally:
        node.destroy_client(client)
