"""ROS 2 XML launch files -> a typed, fully resolved description. No ROS import.

Launch files are plain ROS 2 XML (the same file runs under `ros2 launch` on a full install).
Everything is resolved eagerly, in document order, the way ros2 launch visits actions:

    <launch>                              root
    <arg name default description>        launch argument (`<choice value>` children allowed);
                                          `name:=value` on the command line overrides it
    <let name value>                      set a launch configuration
    <set_env name value> <unset_env name> environment of the nodes started after it
    <push-ros-namespace namespace>        (or push_ros_namespace) prefix later nodes' namespace
    <set_remap from to>                   remap rule for later nodes
    <set_parameter name value>            parameter for later nodes
    <group scoped forwarding>             scope for all of the above (`<keep name value>`)
    <include file>                        another XML launch file, `<arg name value>` children
    <node pkg exec name namespace args ros_args output on_exit respawn respawn_delay
          respawn_max_retries launch-prefix cwd exec_name sigterm_timeout sigkill_timeout>
        <param name value [type] [value-sep]/>  <param name><param .../></param>
        <param from="file.yaml" [allow_substs]/>  <remap from to/>  <env name value/>
    <log message>                         printed when the launch starts
    if="..." / unless="..."               on every action: true/false/1/0 after substitution

Substitutions: see `substitutions.py` ($(var), $(env), $(find-pkg-share), $(eval), ...).

Required nodes: `on_exit="shutdown"` (ROS 2) ends the whole launch when that node exits.
dexh2r also accepts `required="true"` (the ROS 1 spelling) but warns: ros2 launch rejects
unknown attributes, so portable files use on_exit. Likewise `<set-env>`, `<unset-env>` and
`$(arg x)` are accepted with a portability warning.

Semantics kept from ros2 launch: `<include>` is not scoped (its arguments and configurations
stay set afterwards; wrap it in a `<group>` to scope it); `<group>` is scoped by default;
name/value params are typed by YAML rules (`"10"` -> int, `"1.5"` -> float, `"true"` -> bool).
Unknown tags and attributes are errors (ros2 launch rejects them too), and every error names
the file and line.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import yaml

from dexh2r_core.launch.resolve import ExecutableNotFoundError, ResolvedExecutable, resolve_executable
from dexh2r_core.launch.substitutions import (
    SubstContext,
    SubstitutionError,
    evaluate,
    parse_template,
)

# -- description types ---------------------------------------------------------------------------


def display_path(path: Path) -> str:
    """`path` relative to the working directory when below it: short, clickable error messages."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Source:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{display_path(self.file)}:{self.line}"


class LaunchFileError(Exception):
    """A launch file that cannot be used; str() is `file:line: message` (+ the include chain)."""

    def __init__(self, message: str, source: Source | None = None, chain: tuple[Source, ...] = ()) -> None:
        self.message = message
        self.source = source
        self.chain = chain
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return where + self.message + "".join(f"\n  included from {s}" for s in reversed(self.chain))


@dataclass
class LaunchArgument:
    name: str
    default: str | None  # as written in the file (unresolved)
    description: str
    choices: tuple[str, ...] | None
    source: Source
    value: str | None = None  # resolved value (None in --show-args scans)


@dataclass
class ParamFile:
    """`<param from="...">`: passed to the node as `--params-file` (rcl applies the node keys)."""

    path: Path
    source: Source
    values: dict[str, Any]  # entries that apply to this node, flattened (informational)
    text: str | None = None  # substituted content when allow_substs="true" (written to a temp file)


@dataclass
class NodeDescription:
    package: str | None
    executable: str
    name: str | None
    namespace: str | None  # absolute, or None for the node's default
    source: Source
    params: list[ParamFile | dict[str, Any]] = field(default_factory=list)  # in order; dicts flattened
    global_params: list[tuple[str, str]] = field(default_factory=list)  # <set_parameter>: -p name:=value
    remaps: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    ros_args: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)  # changes to the launcher's env; None unsets
    output: str = "log"
    required: bool = False
    respawn: bool = False
    respawn_delay: float = 0.0
    respawn_max_retries: int = -1  # negative: forever (ros2 launch default)
    sigterm_timeout: float | None = None
    sigkill_timeout: float | None = None
    launch_prefix: list[str] = field(default_factory=list)
    cwd: str | None = None
    exec_name: str | None = None
    resolved: ResolvedExecutable | None = None
    label: str = ""  # unique display name, set once all nodes are known

    @property
    def fqn(self) -> str | None:
        """Fully qualified node name, when the launch file gives the name."""
        if self.name is None:
            return None
        ns = self.namespace or "/"
        return ns.rstrip("/") + "/" + self.name

    def effective_params(self) -> dict[str, Any]:
        """The parameter values this node gets from the launch file (later sources win)."""
        merged: dict[str, Any] = {}
        for name, value in self.global_params:
            merged[name] = guess_type(value)
        for item in self.params:
            merged.update(item.values if isinstance(item, ParamFile) else item)
        return merged


