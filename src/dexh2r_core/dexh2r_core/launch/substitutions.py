"""`$(name arg ...)` substitutions of ROS 2 launch files, resolved eagerly and without ROS.

The grammar follows ros2/launch's (`launch/frontend/grammar.lark`): text with `$(name args)`
parts; arguments are separated by spaces and may be single- or double-quoted to hold spaces;
substitutions nest (`$(find-pkg-share $(var pkg))`); `\\$` is a literal dollar sign.

Supported: var, arg (dexh2r alias of var, warned), env, find-pkg-share, dirname, filename,
anon, eval (a safe subset of Python: literals, arithmetic, comparisons, boolean logic, `x if c
else y`, math functions), not, and, or, equals, not-equals.
"""

from __future__ import annotations

import ast
import math
import operator
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dexh2r_core.paths import PackageNotFoundError, share_dir


class SubstitutionError(ValueError):
    """A substitution that cannot be parsed or resolved; the caller adds file and line."""


@dataclass(frozen=True)
class Subst:
    name: str
    args: tuple[tuple[Part, ...], ...]


Part = str | Subst
Template = tuple[Part, ...]


@dataclass
class SubstContext:
    """What substitutions can see: launch configurations, environment, the current file."""

    configs: Mapping[str, str]
    environ: Mapping[str, str]
    current_file: Path
    anon_names: dict[str, str] = field(default_factory=dict)
    warn: Callable[[str], None] = lambda _msg: None


# -- parsing -------------------------------------------------------------------------------------

_IDENT_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT_CHARS = _IDENT_START | set("0123456789_-")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def error(self, msg: str) -> SubstitutionError:
        return SubstitutionError(f"{msg} at column {self.pos + 1} of {self.text!r}")


def parse_template(text: str) -> Template:
    """Split an attribute value into literal text and substitutions."""
    reader = _Reader(text)
    return tuple(_parse_parts(reader, stop=""))


def has_substitutions(text: str) -> bool:
    return "$(" in text


def _parse_parts(reader: _Reader, stop: str) -> list[Part]:
    """Literal text and substitutions until a character in `stop` (not consumed)."""
    parts: list[Part] = []
    buf: list[str] = []
    while reader.pos < len(reader.text):
        ch = reader.peek()
        if ch == "\\" and reader.peek(2)[1:] in ("$", "'", '"', "(", ")", "\\"):
            buf.append(reader.peek(2)[1])
            reader.pos += 2
            continue
        if reader.peek(2) == "$(":
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_parse_subst(reader))
            continue
        if ch in stop:
            break
        buf.append(ch)
        reader.pos += 1
    if buf:
        parts.append("".join(buf))
    return parts


def _parse_subst(reader: _Reader) -> Subst:
    start = reader.pos
    reader.pos += 2  # "$("
    name_start = reader.pos
    while reader.pos < len(reader.text) and reader.peek() in _IDENT_CHARS:
        reader.pos += 1
    name = reader.text[name_start : reader.pos]
    if not name or name[0] not in _IDENT_START:
        reader.pos = start
        raise reader.error("expected a substitution name after '$('")
    args: list[tuple[Part, ...]] = []
    while True:
        ch = reader.peek()
        if ch == ")":
            reader.pos += 1
            return Subst(name, tuple(args))
        if ch == "":
            reader.pos = start
            raise reader.error(f"unclosed '$({name}'")
        if not ch.isspace():
            raise reader.error(f"expected ' ' or ')' in $({name} ...)")
        while reader.peek().isspace():
            reader.pos += 1
        if reader.peek() == ")":
            continue
        args.append(tuple(_parse_arg(reader)))


def _parse_arg(reader: _Reader) -> list[Part]:
    quote = reader.peek()
    if quote in ("'", '"'):
        reader.pos += 1
        parts = _parse_parts(reader, stop=quote)
        if reader.peek() != quote:
            raise reader.error(f"unclosed {quote}")
        reader.pos += 1
        return parts or [""]
    return _parse_parts(reader, stop=" \t\n)'\"")


# -- evaluation ----------------------------------------------------------------------------------


def evaluate(template: Template | str, ctx: SubstContext) -> str:
    if isinstance(template, str):
        template = parse_template(template)
    return "".join(p if isinstance(p, str) else _perform(p, ctx) for p in template)


