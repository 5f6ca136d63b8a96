"""The hospital node's worker: a long-lived process that keeps torch, Opacus and TenSEAL loaded and runs rounds.

Flower starts a fresh ClientApp process for every message. Importing torch and Opacus (and the compiler stack
torch pulls in on the first optimiser) costs 10+ s of CPU per process, longer than the round's actual work, so
the ClientApp only forwards each message to this worker over a local socket and returns its answer. The worker
is the hospital's own process, started next to its SuperNode (`carefed node start`); it alone reads the data,
the pseudonym table and the CKKS secret key. The socket is owner-only (0600) and connections must prove the
node's random authkey (HMAC challenge of `multiprocessing.connection`). Without a worker the ClientApp runs the
same task in-process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import signal
import sys
import tempfile
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

log = logging.getLogger("carefed.node.worker")
TASK_TRAIN = "train"
TASK_EVALUATE = "evaluate"
TASK_QUERY = "query"
TASK_REPLICATE = "replicate"


def socket_path(node_dir: Path) -> Path:
    """A short, per-node socket path (AF_UNIX paths are limited to ~107 bytes, node dirs can be longer)."""
    digest = hashlib.sha256(str(node_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"carefed-node-{digest}.sock"


def _authkey_path(node_dir: Path) -> Path:
    return node_dir / "keys" / "worker.authkey"


def _authkey(node_dir: Path, create: bool) -> bytes | None:
    path = _authkey_path(node_dir)
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(secrets.token_bytes(32))
    return path.read_bytes()


def run_task(node_dir: Path, task: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one ClientApp task for the node in this process; the reply's fields."""
    from hospital_node.config import NodeConfig

    node = NodeConfig.load(node_dir)
    if task == TASK_QUERY:
        from federation.analytics import QueryRequest
        from hospital_node.analytics import answer_query_reply

        return answer_query_reply(node, QueryRequest.from_config(config))
    if task == TASK_REPLICATE:
        from federation.messages import ModelReplica
        from hospital_node.replicas import receive_replica

        return receive_replica(node, ModelReplica.from_config(config))
    from federation.messages import RoundRequest
    from hospital_node.training import evaluate_final, train_round_reply

    request = RoundRequest.from_config(config)
    if task == TASK_TRAIN:
        return train_round_reply(node, request)
    if task == TASK_EVALUATE:
        return evaluate_final(node, request)
    raise ValueError(f"unknown node task {task!r}")


def call_worker(node_dir: Path, task: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Hand a task to the node's worker; None if no worker is running (the caller then runs it itself)."""
    path = socket_path(node_dir)
    authkey = _authkey(node_dir, create=False)
    if authkey is None or not path.exists():
        return None
    try:
        connection = Client(str(path), family="AF_UNIX", authkey=authkey)
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    with connection:
        connection.send((task, config))
        ok, payload = connection.recv()
    if not ok:
        raise RuntimeError(f"node worker failed: {payload}")
    return dict(payload)


def warm_up() -> None:
    """Import and initialise the heavy libraries once, so every round runs warm."""
    import tenseal  # noqa: F401
    import torch
    from sklearn.metrics import roc_auc_score  # noqa: F401

    import hospital_node.training  # noqa: F401
    from privacy.model import demo_mlp

    torch.optim.Adam(demo_mlp(2, ()).parameters())  # the first optimiser imports torch's compiler stack


def serve(node_dir: Path) -> None:
    """Serve tasks one at a time until terminated."""
    node_dir = node_dir.resolve()
    # SIGTERM (how the node is stopped) exits through the listener's cleanup, which removes the socket file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    warm_up()
    authkey = _authkey(node_dir, create=True)
    path = socket_path(node_dir)
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # the socket file is created owner-only
    try:
        listener = Listener(str(path), family="AF_UNIX", authkey=authkey)
    finally:
        os.umask(old_umask)
    log.info("node worker for %s listening", node_dir.name)
    print(f"carefed node worker ready: {node_dir.name}", flush=True)
    with listener:
        while True:
            try:
                connection = listener.accept()
            except OSError as exc:  # a client failing the authkey challenge
                log.warning("refused a worker connection: %s", exc)
                continue
            with connection:
                task, config = connection.recv()
                # Which round it works on: operators (and the crash tests) read this line in the worker's log.
                if task == TASK_REPLICATE:
                    log.info("task %s started: model %s", task, config.get("model-id"))
                else:
                    log.info("task %s started: run %s round %s", task, config.get("run-id"), config.get("round"))
                try:
                    connection.send((True, run_task(node_dir, task, config)))
                except Exception as exc:  # the ClientApp turns this into an error reply to the aggregator
                    log.exception("task %s failed", task)
                    connection.send((False, f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    serve(Path(sys.argv[1]))
