"""One hospital's part of a training round, independent of Flower so it can be reasoned about and tested alone.

Order matters and follows docs/design.md's data flow: decrypt the previous global model and check its hash; read the
data and validate it; select the consented patients (fail closed) and commit their snapshot; plan the round's
DP noise and ε; charge the ε on the ledger *before* the first step (a refused charge trains nothing); train
with DP-SGD; encrypt the sample-weighted update. The reply carries only ciphertext, hashes, ε and timings.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fabric_network.ledger import Ledger, LedgerError, open_ledger
from federation.messages import STATUS_DECLINED, STATUS_OK, RoundRequest
from federation.model_artifact import ModelArtifact, ModelSpec
from hospital_node.config import NodeConfig
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


def open_node_ledger(node: NodeConfig) -> Ledger:
    return open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=node.hospital)


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
        accountant = accountant_of_charges(_run_charges(ledger, request))
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
        _vouch_for_update(ledger, node, request, selection, update_sha256, charge_tx_id, reply.get("auc"))
    reply.update(
        {
            "status": STATUS_OK,
            "update": payload,
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
    return reply


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


def _vouch_for_update(
    ledger: Ledger,
    node: NodeConfig,
    request: RoundRequest,
    selection: Any,
    update_sha256: str,
    charge_tx_id: str,
    auc: float | None,
) -> None:
    """Record the update's hash, consent snapshot and ε charge on the ledger as this hospital, before sending it.

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
    """This hospital's earlier charges of the run: the history its accountant continues (fail closed)."""
    try:
        charges = ledger.evaluate("PrivacyBudgetContract:list_budget_charges", ledger.msp_id, request.purpose)
    except LedgerError as exc:
        raise RoundDeclined(f"privacy charges unreadable on the ledger ({exc}); not training (fail closed)") from exc
    return [c for c in charges if c["run_id"] == request.run_id and c["round"] < request.round]


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
