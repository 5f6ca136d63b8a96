"""The consortium's Flower ServerApp: federated averaging over CKKS ciphertexts (HE-FedAvg).

The aggregator holds only the public context and a guard that refuses any read of hospital key material. Each
round it sends the previous round's *encrypted* sum to the hospitals, which decrypt it into the global model,
train under DP, and answer with an encrypted sample-weighted update; it adds the ciphertexts and never sees a
plaintext model until the final artefact is published. It enforces a minimum number of participants, a
deadline per round (its own short poll loop instead of `send_and_receive`'s 3 s sleep), records drop-outs and
declines, and writes each round's lineage to the ledger once the hospitals have reported the hash of the model
that round produced (they learn it when they decrypt, one message later).

Governance: the run must be proposed on the ledger beforehand (`run_proposal`, `LineageContract:register_run`)
and approved by a majority of its hospitals; the ServerApp's first act is `start_run`, which the contract refuses
(naming who has not approved) otherwise — then nothing is sent to any hospital. Each update must match the hash
its hospital recorded on the ledger before sending it (`record_update`); one that does not is set aside.

Publication: the final model goes into the consortium's content-addressed registry and is registered on the
ledger (`register_model`); then every connected hospital of the run is sent the artefact (`evaluate.replicate`)
for its own registry copy, which it keeps only if the ledger registered exactly those bytes
(`hospital_node.replicas`).

Crash recovery: after every round the aggregator checkpoints the rounds and the encrypted aggregate
(`consortium.checkpoint`). If the SuperLink or this process dies, the run is started again with `resume = true`:
the aggregator checks the checkpoint against the ledger and continues with the round that was interrupted (the
hospitals that had already trained it send the update they recorded, charging no ε again: see
`hospital_node.training`), or, if the checkpoint cannot be trusted, ends the run as failed on the ledger
(`LineageContract:end_run`) so that nobody trains in it again. A run ends on the ledger either way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from consortium.checkpoint import CheckpointError, RunCheckpoint
from consortium.keys import KeyGuard, forbid_secret_reads, he_parameters, public_context_path
from consortium.messaging import PULL_INTERVAL_S, exchange, wait_for_nodes
from fabric_network.identities import msp_id_for
from fabric_network.ledger import ContractRejected, LedgerError, open_ledger
from fabric_network.outbox import open_outbox
from federation.layout import consortium_registry_dir
from federation.messages import REPLICATE_ACTION, STATUS_OK, ModelReplica, RoundRequest
from federation.model_artifact import ModelArtifact
from federation.registry import ModelRegistry

app = ServerApp()
#: The longest a hospital waits for the final model's `register_model` record to reach the ledger.
REPLICA_LEDGER_WAIT_S = 60.0


@dataclass(frozen=True)
class RunSettings:
    """The run configuration (`[tool.flwr.app.config]`, overridden per run by `flwr run --run-config`).

    `training` is what every hospital is asked each round (its round number and aggregate filled per round).
    """

    state_dir: Path
    results_path: Path
    hospitals: tuple[str, ...]
    min_participants: int
    round_timeout_s: float
    join_timeout_s: float
    ledger_backend: str
    model_name: str
    hold_after_round: int
    resume: bool
    training: RoundRequest

    @property
    def run_id(self) -> str:
        return self.training.run_id

    @property
    def rounds(self) -> int:
        return self.training.rounds

    @property
    def purpose(self) -> str:
        return self.training.purpose

    @property
    def he(self) -> bool:
        return self.training.he

    @property
    def resume_path(self) -> Path:
        return self.results_path.with_suffix(".resume")

    @classmethod
    def from_run_config(cls, config: Any) -> RunSettings:
        if not str(config["state-dir"]) or not str(config["spec"]):
            raise ValueError("run config: state-dir and spec must be set (use `carefed demo` or the federation API)")
        training = RoundRequest.from_config(
            {**dict(config), "rounds": config["num-rounds"], "round": 0, "aggregate": b""}
        )
        return cls(
            state_dir=Path(str(config["state-dir"])),
            results_path=Path(str(config["results-path"])),
            hospitals=tuple(h for h in str(config["hospitals"]).split(",") if h),
            min_participants=int(config["min-participants"]),
            round_timeout_s=float(config["round-timeout"]),
            join_timeout_s=float(config["join-timeout"]),
            ledger_backend=str(config["ledger-backend"]),
            model_name=str(config["model-name"]),
            hold_after_round=int(config["hold-after-round"]),
            resume=bool(config.get("resume", False)),
            training=training,
        )

    def request(self, round_number: int, aggregate: bytes) -> RoundRequest:
        return replace(self.training, round=round_number, aggregate=aggregate)


@dataclass
class RoundLog:
    """What happened in one round, for the results file and (once the model hash is known) the ledger."""

    round: int
    participants: list[dict[str, Any]] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    aggregate_sha256: str = ""
    aggregate_s: float = 0.0
    round_s: float = 0.0
    update_bytes: int = 0
    model_sha256: str = ""
    auc: float | None = None

    def lineage(self, hospitals: tuple[str, ...]) -> dict[str, Any]:
        """The round as the ledger records it; every hospital of the run that did not contribute is `dropped`
        (also one whose node never answered, so the aggregator never learnt its name)."""
        contributed = {p["hospital"] for p in self.participants}
        record: dict[str, Any] = {
            "round": self.round,
            "participants": [
                {
                    "hospital": p["msp-id"],
                    "consent_snapshot_id": p["consent-snapshot-id"],
                    "consent_snapshot_root": p["consent-snapshot-root"],
                    "epsilon_spent": p["epsilon-round"],
                    "num_examples": p["num-examples"],
                    "update_sha256": p["update-sha256"],
                }
                for p in self.participants
            ],
            "dropped": sorted(msp_id_for(h) for h in hospitals if h not in contributed),
            "aggregate_sha256": self.aggregate_sha256,
            "model_sha256": self.model_sha256,
            "duration_s": round(self.round_s, 3),
            "metrics": {"aggregate_s": self.aggregate_s, **({"auc": self.auc} if self.auc is not None else {})},
        }
        return record


class FederatedRun:
    """The round loop of one run; state lives here only for the run's duration (one ServerApp process)."""

    def __init__(self, grid: Grid, settings: RunSettings, key_guard: KeyGuard) -> None:
        self.grid = grid
        self.settings = settings
        self.key_guard = key_guard
        # Lineage goes through the durable outbox: a slow or unavailable ledger delays the record, never the round.
        self.outbox = open_outbox(
            "aggregator", backend=settings.ledger_backend, state_dir=settings.state_dir, org="consortium"
        )
        self.outbox.start()
        # Governance reads and the run's start are synchronous: their answer decides what happens next.
        self.ledger = open_ledger(backend=settings.ledger_backend, state_dir=settings.state_dir, org="consortium")
        self.public: Any = None
        if settings.he:
            from privacy.he import PublicContext

            self.public = PublicContext.deserialize(public_context_path(settings.state_dir).read_bytes())
        self.names: dict[int, str] = {}
        self.retired: dict[int, str] = {}
        self.rounds: list[RoundLog] = []
        self.events: list[str] = []
        self.status = "running"
        self.final: dict[str, Any] = {}

    # -- ledger -------------------------------------------------------------------------------------------------
    def _submit(self, function: str, *args: Any, key: str) -> None:
        """Queue a lineage or audit write durably (idempotent: the key fixes the ledger transaction id)."""
        self.outbox.enqueue(function, *args, idempotency_key=key)

    def _audit(self, action: str, hospital: str, round_number: int) -> None:
        """An audit event for a hospital that did not contribute to a round (no reason text: free text stays off
        chain; the reason is in the run's results)."""
        event = {
            "actor": "aggregator",
            "role": "service",
            "action": action,
            "object": f"run:{self.settings.run_id}",
            "outcome": "minor-failure",
            "purpose": self.settings.purpose,
        }
        key = f"audit:{self.settings.run_id}:{round_number}:{action}:{hospital}"
        self._submit("AuditContract:append_audit_event", json.dumps(event), key=key)

    def _start_run(self) -> bool:
        """Start the proposed run on the ledger; False (with the contract's reason as status) if it may not start.

        The proposal must be the one these settings describe, term by term (purpose, hospitals, DP target, HE
        parameters, model and its spec hash, code version, rounds, minimum participants): the aggregator cannot
        start a run on terms the hospitals did not approve.
        """
        s = self.settings
        try:
            run = self.ledger.evaluate("LineageContract:read_run", s.run_id)
        except LedgerError as exc:
            self.status = f"refused to start: run {s.run_id} is not proposed on the ledger ({exc})"
            return False
        proposal = run_proposal(s)
        differing = sorted(term for term, value in proposal.items() if run.get(term) != value)
        if differing:
            self.status = f"refused to start: the settings differ from the proposal on the ledger in {differing}"
            return False
        if run["status"] == "started":
            if s.resume:
                return True
            self.status = (
                f"refused to start: run {s.run_id} was started already; if its aggregator stopped, resume it "
                "(run config resume = true) instead of training its rounds again"
            )
            return False
        if run["status"] != "proposed":
            self.status = f"refused to start: run {s.run_id} has ended ({run['status']})"
            return False
        try:
            self.ledger.submit("LineageContract:start_run", s.run_id, idempotency_key=f"start:{s.run_id}")
        except ContractRejected as exc:
            self.status = f"refused to start: {str(exc).removeprefix('LineageContract:start_run: run_id: ')}"
            return False
        self.events.append(f"run {s.run_id} started on the ledger (approved by {', '.join(_approvers(run))})")
        return True

    def _vouched(self, fields: dict[str, Any], round_number: int) -> str | None:
        """Why an update does not match what its hospital recorded on the ledger, or None when it does."""
        msp = str(fields.get("msp-id", ""))
        digest = hashlib.sha256(bytes(fields["update"])).hexdigest()
        try:
            record = self.ledger.evaluate("LineageContract:read_update", self.settings.run_id, str(round_number), msp)
        except LedgerError:
            return f"{msp or fields['hospital']} recorded no update for round {round_number} on the ledger"
        if record["update_sha256"] != digest:
            return f"the update's SHA-256 differs from the one {msp} recorded on the ledger for round {round_number}"
        return None

    def _end_run(self, status: str, reason: str) -> None:
        """Close the run on the ledger (after every queued round and model record: the outbox keeps order)."""
        outcome = {"status": status, "rounds_completed": len(self.rounds), "reason": reason}
        self._submit(
            "LineageContract:end_run", self.settings.run_id, json.dumps(outcome), key=f"end:{self.settings.run_id}"
        )

    def _restore(self) -> bytes | None:
        """Continue from the checkpoint (its rounds, the aggregate to send next); None ends the run as failed.

        The checkpoint must agree with the ledger: every round the ledger recorded for this run must be in the
        checkpoint with the same aggregate. Lineage still queued in the outbox from before the crash is delivered
        first, so the ledger is read as complete as it can be.
        """
        s = self.settings
        self.outbox.flush(timeout_s=60)
        try:
            checkpoint = RunCheckpoint.load(s.state_dir, s.run_id)
            recorded = {int(r["round"]): r for r in self.ledger.evaluate("LineageContract:list_rounds", s.run_id)}
            if checkpoint is None and recorded:
                raise CheckpointError(f"the ledger has rounds {sorted(recorded)} but no checkpoint is on disk")
            kept = {int(r["round"]): r for r in checkpoint.rounds} if checkpoint else {}
            for number, record in recorded.items():
                if number not in kept or kept[number]["aggregate_sha256"] != record.get("aggregate_sha256"):
                    raise CheckpointError(f"round {number} on the ledger is not the checkpoint's round {number}")
        except (CheckpointError, LedgerError) as exc:
            self.status = f"failed: cannot resume run {s.run_id}: {exc}"
            self.events.append(self.status)
            self._end_run("failed", "resume-impossible")
            return None
        if checkpoint is None:
            self.events.append(f"resuming run {s.run_id} from round 1 (no round had completed)")
            return b""
        self.rounds = [RoundLog(**r) for r in checkpoint.rounds]
        for log in self.rounds:  # rounds recorded before the crash: their model is known, not to be recorded again
            log.model_sha256 = str(recorded.get(log.round, {}).get("model_sha256", log.model_sha256))
        self.events.append(
            f"resuming run {s.run_id} after round {checkpoint.last_round} (checkpoint matches the ledger)"
        )
        return checkpoint.aggregate

    def _checkpoint(self, aggregate: bytes) -> None:
        RunCheckpoint(self.settings.run_id, tuple(asdict(log) for log in self.rounds), aggregate).save(
            self.settings.state_dir
        )

    def _record_round(self, log: RoundLog) -> None:
        self._submit(
            "LineageContract:record_round",
            self.settings.run_id,
            json.dumps(log.lineage(self.settings.hospitals)),
            key=f"round:{self.settings.run_id}:{log.round}",
        )

    # -- messaging ----------------------------------------------------------------------------------------------
    def _exchange(self, node_ids: Iterable[int], message_type: str, content: dict[str, Any]) -> dict[int, Message]:
        return exchange(self.grid, node_ids, message_type, content, self.settings.round_timeout_s)

    def _name(self, node_id: int) -> str:
        return self.names.get(node_id, f"node-{node_id}")

    def _wait_for_nodes(self) -> list[int]:
        return wait_for_nodes(self.grid, len(self.settings.hospitals), self.settings.join_timeout_s)

    # -- rounds -------------------------------------------------------------------------------------------------
    def _classify(self, log: RoundLog, asked: list[int], replies: dict[int, Message]) -> list[dict[str, Any]]:
        """Split replies into usable updates, declines and drop-outs; remember node names."""
        usable: list[dict[str, Any]] = []
        for node_id in asked:
            reply = replies.get(node_id)
            if reply is None or reply.has_error():
                log.dropped.append(self._name(node_id))
                why = "did not answer within the deadline" if reply is None else f"failed: {reply.error.reason}"
                self.events.append(f"round {log.round}: {self._name(node_id)} {why}")
                self._audit("round.dropout", self._name(node_id), log.round)
                continue
            fields = dict(reply.content["result"])
            self.names[node_id] = str(fields["hospital"])
            if fields.get("status") != STATUS_OK:
                reason = str(fields.get("reason", "declined"))
                log.declined[self._name(node_id)] = reason
                self.events.append(f"round {log.round}: {self._name(node_id)} declined: {reason}")
                self._audit("round.decline", self._name(node_id), log.round)
                if fields.get("permanent"):
                    self.retired[node_id] = reason
                continue
            refused = self._vouched(fields, log.round)
            if refused is not None:
                log.declined[self._name(node_id)] = refused
                self.events.append(f"round {log.round}: update of {self._name(node_id)} set aside: {refused}")
                self._audit("round.update_refused", self._name(node_id), log.round)
                continue
            usable.append(fields)
        return usable

    def _note_previous_model(self, replies: list[dict[str, Any]]) -> None:
        """Hospitals report the hash and local AUC of the model they decrypted; record that round's lineage."""
        if not self.rounds or self.rounds[-1].model_sha256:
            return
        previous = self.rounds[-1]
        hashes = {str(r["model-sha256"]) for r in replies if "model-sha256" in r}
        if len(hashes) > 1:
            raise RuntimeError(f"round {previous.round}: hospitals decrypted different models {sorted(hashes)}")
        if not hashes:
            return
        previous.model_sha256 = hashes.pop()
        evaluated = [(float(r["auc"]), int(r["n-eval"])) for r in replies if "auc" in r]
        if evaluated:
            previous.auc = sum(a * n for a, n in evaluated) / sum(n for _, n in evaluated)
        self._record_round(previous)
        self._write_results()

    def _aggregate(self, updates: list[bytes]) -> bytes:
        if self.settings.he:
            from privacy.he import aggregate

            return bytes(aggregate(self.public, updates))
        import numpy as np

        total = sum(np.frombuffer(u, dtype="<f8") for u in updates)
        return np.asarray(total, dtype="<f8").tobytes()

    def run(self) -> None:
        s = self.settings
        if not self._start_run():
            self.events.append(self.status)
            return
        restored = self._restore() if s.resume else b""
        if restored is None:
            return
        aggregate = restored
        joined = self._wait_for_nodes()
        self.events.append(f"{len(joined)} of {len(s.hospitals)} hospitals connected")
        for round_number in range(len(self.rounds) + 1, s.rounds + 1):
            started = time.perf_counter()
            log = RoundLog(round_number)
            asked = [n for n in sorted(self.grid.get_node_ids()) if n not in self.retired]
            if len(asked) < s.min_participants:
                self.status = (
                    f"stopped before round {round_number}: {len(asked)} hospitals available, "
                    f"minimum {s.min_participants}"
                )
                reason = "too-few-hospitals"
                break
            replies = self._exchange(asked, MessageType.TRAIN, s.request(round_number, aggregate).to_config())
            usable = self._classify(log, asked, replies)
            self._note_previous_model(usable)
            if len(usable) < s.min_participants:
                self.status = (
                    f"stopped in round {round_number}: {len(usable)} usable updates, minimum {s.min_participants}"
                )
                reason = "too-few-updates"
                break
            updates = [bytes(u.pop("update")) for u in usable]
            aggregate_started = time.perf_counter()
            aggregate = self._aggregate(updates)
            log.aggregate_s = time.perf_counter() - aggregate_started
            log.aggregate_sha256 = hashlib.sha256(aggregate).hexdigest()
            log.update_bytes = max(len(u) for u in updates)
            log.participants = usable
            log.round_s = time.perf_counter() - started
            self.rounds.append(log)
            self._checkpoint(aggregate)
            self._write_results()
            if round_number == s.hold_after_round and round_number < s.rounds:
                self._hold(round_number)
        else:
            self.status, reason = "completed", "completed"
        if self.rounds:
            self._finish(aggregate)
        self._end_run("completed" if reason == "completed" else "failed", reason)
        self._write_results()

    def _hold(self, round_number: int) -> None:
        """Pause between rounds until the operator resumes (lets a demo or test act at a known point)."""
        s = self.settings
        self.status = f"holding after round {round_number}"
        self._write_results()
        deadline = time.monotonic() + s.round_timeout_s
        while not s.resume_path.exists() and time.monotonic() < deadline:
            time.sleep(PULL_INTERVAL_S)
        s.resume_path.unlink(missing_ok=True)
        self.status = "running"

    def _finish(self, aggregate: bytes) -> None:
        """Ask the hospitals to decrypt and evaluate the final model; publish it in the registry and on the ledger."""
        last = self.rounds[-1]
        # The last round's participants: a node that just dropped out would only hold the run up to the deadline.
        participants = {p["hospital"] for p in last.participants}
        asked = [n for n in sorted(self.grid.get_node_ids()) if self.names.get(n) in participants]
        replies = self._exchange(asked, MessageType.EVALUATE, self.settings.request(last.round, aggregate).to_config())
        silent = set(last.dropped) | {self._name(n) for n in asked if n not in replies}
        evaluations = [dict(r.content["result"]) for r in replies.values() if not r.has_error()]
        ok = [e for e in evaluations if e.get("status") == STATUS_OK]
        self._note_previous_model(ok)
        returned: list[bytes] = [a for e in ok if isinstance(a := e.get("artifact"), bytes)]
        artifacts = {hashlib.sha256(a).hexdigest(): a for a in returned}
        if not artifacts or set(artifacts) != {last.model_sha256}:
            self.events.append(f"final model not published: hospitals returned artefacts {sorted(artifacts)}")
            return
        artifact = ModelArtifact.from_bytes(artifacts[last.model_sha256])
        registry = ModelRegistry(consortium_registry_dir(self.settings.state_dir))
        model_id = f"{self.settings.run_id}/model"
        metrics = {"auc": last.auc} if last.auc is not None else {}
        digest = registry.store(artifact.to_bytes())
        record = registry.model_record(artifact, digest, self.settings.model_name, metrics)
        self._submit("LineageContract:register_model", model_id, json.dumps(record), key=f"register-model:{model_id}")
        self.final = {"model_id": model_id, "sha256": digest, "path": str(registry.path_of(digest))}
        self._write_results()
        self._replicate(ModelReplica(model_id, artifact.to_bytes(), self._ledger_wait_s()), silent)

    def _ledger_wait_s(self) -> float:
        """How long a hospital waits for the queued `register_model` record: well inside the reply deadline."""
        return max(1.0, min(REPLICA_LEDGER_WAIT_S, self.settings.round_timeout_s / 2))

    def _replicate(self, replica: ModelReplica, silent: set[str]) -> None:
        """Send the registered model to every connected hospital of the run for its own registry copy.

        Each hospital stores it only if the ledger registered exactly these bytes; its answer (stored, refused and
        why, or none) goes into the results (`final.replicas`) and the events. A hospital not connected now gets
        no copy of this model, nor does one `silent` in the last round or the final evaluation (a node that stopped
        answering would only hold the run up to the deadline).
        """
        hospitals = set(self.settings.hospitals)
        # Nodes of the run's hospitals, and any whose name the aggregator never learnt (it answers with it).
        asked = [
            n
            for n in sorted(self.grid.get_node_ids())
            if (n not in self.names or self.names[n] in hospitals) and self._name(n) not in silent
        ]
        message_type = f"{MessageType.EVALUATE}.{REPLICATE_ACTION}"
        replies = self._exchange(asked, message_type, replica.to_config()) if asked else {}
        outcome: dict[str, str] = {}
        for node_id in asked:
            reply = replies.get(node_id)
            if reply is None or reply.has_error():
                why = "no answer within the deadline" if reply is None else f"failed: {reply.error.reason}"
                outcome[self._name(node_id)] = why
                continue
            fields = dict(reply.content["result"])
            self.names[node_id] = str(fields["hospital"])
            reason = str(fields.get("reason", "no reason given"))
            outcome[self._name(node_id)] = "stored" if fields.get("status") == STATUS_OK else f"refused: {reason}"
        self.final["replicas"] = dict(sorted(outcome.items()))
        stored = sorted(h for h, result in outcome.items() if result == "stored")
        self.events.append(f"model {replica.model_id} replicated to {', '.join(stored) or 'no hospital'}")
        self.events += [f"replica at {h}: {result}" for h, result in sorted(outcome.items()) if result != "stored"]
        missing = sorted(hospitals - set(outcome))
        if missing:
            self.events.append(f"no replica for {', '.join(missing)}: not connected or not answering at the run's end")

    def close(self) -> None:
        """Deliver the queued lineage before the process ends (what cannot be delivered stays queued on disk)."""
        delivered = self.outbox.flush(timeout_s=60)
        if not delivered:
            self.events.append(f"{self.outbox.count('pending')} lineage writes still queued for the ledger")
        rejected = self.outbox.entries("rejected")
        self.events += [
            f"ledger refused {e.function}: {e.error}" for e in rejected if self.settings.run_id in e.idempotency_key
        ]
        self.outbox.close()
        self.ledger.close()
        self._write_results()

    def _write_results(self) -> None:
        results = {
            "run_id": self.settings.run_id,
            "status": self.status,
            "he": self.settings.he,
            "rounds": [
                {
                    "round": log.round,
                    "participants": [p["hospital"] for p in log.participants],
                    "declined": log.declined,
                    "dropped": log.dropped,
                    "replayed": [p["hospital"] for p in log.participants if p.get("replayed")],
                    "epsilon_run": {p["hospital"]: p["epsilon-run"] for p in log.participants},
                    "epsilon_round": {p["hospital"]: p["epsilon-round"] for p in log.participants},
                    "consent_roots": {p["hospital"]: p["consent-snapshot-root"] for p in log.participants},
                    "consent_excluded": {p["hospital"]: p["consent-excluded"] for p in log.participants},
                    "train_s": {p["hospital"]: p["train-s"] for p in log.participants},
                    "encrypt_s": {p["hospital"]: p["encrypt-s"] for p in log.participants},
                    "aggregate_s": log.aggregate_s,
                    "round_s": log.round_s,
                    "update_bytes": log.update_bytes,
                    "model_sha256": log.model_sha256,
                    "auc": log.auc,
                }
                for log in self.rounds
            ],
            "final": self.final,
            "events": self.events,
            "aggregator_opened": sorted(set(self.key_guard.opened)),
            "aggregator_denied": sorted(set(self.key_guard.denied)),
        }
        tmp = self.settings.results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2), encoding="utf-8")
        tmp.replace(self.settings.results_path)


