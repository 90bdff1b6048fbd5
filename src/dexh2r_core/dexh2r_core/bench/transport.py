"""`dexh2r bench transport --json OUT`: camera-like streams between two OS processes over DDS.

A publisher process sends sensor_msgs/Image streams (640x480 rgb8 and 16UC1 depth, 30 Hz by
default, header.stamp = send time); this process subscribes and measures, per stream, the
delivered fraction (received / published, the publisher reports its count at the end) and the
latency (callback time - header.stamp; both processes read the same system clock).

The two sides first wait for each other (DDS matching, with a timeout), then the publisher starts
the timed window on a "go" line from this process: no fixed sleeps, and no frames are lost to
discovery. QoS is the project's sensor-stream convention: best effort, keep last 5.

Targets (worst stream): delivered_fraction >= 0.995 and latency_p95_ms <= 10. Missed targets are
reported in the JSON (`pass: false`); the exit code is 1 only with --check (or if the bench could
not run at all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dexh2r_core.ros_env import apply_ros_defaults, private_domain_id

TARGET_DELIVERED_FRACTION = 0.995
TARGET_LATENCY_P95_MS = 10.0
TOPIC_PREFIX = "/dexh2r_bench"
# stream name -> (encoding, bytes per pixel)
STREAM_KINDS: dict[str, tuple[str, int]] = {"rgb": ("rgb8", 3), "depth": ("16UC1", 2)}
_ENV_NAMES = (
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "ROS_DOMAIN_ID",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "RMW_IMPLEMENTATION",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r bench transport",
        description="Two camera-like Image streams between separate processes: delivery and latency.",
    )
    p.add_argument("--json", dest="json_out", type=Path, help="write the results here (required)")
    p.add_argument("--duration", type=float, default=20.0, help="timed window in seconds (default 20)")
    p.add_argument("--rate", type=float, default=30.0, help="frames per second per stream (default 30)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--streams", default="rgb,depth", help="comma list of: " + ", ".join(STREAM_KINDS))
    p.add_argument(
        "--qos",
        choices=("best_effort", "reliable"),
        default="best_effort",
        help="reliability (default best_effort, the project's convention for sensor streams)",
    )
    p.add_argument("--depth", type=int, default=5, help="keep-last history depth (default 5)")
    p.add_argument("--match-timeout", type=float, default=20.0, help="seconds to wait for DDS matching")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--role", choices=("bench", "pub"), default="bench", help=argparse.SUPPRESS)
    return p


def _streams(args: argparse.Namespace) -> list[str]:
    names = [s.strip() for s in args.streams.split(",") if s.strip()]
    unknown = [s for s in names if s not in STREAM_KINDS]
    if unknown or not names:
        raise SystemExit(f"--streams: unknown or empty {unknown or names}; known: {', '.join(STREAM_KINDS)}")
    return names


def _qos(args: argparse.Namespace):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=args.depth,
        reliability=ReliabilityPolicy.BEST_EFFORT
        if args.qos == "best_effort"
        else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _emit(event: dict[str, Any]) -> None:
    """Publisher -> bench messages: one JSON object per stdout line."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Publisher process
# --------------------------------------------------------------------------------------------


