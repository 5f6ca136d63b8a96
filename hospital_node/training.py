"""One hospital's part of a training round, independent of Flower so it can be reasoned about and tested alone.

Order matters and follows docs/design.md's data flow: decrypt the previous global model and check its hash; read the
data and validate it; select the consented patients (fail closed) and commit their snapshot; plan the round's
DP noise and ε; charge the ε on the ledger *before* the first step (a refused charge trains nothing); train
with DP-SGD; encrypt the sample-weighted update. The reply carries only ciphertext, hashes, ε and timings.

A round is released once. The reply is kept on the node's disk before its hash is vouched for on the ledger, so
when a crashed aggregator resumes the run and asks for the same round again (from the same global model), the
hospital sends the very update it released, charging nothing; fresh noise on the same data would be a second
release of ε. A round whose ε was charged but whose reply was not kept (the node stopped mid-training) is
declined, never trained twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fabric_network.ledger import Ledger, LedgerError
from federation.files import write_durably
from federation.messages import STATUS_DECLINED, STATUS_OK, RoundRequest
from federation.model_artifact import ModelArtifact, ModelSpec
from hospital_node.config import NodeConfig, open_node_ledger
from hospital_node.consent import ConsentUnavailable, select_consented
from hospital_node.data import DataSchema, InvalidDataError, PatientRecords, SchemaError, load_records
from hospital_node.dp_rounds import accountant_of_charges, mechanism_of, plan_round
from hospital_node.governance import NotApproved, require_approved
from hospital_node.pseudonyms import PseudonymTable


class RoundDeclined(Exception):
    """The hospital will not train this round; the message says why (sent to the aggregator, no patient data).

    `permanent` tells the aggregator not to ask again in this run (a spent budget does not come back).
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


def secret_context(node: NodeConfig) -> Any:
    from privacy.he import SecretContext

    path = node.he_secret_context
    if not path.exists():
        raise RoundDeclined(f"no CKKS secret context at {path}: run `carefed keys ceremony` for this hospital")
    return SecretContext.deserialize(path.read_bytes())


def decode_global_model(node: NodeConfig, request: RoundRequest) -> np.ndarray | None:
    """The global model the aggregate encodes (Σ wᵢ·vᵢ / Σ wᵢ), or None in round 1."""
    if not request.aggregate:
        return None
    if request.he:
        from privacy.he import decrypt_weighted_average

        return np.asarray(decrypt_weighted_average(secret_context(node), request.aggregate))
    summed = np.frombuffer(request.aggregate, dtype="<f8")
    return np.asarray(summed[:-1] / summed[-1])


def encode_update(node: NodeConfig, request: RoundRequest, vector: np.ndarray, n_records: int) -> bytes:
    """The hospital's sample-weighted update: encrypted under CKKS, or (baseline runs only) in plaintext."""
    weight = n_records / request.record_unit
    if request.he:
        from privacy.he import encrypt_weighted

        return encrypt_weighted(secret_context(node), vector, weight)
    return np.concatenate([vector * weight, [weight]]).astype("<f8").tobytes()


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def load_training_records(node: NodeConfig, path: Path, spec: ModelSpec) -> PatientRecords:
    """Validated records of a data file, refusing invalid data unless the node drops bad rows."""
    try:
        schema = DataSchema.from_toml(node.schema_path)
        report = load_records(path, schema)
        records = report.usable_records(drop_bad_rows=node.drop_bad_rows)
    except (SchemaError, InvalidDataError, FileNotFoundError, ValueError) as exc:
        raise RoundDeclined(f"input data refused: {exc}") from exc
    if records.feature_names != spec.feature_names:
        raise RoundDeclined(
            f"schema features {list(records.feature_names)} differ from the consortium model's "
            f"{list(spec.feature_names)}: declare the same features in the same order"
        )
    return records


