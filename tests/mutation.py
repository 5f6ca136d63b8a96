"""What `make mutation` (mutmut) changes in the code under test, and how the suite keeps it out of the way.

mutmut rewrites each mutated method into a trampoline and adds its variants to the same class, under names that
contain ``MUTANT_NAME_MARK``. They are not transactions: the Fabric contract API would reflect every public one
as a transaction of the chaincode (hundreds per contract, 30 s of schema compilation per ledger opened), and the
fuzz test would call them. Outside a mutation run there are no such names and nothing here changes anything.
"""

from __future__ import annotations

import os

MUTANT_NAME_MARK = "\u01c1"


def hide_mutant_variants() -> None:
    """Under mutmut (it sets MUTANT_UNDER_TEST), make each contract ignore its mutant variants.

    The contract API asks a contract for `get_ignored_functions` (Fabric's IgnoreContractInterface); the
    CareFed contracts define none, so one is set on the classes for the duration of the mutation run only.
    """
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    from fabric_network.contracts import CONTRACT_CLASSES

    for cls in CONTRACT_CLASSES:
        variants = sorted(name for name in dir(cls) if MUTANT_NAME_MARK in name)
        if variants:
            cls.get_ignored_functions = lambda self, names=variants: list(names)  # type: ignore[attr-defined]