def _image(stream: str, width: int, height: int):
    import array

    from sensor_msgs.msg import Image

    encoding, bpp = STREAM_KINDS[stream]
    msg = Image()
    msg.header.frame_id = f"bench_{stream}_optical_frame"
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = 0
    msg.step = width * bpp
    # Non-constant content so nothing could be compressed or deduplicated along the way.
    pattern = bytes(range(256)) * (width * height * bpp // 256 + 1)
    # array('B') is taken as is by the generated setter; bytes would be checked element by element.
    msg.data = array.array("B", pattern[: width * height * bpp])
    return msg


def run_publisher(args: argparse.Namespace) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    streams = _streams(args)
    rclpy.init()
    node = rclpy.create_node("dexh2r_bench_transport_pub")
    try:
        qos = _qos(args)
        pubs = {s: node.create_publisher(Image, f"{TOPIC_PREFIX}/{s}", qos) for s in streams}
        msgs = {s: _image(s, args.width, args.height) for s in streams}
        deadline = time.monotonic() + args.match_timeout
        while any(p.get_subscription_count() < 1 for p in pubs.values()):
            if time.monotonic() > deadline:
                _emit({"event": "error", "error": f"no subscriber matched within {args.match_timeout} s"})
                return 1
            time.sleep(0.01)  # polling the match state, not a readiness guess
        _emit({"event": "ready"})
        if sys.stdin.readline().strip() != "go":
            return 1  # the bench went away

        period = 1.0 / args.rate
        frames = max(1, round(args.duration * args.rate))
        counts = dict.fromkeys(streams, 0)
        publish_s: list[float] = []
        late_s = 0.0
        first_ns = last_ns = 0
        start = time.monotonic()
        for i in range(frames):
            # Absolute schedule: a late frame does not shift the ones after it.
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late_s = max(late_s, -delay)
            for s in streams:
                stamp_ns = time.time_ns()
                header = msgs[s].header
                header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                t0 = time.perf_counter()
                pubs[s].publish(msgs[s])
                publish_s.append(time.perf_counter() - t0)
                counts[s] += 1
                first_ns = first_ns or stamp_ns
                last_ns = stamp_ns
        publish_s.sort()
        _emit(
            {
                "event": "done",
                "published": counts,
                "frames": frames,
                "window_s": (last_ns - first_ns) / 1e9,
                "max_late_ms": late_s * 1e3,
                "publish_call_ms_p95": publish_s[int(0.95 * (len(publish_s) - 1))] * 1e3,
            }
        )
        # Stay alive until the bench has drained: in-flight samples live in our SHM segment.
        sys.stdin.readline()
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# --------------------------------------------------------------------------------------------
# Bench (subscriber) process
# --------------------------------------------------------------------------------------------


class _StreamStats:
    def __init__(self) -> None:
        self.latency_ns: list[int] = []
        self.dds_latency_ns: list[int] = []
        self.stamps: set[int] = set()
        self.message_bytes = 0
        self.first_rx_ns = 0
        self.last_rx_ns = 0

    def callback(self, msg: Any, info: dict[str, Any]) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.latency_ns.append(now - stamp)
        if info.get("received_timestamp") and info.get("source_timestamp"):
            self.dds_latency_ns.append(info["received_timestamp"] - info["source_timestamp"])
        self.stamps.add(stamp)
        self.message_bytes = len(msg.data)
        self.first_rx_ns = self.first_rx_ns or now
        self.last_rx_ns = now


def _percentiles_ms(values_ns: list[int]) -> dict[str, float | None]:
    import numpy as np

    if not values_ns:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
        "mean": round(float(a.mean()), 3),
    }


def _reader(stream, events: queue.Queue) -> None:
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            events.put(json.loads(line))
        except json.JSONDecodeError:
            events.put({"event": "output", "line": line})
    events.put({"event": "eof"})


def _publisher_argv(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dexh2r_core.bench.transport",
        "--role",
        "pub",
        "--duration",
        str(args.duration),
        "--rate",
        str(args.rate),
        "--width",
        str(args.width),
        "--height",
        str(args.height),
        "--streams",
        args.streams,
        "--qos",
        args.qos,
        "--depth",
        str(args.depth),
        "--match-timeout",
        str(args.match_timeout),
    ]


class _BenchError(RuntimeError):
    pass


