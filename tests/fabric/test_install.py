"""`carefed fabric install`: Go version check, readable failures, skipping when installed, --from checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric_network.fabric import install as fabric_install
from fabric_network.fabric.install import FabricHome, FabricInstallError


@pytest.mark.parametrize(
    ("text", "version"),
    [("go1.26.8", (1, 26, 8)), ("go version go1.26 linux/amd64", (1, 26, 0)), ("go1.27.3", (1, 27, 3))],
)
def test_go_versions_are_read(text: str, version: tuple[int, int, int]) -> None:
    assert fabric_install.parse_go_version(text) == version


def test_a_too_old_go_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric_install.shutil, "which", lambda _: "/usr/local/go/bin/go")
    monkeypatch.setattr(fabric_install, "_run", lambda command, **_: "go1.26.3\n")
    with pytest.raises(FabricInstallError, match=r"Go 1\.26\.3 is too old: .* needs Go >= 1\.26\.4"):
        fabric_install.check_go()


def test_a_missing_go_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric_install.shutil, "which", lambda _: None)
    with pytest.raises(FabricInstallError, match=r"Go is not installed .* needs Go >= 1\.26\.4"):
        fabric_install.check_go()


def test_a_proxy_refusal_says_what_to_do_instead() -> None:
    stderr = (
        "go: github.com/hyperledger/fabric@86c1172bec37: reading https://proxy.golang.org/...: 403 Forbidden\n"
        "\tserver response: This module version is not available."
    )
    message = fabric_install.explain_go_failure("go mod download", stderr)
    assert "refuses to serve github.com/hyperledger/fabric" in message
    assert "carefed fabric install --from <dir>" in message


def _fill(home: FabricHome) -> None:
    for path in [home.binary(c) for c in fabric_install.FABRIC_COMMANDS]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    for name in fabric_install.CCAAS_COMMANDS:
        (home.ccaas_builder / "bin").mkdir(parents=True, exist_ok=True)
        (home.ccaas_builder / "bin" / name).write_text("")
    home.config.mkdir(parents=True, exist_ok=True)
    for name in fabric_install.SAMPLE_CONFIGS:
        (home.config / name).write_text("")


def test_an_installed_home_is_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = FabricHome(tmp_path)
    _fill(home)

    def no_build(_: FabricHome) -> None:
        raise AssertionError("must not build again")

    monkeypatch.setattr(fabric_install, "install_from_source", no_build)
    assert fabric_install.install(home) is False


def test_from_a_directory_that_is_not_a_release_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "release" / "bin").mkdir(parents=True)
    with pytest.raises(FabricInstallError, match=r"not an unpacked Fabric release archive: .*bin/peer is missing"):
        fabric_install.install(FabricHome(tmp_path / "home"), tmp_path / "release")