def evaluate_global(node: NodeConfig, request: RoundRequest, vector: np.ndarray, round_number: int) -> dict[str, Any]:
    """Hash of the global model artefact (identical at every hospital) and its AUC on the node's held-out data."""
    artifact = ModelArtifact.from_vector(request.spec, request.run_id, round_number, vector)
    result: dict[str, Any] = {"model-sha256": artifact.sha256, "model-round": round_number}
    if node.eval_data is not None:
        records = load_training_records(node, node.eval_data, request.spec)
        auc = _auc(records.labels, artifact.predict_proba(records.features))
        if auc is not None:
            result.update({"auc": auc, "n-eval": len(records)})
    return result


def train_round(node: NodeConfig, request: RoundRequest) -> dict[str, Any]:
    """Run this hospital's part of one round; returns the reply's fields (raises RoundDeclined to refuse)."""
    from privacy.budget import BudgetExceededError
    from privacy.dp import DPConfig, PrivacyConfigError, PrivateTrainer, TrainingDataError
    from privacy.model import load_parameters, parameters_to_vector

    started = time.perf_counter()
    reply: dict[str, Any] = {"hospital": node.hospital}
    try:
        ledger = open_node_ledger(node)
    except (LedgerError, OSError, ValueError) as exc:
        raise RoundDeclined(f"ledger unreachable ({exc}); consent state unknown, not training (fail closed)") from exc
    with ledger, PseudonymTable(node.pseudonym_table) as table:
        reply["msp-id"] = ledger.msp_id
        _require_approved(ledger, request)
        charges = _run_charges(ledger, request)
        kept = _kept_reply(ledger, node, request, charges)
        if kept is not None:
            return {**reply, **kept}
        model = request.spec.build()
        previous = decode_global_model(node, request)
        if previous is not None:
            reply.update(evaluate_global(node, request, previous, request.round - 1))
            load_parameters(model, previous)
        records = load_training_records(node, node.data, request.spec)
        try:
            selection = select_consented(
                records, table, ledger, request.purpose, f"{request.run_id}/{request.round}/{node.hospital}"
            )
        except ConsentUnavailable as exc:
            raise RoundDeclined(str(exc)) from exc
        config = DPConfig(
            target_epsilon=request.epsilon,
            target_delta=request.delta,
            epochs=request.local_epochs,
            max_grad_norm=request.max_grad_norm,
            batch_size=request.batch_size,
            learning_rate=request.learning_rate,
        )
        cohort = selection.records
        accountant = accountant_of_charges([c for c in charges if c["round"] < request.round])
        try:
            rounds_left = request.rounds - request.round + 1
            plan, accountant = plan_round(config, len(cohort), rounds_left, accountant)
            trainer = PrivateTrainer(model, request.spec.scale(cohort.features), cohort.labels, config, plan=plan)
        except (PrivacyConfigError, TrainingDataError) as exc:
            raise RoundDeclined(f"cannot train under DP: {exc}") from exc
        budget, charge_tx_id = charge_budget(
            ledger,
            node,
            BudgetCharge(request.purpose, request.run_id, request.round, plan.epsilon),
            mechanism_of(plan, request.max_grad_norm),
        )
        try:
            result, _ = trainer.train(budget)
        except BudgetExceededError as exc:  # the ledger agreed a moment ago; only a concurrent charge gets here
            raise RoundDeclined(str(exc)) from exc
        accountant.step(plan.noise_multiplier, plan.sample_rate, plan.steps)
        train_s = time.perf_counter() - started
        vector = parameters_to_vector(model)
        encrypt_started = time.perf_counter()
        payload = encode_update(node, request, vector, len(cohort))
        update_sha256 = hashlib.sha256(payload).hexdigest()
        encrypt_s = time.perf_counter() - encrypt_started
        vouched = _update_record(request, selection, update_sha256, charge_tx_id, reply.get("auc"))
        reply.update(
            {
                "status": STATUS_OK,
                "update-sha256": update_sha256,
                "consent-snapshot-id": selection.snapshot_id,
                "consent-snapshot-root": selection.snapshot_root,
                "consent-excluded": selection.excluded,
                "num-examples": len(cohort),
                "epsilon-round": plan.epsilon,
                "epsilon-run": accountant.epsilon(plan.delta),
                "noise-multiplier": plan.noise_multiplier,
                "train-loss": result.mean_loss,
                "train-s": train_s,
                "encrypt-s": encrypt_s,
            }
        )
        _keep_reply(node, request, reply, payload, vouched)
        _vouch_for_update(ledger, node, request, vouched)
    return {**reply, "update": payload}


