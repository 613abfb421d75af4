"""Prometheus' alert templates: the part of Go's text/template that rule files use, with
Prometheus' functions, so that annotations written for Prometheus render the same here.

No well-kept Python library implements Go templates, so this is a small interpreter of the
language as documented (golang.org/pkg/text/template, prometheus.io "Template reference"):
- text and `{{ action }}` with `{{-`/`-}}` trimming and `{{/* comments */}}`;
- pipelines `a | f b` (the piped value is the last argument), parentheses, variables
  (`$x := ...`, `$x = ...`), fields `.Labels.host`, `$labels.host`;
- `if`/`else if`/`else`, `range` (with `$i, $e :=`), `with`, each closed by `end`;
- Go's builtins (and, or, not, len, index, print, printf, println, eq, ne, lt, le, gt, ge, html,
  js, urlquery) and Prometheus' (query, first, label, value, strvalue, args, reReplaceAll, match,
  title, toUpper, toLower, humanize, humanize1024, humanizeDuration, humanizePercentage,
  humanizeTimestamp, toTime, parseDuration, stripPort, stripDomain, safeHtml, sortByLabel,
  externalURL, pathPrefix, graphLink, tableLink).

A rule's template sees `$labels`, `$value`, `$externalLabels` and `$externalURL` (and the same
as `.Labels`, `.Value`, `.ExternalLabels`, `.ExternalURL`), as in Prometheus. A template that
cannot be parsed is a problem of the rules file; one that fails while rendering renders as the
error text, as Prometheus does, so a notification still goes out.
"""

from __future__ import annotations

import html
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.values import duration_seconds

PRELUDE_VARIABLES = ("labels", "value", "externalLabels", "externalURL")


class TemplateError(Exception):
    """A template that cannot be parsed or rendered; the message says where and why."""


@dataclass(frozen=True)
class Sample:
    """What `query` returns per series: `.Labels` and `.Value`, as Prometheus' sample type."""

    Labels: dict[str, str]
    Value: float


QueryFunction = Callable[[str], list[Sample]]


@dataclass
class Context:
    labels: dict[str, str]
    value: float | str
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    query: QueryFunction | None = None


# --- lexing the inside of an action --------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<raw>`[^`]*`)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<comma>,)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_FIELDS_AFTER = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(source: str) -> list[_Token]:
    result, position = [], 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise TemplateError(f"unexpected {source[position]!r} in {{{{ {source.strip()} }}}}")
        kind = match.lastgroup or ""
        text = match.group()
        position = match.end()
        if kind == "space":
            continue
        if kind in ("variable", "word", "close"):
            # `$x.field`, `word` is never followed by a field; `(...).field` is.
            after = _FIELDS_AFTER.match(source, position)
            if after is not None and kind != "word":
                result.append(_Token(kind, text))
                result.append(_Token("chain", after.group()))
                position = after.end()
                continue
        result.append(_Token(kind, text))
    return result


# --- the syntax tree --------------------------------------------------------------------------


@dataclass
class _Command:
    operands: list[Any]  # each: ("literal", v) | ("field", names) | ("var", name, names) | ("word", name)
    #                      | ("pipeline", _Pipeline, names)


@dataclass
class _Pipeline:
    commands: list[_Command]
    declare: list[str] = field(default_factory=list)
    assign: bool = False


@dataclass
class _If:
    branches: list[tuple[_Pipeline, list[Any]]]
    otherwise: list[Any]
    kind: str = "if"  # or "with"


@dataclass
class _Range:
    pipeline: _Pipeline
    body: list[Any]
    otherwise: list[Any]


