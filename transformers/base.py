"""What every mapper sees and returns, and how a source picks the mapper for an event.

* :class:`RawEvent` — one raw webhook as the ingress published it (body bytes + CloudEvents).
* :class:`Route` — the canonical object an event becomes, its pure mapper and optional enrichment.
* :class:`SkipEvent` — raised by a router or mapper for an event that is deliberately not mapped
  (unknown type, informational event): counted and skipped, not an error.
* :class:`contracts.ContractError` / ``pydantic.ValidationError`` — the record is broken: it goes
  to ``ledgerflow.dlq.transform`` with the reason.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from ledgerflow.contracts import CanonicalRecord, ContractError
from ledgerflow.contracts.events import EventAttributes

__all__ = [
    "Enrichers",
    "Mapper",
    "RawEvent",
    "Route",
    "Router",
    "SkipEvent",
    "as_date",
    "as_datetime",
    "as_decimal",
    "as_int",
    "as_object",
    "as_objects",
    "require",
    "shape_checked",
    "with_field_names",
]


class SkipEvent(Exception):  # noqa: N818 - it is a control signal, not an error
    """This event is deliberately not mapped; ``reason`` says why (kept in metrics and logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One raw webhook from ``ledgerflow.raw.<source>``.

    ``payload`` is the parsed JSON body; ``body`` the exact bytes received; ``event_type`` the
    source's own event name (``invoice.created``, ``payable.updated``…); ``object_hint`` the object
    named by the route (INGENIOUS, accessplanit) and ``method`` the HTTP method (accessplanit).
    """

    tenant: str
    source: str
    event_type: str
    payload: Any
    body: bytes
    attributes: EventAttributes
    object_hint: str | None = None
    method: str = "POST"
    enrichment: Mapping[str, Any] = field(default_factory=dict)


class Enrichers(Protocol):
    """Ports for enrichment; each returns the fetched JSON object or raises on failure."""

    def get(self, name: str) -> Any:
        """Return the enrichment client registered under ``name`` (e.g. ``ingenious``)."""


Mapper = Callable[[RawEvent], Sequence[CanonicalRecord]]
"""A pure mapper: raw event in, canonical records out; raises ContractError/ValidationError/SkipEvent."""

Enricher = Callable[[RawEvent, Enrichers], Awaitable[RawEvent]]
"""Fetches what the event only points to and returns the event with ``enrichment`` filled."""


@dataclass(frozen=True, slots=True)
class Route:
    """How one kind of event is turned into one canonical object type."""

    object_type: str
    mapper: Mapper
    enrich: Enricher | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mapper", shape_checked(self.mapper))


Router = Callable[[RawEvent], Route]
"""Picks the route for an event of one source; raises :class:`SkipEvent` for unknown types."""


def _kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages (``object``, ``array``, ``string``…)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float | Decimal):
        return "number"
    return type(value).__name__


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; ``{}`` for null or absent.

    Every mapper reads nested objects through this, so a sender putting an array or a string where
    the vendor's schema has an object gets a precise ``invalid-record`` reason.

    Raises:
        ContractError: ``value`` is present and not an object (names ``what`` and the type found).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContractError(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def as_objects(value: Any, what: str) -> list[dict[str, Any]]:
    """``value`` when it is a JSON array of objects; ``[]`` for null or absent.

    Raises:
        ContractError: ``value`` is not an array, or one of its elements is not an object
            (names ``what[index]``).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(f"{what} must be a JSON array, got {_kind(value)}")
    for index, element in enumerate(value):
        if not isinstance(element, dict):
            raise ContractError(f"{what}[{index}] must be a JSON object, got {_kind(element)}")
    return value


def as_int(value: Any, what: str) -> int:
    """A JSON integer, or a string of ASCII decimal digits, as ``int``.

    Raises:
        ContractError: anything else (booleans, fractions, non-ASCII digits such as ``²``, text).
    """
    if isinstance(value, bool):
        raise ContractError(f"{what} is not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isascii() and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ContractError(f"{what} is not an integer: {str(value)[:40]!r}")


class UnexpectedShapeError(ContractError):
    """A mapper met a shape its validation did not foresee (the safety net of :func:`shape_checked`)."""


_SHAPE_SURPRISES = (AttributeError, TypeError, KeyError, IndexError, ValueError, ArithmeticError, RecursionError)


def shape_checked(mapper: Mapper) -> Mapper:
    """``mapper`` with any Python error a surprising input shape causes turned into :class:`UnexpectedShapeError`.

    The mappers validate the shapes they read (:func:`require`, :func:`as_object`,
    :func:`as_objects`…); this is the safety net behind that validation, so no input, however
    broken, makes a mapper raise anything but ``ContractError``, ``pydantic.ValidationError`` or
    :class:`SkipEvent`. The message names the exception, its text and the mapper function and
    line where it happened, which is what the dead letter's reason carries. :class:`Route` applies
    it to every mapper.
    """
    if getattr(mapper, "__shape_checked__", False):
        return mapper

    def checked(event: RawEvent) -> Sequence[CanonicalRecord]:
        try:
            return mapper(event)
        except (ContractError, SkipEvent, ValidationError):
            raise
        except _SHAPE_SURPRISES as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{frame.name} ({Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno})"
            raise UnexpectedShapeError(
                f"{event.source} {event.event_type}: unexpected payload shape: {type(exc).__name__}: "
                f"{str(exc)[:300]} in {where}"
            ) from exc

    checked.__shape_checked__ = True  # type: ignore[attr-defined]
    checked.__name__ = getattr(mapper, "__name__", "mapper")
    checked.__doc__ = mapper.__doc__
    checked.__wrapped__ = mapper  # type: ignore[attr-defined]
    return checked


def require(mapping: Any, *path: str | int) -> Any:
    """``mapping[path[0]][path[1]]…``, raising :class:`ContractError` naming the missing path."""
    node = mapping
    for i, key in enumerate(path):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            dotted = ".".join(str(p) for p in path[: i + 1])
            raise ContractError(f"required field {dotted} is missing") from None
        if node is None:
            raise ContractError(f"required field {'.'.join(str(p) for p in path[: i + 1])} is null")
    return node


def as_decimal(value: Any, what: str) -> Decimal:
    """A JSON number or numeric string as ``Decimal`` (floats via ``str`` so no binary noise).

    Raises:
        ContractError: when ``value`` is not a finite number.

    """
    if isinstance(value, bool) or value is None:
        raise ContractError(f"{what} is not a number: {value!r}")
    try:
        result = Decimal(str(value)) if isinstance(value, float | int) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ContractError(f"{what} is not a number: {value!r}") from None
    if not result.is_finite():
        raise ContractError(f"{what} is not a finite number: {value!r}")
    return result


def as_datetime(value: Any, what: str) -> datetime:
    """An ISO 8601 timestamp; naive values are taken as UTC.

    Raises:
        ContractError: when it does not parse.

    """
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ContractError(f"{what} is not an ISO 8601 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_date(value: Any, what: str) -> date:
    """An ISO date, or the calendar date of an ISO timestamp as the source wrote it.

    Mercoa sends dates as midnight UTC timestamps (``2021-01-31T00:00:00Z``): the date part is the
    accounting date; it is not shifted into any time zone.

    Raises:
        ContractError: when it does not parse.

    """
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ContractError(f"{what} is not an ISO date: {value!r}") from None


def with_field_names(node: dict[str, Any], names: Mapping[str, Any] | None) -> dict[str, Any]:
    """``node`` with the fields a mapper reads filled from a tenant's own spelling of them.

    For sources whose payload reference is not public (INGENIOUS, accessplanit), the field names a
    mapper reads are partly *assumed*. A tenant whose payloads spell one differently configures
    ``options.field_names: {<name the mapper reads>: <name in the payload>}`` instead of sending
    every record to the DLQ. A field already present under the mapper's name wins; nothing is
    invented: an absent field stays absent.
    """
    if not names:
        return node
    out = dict(node)
    for name, alias in names.items():
        if name not in out and isinstance(alias, str) and alias in out:
            out[name] = out[alias]
    return out
