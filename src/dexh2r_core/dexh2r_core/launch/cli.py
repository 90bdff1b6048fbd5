"""`dexh2r launch FILE [name:=value ...]`: run a ROS 2 XML launch file without the ros2 CLI.

Also `dexh2r launch PACKAGE FILE` (FILE looked up in the package's share/launch, as ros2 launch
does). Exit codes: 0 all good (or --timeout reached), 1 a node crashed, 2 a bad launch file or
command line, 128+N stopped by signal N (130 = Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dexh2r_core.launch.parser import (
    LaunchDescription,
    LaunchFileError,
    declared_arguments,
    load_launch,
    parse_overrides,
)
from dexh2r_core.launch.runner import build_command, run_launch

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r launch",
        description="Run a ROS 2 XML launch file: one OS process per node, output prefixed with [node].",
        epilog="Exit codes: 0 ok or --timeout reached, 1 a node crashed, 2 bad launch file or "
        "arguments, 128+N stopped by signal N (130 Ctrl-C). See docs/launch.md.",
    )
    p.add_argument("file", help="launch file (path), or a package name followed by a file name")
    p.add_argument("args", nargs="*", metavar="name:=value", help="launch argument overrides")
    p.add_argument("--show-args", "-s", action="store_true", help="list the file's launch arguments and exit")
    p.add_argument(
        "--print", "-p", dest="print_only", action="store_true", help="print the resolved nodes and exit"
    )
    p.add_argument("--timeout", type=float, metavar="S", help="stop all nodes after S seconds (exit 0)")
    return p


def _locate(file: str, rest: list[str]) -> tuple[Path, list[str]]:
    """FILE, or `PACKAGE FILE` like ros2 launch (FILE under the package's share/launch)."""
    path = Path(file)
    if path.exists() or not rest or ":=" in rest[0]:
        return path, rest
    from dexh2r_core.paths import PackageNotFoundError, share_dir

    try:
        share = share_dir(file)
    except PackageNotFoundError:
        return path, rest
    for candidate in (share / "launch" / rest[0], share / rest[0]):
        if candidate.is_file():
            return candidate, rest[1:]
    raise LaunchFileError(f"no launch file '{rest[0]}' in package '{file}' ({share}/launch)")


def _show_args(path: Path) -> None:
    args = declared_arguments(path)
    if not args:
        print("no launch arguments")
    for arg in args:
        print(f"'{arg.name}':")
        print(f"    {arg.description or 'no description given'}")
        if arg.choices:
            print(f"    choices: {', '.join(arg.choices)}")
        print(f"    (default: '{arg.default}')" if arg.default is not None else "    (required)")


def format_description(desc: LaunchDescription) -> str:
    """Human-readable resolved launch description (`--print`)."""
    lines = [f"launch file: {desc.file}", "arguments:"]
    lines += [f"  {a.name} = {a.value!r}" for a in desc.arguments.values()] or ["  (none)"]
    lines.append("nodes:")
    for node in desc.nodes:
        flags = [f for f, on in (("required", node.required), ("respawn", node.respawn)) if on]
        lines.append(f"  [{node.label}] {node.package or ''}/{node.executable}  ({node.source})")
        lines.append(f"    name: {node.fqn or '(default)'}" + (f"  [{', '.join(flags)}]" if flags else ""))
        how = node.resolved.how if node.resolved else "unresolved"
        lines.append(f"    command ({how}): {' '.join(build_command(node, Path('$TMP'), write=False))}")
        for name, value in node.effective_params().items():
            lines.append(f"    param {name} = {value!r}")
        for src, dst in node.remaps:
            lines.append(f"    remap {src} -> {dst}")
        for key, value in node.env.items():
            lines.append(f"    env {key}={'(unset)' if value is None else value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        path, rest = _locate(ns.file, ns.args)
        if ns.show_args:
            _show_args(path)
            return 0
        overrides = parse_overrides(rest)
        desc = load_launch(path, overrides)
    except (LaunchFileError, ValueError) as exc:
        print(f"dexh2r launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if ns.timeout is not None and ns.timeout <= 0:
        print("dexh2r launch: error: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    for warning in desc.warnings:
        print(f"[launch] warning: {warning}", file=sys.stderr)
    if ns.print_only:
        print(format_description(desc))
        return 0
    result = run_launch(desc, timeout=ns.timeout)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
