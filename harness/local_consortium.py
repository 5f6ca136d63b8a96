"""Setting up a consortium on one machine and driving a federated run through the real Flower processes.

Used by `carefed demo`, `bench/round.py` and the end-to-end tests, so that all three exercise the same path a
deployment takes: identities (`carefed ledger init`), the key ceremony, one configured node per hospital with
its pseudonym table and consents on the ledger, budget limits set by the consortium, then a SuperLink and one
SuperNode per hospital and `flwr run`. Progress is read from the results file the ServerApp rewrites after every
round; completion from `flwr ls`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortium.proposals import PROJECT_DIR, register_query, register_run
from consortium.runs import RunReport, follow_run, results_path, save_run_config, saved_run_config, submit_run
from fabric_network.identities import init_identities, msp_id_for
from fabric_network.ledger import Call, Ledger, LedgerError, open_ledger
from federation.analytics import QuerySpec
from federation.layout import node_dir_for
from federation.model_artifact import ModelSpec
from federation.runtime import FlowerRuntime, RuntimeFailure
from federation.tls import ensure_superlink_tls
from harness.key_ceremony import run_ceremony
from hospital_node.config import DEFAULT_PURPOSE, NodeConfig
from hospital_node.consent import record_consents
from hospital_node.governance import vote
from hospital_node.pseudonyms import PseudonymTable


@dataclass(frozen=True)
class HospitalPlan:
    """One hospital of a local consortium: its files, which patients consent, and its ε limit."""

    name: str
    data: Path
    schema: Path
    consenting_mrns: tuple[str, ...]
    epsilon_limit: float
    eval_data: Path | None = None
    drop_bad_rows: bool = False


def withdraw_consents(ledger: Ledger, table: PseudonymTable, mrns: Iterable[str], purpose: str) -> list[str]:
    """Withdraw the consent of these patients (as their hospital); returns their pseudonyms."""
    pseudonyms = list(table.mapping(mrns).values())
    calls = [Call("ConsentContract:withdraw_consent", (p, purpose)) for p in pseudonyms]
    for outcome in ledger.submit_batch(calls):
        if isinstance(outcome, LedgerError):
            raise outcome
    return pseudonyms


def set_up_consortium(
    state_dir: Path, hospitals: Sequence[HospitalPlan], purpose: str = DEFAULT_PURPOSE, backend: str = "embedded"
) -> None:
    """Identities, key ceremony, node configs, consents and budget limits for a fresh local consortium."""
    names = [h.name for h in hospitals]
    init_identities(state_dir, names)
    if backend == "fabric":
        start_fabric_network(state_dir, len(names))
    run_ceremony(state_dir, names, backend)
    with open_ledger(backend=backend, state_dir=state_dir, org="consortium") as consortium:
        consortium.submit("GovernanceContract:init_members", [msp_id_for(name) for name in names])
        for hospital in hospitals:
            consortium.submit(
                "PrivacyBudgetContract:set_budget_limit",
                msp_id_for(hospital.name),
                purpose,
                repr(hospital.epsilon_limit),
            )
    for hospital in hospitals:
        node = NodeConfig(
            hospital=hospital.name,
            node_dir=node_dir_for(state_dir, hospital.name).resolve(),
            data=hospital.data.resolve(),
            schema_path=hospital.schema.resolve(),
            eval_data=hospital.eval_data.resolve() if hospital.eval_data else None,
            drop_bad_rows=hospital.drop_bad_rows,
            purpose=purpose,
            ledger_backend=backend,  # type: ignore[arg-type]
            ledger_state_dir=state_dir.resolve(),
        )
        node.save()
        with (
            open_ledger(backend=backend, state_dir=state_dir, org=hospital.name) as ledger,
            PseudonymTable(node.pseudonym_table) as table,
        ):
            record_consents(ledger, table, hospital.consenting_mrns, purpose)


def start_fabric_network(state_dir: Path, hospitals: int) -> None:
    """`carefed fabric up` for the consortium of ``state_dir`` on free ports: the `fabric` backend needs its
    network running before the first ledger call (``stop_fabric_network`` ends it)."""
    from fabric_network.fabric import network
    from fabric_network.fabric.install import default_fabric_home

    network.up(state_dir, default_fabric_home(), hospitals, network.find_free_base_port(hospitals))


def stop_fabric_network(state_dir: Path) -> None:
    """`carefed fabric down`: stop exactly the processes `start_fabric_network` started; the ledgers stay."""
    from fabric_network.fabric import network

    network.down(state_dir)


@dataclass
class RunRequest:
    """A run's settings (run-config keys of `[tool.flwr.app.config]`) plus orchestration hooks."""

    run_id: str
    spec: ModelSpec
    rounds: int = 3
    min_participants: int = 2
    he: bool = True
    epsilon: float = 3.0
    round_timeout_s: float = 120.0
    hold_after_round: int = 0  # pause the ServerApp after this round until the orchestrator resumes it
    # Each hospital's vote on the run proposal: "approve" (the default for a hospital not listed), "reject", or
    # "" to abstain. Cast with the hospital's own ledger identity, as `carefed node approve` does.
    votes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # further run-config overrides (learning-rate, …)


