"""Find and prepare the installed robot assets (never copied into the repository).

Assets live in pip-installed distributions: example-robot-data (a cmeel share directory with
URDFs and meshes) and gymnasium-robotics (a Python package with MJCF and meshes). URDFs are
rewritten in memory for MuJoCo: `package://` resolved to absolute paths, COLLADA visuals (which
MuJoCo cannot read) dropped in favour of the collision meshes, fixed links kept as bodies.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

from dexh2r_core.robot.config import AssetRef


class AssetNotFoundError(FileNotFoundError):
    pass


def _package_roots(package: str) -> list[Path]:
    roots: list[Path] = []
    module = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) for p in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        roots.append(Path(sysconfig.get_paths()[key]) / "cmeel.prefix" / "share" / package)
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        roots.append(Path(prefix) / "share" / package)
    return roots


def resolve_asset(ref: AssetRef | str) -> Path:
    """Absolute path of an asset; `ref` may also be a `package://pkg/path` string."""
    if isinstance(ref, str):
        if not ref.startswith("package://"):
            return Path(ref)
        package, _, rel = ref[len("package://") :].partition("/")
        ref = AssetRef(package=package, path=rel)
    tried = []
    for root in _package_roots(ref.package):
        candidate = root / ref.path
        tried.append(str(candidate))
        if candidate.exists():
            return candidate
    raise AssetNotFoundError(
        f"asset '{ref.path}' of package '{ref.package}' not found "
        f"(looked in: {', '.join(tried) or 'nowhere'}); "
        f"is '{ref.package}' installed in this environment? Run `make setup`."
    )


def urdf_for_mujoco(path: Path, drop_links: list[str] | tuple[str, ...] = ()) -> str:
    """URDF text that MuJoCo compiles with every link kept as a body and meshes resolved."""
    root = ET.parse(path).getroot()
    dropped = set(drop_links)
    for link in list(root.findall("link")):
        if link.get("name") in dropped:
            root.remove(link)
            continue
        # MuJoCo reads STL/OBJ/MSH only; the collision meshes stand in for COLLADA visuals.
        for visual in list(link.findall("visual")):
            link.remove(visual)
    for joint in list(root.findall("joint")):
        parent = joint.find("parent")
        child = joint.find("child")
        if (parent is not None and parent.get("link") in dropped) or (
            child is not None and child.get("link") in dropped
        ):
            root.remove(joint)
    for mesh in root.iter("mesh"):
        mesh.set("filename", str(resolve_asset(mesh.get("filename", ""))))
    for old in root.findall("mujoco"):
        root.remove(old)
    extension = ET.SubElement(root, "mujoco")
    ET.SubElement(
        extension,
        "compiler",
        strippath="false",
        fusestatic="false",
        discardvisual="false",
        balanceinertia="true",
        angle="radian",
    )
    return ET.tostring(root, encoding="unicode")


def _urdf_limit(path: Path, attribute: str) -> dict[str, float]:
    out = {}
    for joint in ET.parse(path).getroot().findall("joint"):
        limit = joint.find("limit")
        if limit is not None and limit.get(attribute):
            out[joint.get("name", "")] = float(limit.get(attribute, "0"))
    return out


def urdf_velocity_limits(path: Path) -> dict[str, float]:
    """Joint name -> velocity limit from a URDF's <limit velocity=...> (absent entries omitted)."""
    return _urdf_limit(path, "velocity")


def urdf_effort_limits(path: Path) -> dict[str, float]:
    """Joint name -> effort limit (N m or N) from a URDF's <limit effort=...>."""
    return _urdf_limit(path, "effort")
