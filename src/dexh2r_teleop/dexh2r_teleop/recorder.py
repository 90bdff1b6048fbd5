"""Episode recording to rosbag2 MCAP, ROS-free (the node in `recorder_node.py` is a thin shell).

A bag is a folder `<episode>/` holding `<episode>_0.mcap`, a rosbag2 `metadata.yaml` (version 9,
storage `mcap`) and a sidecar `episode.json` (episode metadata, status, per-topic report). The MCAP
file follows rosbag2's storage_mcap layout: profile `ros2`, one schema per message type (encoding
`ros2msg`, the concatenated .msg definition) and one channel per topic (encoding `cdr`, metadata
`offered_qos_profiles` and `topic_type_hash`), messages with log_time = receive time and
publish_time = the publisher's source time, zstd-compressed chunks, and the rosbag2 metadata record
at the end. Message bytes are the CDR bytes as received from DDS (raw subscriptions): they are
written untouched, never re-serialised.

Crash safety: a chunk is closed and flushed to the OS at least every `flush_period_s`, so a killed
recorder leaves a file that MCAP stream readers read up to its last complete chunk. `metadata.yaml`
and `episode.json` say `status: recording` until the episode is closed, so a bag whose recorder
died is never taken for a complete one; `recover_bag` rewrites such a file with an index (readable
by `rosbags`) and marks it `incomplete`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Literal

import yaml

from dexh2r_core.config import load_config

ROSBAG2_VERSION = 9
ROS_DISTRO = "kilted"  # the rclpy wheels of this project; type hashes come from that typestore
STATUS_KEY = "dexh2r.status"
EPISODE_KEY = "dexh2r.episode"
SIDECAR = "episode.json"
MCAP_MAGIC = b"\x89MCAP0\r\n"

# Episode status values. Only `complete` means "stopped on purpose and fully written".
RECORDING, COMPLETE, INCOMPLETE, INTERRUPTED = "recording", "complete", "incomplete", "interrupted"
EPISODE_FIELDS = ("operator", "object", "scenario", "outcome", "notes")


class BagError(RuntimeError):
    """A bag that cannot be written or read as asked; the message names the bag (and topic/time)."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class TopicSpec:
    """One recorded topic. `type` may be left empty: it is then taken from the ROS graph."""

    name: str
    type: str = ""
    rate_hz: float = 0.0  # expected rate for the report; 0 = event topic, no rate expectation
    required: bool = True  # a required topic with no message makes the report fail
    qos: Literal["auto", "reliable", "best_effort"] = "auto"  # auto: adapt to the publishers
    depth: int = 100  # subscription history: room for bursts while the executor is busy

    def __post_init__(self) -> None:
        if not self.name.startswith("/"):
            raise ValueError(f"topic name must be absolute, got {self.name!r}")
        if self.rate_hz < 0 or self.depth < 1:
            raise ValueError(f"{self.name}: rate_hz must be >= 0 and depth >= 1")


@dataclass
class RecordConfig:
    topics: list[TopicSpec]
    output_dir: str = "episodes"
    episode_prefix: str = "episode"
    chunk_bytes: int = 4 * 1024 * 1024  # zstd chunk size (rosbag2 mcap default is 768 KiB-4 MiB)
    flush_period_s: float = 1.0  # crash safety: at most this much is lost when the recorder dies
    gap_factor: float = 2.5  # an interval longer than gap_factor / rate_hz is a gap
    min_kept_fraction: float = 0.99  # report: topics below this are flagged
    max_queue_mb: float = 1024.0  # writer backlog before messages are dropped (and counted)

    def __post_init__(self) -> None:
        names = [t.name for t in self.topics]
        if not names:
            raise ValueError("topics: at least one topic is needed")
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"topics: listed twice: {dup}")
        if self.flush_period_s <= 0 or self.chunk_bytes < 1024:
            raise ValueError("flush_period_s must be > 0 and chunk_bytes >= 1024")

    def topic(self, name: str) -> TopicSpec | None:
        return next((t for t in self.topics if t.name == name), None)


def load_record_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> RecordConfig:
    """Load a record config (config/record/*.yaml): ConfigError names the key and reason."""
    return load_config(RecordConfig, Path(path), overrides)


