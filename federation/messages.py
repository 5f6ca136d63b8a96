"""What crosses the process boundary between the aggregator and a hospital in a training run.

The consortium's ServerApp builds a `RoundRequest` and sends it as the message's ConfigRecord; the hospital's
ClientApp reads it back and answers with a reply whose `status` is `STATUS_OK` or `STATUS_DECLINED`. After the
run it sends each connected hospital the registered final model (`ModelReplica`, message type
`evaluate.replicate`) for the hospital's own registry copy. Both sides import this module and neither imports the
other (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federation.model_artifact import ModelSpec

STATUS_OK = "ok"
STATUS_DECLINED = "declined"
#: The action of the replication message: Flower message type `evaluate.replicate` (`ClientApp.evaluate(action)`).
REPLICATE_ACTION = "replicate"


@dataclass(frozen=True)
class RoundRequest:
    """What the aggregator asks of a hospital in one round (from the message's ConfigRecord)."""

    run_id: str
    round: int
    rounds: int
    purpose: str
    spec: ModelSpec
    he: bool
    epsilon: float
    delta: float
    max_grad_norm: float
    local_epochs: int
    batch_size: int
    learning_rate: float
    record_unit: float
    aggregate: bytes  # the previous round's (encrypted) sum; empty in round 1

    @classmethod
    def from_config(cls, config: Any) -> RoundRequest:
        return cls(
            run_id=str(config["run-id"]),
            round=int(config["round"]),
            rounds=int(config["rounds"]),
            purpose=str(config["purpose"]),
            spec=ModelSpec.from_json(str(config["spec"])),
            he=bool(config["he"]),
            epsilon=float(config["epsilon"]),
            delta=float(config["delta"]),
            max_grad_norm=float(config["max-grad-norm"]),
            local_epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]),
            learning_rate=float(config["learning-rate"]),
            record_unit=float(config["record-unit"]),
            aggregate=bytes(config["aggregate"]),
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "run-id": self.run_id,
            "round": self.round,
            "rounds": self.rounds,
            "purpose": self.purpose,
            "spec": self.spec.to_json(),
            "he": self.he,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "max-grad-norm": self.max_grad_norm,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "learning-rate": self.learning_rate,
            "record-unit": self.record_unit,
            "aggregate": self.aggregate,
        }


@dataclass(frozen=True)
class ModelReplica:
    """A registered model's artefact, sent to a hospital for its own registry copy.

    The hospital trusts none of it: it stores the bytes only if they hash to what the ledger's `register_model`
    record of `model_id` holds, waiting up to `ledger_wait_s` for that record (the aggregator queues it in its
    outbox, so it may reach the ledger a moment after this message).
    """

    model_id: str
    artifact: bytes
    ledger_wait_s: float

    @classmethod
    def from_config(cls, config: Any) -> ModelReplica:
        return cls(
            model_id=str(config["model-id"]),
            artifact=bytes(config["artifact"]),
            ledger_wait_s=float(config["ledger-wait-s"]),
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "model-id": self.model_id,
            "artifact": self.artifact,
            "ledger-wait-s": self.ledger_wait_s,
        }
