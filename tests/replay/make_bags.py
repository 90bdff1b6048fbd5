"""Make the committed replay bags of tests/replay/ from the simulated cell (reproducible).

    .venv/bin/python tests/replay/make_bags.py            # all bags in BAGS, into tests/replay/bags/
    .venv/bin/python tests/replay/make_bags.py --only sim_easy_box

Each bag: `sim_node` (cameras at 424x240, 30 Hz, joint states at 100 Hz) runs one scenario; after
`/sim/reset` the real `recorder_node` records the topics of tests/replay/record_sim.yaml (depth of
both cameras, camera info, joint states, /clock, ground-truth object pose, giver wrist and hand
keypoints, sim state) until it holds `seconds` of camera frames. The episode metadata names the
scenario and its object, which the replay tests read. DDS stays on this machine (localhost,
a private domain).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dexh2r_core.ros_env import private_domain_id
from dexh2r_core.testing import call_trigger, ros_test_node, start_node

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "record_sim.yaml"
# name -> (scenario file, scenario, seconds of camera frames)
BAGS: dict[str, tuple[str, str, float]] = {
    # 1 s keeps the bag at ~4 MB (sim depth carries sensor noise: ~65 KB per 424x240 frame
    # after zstd) and covers the giver's reach (1.3 s): the object moves through the whole bag.
    "sim_easy_box": ("scenarios/easy.yaml", "easy_box_center", 1.0),
}


def wait_status(node, want_frames: int, timeout: float, topic: str) -> dict:
    """Spin on /recorder/status until `topic` holds `want_frames` messages."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latest: dict = {}
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(String, "/recorder/status", lambda m: latest.update(json.loads(m.data)), qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while latest.get("counts", {}).get(topic, 0) < want_frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder status {latest} did not reach {want_frames} frames of {topic}")
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
    return latest


def rename_bag(src: Path, dst: Path) -> None:
    """Move a bag folder and name its MCAP file after it (metadata.yaml and sidecar follow)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.move(str(src), dst)
    old = next(dst.glob("*.mcap"))
    new = dst / f"{dst.name}_0.mcap"
    old.rename(new)
    meta = yaml.safe_load((dst / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    info["relative_file_paths"] = [new.name]
    info["files"][0]["path"] = new.name
    (dst / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    side = json.loads((dst / "episode.json").read_text())
    side.update(bag=dst.name, mcap=new.name)
    (dst / "episode.json").write_text(json.dumps(side, indent=2) + "\n")


def recompress(bag: Path, level: int = 19) -> None:
    """Rewrite the bag's MCAP file with stronger zstd (smaller committed files; same messages).

    The mcap writer compresses with zstandard's default level; it is swapped for this rewrite only.
    """
    import mcap.writer
    import zstandard

    from dexh2r_teleop import recorder

    mcap_path = next(bag.glob("*.mcap"))
    tmp = mcap_path.with_name(mcap_path.name + ".tmp")
    with mcap_path.open("rb") as src, tmp.open("wb") as dst:
        from mcap.reader import make_reader

        reader = make_reader(src)
        summary = reader.get_summary()
        original = mcap.writer.zstandard

        class _Strong:
            compress = staticmethod(zstandard.ZstdCompressor(level=level).compress)

        mcap.writer.zstandard = _Strong  # type: ignore[assignment]
        try:
            w = mcap.writer.Writer(dst, chunk_size=4 * 1024 * 1024)
            w.start(profile="ros2", library="dexh2r recorder (mcap python)")
            schema_ids = {
                s.id: w.register_schema(s.name, s.encoding, s.data) for s in summary.schemas.values()
            }
            channel_ids = {
                c.id: w.register_channel(c.topic, c.message_encoding, schema_ids[c.schema_id], c.metadata)
                for c in summary.channels.values()
            }
            for _schema, channel, message in reader.iter_messages(log_time_order=True):
                w.add_message(
                    channel_ids[channel.id],
                    message.log_time,
                    message.data,
                    message.publish_time,
                    message.sequence,
                )
            for meta in reader.iter_metadata():
                w.add_metadata(meta.name, meta.metadata)
            w.finish()
        finally:
            mcap.writer.zstandard = original
    tmp.replace(mcap_path)
    recorder.check_bag(bag)  # every message still deserialises, counts match metadata.yaml


def make_bag(name: str, scenario_file: str, scenario: str, seconds: float, out_dir: Path) -> Path:
    from dexh2r_core.paths import config_path
    from dexh2r_sim.scenario import load_scenarios

    object_id = {s.name: s.object_id for s in load_scenarios(config_path(scenario_file))}[scenario]
    domain = private_domain_id()
    env = {"ROS_DOMAIN_ID": str(domain)}
    work = Path(tempfile.mkdtemp(prefix="dexh2r-make-bags-"))
    sim = start_node(
        "dexh2r_sim.sim_node:main",
        name="sim",
        params={
            "scenarios": scenario_file,
            "scenario": scenario,
            "width": 424,
            "height": 240,
            "joint_state_hz": 100.0,
        },
        env=env,
        log_dir=work,
    )
    recorder = start_node(
        "dexh2r_teleop.recorder_node:main",
        name="recorder",
        params={
            "config": str(CONFIG),
            "output_dir": str(work / "episodes"),
            "operator": "sim (tests/replay/make_bags.py)",
            "object": object_id,
            "scenario": scenario,
            "notes": f"{scenario_file}; sim_node 424x240 cameras; {seconds} s",
            "status_period_s": 0.05,
        },
        env=env,
        log_dir=work,
    )
    try:
        with ros_test_node("make_bags", domain_id=domain) as node:
            topics = [t["name"] for t in yaml.safe_load(CONFIG.read_text())["topics"]]
            for topic in topics:
                recorder.wait_for_log(f"recording {topic} ", timeout=120)
            call_trigger(node, "/sim/reset")
            # The reset applies at the sim's next step; a few frames of settling are harmless.
            bag = Path(call_trigger(node, "/recorder/start"))
            wait_status(node, round(seconds * 30), 120, "/camera_1/aligned_depth_to_color/image_raw")
            summary = json.loads(call_trigger(node, "/recorder/stop"))
        print(json.dumps(summary, indent=1))
        dst = out_dir / name
        rename_bag(bag, dst)
        recompress(dst)
        shutil.rmtree(work, ignore_errors=True)  # node logs are kept only when something failed
        return dst
    finally:
        recorder.stop()
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(BAGS), help="make only these bags")
    p.add_argument(
        "--out", type=Path, default=HERE / "bags", help="folder of the bags (default tests/replay/bags)"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or BAGS:
        path = make_bag(name, *BAGS[name], args.out)
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{path}: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
