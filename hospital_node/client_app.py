"""The hospital's Flower ClientApp: a thin adapter between Flower messages and the node's tasks.

Flower starts a fresh `flwr-clientapp` process for every message, so this module imports nothing heavy: it
hands the task to the node's long-lived worker (`hospital_node.worker`) when one runs, else runs it itself. An
expected refusal (budget spent, consent unreadable, invalid data) is a normal reply with status "declined" and
the reason, so the aggregator can record it; anything else raises and reaches the aggregator as an error reply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from federation.messages import REPLICATE_ACTION
from hospital_node.worker import TASK_EVALUATE, TASK_QUERY, TASK_REPLICATE, TASK_TRAIN, call_worker, run_task

app = ClientApp()


def _handle(msg: Message, context: Context, task: str) -> Message:
    node_dir = Path(str(context.node_config["node-dir"]))
    config: dict[str, Any] = dict(msg.content["config"])
    fields = call_worker(node_dir, task, config)
    if fields is None:
        fields = run_task(node_dir, task, config)
    return Message(RecordDict({"result": ConfigRecord(fields)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One training round: decrypt the global model, train under DP on consented patients, encrypt the update."""
    return _handle(msg, context, TASK_TRAIN)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """After the last round: decrypt the final model, report its hash and local AUC, return the artefact."""
    return _handle(msg, context, TASK_EVALUATE)


@app.evaluate(REPLICATE_ACTION)
def replicate(msg: Message, context: Context) -> Message:
    """After the run: the registered final model, kept in the hospital's registry copy if the ledger vouches for it."""
    return _handle(msg, context, TASK_REPLICATE)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """One phase of a federated cohort query: a noisy, encrypted local statistic, or the decrypted consortium total."""
    return _handle(msg, context, TASK_QUERY)
