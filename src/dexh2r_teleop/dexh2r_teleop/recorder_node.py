"""`recorder_node` / `dexh2r record`: episodes of the topics a record config names, to rosbag2 MCAP.

Thin rclpy shell around `recorder.EpisodeRecorder`. Topics are subscribed raw (CDR bytes, written
untouched) as soon as they have publishers; with `qos: auto` the subscription adapts to the
publishers as rosbag2 does (reliable only if every publisher is reliable, transient-local likewise),
so a best-effort camera and a reliable command topic are both recorded.

Services (std_srvs/Trigger, under the node's name, default `/recorder/...`):
- `~/start`: open an episode (bag folder under `output_dir`); the response message is the bag path.
- `~/stop`: close it, after the messages still queued (the recorder may be behind): per-topic
  rate/drop report (logged, in `episode.json` and in the response as JSON), `metadata.yaml` with
  status `complete`.
- `~/discard`: close and delete the episode.
Topics: `~/annotate` (std_msgs/String, JSON object: operator/object/scenario/outcome/notes/...):
merged into the open episode's metadata (or the next one's); `~/status` (std_msgs/String JSON,
transient local): state, bag, counts, published on every change and every `status_period_s`.

Parameters: `config` (config/record/default.yaml), `output_dir` (overrides the config's),
`operator`, `object`, `scenario`, `outcome`, `notes`, `autostart` (start an episode once the
topics are subscribed, at most `wait_for_topics_s` later), `duration_s` (> 0: stop the episode
after that long and exit), `recover_on_start` (index bags whose recorder died, status
`incomplete`). On SIGINT/SIGTERM an open episode is closed with status `interrupted`; a killed
recorder leaves status `recording` and a file readable up to its last chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from dexh2r_teleop.recorder import (
    COMPLETE,
    EPISODE_FIELDS,
    INTERRUPTED,
    BagError,
    EpisodeRecorder,
    TopicSpec,
    bag_info,
    check_bag,
    find_unfinished,
    format_report,
    load_record_config,
    qos_dict,
    read_sidecar,
    recover_bag,
)

DEFAULT_CONFIG = "record/default.yaml"


def drain_subscriptions(subscriptions: list[Any], quiet_s: float = 0.05, max_s: float = 1.0) -> int:
    """Run the callbacks of the messages still queued in `subscriptions`; the number taken.

    An executor takes one message per ready subscription per wait, then runs a ready service: a
    `~/stop` that arrives while the recorder is behind (a loaded machine, a burst) would close the
    bag with the backlog still in DDS. Taken until `quiet_s` passes with nothing new (stragglers
    still in transport), at most `max_s`.
    """
    taken = 0
    deadline = time.monotonic() + max_s
    quiet_until = time.monotonic() + quiet_s
    while (now := time.monotonic()) < deadline and now < quiet_until:
        got = False
        for sub in subscriptions:
            try:
                with sub.handle:
                    msg_info = sub.handle.take_message(sub.msg_type, sub.raw)
            except Exception:  # destroyed, or the context is gone (SIGINT): nothing more to take
                continue
            if msg_info is None:
                continue
            sub.callback(*msg_info)
            taken += 1
            got = True
        if got:
            quiet_until = time.monotonic() + quiet_s
        else:
            time.sleep(0.005)
    return taken


def _qos_choice(spec: TopicSpec, publishers: list[Any]) -> tuple[str, str]:
    """(reliability, durability) for the subscription: rosbag2's adaptation rule."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    if spec.qos != "auto":
        return spec.qos, "volatile"
    reliable = bool(publishers) and all(
        p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers
    )
    latched = bool(publishers) and all(
        p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers
    )
    return ("reliable" if reliable else "best_effort"), ("transient_local" if latched else "volatile")


