"""The aggregator's side of a federated cohort query: three message exchanges, ciphertext sums, the ledger record.

Runs in the same ServerApp process as training (`run_config["task"] == "query"`), under the same guard that
refuses any read of hospital key material: it adds the hospitals' encrypted noisy counts and statistics and
never holds a key that could decrypt them. Hospitals decrypt the sums (only the consortium totals) and apply
the small-cell rule before they spend the statistic's ε. Phases and the vector layout: federation/analytics.py.

The query must be registered on the ledger (`AnalyticsContract:register_query`) with the hash of exactly these
settings, else nothing is sent. Its outcome (answered, suppressed or failed), the hospitals that took part and
the SHA-256 of the released result are recorded once at the end, with an audit event naming the requester.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from consortium.keys import KeyGuard, public_context_path
from consortium.messaging import exchange, wait_for_nodes
from fabric_network.identities import msp_id_for
from fabric_network.ledger import LedgerError, open_ledger
from federation.analytics import (
    PHASE_COUNT,
    PHASE_DECRYPT,
    PHASE_STATISTIC,
    STATUS_SUPPRESSED,
    QueryRequest,
    QuerySpec,
    phase_noise,
    registration_problem,
    result_sha256,
    summarise,
)
from federation.messages import STATUS_OK

#: The audit action per outcome: a released statistic is a disclosure to its requester (compliance reports).
QUERY_ACTIONS = {"answered": "query.release", STATUS_SUPPRESSED: "query.suppress", "failed": "query.fail"}
# Hospitals decrypt the same sum with the same key; the limbs' rounding leaves differences of CKKS' error only.
AGREEMENT_TOLERANCE = 1e-3


class QueryFailed(RuntimeError):
    """The query cannot give a result (too few hospitals, a hospital dropped between phases, disagreement)."""


@dataclass(frozen=True)
class QuerySettings:
    """A query run's configuration (run-config keys; `query` is the QuerySpec JSON)."""

    state_dir: Path
    results_path: Path
    hospitals: tuple[str, ...]
    min_participants: int
    round_timeout_s: float
    join_timeout_s: float
    ledger_backend: str
    spec: QuerySpec

    @classmethod
    def from_run_config(cls, config: Any) -> QuerySettings:
        return cls(
            state_dir=Path(str(config["state-dir"])),
            results_path=Path(str(config["results-path"])),
            hospitals=tuple(h for h in str(config["hospitals"]).split(",") if h),
            min_participants=int(config["min-participants"]),
            round_timeout_s=float(config["round-timeout"]),
            join_timeout_s=float(config["join-timeout"]),
            ledger_backend=str(config["ledger-backend"]),
            spec=QuerySpec.from_json(str(config["query"])),
        )


