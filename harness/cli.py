"""`carefed demo`: the whole federated demo on one machine (every organisation's role played locally)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from carefed.options import DEFAULT_STATE_DIR, Backend, LedgerBackend, StateDir


class Dataset(StrEnum):
    """The demo's data: the breast-cancer CSV split, or the Synthea FHIR R4 patients (docs/ehr.md)."""

    breast_cancer = "breast-cancer"
    synthea = "synthea"


class ModelKind(StrEnum):
    """The consortium's network: logistic regression, or an MLP with the hidden layers `--hidden` gives."""

    logistic = "logistic"
    mlp = "mlp"


def demo(
    hospitals: Annotated[str, typer.Option("--hospitals", help="A count or comma-separated names.")] = "3",
    rounds: Annotated[int, typer.Option("--rounds", min=2, help="Training rounds (≥ 2).")] = 3,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    out: Annotated[Path, typer.Option("--out", help="Where runs/<run-id>/ goes.")] = Path("runs"),
    backend: Backend = LedgerBackend.embedded,
    dataset: Annotated[
        Dataset,
        typer.Option(
            "--dataset",
            help="breast-cancer (CSV, the default) or synthea ((pre)diabetes from the FHIR R4 patients in data/).",
        ),
    ] = Dataset.breast_cancer,
    model: Annotated[
        ModelKind,
        typer.Option(
            "--model",
            help="The network every hospital trains under DP-SGD and HE: logistic (logistic regression, the "
            "default) or mlp (ReLU hidden layers of --hidden sizes).",
        ),
    ] = ModelKind.logistic,
    hidden: Annotated[
        str | None,
        typer.Option(
            "--hidden",
            metavar="SIZES",
            help="With --model mlp: hidden layer sizes, comma-separated positive integers, input side first "
            "(e.g. 32,16; default 16).",
        ),
    ] = None,
    standardise: Annotated[
        float,
        typer.Option(
            "--standardise",
            min=0.0,
            metavar="EPSILON",
            help="Standardise features by the consortium's DP means and stds (a federated moments query costing "
            "each hospital this ε, docs/analytics.md) instead of the declared ranges; 0 (the default) = ranges.",
        ),
    ] = 0.0,
) -> None:
    """Run the federated demo: DP at each hospital, HE aggregation, the ledger — end to end on this machine.

    The model is logistic regression unless --model mlp; the baselines it is compared with (centralised, each
    hospital alone) train the same network.
    """
    from harness.demo import run_demo

    run_demo(
        hospitals=hospitals,
        rounds=rounds,
        state_dir=state_dir,
        out=out,
        backend=backend.value,
        dataset=dataset.value,
        model=model.value,
        hidden=hidden,
        standardise=standardise,
    )


def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run whose aggregator stopped mid-run.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Resume a run on this machine after a crash: start the consortium's processes again and continue the run.

    The aggregator continues after the last round it checkpointed, if the checkpoint matches the ledger (hospitals
    resend updates they already released, charging no ε again); otherwise it ends the run as failed on the ledger.
    """
    from rich.console import Console

    from consortium.runs import progress_printer, summary_lines
    from harness.local_consortium import resume_local_run

    console = Console()
    try:
        report = resume_local_run(state_dir, run_id, progress_printer(console.print))
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN / --state-dir") from None
    for line in summary_lines(run_id, report):
        console.print(line)
    if report.results["status"] != "completed":
        raise typer.Exit(code=1)


def keys_ceremony(
    hospitals: Annotated[str, typer.Option("--hospitals", help="A count (3) or comma-separated hospital names.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
) -> None:
    """A new consortium CKKS key on this machine: the first hospital draws it and seals it to the others, each
    accepts its own, the aggregator gets the public context; all recorded on the ledger (`carefed ledger init` first).
    """
    from rich.console import Console

    from fabric_network.identities import IdentityError, hospital_names
    from harness.key_ceremony import run_ceremony

    try:
        names = hospital_names(hospitals)
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hospitals") from exc
    result = run_ceremony(state_dir, names, backend.value)
    console = Console(soft_wrap=True)
    console.print(f"key {result.key_id} created by {names[0]}, sealed to {', '.join(names[1:]) or 'no one'}")
    console.print(f"public context (aggregator): {result.public_context}")
    for name, path in result.secret_contexts.items():
        console.print(f"secret context ({name}, mode 0600): {path}")
    console.print(f"key fingerprint {result.fingerprint}; parameters {result.parameters}")
