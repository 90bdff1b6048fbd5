"""ROS-free tests of the launch file parser, substitutions and command-line building."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from dexh2r_core.launch.cli import main as launch_main
from dexh2r_core.launch.parser import LaunchFileError, declared_arguments, load_launch, parse_overrides
from dexh2r_core.launch.resolve import ExecutableNotFoundError, resolve_executable
from dexh2r_core.launch.runner import build_command
from dexh2r_core.launch.substitutions import SubstitutionError, safe_eval
from dexh2r_core.paths import share_dir

REPO = share_dir("dexh2r_core")
SMOKE = REPO / "launch" / "smoke.launch.xml"


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def error_of(path: Path, overrides: dict[str, str] | None = None, **kw) -> str:
    with pytest.raises(LaunchFileError) as info:
        load_launch(path, overrides, **kw)
    return str(info.value)


def test_smoke_launch_file_structure() -> None:
    desc = load_launch(SMOKE)
    assert [n.label for n in desc.nodes] == ["talker", "listener"]
    talker, listener = desc.nodes
    assert (talker.fqn, listener.fqn) == ("/smoke/talker", "/smoke/listener")
    assert listener.required and not talker.required
    assert talker.remaps == [("chatter", "smoke_chatter")] == listener.remaps
    assert talker.effective_params()["greeting"] == "hello from smoke_params.yaml"
    assert talker.effective_params()["rate_hz"] == 20.0
    assert listener.effective_params()["exit_after"] == 20
    assert "greeting" not in listener.effective_params()  # /**/talker key only
    assert desc.warnings == []  # plain ROS 2 XML: nothing dexh2r-specific


def test_args_defaults_overrides_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.launch.xml",
        """
        <launch>
          <arg name="rate" default="10"/>
          <arg name="mode" default="fast"><choice value="fast"/><choice value="slow"/></arg>
          <node pkg="dexh2r_core" exec="smoke_talker" name="t">
            <param name="rate_hz" value="$(var rate)"/>
            <param name="label" value="$(var mode)"/>
            <param name="flag" value="true"/>
            <param name="ratio" value="0.5"/>
            <param name="ids" value="[1, 2, 3]"/>
            <param name="names" value="a;b" value-sep=";"/>
            <param name="as_text" value="42" type="str"/>
            <param name="group"><param name="inner" value="7"/></param>
          </node>
        </launch>
        """,
    )
    params = load_launch(path).nodes[0].effective_params()
    assert params == {
        "rate_hz": 10,
        "label": "fast",
        "flag": True,
        "ratio": 0.5,
        "ids": [1, 2, 3],
        "names": ["a", "b"],
        "as_text": "42",
        "group.inner": 7,
    }
    desc = load_launch(path, {"rate": "2.5", "mode": "slow"})
    assert desc.nodes[0].effective_params()["rate_hz"] == 2.5
    assert desc.arguments["mode"].value == "slow"
    assert "valid choices: fast, slow" in error_of(path, {"mode": "medium"})


def test_unknown_override_and_missing_required_arg(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "req.launch.xml",
        """
        <launch>
          <arg name="count" default="1"/>
          <arg name="robot" description="which robot"/>
        </launch>
        """,
    )
    msg = error_of(path, {"robot": "ur5", "cuont": "3"})
    assert "unknown launch argument 'cuont'" in msg and "did you mean 'count'" in msg
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: launch argument 'robot' is required (which robot)")
    assert "robot:=VALUE" in msg
    assert "(you passed 'robt:=...': a typo?)" in error_of(path, {"robt": "ur5"})
    with pytest.raises(ValueError, match="name:=value"):
        parse_overrides(["count=3"])
    assert [a.name for a in declared_arguments(path)] == ["count", "robot"]


def test_typo_tag_attribute_and_xml_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.launch.xml",
        '<launch>\n  <arg name="x" default="1"/>\n  <nod pkg="p" exec="e"/>\n</launch>\n',
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: unknown tag <nod>") and "did you mean 'node'" in msg
    path = write(
        tmp_path,
        "attr.launch.xml",
        '<launch>\n\n  <node pkgg="dexh2r_core" exec="smoke_talker"/>\n</launch>\n',
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: unknown attribute 'pkgg' on <node> (did you mean 'pkg'?)")
    path = write(tmp_path, "xml.launch.xml", '<launch>\n  <node pkg="a" exec="b">\n</launch>\n')
    assert error_of(path).startswith(f"{path}:3: XML syntax error: mismatched tag")
    path = write(tmp_path, "sub.launch.xml", '<launch>\n  <let name="a" value="$(vra x)"/>\n</launch>\n')
    msg = error_of(path)
    assert msg.startswith(f"{path}:2: ") and "unknown substitution $(vra) (did you mean $(var)?)" in msg
    path = write(tmp_path, "ros2only.launch.xml", '<launch>\n  <timer period="1"/>\n</launch>\n')
    assert "valid ROS 2 launch XML but not supported" in error_of(path)


def test_unknown_package_and_executable(tmp_path: Path) -> None:
    path = write(
        tmp_path, "pkg.launch.xml", '<launch>\n  <node pkg="dexh2r_cor" exec="smoke_talker"/>\n</launch>\n'
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:2: package 'dexh2r_cor' not found") and "did you mean 'dexh2r_core'" in msg
    path = write(
        tmp_path, "exe.launch.xml", '<launch>\n\n  <node pkg="dexh2r_core" exec="smoke_talkr"/>\n</launch>\n'
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:3: executable 'smoke_talkr' not found in package 'dexh2r_core'")
    assert "did you mean 'smoke_talker'" in msg
    assert load_launch(path, resolve=False).nodes[0].resolved is None


def test_groups_namespaces_and_scoping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ns.launch.xml",
        """
        <launch>
          <let name="who" value="outer"/>
          <group>
            <push-ros-namespace namespace="robot"/>
            <let name="who" value="inner"/>
            <set_remap from="chatter" to="talk"/>
            <node pkg="dexh2r_core" exec="smoke_talker" name="a"/>
            <node pkg="dexh2r_core" exec="smoke_talker" name="b" namespace="arm"/>
            <node pkg="dexh2r_core" exec="smoke_talker" name="c" namespace="/abs"/>
            <group>
              <push_ros_namespace namespace="left"/>
              <node pkg="dexh2r_core" exec="smoke_talker" name="d"/>
            </group>
          </group>
          <node pkg="dexh2r_core" exec="smoke_talker" name="e" args="--who $(var who)"/>
          <group scoped="false"><let name="who" value="leaked"/></group>
          <node pkg="dexh2r_core" exec="smoke_talker" name="f" args="$(var who)"/>
          <group forwarding="false"><keep name="k" value="$(var who)"/>
            <node pkg="dexh2r_core" exec="smoke_talker" name="g" args="$(var k) $(var who default)"/>
          </group>
        </launch>
        """,
    )
    desc = load_launch(path)
    by = {n.name: n for n in desc.nodes}
    assert by["a"].fqn == "/robot/a" and by["a"].remaps == [("chatter", "talk")]
    assert by["b"].fqn == "/robot/arm/b"
    assert by["c"].fqn == "/abs/c"
    assert by["d"].fqn == "/robot/left/d"
    assert by["e"].namespace is None and by["e"].remaps == [] and by["e"].args == ["--who", "outer"]
    assert by["f"].args == ["leaked"]
    assert by["g"].args == ["leaked", "default"]


def test_include_with_args_and_dirname(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(
        tmp_path,
        "sub/child.launch.xml",
        """
        <launch>
          <arg name="node_name"/>
          <arg name="rate" default="5"/>
          <node pkg="dexh2r_core" exec="smoke_talker" name="$(var node_name)">
            <param from="$(dirname)/p.yaml"/>
            <param name="rate_hz" value="$(var rate)"/>
          </node>
        </launch>
        """,
    )
    write(
        tmp_path,
        "sub/p.yaml",
        """
        /**:
          ros__parameters: {greeting: any}
        ns:
          inc:
            ros__parameters: {greeting: nested-key, deep: {x: 1}}
        /other:
          ros__parameters: {greeting: other}
        """,
    )
    path = write(
        tmp_path,
        "parent.launch.xml",
        """
        <launch>
          <group>
            <push-ros-namespace namespace="ns"/>
            <include file="$(dirname)/sub/child.launch.xml">
              <arg name="node_name" value="inc"/>
            </include>
          </group>
          <include file="$(dirname)/sub/child.launch.xml"><arg name="node_name" value="plain"/></include>
          <node pkg="dexh2r_core" exec="smoke_talker" name="after" args="$(var node_name)"/>
        </launch>
        """,
    )
    desc = load_launch(path, {"rate": "9"})
    inc, plain, after = desc.nodes
    assert inc.fqn == "/ns/inc" and inc.effective_params() == {
        "greeting": "nested-key",
        "deep.x": 1,
        "rate_hz": 9,
    }
    assert plain.effective_params() == {"greeting": "any", "rate_hz": 9}
    assert after.args == ["plain"]  # ros2 semantics: <include> is not scoped
    missing = write(
        tmp_path,
        "missing.launch.xml",
        '<launch>\n  <include file="$(dirname)/sub/child.launch.xml"/>\n</launch>\n',
    )
    msg = error_of(missing)
    assert "child.launch.xml:2: launch argument 'node_name' is required" in msg
    assert f"included from {missing}:2" in msg


def test_conditions_env_and_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXH2R_TEST_VAR", "from-env")
    monkeypatch.delenv("DEXH2R_UNSET_VAR", raising=False)
    path = write(
        tmp_path,
        "cond.launch.xml",
        """
        <launch>
          <arg name="sim" default="true"/>
          <arg name="n" default="3"/>
          <set_env name="DEXH2R_SET" value="$(env DEXH2R_TEST_VAR)"/>
          <unset_env name="DEXH2R_TEST_VAR"/>
          <node if="$(var sim)" pkg="dexh2r_core" exec="smoke_talker" name="sim_only"
                args="$(env DEXH2R_SET) $(env DEXH2R_TEST_VAR gone) $(env DEXH2R_UNSET_VAR dflt)"/>
          <node unless="$(var sim)" pkg="dexh2r_core" exec="smoke_talker" name="real_only"/>
          <node if="$(eval '$(var n) * 2 == 6 and not False')"
                pkg="dexh2r_core" exec="smoke_talker" name="evald">
            <env name="EXTRA" value="$(eval 'math.floor(2.7) + max(1, 2)')"/>
          </node>
          <node if="$(not $(var sim))" pkg="dexh2r_core" exec="smoke_talker" name="not_sim"/>
          <group if="false"><arg name="hidden" default="x"/></group>
        </launch>
        """,
    )
    desc = load_launch(path)
    assert [n.name for n in desc.nodes] == ["sim_only", "evald"]
    sim_only, evald = desc.nodes
    assert sim_only.args == ["from-env", "gone", "dflt"]
    assert sim_only.env == {"DEXH2R_SET": "from-env", "DEXH2R_TEST_VAR": None}
    assert evald.env["EXTRA"] == "4"
    assert [n.name for n in load_launch(path, {"sim": "False", "hidden": "y"}).nodes] == [
        "real_only",
        "evald",
        "not_sim",
    ]
    assert "must be true/false/1/0" in error_of(path, {"sim": "maybe"})


def test_required_alias_and_portability_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "alias.launch.xml",
        """
        <launch>
          <arg name="x" default="1"/>
          <set-env name="A" value="$(arg x)"/>
          <node pkg="dexh2r_core" exec="smoke_listener" name="l" required="true"/>
          <node pkg="dexh2r_core" exec="smoke_listener" name="m" on_exit="shutdown"/>
        </launch>
        """,
    )
    desc = load_launch(path)
    assert [n.required for n in desc.nodes] == [True, True]
    text = "\n".join(desc.warnings)
    assert "<set-env> is a dexh2r alias" in text and "$(arg x)" in text and 'on_exit="shutdown"' in text
    bad = write(
        tmp_path,
        "bad.launch.xml",
        '<launch>\n  <node pkg="dexh2r_core" exec="smoke_listener" on_exit="restart"/>\n</launch>\n',
    )
    assert "on_exit supports only 'shutdown'" in error_of(bad)


def test_command_line_matches_ros2_launch(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cmd.launch.xml",
        """
        <launch>
          <set_parameter name="use_sim_time" value="true"/>
          <node pkg="dexh2r_core" exec="smoke_talker" name="talker" namespace="demo" args="--flag 'a b'"
                ros_args="--log-level debug" launch-prefix="nice -n 5">
            <param from="$(dirname)/p.yaml"/>
            <param name="rate_hz" value="5"/>
            <remap from="chatter" to="talk"/>
          </node>
        </launch>
        """,
    )
    write(tmp_path, "p.yaml", "/**:\n  ros__parameters:\n    greeting: hi\n")
    node = load_launch(path).nodes[0]
    cmd = build_command(node, tmp_path)
    script = str(Path(sys.executable).parent / "smoke_talker")
    generated = tmp_path / "talker.1.yaml"
    assert cmd == [
        "nice", "-n", "5", script, "--flag", "a b", "--ros-args", "--log-level", "debug",
        "--ros-args", "-r", "__node:=talker", "-r", "__ns:=/demo", "-p", "use_sim_time:=true",
        "--params-file", str(tmp_path / "p.yaml"), "--params-file", str(generated), "-r", "chatter:=talk",
    ]  # fmt: skip
    assert generated.read_text() == "/demo/talker:\n  ros__parameters:\n    rate_hz: 5\n"


def test_executable_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ament index first
    prefix = tmp_path / "install"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/dexh2r_core").touch()
    exe = prefix / "lib/dexh2r_core/smoke_talker"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert resolve_executable("dexh2r_core", "smoke_talker").argv == (str(exe),)
    # then the venv's console script, then `python -c` calling the NODES function
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    assert resolve_executable("dexh2r_core", "smoke_talker").how == "console-script"
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    resolved = resolve_executable("dexh2r_core", "smoke_listener")
    assert resolved.how == "python -c" and resolved.argv[:2] == (str(tmp_path / "python"), "-c")
    assert "from dexh2r_core.nodes.smoke import listener_main" in resolved.argv[2]
    assert resolve_executable(None, "sh").how == "PATH"
    with pytest.raises(ExecutableNotFoundError, match="not found on PATH"):
        resolve_executable(None, "no-such-program-dexh2r")


def test_safe_eval() -> None:
    assert safe_eval("1 + 2 * 3") == 7
    assert safe_eval("'a' if 2 > 1 else 'b'") == "a"
    assert safe_eval("math.sqrt(16) + pi - pi") == 4.0
    assert safe_eval("'x' in ['x', 'y']") is True
    for bad in ("__import__('os').system('true')", "open('/etc/passwd')", "(1).__class__", "2 ** 10000"):
        with pytest.raises(SubstitutionError):
            safe_eval(bad)


def test_cli_print_and_error_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch_main([str(SMOKE), "count:=7", "--print"]) == 0
    out = capsys.readouterr().out
    assert "[listener]" in out and "param exit_after = 7" in out and "__ns:=/smoke" in out
    assert launch_main([str(SMOKE), "--show-args"]) == 0
    assert "'fail_after':" in capsys.readouterr().out
    assert launch_main(["dexh2r_core", "smoke.launch.xml", "--print"]) == 0  # PACKAGE FILE form
    capsys.readouterr()
    typo = write(tmp_path, "t.launch.xml", "<launch>\n  <nodee/>\n</launch>\n")
    assert launch_main([str(typo)]) == 2
    assert f"{typo}:2: unknown tag <nodee>" in capsys.readouterr().err
    assert launch_main([str(SMOKE), "cuont:=1"]) == 2
    assert "unknown launch argument 'cuont'" in capsys.readouterr().err
    assert launch_main([str(tmp_path / "nope.launch.xml")]) == 2
    assert os.path.exists(SMOKE)


def test_structure_is_checked_inside_false_conditions_and_labels_are_unique(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "off.launch.xml",
        """
        <launch>
          <group if="false">
            <node pkg="dexh2r_core" exec="smoke_talker"><parm name="a" value="1"/></node>
          </group>
        </launch>
        """,
    )
    assert error_of(path).startswith(f"{path}:3: unexpected <parm> inside <node> (did you mean 'param'?)")
    path = write(
        tmp_path,
        "dup.launch.xml",
        """
        <launch xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
          <node pkg="dexh2r_core" exec="smoke_talker" name="a" namespace="r1"><param name="x" value="1"/>
          </node>
          <node pkg="dexh2r_core" exec="smoke_talker" name="a" namespace="r2"><param name="x" value="2"/>
          </node>
          <node pkg="dexh2r_core" exec="smoke_talker"/>
        </launch>
        """,
    )
    nodes = load_launch(path).nodes
    assert [n.label for n in nodes] == ["r1/a", "r2/a", "smoke_talker"]
    for node in nodes:
        build_command(node, tmp_path)
    assert (tmp_path / "r2_a.0.yaml").read_text() == "/r2/a:\n  ros__parameters:\n    x: 2\n"
