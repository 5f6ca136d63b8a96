"""Install the Hyperledger Fabric v3.1.5 binaries CareFed's native network runs on.

Two sources, both landing in one per-version cache directory outside the repository
(``~/.cache/carefed/fabric/v3.1.5/{bin,builders/ccaas/bin,config}``) so that every state directory and
every clone of CareFed on the machine share one build:

* ``go install`` at the pinned commit (the default). Fabric's module path has no ``/v3`` suffix, so the
  release tag cannot be named; the commit is. Go's own caches stay the default ones (no GOFLAGS/GOPATH games),
  so CI and a developer machine reuse what is already downloaded.
* ``--from DIR``: an unpacked official release archive (``bin/``, ``config/``, ``builders/ccaas/bin/``), for
  hospitals whose Go proxy does not serve Fabric's modules.

The sample ``core.yaml``/``orderer.yaml`` come from the Fabric module in Go's module cache (or the release
archive), never from anywhere else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

FABRIC_VERSION = "v3.1.5"
FABRIC_MODULE = "github.com/hyperledger/fabric"
CCAAS_MODULE = "github.com/hyperledger/fabric/ccaas_builder"
# Tag v3.1.5 is commit 86c1172b (2026-06-18 07:48:16 UTC); Go names it by this pseudo-version.
FABRIC_PSEUDO_VERSION = "v1.4.0-rc1.0.20260618074816-86c1172bec37"
FABRIC_COMMIT = "86c1172bec37"
MIN_GO = (1, 26, 4)

FABRIC_COMMANDS = ("peer", "orderer", "configtxgen", "osnadmin")
CCAAS_COMMANDS = ("detect", "build", "release")
SAMPLE_CONFIGS = ("core.yaml", "orderer.yaml")


class FabricInstallError(RuntimeError):
    """Installing the Fabric binaries failed; the message says what to do."""


@dataclass(frozen=True)
class FabricHome:
    """Where one Fabric version's binaries, builder and sample configuration live."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def ccaas_builder(self) -> Path:
        """The directory core.yaml's ``externalBuilders[].path`` points at (it must contain ``bin/``)."""
        return self.root / "builders" / "ccaas"

    @property
    def config(self) -> Path:
        return self.root / "config"

    def binary(self, name: str) -> Path:
        return self.bin / name

    def missing(self) -> list[Path]:
        """Every file a network needs that is not installed yet."""
        wanted = [self.binary(c) for c in FABRIC_COMMANDS]
        wanted += [self.ccaas_builder / "bin" / c for c in CCAAS_COMMANDS]
        wanted += [self.config / c for c in SAMPLE_CONFIGS]
        return [p for p in wanted if not p.is_file()]

    def require_installed(self) -> None:
        missing = self.missing()
        if missing:
            raise FabricInstallError(
                f"Fabric {FABRIC_VERSION} is not installed in {self.root} (missing {missing[0].name}); "
                "run `carefed fabric install` first."
            )


def default_fabric_home() -> FabricHome:
    """``$CAREFED_FABRIC_HOME``, else ``$XDG_CACHE_HOME/carefed/fabric/<version>`` (``~/.cache`` by default)."""
    override = os.environ.get("CAREFED_FABRIC_HOME")
    if override:
        return FabricHome(Path(override).expanduser().resolve())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return FabricHome(cache / "carefed" / "fabric" / FABRIC_VERSION)


