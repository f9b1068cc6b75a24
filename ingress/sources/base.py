"""What the ingress needs to know of a source: how it proves who it is and how its envelope looks.

A :class:`SourceSpec` verifies credentials on the *raw bytes* before anything is parsed
(:meth:`SourceSpec.verify`), then reads just enough of the parsed envelope to name the event
and its record (:meth:`SourceSpec.describe`). Neither may touch the network or keep state.
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import SecretStr

from ledgerflow.core.settings import SourceConfig

__all__ = [
    "MAX_ID_LENGTH",
    "BadEnvelope",
    "Envelope",
    "SourceSpec",
    "Unauthorized",
    "WebhookRequest",
    "any_secret_matches",
    "as_record_id",
    "is_unix_seconds",
    "require_object",
]

MAX_ID_LENGTH = 256
"""Longest record id, event type or delivery id accepted (they become Kafka keys and headers)."""


class Unauthorized(Exception):  # noqa: N818 - maps to HTTP 401
    """Credentials missing, wrong, or out of their time window; the message says which (no secret in it)."""


class BadEnvelope(Exception):  # noqa: N818 - maps to HTTP 400
    """The body is JSON but not the source's envelope; the message names the missing/odd field."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The parts of an HTTP request a source may look at.

    ``headers`` keys are lower case; ``body`` is exactly the bytes received.
    """

    method: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    object: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the ingress publishes about an event.

    ``event_type`` is the source's own event name (``invoice.created``); ``record_id`` the source's
    record id (the Kafka key, so one record's events stay in order); ``delivery_id`` the source's
    id of this delivery when it sends one (then it is the event id), else None.
    """

    event_type: str
    record_id: str
    delivery_id: str | None = None
    version: str | None = None
    """The source's stamp of this version of the record (accessplanit ``DateUpdated``), when it has one:
    the event id is then :func:`~ledgerflow.contracts.events.record_version_id`, the id a poll of the
    same version gets."""


def any_secret_matches(presented: str | bytes, secrets: Iterable[SecretStr]) -> bool:
    """Whether ``presented`` equals any configured secret, each compared in constant time.

    Every secret is compared (no early exit), so timing does not reveal which one matched.
    """
    given = presented.encode() if isinstance(presented, str) else presented
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.get_secret_value().encode())
    return matched


def as_record_id(value: Any, what: str) -> str:
    """``value`` as a record id: a non-empty string or an integer, at most :data:`MAX_ID_LENGTH` characters.

    Raises:
        BadEnvelope: when ``value`` is missing, empty, not a string/integer, or too long (``what`` names it).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadEnvelope(f"{what} must be a string or an integer")
    text = str(value) if isinstance(value, str) else format(value, "d")
    if not text.strip():
        raise BadEnvelope(f"{what} is empty")
    if len(text) > MAX_ID_LENGTH:
        raise BadEnvelope(f"{what} is longer than {MAX_ID_LENGTH} characters")
    return text


def is_unix_seconds(text: str) -> bool:
    """Whether ``text`` is a Unix timestamp in seconds as senders write it: 1 to 12 ASCII digits.

    ``str.isdigit`` alone also accepts superscripts and other Unicode digits (``"¹⁷⁰⁰"``), which
    ``int()`` then refuses: a signed-timestamp header with them must be a 401, not a crash.
    """
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def require_object(payload: Any, source: str) -> dict[str, Any]:
    """``payload`` when it is a JSON object.

    Raises:
        BadEnvelope: when it is an array, string, number, boolean or null.
    """
    if not isinstance(payload, dict):
        raise BadEnvelope(f"a {source} webhook body is a JSON object, not {type(payload).__name__}")
    return payload


class SourceSpec(ABC):
    """One webhook source. Subclasses set :attr:`name` and, where they apply, :attr:`objects`/:attr:`methods`."""

    name: ClassVar[str]
    objects: ClassVar[frozenset[str] | None] = None
    """Route objects accepted (``/webhooks/{tenant}/{source}/{object}``); None = no object segment."""
    methods: ClassVar[frozenset[str]] = frozenset({"POST"})
    """HTTP methods the source sends."""
    credential_headers: ClassVar[tuple[str, ...]] = ()
    """Headers carrying credentials, for the OpenAPI document."""
    credential_query: ClassVar[tuple[str, ...]] = ()
    """Query parameters that may carry credentials (``?token=``), for the OpenAPI document."""
    extra_headers: ClassVar[tuple[str, ...]] = ()
    """Other headers the source sends and the ingress reads (timestamps, ids, versions), for the OpenAPI document."""
    success_status: ClassVar[int] = 202
    """Status of an accepted webhook, as the source's vendor documents it (202 Accepted where it says "2xx")."""

    @abstractmethod
    def verify(self, request: WebhookRequest, config: SourceConfig) -> None:
        """Check the credentials of ``request`` against ``config`` on the raw bytes.

        Raises:
            Unauthorized: with a reason that names no secret.
        """

    @abstractmethod
    def describe(self, payload: Any, request: WebhookRequest) -> Envelope:
        """Read the event type and record id from the parsed JSON ``payload``.

        Raises:
            BadEnvelope: when the payload is not this source's envelope.
        """

    def describe_with(self, payload: Any, request: WebhookRequest, config: SourceConfig) -> Envelope:
        """:meth:`describe` for a source whose envelope the tenant describes in ``config`` (default: ignores it).

        Raises:
            BadEnvelope: when the payload is not this source's envelope.
        """
        return self.describe(payload, request)

    def extensions(self, request: WebhookRequest) -> dict[str, str]:
        """Extra CloudEvents extension attributes from ``request`` (name → value, published as ``ce_<name>``).

        Names are lower-case alphanumerics (CloudEvents attribute naming). Default: none.
        """
        return {}
