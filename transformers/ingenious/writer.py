"""INGENIOUS source writer: ERP vendors, GL accounts, tracking and projects as INGENIOUS accounting objects; payments.

The INGENIOUS Public API reference is not public (``shared/reference/sources.md`` §1.1: the
"Webhook Payloads reference" and the Public API object schemas were NOT FOUND). What is recorded:
accounting objects (Accounting Companies, Accounting Entities, Accounting Cost Codes, Projects,
Business Units) carry a ``custom_id`` = the ERP's identifier and a ``name`` (seed 000 l.68–69,
l.90–93; ``sources.md`` §1.1), the API takes a bearer access token (seed 000 l.14), and allows 60
reads / 30 writes a minute (``sources.md`` §1.3). Everything else below is an ASSUMPTION, made
configuration in the tenant's ``writeback.ingenious`` section (``paths``, ``fields``, ``objects``,
``base_url``; :class:`~ledgerflow.core.settings.IngeniousWriteback`), so a deployment corrects it
without a code change once the reference is at hand.

Paths (``writeback.ingenious.paths.<name>``):

=====================  ==========================================  ===========================================
name                   default                                     basis
=====================  ==========================================  ===========================================
company                ``/accounting-companies/{id}``              GET documented as "matching Get Public API
                                                                   endpoint" (seed 000 l.134–137); path
                                                                   spelling ASSUMPTION (as the enrichment
                                                                   client, ``client.DEFAULT_INGENIOUS_PATHS``)
company_list           ``/accounting-companies``                   ASSUMPTION: collection of the same path;
                                                                   ``GET ?custom_id=`` filters, ``POST``
                                                                   creates
entity / entity_list   ``/accounting-entities[/{id}]``             ASSUMPTION (as company)
cost_code[_list]       ``/accounting-cost-codes[/{id}]``           ASSUMPTION (as company)
project[_list]         ``/accounting-projects[/{id}]``             ASSUMPTION (as company)
business_unit[_list]   ``/accounting-business-units[/{id}]``       ASSUMPTION (as company)
invoice_payments       ``/invoices/{id}/payments``                 ASSUMPTION: payments recorded on an
                                                                   invoice (``{id}`` = INGENIOUS invoice id,
                                                                   the ``data.id`` of its webhook);
                                                                   ``GET ?custom_id=`` lists, ``POST`` adds
=====================  ==========================================  ===========================================

Methods: create ``POST <list>`` (ASSUMPTION), update ``PATCH <item>`` (ASSUMPTION), lookup
``GET <list>?custom_id=<ERP id>`` (ASSUMPTION; the answer is filtered here again on an exact
``custom_id``, so an API ignoring the filter is still safe). Answers: ``{"data": …}`` or the bare
object/list, both read (the enrichment client reads both too).

Body fields (``writeback.ingenious.fields.<name>``, default = the name):

============  =====================================================  ==========================================
name          value                                                  basis
============  =====================================================  ==========================================
custom_id     the ERP's id (``ReferenceRecord.erp_id``; payments:    documented field of accounting objects
              the ERP payment id)                                    (seed 000); on payments ASSUMPTION
name          ``ReferenceRecord.name``                               documented (seed 000: name lookup)
code          ``ReferenceRecord.code`` (GL account number), sent     ASSUMPTION
              only when the ERP has one
active        ``ReferenceRecord.active`` (false: archived in ERP)    ASSUMPTION
amount        payments: applied amount, decimal string, major units  ASSUMPTION (string: never a float)
currency      payments: ISO 4217                                     ASSUMPTION
paid_on       payments: ERP payment date, ISO 8601                   ASSUMPTION
============  =====================================================  ==========================================

A record deleted in the ERP (a reader's tombstone: inactive, no name) deactivates the object
(``PATCH`` with ``active: false``); one that was never written is ``skipped``.

Xero tracking categories are written option by option (entity ``TrackingOption``): Xero books a
line's tracking by category and option *name*, so an option's ``custom_id`` is its ``Name`` (the
Xero connector sends it back as ``Tracking.Option``); two categories with an option of the same
name would share one ``custom_id`` (INGENIOUS refuses the second).

Which reference kinds become which object (``writeback.ingenious.objects``; ``kind:Entity`` wins
over ``kind``): vendor → company, gl_account → entity, project → project, tracking → cost_code,
``tracking:Department`` (QuickBooks departments) → business_unit; customers and tax rates are not
written unless configured. Payments: each applied document booked by ledgerflow from INGENIOUS for
this tenant (``AppliedDocument.source == "ingenious"``) gets the payment recorded once, keyed by
the ERP payment id (``custom_id``) — looked up before it is added, and remembered in the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ledgerflow.contracts import ErrorInfo, Operation, Outcome
from ledgerflow.contracts.errors import ErrorCode
from ledgerflow.contracts.reference import AppliedDocument, ReferenceRecord
from ledgerflow.core.outbound.json_api import EnrichmentError
from ledgerflow.core.settings import IngeniousWriteback
from ledgerflow.transformers.ingenious.client import IngeniousClient
from ledgerflow.transformers.writeback.base import (
    WriteLedger,
    WriteOutcome,
    classify,
    content_digest,
    counting,
    write_key,
)

__all__ = ["DEFAULT_INGENIOUS_FIELDS", "DEFAULT_INGENIOUS_WRITE_PATHS", "IngeniousWriter"]

SOURCE = "ingenious"

DEFAULT_INGENIOUS_WRITE_PATHS: dict[str, str] = {
    "company": "/accounting-companies/{id}",
    "company_list": "/accounting-companies",
    "entity": "/accounting-entities/{id}",
    "entity_list": "/accounting-entities",
    "cost_code": "/accounting-cost-codes/{id}",
    "cost_code_list": "/accounting-cost-codes",
    "project": "/accounting-projects/{id}",
    "project_list": "/accounting-projects",
    "business_unit": "/accounting-business-units/{id}",
    "business_unit_list": "/accounting-business-units",
    "invoice_payments": "/invoices/{id}/payments",
}
"""Default paths by name (the module docstring's table; every one an ASSUMPTION but the GET by id)."""

DEFAULT_INGENIOUS_FIELDS: dict[str, str] = {
    name: name for name in ("custom_id", "name", "code", "active", "amount", "currency", "paid_on")
}
"""Default body field names (the module docstring's table)."""


class IngeniousWriter:
    """Writes reference records and payments read from an ERP into one tenant's INGENIOUS.

    Args:
        client: the tenant's INGENIOUS Public API client (bearer token, base URL).
        config: the tenant's ``writeback.ingenious`` section.
    """

    source = SOURCE

    def __init__(self, client: IngeniousClient, config: IngeniousWriteback) -> None:
        self.client = client
        self.config = config
        self.paths: dict[str, str] = dict(DEFAULT_INGENIOUS_WRITE_PATHS)
        self.paths.update(config.paths.items())
        self.fields: dict[str, str] = dict(DEFAULT_INGENIOUS_FIELDS)
        self.fields.update(config.fields.items())

    def object_for(self, record: ReferenceRecord) -> str | None:
        """The INGENIOUS object ``record`` becomes (``company``, ``entity``…), None when its kind is not written."""
        return self.config.objects.get(f"{record.kind}:{record.entity}") or self.config.objects.get(record.kind)

    def takes(self, record: ReferenceRecord) -> bool:
        """Reference kinds mapped in ``objects``; payments (when ``payments``) that pay an INGENIOUS document."""
        if record.kind == "payment":
            return self.config.payments and any(d.source == SOURCE for d in record.applied_to)
        return self.object_for(record) is not None

    async def write(self, record: ReferenceRecord, tenant: str, ledger: WriteLedger) -> Sequence[WriteOutcome]:
        """Upsert the accounting object (by ``custom_id``) or record the payment on each paid INGENIOUS invoice."""
        if record.kind == "payment":
            return [
                await counting(self._payment(record, doc, ledger))
                for doc in record.applied_to
                if doc.source == SOURCE and doc.tenant == tenant and doc.source_id
            ]
        target = self.object_for(record)
        if target is None:
            return []
        options = _xero_tracking_options(record)
        if options is not None:
            return [
                replace(await counting(self._upsert(target, option, ledger)), erp_record_id=option.erp_id)
                for option in options
            ]
        return [await counting(self._upsert(target, record, ledger))]

    def _body(self, record: ReferenceRecord) -> dict[str, Any]:
        f = self.fields
        body: dict[str, Any] = {}
        body[f["custom_id"]], body[f["name"]], body[f["active"]] = record.erp_id, record.name, record.active
        if record.code:
            body[f["code"]] = record.code
        return body

    async def _upsert(self, target: str, record: ReferenceRecord, ledger: WriteLedger) -> WriteOutcome:
        key = write_key(
            record.connection, record.entity, *([record.parent_id] if record.parent_id else []), record.erp_id
        )
        body = self._body(record)
        if not record.active and not record.name:
            # Deleted in the ERP (a reader's tombstone: no name): the object is deactivated, never
            # renamed to nothing; one never written is not created.
            body = {self.fields["custom_id"]: record.erp_id, self.fields["active"]: False}
        digest = content_digest({"target": target, **body})
        known = await ledger.get(key)
        if known is not None and known.content_hash == digest:
            return WriteOutcome(target, key, Operation.SKIP, Outcome.DUPLICATE, known.source_record_id)
        try:
            found_id = known.source_record_id if known is not None else None
            if found_id is None:
                found = await self.client.find(self.paths[f"{target}_list"], self.fields["custom_id"], record.erp_id)
                if found is not None and found.get("id") is not None:
                    found_id = str(found["id"])
                    if all(found.get(k) == v for k, v in body.items()):
                        await ledger.put(key, found_id, digest)
                        return WriteOutcome(target, key, Operation.SKIP, Outcome.DUPLICATE, found_id)
            if found_id is None and not record.name:
                return WriteOutcome(
                    target,
                    key,
                    Operation.SKIP,
                    Outcome.SKIPPED,
                    error=ErrorInfo(
                        code=ErrorCode.SOURCE_NOT_FOUND,
                        message=f"{record.entity} {record.erp_id} was deleted in {record.erp} and never written "
                        "into INGENIOUS: nothing to deactivate",
                        retriable=False,
                    ),
                )
            if found_id is None:
                written = await self.client.create(self.paths[f"{target}_list"], body)
                operation = Operation.CREATE
            else:
                written = await self.client.update(self.paths[target].format(id=found_id), body)
                operation = Operation.UPDATE
        except EnrichmentError as exc:
            return _failed(target, key, exc)
        new_id = written.get("id", found_id)
        if new_id is None:
            return WriteOutcome(
                target,
                key,
                Operation.CREATE,
                Outcome.FAILED,
                error=ErrorInfo(
                    code=ErrorCode.SOURCE_VALIDATION,
                    message="INGENIOUS answered without the record's id",
                    retriable=False,
                ),
            )
        await ledger.put(key, str(new_id), digest)
        return WriteOutcome(target, key, operation, Outcome.SUCCEEDED, str(new_id))

    async def _payment(self, record: ReferenceRecord, doc: AppliedDocument, ledger: WriteLedger) -> WriteOutcome:
        assert doc.source_id is not None
        key = write_key(record.connection, record.entity, record.erp_id, "invoice", doc.source_id)
        f = self.fields
        body: dict[str, Any] = {
            f["custom_id"]: record.erp_id,
            f["amount"]: str(doc.amount),
            f["currency"]: record.currency,
            f["paid_on"]: record.paid_on.isoformat() if record.paid_on else None,
        }
        body = {k: v for k, v in body.items() if v is not None}
        money: dict[str, Any] = {"amount": doc.amount, "currency": record.currency}
        known = await ledger.get(key)
        if known is not None:  # a payment is recorded once; a changed ERP payment is not re-applied
            return WriteOutcome("invoice", key, Operation.SKIP, Outcome.DUPLICATE, known.source_record_id, **money)
        path = self.paths["invoice_payments"].format(id=doc.source_id)
        try:
            found = await self.client.find(path, f["custom_id"], record.erp_id)
            if found is not None:
                operation, outcome, written = Operation.SKIP, Outcome.DUPLICATE, found
            else:
                operation, outcome, written = Operation.CREATE, Outcome.SUCCEEDED, await self.client.create(path, body)
        except EnrichmentError as exc:
            return replace(_failed("invoice", key, exc), **money)
        payment_id = str(written.get("id", record.erp_id))
        await ledger.put(key, payment_id, content_digest(body))
        return WriteOutcome("invoice", key, operation, outcome, doc.source_id, **money)


def _xero_tracking_options(record: ReferenceRecord) -> list[ReferenceRecord] | None:
    """A Xero ``TrackingCategory``'s options as records of their own (entity ``TrackingOption``); None otherwise.

    Xero books a line's tracking by category and *option name* (``LineItem.Tracking``
    ``{Name, Option}``; ``ledgerflow.connectors.xero.mapping``), so each option becomes one
    INGENIOUS object whose ``custom_id`` is the option's ``Name`` (what the Xero connector sends
    back), ``parent_id`` the category's id; an option whose ``Status`` is not ``ACTIVE`` is inactive.
    """
    if record.erp != "xero" or record.entity != "TrackingCategory":
        return None
    options = record.erp_record.get("Options")
    if not isinstance(options, list):
        return None
    return [
        ReferenceRecord(
            kind=record.kind,
            erp=record.erp,
            connection=record.connection,
            entity="TrackingOption",
            erp_id=str(option["Name"]),
            name=str(option["Name"]),
            active=record.active and str(option.get("Status", "ACTIVE")).upper() == "ACTIVE",
            updated_at=record.updated_at,
            parent_id=record.erp_id,
            erp_record=option,
        )
        for option in options
        if isinstance(option, dict) and option.get("Name")
    ]


def _failed(target: str, key: str, exc: EnrichmentError) -> WriteOutcome:
    """The outcome of a write whose API call failed."""
    return WriteOutcome(target, key, Operation.CREATE, Outcome.FAILED, http_status=exc.status, error=classify(exc))