@dataclass
class LaunchDescription:
    file: Path
    arguments: dict[str, LaunchArgument] = field(default_factory=dict)
    nodes: list[NodeDescription] = field(default_factory=list)
    messages: list[tuple[Source, str]] = field(default_factory=list)  # <log message>
    warnings: list[str] = field(default_factory=list)

    def node(self, label: str) -> NodeDescription:
        for node in self.nodes:
            if label in (node.label, node.name, node.fqn):
                return node
        raise KeyError(label)


# -- XML with line numbers -----------------------------------------------------------------------


@dataclass
class _El:
    tag: str
    attrib: dict[str, str]
    line: int
    file: Path
    children: list[_El] = field(default_factory=list)

    @property
    def source(self) -> Source:
        return Source(self.file, self.line)


def _load_xml(path: Path) -> _El:
    parser = expat.ParserCreate()
    stack: list[_El] = []
    root: list[_El] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = _El(tag, dict(attrs), parser.CurrentLineNumber, path)
        (stack[-1].children if stack else root).append(el)
        stack.append(el)

    def end(_tag: str) -> None:
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LaunchFileError(f"cannot read launch file {display_path(path)}: {exc.strerror}") from None
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        msg = expat.errors.messages[exc.code]
        raise LaunchFileError(
            f"XML syntax error: {msg} (column {exc.offset + 1})", Source(path, exc.lineno)
        ) from None
    if not root:
        raise LaunchFileError("empty launch file", Source(path, 1))
    return root[0]


# -- tag table -----------------------------------------------------------------------------------

_COND = {"if", "unless"}
_NODE_ATTRS = {
    "pkg",
    "exec",
    "name",
    "namespace",
    "args",
    "ros_args",
    "output",
    "on_exit",
    "respawn",
    "respawn_delay",
    "respawn_max_retries",
    "launch-prefix",
    "cwd",
    "exec_name",
    "sigterm_timeout",
    "sigkill_timeout",
    "emulate_tty",
    "required",  # dexh2r alias of on_exit="shutdown" (warned)
}
# tag -> (allowed attributes, required attributes)
_TAGS: dict[str, tuple[set[str], set[str]]] = {
    "arg": ({"name", "default", "description"} | _COND, {"name"}),
    "let": ({"name", "value"} | _COND, {"name", "value"}),
    "set_env": ({"name", "value"} | _COND, {"name", "value"}),
    "set-env": ({"name", "value"} | _COND, {"name", "value"}),
    "unset_env": ({"name"} | _COND, {"name"}),
    "unset-env": ({"name"} | _COND, {"name"}),
    "push-ros-namespace": ({"namespace"} | _COND, {"namespace"}),
    "push_ros_namespace": ({"namespace"} | _COND, {"namespace"}),
    "set_remap": ({"from", "to"} | _COND, {"from", "to"}),
    "set_parameter": ({"name", "value"} | _COND, {"name", "value"}),
    "group": ({"scoped", "forwarding"} | _COND, set()),
    "include": ({"file"} | _COND, {"file"}),
    "node": (_NODE_ATTRS | _COND, {"exec"}),
    "log": ({"message", "level"} | _COND, {"message"}),
}
# tag -> {child tag: (allowed attributes, required attributes)} for children that are not actions
_LEAF_CHILDREN: dict[str, dict[str, tuple[set[str], set[str]]]] = {
    "arg": {"choice": ({"value"}, {"value"})},
    "group": {"keep": ({"name", "value"}, {"name", "value"})},
    "include": {"arg": ({"name", "value"}, {"name", "value"})},
    "node": {"remap": ({"from", "to"}, {"from", "to"}), "env": ({"name", "value"}, {"name", "value"})},
}
_DEXH2R_ALIASES = {"set-env": "set_env", "unset-env": "unset_env"}
# Valid in ROS 2 launch XML but not run by dexh2r launch: a clear message instead of "unknown".
_ROS2_ONLY_TAGS = {
    "executable",
    "timer",
    "node_container",
    "composable_node",
    "load_composable_node",
    "lifecycle_node",
    "for",
    "for_each",
    "set_parameters_from_file",
    "set_use_sim_time",
    "set_ros_log_dir",
    "shutdown",
    "reset_env",
    "push_env",
    "pop_env",
    "append_env",
    "unset_launch_configuration",
    "scoped_include",
}
_OUTPUTS = ("screen", "log", "both")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NS_RE = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)*")