# --------------------------------------------------------------------------------------------
# Message types: definitions, hashes, header stamps
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def normalize_type(msgtype: str) -> str:
    """'sensor_msgs/Image' or 'sensor_msgs/msg/Image' -> 'sensor_msgs/msg/Image'."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise BagError(f"not a ROS message type: {msgtype!r}")
    return "/".join(parts)


@lru_cache(maxsize=256)
def message_definition(msgtype: str) -> tuple[str, str]:
    """(ros2msg definition text as rosbag2 stores it, RIHS01 type hash) of a message type."""
    ts = typestore()
    msgtype = normalize_type(msgtype)
    if msgtype not in ts.fielddefs:
        raise BagError(f"message type {msgtype} is not in the ROS 2 {ROS_DISTRO} typestore")
    text, _ = ts.generate_msgdef(msgtype, ros_version=2)
    return text, ts.hash_rihs01(msgtype)


@lru_cache(maxsize=256)
def has_header(msgtype: str) -> bool:
    """True if the type's first field is a std_msgs/Header (its stamp is then at CDR offset 4)."""
    fields = typestore().fielddefs.get(normalize_type(msgtype))
    if not fields or not fields[1]:
        return False
    _name, (_kind, sub) = fields[1][0]
    return sub == "std_msgs/msg/Header"


_STAMP = struct.Struct("<iI")


def header_stamp_ns(data: bytes | memoryview, msgtype: str) -> int | None:
    """header.stamp in ns read straight from CDR bytes (little endian), without deserialising."""
    if not has_header(msgtype) or len(data) < 12 or data[1] != 1:  # 0x0001: CDR little endian
        return None
    sec, nsec = _STAMP.unpack_from(data, 4)
    return sec * 1_000_000_000 + nsec


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """CDR bytes -> a rosbags message object (pure Python: a corrupt message raises, never crashes)."""
    return typestore().deserialize_cdr(bytes(data), normalize_type(msgtype))


def qos_dict(
    reliability: str = "reliable", durability: str = "volatile", depth: int = 10, history: str = "keep_last"
) -> dict[str, Any]:
    """One offered QoS profile in the rosbag2 v9 metadata layout."""
    infinite = {"sec": 9223372036, "nsec": 854775807}
    return {
        "history": history,
        "depth": int(depth),
        "reliability": reliability,
        "durability": durability,
        "deadline": dict(infinite),
        "lifespan": dict(infinite),
        "liveliness": "automatic",
        "liveliness_lease_duration": dict(infinite),
        "avoid_ros_namespace_conventions": False,
    }


# --------------------------------------------------------------------------------------------
# Per-topic statistics and the episode report
# --------------------------------------------------------------------------------------------


@dataclass
class TopicStats:
    """Counts and gaps of one topic in one episode (stamps: header.stamp if any, else receive time)."""

    name: str
    type: str
    rate_hz: float = 0.0
    required: bool = True
    gap_factor: float = 2.5
    count: int = 0
    bytes: int = 0
    writer_dropped: int = 0
    first_rx_ns: int | None = None
    last_rx_ns: int | None = None
    first_stamp_ns: int | None = None
    last_stamp_ns: int | None = None
    stamp_source: str = "receive"
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (from_ns, to_ns) in stamp time
    non_increasing: int = 0

    def add(self, rx_ns: int, stamp_ns: int | None, size: int) -> None:
        t = rx_ns if stamp_ns is None else stamp_ns
        if stamp_ns is not None:
            self.stamp_source = "header"
        if self.count:
            dt = t - self.last_stamp_ns  # type: ignore[operator]
            if dt <= 0:
                self.non_increasing += 1
            elif self.rate_hz > 0 and dt > self.gap_factor * 1e9 / self.rate_hz:
                self.gaps.append((self.last_stamp_ns, t))  # type: ignore[arg-type]
        else:
            self.first_rx_ns, self.first_stamp_ns = rx_ns, t
        self.count += 1
        self.bytes += size
        self.last_rx_ns = rx_ns
        self.last_stamp_ns = t if self.last_stamp_ns is None else max(self.last_stamp_ns, t)

    def report(self, window: tuple[int, int], min_kept_fraction: float) -> dict[str, Any]:
        """Expected vs received, gaps; `window` = (start, stop) of the episode in receive time (ns)."""
        out: dict[str, Any] = {
            "type": self.type,
            "expected_hz": self.rate_hz or None,
            "received": self.count,
            "bytes": self.bytes,
            "writer_dropped": self.writer_dropped,
            "stamp_source": self.stamp_source,
        }
        problems = []
        if self.count == 0:
            out.update(measured_hz=0.0, expected=None, kept_fraction=0.0 if self.rate_hz else None)
            if self.required:
                problems.append("no message received")
            out.update(gaps=[], missing_in_gaps=0, max_gap_s=None)
            out["ok"] = not problems
            out["problems"] = problems
            return out
        span_s = (self.last_stamp_ns - self.first_stamp_ns) * 1e-9  # type: ignore[operator]
        out["span_s"] = round(span_s, 4)
        out["measured_hz"] = round((self.count - 1) / span_s, 3) if span_s > 0 else None
        # Leading/trailing silence in receive time: drops at the episode's edges are gaps too.
        lead_s = (self.first_rx_ns - window[0]) * 1e-9  # type: ignore[operator]
        trail_s = (window[1] - self.last_rx_ns) * 1e-9  # type: ignore[operator]
        out["lead_s"], out["trail_s"] = round(lead_s, 4), round(trail_s, 4)
        if self.rate_hz > 0:
            period = 1.0 / self.rate_hz
            missing = [max(0, round((b - a) * 1e-9 / period) - 1) for a, b in self.gaps]
            expected = round(span_s * self.rate_hz) + 1
            out["expected"] = expected
            out["kept_fraction"] = round(min(1.0, self.count / expected), 5)
            out["missing_in_gaps"] = int(sum(missing))
            out["gaps"] = [
                {"from_s": round(a * 1e-9, 4), "to_s": round(b * 1e-9, 4), "missing": m}
                for (a, b), m in zip(self.gaps[:20], missing[:20], strict=True)
            ]
            out["gap_count"] = len(self.gaps)
            out["max_gap_s"] = round(max(((b - a) * 1e-9 for a, b in self.gaps), default=period), 4)
            edge = self.gap_factor * period + 0.5  # + discovery / start-up slack
            if out["kept_fraction"] < min_kept_fraction:
                problems.append(f"kept {out['kept_fraction']:.4f} < {min_kept_fraction}")
            if lead_s > edge or trail_s > edge:
                problems.append(f"silent for {max(lead_s, trail_s):.2f} s at the episode's start/end")
        else:
            out.update(expected=None, kept_fraction=None, missing_in_gaps=0, gaps=[], max_gap_s=None)
        if self.writer_dropped:
            problems.append(f"{self.writer_dropped} messages dropped by the writer (disk too slow)")
        if self.non_increasing:
            out["non_increasing_stamps"] = self.non_increasing
        out["ok"] = not problems
        out["problems"] = problems
        return out


