"""A consortium across hosts, deployed command by command as docs/deployment.md walks hospital IT through it,
each organisation on its own "machine" (a network namespace, harness.namespaces).

Every step is a `carefed` command run on one organisation's machine with that organisation's state directory
only; what travels between organisations is what the guide says an operator sends (the org bundles, the join
bundle, the sealed HE keys and the public context) — copied here between the state directories as e-mail or scp
would carry them — plus what Flower and Fabric carry over TCP with TLS. tests/deployment/ asserts on it and
`bench/round.py --namespaces` times its rounds.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fabric_network.contracts.common import opaque_id
from fabric_network.identities import CONSORTIUM_ORG
from federation.bundles import JOIN_BUNDLE_NAME
from harness.demo_data import DemoData, build_demo_data
from harness.namespaces import NamespaceError, NamespaceNetwork

CAREFED = str(Path(sys.executable).parent / "carefed")
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
EPSILON_LIMIT = 10.0
T = TypeVar("T")


@dataclass
class NamespaceConsortium:
    """The consortium and its hospitals, each in its own namespace with its own state directory."""

    root: Path
    hospitals: tuple[str, ...] = HOSPITALS
    seed: int = 7
    net: NamespaceNetwork = field(init=False)
    data: DemoData = field(init=False)
    he_key_id: str = ""

    def __post_init__(self) -> None:
        self.net = NamespaceNetwork(self.root / "orgs", [CONSORTIUM_ORG, *self.hospitals])

    def state(self, org: str) -> Path:
        return self.net.sites[org].state_dir

    def address(self, org: str) -> str:
        return self.net.sites[org].address

    def carefed(self, org: str, *args: str, timeout_s: float = 600.0) -> str:
        """`carefed ARGS --state-dir <org's state dir>` on the org's machine; its output."""
        return self.net.run(org, [CAREFED, *args, "--state-dir", str(self.state(org))], timeout_s)

    def send(self, source: Path, org: str, name: str | None = None) -> Path:
        """Hand a file to an organisation (the operator's e-mail or scp): into its ``inbox/``."""
        inbox = self.state(org) / "inbox"
        inbox.mkdir(exist_ok=True)
        target = inbox / (name or source.name)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    def log(self, org: str) -> Path:
        return self.root / "logs" / f"{org}.log"

    # --- the guide, step by step ----------------------------------------------------------------------------

    def deploy(self, timeout_s: float = 900.0) -> None:
        """Set up the whole consortium and return when every hospital's node is connected and keyed.

        The hospitals' own steps run side by side, as their IT teams would; the consortium's in order.
        """
        self.net.create()
        self._hospital_data()
        consortium = CONSORTIUM_ORG
        self.carefed(consortium, "org", "init", "--org", consortium, "--host", self.address(consortium))

        def org_init(hospital: str) -> Path:
            self.carefed(hospital, "org", "init", "--org", hospital, "--host", self.address(hospital))
            return self.send(self.state(hospital) / f"{hospital}.bundle.json", consortium)

        for bundle in self._each_hospital(org_init):
            self.carefed(consortium, "consortium", "add-hospital", str(bundle))
        up = [
            CAREFED,
            "consortium",
            "up",
            "--host",
            self.address(consortium),
            "--state-dir",
            str(self.state(consortium)),
        ]
        self.net.spawn(consortium, up, self.log(consortium))
        join_bundle = self._wait_for(self.state(consortium) / JOIN_BUNDLE_NAME, consortium, timeout_s)

        def join_and_start(hospital: str) -> None:
            data = self.state(hospital) / "data"
            self.carefed(
                hospital, "node", "init", "--hospital", hospital, "--data", str(data / "train.csv"),
                "--eval-data", str(data / "eval.csv"), "--schema", str(data / "schema.toml"),
            )  # fmt: skip
            self.carefed(hospital, "node", "join", str(self.send(join_bundle, hospital)), "--hospital", hospital)
            start = [CAREFED, "node", "start", "--hospital", hospital, "--state-dir", str(self.state(hospital))]
            self.net.spawn(hospital, start, self.log(hospital))
            self._wait_for_line(hospital, "SuperNode →", timeout_s)

        self._each_hospital(join_and_start)
        self.carefed(consortium, "consortium", "init-ledger", "--epsilon-limit", repr(EPSILON_LIMIT))
        self._each_hospital(
            lambda h: self.carefed(
                h, "node", "consent", str(self.state(h) / "data" / "consenting.txt"), "--hospital", h
            )
        )
        self._he_key()

    def _each_hospital(self, step: Callable[[str], T]) -> list[T]:
        """Run ``step`` for every hospital at once (each on its own machine); their results in hospital order."""
        with ThreadPoolExecutor(len(self.hospitals)) as pool:
            return list(pool.map(step, self.hospitals))

    def _hospital_data(self) -> None:
        """Each hospital's own records in its own state directory (generated, then the shared copy removed)."""
        inputs = self.root / "inputs"
        self.data = build_demo_data(inputs, list(self.hospitals), seed=self.seed)
        for hospital in self.data.hospitals:
            target = self.state(hospital.name) / "data"
            target.mkdir(parents=True)
            shutil.copyfile(hospital.train_data, target / "train.csv")
            shutil.copyfile(hospital.eval_data, target / "eval.csv")
            shutil.copyfile(self.data.schema, target / "schema.toml")
            (target / "consenting.txt").write_text("\n".join(hospital.consenting) + "\n")
        (self.state(CONSORTIUM_ORG) / "spec.json").write_text(self.data.spec.to_json())
        shutil.rmtree(inputs)

    def _he_key(self) -> None:
        """The first hospital draws the CKKS key and seals it to the others; the consortium gets the public part."""
        creator, *others = self.hospitals
        self.he_key_id = opaque_id("he")
        node = self.state(creator) / "nodes" / creator
        self.carefed(
            creator, "node", "he-key", "create", "--hospital", creator, "--key-id", self.he_key_id,
            "--recipients", ",".join(others), "--recipient-keys", str(node / "members"),
        )  # fmt: skip
        outbox = node / "he-outbox" / self.he_key_id
        for hospital in others:
            sealed = self.send(outbox / f"{hospital}.sealed", hospital)
            self.carefed(hospital, "node", "he-key", "accept", str(sealed), "--hospital", hospital)
        public = self.root / "relay" / self.he_key_id
        public.mkdir(parents=True)
        for name in ("public.ctx", "ceremony.json"):
            shutil.copyfile(outbox / name, public / name)
        self.carefed(CONSORTIUM_ORG, "consortium", "install-he-key", str(self.send(public, CONSORTIUM_ORG)))

    def propose(self, run_id: str, rounds: int, round_timeout_s: float = 120.0, epsilon: float = 3.0) -> None:
        """The consortium proposes a run; every hospital approves it with its own identity."""
        self.carefed(
            CONSORTIUM_ORG, "consortium", "propose", run_id, "--hospitals", ",".join(self.hospitals),
            "--spec", str(self.state(CONSORTIUM_ORG) / "spec.json"), "--rounds", str(rounds),
            "--epsilon", repr(epsilon), "--round-timeout", repr(round_timeout_s), "--backend", "fabric",
        )  # fmt: skip
        self._each_hospital(lambda h: self.carefed(h, "node", "approve", run_id, "--hospital", h, "--yes"))

    def run(self, run_id: str, timeout_s: float = 1800.0) -> str:
        """`carefed consortium run` to its end; its output (one line per round)."""
        return self.carefed(CONSORTIUM_ORG, "consortium", "run", run_id, timeout_s=timeout_s)

    def results(self, run_id: str) -> dict[str, Any]:
        """The run's results file at the consortium (rounds, participants, dropped hospitals, timings)."""
        path = self.state(CONSORTIUM_ORG) / "runs" / f"{run_id}.json"
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {"rounds": []}

    def stop(self) -> dict[str, list[int]]:
        """SIGTERM every organisation's long-running commands; what was left running in each namespace."""
        left = {org: self.net.stop(org) for org in self.hospitals}
        left[CONSORTIUM_ORG] = self.net.stop(CONSORTIUM_ORG)
        return left

    def destroy(self) -> None:
        self.net.destroy()

    # --- waiting --------------------------------------------------------------------------------------------

    def _alive_or_fail(self, org: str) -> None:
        for process in self.net.processes.get(org, []):
            if process.poll() is not None:
                tail = self.log(org).read_text(errors="replace")[-3000:]
                raise NamespaceError(f"{org}'s long-running command exited with {process.returncode}:\n{tail}")

    def _wait_until(self, org: str, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll ``done`` while ``org``'s long-running commands live; fail naming ``what`` and the org's log."""
        deadline = time.monotonic() + timeout_s
        while not done():
            self._alive_or_fail(org)
            if time.monotonic() > deadline:
                raise NamespaceError(f"{what} within {timeout_s:.0f} s; see {self.log(org)}")
            time.sleep(0.5)

    def _wait_for(self, path: Path, org: str, timeout_s: float) -> Path:
        self._wait_until(org, path.exists, f"{path} did not appear", timeout_s)
        return path

    def _wait_for_line(self, org: str, line: str, timeout_s: float) -> None:
        def printed() -> bool:
            return line in self.log(org).read_text(errors="replace")

        self._wait_until(org, printed, f"{org} did not print {line!r}", timeout_s)