def _unquote(token: _Token) -> str:
    if token.kind == "raw":
        return token.text[1:-1]
    try:
        value = json.loads(token.text) if token.kind == "string" else token.text[1:-1]
    except ValueError:
        value = token.text[1:-1].encode().decode("unicode_escape")
    return str(value)


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._at = 0

    def _peek(self) -> _Token | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self) -> _Token:
        token = self._peek()
        if token is None:
            raise TemplateError("the action ends too early")
        self._at += 1
        return token

    def pipeline(self, allow_declare: bool = True) -> _Pipeline:
        declare: list[str] = []
        assign = False
        if allow_declare:
            # `$x :=`, `$x =`, `$i, $e :=`
            names, at = [], self._at
            while at < len(self._tokens) and self._tokens[at].kind == "variable":
                names.append(self._tokens[at].text)
                at += 1
                if at < len(self._tokens) and self._tokens[at].kind == "comma":
                    at += 1
                    continue
                break
            if names and at < len(self._tokens) and self._tokens[at].kind in ("declare", "assign"):
                declare, assign = names, self._tokens[at].kind == "assign"
                self._at = at + 1
        commands = [self._command()]
        while (token := self._peek()) is not None and token.kind == "pipe":
            self._next()
            commands.append(self._command())
        return _Pipeline(commands, declare, assign)

    def _command(self) -> _Command:
        operands = []
        while (token := self._peek()) is not None and token.kind not in ("pipe", "close"):
            operands.append(self._operand())
        if not operands:
            raise TemplateError("missing value in a pipeline")
        return _Command(operands)

    def _chain(self) -> list[str]:
        token = self._peek()
        if token is not None and token.kind == "chain":
            self._next()
            return token.text[1:].split(".")
        return []

    def _operand(self) -> Any:
        token = self._next()
        if token.kind in ("string", "raw", "char"):
            return ("literal", _unquote(token))
        if token.kind == "number":
            text = token.text
            number = int(text, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text)
            return ("literal", number)
        if token.kind == "field":
            return ("field", [] if token.text == "." else token.text[1:].split("."))
        if token.kind == "variable":
            return ("var", token.text, self._chain())
        if token.kind == "word":
            if token.text in ("true", "false"):
                return ("literal", token.text == "true")
            if token.text == "nil":
                return ("literal", None)
            return ("word", token.text)
        if token.kind == "open":
            inner = self.pipeline(allow_declare=False)
            if self._next().kind != "close":
                raise TemplateError("unclosed parenthesis")
            return ("pipeline", inner, self._chain())
        raise TemplateError(f"unexpected {token.text!r}")

    def done(self) -> None:
        token = self._peek()
        if token is not None:
            raise TemplateError(f"unexpected {token.text!r} at the end of the action")


_ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.DOTALL)
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")


def _pieces(source: str) -> list[tuple[str, str]]:
    """("text", ...) and ("action", ...) in order, trim markers applied."""
    pieces: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        if text:
            pieces.append(("text", text))
        inner = match.group(2).strip()
        if not (inner.startswith("/*") and inner.endswith("*/")):
            pieces.append(("action", inner))
        position = match.end()
        if match.group(3):
            while position < len(source) and source[position].isspace():
                position += 1
    if "{{" in source[position:]:
        raise TemplateError("unclosed action: a '{{' without its '}}'")
    if source[position:]:
        pieces.append(("text", source[position:]))
    return pieces


