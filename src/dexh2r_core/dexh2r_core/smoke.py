"""`dexh2r smoke`: a DDS health check of this machine through the launcher.

Runs the smoke launch graph (launch/smoke.launch.xml: talker -> listener) on a private
ROS_DOMAIN_ID (unless one is set) and localhost-only discovery, prints a short summary and returns
the launch's exit code: 0 when the listener heard --count messages.
"""

from __future__ import annotations

import argparse
import os
import sys

from dexh2r_core.launch.parser import LaunchFileError, load_launch
from dexh2r_core.launch.runner import run_launch
from dexh2r_core.paths import share_dir
from dexh2r_core.ros_env import apply_run_defaults

SMOKE_LAUNCH = "launch/smoke.launch.xml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r smoke",
        description="DDS health check: runs the smoke launch graph (talker -> listener). "
        "Exits 0 when the listener received --count messages.",
    )
    p.add_argument("--count", type=int, default=30, help="messages the listener waits for (default 30)")
    p.add_argument("--rate-hz", type=float, default=20.0, help="talker rate (default 20)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if ns.count < 1 or ns.rate_hz <= 0 or ns.timeout <= 0:
        print("dexh2r smoke: --count must be >= 1, --rate-hz and --timeout > 0", file=sys.stderr)
        return 2
    env = apply_run_defaults(dict(os.environ))  # a private domain unless ROS_DOMAIN_ID is set
    try:
        desc = load_launch(
            share_dir("dexh2r_core") / SMOKE_LAUNCH,
            {"count": str(ns.count), "rate_hz": str(ns.rate_hz)},
            environ=env,
        )
    except LaunchFileError as exc:
        print(f"dexh2r smoke: error: {exc}", file=sys.stderr)
        return 2
    heard = 0

    def count_heard(label: str, line: str) -> None:
        nonlocal heard
        if label == "listener" and "heard [" in line:
            heard += 1

    print(
        f"dexh2r smoke: smoke graph, {ns.count} messages at "
        f"{ns.rate_hz:g} Hz, ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')}, "
        f"discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE']}"
    )
    result = run_launch(desc, timeout=ns.timeout, base_env=env, on_line=count_heard)
    if result.exit_code == 0 and heard < ns.count:
        # The timeout ends the launch with 0; for the health check, not hearing everything is a failure.
        print(f"smoke: FAILED: listener heard {heard}/{ns.count} messages before {result.reason}")
        return 1
    status = "OK" if result.exit_code == 0 else f"FAILED (exit {result.exit_code}: {result.reason})"
    print(f"smoke: {status}: listener heard {heard}/{ns.count} messages in {result.duration_s:.1f} s")
    return result.exit_code
