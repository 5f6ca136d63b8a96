"""Running a researcher's query at the consortium: a `carefed query` process per query, one at a time.

The service does not embed the Flower orchestration (api/ never imports harness/): it starts the same command a
consortium operator would run, `carefed query … --json`, with the query id and the requester's opaque id, and
reads the outcome back from the ledger and the aggregator's results file (`<state_dir>/queries/<id>.json`).
Queries queue on a lock file, so two requests never start two consortium runtimes at once. Cohorts are the
consortium's published schema files in `<state_dir>/cohorts/`: a researcher names one, never uploads rules.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from api.core.problems import ProblemError
from api.models.query import QueryCreate
from carefed.options import QueryKind

# The query processes this service started (polled, so an ended one is reaped rather than left a zombie).
_STARTED: dict[str, subprocess.Popen[bytes]] = {}


def cohorts_dir(state_dir: Path) -> Path:
    return state_dir / "cohorts"


def queries_dir(state_dir: Path) -> Path:
    return state_dir / "queries"


def published_cohorts(state_dir: Path) -> list[str]:
    directory = cohorts_dir(state_dir)
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.exists() else []


def launch_query(state_dir: Path, body: QueryCreate, requester: str) -> str:
    """Check the query as the CLI would, then start it in the background; its id."""
    from hospital_node.analytics import build_query

    cohort = cohorts_dir(state_dir) / f"{body.cohort}.toml"
    if not cohort.exists():
        raise ProblemError(
            404, f"no published cohort {body.cohort!r}; published: {published_cohorts(state_dir)}", field="cohort"
        )
    if body.kind != QueryKind.COUNT and not body.column:
        raise ProblemError(422, f"a {body.kind.value} query needs a column of the cohort", field="column")
    try:
        spec = build_query(
            body.kind.value,
            cohort,
            column=body.column if body.kind != QueryKind.COUNT else "",
            bins=body.bins,
            by=body.by,
            epsilon=body.epsilon,
            min_count=body.min_count,
            purpose=body.purpose,
        )
    except ValueError as exc:
        raise ProblemError(422, str(exc), field=str(exc).split(":", 1)[0].lstrip("-")) from exc
    directory = queries_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "carefed", "query", body.kind.value, *([body.column] if body.column else []),
        "--cohort", str(cohort), "--bins", body.bins, "--by", body.by, "--epsilon", repr(body.epsilon),
        "--min-count", str(body.min_count), "--purpose", body.purpose, "--state-dir", str(state_dir),
        "--query-id", spec.query_id, "--requester", requester, "--role", "researcher", "--json",
        "--plot", str(directory / f"{spec.query_id}.png"),
    ]  # fmt: skip
    log = (directory / f"{spec.query_id}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _STARTED[spec.query_id] = process
    (directory / f"{spec.query_id}.request.json").write_text(
        json.dumps({"pid": process.pid, "requester": requester, "query": body.model_dump(mode="json")}),
        encoding="utf-8",
    )
    return spec.query_id


def _alive(query_id: str, pid: int) -> bool:
    if query_id in _STARTED:
        return _STARTED[query_id].poll() is None
    try:  # started by an earlier run of the service
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_outcome(state_dir: Path, query_id: str) -> dict[str, Any] | None:
    """What this consortium knows of a query beyond the ledger: its results file, or why its process ended."""
    directory = queries_dir(state_dir)
    results = directory / f"{query_id}.json"
    if results.exists():
        outcome: dict[str, Any] = json.loads(results.read_text(encoding="utf-8"))
        return outcome
    request = directory / f"{query_id}.request.json"
    if not request.exists():
        return None
    pid = int(json.loads(request.read_text(encoding="utf-8"))["pid"])
    if _alive(query_id, pid):
        return {"status": "queued"}
    log = directory / f"{query_id}.log"
    tail = log.read_text(encoding="utf-8", errors="replace")[-600:] if log.exists() else ""
    return {"status": "failed", "events": [f"the query process ended without a result: {tail.strip()}"]}