class Template:
    """A parsed template; `render` gives its text for one alert."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._nodes = self._parse(_pieces(source))

    @staticmethod
    def _parse(pieces: list[tuple[str, str]]) -> list[Any]:
        at = 0

        def block(closers: tuple[str, ...]) -> tuple[list[Any], str]:
            nonlocal at
            nodes: list[Any] = []
            while at < len(pieces):
                kind, text = pieces[at]
                at += 1
                if kind == "text":
                    nodes.append(text)
                    continue
                word = text.split(None, 1)[0] if text else ""
                rest = text[len(word) :].strip()
                if word in ("end", "else"):
                    if word not in closers and not (word == "else" and "else" in closers):
                        raise TemplateError(f"unexpected {{{{ {text} }}}}")
                    return nodes, text
                if word in ("if", "with"):
                    nodes.append(conditional(word, rest))
                elif word == "range":
                    pipeline = _pipeline_of(rest)
                    body, closer = block(("end", "else"))
                    otherwise: list[Any] = []
                    if closer.startswith("else"):
                        otherwise, _ = block(("end",))
                    nodes.append(_Range(pipeline, body, otherwise))
                elif word in _KEYWORDS:
                    raise TemplateError(f"{{{{ {word} }}}} is not supported in alert templates")
                else:
                    nodes.append(_pipeline_of(text))
            if closers:
                raise TemplateError(f"missing {{{{ end }}}} (expected one of {', '.join(closers)})")
            return nodes, ""

        def conditional(word: str, condition: str) -> _If:
            branches = []
            pipeline = _pipeline_of(condition)
            while True:
                body, closer = block(("end", "else"))
                branches.append((pipeline, body))
                if closer == "end":
                    return _If(branches, [], word)
                follow = closer[len("else") :].strip()
                if follow.startswith(word + " ") or follow.startswith(word + "\t"):
                    pipeline = _pipeline_of(follow[len(word) :].strip())
                    continue
                if follow:
                    raise TemplateError(f"unexpected {{{{ {closer} }}}}")
                otherwise, _ = block(("end",))
                return _If(branches, otherwise, word)

        nodes, _ = block(())
        return nodes

    def render(self, context: Context) -> str:
        data = {
            "Labels": context.labels,
            "Value": context.value,
            "ExternalLabels": context.external_labels,
            "ExternalURL": context.external_url,
        }
        variables = {
            "$": data,
            "$labels": context.labels,
            "$value": context.value,
            "$externalLabels": context.external_labels,
            "$externalURL": context.external_url,
        }
        out: list[str] = []
        _Runner(context, variables).nodes(self._nodes, data, out)
        return "".join(out)


def _pipeline_of(text: str) -> _Pipeline:
    parser = _Parser(_tokens(text))
    pipeline = parser.pipeline()
    parser.done()
    return pipeline


def parse(source: str) -> Template:
    """The parsed template; TemplateError says what is wrong."""
    return Template(source)


def render(source: str, context: Context) -> str:
    """The template's text for `context`; a template that fails renders as its error, as
    Prometheus does ("<error expanding template: ...>")."""
    try:
        return parse(source).render(context)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


# --- evaluation -----------------------------------------------------------------------------


def _truth(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


def _field(value: Any, names: Sequence[str]) -> Any:
    for name in names:
        if isinstance(value, dict):
            value = value.get(name, "")
        elif hasattr(value, name) and not name.startswith("_"):
            value = getattr(value, name)
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def text_of(value: Any) -> str:
    """How Go's template prints a value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{text_of(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(text_of(v) for v in value) + "]"
    if isinstance(value, Sample):
        return f"{{{text_of(value.Labels)} {text_of(value.Value)}}}"
    return str(value)


