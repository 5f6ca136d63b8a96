"""The Python shim's faults (docs/fabric-facts.md §8), each shown on the upstream shim and fixed by CareFed's service.

A fake peer speaks the real chaincode protocol over real gRPC to the chaincode server: it reads REGISTER,
answers REGISTERED and READY, sends a signed TRANSACTION proposal and serves the state requests. Every test
runs against the upstream server (``xfail(strict=True)``: it must fail there, so each fault stays proven) and
against CareFed's (must pass).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from fabric_chaincode_python.fabric_shim import server as upstream_server  # the unfixed server, for contrast
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, chaincode_shim_pb2_grpc, proposal_response_pb2

from fabric_network.fabric.chaincode_service import ChaincodeServerSettings, build_server
from fabric_network.fabric.messages import new_proposal
from fabric_network.identities import SigningIdentity, identity_for, init_identities
from fabric_network.shim import ContractChaincode, DropLibraryPayloadLogs
from tests.fabric.pki import TestCA
from tests.fabric.shim_contract import ShimProbeContract

# A gRPC chaincode server per test, sized for a loaded 2-core machine.
pytestmark = pytest.mark.timeout(300)

Message = chaincode_shim_pb2.ChaincodeMessage
T = TypeVar("T")
CHANNEL = "carefed"
SECRET = "patient-secret-7f3a9c"  # an argument value that must never reach a log

upstream_fault = pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="fault of the upstream fabric-chaincode-python shim"
)
SERVERS = [pytest.param("upstream", marks=upstream_fault), "carefed"]


@dataclass
class FakePeer:
    """The peer side of one chaincode stream: serves state from a dict, or answers ERROR when told to."""

    state: dict[str, bytes] = field(default_factory=dict)
    fail_requests_with: str | None = None
    requests: list[int] = field(default_factory=list)
    write_batch: int = 0  # announced in READY as Fabric 3 peers do (useWriteBatch, maxSizeWriteBatch); 0 = off

    def ready(self) -> Message:
        """READY, carrying ChaincodeAdditionalParams{use_write_batch=1, max_size_write_batch=2} when batching."""
        if not self.write_batch:
            return Message(type=Message.READY)
        size, varint = self.write_batch, bytearray()
        while size >= 0x80:
            varint.append(size & 0x7F | 0x80)
            size >>= 7
        varint.append(size)
        return Message(type=Message.READY, payload=bytes([0x08, 0x01, 0x10, *varint]))

    async def transact(self, address: str, args: list[str], identity: SigningIdentity | None = None) -> Message:
        proposal = new_proposal(identity or _identity(), CHANNEL, "carefed", [a.encode() for a in args])
        async with grpc.aio.insecure_channel(address) as channel:
            call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
            register = await call.read()
            assert register.type == Message.REGISTER
            await call.write(Message(type=Message.REGISTERED))
            await call.write(self.ready())
            await call.write(
                Message(
                    type=Message.TRANSACTION,
                    txid=proposal.transaction_id,
                    channel_id=CHANNEL,
                    payload=chaincode_pb2.ChaincodeInput(args=[a.encode() for a in args]).SerializeToString(),
                    proposal=proposal.signed,
                )
            )
            while True:
                message = await asyncio.wait_for(call.read(), timeout=10)
                if message.type in (Message.COMPLETED, Message.ERROR):
                    await call.done_writing()
                    return message
                await call.write(self._answer(message))

    async def transact_concurrently(self, address: str, transactions: list[list[str]]) -> dict[str, Message]:
        """Send every transaction on one stream at once, as a busy peer does; each one's final message by tx id
        (a transaction whose COMPLETED never comes is missing after a quiet 3 s).

        A writer task sends the transactions while this task reads and answers, as a real peer's separate send
        and receive loops do: a peer that wrote everything before reading would deadlock against any server
        whose own writes wait for the peer to read (gRPC flow control), and prove nothing about the server.
        """
        proposals = [new_proposal(_identity(), CHANNEL, "carefed", [a.encode() for a in args]) for args in transactions]
        finished: dict[str, Message] = {}
        async with grpc.aio.insecure_channel(address) as channel:
            call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
            assert (await call.read()).type == Message.REGISTER
            await call.write(Message(type=Message.REGISTERED))
            await call.write(self.ready())
            one_writer = asyncio.Lock()  # a gRPC stream takes one write at a time

            async def send_transactions() -> None:
                for proposal, args in zip(proposals, transactions, strict=True):
                    message = Message(
                        type=Message.TRANSACTION,
                        txid=proposal.transaction_id,
                        channel_id=CHANNEL,
                        payload=chaincode_pb2.ChaincodeInput(args=[a.encode() for a in args]).SerializeToString(),
                        proposal=proposal.signed,
                    )
                    async with one_writer:
                        await call.write(message)

            writer = asyncio.create_task(send_transactions())
            try:
                while len(finished) < len(transactions):
                    try:
                        message = await asyncio.wait_for(call.read(), timeout=3)
                    except TimeoutError:
                        break
                    if message is grpc.aio.EOF:
                        break
                    if message.type in (Message.COMPLETED, Message.ERROR):
                        finished[message.txid] = message
                    else:
                        async with one_writer:
                            await call.write(self._answer(message))
            finally:
                writer.cancel()
                call.cancel()  # end the stream whatever state the server left it in
        return finished

    def _answer(self, request: Message) -> Message:
        self.requests.append(request.type)
        reply = Message(type=Message.RESPONSE, txid=request.txid, channel_id=request.channel_id)
        if self.fail_requests_with is not None:
            reply.type, reply.payload = Message.ERROR, self.fail_requests_with.encode()
        elif request.type == Message.GET_STATE:
            reply.payload = self.state.get(chaincode_shim_pb2.GetState.FromString(request.payload).key, b"")
        elif request.type == Message.PUT_STATE:
            put = chaincode_shim_pb2.PutState.FromString(request.payload)
            self.state[put.key] = put.value
        elif request.type == Message.WRITE_BATCH_STATE:
            batch = chaincode_shim_pb2.WriteBatchState.FromString(request.payload)
            assert len(batch.rec) <= self.write_batch, "a batch larger than the peer announced"
            for record in batch.rec:
                if record.type == chaincode_shim_pb2.WriteRecord.PUT_STATE:
                    self.state[record.key] = record.value
                else:
                    self.state.pop(record.key, None)
        return reply


_IDENTITY: list[SigningIdentity] = []


def _identity() -> SigningIdentity:
    if not _IDENTITY:
        leaf = TestCA("hospital-a-ca").issue("user1")
        _IDENTITY.append(SigningIdentity("HospitalAMSP", "User1@hospital-a", "client", leaf.cert_pem, leaf.key))
    return _IDENTITY[0]


async def serving_probe(kind: str, exchange: Callable[[str], Awaitable[T]]) -> T:
    """Serve the probe contract with the chosen server on a free port, run `exchange(address)`, stop the server."""
    chaincode = ContractChaincode.new_chaincode(ShimProbeContract())
    address = f"127.0.0.1:{_free_port()}"
    if kind == "upstream":
        server = upstream_server._internal_server(ccid="probe:1", address=address, cc=chaincode)
    else:
        server, _ = build_server(chaincode, ChaincodeServerSettings(chaincode_id="probe:1", address=address))
    await server.start()
    try:
        return await exchange(address)
    finally:
        await server.stop(None)


def run_transaction(kind: str, peer: FakePeer, args: list[str]) -> Message:
    """Serve the probe contract with the chosen server and run one transaction through the fake peer."""
    return asyncio.run(serving_probe(kind, lambda address: peer.transact(address, args)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _response(message: Message) -> proposal_response_pb2.Response:
    assert message.type == Message.COMPLETED, message
    return proposal_response_pb2.Response.FromString(message.payload)


@pytest.mark.parametrize("kind", SERVERS)
def test_event_set_by_the_contract_reaches_the_peer(kind: str) -> None:
    completed = run_transaction(kind, FakePeer(), ["Probe:record", "k1", "v1"])
    assert _response(completed).status == 200
    assert completed.chaincode_event.event_name == "Recorded"
    assert completed.chaincode_event.payload == b"k1"


@pytest.mark.parametrize("kind", SERVERS)
def test_peer_error_reply_fails_the_transaction(kind: str) -> None:
    peer = FakePeer(state={"k1": b"stored"}, fail_requests_with="ledger unavailable: disk I/O error")
    response = _response(run_transaction(kind, peer, ["Probe:read", "k1"]))
    assert peer.requests == [Message.GET_STATE]
    assert response.status == 500, f"the peer's error came back as the value {response.payload!r}"
    assert "ledger unavailable" in response.message


CONCURRENT_TRANSACTIONS = 300
CONCURRENT_VALUE = "v" * 100_000


def concurrent_transactions_scenario(kind: str) -> None:
    """Run in a child process by the test below: 300 transactions on one stream against the chosen server.

    Values are larger than gRPC's 64 KiB flow-control window, so the server's PUT_STATE writes of concurrent
    transactions overlap on every run, on a quiet machine as on a busy one (small values overlapped by chance).
    """
    peer = FakePeer()
    transactions = [["Probe:record", f"k{i}", f"{i}{CONCURRENT_VALUE}"] for i in range(CONCURRENT_TRANSACTIONS)]
    finished = asyncio.run(serving_probe(kind, lambda address: peer.transact_concurrently(address, transactions)))
    assert len(finished) == len(transactions), f"{len(transactions) - len(finished)} transactions never completed"
    assert all(_response(message).status == 200 for message in finished.values())
    assert peer.state == {f"k{i}": f"{i}{CONCURRENT_VALUE}".encode() for i in range(CONCURRENT_TRANSACTIONS)}


@pytest.mark.parametrize("kind", SERVERS)
def test_concurrent_transactions_on_one_stream_all_complete(kind: str) -> None:
    """The scenario runs in a child process with a hard deadline: a server that deadlocks its stream (the
    upstream shim can) must fail this test, not hang the test run (an event loop stuck in a gRPC write outlives
    pytest-timeout's signal)."""
    code = f"from tests.fabric.test_shim import concurrent_transactions_scenario as run; run({kind!r})"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as stuck:
        raise AssertionError(f"the {kind} server deadlocked: no result within {stuck.timeout} s") from None
    assert child.returncode == 0, child.stderr[-3000:]


def test_a_transactions_writes_travel_in_batches_when_the_peer_takes_them() -> None:
    peer = FakePeer(write_batch=2)
    keys = ",".join(f"k{i}" for i in range(5))
    assert _response(run_transaction("carefed", peer, ["Probe:record_many", keys, "v"])).status == 200
    assert peer.requests == [Message.WRITE_BATCH_STATE] * 3  # 5 writes, at most 2 per batch
    assert peer.state == {f"k{i}": b"v" for i in range(5)}
    refused = FakePeer(write_batch=2)
    assert _response(run_transaction("carefed", refused, ["Probe:record_many", "k0,bad key", "v"])).status == 500
    assert refused.requests == [] and refused.state == {}, "a refused transaction sends no writes"


def test_successful_reads_and_writes_still_work() -> None:
    peer = FakePeer()
    assert _response(run_transaction("carefed", peer, ["Probe:record", "k1", "v1"])).status == 200
    assert peer.state == {"k1": b"v1"}
    assert _response(run_transaction("carefed", peer, ["Probe:read", "k1"])).payload == b"v1"


@pytest.mark.parametrize("kind", SERVERS)
def test_no_argument_value_is_logged(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """Even with the shim's logger turned up to DEBUG, CareFed's filter keeps argument values out of the logs."""
    shim_logger = logging.getLogger("asyncio")
    level, filters = shim_logger.level, list(shim_logger.filters)
    shim_logger.setLevel(logging.DEBUG)
    if kind == "upstream":  # without fabric_network.shim's correction
        for payload_filter in [f for f in filters if isinstance(f, DropLibraryPayloadLogs)]:
            shim_logger.removeFilter(payload_filter)
    try:
        with caplog.at_level(logging.DEBUG):
            completed = run_transaction(kind, FakePeer(), ["Probe:record", "k1", SECRET])
            _wait_until_logged(shim_logger, caplog)
    finally:
        shim_logger.setLevel(level)
        shim_logger.filters[:] = filters
    assert _response(completed).status == 200
    leaked = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert leaked == []


def _wait_until_logged(logger: logging.Logger, caplog: pytest.LogCaptureFixture, timeout: float = 30.0) -> None:
    """Drain the shim's log queue: log a marker after the transaction and wait until it reaches the capture.

    The shim hands records to a queue listener thread; records queue in order, so once the marker has arrived
    every record of the transaction has too, however slow the machine (a fixed sleep lets the test pass early).
    """
    marker = f"log-drain-marker-{secrets.token_hex(4)}"
    logger.warning(marker)
    deadline = time.monotonic() + timeout
    while not any(marker in record.getMessage() for record in caplog.records):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shim's log queue did not deliver a record within {timeout} s")
        time.sleep(0.01)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"chaincode server did not listen on {port}")


def _tls_handshake(port: int, ca_file: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            return f"no TLS: {exc}"


STARTERS: dict[str, Callable[[], str]] = {
    "upstream": lambda: (
        "from fabric_chaincode_python.fabric_contract_api import ContractChaincode\n"
        "from tests.fabric.shim_contract import ShimProbeContract\n"
        "ContractChaincode.new_chaincode(ShimProbeContract()).start()\n"
    ),
    "carefed": lambda: (
        "from fabric_network.fabric.chaincode_service import main\n"
        "main(['--contract', 'tests.fabric.shim_contract:ShimProbeContract'])\n"
    ),
}


@pytest.mark.parametrize("kind", SERVERS)
def test_tls_settings_from_the_environment_are_honoured(kind: str, tmp_path: Path) -> None:
    ca = TestCA("chaincode-tls-ca")
    key_path, cert_path = ca.write_leaf(tmp_path, "chaincode")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "CHAINCODE_ID": "probe:1",
        "CHAINCODE_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "CORE_TLS_CLIENT_KEY_PATH": str(key_path),
        "CORE_TLS_CLIENT_CERT_PATH": str(cert_path),
    }
    process = subprocess.Popen([sys.executable, "-c", STARTERS[kind]()], env=env, stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, process)
        assert _tls_handshake(port, tmp_path / "ca.pem") in ("TLSv1.2", "TLSv1.3")
    finally:
        process.kill()
        process.wait()


def test_half_configured_tls_is_refused_naming_the_variables() -> None:
    with pytest.raises(ValueError, match="CORE_TLS_CLIENT_KEY_PATH and CORE_TLS_CLIENT_CERT_PATH"):
        ChaincodeServerSettings(chaincode_id="probe:1", address="127.0.0.1:0", tls_key_file=Path("/k.pem"))


def test_the_chaincode_server_process_logs_no_argument_values(tmp_path: Path) -> None:
    """The real entry point with CareFed's contracts: a consent is recorded, the pseudonym appears in no log."""
    consortium = init_identities(tmp_path / "state", ["hospital-a"])
    user = identity_for(consortium, "hospital-a")
    pseudonym = secrets.token_hex(32)
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "CHAINCODE_ID": "carefed_1.0:test",
        "CHAINCODE_SERVER_ADDRESS": f"127.0.0.1:{port}",
    }
    log = tmp_path / "chaincode.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "fabric_network.fabric.chaincode_service"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process)
        peer = FakePeer()
        args = ["ConsentContract:record_consent", pseudonym, "HRESCH", "research", "2026-01-01T00:00:00Z", ""]
        completed = asyncio.run(peer.transact(f"127.0.0.1:{port}", args, identity=user))
        assert _response(completed).status == 200, _response(completed).message
        assert any(pseudonym.encode() in value for value in peer.state.values())  # it did reach the ledger
    finally:
        process.terminate()
        process.wait()
    assert log.read_text().strip(), "the server logged nothing at all: the check would be vacuous"
    assert pseudonym not in log.read_text()
