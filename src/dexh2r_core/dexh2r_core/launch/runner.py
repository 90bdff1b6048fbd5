"""Run a parsed launch description: one OS process per node, prefixed output, clean shutdown.

Each node is started with the command line ros2 launch builds:

    [launch-prefix] EXEC [args] [--ros-args ros_args] --ros-args -r __node:=NAME -r __ns:=/NS
        [-p global:=value] --params-file FILE ... -r from:=to ...

(name/value params go through a temporary params file, as in ros2 launch). Every node runs in its
own process group so that Ctrl-C in a terminal reaches only the launcher, which then stops the
nodes in order: SIGINT, wait `sigterm_timeout` (5 s), SIGTERM, wait `sigkill_timeout` (5 s),
SIGKILL. A second Ctrl-C skips straight to SIGKILL.

The launch ends when every node has exited, when a required node (`on_exit="shutdown"`)
exits, on SIGINT/SIGTERM, or after `timeout`. Exit code: 1 if any node crashed (exited non-zero
or by a signal on its own, not because the launcher stopped it), else 128+N when stopped by
signal N (130 for Ctrl-C), else 0.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from dexh2r_core.launch.parser import LaunchDescription, NodeDescription, ParamFile, unflatten_params
from dexh2r_core.launch.resolve import resolve_executable
from dexh2r_core.ros_env import apply_ros_defaults

SIGTERM_TIMEOUT = 5.0
SIGKILL_TIMEOUT = 5.0
_POLL = 0.02
_COLORS = (32, 36, 33, 35, 34, 92, 96, 93, 95, 94)


def build_command(node: NodeDescription, params_dir: Path, *, write: bool = True) -> list[str]:
    """The node's command line; name/value params are written under `params_dir` (if `write`)."""
    resolved = node.resolved or resolve_executable(node.package, node.executable)
    cmd = [*node.launch_prefix, *resolved.argv, *node.args]
    if node.ros_args:
        cmd += ["--ros-args", *node.ros_args]
    cmd.append("--ros-args")
    if node.name is not None:
        cmd += ["-r", f"__node:={node.name}"]
    if node.namespace is not None:
        cmd += ["-r", f"__ns:={node.namespace}"]
    for name, value in node.global_params:
        cmd += ["-p", f"{name}:={value}"]
    for i, item in enumerate(node.params):
        if isinstance(item, ParamFile) and item.text is None:
            cmd += ["--params-file", str(item.path)]
            continue
        path = params_dir / f"{(node.label or node.executable).replace('/', '_')}.{i}.yaml"
        if not write:
            pass
        elif isinstance(item, ParamFile):  # allow_substs: the substituted text
            path.write_text(item.text or "")
        else:
            # ros2 launch keys these by the node's full name when known, else by /**.
            key = node.fqn or "/**"
            path.write_text(
                yaml.safe_dump({key: {"ros__parameters": unflatten_params(item)}}, sort_keys=False)
            )
        cmd += ["--params-file", str(path)]
    for src, dst in node.remaps:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def node_environment(node: NodeDescription, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment + the file's set_env/<env> changes + the project's ROS defaults."""
    env = dict(os.environ if base is None else base)
    for key, value in node.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    apply_ros_defaults(env)
    # Output goes through a pipe: without this Python nodes' prints arrive in 8 KiB blocks.
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _pdeathsig() -> Callable[[], None] | None:
    """Linux: children get SIGTERM if the launcher dies without cleaning up (e.g. SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return set_pdeathsig


@dataclass
class NodeRun:
    """One node's process (across respawns)."""

    node: NodeDescription
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    stopped_by_launcher: bool = False
    crashed: bool = False
    starts: int = 0
    respawn_at: float | None = None
    term_at: float | None = None  # when shutdown escalates to SIGTERM, then SIGKILL
    kill_at: float | None = None
    reader: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.returncode is None


@dataclass
class LaunchResult:
    exit_code: int
    reason: str
    runs: list[NodeRun] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def crashed(self) -> list[NodeRun]:
        return [r for r in self.runs if r.crashed]


class LaunchRunner:
    """Starts and supervises the nodes of one launch description (call `run()` once)."""

    def __init__(
        self,
        description: LaunchDescription,
        *,
        timeout: float | None = None,
        base_env: Mapping[str, str] | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        color: bool | None = None,
        on_line: Callable[[str, str], None] | None = None,
    ) -> None:
        self.desc = description
        self.timeout = timeout
        self.base_env = base_env
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        if color is None:
            color = hasattr(self.out, "isatty") and self.out.isatty() and "NO_COLOR" not in os.environ
        self.color = color
        self.on_line = on_line
        self.runs = [NodeRun(n) for n in description.nodes]
        self._lock = threading.Lock()
        self._signals: list[int] = []
        self._shutdown_reason: str | None = None
        self._stop_signal: int | None = None
        self._killed = False
        self._preexec = _pdeathsig()

    # -- output
    def log(self, message: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.err.write(f"[launch] {message}\n")
            self.err.flush()

    def _prefix(self, run: NodeRun) -> str:
        label = f"[{run.node.label}]"
        if not self.color:
            return label + " "
        code = _COLORS[self.runs.index(run) % len(_COLORS)]
        return f"\x1b[{code}m{label}\x1b[0m "

    def _pump(self, run: NodeRun, stream) -> None:
        prefix = self._prefix(run)
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._lock, contextlib.suppress(OSError, ValueError):
                self.out.write(f"{prefix}{text}\n")
                self.out.flush()
            if self.on_line is not None:
                self.on_line(run.node.label, text)
        stream.close()

    # -- processes
    def _start(self, run: NodeRun, params_dir: Path) -> bool:
        node = run.node
        try:
            cmd = build_command(node, params_dir)
            run.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=node_environment(node, self.base_env),
                cwd=node.cwd,
                process_group=0,
                preexec_fn=self._preexec,
            )
        except (OSError, LookupError, subprocess.SubprocessError) as exc:
            self.log(f"cannot start node '{node.label}' ({node.source}): {exc}")
            run.crashed = True
            run.returncode = 127
            return False
        run.returncode = None
        run.starts += 1
        run.respawn_at = None
        self.log(f"started '{node.label}' (pid {run.process.pid}): {shlex.join(cmd)}")
        run.reader = threading.Thread(
            target=self._pump, args=(run, run.process.stdout), name=f"launch-{node.label}", daemon=True
        )
        run.reader.start()
        return True

    def _signal(self, run: NodeRun, sig: int) -> None:
        if run.alive and run.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, sig)

    def _begin_shutdown(self, reason: str) -> None:
        if self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        alive = [r for r in self.runs if r.alive]
        self.log(f"{reason}" + (f" (stopping {', '.join(r.node.label for r in alive)})" if alive else ""))
        now = time.monotonic()
        for run in self.runs:
            run.respawn_at = None
            if run.alive:
                node = run.node
                term = SIGTERM_TIMEOUT if node.sigterm_timeout is None else node.sigterm_timeout
                kill = SIGKILL_TIMEOUT if node.sigkill_timeout is None else node.sigkill_timeout
                run.term_at, run.kill_at = now + term, now + term + kill
                run.stopped_by_launcher = True
                self._signal(run, signal.SIGINT)

    def _escalate(self, now: float) -> None:
        for run in self.runs:
            if not run.alive:
                continue
            if run.term_at is not None and now >= run.term_at:
                self.log(f"'{run.node.label}' still running after SIGINT: sending SIGTERM")
                self._signal(run, signal.SIGTERM)
                run.term_at = None
            if run.kill_at is not None and now >= run.kill_at:
                self.log(f"'{run.node.label}' still running after SIGTERM: sending SIGKILL")
                self._signal(run, signal.SIGKILL)
                run.kill_at = None

    def _kill_all(self) -> None:
        alive = [r for r in self.runs if r.alive]
        if alive:
            self.log(f"{', '.join(r.node.label for r in alive)} still running: sending SIGKILL")
        for run in alive:
            run.stopped_by_launcher = True
            run.term_at = run.kill_at = None
            self._signal(run, signal.SIGKILL)
        self._killed = True

    def _on_exit(self, run: NodeRun, code: int) -> None:
        run.returncode = code
        node = run.node
        if run.stopped_by_launcher:
            if code != 0:
                self.log(f"'{node.label}' stopped ({_describe_exit(code)})")
            return
        if code == 0:
            self.log(f"'{node.label}' finished cleanly")
        else:
            run.crashed = True
            self.log(f"node '{node.label}' died with exit {_describe_exit(code)} ({node.source})")
        if node.required:
            self._begin_shutdown(
                f"required node '{node.label}' exited with {_describe_exit(code)}; shutting down"
            )
            return
        retries_left = node.respawn_max_retries < 0 or run.starts <= node.respawn_max_retries
        if node.respawn and self._shutdown_reason is None and retries_left:
            run.respawn_at = time.monotonic() + node.respawn_delay
            self.log(f"respawning '{node.label}' in {node.respawn_delay:g} s")

    # -- signals
    def _handle_signal(self, signum: int, _frame) -> None:
        self._signals.append(signum)

    @contextlib.contextmanager
    def _signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _process_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if self._shutdown_reason is None:
                self._stop_signal = signum
                self._begin_shutdown(f"{name} received")
            elif signum == signal.SIGINT and not self._killed:
                self.log(f"{name} received again")
                self._kill_all()

    # -- main loop
    def run(self) -> LaunchResult:
        started = time.monotonic()
        for _source, message in self.desc.messages:
            self.log(message)
        with tempfile.TemporaryDirectory(prefix="dexh2r-launch-") as tmp, self._signal_handlers():
            params_dir = Path(tmp)
            if not self.runs:
                self.log("no nodes to run")
            for run in self.runs:
                self._process_signals()
                if self._shutdown_reason is not None:
                    break
                if not self._start(run, params_dir) and run.node.required:
                    self._begin_shutdown(f"required node '{run.node.label}' could not start; shutting down")
            deadline = None if self.timeout is None else started + self.timeout
            while True:
                self._process_signals()
                now = time.monotonic()
                for run in self.runs:
                    if run.alive and run.process is not None:
                        code = run.process.poll()
                        if code is not None:
                            self._on_exit(run, code)
                    elif (
                        run.respawn_at is not None and now >= run.respawn_at and self._shutdown_reason is None
                    ):
                        self._start(run, params_dir)
                if deadline is not None and now >= deadline and self._shutdown_reason is None:
                    self._begin_shutdown(f"timeout of {self.timeout:g} s reached")
                self._escalate(now)
                if not any(r.alive or r.respawn_at is not None for r in self.runs):
                    break
                time.sleep(_POLL)
            for run in self.runs:
                if run.reader is not None:
                    run.reader.join(timeout=2.0)
        return self._result(time.monotonic() - started)

    def _result(self, duration: float) -> LaunchResult:
        crashed = [r for r in self.runs if r.crashed]
        if crashed:
            names = ", ".join(f"'{r.node.label}' ({_describe_exit(r.returncode or 0)})" for r in crashed)
            self.log(f"failed: {names} crashed")
            code, reason = 1, f"crashed: {names}"
        elif self._stop_signal is not None:
            code, reason = 128 + self._stop_signal, self._shutdown_reason or "stopped"
        else:
            code, reason = 0, self._shutdown_reason or "all nodes finished"
        return LaunchResult(code, reason, self.runs, duration)


def run_launch(description: LaunchDescription, **kwargs) -> LaunchResult:
    """Run `description` (see LaunchRunner for the keyword arguments)."""
    return LaunchRunner(description, **kwargs).run()


__all__ = ["LaunchResult", "LaunchRunner", "build_command", "node_environment", "run_launch"]
