"""The README is a test: every command block, in order, exactly as written, on one `carefed demo` state.

A newcomer runs `make demo`, then the README's commands in the same directory. This test does the same in a copy
of the session's demo workspace (`demo_workspace`, shared with the compliance checks) and fails on the first
non-zero exit. What it cannot run verbatim, it changes in the open, here:

- `make demo` is the shared demo already run in this workspace (`carefed demo --rounds 2`); `make test` is this
  very run.
- Words in capitals are the README's placeholders: RUN, MODEL, PSEUDONYM, MRN and F (the CA fingerprint
  `audit export` printed) are filled in from the demo's own output.
- `carefed api … --port 8000` runs in the background on a free port until a clinician has signed in and scored
  a patient with the demo's model through it.
- A benchmark (`python bench/…`, `python -m bench.…`) runs for minutes: it is started with `--help` appended,
  which proves the script starts in the form the README writes; it runs in the clone, where bench/ is (the
  workspace copy holds only the demo's `.carefed/` and `runs/`).
- The copy's node configurations name the copy's data and ledger, not the original's (`node.toml` holds absolute
  paths), so `carefed query` asks hospitals that read the same ledger it registered the query on.
- A block right after `<!-- readme-flow: skip (reason) -->` is not run (the Fabric network: tests/fabric runs it).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from federation.layout import node_dir_for
from hospital_node.pseudonyms import PseudonymTable

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-flow:\s*skip\b")
PASSWORD = "a-long-demo-password"
pytestmark = pytest.mark.timeout(1800)


def readme_blocks(text: str) -> list[list[str]]:
    """The commands of every ```bash block not marked skip, comments and blank lines removed."""
    blocks, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != "```bash":
            continue
        marked = index > 0 and SKIP.search(lines[index - 1])
        body = []
        for command in lines[index + 1 :]:
            if command.strip() == "```":
                break
            command = re.sub(r"\s+#\s.*$", "", command).strip()
            if command and not command.startswith("#"):
                body.append(command)
        if not marked:
            blocks.append(body)
    return blocks


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Newcomer:
    """Runs commands the way a user does: a shell in the workspace, the project's `carefed` and `python` first."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.env["CAREFED_API_NEW_PASSWORD"] = PASSWORD  # what the user types at the password prompt
        for name in ("CAREFED_STATE_DIR", "CAREFED_ORG", "CAREFED_LEDGER_BACKEND"):
            self.env.pop(name, None)  # the README's defaults, not the tester's environment
        self.values: dict[str, str] = {}
        self.ran: list[str] = []

    def fill(self, command: str) -> str:
        for placeholder, value in self.values.items():
            command = re.sub(rf"\b{placeholder}\b", value, command)
        return command

    def run(self, command: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd or self.workspace,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"`{command}` exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        self.ran.append(command)
        return done.stdout

    def serve_and_predict(self, command: str) -> None:
        port = _free_port()
        command = re.sub(r"--port \d+", f"--port {port}", command)
        server = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=self.workspace, env=self.env, stderr=subprocess.PIPE, text=True
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, f"`{command}` exited: {server.stderr.read() if server.stderr else ''}"
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the service did not answer /health within 120 s"
                time.sleep(0.5)
            self._clinician_scores_a_patient(base)
            self.ran.append(command)
        finally:
            server.terminate()
            server.wait(timeout=30)

    def _clinician_scores_a_patient(self, base: str) -> None:
        token = httpx.post(
            f"{base}/login/access-token", data={"username": "dr-a", "password": PASSWORD}, timeout=30
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        models = httpx.get(f"{base}/models", headers=headers, timeout=60).json()["items"]
        (model,) = [m for m in models if m["model_id"] == self.values["MODEL"]]
        features = [f["name"] for f in model["features"]]
        holdout = self.workspace / ".carefed" / "hospital-data" / "hospital-a" / "holdout.csv"
        row = next(csv.DictReader(holdout.open()))
        answer = httpx.post(
            f"{base}/models/{model['model_id']}/predict",
            json={"features": {name: float(row[name]) for name in features}},
            headers=headers,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        prediction = answer.json()
        assert 0 <= prediction["risk_score"] <= 1 and len(prediction["model_sha256"]) == 64


def _demo_values(workspace: Path) -> dict[str, str]:
    """RUN, MODEL, PSEUDONYM and MRN as a user reads them from the demo's output."""
    (run_dir,) = [p for p in (workspace / "runs").iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    state = workspace / ".carefed"
    patients = state / "hospital-data" / "hospital-a" / "patients.csv"
    with PseudonymTable(node_dir_for(state, "hospital-a") / "pseudonyms.sqlite") as table:  # a registered patient
        mrn = next(row["mrn"] for row in csv.DictReader(patients.open()) if table.lookup(row["mrn"]))
    events = subprocess.run(
        [sys.executable, "-m", "carefed", "ledger", "events", "--json"], cwd=workspace, capture_output=True, text=True
    ).stdout.splitlines()
    pseudonym = next(json.loads(e)["payload"]["pseudonym"] for e in events if '"ConsentRecorded"' in e)
    return {"RUN": results["run_id"], "MODEL": results["model_id"], "PSEUDONYM": pseudonym, "MRN": mrn}


def test_every_readme_command_block_runs_as_written_after_the_demo(demo_workspace: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "newcomer"
    workspace.mkdir()
    for name in (".carefed", "runs"):
        shutil.copytree(demo_workspace / name, workspace / name)
    for node_toml in (workspace / ".carefed" / "nodes").glob("*/node.toml"):  # the demo wrote absolute paths
        node_toml.write_text(node_toml.read_text().replace(str(demo_workspace), str(workspace)))
    newcomer = Newcomer(workspace)
    newcomer.values = _demo_values(workspace)
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 4 and any("make demo" in c for c in blocks[0])
    for block in blocks:
        for written in block:
            command = newcomer.fill(written)
            if command in ("make demo", "make test"):
                continue
            if re.match(r"python (-m bench\.|bench/)", command):
                newcomer.run(f"{command} --help", cwd=ROOT)  # the scripts live in the clone
            elif command.startswith("carefed api ") and "--port" in command:
                newcomer.serve_and_predict(command)
            else:
                output = newcomer.run(command)
                found = re.search(r"consortium CA fingerprint \(SHA-256\) ([0-9a-f]{64})", output)
                if found:
                    newcomer.values["F"] = found.group(1)
    assert any(c.startswith("carefed audit verify") and "--ca-fingerprint" in c for c in newcomer.ran)
    assert any(c.startswith("carefed ledger verify") for c in newcomer.ran)
    assert any(c.startswith("carefed api --state-dir") for c in newcomer.ran)