def episode_report(
    stats: Mapping[str, TopicStats], window: tuple[int, int], min_kept_fraction: float = 0.99
) -> dict[str, Any]:
    topics = {name: s.report(window, min_kept_fraction) for name, s in stats.items()}
    return {
        "duration_s": round((window[1] - window[0]) * 1e-9, 4),
        "ok": all(t["ok"] for t in topics.values()),
        "topics": topics,
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The per-topic report as a fixed-width table (logged at the end of every episode)."""
    lines = [f"{'topic':<48} {'exp Hz':>7} {'got Hz':>7} {'recv':>6} {'kept':>7} {'gaps':>5}  status"]
    for name, t in report["topics"].items():
        exp = f"{t['expected_hz']:.1f}" if t.get("expected_hz") else "-"
        got = f"{t['measured_hz']:.1f}" if t.get("measured_hz") else "-"
        kept = f"{t['kept_fraction']:.4f}" if t.get("kept_fraction") is not None else "-"
        status = "ok" if t["ok"] else "; ".join(t["problems"])
        lines.append(
            f"{name:<48} {exp:>7} {got:>7} {t['received']:>6} {kept:>7} {t.get('gap_count', 0):>5}  {status}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


@dataclass
class _Topic:
    name: str
    type: str
    channel_id: int
    qos: list[dict[str, Any]]
    type_hash: str
    count: int = 0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class BagWriter:
    """One rosbag2 MCAP bag. `write` may be called from any thread when `threaded` (the default):
    messages go through a bounded queue to a writer thread that compresses and writes chunks, so the
    ROS executor never waits for the disk or zstd.

    Usage: `w = BagWriter(dir, metadata=...)`, `w.add_topic(...)`, `w.write(...)`, `w.close()`
    (or `w.abort()` to leave the file as a crash would, `discard()` to delete it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        episode: Mapping[str, Any] | None = None,
        chunk_bytes: int = 4 * 1024 * 1024,
        flush_period_s: float = 1.0,
        threaded: bool = True,
        max_queue_bytes: int = 1 << 30,
    ) -> None:
        from mcap.writer import CompressionType, Writer

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already: not overwriting")
        self.path.mkdir(parents=True)
        self.file_name = f"{self.path.name}_0.mcap"
        self.episode: dict[str, Any] = dict(episode or {})
        self.flush_period_s = flush_period_s
        self.topics: dict[str, _Topic] = {}
        self._schemas: dict[str, int] = {}
        self._file: IO[bytes] = open(self.path / self.file_name, "wb")  # noqa: SIM115 - closed in close()
        self._mcap = Writer(self._file, chunk_size=chunk_bytes, compression=CompressionType.ZSTD)
        self._mcap.start(profile="ros2", library="dexh2r recorder (mcap python)")
        self._lock = threading.Lock()  # guards the mcap writer (add_topic vs writer thread)
        self._last_flush = time.monotonic()
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.message_count = 0
        self.dropped: dict[str, int] = {}
        self.error: BaseException | None = None
        self.closed = False
        self._max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._qlock = threading.Lock()  # producer (executor) and writer thread both update the backlog
        self._queue: queue.SimpleQueue[tuple[str, bytes, int, int] | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._run, name=f"bag-writer-{self.path.name}", daemon=True
            )
            self._thread.start()
        self.write_metadata(RECORDING)

    # -- topics and messages ---------------------------------------------------------------
    def add_topic(self, name: str, msgtype: str, qos: Sequence[Mapping[str, Any]] = ()) -> None:
        """Register a topic (once): schema + channel records, as rosbag2 storage_mcap writes them."""
        msgtype = normalize_type(msgtype)
        if name in self.topics:
            if self.topics[name].type != msgtype:
                raise BagError(f"bag {self.path}: topic {name} already has type {self.topics[name].type}")
            return
        text, type_hash = message_definition(msgtype)
        qos_list = [dict(q) for q in qos] or [qos_dict()]
        with self._lock:
            if msgtype not in self._schemas:
                self._schemas[msgtype] = self._mcap.register_schema(msgtype, "ros2msg", text.encode())
            channel_id = self._mcap.register_channel(
                name,
                "cdr",
                self._schemas[msgtype],
                {
                    "offered_qos_profiles": yaml.safe_dump(qos_list, sort_keys=False).strip(),
                    "topic_type_hash": type_hash,
                },
            )
        self.topics[name] = _Topic(name, msgtype, channel_id, qos_list, type_hash)

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> bool:
        """Queue (or write) one CDR message; False if dropped because the writer's backlog is full."""
        if self.closed:
            raise BagError(f"bag {self.path} is closed")
        if topic not in self.topics:
            raise BagError(f"bag {self.path}: topic {topic} was not added")
        item = (topic, data, log_time_ns, publish_time_ns or log_time_ns)
        if self._queue is None:
            self._write_now(*item)
            return True
        with self._qlock:
            if self._queued_bytes + len(data) > self._max_queue_bytes:
                self.dropped[topic] = self.dropped.get(topic, 0) + 1
                return False
            self._queued_bytes += len(data)
        self._queue.put(item)
        return True

    def _write_now(self, topic: str, data: bytes, log_ns: int, pub_ns: int) -> None:
        t = self.topics[topic]
        with self._lock:
            self._mcap.add_message(
                t.channel_id, log_time=log_ns, data=data, publish_time=pub_ns, sequence=t.count
            )
            t.count += 1
            self.message_count += 1
            self.start_ns = log_ns if self.start_ns is None else min(self.start_ns, log_ns)
            self.end_ns = log_ns if self.end_ns is None else max(self.end_ns, log_ns)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        # Time-based chunk closing: what is flushed survives a SIGKILL of this process.
        if time.monotonic() - self._last_flush >= self.flush_period_s:
            self._mcap.flush()
            self._last_flush = time.monotonic()

    def tick(self) -> None:
        """Flush a partly filled chunk if it is older than flush_period_s (call periodically)."""
        if self._queue is not None:
            return  # the writer thread ticks itself
        with self._lock:
            self._maybe_flush()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            try:
                item = self._queue.get(timeout=self.flush_period_s / 2)
            except queue.Empty:
                with self._lock:
                    self._maybe_flush()
                continue
            if item is None:
                return
            with self._qlock:
                self._queued_bytes -= len(item[1])
            if self.error is not None:
                continue  # keep draining so that producers never block
            try:
                self._write_now(*item)
            except BaseException as exc:  # reported by close(); the thread must not die silently
                self.error = exc

    def backlog_bytes(self) -> int:
        return self._queued_bytes

    def _drain(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- metadata -----------------------------------------------------------------------------
    def metadata(self, status: str) -> dict[str, Any]:
        start = self.start_ns or 0
        duration = (self.end_ns - self.start_ns) if self.start_ns is not None else 0  # type: ignore[operator]
        return rosbag2_metadata(
            self.file_name,
            [(t.name, t.type, t.type_hash, t.qos, t.count) for t in self.topics.values()],
            start,
            duration,
            {STATUS_KEY: status, EPISODE_KEY: json.dumps(self.episode, sort_keys=True)},
        )

    def write_metadata(self, status: str) -> None:
        _atomic_write(self.path / "metadata.yaml", yaml.safe_dump(self.metadata(status), sort_keys=False))

    # -- end of the episode -----------------------------------------------------------------
    def close(self, status: str = COMPLETE, episode: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write everything queued, the summary and index; metadata.yaml with `status`."""
        if self.closed:
            raise BagError(f"bag {self.path} closed twice")
        self._drain()
        if episode:
            self.episode.update(episode)
        if self.error is not None:
            status = INCOMPLETE
            self.episode["writer_error"] = repr(self.error)
        info = self.metadata(status)["rosbag2_bagfile_information"]
        with self._lock:
            # rosbag2 stores its metadata in the file too (a record named "rosbag2").
            self._mcap.add_metadata("rosbag2", {"serialized_metadata": yaml.safe_dump(info, sort_keys=False)})
            self._mcap.finish()
            self._file.close()
        self.closed = True
        self.write_metadata(status)
        return info

    def abort(self) -> None:
        """Stop without index or summary (as a crash would); metadata stays `recording`."""
        self._drain()
        with contextlib.suppress(Exception):
            self._mcap.flush()
        self._file.close()
        self.closed = True

    def discard(self) -> None:
        """Delete the bag."""
        if not self.closed:
            self._drain()
            self._file.close()
            self.closed = True
        shutil.rmtree(self.path, ignore_errors=True)


def rosbag2_metadata(
    file_name: str,
    topics: Sequence[tuple[str, str, str, list[dict[str, Any]], int]],
    start_ns: int,
    duration_ns: int,
    custom: Mapping[str, str],
) -> dict[str, Any]:
    """metadata.yaml content (rosbag2 version 9) for a single-file MCAP bag."""
    count = sum(t[4] for t in topics)
    return {
        "rosbag2_bagfile_information": {
            "version": ROSBAG2_VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": int(duration_ns)},
            "starting_time": {"nanoseconds_since_epoch": int(start_ns)},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": name,
                        "type": msgtype,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": qos,
                        "type_description_hash": type_hash,
                    },
                    "message_count": n,
                }
                for name, msgtype, type_hash, qos, n in topics
            ],
            # Chunk compression is internal to MCAP: rosbag2 reports no bag-level compression.
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [file_name],
            "files": [
                {
                    "path": file_name,
                    "starting_time": {"nanoseconds_since_epoch": int(start_ns)},
                    "duration": {"nanoseconds": int(duration_ns)},
                    "message_count": count,
                }
            ],
            "custom_data": dict(custom),
            "ros_distro": ROS_DISTRO,
        }
    }


def write_sidecar(bag: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    path = Path(bag) / SIDECAR
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_sidecar(bag: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(bag) / SIDECAR
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise BagError(f"bag {bag}: {SIDECAR} is not valid JSON: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Reading, checking and recovering bags
# --------------------------------------------------------------------------------------------


def _fmt_time(ns: int | None) -> str:
    return "?" if ns is None else f"t={ns * 1e-9:.3f} s"


@dataclass
class BagInfo:
    path: Path
    mcap_path: Path
    status: str
    episode: dict[str, Any]
    topics: dict[str, str]  # name -> type
    counts: dict[str, int]
    qos: dict[str, list[dict[str, Any]]]
    start_ns: int
    end_ns: int
    complete_file: bool  # the MCAP file ends with its footer (summary + index present)


def _load_metadata(bag: Path) -> dict[str, Any]:
    meta_path = bag / "metadata.yaml"
    if not meta_path.exists():
        raise BagError(f"bag {bag}: no metadata.yaml (not a rosbag2 folder)")
    try:
        info = yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"bag {bag}: metadata.yaml is not rosbag2 metadata: {exc}") from exc
    if info.get("storage_identifier") != "mcap":
        raise BagError(f"bag {bag}: storage '{info.get('storage_identifier')}' is not mcap")
    return info


def _file_has_footer(path: Path) -> bool:
    size = path.stat().st_size
    if size < 37 + 8:
        return False
    with path.open("rb") as f:
        f.seek(-8, os.SEEK_END)
        return f.read(8) == MCAP_MAGIC


def bag_info(bag: str | os.PathLike[str]) -> BagInfo:
    """Metadata of a bag folder (or its .mcap file) with a clear BagError for what is wrong."""
    bag = Path(bag)
    if bag.is_file():
        bag = bag.parent
    if not bag.exists():
        raise BagError(f"bag {bag}: not found")
    info = _load_metadata(bag)
    files = info.get("relative_file_paths") or []
    if len(files) != 1:
        raise BagError(f"bag {bag}: expected one storage file, metadata lists {files}")
    mcap_path = bag / files[0]
    if not mcap_path.exists():
        raise BagError(f"bag {bag}: storage file {files[0]} is missing")
    custom = info.get("custom_data") or {}
    try:
        episode = json.loads(custom.get(EPISODE_KEY) or "{}")
    except json.JSONDecodeError:
        episode = {}
    topics, counts, qos = {}, {}, {}
    for entry in info.get("topics_with_message_count") or []:
        meta = entry["topic_metadata"]
        topics[meta["name"]] = meta["type"]
        counts[meta["name"]] = int(entry.get("message_count", 0))
        q = meta.get("offered_qos_profiles") or []
        qos[meta["name"]] = yaml.safe_load(q) if isinstance(q, str) else list(q)
    start = int(info["starting_time"]["nanoseconds_since_epoch"])
    return BagInfo(
        path=bag,
        mcap_path=mcap_path,
        status=custom.get(STATUS_KEY, COMPLETE),  # bags from other tools: complete if indexed
        episode=episode,
        topics=topics,
        counts=counts,
        qos=qos,
        start_ns=start,
        end_ns=start + int(info["duration"]["nanoseconds"]),
        complete_file=_file_has_footer(mcap_path),
    )


@dataclass
class RawMessage:
    topic: str
    type: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes


def _channel_types(schemas: Mapping[int, Any], channels: Mapping[int, Any]) -> dict[int, tuple[str, str]]:
    return {
        cid: (ch.topic, schemas[ch.schema_id].name if ch.schema_id in schemas else "")
        for cid, ch in channels.items()
    }


def open_bag(
    bag: str | os.PathLike[str], *, require: Sequence[str] = (), allow_incomplete: bool = False
) -> BagInfo:
    """bag_info + the checks replay needs: a finished file, the required topics present."""
    info = bag_info(bag)
    if not info.complete_file:
        size = info.mcap_path.stat().st_size
        raise BagError(
            f"bag {info.path}: {info.mcap_path.name} is truncated ({size} bytes, no MCAP footer; "
            f"status '{info.status}': the recorder was killed or is still writing). "
            f"Run `dexh2r record --recover {info.path}` to index what was written"
        )
    if info.status != COMPLETE and not allow_incomplete:
        raise BagError(
            f"bag {info.path}: episode status is '{info.status}', not 'complete' "
            f"(pass allow_incomplete / --allow-incomplete to use it anyway)"
        )
    missing = [t for t in require if t not in info.topics]
    if missing:
        raise BagError(
            f"bag {info.path}: required topic(s) {missing} not in the bag (has: {sorted(info.topics)})"
        )
    return info


def iter_messages(
    info: BagInfo, topics: Sequence[str] | None = None, *, validate: bool = False
) -> Iterator[RawMessage]:
    """Messages in log-time order. Corrupt chunks, and with `validate` corrupt messages, raise a
    BagError naming the bag, topic and time."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    wanted = set(topics) if topics else None
    last: RawMessage | None = None
    with info.mcap_path.open("rb") as f:
        reader = make_reader(f)
        try:
            for schema, channel, message in reader.iter_messages(topics=list(wanted) if wanted else None):
                msgtype = schema.name if schema is not None else info.topics.get(channel.topic, "")
                raw = RawMessage(channel.topic, msgtype, message.log_time, message.publish_time, message.data)
                if validate:
                    try:
                        deserialize(raw.data, msgtype)
                    except Exception as exc:
                        raise BagError(
                            f"bag {info.path}: corrupt message on {raw.topic} ({msgtype}) at "
                            f"{_fmt_time(raw.log_time_ns)} (log time {raw.log_time_ns} ns, "
                            f"{(raw.log_time_ns - info.start_ns) * 1e-9:.3f} s into the bag): "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                last = raw
                yield raw
        except BagError:
            raise
        except (McapError, struct.error, ValueError, EOFError, Exception) as exc:  # zstd, CRC, ...
            where = (
                f"after {last.topic} at {_fmt_time(last.log_time_ns)} "
                f"({(last.log_time_ns - info.start_ns) * 1e-9:.3f} s into the bag)"
                if last
                else "before the first message"
            )
            raise BagError(f"bag {info.path}: unreadable data {where}: {type(exc).__name__}: {exc}") from exc


def check_bag(
    bag: str | os.PathLike[str], require: Sequence[str] = (), allow_incomplete: bool = False
) -> dict:
    """Read and deserialise every message (BagError on the first problem); counts per topic."""
    info = open_bag(bag, require=require, allow_incomplete=allow_incomplete)
    counts: dict[str, int] = dict.fromkeys(info.topics, 0)
    for msg in iter_messages(info, validate=True):
        counts[msg.topic] = counts.get(msg.topic, 0) + 1
    for topic, n in counts.items():
        if n != info.counts.get(topic, n):
            raise BagError(
                f"bag {info.path}: {topic} has {n} messages, metadata.yaml says {info.counts[topic]}"
            )
    return {"bag": str(info.path), "status": info.status, "counts": counts}


def scan_truncated(path: Path) -> tuple[list[Any], list[Any], list[Any], int, str | None]:
    """Schemas, channels and messages of complete records of an MCAP file cut anywhere.

    Returns (schemas, channels, messages, bytes used, reason the scan stopped or None). Messages of
    a chunk count only once the whole chunk was read (its CRC checked).
    """
    from mcap.records import Channel, Chunk, DataEnd, Footer, Message, Schema
    from mcap.stream_reader import StreamReader

    schemas, channels, messages = [], [], []
    reason = None
    with path.open("rb") as f:
        reader = StreamReader(f, skip_magic=False, emit_chunks=False)
        it = reader.records
        while True:
            try:
                record = next(it)
            except StopIteration:
                break
            except Exception as exc:  # truncated or damaged record: keep what came before
                reason = f"{type(exc).__name__}: {exc}"
                break
            if isinstance(record, Schema):
                schemas.append(record)
            elif isinstance(record, Channel):
                channels.append(record)
            elif isinstance(record, Message):
                messages.append(record)
            elif isinstance(record, DataEnd | Footer):
                break
            elif isinstance(record, Chunk):  # emit_chunks=False never yields these
                pass
        used = f.tell()
    return schemas, channels, messages, used, reason


def recover_bag(bag: str | os.PathLike[str]) -> dict[str, Any]:
    """Rewrite a bag whose recorder died into an indexed, rosbags-readable bag marked `incomplete`.

    Messages up to the last complete chunk are kept. A finished bag is left alone.
    """
    from mcap.writer import CompressionType, Writer

    bag = Path(bag)
    info = bag_info(bag)
    if info.complete_file:
        return {"bag": str(bag), "recovered": False, "status": info.status, "reason": "file is complete"}
    schemas, channels, messages, _used, reason = scan_truncated(info.mcap_path)
    by_schema = {s.id: s for s in schemas}
    counts: dict[str, int] = {}
    tmp = info.mcap_path.with_name(info.mcap_path.name + ".recovering")
    with tmp.open("wb") as f:
        w = Writer(f, compression=CompressionType.ZSTD)
        w.start(profile="ros2", library="dexh2r recorder (recovered)")
        sid_map = {s.id: w.register_schema(s.name, s.encoding, s.data) for s in schemas}
        cid_map = {
            c.id: w.register_channel(c.topic, c.message_encoding, sid_map.get(c.schema_id, 0), c.metadata)
            for c in channels
        }
        topic_of = {c.id: c.topic for c in channels}
        start = min((m.log_time for m in messages), default=0)
        end = max((m.log_time for m in messages), default=0)
        for m in sorted(messages, key=lambda m: m.log_time):
            if m.channel_id not in cid_map:
                continue
            w.add_message(cid_map[m.channel_id], m.log_time, m.data, m.publish_time, m.sequence)
            counts[topic_of[m.channel_id]] = counts.get(topic_of[m.channel_id], 0) + 1
        topics_meta = []
        for c in channels:
            schema = by_schema.get(c.schema_id)
            qos = yaml.safe_load(c.metadata.get("offered_qos_profiles", "[]")) or []
            topics_meta.append(
                (
                    c.topic,
                    schema.name if schema else "",
                    c.metadata.get("topic_type_hash", ""),
                    qos,
                    counts.get(c.topic, 0),
                )
            )
        episode = dict(info.episode)
        episode["recovered"] = {"reason": reason or "no footer", "messages": sum(counts.values())}
        meta = rosbag2_metadata(
            info.mcap_path.name,
            topics_meta,
            start,
            end - start,
            {STATUS_KEY: INCOMPLETE, EPISODE_KEY: json.dumps(episode, sort_keys=True)},
        )
        w.add_metadata(
            "rosbag2",
            {"serialized_metadata": yaml.safe_dump(meta["rosbag2_bagfile_information"], sort_keys=False)},
        )
        w.finish()
    os.replace(tmp, info.mcap_path)
    _atomic_write(bag / "metadata.yaml", yaml.safe_dump(meta, sort_keys=False))
    sidecar = read_sidecar(bag)
    sidecar.update(status=INCOMPLETE, recovered=episode["recovered"], message_counts=counts)
    write_sidecar(bag, sidecar)
    return {"bag": str(bag), "recovered": True, "status": INCOMPLETE, "counts": counts, "reason": reason}


def find_unfinished(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Bag folders under `output_dir` whose MCAP file has no footer (their recorder died)."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return out
    for meta in sorted(root.glob("*/metadata.yaml")):
        with contextlib.suppress(BagError, OSError, KeyError, ValueError):
            if not bag_info(meta.parent).complete_file:
                out.append(meta.parent)
    return out


# --------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------


class EpisodeRecorder:
    """Episode life cycle around BagWriter (ROS-free; the node feeds it raw messages).

    `set_topic` declares a topic once its type and QoS are known; `start` opens a bag, `on_message`
    records while an episode is open, `stop` closes it with a report (bag metadata + sidecar JSON),
    `discard` deletes it.
    """

    def __init__(
        self,
        config: RecordConfig,
        output_dir: str | os.PathLike[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        *,
        clock: Any = time.time_ns,
        threaded: bool = True,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir or config.output_dir)
        self.defaults = {k: "" for k in EPISODE_FIELDS} | dict(defaults or {})
        self.clock = clock
        self.threaded = threaded
        self.known: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.writer: BagWriter | None = None
        self.stats: dict[str, TopicStats] = {}
        self.meta: dict[str, Any] = {}
        self.start_ns = 0
        self.episode_index = 0

    @property
    def active(self) -> bool:
        return self.writer is not None

    def set_topic(self, name: str, msgtype: str, qos: Sequence[Mapping[str, Any]] = ()) -> None:
        self.known[name] = (normalize_type(msgtype), [dict(q) for q in qos])
        if self.writer is not None:
            self._add(name)

    def _add(self, name: str) -> None:
        assert self.writer is not None
        msgtype, qos = self.known[name]
        self.writer.add_topic(name, msgtype, qos)
        self.stats[name].type = msgtype

    def annotate(self, **fields: Any) -> None:
        """Episode metadata (operator, object, scenario, outcome, notes, or anything else)."""
        target = self.meta if self.active else self.defaults
        target.update({k: v for k, v in fields.items() if v is not None})

    def _new_path(self) -> Path:
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(self.clock() * 1e-9))
        while True:
            path = self.output_dir / f"{self.config.episode_prefix}_{stamp}_{self.episode_index:03d}"
            self.episode_index += 1
            if not path.exists():
                return path

    def start(self, **fields: Any) -> Path:
        if self.writer is not None:
            raise BagError(f"an episode is already being recorded in {self.writer.path}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.meta = dict(self.defaults) | {k: v for k, v in fields.items() if v is not None}
        path = self._new_path()
        self.start_ns = self.clock()
        self.meta["started_ns"] = self.start_ns
        self.stats = {
            t.name: TopicStats(
                t.name,
                normalize_type(t.type) if t.type else "",
                t.rate_hz,
                t.required,
                self.config.gap_factor,
            )
            for t in self.config.topics
        }
        self.writer = BagWriter(
            path,
            episode=self.meta,
            chunk_bytes=self.config.chunk_bytes,
            flush_period_s=self.config.flush_period_s,
            threaded=self.threaded,
            max_queue_bytes=int(self.config.max_queue_mb * 1e6),
        )
        for name in self.known:
            self._add(name)
        write_sidecar(path, {"status": RECORDING, "episode": self.meta, "bag": str(path)})
        return path

    def on_message(self, topic: str, data: bytes, rx_ns: int, publish_ns: int | None = None) -> None:
        if self.writer is None:
            return
        stats = self.stats.get(topic)
        if stats is None or topic not in self.writer.topics:
            return
        if self.writer.write(topic, data, rx_ns, publish_ns):
            stats.add(rx_ns, header_stamp_ns(data, stats.type), len(data))
        else:
            stats.writer_dropped += 1

    def progress(self) -> dict[str, Any]:
        if self.writer is None:
            return {"state": "idle"}
        return {
            "state": "recording",
            "bag": str(self.writer.path),
            "elapsed_s": round((self.clock() - self.start_ns) * 1e-9, 3),
            "counts": {name: s.count for name, s in self.stats.items()},
            "backlog_mb": round(self.writer.backlog_bytes() / 1e6, 2),
        }

    def stop(self, status: str = COMPLETE, **fields: Any) -> dict[str, Any]:
        """Close the episode: report, metadata.yaml, sidecar. Returns the sidecar content."""
        if self.writer is None:
            raise BagError("no episode is being recorded")
        writer, self.writer = self.writer, None
        stop_ns = self.clock()
        self.meta.update({k: v for k, v in fields.items() if v is not None})
        self.meta["stopped_ns"] = stop_ns
        report = episode_report(self.stats, (self.start_ns, stop_ns), self.config.min_kept_fraction)
        info = writer.close(status, self.meta)
        final_status = info["custom_data"][STATUS_KEY]
        sidecar = {
            "status": final_status,
            "episode": self.meta,
            "bag": str(writer.path),
            "mcap": writer.file_name,
            "message_count": info["message_count"],
            "report": report,
        }
        write_sidecar(writer.path, sidecar)
        return sidecar

    def discard(self) -> Path:
        if self.writer is None:
            raise BagError("no episode is being recorded")
        writer, self.writer = self.writer, None
        writer.discard()
        return writer.path

    def abort(self) -> None:
        """Leave the bag as a crash would (status stays `recording`): for tests and fatal errors."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.abort()
