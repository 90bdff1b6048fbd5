"""`dexh2r bench record --json OUT`: recording throughput of recorder_node over real DDS.

A publisher process sends what a teleop episode carries: `--cameras` RGB-D cameras (rgb8 colour
and 16UC1 depth, `--width`x`--height`, `--rate` Hz; synthetic scene images with sensor-like noise,
cycled from a few pre-rendered frames) and `/joint_states` at `--joint-hz`, for `--seconds`. The
real `recorder_node` (a separate process, the project's Fast DDS shared-memory profile, QoS adapted
to the publishers: reliable) records one episode of it through its start/stop services. The bag is
then read back with `rosbags`.

Figures: per topic `kept_fraction` = messages in the bag / messages published (target >= 0.999),
the recorder's own report (gaps), `mb_per_s` (bag bytes on disk per second of recording),
`raw_mb_per_s` (CDR bytes per second), the recorder's CPU use, and whether `rosbags` reads every
message back. The exit code is 1 only with --check and a missed target (or if the bench could not
run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dexh2r_core.ros_env import apply_ros_defaults, private_domain_id

TARGET_KEPT_FRACTION = 0.999
PREFIX = "/bench_record"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dexh2r bench record", description=__doc__.splitlines()[0])
    p.add_argument("--json", dest="json_out", type=Path, help="write the results here (required)")
    p.add_argument("--seconds", type=float, default=60.0, help="recording length (default 60)")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--rate", type=float, default=30.0, help="camera frames per second (default 30)")
    p.add_argument("--joint-hz", type=float, default=100.0, help="/joint_states rate (default 100)")
    p.add_argument("--depth", type=int, default=10, help="publisher history depth (reliable, default 10)")
    p.add_argument("--output", type=Path, help="keep the bag in this folder (default: temporary, deleted)")
    p.add_argument("--match-timeout", type=float, default=30.0)
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--role", choices=("bench", "pub"), default="bench", help=argparse.SUPPRESS)
    return p


def _topics(args: argparse.Namespace) -> dict[str, str]:
    """topic -> stream kind (rgb, depth, joints)."""
    out = {}
    for i in range(args.cameras):
        out[f"{PREFIX}/camera_{i}/color/image_raw"] = "rgb"
        out[f"{PREFIX}/camera_{i}/aligned_depth_to_color/image_raw"] = "depth"
    out[f"{PREFIX}/joint_states"] = "joints"
    return out


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Publisher process
# --------------------------------------------------------------------------------------------


def _frames(kind: str, width: int, height: int, n: int, seed: int) -> list[bytes]:
    """A few scene-like frames: smooth gradients plus sensor noise (compress like camera data)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(n):
        if kind == "rgb":
            base = np.stack([xx / width * 200, yy / height * 180, (xx + yy + 10 * k) % 255], axis=-1)
            img = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        else:
            base = 700 + 500 * yy / height + 30 * np.sin(xx / 40 + k)
            img = np.clip(base + rng.normal(0, 2, base.shape), 0, 65535).astype(np.uint16)
        frames.append(img.tobytes())
    return frames


