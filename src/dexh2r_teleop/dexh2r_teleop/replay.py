"""`dexh2r replay BAG`: play a rosbag2 MCAP bag's topics into the ROS graph with original timing.

Messages are published as the CDR bytes stored in the bag (no re-serialisation), in log-time order,
each at `start + (log_time - first_log_time) / rate` on the monotonic clock (an absolute schedule:
one late message does not shift the others). QoS per topic follows the publishers recorded in the
bag (reliability, durability), as `ros2 bag play` does.

`/clock`: the bag's own `/clock` topic is replayed if it has one (a sim recording: header stamps are
sim time, and the recorded clock is that time); otherwise a `rosgraph_msgs/Clock` of the bag's
log time is published at `--clock-hz`. `--no-clock` turns both off.

Bad input stops before or while playing with a message naming the bag, the topic and the time: a
truncated file (recorder killed: `dexh2r record --recover` indexes it), a required or selected
topic the bag lacks, a message that does not deserialise as its type (checked with the pure-Python
rosbags deserialiser, so a corrupt message cannot crash a subscriber), a damaged chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dexh2r_teleop.recorder import BagError, BagInfo, RawMessage, deserialize, iter_messages, open_bag

CLOCK_TOPIC = "/clock"


@dataclass
class ReplayOptions:
    bag: Path
    topics: list[str] = field(default_factory=list)  # empty: all
    rate: float = 1.0
    clock: bool = True
    clock_hz: float = 100.0
    remap: dict[str, str] = field(default_factory=dict)
    start_s: float = 0.0  # skip this much of the bag
    duration_s: float = 0.0  # 0: to the end
    require: list[str] = field(default_factory=list)
    allow_incomplete: bool = False
    validate: bool = True
    wait_for: list[str] = field(default_factory=list)  # output topics that need a subscriber first
    wait_timeout_s: float = 20.0
    delay_s: float = 0.0  # after --wait-for: DDS reliable matching completes a little after discovery

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if self.clock_hz <= 0:
            raise ValueError(f"--clock-hz must be > 0, got {self.clock_hz}")


def selected_topics(info: BagInfo, opts: ReplayOptions) -> list[str]:
    """The bag topics to play (BagError if a requested one is missing)."""
    if opts.topics:
        missing = [t for t in opts.topics if t not in info.topics]
        if missing:
            raise BagError(f"bag {info.path}: no topic(s) {missing} (has: {sorted(info.topics)})")
        topics = list(opts.topics)
    else:
        topics = sorted(info.topics)
    if opts.clock and CLOCK_TOPIC in info.topics and CLOCK_TOPIC not in topics:
        topics.append(CLOCK_TOPIC)
    if not opts.clock and CLOCK_TOPIC in topics and not opts.topics:
        topics.remove(CLOCK_TOPIC)
    return topics


def schedule(
    info: BagInfo, opts: ReplayOptions, topics: Sequence[str]
) -> Iterator[tuple[float, RawMessage | int]]:
    """(seconds after the replay's start, message) in order; with a generated clock, ints are clock
    ticks (bag time in ns) interleaved with the messages."""
    t0 = info.start_ns + int(opts.start_s * 1e9)
    t_end = t0 + int(opts.duration_s * 1e9) if opts.duration_s > 0 else None
    generate_clock = opts.clock and CLOCK_TOPIC not in info.topics
    clock_step = int(1e9 / opts.clock_hz)
    next_clock = t0
    for msg in iter_messages(info, topics, validate=False):
        if msg.log_time_ns < t0:
            continue
        if t_end is not None and msg.log_time_ns > t_end:
            break
        while generate_clock and next_clock <= msg.log_time_ns:
            yield (next_clock - t0) * 1e-9 / opts.rate, next_clock
            next_clock += clock_step
        yield (msg.log_time_ns - t0) * 1e-9 / opts.rate, msg


def _check_message(info: BagInfo, msg: RawMessage) -> None:
    try:
        deserialize(msg.data, msg.type)
    except Exception as exc:
        raise BagError(
            f"bag {info.path}: corrupt message on {msg.topic} ({msg.type}) at log time "
            f"{msg.log_time_ns} ns ({(msg.log_time_ns - info.start_ns) * 1e-9:.3f} s into the bag): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _qos_for(info: BagInfo, topic: str):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    offered = info.qos.get(topic) or []
    reliable = bool(offered) and all(q.get("reliability") == "reliable" for q in offered)
    latched = bool(offered) and all(q.get("durability") == "transient_local" for q in offered)
    depth = max([10, *(int(q.get("depth") or 0) for q in offered)])
    return QoSProfile(
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def replay(opts: ReplayOptions, *, ros_args: Sequence[str] | None = None, log=print) -> dict[str, Any]:
    """Play the bag (blocking). Returns a report; raises BagError on bad input."""
    import rclpy
    from rclpy.context import Context
    from rosgraph_msgs.msg import Clock

    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_core.testing import import_message_type

    info = open_bag(opts.bag, require=opts.require, allow_incomplete=opts.allow_incomplete)
    topics = selected_topics(info, opts)
    apply_ros_defaults()
    context = Context()
    rclpy.init(args=list(ros_args or []), context=context)
    node = rclpy.create_node("replay", context=context)
    try:
        pubs = {}
        for topic in topics:
            out = opts.remap.get(topic, topic)
            pubs[topic] = node.create_publisher(
                import_message_type(info.topics[topic]), out, _qos_for(info, topic)
            )
        clock_pub = None
        if opts.clock and CLOCK_TOPIC not in info.topics:
            clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, 10)
        by_output = {opts.remap.get(t, t): p for t, p in pubs.items()}
        deadline = time.monotonic() + opts.wait_timeout_s
        for out in opts.wait_for:
            if out not in by_output:
                raise BagError(
                    f"bag {info.path}: --wait-for {out}: not a replayed topic ({sorted(by_output)})"
                )
            while by_output[out].get_subscription_count() < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replay: no subscriber on {out} within {opts.wait_timeout_s} s")
                time.sleep(0.01)  # polling the match state
        if opts.validate:
            from dexh2r_teleop.recorder import typestore

            for topic in topics:  # build the deserialisers now: the first one costs tens of ms
                typestore().get_msgdef(info.topics[topic])
        if opts.delay_s > 0:
            time.sleep(opts.delay_s)
        counts = dict.fromkeys(topics, 0)
        late: list[float] = []
        clock_ticks = 0
        start = time.monotonic()
        start_unix_ns = time.time_ns()  # lets a test map bag time to wall time (latency)
        log(f"replay: {info.path} ({len(topics)} topics, rate {opts.rate}x)")
        for offset, item in schedule(info, opts, topics):
            if isinstance(item, RawMessage) and opts.validate:
                _check_message(info, item)
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late.append(-delay)
            if isinstance(item, RawMessage):
                pubs[item.topic].publish(item.data)
                counts[item.topic] += 1
            else:
                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(item, 1_000_000_000)
                assert clock_pub is not None
                clock_pub.publish(clock)
                clock_ticks += 1
        wall = time.monotonic() - start
        # Reliable subscribers must get the last messages before this process (and its
        # publishers) goes away: wait for their acknowledgements, bounded.
        from rclpy.duration import Duration
        from rclpy.qos import ReliabilityPolicy

        for pub in pubs.values():
            if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                pub.wait_for_all_acked(Duration(seconds=2.0))
        late_ms = np.array(late or [0.0]) * 1e3
        report = {
            "bag": str(info.path),
            "status": info.status,
            "rate": opts.rate,
            "wall_s": round(wall, 3),
            "bag_s": round((info.end_ns - info.start_ns) * 1e-9, 3),
            "published": counts,
            "clock": "bag" if CLOCK_TOPIC in topics else ("generated" if clock_pub else "off"),
            "clock_ticks": clock_ticks,
            "start_unix_ns": start_unix_ns,
            "bag_t0_ns": info.start_ns + int(opts.start_s * 1e9),
            "late_ms_p95": round(float(np.percentile(late_ms, 95)), 3),
            "late_ms_max": round(float(late_ms.max()), 3),
        }
        log(f"replay: done in {wall:.2f} s: {sum(counts.values())} messages")
        return report
    finally:
        node.destroy_node()
        context.try_shutdown()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r replay",
        description="Play a rosbag2 MCAP bag with original timing (and /clock) into the ROS graph.",
    )
    p.add_argument("bag", type=Path, help="bag folder (with metadata.yaml)")
    p.add_argument("--topics", nargs="+", default=[], help="play only these topics (default: all)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    p.add_argument("--no-clock", action="store_true", help="publish no /clock")
    p.add_argument(
        "--clock-hz", type=float, default=100.0, help="generated /clock rate (bags without /clock)"
    )
    p.add_argument(
        "--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish a bag topic under another name"
    )
    p.add_argument("--start", type=float, default=0.0, help="skip the first S seconds of the bag")
    p.add_argument("--duration", type=float, default=0.0, help="play only S seconds (default: all)")
    p.add_argument("--require", nargs="+", default=[], help="fail unless the bag has these topics")
    p.add_argument("--allow-incomplete", action="store_true", help="play bags not stopped as complete")
    p.add_argument("--no-validate", action="store_true", help="skip deserialising messages before publishing")
    p.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC", help="wait for a subscriber first")
    p.add_argument("--wait-timeout", type=float, default=20.0)
    p.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before playing (after --wait-for)"
    )
    p.add_argument("--check", action="store_true", help="only read and check every message; publish nothing")
    p.add_argument("--json", dest="json_out", type=Path, help="write the replay report here")
    return p


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    remap = {}
    for rule in args.remap:
        src, sep, dst = rule.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"--remap: expected FROM:=TO, got {rule!r}")
        remap[src] = dst
    return ReplayOptions(
        bag=args.bag,
        topics=args.topics,
        rate=args.rate,
        clock=not args.no_clock,
        clock_hz=args.clock_hz,
        remap=remap,
        start_s=args.start,
        duration_s=args.duration,
        require=args.require,
        allow_incomplete=args.allow_incomplete,
        validate=not args.no_validate,
        wait_for=args.wait_for,
        wait_timeout_s=args.wait_timeout,
        delay_s=args.delay,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # --ros-args ... belong to rclpy (launch files pass them to every node).
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    args = _parser().parse_args(argv)
    try:
        opts = options_from_args(args)
        if args.check:
            from dexh2r_teleop.recorder import check_bag

            info = open_bag(opts.bag, require=opts.require, allow_incomplete=opts.allow_incomplete)
            selected_topics(info, opts)
            report = check_bag(opts.bag, opts.require, opts.allow_incomplete)
        else:
            report = replay(opts, ros_args=["replay", *ros_args])
    except (BagError, ValueError, TimeoutError) as exc:
        print(f"dexh2r replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