def parse_go_version(text: str) -> tuple[int, int, int]:
    """``go1.26.8`` / ``go version go1.26 linux/amd64`` → (1, 26, 8); (1, 26, 0) when the patch is absent."""
    match = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise FabricInstallError(f"could not read a Go version from {text!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def check_go() -> tuple[int, int, int]:
    """The Go toolchain's version, or a clear error saying what to install."""
    wanted = ".".join(map(str, MIN_GO))
    go = shutil.which("go")
    if go is None:
        raise FabricInstallError(
            f"Go is not installed (no `go` on PATH). Fabric {FABRIC_VERSION} is built from source and needs "
            f"Go >= {wanted}: install it (e.g. your distribution's golang package or the official archive) "
            "and re-run `carefed fabric install`."
        )
    found = parse_go_version(_run([go, "env", "GOVERSION"]).strip())
    if found < MIN_GO:
        raise FabricInstallError(
            f"Go {'.'.join(map(str, found))} is too old: Fabric {FABRIC_VERSION} needs Go >= {wanted}. "
            "Install a newer Go (or set GOTOOLCHAIN to a newer release) and re-run `carefed fabric install`."
        )
    return found


def explain_go_failure(command: str, stderr: str) -> str:
    """Turn the go command's error output into a message a hospital's IT can act on."""
    if "403" in stderr or "not available" in stderr or "410 Gone" in stderr:
        proxy = os.environ.get("GOPROXY") or _go_env("GOPROXY")
        return (
            f"The Go module proxy ({proxy}) refuses to serve {FABRIC_MODULE} "
            f"({stderr.strip().splitlines()[-1]}). Fabric cannot be built from source on this machine: "
            "allow the module through your proxy, or unpack the official Fabric "
            f"{FABRIC_VERSION} release archive and run `carefed fabric install --from <dir>`."
        )
    if "dial tcp" in stderr or "Could not resolve host" in stderr or "no such host" in stderr:
        return f"`{command}` could not reach the Go module proxy: {stderr.strip().splitlines()[-1]}"
    return f"`{command}` failed:\n{stderr.strip()}"


def install_from_source(home: FabricHome) -> None:
    """``go install`` the four commands and the CCaaS builder at the pinned commit; copy the sample configs."""
    check_go()
    module_dir = _download_module(f"{FABRIC_MODULE}@{FABRIC_COMMIT}")
    env = {**os.environ, "GOBIN": str(home.bin)}
    _run(["go", "install", *[f"{FABRIC_MODULE}/cmd/{c}@{FABRIC_COMMIT}" for c in FABRIC_COMMANDS]], env=env)
    env["GOBIN"] = str(home.ccaas_builder / "bin")
    _run(["go", "install", *[f"{CCAAS_MODULE}/cmd/{c}@{FABRIC_COMMIT}" for c in CCAAS_COMMANDS]], env=env)
    _copy_configs(module_dir / "sampleconfig", home)


def install_from_release(home: FabricHome, release_dir: Path) -> None:
    """Copy binaries and configs from an unpacked official release archive (``bin/``, ``config/``, ``builders/``)."""
    sources = [release_dir / "bin" / c for c in FABRIC_COMMANDS]
    sources += [release_dir / "builders" / "ccaas" / "bin" / c for c in CCAAS_COMMANDS]
    absent = [p for p in sources if not p.is_file()]
    if absent:
        raise FabricInstallError(
            f"{release_dir} is not an unpacked Fabric release archive: {absent[0]} is missing "
            "(expected bin/, config/ and builders/ccaas/bin/)."
        )
    version = _run([str(release_dir / "bin" / "peer"), "version"])
    if FABRIC_VERSION.lstrip("v") not in version:
        raise FabricInstallError(f"{release_dir}/bin/peer is not Fabric {FABRIC_VERSION}:\n{version.strip()}")
    for source in sources:
        target = (home.ccaas_builder / "bin" if source.parent.parent.name == "ccaas" else home.bin) / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    _copy_configs(release_dir / "config", home)


def install(home: FabricHome, release_dir: Path | None = None) -> bool:
    """Install into ``home`` unless everything is already there; returns whether anything was installed."""
    if not home.missing():
        return False
    if release_dir is not None:
        install_from_release(home, release_dir)
    else:
        install_from_source(home)
    home.require_installed()
    return True


def _copy_configs(source_dir: Path, home: FabricHome) -> None:
    """Copy the sample configs; files in Go's module cache are read-only, so make the copies writable."""
    home.config.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_CONFIGS:
        target = home.config / name
        shutil.copyfile(source_dir / name, target)
        target.chmod(target.stat().st_mode | stat.S_IWUSR)


def _download_module(query: str) -> Path:
    """``go mod download`` one module version (the availability check) and return its directory."""
    info = json.loads(_run(["go", "mod", "download", "-json", query], allow_json_error=True))
    if info.get("Error"):
        raise FabricInstallError(explain_go_failure(f"go mod download {query}", info["Error"]))
    return Path(info["Dir"])


def _go_env(name: str) -> str:
    return _run(["go", "env", name]).strip()


def _run(command: list[str], env: dict[str, str] | None = None, allow_json_error: bool = False) -> str:
    """Run a build command with Go's default caches; raise a readable error on failure."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0 and not (allow_json_error and result.stdout.strip().startswith("{")):
        raise FabricInstallError(explain_go_failure(" ".join(command[:3]), result.stderr or result.stdout))
    return result.stdout