def run_publisher(args: argparse.Namespace) -> int:
    import array

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    topics = _topics(args)
    rclpy.init()
    node = rclpy.create_node("bench_record_pub")
    try:
        qos = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
        pubs, msgs = {}, {}
        for i, (topic, kind) in enumerate(topics.items()):
            if kind == "joints":
                pubs[topic] = node.create_publisher(
                    JointState, topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
                )
                continue
            pubs[topic] = node.create_publisher(Image, topic, qos)
            enc, bpp = ("rgb8", 3) if kind == "rgb" else ("16UC1", 2)
            frames = []
            for data in _frames(kind, args.width, args.height, 6, seed=i):
                msg = Image(height=args.height, width=args.width, encoding=enc, step=args.width * bpp)
                msg.header.frame_id = topic.split("/")[2] + "_optical_frame"
                msg.data = array.array("B", data)  # taken as is by the generated setter
                frames.append(msg)
            msgs[topic] = frames
        joint = JointState(name=[f"j{k}" for k in range(30)], position=[0.0] * 30, velocity=[0.0] * 30)
        deadline = time.monotonic() + args.match_timeout
        while any(p.get_subscription_count() < 1 for p in pubs.values()):
            if time.monotonic() > deadline:
                _emit({"event": "error", "error": f"no subscriber matched within {args.match_timeout} s"})
                return 1
            time.sleep(0.01)  # polling the match state
        _emit({"event": "ready"})
        if sys.stdin.readline().strip() != "go":
            return 1
        counts = dict.fromkeys(topics, 0)
        cam_period, joint_period = 1.0 / args.rate, 1.0 / args.joint_hz
        n_frames = max(1, round(args.seconds * args.rate))
        n_joints = max(1, round(args.seconds * args.joint_hz))
        start = time.monotonic()
        next_cam = next_joint = 0  # indices of the next frame / joint state
        late = 0.0
        while next_cam < n_frames or next_joint < n_joints:
            t_cam = start + next_cam * cam_period if next_cam < n_frames else float("inf")
            t_joint = start + next_joint * joint_period if next_joint < n_joints else float("inf")
            due = min(t_cam, t_joint)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # absolute schedule: one late frame does not shift the others
            else:
                late = max(late, -delay)
            stamp = divmod(time.time_ns(), 1_000_000_000)
            if t_cam <= t_joint:
                for topic, frames in msgs.items():
                    msg = frames[next_cam % len(frames)]
                    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
                    pubs[topic].publish(msg)
                    counts[topic] += 1
                next_cam += 1
            else:
                joint.header.stamp.sec, joint.header.stamp.nanosec = stamp
                joint.position[0] = float(next_joint)
                pubs[f"{PREFIX}/joint_states"].publish(joint)
                counts[f"{PREFIX}/joint_states"] += 1
                next_joint += 1
        window = time.monotonic() - start
        _emit({"event": "done", "published": counts, "window_s": window, "max_late_ms": late * 1e3})
        sys.stdin.readline()  # stay until the bench has drained (samples live in our SHM segment)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# --------------------------------------------------------------------------------------------
# Bench process
# --------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _read_line(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"publisher said nothing within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"publisher exited with {proc.wait()}")
    event = json.loads(line)
    if event.get("event") == "error":
        raise RuntimeError(f"publisher: {event['error']}")
    return event


