"""Where the project's files are: package share directories, the repository, the asset cache.

`find_pkg_share(p)` follows ROS 2: on a colcon/ament install it is `<prefix>/share/<p>`. For pip
users (editable install of the repository) the share of `dexh2r_core` is the repository root,
which holds `launch/` and `config/` (colcon installs those same trees into dexh2r_core's share),
and the share of any other dexh2r package is its source folder.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


class PackageNotFoundError(LookupError):
    pass


def _ament_share(package: str) -> Path | None:
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package
        if marker.exists():
            return Path(prefix) / "share" / package
    return None


@lru_cache(maxsize=1)
def repo_root() -> Path | None:
    """The source checkout this code runs from, if any (DEXH2R_HOME overrides)."""
    if os.environ.get("DEXH2R_HOME"):
        return Path(os.environ["DEXH2R_HOME"]).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "config").is_dir() and (parent / "launch").is_dir() and (parent / "src").is_dir():
            return parent
    return None


def share_dir(package: str) -> Path:
    """`$(find-pkg-share package)` for both colcon and pip installs."""
    root = repo_root()
    if root is not None and (root / "src" / package / "package.xml").exists():
        return root if package == "dexh2r_core" else root / "src" / package
    found = _ament_share(package)
    if found is not None:
        return found
    raise PackageNotFoundError(
        f"package '{package}' not found: not a dexh2r package in {root or 'this checkout'} and not in "
        f"AMENT_PREFIX_PATH; source your ROS 2 workspace or check the spelling"
    )


def cache_dir() -> Path:
    """Generated assets (URDFs derived from the robot description, compiled scenes)."""
    base = os.environ.get("DEXH2R_CACHE")
    if base:
        path = Path(base)
    elif repo_root() is not None:
        path = repo_root() / ".venv" / "dexh2r-cache"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dexh2r"
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_path(relative: str | os.PathLike[str]) -> Path:
    """A file under the project's config/ tree (absolute paths pass through)."""
    rel = Path(relative)
    if rel.is_absolute() or rel.exists():
        return rel
    return share_dir("dexh2r_core") / "config" / rel