def _n_args(s: Subst, lo: int, hi: int) -> None:
    if not lo <= len(s.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise SubstitutionError(f"$({s.name}) takes {want} argument(s), got {len(s.args)}")


def _to_bool(value: str, what: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise SubstitutionError(f"{what} must be true/false/1/0, got {value!r}")


def _perform(s: Subst, ctx: SubstContext) -> str:
    args = [evaluate(a, ctx) for a in s.args]
    name = s.name
    if name in ("var", "arg"):
        _n_args(s, 1, 2)
        if name == "arg":
            ctx.warn("$(arg x) is a dexh2r alias: ROS 2 launch only knows $(var x)")
        if args[0] in ctx.configs:
            return ctx.configs[args[0]]
        if len(args) == 2:
            return args[1]
        raise SubstitutionError(
            f"launch configuration '{args[0]}' is not set (declare it with <arg name=\"{args[0]}\" .../> "
            f"or <let>, or pass {args[0]}:=VALUE)"
        )
    if name == "env":
        _n_args(s, 1, 2)
        if args[0] in ctx.environ:
            return ctx.environ[args[0]]
        if len(args) == 2:
            return args[1]
        raise SubstitutionError(f"environment variable '{args[0]}' is not set (use $(env {args[0]} DEFAULT))")
    if name == "find-pkg-share":
        _n_args(s, 1, 1)
        try:
            return str(share_dir(args[0]))
        except PackageNotFoundError as exc:
            raise SubstitutionError(str(exc)) from None
    if name == "dirname":
        _n_args(s, 0, 0)
        return str(ctx.current_file.parent)
    if name == "filename":
        _n_args(s, 0, 0)
        return str(ctx.current_file)
    if name == "anon":
        _n_args(s, 1, 1)
        return ctx.anon_names.setdefault(args[0], f"{args[0]}_{secrets.token_hex(4)}")
    if name == "eval":
        _n_args(s, 1, 1)
        return str(safe_eval(args[0]))
    if name == "not":
        _n_args(s, 1, 1)
        return str(not _to_bool(args[0], "$(not) argument")).lower()
    if name in ("and", "or"):
        if len(args) < 2:
            raise SubstitutionError(f"$({name}) takes at least 2 arguments")
        values = [_to_bool(a, f"$({name}) argument") for a in args]
        return str(all(values) if name == "and" else any(values)).lower()
    if name in ("equals", "not-equals"):
        _n_args(s, 2, 2)
        same = args[0] == args[1]
        return str(same if name == "equals" else not same).lower()
    if name in _ROS2_ONLY:
        raise SubstitutionError(f"$({name}) is valid ROS 2 launch but not supported by dexh2r launch")
    import difflib

    close = difflib.get_close_matches(name, KNOWN_SUBSTITUTIONS, n=1)
    hint = f" (did you mean $({close[0]})?)" if close else ""
    raise SubstitutionError(f"unknown substitution $({name}){hint}; known: {', '.join(KNOWN_SUBSTITUTIONS)}")


KNOWN_SUBSTITUTIONS = (
    "var",
    "env",
    "find-pkg-share",
    "dirname",
    "filename",
    "anon",
    "eval",
    "not",
    "and",
    "or",
    "equals",
    "not-equals",
)
_ROS2_ONLY = {"find-pkg-prefix", "find-exec", "exec-in-pkg", "command", "file-content", "path-join", "if"}


# -- $(eval): a small, safe expression evaluator --------------------------------------------------

_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "len": len,
}
_MATH = {k: v for k, v in vars(math).items() if not k.startswith("_")}
# Guards against expressions that would take the launcher down (huge powers or strings).
_MAX_SIZE = 100_000


def safe_eval(expr: str) -> object:
    """Evaluate the `$(eval ...)` subset ros2 launch files use, without `eval()`."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise SubstitutionError(f"$(eval {expr!r}): {exc.msg}") from None
    return _eval_node(tree.body, expr)


def _eval_node(node: ast.AST, expr: str) -> object:
    def sub(n: ast.AST) -> object:
        return _eval_node(n, expr)

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id in _MATH:
            return _MATH[node.id]
        if node.id == "math":
            return math
        raise SubstitutionError(f"$(eval {expr!r}): unknown name '{node.id}'")
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math":
        if node.attr in _MATH:
            return _MATH[node.attr]
        raise SubstitutionError(f"$(eval {expr!r}): math has no '{node.attr}'")
    if isinstance(node, ast.UnaryOp):
        value = sub(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -value  # type: ignore[operator]
        if isinstance(node.op, ast.UAdd):
            return +value  # type: ignore[operator]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = sub(node.left), sub(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, int | float) and abs(right) > 1000:
            raise SubstitutionError(f"$(eval {expr!r}): exponent too large")
        if isinstance(node.op, ast.Mult) and any(isinstance(v, str | list | tuple) for v in (left, right)):
            count = right if isinstance(right, int) else left
            if isinstance(count, int) and count > _MAX_SIZE:
                raise SubstitutionError(f"$(eval {expr!r}): result too large")
        try:
            return _BINOPS[type(node.op)](left, right)
        except Exception as exc:
            raise SubstitutionError(f"$(eval {expr!r}): {exc}") from None
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: object = True
            for v in node.values:
                result = sub(v)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = sub(v)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = sub(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = sub(comp)
            if type(op) not in _CMPOPS:
                break
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        else:
            return True
    if isinstance(node, ast.IfExp):
        return sub(node.body) if sub(node.test) else sub(node.orelse)
    if isinstance(node, ast.Tuple | ast.List):
        items = [sub(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Call) and not node.keywords:
        func = node.func
        fn = None
        if isinstance(func, ast.Name) and func.id in _FUNCS:
            fn = _FUNCS[func.id]
        elif isinstance(func, ast.Name | ast.Attribute):
            candidate = sub(func)
            fn = candidate if callable(candidate) and candidate in _MATH.values() else None
        if fn is not None:
            try:
                return fn(*[sub(a) for a in node.args])
            except Exception as exc:
                raise SubstitutionError(f"$(eval {expr!r}): {exc}") from None
    raise SubstitutionError(
        f"$(eval {expr!r}): '{ast.unparse(node)}' is not allowed (literals, arithmetic, comparisons, "
        "and/or/not, x if c else y and math functions only)"
    )