class FederatedQuery:
    """One query, for the duration of one ServerApp process."""

    def __init__(self, grid: Grid, settings: QuerySettings, key_guard: KeyGuard) -> None:
        from privacy.he import PublicContext

        self.grid = grid
        self.settings = settings
        self.key_guard = key_guard
        self.ledger = open_ledger(backend=settings.ledger_backend, state_dir=settings.state_dir, org="consortium")
        self.public = PublicContext.deserialize(public_context_path(settings.state_dir).read_bytes())
        self.names: dict[int, str] = {}
        self.events: list[str] = []
        self.epsilon: dict[str, float] = {}
        self.participants: list[str] = []
        self.status = "running"
        self.result: dict[str, Any] = {}

    def _ask(self, node_ids: list[int], request: QueryRequest) -> dict[int, dict[str, Any]]:
        """One phase: the usable replies by node; declines and silence are recorded as events."""
        replies: dict[int, Message] = exchange(
            self.grid, node_ids, MessageType.QUERY, request.to_config(), self.settings.round_timeout_s
        )
        usable: dict[int, dict[str, Any]] = {}
        for node_id in node_ids:
            reply = replies.get(node_id)
            name = self.names.get(node_id, f"node-{node_id}")
            if reply is None or reply.has_error():
                why = "did not answer within the deadline" if reply is None else f"failed: {reply.error.reason}"
                self.events.append(f"{request.phase}: {name} {why}")
                continue
            fields = dict(reply.content["result"])
            self.names[node_id] = name = str(fields["hospital"])
            if fields.get("status") not in (STATUS_OK, STATUS_SUPPRESSED):
                self.events.append(f"{request.phase}: {name} declined: {fields.get('reason')!s}")
                continue
            if isinstance(epsilon := fields.get("epsilon"), float):
                self.epsilon[name] = self.epsilon.get(name, 0.0) + epsilon
            usable[node_id] = fields
        return usable

    def _sum(self, replies: dict[int, dict[str, Any]]) -> bytes:
        from privacy.he import aggregate

        return bytes(aggregate(self.public, [bytes(r["update"]) for r in replies.values()]))

    def _agreed(self, replies: dict[int, dict[str, Any]], field: str) -> Any:
        """The value every hospital reported for `field` (they decrypted the same sum); disagreement fails."""
        values = [json.loads(str(r[field])) for r in replies.values()]
        reference = np.array([np.nan if v is None else v for v in values[0]], dtype=np.float64)
        for value in values[1:]:
            other = np.array([np.nan if v is None else v for v in value], dtype=np.float64)
            if not np.allclose(reference, other, atol=AGREEMENT_TOLERANCE, equal_nan=True):
                raise QueryFailed(f"hospitals decrypted different {field}: {values}")
        return values[0]

    def _all_of(self, participants: list[int], replies: dict[int, dict[str, Any]], phase: str) -> None:
        missing = [self.names.get(n, f"node-{n}") for n in participants if n not in replies]
        if missing:
            raise QueryFailed(f"{', '.join(missing)} did not complete the {phase} phase; the totals would be partial")

    def _check_registered(self) -> None:
        spec = self.settings.spec
        try:
            record = self.ledger.evaluate("AnalyticsContract:read_query", spec.query_id)
        except LedgerError as exc:
            raise QueryFailed(f"query {spec.query_id} is not registered on the ledger ({exc})") from exc
        problem = registration_problem(spec, record)
        if problem is not None:
            raise QueryFailed(problem)

    def run(self) -> None:
        s, spec = self.settings, self.settings.spec
        try:
            self._check_registered()
            joined = wait_for_nodes(self.grid, len(s.hospitals), s.join_timeout_s)
            counted = self._ask(joined, QueryRequest(spec, PHASE_COUNT))
            if len(counted) < s.min_participants:
                raise QueryFailed(f"{len(counted)} hospitals answered the count, minimum {s.min_participants}")
            participants = sorted(counted)
            self.participants = sorted(self.names[n] for n in participants)
            stated = self._ask(participants, QueryRequest(spec, PHASE_STATISTIC, self._sum(counted)))
            self._all_of(participants, stated, PHASE_STATISTIC)
            counts: list[float | None] = self._agreed(stated, "counts")
            totals = None
            if all("update" in r for r in stated.values()):
                decrypted = self._ask(participants, QueryRequest(spec, PHASE_DECRYPT, self._sum(stated)))
                self._all_of(participants, decrypted, PHASE_DECRYPT)
                totals = np.asarray(self._agreed(decrypted, "totals"), dtype=np.float64)
            count_noise, statistic_noise = phase_noise(spec)
            self.result = summarise(spec, counts, totals, count_noise.sigma, statistic_noise.sigma, len(participants))
            self.status = self.result["status"]
        except QueryFailed as exc:
            self.status = "failed"
            self.events.append(str(exc))
        self._record()
        self._write_results()

    def _record(self) -> None:
        """The outcome and the released result's hash on the ledger, and who asked, as an audit event."""
        spec = self.settings.spec
        outcome = self.status if self.status in ("answered", STATUS_SUPPRESSED) else "failed"
        digest = result_sha256(self.result) if self.result else ""
        try:
            self.ledger.submit(
                "AnalyticsContract:record_query_result",
                spec.query_id,
                {
                    "outcome": outcome,
                    "result_sha256": digest,
                    "participants": [msp_id_for(h) for h in self.participants],
                },
                idempotency_key=f"query-result:{spec.query_id}",
            )
            event = {
                "actor": spec.requester,
                "role": spec.role,
                "action": QUERY_ACTIONS[outcome],
                "object": f"query:{spec.query_id}",
                "outcome": "success" if outcome != "failed" else "serious-failure",
                "purpose": spec.purpose,
            }
            self.ledger.submit(
                "AuditContract:append_audit_event", json.dumps(event), idempotency_key=f"audit:query:{spec.query_id}"
            )
        except LedgerError as exc:
            self.events.append(f"the ledger refused the query's outcome: {exc}")

    def _write_results(self) -> None:
        results = {
            "query_id": self.settings.spec.query_id,
            "status": self.status,
            "result": self.result,
            "result_sha256": result_sha256(self.result) if self.result else "",
            "participants": self.participants,
            "epsilon_charged": self.epsilon,
            "events": self.events,
            "aggregator_opened": sorted(set(self.key_guard.opened)),
            "aggregator_denied": sorted(set(self.key_guard.denied)),
        }
        tmp = self.settings.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
        tmp.replace(self.settings.results_path)

    def close(self) -> None:
        self.ledger.close()