def _go_float(value: float) -> str:
    """Go's %v of a float64: the shortest digits, in exponent form from 1e21 and below 1e-4."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{abs(int(exponent)):02d}"
    if abs(value) < 1e-4:
        return f"{value:e}".replace("e-0", "e-0")
    return text


class _Runner:
    def __init__(self, context: Context, variables: dict[str, Any]) -> None:
        self._context = context
        self._variables = variables
        self._functions = _functions(context)

    def nodes(self, nodes: list[Any], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Pipeline):
                value = self.pipeline(node, dot)
                if not node.declare:
                    out.append(text_of(value))
            elif isinstance(node, _If):
                saved = dict(self._variables)
                for condition, body in node.branches:
                    value = self.pipeline(condition, dot)
                    if _truth(value):
                        self.nodes(body, value if node.kind == "with" else dot, out)
                        break
                else:
                    self.nodes(node.otherwise, dot, out)
                self._restore(saved)
            elif isinstance(node, _Range):
                saved = dict(self._variables)
                value = self.pipeline(_Pipeline(node.pipeline.commands), dot)
                items = list(value.items()) if isinstance(value, dict) else list(enumerate(value or []))
                if isinstance(value, dict):
                    items = sorted(items)
                if not items:
                    self.nodes(node.otherwise, dot, out)
                for key, item in items:
                    names = node.pipeline.declare
                    if len(names) == 1:
                        self._variables[names[0]] = item
                    elif len(names) == 2:
                        self._variables[names[0]], self._variables[names[1]] = key, item
                    self.nodes(node.body, item, out)
                self._restore(saved)

    def _restore(self, saved: dict[str, Any]) -> None:
        """Variables declared inside a block end with it; assignments to outer ones stay."""
        for name in list(self._variables):
            if name not in saved:
                del self._variables[name]

    def pipeline(self, pipeline: _Pipeline, dot: Any) -> Any:
        value: Any = _NOTHING
        for command in pipeline.commands:
            value = self._command(command, dot, value)
        for name in pipeline.declare:
            if pipeline.assign and name not in self._variables:
                raise TemplateError(f"undefined variable: {name}")
            self._variables[name] = value
        return value

    def _command(self, command: _Command, dot: Any, piped: Any) -> Any:
        first = command.operands[0]
        if first[0] == "word":
            function = self._functions.get(first[1])
            if function is None:
                raise TemplateError(f'function "{first[1]}" not defined')
            args = [self._operand(o, dot) for o in command.operands[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return function(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError) as exc:
                raise TemplateError(f"error calling {first[1]}: {exc}") from None
        if len(command.operands) > 1 or piped is not _NOTHING:
            raise TemplateError("can't give arguments to a value that is not a function")
        return self._operand(first, dot)

    def _operand(self, operand: Any, dot: Any) -> Any:
        kind = operand[0]
        if kind == "literal":
            return operand[1]
        if kind == "field":
            return _field(dot, operand[1])
        if kind == "var":
            if operand[1] not in self._variables:
                raise TemplateError(f"undefined variable: {operand[1]}")
            return _field(self._variables[operand[1]], operand[2])
        if kind == "pipeline":
            return _field(self.pipeline(operand[1], dot), operand[2])
        if kind == "word":
            function = self._functions.get(operand[1])
            if function is None:
                raise TemplateError(f'function "{operand[1]}" not defined')
            return function()
        raise TemplateError("unexpected operand")


_NOTHING = object()


# --- functions ------------------------------------------------------------------------------


def _number(value: Any) -> float:
    if isinstance(value, Sample):
        return value.Value
    if isinstance(value, bool):
        raise TemplateError("a boolean is not a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise TemplateError(f"{value!r} is not a number") from None


def _g4(value: float) -> str:
    """Go's %.4g."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{exponent[0]}{abs(int(exponent)):02d}"
    return text


def humanize(raw: Any) -> str:
    value = _number(raw)
    if value == 0 or not math.isfinite(value):
        return _g4(value)
    prefix = ""
    if abs(value) >= 1:
        for step in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = step, value / 1000
        return _g4(value) + prefix
    for step in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = step, value * 1000
    return _g4(value) + prefix


def humanize1024(raw: Any) -> str:
    value = _number(raw)
    if abs(value) <= 1 or not math.isfinite(value):
        return _g4(value)
    prefix = ""
    for step in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix, value = step, value / 1024
    return _g4(value) + prefix


def humanize_duration(raw: Any) -> str:
    value = _number(raw)
    if not math.isfinite(value):
        return _g4(value)
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        value = abs(value)
        whole = int(value)
        seconds, minutes, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(value)}s"
    prefix = ""
    for step in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = step, value * 1000
    return f"{_g4(value)}{prefix}s"


def humanize_percentage(raw: Any) -> str:
    return _g4(_number(raw) * 100) + "%"


