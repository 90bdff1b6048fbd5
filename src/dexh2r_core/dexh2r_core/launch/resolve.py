"""Find the program behind `<node pkg="..." exec="...">`, with or without a ROS install.

Order: the ament index (`$AMENT_PREFIX_PATH/lib/<pkg>/<exec>`, what `ros2 launch` runs), then the
package's `<pkg>._entry_points.NODES` (pip installs): the console script of that name in the
directory of `sys.executable` when it exists, else `sys.executable -c` calling the function.
A `<node exec="...">` without `pkg` is looked up on PATH. No ROS import happens here.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


class ExecutableNotFoundError(LookupError):
    """Unknown package or executable; the message says which and suggests close names."""


@dataclass(frozen=True)
class ResolvedExecutable:
    argv: tuple[str, ...]  # the program and any arguments needed before the node's own
    how: str  # "ament", "console-script", "python -c", "PATH"


def _ament_prefixes() -> list[Path]:
    return [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]


def _ament_package(package: str) -> Path | None:
    for prefix in _ament_prefixes():
        if (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).exists():
            return prefix
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def entry_points(package: str) -> dict[str, str] | None:
    """`<package>._entry_points.NODES`, or None when the package is not a dexh2r-style package."""
    try:
        module = importlib.import_module(f"{package}._entry_points")
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}._entry_points"):
            return None
        raise
    nodes = getattr(module, "NODES", None)
    return dict(nodes) if isinstance(nodes, dict) else None


def _known_packages() -> list[str]:
    names: set[str] = set()
    for prefix in _ament_prefixes():
        index = prefix / "share" / "ament_index" / "resource_index" / "packages"
        if index.is_dir():
            names.update(p.name for p in index.iterdir())
    from dexh2r_core.paths import repo_root

    root = repo_root()
    if root is not None and (root / "src").is_dir():
        names.update(p.name for p in (root / "src").iterdir() if (p / "package.xml").exists())
    return sorted(names)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def resolve_executable(package: str | None, executable: str) -> ResolvedExecutable:
    """The command that starts `executable` of `package` (see the module docstring for the order)."""
    if not package:
        found = shutil.which(executable)
        if found is None:
            raise ExecutableNotFoundError(f"executable '{executable}' not found on PATH")
        return ResolvedExecutable((found,), "PATH")

    prefix = _ament_package(package)
    if prefix is not None:
        lib = prefix / "lib" / package
        if _is_executable(lib / executable):
            return ResolvedExecutable((str(lib / executable),), "ament")
    nodes = entry_points(package)
    if nodes is None:
        if prefix is not None:
            available = sorted(p.name for p in lib.iterdir() if _is_executable(p)) if lib.is_dir() else []
            raise ExecutableNotFoundError(
                f"executable '{executable}' not found in package '{package}' ({lib}); "
                f"available: {', '.join(available) or 'none'}{_suggest(executable, available)}"
            )
        raise ExecutableNotFoundError(
            f"package '{package}' not found: not in AMENT_PREFIX_PATH and no Python package "
            f"'{package}' with _entry_points.NODES{_suggest(package, _known_packages())}"
        )
    if executable not in nodes:
        available = sorted(nodes)
        raise ExecutableNotFoundError(
            f"executable '{executable}' not found in package '{package}'; available: "
            f"{', '.join(available) or 'none'}{_suggest(executable, available)}"
        )
    script = Path(sys.executable).parent / executable
    if _is_executable(script):
        return ResolvedExecutable((str(script),), "console-script")
    module, _, func = nodes[executable].partition(":")
    code = f"import sys; sys.argv[0] = {executable!r}; from {module} import {func} as main; sys.exit(main())"
    return ResolvedExecutable((sys.executable, "-c", code), "python -c")
