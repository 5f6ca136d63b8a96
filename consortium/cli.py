"""`carefed consortium …`, `carefed keys …` and `carefed demo`: the consortium operator's commands."""

from typing import Annotated

import typer

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)


def demo(
    rounds: Annotated[int, typer.Option(min=1, help="Training rounds within the budget.")] = 3,
    epsilon_per_round: Annotated[float, typer.Option(min=0.01, help="ε each hospital spends per round.")] = 1.0,
    epochs: Annotated[int, typer.Option(min=1, help="Local DP-SGD epochs per round.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the data split and the initial model.")] = 0,
) -> None:
    """Run the privacy-core demo: DP training at three hospitals, CKKS aggregation without the secret key."""
    import warnings

    import torch
    from rich.console import Console

    from consortium.privacy_demo import run

    warnings.filterwarnings("ignore", module="opacus")  # Opacus' per-run notices would bury the figures
    warnings.filterwarnings("ignore", message="Full backward hook")
    torch.set_num_threads(1)  # the demo MLP has nothing to parallelise; extra threads only spin (docs/privacy.md)
    run(Console(), rounds=rounds, epsilon_per_round=epsilon_per_round, epochs=epochs, seed=seed)
