"""The teaching part of `carefed node check` on FHIR input: funnel, label balance, coverage, histograms, leakage.

Why print all this before training: a cohort that silently shrinks to a handful of patients, a feature present
for a third of them, or a lab value that is only measured after the diagnosis each make a federated model
worthless, and none of them is an error a validator would raise. Counts only: no MRN, no patient id.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hospital_node.ehr import EhrSummary, FeatureStats

_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    """A histogram as one line of block characters (scaled to the fullest bin)."""
    top = max(counts, default=0)
    if top == 0:
        return " " * len(counts)
    return "".join(_BARS[round(c / top * (len(_BARS) - 1))] for c in counts)


def _range(stats: FeatureStats) -> str:
    low, high = stats.declared
    if low is None and high is None:
        return "(none declared)"
    return f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"


def print_summary(console: Console, summary: EhrSummary) -> None:
    """Print the report tables of one FHIR input."""
    skipped = ", ".join(f"{kind} {count}" for kind, count in summary.skipped_types.most_common())
    console.print(
        f"read {summary.resources_read:,} resources"
        + (f"; skipped (not used by the schema): {skipped}" if skipped else "")
    )
    funnel = Table(title="Cohort funnel")
    funnel.add_column("step")
    funnel.add_column("patients", justify="right")
    funnel.add_row("patients read", str(summary.patients_read))
    for reason, count in summary.dropped.items():
        funnel.add_row(f"  - {reason}", str(count))
    funnel.add_row("in cohort", str(summary.in_cohort))
    for name, count in summary.with_feature.items():
        funnel.add_row(f"  with {name}", f"{count} ({count / summary.in_cohort:.0%})" if summary.in_cohort else "0")
    funnel.add_row("[bold]trained on", f"[bold]{summary.trained_on}")
    console.print(funnel)
    negatives = summary.trained_on - summary.positives
    share = f" ({summary.positives / summary.trained_on:.0%} positive)" if summary.trained_on else ""
    console.print(f"label: {summary.positives} positive, {negatives} negative{share}")
    features = Table(title="Features (patients trained on; histogram over the declared range)")
    for column in ("feature", "coverage", "min", "max", "declared", "histogram"):
        features.add_column(column, justify="left" if column in ("feature", "histogram") else "right")
    for stats in summary.features:
        features.add_row(
            stats.name,
            f"{stats.coverage:.0%}",
            "-" if stats.minimum is None else f"{stats.minimum:.4g}",
            "-" if stats.maximum is None else f"{stats.maximum:.4g}",
            _range(stats),
            f"|{sparkline(stats.histogram)}|",
        )
    console.print(features)
    for name, count in summary.ignored.most_common():
        console.print(f"[dim]not used: {count} reading(s): {name}")
    for name in summary.leaking:
        signals = summary.leakage[name]
        share = signals["first_after_onset"]
        timing = (
            f"first measured on or after the label's onset for {share:.0%} of the positives with earlier records; "
            if share is not None
            else ""
        )
        console.print(
            f"[bold yellow]warning: label leakage: {name} is {timing}present for "
            f"{signals['coverage_positive']:.0%} of positives but {signals['coverage_negative']:.0%} of negatives. "
            "It is measured because of the diagnosis and will not predict it: remove it from the schema, or move "
            "the index date before the onset."
        )
