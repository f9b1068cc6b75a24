"""Reading a mapping file and checking it against the canonical contracts before any event arrives.

A mapping file is YAML (see ``docs/mappings.md``)::

    source: standardwebhooks          # the ledgerflow source whose events it maps
    lookups:                          # optional tables for lookup(table, key) / `lookup:`
      gl_accounts: {materials: "5000", labour: "5100"}
    events:
      expense.approved:               # the source's event type; shell-style patterns allowed (bill.*)
        object: bill                  # canonical object type (ledgerflow.bill.v1)
        fields:
          source_id: data.id                          # a JMESPath expression over the event body
          vendor.name: data.supplier.name             # dotted paths fill nested objects
          currency: {expr: data.currency, default: USD}
          memo: {value: "Imported from FieldOps"}     # a constant
          line_items:
            each: data.lines                          # one line per array element (@ = the element)
            fields:
              amount: net
              gl_account.accounting_custom_id: {expr: category, lookup: gl_accounts}
      expense.draft: {skip: drafts are not booked}

Every problem found is reported as ``FILE:LINE: message`` (:class:`MappingError`): an unknown
object type, an unknown field of the model (at any depth), a field ledgerflow fills itself, a
constant, default or lookup value of the wrong type for its field, a required field no rule fills,
an expression that does not parse, or a lookup table that does not exist.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
import yaml
from jmespath.parser import ParsedResult
from pydantic import BaseModel, TypeAdapter, ValidationError

from ledgerflow.contracts import OBJECT_MODELS, CanonicalRecord

__all__ = [
    "ENGINE_FIELDS",
    "EventRule",
    "FieldRule",
    "ListRule",
    "MappingError",
    "MappingFile",
    "load_mapping",
    "parse_mapping",
]

ENGINE_FIELDS = frozenset({"canonical_id", "tenant", "source", "source_event"})
"""Fields ledgerflow fills from the route, never from the body (a sender cannot claim another tenant)."""

_UNSET: Any = object()


class MappingError(ValueError):
    """A mapping file does not fit the contracts; ``problems`` are ``FILE:LINE: message`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one (possibly nested, dotted) field is filled: an expression or a constant, a default, a lookup."""

    path: tuple[str, ...]
    line: int
    expr: ParsedResult | None = None
    constant: Any = _UNSET
    default: Any = _UNSET
    lookup: str | None = None
    as_text: bool = False
    """The field is a string: numbers the expression yields are written as their decimal text."""

    @property
    def has_constant(self) -> bool:
        """Whether the rule is a constant (``value:``) rather than an expression."""
        return self.constant is not _UNSET

    @property
    def has_default(self) -> bool:
        """Whether a ``default:`` is given for when the expression yields null."""
        return self.default is not _UNSET


@dataclass(frozen=True, slots=True)
class ListRule:
    """A list of sub-objects (``line_items``, ``lines``, ``applied_to``…): one per element of ``each``."""

    field: str
    line: int
    each: ParsedResult
    item_model: type[BaseModel]
    rules: tuple[FieldRule | ListRule, ...]
    number_lines: bool
    """The item model has ``line_number``: when no rule fills it, it is the 1-based position."""


@dataclass(frozen=True, slots=True)
class EventRule:
    """The rule for the events whose type matches :attr:`pattern`."""

    pattern: str
    line: int
    model: type[CanonicalRecord] | None
    record: ParsedResult | None = None
    rules: tuple[FieldRule | ListRule, ...] = ()
    skip: str | None = None


@dataclass(frozen=True, slots=True)
class MappingFile:
    """A validated mapping file: the events it maps, in file order (the first matching pattern wins)."""

    path: str
    source: str
    events: tuple[EventRule, ...]
    lookups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rule_for(self, event_type: str) -> EventRule | None:
        """The first event rule whose pattern matches ``event_type`` exactly or as a shell pattern, else None."""
        for rule in self.events:
            if rule.pattern == event_type:
                return rule
        return next((rule for rule in self.events if fnmatchcase(event_type, rule.pattern)), None)


class _LineDict(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_LineDict` and which refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {result.lines[key]})", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _exact(value: Any) -> Any:
    """YAML floats as exact decimals (``0.1`` stays ``0.1``), recursively."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``X | None`` / ``Optional[X]`` / ``Annotated[X, …]``; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _as_model(annotation: Any) -> type[BaseModel] | None:
    inner = _unwrap(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    inner = _unwrap(annotation)
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner) or (None,)
        return _as_model(item)
    return None


def _is_text(annotation: Any) -> bool:
    return _unwrap(annotation) is str


class _Checker:
    """Builds the rules of one file, collecting every problem with its line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []
        self.lookups: dict[str, dict[str, Any]] = {}

    def problem(self, line: int, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {message}")

    def compile(self, text: Any, line: int, what: str) -> ParsedResult | None:
        if not isinstance(text, str) or not text.strip():
            self.problem(line, f"{what}: an expression must be a non-empty string, not {text!r}")
            return None
        try:
            return jmespath.compile(text)
        except jmespath.exceptions.JMESPathError as exc:
            detail = str(exc).replace("\n", " ")
            self.problem(line, f"{what}: expression {text!r} does not parse: {detail}")
            return None

    def check_value(self, annotation: Any, value: Any, line: int, what: str) -> None:
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            reason = "; ".join(err["msg"] for err in exc.errors(include_url=False))
            self.problem(line, f"{what}: wrong type for the field ({reason}): {value!r}")

    def resolve(self, model: type[BaseModel], dotted: str, line: int) -> tuple[Any, type[BaseModel]] | None:
        """The annotation of ``dotted`` in ``model`` and the model holding its last segment."""
        current: type[BaseModel] = model
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            info = current.model_fields.get(part)
            if info is None:
                known = ", ".join(sorted(current.model_fields))
                where = ".".join(parts[:i]) or getattr(model, "object_type", model.__name__)
                self.problem(line, f"unknown field {dotted!r}: {where} has no field {part!r} (fields: {known})")
                return None
            if i == len(parts) - 1:
                return info.annotation, current
            nested = _as_model(info.annotation)
            if nested is None:
                self.problem(line, f"field {'.'.join(parts[: i + 1])!r} is not an object, so {dotted!r} cannot be set")
                return None
            current = nested
        return None  # pragma: no cover - the loop always returns

    def field_rule(self, model: type[BaseModel], dotted: str, spec: Any, line: int) -> FieldRule | ListRule | None:
        resolved = self.resolve(model, dotted, line)
        if resolved is None:
            return None
        annotation, _ = resolved
        path = tuple(dotted.split("."))
        item_model = _list_item_model(annotation) if len(path) == 1 else None
        if isinstance(spec, dict) and "each" in spec:
            return self.list_rule(dotted, annotation, item_model, spec, line)
        if isinstance(spec, str):
            expr = self.compile(spec, line, dotted)
            return FieldRule(path, line, expr=expr, as_text=_is_text(annotation)) if expr else None
        if not isinstance(spec, dict):
            self.problem(line, f"{dotted}: give an expression string or {{expr|value, default, lookup}}, not {spec!r}")
            return None
        unknown = set(spec) - {"expr", "value", "default", "lookup"}
        if unknown:
            self.problem(line, f"{dotted}: unknown keys {sorted(unknown)} (use expr, value, default, lookup, each)")
        if ("expr" in spec) == ("value" in spec):
            self.problem(line, f"{dotted}: give exactly one of expr or value")
            return None
        expr = self.compile(spec["expr"], line, dotted) if "expr" in spec else None
        if "expr" in spec and expr is None:
            return None
        lookup = spec.get("lookup")
        if lookup is not None:
            if lookup not in self.lookups:
                self.problem(line, f"{dotted}: no lookup table {lookup!r} (tables: {', '.join(sorted(self.lookups))})")
            else:
                for key, value in self.lookups[lookup].items():
                    self.check_value(annotation, value, line, f"{dotted}: lookup {lookup}[{key!r}]")
        constant = _exact(spec["value"]) if "value" in spec else _UNSET
        if constant is not _UNSET and lookup is None:
            self.check_value(annotation, constant, line, f"{dotted}: value")
        default = _exact(spec["default"]) if "default" in spec else _UNSET
        if default is not _UNSET:
            self.check_value(annotation, default, line, f"{dotted}: default")
        return FieldRule(
            path,
            line,
            expr=expr,
            constant=constant,
            default=default,
            lookup=lookup,
            as_text=_is_text(annotation),
        )

    def list_rule(
        self, dotted: str, annotation: Any, item_model: type[BaseModel] | None, spec: dict[str, Any], line: int
    ) -> ListRule | None:
        if item_model is None:
            self.problem(line, f"{dotted}: `each` builds a list of objects, but {dotted} is {annotation}")
            return None
        unknown = set(spec) - {"each", "fields"}
        if unknown:
            self.problem(line, f"{dotted}: unknown keys {sorted(unknown)} (a list takes each and fields)")
        each = self.compile(spec["each"], line, f"{dotted}.each")
        fields = spec.get("fields")
        if not isinstance(fields, dict) or not fields:
            self.problem(line, f"{dotted}: `fields` must map the fields of each {item_model.__name__}")
            return None
        rules = self.rules(item_model, fields, skip_required={"line_number"}, line=line)
        if each is None:
            return None
        numbered = "line_number" in item_model.model_fields and not any(
            isinstance(r, FieldRule) and r.path == ("line_number",) for r in rules
        )
        return ListRule(dotted, line, each, item_model, rules, numbered)

    def rules(
        self, model: type[BaseModel], fields: dict[str, Any], *, skip_required: set[str], line: int, top: bool = False
    ) -> tuple[FieldRule | ListRule, ...]:
        lines = getattr(fields, "lines", {})
        built: list[FieldRule | ListRule] = []
        for dotted, spec in fields.items():
            key_line = lines.get(dotted, line)
            if not isinstance(dotted, str):
                self.problem(key_line, f"field names are strings, not {dotted!r}")
                continue
            if top and dotted.split(".")[0] in ENGINE_FIELDS:
                self.problem(key_line, f"{dotted!r} is filled by ledgerflow from the route; remove it from the mapping")
                continue
            rule = self.field_rule(model, dotted, spec, key_line)
            if rule is not None:
                built.append(rule)
        self.required(model, built, skip_required, line)
        return tuple(built)

    def required(
        self, model: type[BaseModel], rules: list[FieldRule | ListRule], skip: set[str], line: int, prefix: str = ""
    ) -> None:
        covered = {r.path[0] if isinstance(r, FieldRule) else r.field for r in rules}
        for name, info in model.model_fields.items():
            if info.is_required() and name not in covered and name not in skip:
                what = getattr(model, "object_type", model.__name__)
                self.problem(line, f"missing required field {prefix}{name!r} of {what}: no rule fills it")
        nested: dict[str, list[FieldRule | ListRule]] = {}
        for rule in rules:
            if isinstance(rule, FieldRule) and len(rule.path) > 1:
                nested.setdefault(rule.path[0], []).append(
                    FieldRule(rule.path[1:], rule.line, expr=rule.expr, constant=rule.constant)
                )
        for name, subrules in nested.items():
            sub_model = _as_model(model.model_fields[name].annotation)
            if sub_model is not None and not any(isinstance(r, FieldRule) and r.path == (name,) for r in rules):
                self.required(sub_model, subrules, set(), subrules[0].line, prefix=f"{prefix}{name}.")

    def event_rule(self, pattern: str, spec: Any, line: int) -> EventRule | None:
        if not isinstance(spec, dict):
            self.problem(line, f"event {pattern!r}: expected a mapping with object and fields, or skip")
            return None
        lines = getattr(spec, "lines", {})
        if "skip" in spec:
            extra = set(spec) - {"skip"}
            if extra:
                self.problem(line, f"event {pattern!r}: skip takes no other keys ({sorted(extra)})")
            return EventRule(pattern, line, None, skip=str(spec["skip"]))
        unknown = set(spec) - {"object", "record", "fields"}
        if unknown:
            self.problem(line, f"event {pattern!r}: unknown keys {sorted(unknown)} (use object, record, fields, skip)")
        object_type = spec.get("object")
        model = OBJECT_MODELS.get(object_type) if isinstance(object_type, str) else None
        if model is None:
            known = ", ".join(sorted(OBJECT_MODELS))
            self.problem(lines.get("object", line), f"event {pattern!r}: unknown object {object_type!r} ({known})")
            return None
        record = self.compile(spec["record"], lines.get("record", line), "record") if "record" in spec else None
        fields = spec.get("fields", {})
        if not isinstance(fields, dict):
            self.problem(lines.get("fields", line), f"event {pattern!r}: fields must be a mapping")
            return None
        if not fields and "record" not in spec:
            self.problem(line, f"event {pattern!r}: give fields (and/or a record expression)")
            return None
        # With a `record` expression the body supplies the fields: required ones are checked per event.
        skip = set(model.model_fields) if "record" in spec else set(ENGINE_FIELDS)
        rules = self.rules(model, fields, skip_required=skip, line=lines.get("fields", line), top=True)
        return EventRule(pattern, line, model, record=record, rules=rules)


def parse_mapping(text: str, path: str = "<mapping>") -> MappingFile:
    """Parse and check a mapping file's text; ``path`` is what error messages call it.

    Raises:
        MappingError: with every problem found, each ``PATH:LINE: message``.
    """
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise MappingError([f"{path}:{line}: not valid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise MappingError([f"{path}:0: not valid YAML: {exc}"]) from None
    checker = _Checker(path)
    if not isinstance(raw, dict):
        raise MappingError([f"{path}:1: a mapping file is a YAML mapping with source and events"])
    lines = getattr(raw, "lines", {})
    unknown = set(raw) - {"source", "lookups", "events", "description"}
    for key in sorted(unknown, key=str):
        checker.problem(lines.get(key, 1), f"unknown top-level key {key!r} (use source, description, lookups, events)")
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        checker.problem(lines.get("source", 1), "source must name the ledgerflow source whose events are mapped")
        source = ""
    lookups = raw.get("lookups", {}) or {}
    if not isinstance(lookups, dict) or not all(isinstance(t, dict) for t in lookups.values()):
        checker.problem(lines.get("lookups", 1), "lookups maps table names to {key: value} tables")
    else:
        checker.lookups = {str(name): {str(k): _exact(v) for k, v in table.items()} for name, table in lookups.items()}
    events = raw.get("events")
    rules: list[EventRule] = []
    if not isinstance(events, dict) or not events:
        checker.problem(lines.get("events", 1), "events must map event types to rules")
    else:
        event_lines = getattr(events, "lines", {})
        for pattern, spec in events.items():
            rule = checker.event_rule(str(pattern), spec, event_lines.get(pattern, 1))
            if rule is not None:
                rules.append(rule)
    if checker.problems:
        raise MappingError(checker.problems)
    return MappingFile(path=path, source=source, events=tuple(rules), lookups=checker.lookups)


def load_mapping(path: Path) -> MappingFile:
    """Read and check the mapping file at ``path``.

    Raises:
        MappingError: the file cannot be read, is not YAML, or does not fit the contracts
            (every problem as ``PATH:LINE: message``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([f"{path}:0: cannot read the mapping file: {exc.strerror}"]) from None
    return parse_mapping(text, str(path))