def run_proposal(settings: RunSettings) -> dict[str, Any]:
    """The run as the hospitals are asked to approve it (`LineageContract:register_run`'s spec)."""
    s = settings
    return {
        "purpose": s.purpose,
        "hospitals": [msp_id_for(h) for h in s.hospitals],
        "dp": {
            "epsilon": s.training.epsilon,
            "delta": s.training.delta,
            "max_grad_norm": s.training.max_grad_norm,
            "accountant": "rdp",
        },
        "he": he_parameters(s.state_dir) if s.he else {"scheme": "none"},
        "code_version": _code_version(),
        "model_name": s.model_name,
        "schema_sha256": s.training.spec.sha256,
        "min_participants": s.min_participants,
        "rounds": s.rounds,
    }


def _approvers(run: dict[str, Any]) -> list[str]:
    return sorted(h for h, vote in run.get("votes", {}).items() if vote == "approve")


def _code_version() -> str:
    from carefed import __version__

    return __version__


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls in the `flwr-serverapp` process of each run: a training run or a cohort query."""
    if str(context.run_config.get("task", "train")) == "query":
        from consortium.query_run import FederatedQuery, QuerySettings

        query_settings = QuerySettings.from_run_config(context.run_config)
        query = FederatedQuery(grid, query_settings, forbid_secret_reads(query_settings.state_dir))
        try:
            query.run()
        finally:
            query.close()
        return
    settings = RunSettings.from_run_config(context.run_config)
    guard = forbid_secret_reads(settings.state_dir)
    run = FederatedRun(grid, settings, guard)
    try:
        run.run()
    finally:
        run.close()