def humanize_timestamp(raw: Any) -> str:
    value = _number(raw)
    if not math.isfinite(value):
        return _g4(value)
    moment = datetime.fromtimestamp(value, UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "") + " +0000 UTC"


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def printf(template: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: %s %v %q %d %f %e %g %x %X %t %%."""
    remaining = list(args)
    out: list[str] = []
    position = 0
    for match in _VERB.finditer(template):
        out.append(template[position : match.start()])
        position = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if not remaining:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = remaining.pop(0)
        spec = flags + (width or "") + (f".{precision}" if precision is not None else "")
        if verb in ("s", "v"):
            out.append(format(text_of(arg), _spec(flags, width, precision, "s")))
        elif verb == "q":
            out.append(format(json.dumps(text_of(arg), ensure_ascii=False), _spec(flags, width, None, "s")))
        elif verb == "t":
            out.append(text_of(bool(arg)))
        elif verb in ("d", "x", "X", "o", "b"):
            number = _number(arg)
            if number != int(number):
                out.append(f"%!{verb}(float64={_go_float(number)})")
            else:
                out.append(("%" + spec + verb) % int(number))
        elif verb in ("f", "F", "e", "E", "g", "G"):
            number = _number(arg)
            if not math.isfinite(number):
                out.append(format(_go_float(number), _spec(flags, width, None, "s")))
            else:
                out.append(("%" + spec + verb) % number)
        else:
            out.append(f"%!{verb}({text_of(arg)})")
    out.append(template[position:])
    if remaining:
        out.append("%!(EXTRA " + ", ".join(text_of(a) for a in remaining) + ")")
    return "".join(out)


def _spec(flags: str, width: str | None, precision: str | None, kind: str) -> str:
    align = "<" if "-" in flags else ">"
    return f"{align}{width or ''}{'.' + precision if precision else ''}{kind}"


def re_replace_all(pattern: str, replacement: str, text: str) -> str:
    """Go's Regexp.ReplaceAllString: `$1`, `${1}` and `${name}` in the replacement expand."""
    expanded = re.sub(r"\\", r"\\\\", str(replacement))
    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: "\\g<" + (m.group(1) or m.group(2)) + ">", expanded)
    try:
        return re.sub(str(pattern), expanded, str(text))
    except (re.error, IndexError) as exc:
        raise TemplateError(f"reReplaceAll: {exc}") from None


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(left: Any, *rights: Any) -> bool:
        if not rights:
            raise TemplateError(f"{name} needs two arguments")
        if name == "eq":
            return any(_comparable(left) == _comparable(right) for right in rights)
        return test(_comparable(left), _comparable(rights[0]))

    return compare


