"""Sending one message to each hospital and collecting the answers, for training rounds and queries alike.

`Grid.send_and_receive` sleeps 3 s between polls; the aggregator polls every `PULL_INTERVAL_S` instead and
stops at its own deadline, so a hospital that never answers costs the round its deadline and nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

PULL_INTERVAL_S = 0.25


def exchange(
    grid: Grid, node_ids: Iterable[int], message_type: str, content: dict[str, Any], timeout_s: float
) -> dict[int, Message]:
    """Send one message per node, collect replies until all are in or `timeout_s` passes."""
    messages = [
        Message(RecordDict({"config": ConfigRecord(content)}), dst_node_id=node_id, message_type=message_type)
        for node_id in node_ids
    ]
    pending = set(grid.push_messages(messages))
    replies: dict[int, Message] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            replies[reply.metadata.src_node_id] = reply
            pending.discard(reply.metadata.reply_to_message_id)
        if pending:
            time.sleep(PULL_INTERVAL_S)
    return replies


def wait_for_nodes(grid: Grid, wanted: int, timeout_s: float) -> list[int]:
    """The connected nodes, once `wanted` are connected or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= wanted or time.monotonic() >= deadline:
            return node_ids
        time.sleep(PULL_INTERVAL_S)
