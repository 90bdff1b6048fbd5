"""`colcon build` of src/, for real: the path of a ROS 2 workspace and of docker/Dockerfile.

Uses the colcon installed next to the test's Python (the project venv; colcon-core, colcon-ros and
colcon-package-information are pinned in requirements.lock) and builds into a temporary folder,
never into build/ install/ log/ of the repository. About 5 s; no network, no ROS install needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGES = [
    "dexh2r_core",
    "dexh2r_sim",
    "dexh2r_perception",
    "dexh2r_policy",
    "dexh2r_control",
    "dexh2r_teleop",
]
COLCON = Path(sys.executable).with_name("colcon")
BUILD_OUTPUTS = {"build", "install", "log"}

pytestmark = [
    pytest.mark.skipif(
        not COLCON.exists(),
        reason=f"no colcon next to {sys.executable}: install the colcon pins of requirements.lock "
        "(colcon-core, colcon-ros, colcon-package-information)",
    ),
    # One worker builds once for the whole module (pytest -n N --dist loadgroup).
    pytest.mark.xdist_group("colcon_build"),
]


def nodes_of(package: str) -> dict[str, str]:
    import runpy

    return dict(runpy.run_path(str(SRC / package / package / "_entry_points.py"))["NODES"])


def repo_build_litter() -> set[str]:
    """Build outputs colcon or setuptools could leave in the source tree."""
    found = {name for name in BUILD_OUTPUTS if (REPO / name).exists()}
    found |= {str(p.relative_to(REPO)) for p in SRC.glob("*/*.egg-info")}
    found |= {str(p.relative_to(REPO)) for p in SRC.glob("*/build")}
    return found


def colcon(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    return subprocess.run(
        [str(COLCON), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def build(base: Path, *extra: str) -> Path:
    """colcon build of src/ with every output under `base`; returns the install base."""
    before = repo_build_litter()
    result = colcon(
        "--log-base", str(base / "log"),
        "build", "--base-paths", str(SRC),
        "--build-base", str(base / "build"),
        "--install-base", str(base / "install"),
        *extra,
        cwd=base,
    )  # fmt: skip
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert repo_build_litter() == before, "colcon build wrote into the repository"
    # Nothing outside the three output folders (e.g. data-file links escaping the build folder).
    assert {p.name for p in base.iterdir()} == BUILD_OUTPUTS
    return base / "install"


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("colcon"))


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_installs_as_an_ament_python_package(install, package):
    prefix = install / package
    assert (prefix / "share" / package / "package.xml").read_bytes() == (
        SRC / package / "package.xml"
    ).read_bytes()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
    # Written by colcon-ros for ros.ament_python packages only (a plain Python build has no hook).
    assert (prefix / "share" / package / "hook" / "ament_prefix_path.dsv").is_file()
    assert list((prefix / "lib").glob(f"python3.*/site-packages/{package}/_entry_points.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_node_executables_are_where_ros2_run_finds_them(install, package):
    lib = install / package / "lib" / package
    for name in nodes_of(package):
        exe = lib / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"missing executable {exe}"
        assert exe.read_text().startswith("#!") and "python" in exe.read_text().splitlines()[0]
    installed = {p.name for p in lib.iterdir()} if lib.is_dir() else set()
    assert installed == set(nodes_of(package))


def test_core_share_holds_the_launch_and_config_trees(install):
    share = install / "dexh2r_core" / "share" / "dexh2r_core"
    for top in ("launch", "config"):
        expected = {p.relative_to(REPO / top) for p in (REPO / top).rglob("*") if p.is_file()}
        got = {p.relative_to(share / top) for p in (share / top).rglob("*") if p.is_file()}
        assert expected and got == expected, top
        for rel in expected:
            assert (share / top / rel).read_bytes() == (REPO / top / rel).read_bytes()


def test_installed_entry_points_load_from_the_install_tree(install):
    """What a sourced workspace sees: PYTHONPATH/AMENT_PREFIX_PATH of the install, not the checkout."""
    prefixes = [install / p for p in PACKAGES]
    site = [str(s) for prefix in prefixes for s in prefix.glob("lib/python3.*/site-packages")]
    env = {k: v for k, v in os.environ.items() if k != "DEXH2R_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(site)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(str(p) for p in prefixes)
    probe = f"""
import importlib.metadata as md, json, sys
out = {{}}
for pkg in {PACKAGES!r}:
    for ep in md.distribution(pkg).entry_points:
        if ep.group == "console_scripts":
            fn = ep.load()
            out[ep.name] = [callable(fn), sys.modules[ep.module].__file__]
from dexh2r_core.paths import share_dir
out["share"] = str(share_dir("dexh2r_core"))
print(json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=install, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out.pop("share")) == install / "dexh2r_core" / "share" / "dexh2r_core"
    assert set(out) == {name for p in PACKAGES for name in nodes_of(p)}
    for name, (is_callable, module_file) in out.items():
        assert is_callable, name
        assert Path(module_file).is_relative_to(install), f"{name} loaded from {module_file}"


@pytest.mark.skipif(
    int(version("setuptools").split(".")[0]) >= 80,
    reason=f"setuptools {version('setuptools')} >= 80 dropped `setup.py develop --editable`, which "
    "`colcon build --symlink-install` runs (the Docker image keeps setuptools < 80)",
)
def test_symlink_install_links_back_into_the_checkout(tmp_path):
    install = build(tmp_path, "--symlink-install")
    share = install / "dexh2r_core" / "share" / "dexh2r_core"
    for top in ("launch", "config"):
        for path in (REPO / top).rglob("*"):
            if path.is_file():
                installed = share / top / path.relative_to(REPO / top)
                assert installed.resolve() == path.resolve(), installed


def test_workspace_root_finds_the_six_packages_not_the_pip_package():
    """`colcon build` run in the checkout (or in a workspace holding it) must see src/*.

    The root setup.py (pip users) must not be taken for a package: colcon stops descending at
    a package, so it would hide the six ament_python packages.
    """
    result = colcon("--log-base", os.devnull, "list", cwd=REPO, timeout=120)
    if "invalid choice: 'list'" in result.stderr:
        pytest.skip("colcon-package-information (the `colcon list` verb) is not installed")
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {}
    for line in result.stdout.splitlines():
        name, path, kind = line.split("\t")
        listed[name] = (Path(path).as_posix(), kind)
    assert listed == {p: (f"src/{p}", "(ros.ament_python)") for p in PACKAGES}