def _require_approved(ledger: Ledger, request: RoundRequest) -> None:
    """Train only in a started run this hospital approved, on the approved terms (permanent refusal otherwise)."""
    expected = {
        "purpose": request.purpose,
        "epsilon": request.epsilon,
        "delta": request.delta,
        "rounds": request.rounds,
        "he": request.he,
        "schema_sha256": request.spec.sha256,
    }
    try:
        require_approved(ledger, request.run_id, expected)
    except NotApproved as exc:
        raise RoundDeclined(str(exc), permanent=True) from exc


def _update_record(
    request: RoundRequest, selection: Any, update_sha256: str, charge_tx_id: str, auc: float | None
) -> dict[str, Any]:
    """What the hospital vouches for on the ledger: the update's hash, consent snapshot and ε charge.

    `auc` is the previous global model's AUC on the hospital's own held-out data, which the hospital reports to
    the aggregator anyway; on the ledger it feeds the contributor credit.
    """
    update: dict[str, Any] = {
        "round": request.round,
        "update_sha256": update_sha256,
        "consent_snapshot_id": selection.snapshot_id,
        "consent_snapshot_root": selection.snapshot_root,
        "charge_tx_id": charge_tx_id,
    }
    if auc is not None:
        update["metrics"] = {"global_auc": auc}
    return update


def _vouch_for_update(ledger: Ledger, node: NodeConfig, request: RoundRequest, update: dict[str, Any]) -> None:
    """Record the update on the ledger as this hospital, before sending it."""
    try:
        ledger.submit(
            "LineageContract:record_update",
            request.run_id,
            update,
            idempotency_key=f"update:{request.run_id}:{request.round}:{node.hospital}",
        )
    except LedgerError as exc:
        raise RoundDeclined(f"could not record the update on the ledger ({exc}); not sending it") from exc


def train_round_reply(node: NodeConfig, request: RoundRequest) -> dict[str, Any]:
    """`train_round`, with an expected refusal turned into a "declined" reply the aggregator records."""
    try:
        return train_round(node, request)
    except RoundDeclined as exc:
        return {"hospital": node.hospital, "status": STATUS_DECLINED, "reason": str(exc), "permanent": exc.permanent}


def evaluate_final(node: NodeConfig, request: RoundRequest) -> dict[str, Any]:
    """Decrypt the final model; report its hash and local AUC and return the artefact for the registry."""
    vector = decode_global_model(node, request)
    if vector is None:
        raise ValueError("evaluate message without an aggregate")
    artifact = ModelArtifact.from_vector(request.spec, request.run_id, request.round, vector)
    try:
        fields = {"status": STATUS_OK, **evaluate_global(node, request, vector, request.round)}
    except RoundDeclined as exc:
        fields = {"status": STATUS_DECLINED, "reason": str(exc)}
    return {**fields, "hospital": node.hospital, "artifact": artifact.to_bytes()}


def _run_charges(ledger: Ledger, request: RoundRequest) -> list[dict[str, Any]]:
    """This hospital's charges of the run so far: the history its accountant continues (fail closed)."""
    try:
        charges = ledger.evaluate("PrivacyBudgetContract:list_budget_charges", ledger.msp_id, request.purpose)
    except LedgerError as exc:
        raise RoundDeclined(f"privacy charges unreadable on the ledger ({exc}); not training (fail closed)") from exc
    return [c for c in charges if c["run_id"] == request.run_id]


def _kept_paths(node: NodeConfig, request: RoundRequest) -> tuple[Path, Path]:
    """The kept reply of a round (JSON) and its update (the ciphertext)."""
    stem = node.node_dir / "rounds" / request.run_id / f"{request.round:06d}"
    return stem.with_suffix(".json"), stem.with_suffix(".update")


