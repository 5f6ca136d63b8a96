"""The import rules of docs/architecture.md: each side imports only what runs on its side.

Read from the source with `ast` (every import, also those inside functions), so a lazy import cannot hide an
edge. A rule broken here means code of one organisation would run in another's process: the aggregator loading
a hospital's data code, a hospital loading the aggregator, the ledger layer depending on who uses it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "carefed",
    "federation",
    "hospital_node",
    "consortium",
    "harness",
    "fabric_network",
    "privacy",
    "api",
    "compliance",
)
EVERY_OTHER = frozenset(PACKAGES)

#: package → the CareFed packages it must never import (docs/architecture.md, "Allowed imports").
FORBIDDEN: dict[str, frozenset[str]] = {
    "privacy": EVERY_OTHER - {"privacy"},
    "fabric_network": frozenset({"federation", "consortium", "hospital_node", "harness", "api", "compliance"}),
    "federation": frozenset({"fabric_network", "consortium", "hospital_node", "harness", "api", "compliance"}),
    "consortium": frozenset({"hospital_node", "harness", "api", "compliance"}),
    "hospital_node": frozenset({"consortium", "harness", "api", "compliance"}),
    "compliance": frozenset({"consortium", "hospital_node", "harness", "api"}),
    "api": frozenset({"harness"}),
    "carefed": frozenset({"federation", "consortium", "hospital_node", "harness", "api", "compliance"}),
}
#: (module file, imported package): the edges the rules allow by name, each with its reason.
EXCEPTIONS = {
    # The command line composes every package's CLI; nothing imports it back.
    **{("carefed/cli.py", package): "the `carefed` command composes the CLIs" for package in PACKAGES},
}


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & EVERY_OTHER


def _violations(package: str) -> list[str]:
    broken = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for imported in sorted(_imported_packages(path) & FORBIDDEN[package]):
            if (module, imported) not in EXCEPTIONS:
                broken.append(f"{module} imports {imported}")
    return broken


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_runs_on_its_side(package: str) -> None:
    assert _violations(package) == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The rule would be worthless if a lazy import (the common way to keep heavy modules out) slipped past."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from hospital_node.training import train_round\n    import consortium.keys\n")
    assert _imported_packages(module) == {"hospital_node", "consortium"}


def test_every_package_has_a_rule_and_every_exception_is_still_needed() -> None:
    assert set(FORBIDDEN) | {"harness"} == set(PACKAGES)
    for module, imported in EXCEPTIONS:
        if module != "carefed/cli.py":
            assert imported in _imported_packages(ROOT / module), f"{module} no longer imports {imported}: drop it"
