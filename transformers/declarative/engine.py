"""Running a mapping file: one raw event in, one canonical record out (or a skip, or a contract error).

The event body is parsed again from its exact bytes with every JSON number as ``Decimal``, so no
amount passes through a float. For the matching :class:`~.loader.EventRule`: the ``record``
expression (if any) gives the starting object, then each field rule is evaluated and written at its
(dotted) path; a null result leaves the field to its ``default`` (else to the model's default).
ledgerflow then sets ``tenant``, ``source``, ``source_event`` and ``canonical_id``
(``<source>:<object>:<source_id>``) and validates the record against its contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import jmespath
import jmespath.exceptions

from ledgerflow.contracts import CanonicalRecord, ContractError, canonical_id
from ledgerflow.core.settings import Routing
from ledgerflow.transformers.base import RawEvent, Route, Router, SkipEvent
from ledgerflow.transformers.declarative.functions import MappingFunctions
from ledgerflow.transformers.declarative.loader import (
    ENGINE_FIELDS,
    EventRule,
    FieldRule,
    ListRule,
    MappingError,
    MappingFile,
    load_mapping,
)

__all__ = ["apply_rule", "map_payload", "mapping_route", "parse_body", "tenant_routers"]


def parse_body(body: bytes) -> Any:
    """The JSON body with every number as an exact ``Decimal`` (integers stay ``int``).

    Raises:
        ContractError: the body is not JSON.
    """
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise ContractError(f"the event body is not JSON: {exc}") from None


def _exact(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _search(rule_expr: Any, data: Any, options: jmespath.Options, what: str) -> Any:
    try:
        return _exact(rule_expr.search(data, options=options))
    except jmespath.exceptions.JMESPathError as exc:
        raise ContractError(f"{what}: {exc}".replace("\n", " ")) from None


def _field_value(
    rule: FieldRule, data: Any, options: jmespath.Options, lookups: Mapping[str, Mapping[str, Any]]
) -> Any:
    dotted = ".".join(rule.path)
    value = rule.constant if rule.has_constant else _search(rule.expr, data, options, dotted)
    if value is not None and rule.lookup is not None:
        key = format(value, "f") if isinstance(value, Decimal) else str(value)
        table = lookups[rule.lookup]
        if key in table:
            value = table[key]
        elif rule.has_default:
            value = rule.default
        else:
            raise ContractError(f"{dotted}: {key!r} is not in lookup table {rule.lookup!r} and no default is given")
    if value is None and rule.has_default:
        value = rule.default
    if rule.as_text and isinstance(value, int | Decimal) and not isinstance(value, bool):
        value = format(value, "d") if isinstance(value, int) else format(value, "f")
    return value


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _fill(
    target: dict[str, Any],
    rules: Sequence[FieldRule | ListRule],
    data: Any,
    options: jmespath.Options,
    lookups: Mapping[str, Mapping[str, Any]],
) -> None:
    for rule in rules:
        if isinstance(rule, ListRule):
            items = _search(rule.each, data, options, f"{rule.field}.each")
            if items is None:
                continue
            if not isinstance(items, list):
                raise ContractError(f"{rule.field}.each gave {type(items).__name__}, not a list")
            built = []
            for position, item in enumerate(items, start=1):
                entry: dict[str, Any] = {"line_number": position} if rule.number_lines else {}
                _fill(entry, rule.rules, item, options, lookups)
                built.append(entry)
            target[rule.field] = built
            continue
        value = _field_value(rule, data, options, lookups)
        if value is not None:
            _put(target, rule.path, value)


def apply_rule(
    mapping: MappingFile,
    rule: EventRule,
    payload: Any,
    *,
    tenant: str,
    source: str,
    event_type: str,
    settings: Mapping[str, Any] | None = None,
) -> CanonicalRecord:
    """Build and validate the canonical record ``rule`` makes of ``payload``.

    Args:
        mapping: the file the rule belongs to (its lookup tables).
        rule: a non-skip rule (``rule.model`` set).
        payload: the event body, numbers as ``Decimal`` (:func:`parse_body`).
        tenant: the tenant of the route (never taken from the body).
        source: the ledgerflow source of the route.
        event_type: the source's event type, written as ``source_event``.
        settings: the tenant's source options, read by ``setting(name)``.

    Raises:
        ContractError: an expression failed at run time, a lookup key is missing without default,
            the record expression is not an object, or the record has no ``source_id``.
        pydantic.ValidationError: the record does not satisfy its contract (type, required field,
            totals that do not reconcile…).
    """
    if rule.model is None:
        raise SkipEvent(rule.skip or f"{event_type} is skipped by {mapping.path}")
    options = jmespath.Options(custom_functions=MappingFunctions(mapping.lookups, settings or {}, payload))
    record: dict[str, Any] = {}
    if rule.record is not None:
        base = _search(rule.record, payload, options, "record")
        if not isinstance(base, dict):
            raise ContractError(f"record expression of {rule.pattern!r} gave {type(base).__name__}, not an object")
        record = {k: v for k, v in base.items() if k not in ENGINE_FIELDS}
    _fill(record, rule.rules, payload, options, mapping.lookups)
    source_id = record.get("source_id")
    if source_id is None or source_id == "":
        raise ContractError(f"{rule.model.object_type}: source_id is missing (mapping {mapping.path})")
    record["source_id"] = str(source_id)
    record.update(
        tenant=tenant,
        source=source,
        source_event=event_type,
        canonical_id=canonical_id(tenant, source, rule.model.object_type, str(source_id)),
    )
    return rule.model.model_validate(record)


def map_payload(
    mapping: MappingFile,
    payload: Any,
    *,
    event_type: str,
    tenant: str = "test",
    settings: Mapping[str, Any] | None = None,
) -> CanonicalRecord:
    """Map one event body with ``mapping`` (what ``ledgerflow mapping test`` runs).

    Raises:
        SkipEvent: no rule matches ``event_type``, or its rule says skip.
        ContractError, pydantic.ValidationError: as :func:`apply_rule`.
    """
    rule = mapping.rule_for(event_type)
    if rule is None:
        raise SkipEvent(f"event type {event_type!r} is not mapped by {mapping.path}")
    return apply_rule(
        mapping,
        rule,
        _exact(payload),
        tenant=tenant,
        source=mapping.source,
        event_type=event_type,
        settings=settings,
    )


def mapping_route(mapping: MappingFile, settings: Mapping[str, Any] | None = None) -> Router:
    """A transformer router (``RawEvent`` → :class:`Route`) that maps with ``mapping``.

    The router raises :class:`SkipEvent` for an event type no rule matches (counted and skipped
    by the worker) or whose rule says ``skip``.
    """

    def route(event: RawEvent) -> Route:
        rule = mapping.rule_for(event.event_type)
        if rule is None:
            raise SkipEvent(f"{event.source} event type {event.event_type!r} is not mapped by {mapping.path}")
        if rule.model is None:
            raise SkipEvent(rule.skip or f"{event.event_type} is skipped by {mapping.path}")

        def mapper(raw: RawEvent) -> list[CanonicalRecord]:
            payload = parse_body(raw.body) if raw.body else _exact(raw.payload)
            return [
                apply_rule(
                    mapping,
                    rule,
                    payload,
                    tenant=raw.tenant,
                    source=raw.source,
                    event_type=raw.event_type,
                    settings=settings,
                )
            ]

        return Route(rule.model.object_type, mapper)

    return route


def tenant_routers(routing: Routing) -> dict[tuple[str, str], Router]:
    """``(tenant, source)`` → router, for every tenant source whose routing entry names a ``mapping`` file.

    ``routing`` is the :class:`ledgerflow.core.settings.Routing`; the tenant's source ``options``
    are what ``setting(name)`` reads. Every file is loaded and checked here, at start-up.

    Raises:
        MappingError: a mapping file is missing or does not fit the contracts (all problems, with lines),
            or maps another source than the one it is configured for.
    """
    routers: dict[tuple[str, str], Router] = {}
    problems: list[str] = []
    for tenant_name, tenant in routing.tenants.items():
        for source_name, source in tenant.sources.items():
            if source.mapping is None:
                continue
            try:
                mapping = load_mapping(source.mapping)
            except MappingError as exc:
                problems += exc.problems
                continue
            if mapping.source != source_name:
                problems.append(
                    f"{source.mapping}:1: maps source {mapping.source!r}, but tenant {tenant_name!r} "
                    f"uses it for {source_name!r}"
                )
                continue
            routers[(tenant_name, source_name)] = mapping_route(mapping, source.options)
    if problems:
        raise MappingError(problems)
    return routers