def propose_run(
    state_dir: Path,
    hospitals: Sequence[str],
    run_id: str,
    config: dict[str, Any],
    votes: dict[str, str] | None = None,
    *,
    backend: str = "embedded",
    start: bool = False,
) -> None:
    """Propose a run (run-config overrides `config`) as the consortium and let each hospital vote as itself
    (on one machine the harness holds every organisation's identity; across hosts each hospital votes itself).

    `votes` maps a hospital to "approve" (the default), "reject" or "" (abstain). `start` also starts the run on
    the ledger, for callers that drive the hospitals' rounds without a ServerApp (bench/round.py's utility).
    """
    register_run(state_dir, run_id, config, backend=backend)
    for hospital in hospitals:
        decision = (votes or {}).get(hospital, "approve")
        if decision:
            with open_ledger(backend=backend, state_dir=state_dir, org=hospital) as ledger:
                vote(ledger, run_id, decision)
    if start:
        with open_ledger(backend=backend, state_dir=state_dir, org="consortium") as consortium:
            consortium.submit("LineageContract:start_run", run_id)


class LocalConsortium:
    """A SuperLink and the hospitals' SuperNodes on localhost, for one or more runs."""

    def __init__(self, state_dir: Path, hospitals: Sequence[str], *, tls: bool = True, backend: str = "embedded"):
        self.state_dir = state_dir.resolve()
        self.hospitals = list(hospitals)
        self.backend = backend
        tls_material = ensure_superlink_tls(self.state_dir / "consortium" / "tls") if tls else None
        self.runtime = FlowerRuntime(self.state_dir / "flwr", tls=tls_material)

    def start(self, timeout_s: float = 180.0) -> None:
        """Start each hospital's worker, the SuperLink and the SuperNodes; return when all are ready."""
        workers = {
            f"worker-{h}": self.runtime.spawn(
                f"worker-{h}", [sys.executable, "-m", "hospital_node.worker", str(node_dir_for(self.state_dir, h))]
            )
            for h in self.hospitals
        }
        self.runtime.start_superlink(timeout_s)
        for hospital in self.hospitals:
            self.runtime.start_supernode(
                hospital, {"hospital": hospital, "node-dir": str(node_dir_for(self.state_dir, hospital))}
            )
        self.runtime.wait_for_supernodes(timeout_s)
        self.runtime.wait_for_log_line(workers, b"carefed node worker ready", timeout_s)

    def kill_supernode(self, hospital: str) -> None:
        """Simulate a hospital crashing mid-run (SIGKILL: no deregistration)."""
        self.runtime.stop_supernode(hospital, signal.SIGKILL)

    def worker(self, hospital: str) -> subprocess.Popen[bytes]:
        """The hospital's node worker process (the one that trains)."""
        return self.runtime.others[f"worker-{hospital}"]

    def run(
        self,
        request: RunRequest,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 1800.0,
    ) -> RunReport:
        """Submit a run, report progress after each round, wait for it to finish, return its results."""
        started = time.monotonic()
        flower_run = self.submit(request)
        return follow_run(self.runtime, self.state_dir, request.run_id, flower_run, on_progress, timeout_s, started)

    def submit(self, request: RunRequest) -> int:
        """Propose the run, let the hospitals vote, start it through Flower; the Flower run id (`follow_run` it).

        The run config is kept beside the results (`consortium.runs`) so that `resume` can start the same run
        again after a crash.
        """
        config = {
            **self._app_config(
                results_path(self.state_dir, request.run_id), request.min_participants, request.round_timeout_s
            ),
            "num-rounds": request.rounds,
            "he": request.he,
            "epsilon": request.epsilon,
            "spec": request.spec.to_json(),
            "hold-after-round": request.hold_after_round,
            **request.extra,
        }
        self.propose(request.run_id, config, request.votes)
        save_run_config(self.state_dir, request.run_id, config)
        return submit_run(self.runtime, self.state_dir, request.run_id)

    def resume(
        self,
        run_id: str,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 1800.0,
    ) -> RunReport:
        """Start a run whose aggregator stopped (crash, kill, reboot) again with `resume = true`: it continues
        after the last round it checkpointed, or ends the run as failed on the ledger (consortium.server_app)."""
        started = time.monotonic()
        flower_run = submit_run(self.runtime, self.state_dir, run_id, resume=True)
        return follow_run(self.runtime, self.state_dir, run_id, flower_run, on_progress, timeout_s, started)

    def _app_config(self, results_path: Path, min_participants: int, timeout_s: float) -> dict[str, Any]:
        """The run-config keys every task of this consortium shares."""
        return {
            "state-dir": str(self.state_dir),
            "results-path": str(results_path),
            "hospitals": ",".join(self.hospitals),
            "min-participants": min_participants,
            "round-timeout": timeout_s,
            "ledger-backend": self.backend,
        }

    def query(self, spec: QuerySpec, min_participants: int = 2, timeout_s: float = 300.0) -> dict[str, Any]:
        """Register a cohort query on the ledger, run it through Flower, return the aggregator's results file."""
        results_path = self.state_dir / "queries" / f"{spec.query_id}.json"
        results_path.parent.mkdir(parents=True, exist_ok=True)
        register_query(self.state_dir, spec, self.hospitals, backend=self.backend)
        config = {
            **self._app_config(results_path, min_participants, timeout_s / 3),
            "task": "query",
            "query": spec.to_json(),
        }
        outcome = self.runtime.wait_for_run(self.runtime.submit(PROJECT_DIR, config), timeout_s, poll_s=0.5)
        if not results_path.exists():
            raise RuntimeFailure(
                f"query {spec.query_id} wrote no results ({outcome.status}: {outcome.details}); "
                f"see {self.runtime.log_path('superlink')}"
            )
        results: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8"))
        return results

    def propose(self, run_id: str, config: dict[str, Any], votes: dict[str, str]) -> None:
        """Propose the run on the ledger as the consortium, then let each hospital vote with its own identity."""
        propose_run(self.state_dir, self.hospitals, run_id, config, votes, backend=self.backend)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> LocalConsortium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resume_local_run(
    state_dir: Path, run_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> RunReport:
    """`carefed consortium resume`: start this machine's consortium (workers, SuperLink, SuperNodes) from its state
    directory again and resume the run; FileNotFoundError if the run was never started from there."""
    config = saved_run_config(state_dir.resolve(), run_id)
    hospitals = [h for h in str(config["hospitals"]).split(",") if h]
    with LocalConsortium(state_dir, hospitals, backend=str(config["ledger-backend"])) as consortium:
        consortium.start()
        return consortium.resume(run_id, on_progress)
