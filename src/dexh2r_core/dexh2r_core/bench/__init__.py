"""`dexh2r bench <name> --json OUT`: measurements that back the project's speed targets.

Each bench is a module with `main(argv) -> int` that writes a JSON file of figures.
"""

from __future__ import annotations

import sys

from dexh2r_core.cli import resolve

BENCHES: dict[str, tuple[str, str]] = {
    "transport": (
        "dexh2r_core.bench.transport:main",
        "two 30 Hz RGB-D-like streams between processes over DDS: delivery and latency",
    ),
    "sim": ("dexh2r_sim.bench:main", "real-time factor of the handover cell, physics only and with cameras"),
    "control": (
        "dexh2r_control.bench:main",
        "control loop (IK + safety, in-process): command rate, period jitter, IK time, watchdog stop",
    ),
    "teleop": (
        "dexh2r_teleop.bench_teleop:main",
        "teleop: retargeting time and fidelity, camera-to-command time, deadman stop",
    ),
    "policy": (
        "dexh2r_policy.bench_policy:main",
        "DynamicGrasp step time (MotionNet small + paper, DP3, DP), grasp CVAE pool time",
    ),
    "record": (
        "dexh2r_teleop.bench_record:main",
        "2 RGB-D cameras 640x480 @30 Hz + joint states recorded over DDS: kept fraction, MB/s",
    ),
    "perception": (
        "dexh2r_perception.bench:main",
        "object and hand tracking vs sim ground truth, node rate/latency, capture, calibration",
    ),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dexh2r bench <name> --json OUT [options]\n\nbenches:")
        for name, (_, help_) in BENCHES.items():
            print(f"  {name:<12} {help_}")
        return 0
    name = argv[0]
    if name not in BENCHES:
        print(f"dexh2r bench: unknown bench '{name}' (known: {', '.join(BENCHES)})", file=sys.stderr)
        return 2
    return int(resolve(BENCHES[name][0])(argv[1:]) or 0)