def _comparable(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _functions(context: Context) -> dict[str, Callable[..., Any]]:
    def query(expression: str) -> list[Sample]:
        if context.query is None:
            raise TemplateError("query is not available here")
        return context.query(str(expression))

    def first(samples: Sequence[Any]) -> Any:
        if not samples:
            raise TemplateError("first() called on vector with no elements")
        return samples[0]

    def label(name: str, sample: Sample) -> str:
        return sample.Labels.get(name, "")

    def sort_by_label(name: str, samples: Sequence[Sample]) -> list[Sample]:
        return sorted(samples, key=lambda s: s.Labels.get(name, ""))

    def index(collection: Any, *keys: Any) -> Any:
        for key in keys:
            collection = collection.get(key, "") if isinstance(collection, dict) else collection[int(key)]
        return collection

    def and_(*values: Any) -> Any:
        for value in values:
            if not _truth(value):
                return value
        return values[-1]

    def or_(*values: Any) -> Any:
        for value in values:
            if _truth(value):
                return value
        return values[-1]

    def strip_port(host_port: str) -> str:
        text = str(host_port)
        if text.startswith("["):
            return text[1 : text.index("]")] if "]" in text else text
        return text.rsplit(":", 1)[0] if text.count(":") == 1 else text

    def strip_domain(host_port: str) -> str:
        text = str(host_port)
        if text.startswith("[") or re.fullmatch(r"[\d.:]+", text):
            return text
        host, colon, port = text.partition(":")
        return host.split(".", 1)[0] + colon + port

    def graph_link(expression: str) -> str:
        return "/graph?g0.expr=" + urllib.parse.quote(str(expression), safe="") + "&g0.tab=0"

    def table_link(expression: str) -> str:
        return "/graph?g0.expr=" + urllib.parse.quote(str(expression), safe="") + "&g0.tab=1"

    return {
        "and": and_,
        "or": or_,
        "not": lambda value: not _truth(value),
        "len": lambda value: len(value),
        "index": index,
        "print": lambda *values: "".join(text_of(v) for v in values),
        "println": lambda *values: " ".join(text_of(v) for v in values) + "\n",
        "printf": lambda template, *args: printf(str(template), *args),
        "eq": _compare("eq", lambda a, b: a == b),
        "ne": _compare("ne", lambda a, b: a != b),
        "lt": _compare("lt", lambda a, b: a < b),
        "le": _compare("le", lambda a, b: a <= b),
        "gt": _compare("gt", lambda a, b: a > b),
        "ge": _compare("ge", lambda a, b: a >= b),
        "html": lambda value: html.escape(text_of(value)),
        "js": lambda value: json.dumps(text_of(value))[1:-1],
        "urlquery": lambda *values: urllib.parse.quote_plus("".join(text_of(v) for v in values)),
        "query": query,
        "first": first,
        "label": label,
        "value": lambda sample: sample.Value,
        "strvalue": lambda sample: sample.Labels.get("__value__", ""),
        "args": lambda *values: {f"arg{i}": v for i, v in enumerate(values)},
        "reReplaceAll": re_replace_all,
        "match": lambda pattern, text: re.search(str(pattern), str(text)) is not None,
        "title": lambda text: re.sub(r"\b\w", lambda m: m.group().upper(), str(text)),
        "toUpper": lambda text: str(text).upper(),
        "toLower": lambda text: str(text).lower(),
        "humanize": humanize,
        "humanize1024": humanize1024,
        "humanizeDuration": humanize_duration,
        "humanizePercentage": humanize_percentage,
        "humanizeTimestamp": humanize_timestamp,
        "toTime": lambda value: datetime.fromtimestamp(_number(value), UTC),
        "parseDuration": lambda text: duration_seconds(str(text)),
        "stripPort": strip_port,
        "stripDomain": strip_domain,
        "safeHtml": lambda text: str(text),
        "sortByLabel": sort_by_label,
        "externalURL": lambda: context.external_url,
        "pathPrefix": lambda: urllib.parse.urlparse(context.external_url).path.rstrip("/"),
        "graphLink": graph_link,
        "tableLink": table_link,
    }


FUNCTION_NAMES = frozenset(_functions(Context({}, 0.0)))


def _names(nodes: list[Any]) -> tuple[list[str], list[str], set[str]]:
    """Every function name a parsed template calls, every variable it reads, and those it declares."""
    found: list[str] = []
    read: list[str] = []
    declared: set[str] = {"$", *(f"${name}" for name in PRELUDE_VARIABLES)}

    def pipeline(p: _Pipeline) -> None:
        for command in p.commands:
            for operand in command.operands:
                if operand[0] == "word":
                    found.append(operand[1])
                elif operand[0] == "var":
                    read.append(operand[1])
                elif operand[0] == "pipeline":
                    pipeline(operand[1])
        declared.update(p.declare)

    def walk(items: list[Any]) -> None:
        for node in items:
            if isinstance(node, _Pipeline):
                pipeline(node)
            elif isinstance(node, _If):
                for condition, body in node.branches:
                    pipeline(condition)
                    walk(body)
                walk(node.otherwise)
            elif isinstance(node, _Range):
                pipeline(node.pipeline)
                walk(node.body)
                walk(node.otherwise)

    walk(nodes)
    return found, read, declared


def check(source: str) -> str | None:
    """Why the template cannot be parsed, or None when it can (rendering may still fail on data,
    which then shows in the text, as in Prometheus). Calling an unknown function is a parse
    error, as in Go."""
    try:
        template = parse(source)
    except TemplateError as exc:
        return str(exc)
    functions, variables, declared = _names(template._nodes)
    for word in functions:
        if word not in FUNCTION_NAMES:
            return f'function "{word}" not defined'
    for variable in variables:
        if variable not in declared:
            return f"undefined variable: {variable}"
    return None