def run(argv: list[str] | None = None, overrides: dict[str, Any] | None = None) -> int:
    """Run the node. `argv`: rclpy arguments (--ros-args ...); `overrides`: parameter values."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from dexh2r_core.config import ConfigError
    from dexh2r_core.node_runtime import stopping
    from dexh2r_core.paths import config_path
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_core.testing import import_message_type

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    overrides = overrides or {}
    node = Node(
        "recorder",
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    log = node.get_logger()
    p = node.declare_parameter
    config_param = p("config", DEFAULT_CONFIG).value
    output_dir = p("output_dir", "").value
    defaults = {key: p(key, "").value for key in EPISODE_FIELDS}
    autostart = bool(p("autostart", False).value)
    wait_for_topics_s = float(p("wait_for_topics_s", 5.0).value)
    duration_s = float(p("duration_s", 0.0).value)
    recover_on_start = bool(p("recover_on_start", True).value)
    status_period_s = float(p("status_period_s", 1.0).value)
    discovery_period_s = float(p("discovery_period_s", 0.1).value)

    def fail(message: str) -> int:
        log.fatal(message)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2

    try:
        config = load_record_config(config_path(config_param))
    except ConfigError as exc:
        return fail(f"cannot start: {exc}")
    core = EpisodeRecorder(config, output_dir or None, {k: v for k, v in defaults.items() if v})
    if recover_on_start:
        for bag in find_unfinished(core.output_dir):
            try:
                result = recover_bag(bag)
                log.warning(f"recovered unfinished episode {bag} (status incomplete): {result.get('counts')}")
            except BagError as exc:
                log.error(f"cannot recover {bag}: {exc}")

    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    status_pub = node.create_publisher(String, "~/status", latched)
    subscriptions: dict[str, Any] = {}
    state: dict[str, Any] = {"started_at": None, "launched": time.monotonic(), "done": False, "last": None}

    def publish_status(extra: dict[str, Any] | None = None) -> None:
        if not node.context.ok():
            return  # shutting down (SIGINT): the episode is still closed, just not announced
        status = core.progress() | (extra or {})
        status_pub.publish(String(data=json.dumps(status)))

    def make_callback(topic: str):
        def callback(data: bytes, info: Any) -> None:
            core.on_message(topic, data, time.time_ns(), info.get("source_timestamp") if info else None)

        return callback

    def discover() -> None:
        if len(subscriptions) == len(config.topics):
            return
        graph = dict(node.get_topic_names_and_types())
        for spec in config.topics:
            if spec.name in subscriptions:
                continue
            publishers = node.get_publishers_info_by_topic(spec.name)
            if not publishers and spec.qos == "auto":
                continue  # adapt to the publishers once there are some
            types = graph.get(spec.name) or []
            msgtype = spec.type or (types[0] if types else "")
            if not msgtype:
                continue
            if spec.type and types and spec.type.replace("/msg/", "/") != types[0].replace("/msg/", "/"):
                log.error(f"{spec.name}: config says {spec.type}, the graph has {types}; not recorded")
                subscriptions[spec.name] = None
                continue
            reliability, durability = _qos_choice(spec, publishers)
            qos = QoSProfile(
                depth=spec.depth,
                reliability=ReliabilityPolicy.RELIABLE
                if reliability == "reliable"
                else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL
                if durability == "transient_local"
                else DurabilityPolicy.VOLATILE,
            )
            try:
                cls = import_message_type(msgtype)
                offered = [
                    qos_dict(
                        "reliable"
                        if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                        else "best_effort",
                        "transient_local"
                        if pub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                        else "volatile",
                        pub.qos_profile.depth,
                    )
                    for pub in publishers
                ] or [qos_dict(reliability, durability, spec.depth)]
                core.set_topic(spec.name, msgtype, offered)
            except (ImportError, AttributeError, ValueError, BagError) as exc:
                log.error(f"{spec.name}: cannot record type {msgtype}: {exc}")
                subscriptions[spec.name] = None
                continue
            subscriptions[spec.name] = node.create_subscription(
                cls, spec.name, make_callback(spec.name), qos, raw=True
            )
            log.info(f"recording {spec.name} ({msgtype}, {reliability}, {durability}, depth {spec.depth})")

    def start_episode(**fields: Any) -> str:
        path = core.start(**fields)
        state["started_at"] = time.monotonic()
        log.info(f"episode started: {path}")
        publish_status()
        return str(path)

    def stop_episode(status: str = COMPLETE) -> dict[str, Any]:
        drained = drain_subscriptions([s for s in subscriptions.values() if s is not None])
        if drained:
            log.info(f"took {drained} queued messages before closing the episode")
        result = core.stop(status)
        state["started_at"] = None
        report = result["report"]
        level = log.info if report["ok"] and result["status"] == COMPLETE else log.warning
        level(
            f"episode {result['status']}: {result['bag']} ({result['message_count']} messages, "
            f"{report['duration_s']:.1f} s)\n{format_report(report)}"
        )
        publish_status(
            {"last_episode": {"bag": result["bag"], "status": result["status"], "ok": report["ok"]}}
        )
        return result

    def summary(result: dict[str, Any]) -> str:
        return json.dumps(
            {
                "bag": result["bag"],
                "status": result["status"],
                "ok": result["report"]["ok"],
                "topics": {
                    name: {k: t.get(k) for k in ("received", "expected", "kept_fraction", "gap_count", "ok")}
                    for name, t in result["report"]["topics"].items()
                },
            }
        )

    def start_cb(_req, res):
        try:
            res.message = start_episode()
            res.success = True
        except (BagError, OSError) as exc:
            res.success, res.message = False, str(exc)
        return res

    def stop_cb(_req, res):
        try:
            res.message = summary(stop_episode())
            res.success = True
        except (BagError, OSError) as exc:
            res.success, res.message = False, str(exc)
        return res

    def discard_cb(_req, res):
        try:
            path = core.discard()
            state["started_at"] = None
            log.info(f"episode discarded: {path}")
            publish_status({"discarded": str(path)})
            res.success, res.message = True, str(path)
        except (BagError, OSError) as exc:
            res.success, res.message = False, str(exc)
        return res

    def annotate_cb(msg: String) -> None:
        try:
            fields = json.loads(msg.data)
            if not isinstance(fields, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            log.error(f"~/annotate: ignored {msg.data!r}: {exc}")
            return
        core.annotate(**fields)

    node.create_service(Trigger, "~/start", start_cb)
    node.create_service(Trigger, "~/stop", stop_cb)
    node.create_service(Trigger, "~/discard", discard_cb)
    node.create_subscription(String, "~/annotate", annotate_cb, QoSProfile(depth=10))

    def tick() -> None:
        discover()
        now = time.monotonic()
        if autostart and not core.active and state["done"] is False and state["last"] is None:
            all_in = all(t.name in subscriptions for t in config.topics if t.required)
            if all_in or now - state["launched"] >= wait_for_topics_s:
                state["last"] = start_episode()
        if core.active and duration_s > 0 and now - state["started_at"] >= duration_s:
            stop_episode(COMPLETE)
            state["done"] = True

    node.create_timer(discovery_period_s, tick)
    node.create_timer(status_period_s, lambda: core.active and publish_status())
    publish_status()
    log.info(
        f"recorder ready: {len(config.topics)} topics from {config_param}, episodes in {core.output_dir}"
        + (" (autostart)" if autostart else "; call ~/start, ~/stop, ~/discard")
    )
    code = 0
    try:
        while rclpy.ok() and not state["done"]:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not stopping():  # a signal racing a spin is a stop, anything else a crash
            raise
    finally:
        if core.active:
            try:
                stop_episode(INTERRUPTED)  # readable, but never reported as complete
            except Exception as exc:  # a failing close must still leave a clear log line
                log.error(f"could not close the episode: {exc}")
                code = 1
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(argv: list[str] | None = None) -> int:
    """Console script `recorder_node` (parameters with --ros-args -p)."""
    return run(argv)


# --------------------------------------------------------------------------------------------
# dexh2r record
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r record",
        description="Record episodes to rosbag2 MCAP (recorder_node), or recover/check/inspect bags.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"record config (default {DEFAULT_CONFIG})")
    p.add_argument("--output", "-o", default="", help="episode folder (default: the config's output_dir)")
    for key in EPISODE_FIELDS:
        p.add_argument(f"--{key}", default="", help=f"episode metadata: {key}")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="record one episode of this many seconds, then exit (default: until Ctrl-C)",
    )
    p.add_argument(
        "--wait-topics",
        type=float,
        default=5.0,
        help="start the episode once every required topic is subscribed, or after this many s (default 5)",
    )
    p.add_argument(
        "--services",
        action="store_true",
        help="do not start an episode: wait for /recorder/start, /recorder/stop, /recorder/discard",
    )
    p.add_argument(
        "--recover", nargs="+", metavar="BAG", help="index bags whose recorder died (status incomplete)"
    )
    p.add_argument("--check", nargs="+", metavar="BAG", help="read and deserialise every message of the bags")
    p.add_argument("--info", nargs="+", metavar="BAG", help="print status, episode metadata and report")
    p.add_argument(
        "--trace",
        metavar="BAG",
        help="per-step trace of a recorded sim handover (tracking error, palm, target, giver support, "
        "contacts; dexh2r_teleop.episode_trace)",
    )
    p.add_argument("--every", type=float, default=0.1, help="--trace: a row every this many sim seconds")
    p.add_argument("--json", default="", help="--trace: also write the rows to this JSON file")
    return p


def _trace(args: argparse.Namespace) -> int:
    from dexh2r_teleop.episode_trace import episode_outcome, episode_trace, format_trace

    try:
        rows = episode_trace(args.trace, args.every)
        outcome = episode_outcome(args.trace)
    except (BagError, ValueError) as exc:
        print(f"dexh2r record: {exc}", file=sys.stderr)
        return 1
    print(format_trace(rows))
    if outcome is not None:
        when = outcome.get("time_s", float("nan"))
        print(f"outcome at {when:.2f} s: {outcome.get('outcome')} ({outcome.get('detail')})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def cli(argv: list[str]) -> int:
    args, ros_args = _parser().parse_known_args(argv)
    if args.trace:
        return _trace(args)
    if args.recover or args.check or args.info:
        code = 0
        for bag in args.recover or []:
            try:
                print(json.dumps(recover_bag(bag)))
            except BagError as exc:
                print(f"dexh2r record: {exc}", file=sys.stderr)
                code = 1
        for bag in args.check or []:
            try:
                print(json.dumps(check_bag(bag, allow_incomplete=True)))
            except BagError as exc:
                print(f"dexh2r record: {exc}", file=sys.stderr)
                code = 1
        for bag in args.info or []:
            try:
                info = bag_info(bag)
                side = read_sidecar(info.path)
                state = "complete" if info.complete_file else "TRUNCATED"
                print(f"{info.path}: status {info.status}, file {state}")
                print(json.dumps(info.episode, indent=2))
                for name, n in info.counts.items():
                    print(f"  {name:<50} {info.topics[name]:<34} {n:>7}")
                if "report" in side:
                    print(format_report(side["report"]))
            except BagError as exc:
                print(f"dexh2r record: {exc}", file=sys.stderr)
                code = 1
        return code
    overrides: dict[str, Any] = {
        "config": args.config,
        "autostart": not args.services,
        "duration_s": float(args.duration),
        "wait_for_topics_s": float(args.wait_topics),
    }
    if args.output:
        overrides["output_dir"] = str(Path(args.output).resolve())
    overrides.update({k: getattr(args, k) for k in EPISODE_FIELDS if getattr(args, k)})
    return run(["dexh2r_record", *ros_args], overrides)


if __name__ == "__main__":
    sys.exit(main())