def _suggest(word: str, options: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# -- parameter helpers ---------------------------------------------------------------------------

_SCALARS = (bool, int, float, str)


def guess_type(text: str) -> Any:
    """ros2 launch typing of a `<param value>`: YAML rules for scalars and flat lists, else str."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list) and value and all(isinstance(v, _SCALARS) for v in value):
        return value
    return text


def _typed(text: str, type_id: str | None) -> Any:
    if type_id is None:
        return guess_type(text)
    if type_id == "str":
        return text
    if type_id == "bool":
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise ValueError(f"'{text}' is not a bool")
    return {"int": int, "float": float}[type_id](text)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def param_file_sections(data: Any) -> list[tuple[str, dict[str, Any]]]:
    """(node-name pattern, flattened ros__parameters) of a rosparam YAML file, in file order.

    Keys are node names, optionally nested by namespace (`ns: {node: {ros__parameters: ...}}`)
    and with the wildcards `/**` (any namespaces) and `*` (one name), as rcl reads them.
    """
    if not isinstance(data, dict):
        raise ValueError("expected a mapping of node names to {ros__parameters: {...}}")
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            path = prefix.rstrip("/") + "/" + str(key).strip("/")
            if not isinstance(value, dict):
                raise ValueError(f"'{path}' must map to {{ros__parameters: {{...}}}}, got {value!r}")
            if "ros__parameters" in value:
                params = value["ros__parameters"] or {}
                if not isinstance(params, dict):
                    raise ValueError(f"'{path}: ros__parameters' must be a mapping")
                out.append((path, flatten_params(params)))
            else:
                walk(value, path)

    walk(data, "")
    return out


def node_name_matches(pattern: str, fqn: str) -> bool:
    regex = ""
    for seg in pattern.strip("/").split("/"):
        regex += r"(?:/[^/]+)*" if seg == "**" else "/" + re.escape(seg).replace(r"\*", "[^/]*")
    return re.fullmatch(regex, fqn) is not None


# -- scope ---------------------------------------------------------------------------------------


@dataclass
class _Scope:
    """What ros2 launch keeps in launch configurations and the context environment."""

    configs: dict[str, str]
    ros_namespace: str | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    global_params: list[tuple[str, str]] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)

    def copy(self) -> _Scope:
        return _Scope(
            dict(self.configs),
            self.ros_namespace,
            dict(self.env),
            list(self.global_params),
            list(self.remaps),
        )


class _EnvView(Mapping[str, str]):
    """The launcher's environment with the scope's set_env/unset_env applied."""

    def __init__(self, base: Mapping[str, str], changes: Mapping[str, str | None]) -> None:
        self._base, self._changes = base, changes

    def __getitem__(self, key: str) -> str:
        if key in self._changes:
            value = self._changes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        keys = (set(self._base) | set(self._changes)) - {k for k, v in self._changes.items() if v is None}
        return iter(sorted(keys))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _prefix_ns(base: str | None, ns: str | None) -> str | None:
    if ns is not None and ns.startswith("/"):
        return ns
    if base in (None, "", "/"):
        return ns if ns is not None or base is None else base
    if not ns:
        return base
    return base.rstrip("/") + "/" + ns


def _absolute_ns(ns: str | None) -> str | None:
    if ns is None:
        return None
    ns = "/" + ns.strip("/")
    return ns


# -- the parser ----------------------------------------------------------------------------------

_MAX_INCLUDE_DEPTH = 32


class _Parser:
    def __init__(
        self,
        overrides: Mapping[str, str],
        environ: Mapping[str, str],
        resolve: bool,
    ) -> None:
        self.overrides = dict(overrides)
        self.environ = environ
        self.resolve = resolve
        self.declared: set[str] = set()
        self.chain: list[Source] = []
        self.anon: dict[str, str] = {}
        self.desc: LaunchDescription | None = None

    # errors and warnings carry the include chain
    def error(self, message: str, el: _El | None = None, source: Source | None = None) -> LaunchFileError:
        return LaunchFileError(message, el.source if el is not None else source, tuple(self.chain))

    def warn(self, message: str, el: _El) -> None:
        assert self.desc is not None
        text = f"{el.source}: {message}"
        if text not in self.desc.warnings:
            self.desc.warnings.append(text)

    # substitutions
    def ctx(self, scope: _Scope, el: _El) -> SubstContext:
        return SubstContext(
            configs=scope.configs,
            environ=_EnvView(self.environ, scope.env),
            current_file=el.file,
            anon_names=self.anon,
            warn=lambda msg: self.warn(msg, el),
        )

    def ev(self, el: _El, attr: str, scope: _Scope, text: str | None = None) -> str:
        value = el.attrib[attr] if text is None else text
        try:
            return evaluate(parse_template(value), self.ctx(scope, el))
        except SubstitutionError as exc:
            raise self.error(f'<{el.tag} {attr}="{value}">: {exc}', el) from None

    def opt(self, el: _El, attr: str, scope: _Scope) -> str | None:
        return self.ev(el, attr, scope) if attr in el.attrib else None

    def as_bool(self, el: _El, attr: str, scope: _Scope, default: bool) -> bool:
        value = self.opt(el, attr, scope)
        if value is None:
            return default
        low = value.strip().lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise self.error(f"<{el.tag}> attribute '{attr}' must be true/false/1/0, got '{value}'", el)

    def as_float(self, el: _El, attr: str, scope: _Scope, minimum: float = 0.0) -> float | None:
        value = self.opt(el, attr, scope)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number >= minimum:
            raise self.error(
                f"<{el.tag}> attribute '{attr}' must be a number >= {minimum:g}, got '{value}'", el
            )
        return number

    def check_attrs(self, el: _El, allowed: set[str], required: set[str]) -> None:
        for attr in el.attrib:
            if attr not in allowed:
                raise self.error(
                    f"unknown attribute '{attr}' on <{el.tag}>{_suggest(attr, allowed)}; "
                    f"allowed: {', '.join(sorted(allowed))}",
                    el,
                )
        for attr in sorted(required):
            if attr not in el.attrib:
                raise self.error(f"<{el.tag}> needs attribute '{attr}'", el)

    def check_children(self, el: _El, allowed: set[str]) -> None:
        for child in el.children:
            if child.tag not in allowed:
                what = ", ".join(f"<{t}>" for t in sorted(allowed)) or "no children"
                hint = _suggest(child.tag, allowed)
                raise self.error(f"unexpected <{child.tag}> inside <{el.tag}>{hint}; allowed: {what}", child)

    # structure: checked for the whole file before anything runs, conditions or not (ros2 launch
    # parses every entity before executing any)
    def validate(self, el: _El) -> None:
        tag = el.tag
        if tag not in _TAGS:
            if tag in _ROS2_ONLY_TAGS:
                raise self.error(
                    f"<{tag}> is valid ROS 2 launch XML but not supported by dexh2r launch "
                    "(run this file with ros2 launch on a full ROS 2 install)",
                    el,
                )
            raise self.error(
                f"unknown tag <{tag}>{_suggest(tag, set(_TAGS))}; supported: "
                + ", ".join(f"<{t}>" for t in sorted(_TAGS) if t not in _DEXH2R_ALIASES),
                el,
            )
        allowed, required = _TAGS[tag]
        self.check_attrs(el, allowed, required)
        leaves = _LEAF_CHILDREN.get(tag, {})
        for child in el.children:
            if tag == "group" and child.tag != "keep":
                self.validate(child)
            elif tag == "node" and child.tag == "param":
                self.validate_param(child)
            elif child.tag in leaves:
                self.check_attrs(child, *leaves[child.tag])
                self.check_children(child, set())
            else:
                self.check_children(el, set(leaves) | ({"param"} if tag == "node" else set()))
                raise self.error(f"<{child.tag}> cannot be inside <{tag}>", child)

    def validate_param(self, el: _El) -> None:
        if "from" in el.attrib:
            self.check_attrs(el, {"from", "allow_substs"}, {"from"})
            self.check_children(el, set())
            return
        self.check_attrs(el, {"name", "value", "type", "value-sep"}, {"name"})
        self.check_children(el, {"param"})
        if el.children and ("value" in el.attrib or "type" in el.attrib):
            raise self.error("<param> with nested <param> children cannot have 'value' or 'type'", el)
        if not el.children and "value" not in el.attrib:
            raise self.error("<param> needs 'value', nested <param> children, or 'from'", el)
        for child in el.children:
            self.validate_param(child)

    # entry
    def parse_file(self, path: Path, scope: _Scope) -> None:
        root = _load_xml(path)
        if root.tag != "launch":
            raise self.error(f"root tag must be <launch>, got <{root.tag}>", root)
        # Root attributes are not checked: ros2 launch ignores them (xmlns:..., version, ...).
        if "deprecated" in root.attrib:
            self.warn(f"launch file is deprecated: {root.attrib['deprecated']}", root)
        for el in root.children:
            self.validate(el)
        self.actions(root.children, scope)

    def actions(self, elements: list[_El], scope: _Scope) -> None:
        for el in elements:
            self.action(el, scope)

    def condition(self, el: _El, scope: _Scope) -> bool:
        if "if" in el.attrib and "unless" in el.attrib:
            raise self.error(f"<{el.tag}> cannot have both 'if' and 'unless'", el)
        for attr, want in (("if", True), ("unless", False)):
            if attr in el.attrib:
                return self.as_bool(el, attr, scope, True) == want
        return True

    def action(self, el: _El, scope: _Scope) -> None:
        tag = el.tag
        if tag in _DEXH2R_ALIASES:
            self.warn(f"<{tag}> is a dexh2r alias: ROS 2 launch only knows <{_DEXH2R_ALIASES[tag]}>", el)
        if not self.condition(el, scope):
            self.skipped(el)
            return
        getattr(self, "tag_" + tag.replace("-", "_"))(el, scope)

    def skipped(self, el: _El) -> None:
        """Arguments behind a false condition still count as declared (for the override check)."""
        if el.tag == "arg" and "name" in el.attrib:
            self.declared.add(el.attrib["name"])
        if el.tag != "include":
            for child in el.children:
                self.skipped(child)

    # -- tags
    def tag_arg(self, el: _El, scope: _Scope) -> None:
        assert self.desc is not None
        name = el.attrib["name"]
        if not name:
            raise self.error("<arg> name must not be empty", el)
        choices = None
        if el.children:
            choices = tuple(child.attrib["value"] for child in el.children)
        self.declared.add(name)
        if name not in scope.configs:
            if "default" not in el.attrib:
                hint = ""
                unknown = [k for k in self.overrides if k not in self.declared]
                close = difflib.get_close_matches(name, unknown, n=1)
                if close:
                    hint = f" (you passed '{close[0]}:=...': a typo?)"
                desc = el.attrib.get("description")
                raise self.error(
                    f"launch argument '{name}' is required{f' ({desc})' if desc else ''}: "
                    f"pass {name}:=VALUE{hint}",
                    el,
                )
            scope.configs[name] = self.ev(el, "default", scope)
        value = scope.configs[name]
        if choices is not None and value not in choices:
            raise self.error(
                f"launch argument '{name}' is '{value}'; valid choices: {', '.join(choices)}", el
            )
        if name not in self.desc.arguments:
            self.desc.arguments[name] = LaunchArgument(
                name, el.attrib.get("default"), el.attrib.get("description", ""), choices, el.source, value
            )

    def tag_let(self, el: _El, scope: _Scope) -> None:
        scope.configs[self.ev(el, "name", scope)] = self.ev(el, "value", scope)

    def tag_set_env(self, el: _El, scope: _Scope) -> None:
        scope.env[self.ev(el, "name", scope)] = self.ev(el, "value", scope)

    def tag_unset_env(self, el: _El, scope: _Scope) -> None:
        scope.env[self.ev(el, "name", scope)] = None

    def tag_push_ros_namespace(self, el: _El, scope: _Scope) -> None:
        ns = _absolute_ns(_prefix_ns(scope.ros_namespace, self.ev(el, "namespace", scope)))
        if ns is not None and _NS_RE.fullmatch(ns) is None and ns != "/":
            raise self.error(f"invalid namespace '{ns}'", el)
        scope.ros_namespace = ns

    def tag_set_remap(self, el: _El, scope: _Scope) -> None:
        scope.remaps.append((self.ev(el, "from", scope), self.ev(el, "to", scope)))

    def tag_set_parameter(self, el: _El, scope: _Scope) -> None:
        scope.global_params.append((self.ev(el, "name", scope), self.ev(el, "value", scope)))

    def tag_log(self, el: _El, scope: _Scope) -> None:
        assert self.desc is not None
        self.desc.messages.append((el.source, self.ev(el, "message", scope)))

    def tag_group(self, el: _El, scope: _Scope) -> None:
        scoped = self.as_bool(el, "scoped", scope, True)
        forwarding = self.as_bool(el, "forwarding", scope, True)
        keeps = [c for c in el.children if c.tag == "keep"]
        kept: dict[str, str] = {}
        for keep in keeps:
            kept[self.ev(keep, "name", scope)] = self.ev(keep, "value", scope)
        if not scoped:
            inner = scope
        elif forwarding:
            inner = scope.copy()
        else:
            # ros2: ResetLaunchConfigurations + ResetEnvironment, then the <keep> values.
            inner = _Scope(configs={})
        inner.configs.update(kept)
        self.actions([c for c in el.children if c.tag != "keep"], inner)

    def tag_include(self, el: _El, scope: _Scope) -> None:
        raw = self.ev(el, "file", scope)
        path = Path(raw).expanduser()
        if not path.is_absolute():
            # ros2 launch resolves against the working directory; the including file's folder
            # is a convenience fallback ($(dirname)/file is the portable spelling).
            candidates = [Path.cwd() / path, el.file.parent / path]
            path = next((p for p in candidates if p.exists()), candidates[0])
        if not path.is_file():
            raise self.error(f"included launch file not found: {raw}", el)
        if not path.name.endswith(".xml"):
            raise self.error(
                f"cannot include '{path.name}': dexh2r launch reads XML launch files only "
                "(Python and YAML launch files need ros2 launch)",
                el,
            )
        path = path.resolve()
        if any(s.file == path for s in self.chain) or path == el.file.resolve():
            raise self.error(f"include cycle: {display_path(path)} includes itself", el)
        if len(self.chain) >= _MAX_INCLUDE_DEPTH:
            raise self.error("includes nested too deeply", el)
        values = []
        for child in el.children:
            values.append((self.ev(child, "name", scope), self.ev(child, "value", scope)))
        for name, value in values:
            scope.configs[name] = value
        self.chain.append(el.source)
        try:
            self.parse_file(path, scope)
        finally:
            self.chain.pop()

    def split_cmdline(self, el: _El, attr: str, scope: _Scope) -> list[str]:
        """Split like ros2 launch: literal text by shell rules, substitution results kept whole."""
        template = parse_template(el.attrib[attr])
        ctx = self.ctx(scope, el)
        result: list[str] = []
        current: list[str] | None = None
        for part in template:
            if not isinstance(part, str):
                try:
                    value = evaluate((part,), ctx)
                except SubstitutionError as exc:
                    raise self.error(f"<{el.tag} {attr}=...>: {exc}", el) from None
                current = (current or []) + [value]
                continue
            try:
                tokens = shlex.split(part)
            except ValueError as exc:
                raise self.error(f"<{el.tag} {attr}=...>: {exc}", el) from None
            if not tokens:
                if current is not None:
                    result.append("".join(current))
                    current = None
                continue
            if part[0].isspace() and current is not None:
                result.append("".join(current))
                current = None
            current = (current or []) + [tokens[0]]
            if len(tokens) > 1:
                result.append("".join(current))
                result.extend(tokens[1:-1])
                current = [tokens[-1]]
            if part[-1].isspace():
                result.append("".join(current))
                current = None
        if current is not None:
            result.append("".join(current))
        return result

    def tag_node(self, el: _El, scope: _Scope) -> None:
        assert self.desc is not None
        executable = self.ev(el, "exec", scope)
        package = self.opt(el, "pkg", scope) or None
        name = self.opt(el, "name", scope)
        if name is not None and _NAME_RE.fullmatch(name) is None:
            raise self.error(
                f"invalid node name '{name}' (letters, digits and _; not starting with a digit)", el
            )
        own_ns = self.opt(el, "namespace", scope)
        namespace = _absolute_ns(_prefix_ns(scope.ros_namespace, own_ns))
        if namespace is not None and namespace != "/" and _NS_RE.fullmatch(namespace) is None:
            raise self.error(f"invalid namespace '{namespace}'", el)
        node = NodeDescription(
            package=package,
            executable=executable,
            name=name,
            namespace=namespace,
            source=el.source,
            global_params=list(scope.global_params),
            remaps=list(scope.remaps),
            env=dict(scope.env),
        )
        if "args" in el.attrib:
            node.args = self.split_cmdline(el, "args", scope)
        if "ros_args" in el.attrib:
            node.ros_args = self.split_cmdline(el, "ros_args", scope)
        if "launch-prefix" in el.attrib:
            node.launch_prefix = self.split_cmdline(el, "launch-prefix", scope)
        output = self.opt(el, "output", scope)
        if output is not None:
            if output not in _OUTPUTS:
                raise self.error(f"<node> output must be one of {', '.join(_OUTPUTS)}, got '{output}'", el)
            node.output = output
        on_exit = self.opt(el, "on_exit", scope)
        if on_exit is not None and on_exit != "shutdown":
            raise self.error(f"<node> on_exit supports only 'shutdown', got '{on_exit}'", el)
        node.required = on_exit == "shutdown"
        if "required" in el.attrib:
            self.warn('required="..." is a dexh2r alias: ROS 2 launch needs on_exit="shutdown"', el)
            node.required = node.required or self.as_bool(el, "required", scope, False)
        node.respawn = self.as_bool(el, "respawn", scope, False)
        node.respawn_delay = self.as_float(el, "respawn_delay", scope) or 0.0
        retries = self.opt(el, "respawn_max_retries", scope)
        if retries is not None:
            try:
                node.respawn_max_retries = int(retries)
            except ValueError:
                raise self.error(
                    f"<node> respawn_max_retries must be an integer, got '{retries}'", el
                ) from None
        node.sigterm_timeout = self.as_float(el, "sigterm_timeout", scope)
        node.sigkill_timeout = self.as_float(el, "sigkill_timeout", scope)
        node.cwd = self.opt(el, "cwd", scope)
        node.exec_name = self.opt(el, "exec_name", scope)
        self.as_bool(el, "emulate_tty", scope, False)  # validated; output always goes through a pipe
        for child in el.children:
            if child.tag == "param":
                self.node_param(child, scope, node)
            elif child.tag == "remap":
                node.remaps.append((self.ev(child, "from", scope), self.ev(child, "to", scope)))
            else:  # env
                node.env[self.ev(child, "name", scope)] = self.ev(child, "value", scope)
        if self.resolve:
            try:
                node.resolved = resolve_executable(package, executable)
            except ExecutableNotFoundError as exc:
                raise self.error(str(exc), el) from None
        self.desc.nodes.append(node)

    def node_param(self, el: _El, scope: _Scope, node: NodeDescription) -> None:
        if "from" in el.attrib:
            raw = self.ev(el, "from", scope)
            path = Path(raw).expanduser()
            if not path.is_absolute():
                candidates = [Path.cwd() / path, el.file.parent / path]
                path = next((p for p in candidates if p.exists()), candidates[0])
            if not path.is_file():
                raise self.error(f"parameter file not found: {raw}", el)
            try:
                text = path.read_text()
            except OSError as exc:
                raise self.error(f"cannot read parameter file {raw}: {exc.strerror}", el) from None
            substituted = None
            if self.as_bool(el, "allow_substs", scope, False):
                substituted = text = self.ev(el, "from", scope, text=text)
            try:
                sections = param_file_sections(yaml.safe_load(text))
            except (yaml.YAMLError, ValueError) as exc:
                raise self.error(f"bad parameter file {display_path(path)}: {exc}", el) from None
            fqn = node.fqn
            values: dict[str, Any] = {}
            for pattern, params in sections:
                if pattern == "/**" or (fqn is not None and node_name_matches(pattern, fqn)):
                    values.update(params)
            node.params.append(ParamFile(path.resolve(), el.source, values, substituted))
            return
        values = self.param_values(el, scope)
        if node.params and isinstance(node.params[-1], dict):
            node.params[-1].update(values)  # consecutive name/value params share one params file
        else:
            node.params.append(values)

    def param_values(self, el: _El, scope: _Scope, prefix: str = "") -> dict[str, Any]:
        name = prefix + self.ev(el, "name", scope)
        if el.children:
            values: dict[str, Any] = {}
            for child in el.children:
                values.update(self.param_values(child, scope, name + "."))
            return values
        text = self.ev(el, "value", scope)
        type_id = self.opt(el, "type", scope)
        element_type = None
        if type_id is not None:
            valid = ("str", "int", "float", "bool")
            element_type = type_id.removeprefix("list_of_")
            if element_type not in valid:
                raise self.error(f"<param> type must be one of {', '.join(valid)} or list_of_<type>", el)
        sep = self.opt(el, "value-sep", scope)
        try:
            if sep is not None:
                value: Any = [_typed(item, element_type) for item in text.split(sep)]
            else:
                value = _typed(text, element_type)
        except ValueError as exc:
            raise self.error(f'<param name="{name}">: {exc}', el) from None
        return {name: value}


def _label_nodes(nodes: list[NodeDescription]) -> None:
    base = [n.exec_name or n.name or n.executable for n in nodes]
    labels = [
        (n.fqn or "").lstrip("/") or b if base.count(b) > 1 and n.exec_name is None else b
        for n, b in zip(nodes, base, strict=True)
    ]
    for i, node in enumerate(nodes):
        node.label = (
            labels[i] if labels.count(labels[i]) == 1 else f"{labels[i]}-{labels[: i + 1].count(labels[i])}"
        )


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`name:=value` command-line items -> dict; ValueError names the bad item."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"expected name:=value, got '{item}'")
        out[name] = value
    return out


def load_launch(
    path: str | os.PathLike[str],
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    resolve: bool = True,
) -> LaunchDescription:
    """Parse and resolve a launch file. Raises LaunchFileError (file:line: message).

    `overrides` are the `name:=value` launch arguments; a name no `<arg>` declares is an
    error. `environ` (default os.environ) is what `$(env ...)` sees. With `resolve` (default),
    each node's executable is looked up now, so a wrong package or executable fails here.
    """
    file = Path(path)
    if not file.is_file():
        raise LaunchFileError(f"launch file not found: {path}")
    parser = _Parser(overrides or {}, os.environ if environ is None else environ, resolve)
    desc = LaunchDescription(file=file.resolve())
    parser.desc = desc
    parser.parse_file(file.resolve(), _Scope(configs=dict(overrides or {})))
    unknown = [k for k in (overrides or {}) if k not in parser.declared]
    if unknown:
        declared = sorted(parser.declared)
        first = unknown[0]
        raise LaunchFileError(
            f"{display_path(file)}: unknown launch argument '{first}'{_suggest(first, declared)}; "
            f"declared: {', '.join(declared) or 'none'}"
        )
    _label_nodes(desc.nodes)
    return desc


def declared_arguments(path: str | os.PathLike[str]) -> list[LaunchArgument]:
    """The `<arg>` declarations of one file, unresolved (for `--show-args`; includes not followed)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise LaunchFileError(f"launch file not found: {path}")
    root = _load_xml(file)
    found: list[LaunchArgument] = []

    def walk(el: _El) -> None:
        for child in el.children:
            if child.tag == "arg" and el.tag != "include" and "name" in child.attrib:
                choices = (
                    tuple(c.attrib.get("value", "") for c in child.children if c.tag == "choice") or None
                )
                found.append(
                    LaunchArgument(
                        child.attrib["name"],
                        child.attrib.get("default"),
                        child.attrib.get("description", ""),
                        choices,
                        child.source,
                    )
                )
            elif child.tag != "include":
                walk(child)

    walk(root)
    return found
