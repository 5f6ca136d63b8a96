"""The hospital's Flower ClientApp: a thin adapter between Flower messages and `hospital_node.training`.

Flower starts a fresh `flwr-clientapp` process for every message, so each handler loads the node's
configuration, keys and data from the node directory named in the SuperNode's node config. An expected refusal
(budget spent, consent unreadable, invalid data) is a normal reply with status "declined" and the reason, so
the aggregator can record it; anything else raises and reaches the aggregator as an error reply.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from hospital_node.config import NodeConfig
from hospital_node.training import STATUS_DECLINED, STATUS_OK, RoundDeclined, RoundRequest, decode_global_model, evaluate_global
from hospital_node.training import train_round as run_training_round

app = ClientApp()
log = logging.getLogger("carefed.node")


def _node(context: Context) -> NodeConfig:
    return NodeConfig.load(Path(str(context.node_config["node-dir"])))


def _reply(msg: Message, fields: dict[str, object]) -> Message:
    return Message(RecordDict({"result": ConfigRecord(fields)}), reply_to=msg)  # type: ignore[arg-type]


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One training round: decrypt the global model, train under DP on consented patients, encrypt the update."""
    node = _node(context)
    request = RoundRequest.from_config(msg.content["config"])
    try:
        fields = run_training_round(node, request)
    except RoundDeclined as exc:
        log.warning("%s declines round %d: %s", node.hospital, request.round, exc)
        fields = {"hospital": node.hospital, "status": STATUS_DECLINED, "reason": str(exc), "permanent": exc.permanent}
    return _reply(msg, fields)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """After the last round: decrypt the final model, report its hash and local AUC, return the artefact."""
    node = _node(context)
    request = RoundRequest.from_config(msg.content["config"])
    vector = decode_global_model(node, request)
    if vector is None:
        raise ValueError("evaluate message without an aggregate")
    try:
        fields = {"status": STATUS_OK, **evaluate_global(node, request, vector, request.round)}
    except RoundDeclined as exc:
        fields = {"status": STATUS_DECLINED, "reason": str(exc)}
    from consortium.model_artifact import ModelArtifact

    fields.update(
        hospital=node.hospital,
        artifact=ModelArtifact.from_vector(request.spec, request.run_id, request.round, vector).to_bytes(),
    )
    return _reply(msg, fields)