def _measure(args: argparse.Namespace, streams: list[str], log_path: Path) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    stats = {s: _StreamStats() for s in streams}
    rclpy.init()
    node = rclpy.create_node("dexh2r_bench_transport_sub")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    proc: subprocess.Popen[str] | None = None
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    try:
        qos = _qos(args)
        subs = {
            s: node.create_subscription(Image, f"{TOPIC_PREFIX}/{s}", stats[s].callback, qos) for s in streams
        }
        t_start = time.monotonic()
        proc = subprocess.Popen(
            _publisher_argv(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=dict(os.environ),
            start_new_session=True,
        )
        events: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, events), daemon=True).start()

        def next_event(expected: str, deadline: float, spin_until: Any = None) -> dict[str, Any]:
            while True:
                executor.spin_once(timeout_sec=0.01)
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    event = None
                if event is not None:
                    if event["event"] == expected and (spin_until is None or spin_until()):
                        return event
                    if event["event"] == expected:
                        events.put(event)  # keep it until our own side is ready too
                    elif event["event"] in ("error", "eof"):
                        raise _BenchError(f"publisher process: {event.get('error', 'exited early')}")
                if time.monotonic() > deadline:
                    raise _BenchError(f"timed out waiting for the publisher's '{expected}'")

        # Both sides matched: the publisher saw our readers, our readers see its writers.
        next_event(
            "ready",
            t_start + args.match_timeout + 10.0,
            spin_until=lambda: all(sub.get_publisher_count() >= 1 for sub in subs.values()),
        )
        matched_s = time.monotonic() - t_start
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = next_event("done", time.monotonic() + args.duration * 2 + 30.0)

        # Drain frames still in flight (bounded; best effort may really have lost some).
        published = done["published"]
        drain_deadline = time.monotonic() + 1.0
        while time.monotonic() < drain_deadline and any(
            len(stats[s].latency_ns) < published[s] for s in streams
        ):
            executor.spin_once(timeout_sec=0.01)
        proc.stdin.write("exit\n")
        proc.stdin.flush()
    finally:
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                proc.kill()
                proc.wait()
        log.close()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()

    per_stream: dict[str, Any] = {}
    for s in streams:
        st = stats[s]
        n_pub = int(published[s])
        received = len(st.latency_ns)
        unique = len(st.stamps)
        encoding, bpp = STREAM_KINDS[s]
        rx_window_s = (st.last_rx_ns - st.first_rx_ns) / 1e9
        per_stream[s] = {
            "topic": f"{TOPIC_PREFIX}/{s}",
            "encoding": encoding,
            "width": args.width,
            "height": args.height,
            "message_bytes": st.message_bytes or args.width * args.height * bpp,
            "published": n_pub,
            "received": received,
            "duplicates": received - unique,
            "delivered_fraction": round(min(unique, n_pub) / n_pub, 6) if n_pub else 0.0,
            "latency_ms": _percentiles_ms(st.latency_ns),
            # rmw source -> reception timestamps: the transport alone, without Python callbacks.
            "dds_latency_ms": _percentiles_ms(st.dds_latency_ns),
            "rate_published_hz": round((n_pub - 1) / done["window_s"], 3) if done["window_s"] > 0 else None,
            "rate_received_hz": round((received - 1) / rx_window_s, 3) if rx_window_s > 0 else None,
        }
    return {
        "streams": per_stream,
        "timing": {
            "match_s": round(matched_s, 3),
            "window_s": round(done["window_s"], 3),
            "publisher_max_late_ms": round(done["max_late_ms"], 3),
            "publish_call_ms_p95": round(done["publish_call_ms_p95"], 3),
        },
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(result: dict[str, Any]) -> None:
    header = (
        f"{'stream':<7} {'bytes':>8} {'pub':>5} {'recv':>5} {'delivered':>9} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'Hz':>6}"
    )
    print(header)
    for name, s in result.get("streams", {}).items():
        lat = s["latency_ms"]
        print(
            f"{name:<7} {s['message_bytes']:>8} {s['published']:>5} {s['received']:>5} "
            f"{s['delivered_fraction']:>9.4f} {_fmt(lat['p50']):>7} "
            f"{_fmt(lat['p95']):>7} {_fmt(lat['max']):>7} {_fmt(s['rate_received_hz']):>6}"
        )
    verdict = "PASS" if result["pass"] else "FAIL"
    print(
        f"worst stream: delivered {result['delivered_fraction']} (target >= {TARGET_DELIVERED_FRACTION}), "
        f"latency p95 {result['latency_p95_ms']} ms (target <= {TARGET_LATENCY_P95_MS}): {verdict}"
    )


def run_bench(args: argparse.Namespace) -> int:
    if args.json_out is None:
        print("dexh2r bench transport: --json OUT is required", file=sys.stderr)
        return 2
    streams = _streams(args)
    # A private domain unless the caller chose one: a running graph must not disturb the figures.
    domain = os.environ.get("ROS_DOMAIN_ID")
    apply_ros_defaults(os.environ, domain_id=int(domain) if domain else private_domain_id())
    log_path = Path(tempfile.mkstemp(prefix="dexh2r-bench-transport-pub-", suffix=".log")[1])
    result: dict[str, Any] = {
        "bench": "transport",
        "delivered_fraction": 0.0,
        "latency_p95_ms": None,
        "pass": False,
        "targets": {
            "delivered_fraction_min": TARGET_DELIVERED_FRACTION,
            "latency_p95_ms_max": TARGET_LATENCY_P95_MS,
        },
        "config": {
            "duration_s": args.duration,
            "rate_hz": args.rate,
            "width": args.width,
            "height": args.height,
            "streams": streams,
            "qos": {"reliability": args.qos, "history": "keep_last", "depth": args.depth},
            "processes": "publisher and subscriber in separate OS processes",
            "latency": "subscriber callback time - header.stamp (send time), same host clock",
        },
        "environment": {
            **{name: os.environ.get(name) for name in _ENV_NAMES},
            "profile_exists": os.path.exists(os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or ""),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    from rclpy.executors import ExternalShutdownException

    error = None
    try:
        result.update(_measure(args, streams, log_path))
    except (_BenchError, KeyError) as exc:
        error = str(exc)
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C lands in either, by timing
        error = "interrupted"
    if error is None:
        per = result["streams"].values()
        worst_f = min(s["delivered_fraction"] for s in per)
        p95s = [s["latency_ms"]["p95"] for s in per]
        worst_l = None if any(v is None for v in p95s) else max(p95s)
        result["delivered_fraction"] = worst_f
        result["latency_p95_ms"] = worst_l
        result["pass_delivered_fraction"] = worst_f >= TARGET_DELIVERED_FRACTION
        result["pass_latency_p95"] = worst_l is not None and worst_l <= TARGET_LATENCY_P95_MS
        result["pass"] = result["pass_delivered_fraction"] and result["pass_latency_p95"]
        log_path.unlink(missing_ok=True)
    else:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        result["error"] = error
        result["publisher_log"] = str(log_path)
        print(f"dexh2r bench transport: {error}\npublisher log {log_path}:\n{tail}", file=sys.stderr)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if error is None:
        _summary(result)
    print(f"wrote {args.json_out}")
    if error is not None:
        return 1
    return 1 if args.check and not result["pass"] else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "pub":
        return run_publisher(args)
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