def _wait_drained(node, published: dict[str, int], timeout: float) -> dict[str, Any]:
    """Spin on /recorder/status until the counts reach what was published or stop growing."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latest: dict[str, Any] = {}
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    sub = node.create_subscription(
        String, "/recorder/status", lambda m: latest.update(json.loads(m.data)), qos
    )
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    last_total, last_change = -1, time.monotonic()
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            counts = latest.get("counts", {})
            if all(counts.get(t, 0) >= n for t, n in published.items()):
                break
            total = sum(counts.values())
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break  # nothing more is coming: the rest was dropped
    finally:
        executor.remove_node(node)
        node.destroy_subscription(sub)
    return latest


def run_bench(args: argparse.Namespace, pub_args: list[str]) -> dict[str, Any]:
    from dexh2r_core.testing import call_trigger, ros_test_node, start_node
    from dexh2r_teleop.recorder import read_sidecar

    topics = _topics(args)
    domain = private_domain_id()
    env = apply_ros_defaults(dict(os.environ), domain_id=domain, force_localhost=True)
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="dexh2r-bench-record-"))
    out_dir = (args.output or work / "episodes").resolve()
    config = work / "record.yaml"
    lines = ["flush_period_s: 1.0", "episode_prefix: bench", "topics:"]
    for topic, kind in topics.items():
        rate = args.joint_hz if kind == "joints" else args.rate
        lines.append(f"  - {{name: {topic}, rate_hz: {rate}, depth: 100}}")
    config.write_text("\n".join(lines) + "\n")
    recorder = start_node(
        "dexh2r_teleop.recorder_node:main",
        name="recorder",
        params={
            "config": str(config),
            "output_dir": str(out_dir),
            "operator": "bench",
            "status_period_s": 0.25,
        },
        env=env,
        log_dir=work,
    )
    pub = subprocess.Popen(
        [sys.executable, "-m", "dexh2r_teleop.bench_record", "--role", "pub", *pub_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        _read_line(pub, args.match_timeout)  # ready: every topic matched by the recorder
        with ros_test_node("bench_record", domain_id=domain) as node:
            for topic in topics:
                recorder.wait_for_log(f"recording {topic} ", timeout=args.match_timeout)
            bag = Path(call_trigger(node, "/recorder/start"))
            cpu0, t0 = _cpu_seconds(recorder.pid), time.monotonic()
            assert pub.stdin is not None
            pub.stdin.write("go\n")
            pub.stdin.flush()
            done = _read_line(pub, args.seconds * 3 + 60)
            status = _wait_drained(node, done["published"], 60.0)
            call_trigger(node, "/recorder/stop")
            cpu1, t1 = _cpu_seconds(recorder.pid), time.monotonic()
        pub.stdin.write("exit\n")
        pub.stdin.flush()
    finally:
        if pub.poll() is None:
            with contextlib.suppress(Exception):
                pub.stdin.close()  # type: ignore[union-attr]
            try:
                pub.wait(10)
            except subprocess.TimeoutExpired:
                pub.kill()
        recorder.stop()
    side = read_sidecar(bag)
    # Read back with rosbags: every message deserialises, counts per topic.
    from rosbags.rosbag2 import Reader

    from dexh2r_teleop.recorder import typestore

    ts = typestore()
    in_bag: dict[str, int] = dict.fromkeys(topics, 0)
    bad = 0
    read_t0 = time.monotonic()
    with Reader(bag) as reader:
        for conn, _t, raw in reader.messages():
            try:
                ts.deserialize_cdr(raw, conn.msgtype)
            except Exception:
                bad += 1
            in_bag[conn.topic] = in_bag.get(conn.topic, 0) + 1
    read_s = time.monotonic() - read_t0
    size = sum(f.stat().st_size for f in bag.iterdir())
    raw_bytes = sum(t.get("bytes", 0) for t in side["report"]["topics"].values())
    window = float(done["window_s"])
    per_topic = {}
    for topic in topics:
        rep = side["report"]["topics"][topic]
        per_topic[topic] = {
            "published": done["published"][topic],
            "in_bag": in_bag[topic],
            "kept_fraction": round(in_bag[topic] / max(1, done["published"][topic]), 6),
            "recorder_report": {
                k: rep.get(k) for k in ("measured_hz", "kept_fraction", "gap_count", "max_gap_s")
            },
        }
    worst = min(t["kept_fraction"] for t in per_topic.values())
    result = {
        "bench": "record",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "seconds": args.seconds,
            "cameras": args.cameras,
            "resolution": [args.width, args.height],
            "rate_hz": args.rate,
            "joint_hz": args.joint_hz,
            "qos": f"reliable, publisher depth {args.depth}, recorder depth 100",
            "transport": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "default"),
        },
        "topics": per_topic,
        "kept_fraction_min": worst,
        "episode_status": side["status"],
        "bag_bytes": size,
        "mb_per_s": round(size / 1e6 / window, 2),
        "raw_mb_per_s": round(raw_bytes / 1e6 / window, 2),
        "compression_ratio": round(raw_bytes / max(1, size), 2),
        "recorder_cpu_percent": round(100 * (cpu1 - cpu0) / max(1e-9, t1 - t0), 1),
        "publisher_max_late_ms": round(float(done["max_late_ms"]), 1),
        "recorder_backlog_mb_at_end": status.get("backlog_mb"),
        "rosbags_readable": bad == 0 and sum(in_bag.values()) > 0,
        "rosbags_read_s": round(read_s, 2),
        "deserialize_errors": bad,
        "targets": {"kept_fraction_min": TARGET_KEPT_FRACTION},
    }
    result["pass"] = (
        worst >= TARGET_KEPT_FRACTION and result["rosbags_readable"] and side["status"] == "complete"
    )
    if args.output is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["bag"] = str(bag)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.role == "pub":
        return run_publisher(args)
    if args.json_out is None:
        print("dexh2r bench record: --json OUT is required", file=sys.stderr)
        return 2
    # The publisher gets the same stream options.
    pub_args = [
        "--seconds", str(args.seconds), "--cameras", str(args.cameras), "--width", str(args.width),
        "--height", str(args.height), "--rate", str(args.rate), "--joint-hz", str(args.joint_hz),
        "--depth", str(args.depth), "--match-timeout", str(args.match_timeout),
    ]  # fmt: skip
    try:
        result = run_bench(args, pub_args)
    except (TimeoutError, RuntimeError) as exc:
        print(f"dexh2r bench record: {exc}", file=sys.stderr)
        return 1
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("kept_fraction_min", "mb_per_s", "raw_mb_per_s", "pass")}))
    return 1 if args.check and not result["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
