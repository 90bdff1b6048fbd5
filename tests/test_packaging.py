"""Packaging of the six ament_python packages, checked without colcon or a ROS install.

Each package's setup.py (colcon), the root setup.py (pip) and the launcher read the executables
from `<pkg>/_entry_points.py` (NODES); these tests hold every file to that single list and to the
ament_python layout colcon-ros and `ros2 run` expect. setup.py files are executed with
`setuptools.setup` replaced by a recorder, so nothing is built.
"""

from __future__ import annotations

import ast
import configparser
import os
import runpy
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import setuptools

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
CLI = ("dexh2r", "dexh2r_core.cli:main")


def nodes_of(package: str) -> dict[str, str]:
    return dict(runpy.run_path(str(SRC / package / package / "_entry_points.py"))["NODES"])


def setup_kwargs(setup_py: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (run from its own folder)."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(setup_py.parent)
    runpy.run_path(str(setup_py), run_name="__main__")
    assert captured, f"{setup_py} did not call setuptools.setup()"
    return captured


def console_scripts(kwargs: dict) -> dict[str, str]:
    scripts: dict[str, str] = {}
    for spec in kwargs.get("entry_points", {}).get("console_scripts", []):
        name, sep, target = spec.partition("=")
        assert sep, f"malformed console script {spec!r}"
        assert name.strip() not in scripts, f"console script {name.strip()!r} declared twice"
        scripts[name.strip()] = target.strip()
    return scripts


def test_src_holds_exactly_the_six_packages():
    found = sorted(p.name for p in SRC.iterdir() if (p / "package.xml").exists())
    assert found == sorted(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_xml_is_an_ament_python_package_of_that_name(package):
    root = ET.parse(SRC / package / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == package, "package.xml <name> must equal the folder name"
    assert root.findtext("export/build_type") == "ament_python"
    for tag in ("version", "description", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml has no <{tag}>"
    assert root.find("maintainer") is not None
    if package != "dexh2r_core":
        depends = {e.text for e in root if e.tag in ("depend", "exec_depend")}
        assert "dexh2r_core" in depends


@pytest.mark.parametrize("package", PACKAGES)
def test_ament_resource_marker_exists(package):
    assert (SRC / package / "resource" / package).is_file()


@pytest.mark.parametrize("package", PACKAGES)
def test_setup_cfg_installs_executables_where_ros2_run_looks(package):
    cfg = configparser.ConfigParser()
    cfg.read(SRC / package / "setup.cfg")
    assert cfg.get("develop", "script_dir") == f"$base/lib/{package}"
    assert cfg.get("install", "install_scripts") == f"$base/lib/{package}"


@pytest.mark.parametrize("package", PACKAGES)
def test_setup_py_declares_exactly_the_nodes_of_entry_points(package, monkeypatch):
    kwargs = setup_kwargs(SRC / package / "setup.py", monkeypatch)
    assert kwargs["name"] == package
    assert console_scripts(kwargs) == nodes_of(package)
    assert package in kwargs["packages"]
    assert not [p for p in kwargs["packages"] if p == "test" or p.startswith("test.")]
    version = ET.parse(SRC / package / "package.xml").getroot().findtext("version")
    assert kwargs["version"] == version, "setup.py and package.xml versions differ"
    data_files = dict((dest, list(files)) for dest, files in kwargs["data_files"])
    assert data_files["share/ament_index/resource_index/packages"] == [f"resource/{package}"]
    assert data_files[f"share/{package}"][:1] == ["package.xml"]


@pytest.mark.parametrize("package", PACKAGES)
def test_data_files_exist_inside_the_package_folder(package, monkeypatch):
    # `colcon build --symlink-install` mirrors each data file's relative path into the package's
    # build folder: a path leading out of the package ("../..") would put links outside it.
    kwargs = setup_kwargs(SRC / package / "setup.py", monkeypatch)
    for _dest, files in kwargs["data_files"]:
        for source in files:
            assert not os.path.isabs(source), source
            assert not os.path.normpath(source).startswith(".."), f"{source} leaves the package folder"
            assert (SRC / package / source).is_file(), f"data file {source} does not exist"


def test_core_share_installs_the_launch_and_config_trees(monkeypatch):
    kwargs = setup_kwargs(SRC / "dexh2r_core" / "setup.py", monkeypatch)
    installed = {
        (Path(dest) / Path(source).name).as_posix()
        for dest, files in kwargs["data_files"]
        if dest.startswith(("share/dexh2r_core/launch", "share/dexh2r_core/config"))
        for source in files
    }
    expected = {
        f"share/dexh2r_core/{path.relative_to(REPO).as_posix()}"
        for top in ("launch", "config")
        for path in (REPO / top).rglob("*")
        if path.is_file()
    }
    assert expected, "launch/ and config/ are empty"
    assert installed == expected
    for top in ("launch", "config"):  # the links that keep the data-file paths inside the package
        link = SRC / "dexh2r_core" / top
        assert link.is_symlink() and link.resolve() == (REPO / top).resolve(), f"{link} -> ../../{top}"


@pytest.mark.parametrize("package", PACKAGES)
def test_entry_points_module_has_no_module_level_imports(package):
    # Build scripts execute it before any dependency is installed.
    tree = ast.parse((SRC / package / package / "_entry_points.py").read_text())
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not [n for n in imports if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]


def _defines(module_file: Path, name: str) -> bool:
    for node in ast.parse(module_file.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def _module_file(package: str, module: str) -> Path:
    base = SRC / package / Path(*module.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


def _targets():
    yield "dexh2r_core", *CLI
    for package in PACKAGES:
        for name, target in nodes_of(package).items():
            yield package, name, target


@pytest.mark.parametrize(("package", "name", "target"), list(_targets()))
def test_every_target_names_a_function_of_its_own_package(package, name, target):
    module, sep, function = target.partition(":")
    assert sep and module and function, f"{name}: target {target!r} is not 'module:function'"
    assert module == package or module.startswith(f"{package}."), f"{name}: {module} is not in {package}"
    module_file = _module_file(package, module)
    assert module_file.is_file(), f"{name}: module {module} not found under src/{package}"
    assert _defines(module_file, function), f"{name}: {module_file} defines no {function}"


def test_executable_names_are_unique_across_packages():
    # The pip install puts every package's executables into one bin/ folder.
    names = [CLI[0]] + [name for package in PACKAGES for name in nodes_of(package)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_root_setup_py_exposes_every_node_and_the_cli(monkeypatch):
    kwargs = setup_kwargs(REPO / "setup.py", monkeypatch)
    expected = dict([CLI])
    for package in PACKAGES:
        expected.update(nodes_of(package))
    assert console_scripts(kwargs) == expected


def test_root_pyproject_finds_every_package():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    where = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    assert sorted(where) == sorted(f"src/{p}" for p in PACKAGES)