def _keep_reply(
    node: NodeConfig, request: RoundRequest, reply: dict[str, Any], payload: bytes, vouched: dict[str, Any]
) -> None:
    """Keep the round's reply (and the global model it was trained from) before it is vouched for and sent."""
    reply_path, update_path = _kept_paths(node, request)
    reply_path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(update_path, payload)
    kept = {"from_aggregate_sha256": hashlib.sha256(request.aggregate).hexdigest(), "reply": reply, "vouched": vouched}
    write_durably(reply_path, json.dumps(kept).encode())


def _kept_reply(
    ledger: Ledger, node: NodeConfig, request: RoundRequest, charges: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The reply this hospital released for the round already (vouched for on the ledger if it was not yet), or
    None if it has not trained the round; RoundDeclined if training it now would release the round twice."""
    reply_path, update_path = _kept_paths(node, request)
    where = f"round {request.round} of run {request.run_id}"
    if not reply_path.exists():
        if any(c["round"] == request.round for c in charges):
            raise RoundDeclined(
                f"ε for {where} was charged already but no update was kept (the node stopped mid-round); "
                "not training the round twice"
            )
        return None
    try:
        kept = json.loads(reply_path.read_text(encoding="utf-8"))
        payload = update_path.read_bytes()
        reply, vouched = dict(kept["reply"]), dict(kept["vouched"])
        unchanged = hashlib.sha256(payload).hexdigest() == reply["update-sha256"] == vouched["update_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RoundDeclined(f"the kept update of {where} is unreadable ({exc}); not training the round twice") from exc
    if not unchanged:
        raise RoundDeclined(f"the kept update of {where} was altered on disk; not sending it or training again")
    if kept["from_aggregate_sha256"] != hashlib.sha256(request.aggregate).hexdigest():
        raise RoundDeclined(f"{where} was trained from a different global model; not training it twice")
    try:
        ledger.evaluate("LineageContract:read_update", request.run_id, str(request.round), ledger.msp_id)
    except LedgerError:  # kept but not yet vouched for when the node or the aggregator stopped
        _vouch_for_update(ledger, node, request, vouched)
    return {**reply, "update": payload, "replayed": True}


@dataclass(frozen=True)
class BudgetCharge:
    """One ε charge: a training round of a run, or a phase of a federated query (run id = query id)."""

    purpose: str
    run_id: str
    round: int
    epsilon: float


def charge_budget(ledger: Ledger, node: NodeConfig, charge: BudgetCharge, mechanism: dict[str, Any]) -> tuple[Any, str]:
    """Charge ε and its mechanism on the ledger before the data is used; a refusal is the hospital's stop signal.

    Returns the `privacy.budget.PrivacyBudget` as it was before the charge (so the trainer's own check agrees)
    and the charge's transaction id (the update record references it).
    """
    from privacy.accountant import fits_budget
    from privacy.budget import PrivacyBudget

    try:
        state = ledger.evaluate("PrivacyBudgetContract:read_budget", ledger.msp_id, charge.purpose)
    except LedgerError as exc:
        raise RoundDeclined(f"privacy budget unreadable on the ledger ({exc}); not training (fail closed)") from exc
    budget = PrivacyBudget(node.hospital, float(state["limit"]), float(state["spent"]))
    if not fits_budget(budget.epsilon_spent, charge.epsilon, budget.epsilon_limit):
        raise RoundDeclined(
            f"privacy budget exhausted for {node.hospital} ({charge.purpose}): spent ε={budget.epsilon_spent:.3f} "
            f"of limit {budget.epsilon_limit:.3f}, this needs ε={charge.epsilon:.3f}; stopping (raise the limit "
            "with PrivacyBudgetContract:set_budget_limit to continue)",
            permanent=True,
        )
    try:
        charged = ledger.submit(
            "PrivacyBudgetContract:charge_budget",
            charge.purpose,
            repr(charge.epsilon),
            charge.run_id,
            str(charge.round),
            mechanism,
            idempotency_key=f"budget:{charge.run_id}:{charge.round}:{node.hospital}",
        )
    except LedgerError as exc:
        raise RoundDeclined(f"privacy budget charge refused by the ledger: {exc}") from exc
    return budget, charged.tx_id
