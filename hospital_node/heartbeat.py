"""The node's heartbeat to the CareFed service: `PUT /nodes/{id}/heartbeat`, what the service's nodes page shows.

`carefed node start` sends ``idle`` every ``interval_s`` while its processes run, ``failed`` when one of them
exits and ``stopped`` on a clean shutdown. The node signs in as a hospital IT account of its own hospital (the
only role allowed to report heartbeats) with a password from the environment, never from the command line, and
signs in again when its token expires. A service that does not answer never stops the node: a missed heartbeat
is logged and the next one tries again.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class HeartbeatSettings(BaseSettings):
    """Where and as whom to report: ``CAREFED_NODE_API_*`` (all unset: no heartbeat)."""

    model_config = SettingsConfigDict(env_prefix="CAREFED_NODE_API_", extra="ignore")

    url: str | None = Field(default=None, description="The service's base URL, e.g. https://carefed.example:8000.")
    node_id: int | None = Field(default=None, description="The node's id, as `POST /nodes` answered.")
    username: str | None = Field(default=None, description="A hospital_it account of the node's hospital.")
    password: SecretStr | None = Field(default=None, description="Its password.")
    ca_file: Path | None = Field(default=None, description="CA certificate of the service's TLS certificate.")
    interval_s: float = Field(default=30.0, gt=0, description="Seconds between heartbeats.")

    def missing(self) -> list[str]:
        """The settings a heartbeat still needs, as environment variable names."""
        needed = {"url": self.url, "node_id": self.node_id, "username": self.username, "password": self.password}
        return [f"CAREFED_NODE_API_{name.upper()}" for name, value in needed.items() if value is None]


class Heartbeat:
    """Reports the node's state to the service, by hand (`send`) or every ``interval_s`` (`start`/`stop`)."""

    def __init__(self, settings: HeartbeatSettings, version: str, client: httpx.Client | None = None) -> None:
        if settings.missing():
            raise ValueError(f"heartbeat: set {', '.join(settings.missing())}")
        self.settings = settings
        self.version = version
        verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        self._client = client or httpx.Client(base_url=str(settings.url), verify=verify, timeout=10)
        self._token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, version: str) -> Heartbeat | None:
        """The heartbeat ``CAREFED_NODE_API_*`` configures; None when no service URL is set (no service)."""
        settings = HeartbeatSettings()
        return None if settings.url is None else cls(settings, version)

    def _sign_in(self) -> str:
        assert self.settings.password is not None
        response = self._client.post(
            "/login/access-token",
            data={"username": self.settings.username, "password": self.settings.password.get_secret_value()},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def send(self, state: str) -> bool:
        """One heartbeat; True when the service accepted it (a failure is logged, never raised)."""
        try:
            for attempt in range(2):
                self._token = self._token or self._sign_in()
                response = self._client.put(
                    f"/nodes/{self.settings.node_id}/heartbeat",
                    json={"state": state, "software_version": self.version},
                    headers={"Authorization": f"Bearer {self._token}"},
                )
                if response.status_code == 401 and attempt == 0:
                    self._token = None  # expired: sign in once more
                    continue
                response.raise_for_status()
                return True
        except httpx.HTTPError as exc:
            log.warning("heartbeat to %s failed: %s", self.settings.url, exc)
        return False

    def start(self, state: str = "idle") -> None:
        """Send `state` now and then every ``interval_s`` from a daemon thread until `stop`."""

        def run() -> None:
            while not self._stop.is_set():
                self.send(state)
                self._stop.wait(self.settings.interval_s)

        self._thread = threading.Thread(target=run, name="carefed-node-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, final_state: str) -> None:
        """Stop the periodic heartbeat and report `final_state` (``stopped`` or ``failed``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.interval_s + 10)
        self.send(final_state)
        self._client.close()
