"""NetSuite connector: SuiteTalk REST record v1, upsert by external id.

Every write is ``PUT /services/rest/record/v1/<recordType>/eid:<externalId>`` ("creates or updates
… you do not need to be concerned whether the record already exists", Oracle help
section_156335203191; reference ``erp_apis.md`` §3.1, §3.3). The external id is derived from the
canonical id (:func:`ledgerflow.connectors.netsuite.mapping.external_id`), so a redelivery or a runtime retry
of ``handle()`` updates the same record instead of creating a second one: NetSuite's own
mechanism gives idempotency, no look-up is needed. NetSuite answers **204 No Content** with the
record URL in ``Location``; the internal id is parsed from it. A record the binder already knows
is updated with ``PATCH …/<recordType>/<internal id>`` (its external id may predate canonical ids
carrying the tenant).

Auth (``config.credentials``): Token-Based Auth (``account_id``, ``consumer_key``,
``consumer_secret``, ``token_id``, ``token_secret``; OAuth 1.0a HMAC-SHA256, see
:mod:`ledgerflow.connectors.netsuite.auth`) or OAuth 2.0 client credentials (``client_id``,
``client_secret``, optional ``token_url``; :class:`ledgerflow.core.outbound.oauth.ClientCredentialsManager`).

Limits: NetSuite governs *concurrency per account*, shared by every integration of the customer
(15 for the base service tier, +10 per SuiteCloud Plus licence; reference §3.3). Defaults take a
third of the base tier (``max_concurrency`` 5) and 300 requests per minute; override with
``options.max_concurrency`` / ``options.rate_limit_per_minute``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from ledgerflow.connectors.amounts import UnbookableAmountsError
from ledgerflow.connectors.base import (
    Booked,
    Connector,
    HandleContext,
    InvalidResponse,
    PermanentError,
    UnresolvedReferenceError,
    Unsupported,
)
from ledgerflow.connectors.change_orders import change_order_tag
from ledgerflow.connectors.netsuite.auth import TokenBasedAuth
from ledgerflow.connectors.netsuite.config import Credentials, Options
from ledgerflow.connectors.netsuite.errors import NETSUITE_ERRORS, extract_error
from ledgerflow.connectors.netsuite.mapping import (
    DEFAULT_LINE_SEGMENTS,
    RECORD_TYPES,
    body_for,
    changed_order_expense,
    external_id,
    internal_id_from_location,
    sent_entity_id,
    stored_document,
)
from ledgerflow.connectors.verify import StoredDocument
from ledgerflow.contracts import Action, CanonicalRecord, Document, Operation, PurchaseOrderChange
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.core.outbound.client import ErpClient, RequestAuth, loads_json
from ledgerflow.core.outbound.oauth import ClientCredentialsManager
from ledgerflow.core.settings import ConnectionConfig
from ledgerflow.core.state import StateStore

__all__ = ["RECORD_PATH", "NetSuiteConnector"]

RECORD_PATH = "/services/rest/record/v1"
"""Path prefix of the REST record API below the account host."""

_NOT_BOOKED = {
    "budget": "NetSuite budgets are not in the account's REST record API (specs/netsuite-oas.json has no budget "
    "record; NetSuite imports budgets by CSV Budget Import): not written by this connector",
    "budget_change": "NetSuite budgets are not in the account's REST record API (specs/netsuite-oas.json has no "
    "budget record; NetSuite imports budgets by CSV Budget Import): not written by this connector",
}
"""Why an object the NetSuite connector does not book is skipped (the result's reason)."""

DEFAULT_RATE_PER_MINUTE = 300.0
DEFAULT_CONCURRENCY = 5


def account_host(account_id: str) -> str:
    """``https://<account>.suitetalk.api.netsuite.com`` (account id lower-cased, ``_`` → ``-``; reference §3)."""
    return f"https://{account_id.lower().replace('_', '-')}.suitetalk.api.netsuite.com"


class NetSuiteConnector(Connector):
    """Books bills, vendors, customers, AR invoices and purchase orders into NetSuite.

    ``config.base_url`` is the account host (``https://1234567.suitetalk.api.netsuite.com``, or the
    sandbox's loopback URL); without it the host is derived from ``credentials.account_id``.

    Raises (from :meth:`handle`):
        Unsupported: object types other than :data:`~ledgerflow.connectors.netsuite.mapping.RECORD_TYPES`,
            and void/delete actions (NetSuite REST has no void; delete is not done automatically).
        PermanentError: unresolved references (``reference.unresolved``; ``erp.unknown_reference`` when
            NetSuite rejects one), NetSuite validation
            errors (``erp.validation``), rejected credentials (``auth.rejected``).
        RetriableError: 429, 5xx, timeouts, NetSuite concurrency errors.

    """

    erp: ClassVar[str] = "netsuite"
    options_model = Options
    credentials_model = Credentials
    supports: ClassVar[frozenset[str]] = frozenset({*RECORD_TYPES, "purchase_order_change"})
    mapping_kinds: ClassVar[frozenset[str]] = frozenset(
        {
            "vendor",  # bill / purchase order entity
            "customer",  # invoice entity
            "gl_account",  # expense line account
            "item",  # invoice line item
            "business_unit",  # invoice line department (always), expense lines per options.line_segments
        }
    )
    unused_mapping_kinds: ClassVar[Mapping[str, str]] = {
        "tax_rate": "books tax as a line on options.tax_account (bills) or options.tax_item_id (invoices), not a "
        "line's tax rate",
        "party": "books no payments",
        "bank_account": "books no payments",
        "ap_account": "takes no AP account per bill",
        "cost_type": "sends as line segments only the fields options.line_segments names (add cost_type there)",
        "cost_code": "sends as line segments only the fields options.line_segments names (add cost_code there)",
        "project": "sends as line segments only the fields options.line_segments names (add project there)",
    }

    @classmethod
    def honoured_mapping_kinds(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """:attr:`mapping_kinds` and the canonical fields ``options.line_segments`` sends.

        The default segments are business unit, cost code and project.
        """
        segments = options.get("line_segments", DEFAULT_LINE_SEGMENTS)
        return cls.mapping_kinds | frozenset(segments if isinstance(segments, Mapping) else ())

    def __init__(self, name: str, config: ConnectionConfig, http: httpx.AsyncClient, state: StateStore) -> None:
        super().__init__(name, config, http, state)
        creds = config.credentials
        auth: RequestAuth
        if creds.get("token_id"):
            auth = TokenBasedAuth(creds)
        else:
            default_token_url = None
            if config.base_url or creds.get("account_id"):
                host = config.base_url or account_host(creds["account_id"].get_secret_value())
                default_token_url = f"{host.rstrip('/')}/services/rest/auth/oauth2/v1/token"
            auth = ClientCredentialsManager.from_config(
                http, state, name, config, erp=self.erp, default_token_url=default_token_url
            )
        if config.base_url:
            host = config.base_url
        elif creds.get("account_id"):
            host = account_host(creds["account_id"].get_secret_value())
        else:
            raise PermanentError(ErrorCode.AUTH_CONFIG, f"connection {name!r}: NetSuite needs base_url or account_id")
        self.client = ErpClient.for_connection(
            http,
            erp=self.erp,
            connection=name,
            config=config,
            base_url=host.rstrip("/") + RECORD_PATH,
            default_rate_per_minute=DEFAULT_RATE_PER_MINUTE,
            default_concurrency=DEFAULT_CONCURRENCY,
            errors=NETSUITE_ERRORS,
            auth=auth,
            extract=extract_error,
        )

    async def check(self) -> None:
        """List one vendor bill: proves the host answers and the credentials are accepted.

        Raises:
            ConnectorError: ``auth.rejected`` for bad credentials, retriable errors when unreachable.

        """
        await self.client.request("GET", "/vendorBill", operation="check", params={"limit": 1})

    async def handle(self, record: CanonicalRecord, ctx: HandleContext) -> Booked:
        """Upsert ``record`` by external id and return NetSuite's internal id.

        Raises:
            Unsupported, PermanentError, RetriableError: see the class docstring.

        """
        if isinstance(record, PurchaseOrderChange):
            return await self._po_change(record)
        if record.object_type not in RECORD_TYPES:
            reason = _NOT_BOOKED.get(record.object_type, f"NetSuite connector does not book {record.object_type}")
            raise Unsupported(ErrorCode.ERP_UNSUPPORTED_OBJECT, reason)
        if record.action is not Action.UPSERT:
            raise Unsupported(
                ErrorCode.ERP_UNSUPPORTED_ACTION,
                f"NetSuite connector does not {record.action.value} {record.object_type}",
            )
        try:
            record_type, body = body_for(record, self.config.options)
        except UnresolvedReferenceError as exc:
            raise PermanentError(ErrorCode.REFERENCE_UNRESOLVED, str(exc)) from exc
        except UnbookableAmountsError as exc:
            raise PermanentError(ErrorCode.ERP_UNSUPPORTED_AMOUNT, str(exc)) from exc
        eid = external_id(record.canonical_id)
        if ctx.existing is not None:
            # Booked before: update it by its internal id. Its external id may predate canonical ids
            # carrying the tenant; the body's externalId moves it to the current one, where an
            # upsert by the new external id would have created a second record.
            response = await self.client.request(
                "PATCH",
                f"/{record_type}/{ctx.existing.erp_record_id}",
                operation=f"{record.object_type}.update",
                json_body=body,
            )
            return Booked(
                Operation.UPDATE,
                erp_record_id=ctx.existing.erp_record_id,
                http_status=response.status_code,
                counterparty_id=sent_entity_id(body),
            )
        response = await self.client.request(
            "PUT", f"/{record_type}/eid:{eid}", operation=f"{record.object_type}.upsert", json_body=body
        )
        internal_id = await self._internal_id(response, record_type, eid, record.object_type)
        return Booked(
            operation=Operation.CREATE,
            erp_record_id=internal_id,
            http_status=response.status_code,
            counterparty_id=sent_entity_id(body),
        )

    async def read_back(self, record: CanonicalRecord, booked: Booked) -> StoredDocument | None:
        """Read the booked transaction back and map it for read-back verification.

        ``GET /<recordType>/<internal id>?expandSubResources=true`` (NetSuite's write answer is a
        bare 204; without the parameter the lines come as links only), mapped by
        :func:`~ledgerflow.connectors.netsuite.mapping.stored_document`.

        Raises:
            RetriableError, PermanentError: the read failed.
        """
        if not isinstance(record, Document) or booked.erp_record_id is None:
            return None
        if record.object_type not in RECORD_TYPES:
            # A change order amends the purchase order: the order is not comparable with the change.
            return None
        record_type = RECORD_TYPES[record.object_type]
        response = await self.client.request(
            "GET",
            f"/{record_type}/{booked.erp_record_id}",
            operation=f"{record.object_type}.read_back",
            # Sublists (the lines) come as links only without it.
            params={"expandSubResources": "true"},
        )
        body = loads_json(response.content)
        if not isinstance(body, dict):
            raise PermanentError(ErrorCode.ERP_PROTOCOL, f"NetSuite answered the read of {record_type} with no record")
        return stored_document(record, body, self.config.options)

    async def _po_change(self, change: PurchaseOrderChange) -> Booked:
        """Apply (upsert) or remove (void/delete) ``change`` on the ``purchaseOrder`` it changes.

        The order (binder, or ``purchase_order.accounting_id``) is read, and its ``expense`` sublist
        replaced (``PATCH …?replace=expense``) by its own lines plus the change's, whose ``memo``
        starts ``Change order <number>: `` (a new version of the change replaces them, a void removes
        them). NetSuite has a change-order workflow only in its Procurement add-on, not in the REST
        record API, so the order itself is amended.

        Raises:
            RetriableError: the order is not booked here yet, or NetSuite's transient errors.
            PermanentError: unresolved GL accounts, the order is gone, NetSuite's validation errors.
        """
        order_id = await self.changed_order_id(change)
        found = await self.client.request(
            "GET",
            f"/purchaseOrder/{order_id}",
            operation="purchase_order_change.read",
            params={"expandSubResources": "true"},
        )
        current = loads_json(found.content)
        if not isinstance(current, dict):
            raise PermanentError(
                ErrorCode.ERP_PROTOCOL, f"NetSuite purchaseOrder {order_id}: the answer is not a record"
            )
        applying = change.action is Action.UPSERT
        try:
            expense = changed_order_expense(
                current, change if applying else None, change_order_tag(change), self.config.options
            )
        except UnresolvedReferenceError as exc:
            raise PermanentError(ErrorCode.REFERENCE_UNRESOLVED, str(exc)) from exc
        response = await self.client.request(
            "PATCH",
            f"/purchaseOrder/{order_id}",
            operation="purchase_order_change.update",
            params={"replace": "expense"},
            # The vendor as NetSuite holds it, so the update is valid on its own (accounts that
            # validate a PATCH as a whole record, as the sandbox does, need the entity).
            json_body={"entity": {"id": str((current.get("entity") or {}).get("id", ""))}, "expense": expense},
        )
        # The order (original plus every change) is not comparable with the change alone: no read-back.
        return Booked(
            operation=Operation.UPDATE if applying else Operation.VOID,
            erp_record_id=order_id,
            http_status=response.status_code,
        )

    async def _internal_id(self, response: httpx.Response, record_type: str, eid: str, object_type: str) -> str:
        location = response.headers.get("location")
        if location:
            try:
                return internal_id_from_location(location)
            except ValueError:
                pass
        # No usable Location (proxies may strip it): read the record back by external id.
        found = await self.client.request("GET", f"/{record_type}/eid:{eid}", operation=f"{object_type}.read")
        body = loads_json(found.content)
        if isinstance(body, dict) and body.get("id"):
            return str(body["id"])
        raise InvalidResponse(f"NetSuite returned no internal id for {record_type} eid:{eid}")
