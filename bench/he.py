"""CKKS aggregation cost: 10 hospitals x 100,000 parameters, against float32 on the wire and a numpy sum.

    python -m bench.he [--values 100000] [--hospitals 10] [--json]
    python -m bench.he --search [--json]   # the parameter search behind privacy.he.DEFAULT_PARAMETERS

The aggregator side runs exactly as deployed: it restores the public context from the bytes the hospitals sent
(parameters and key id, no key) and adds the serialised updates. The human table comes first; with --json the last
line is one JSON object with `bytes_per_hospital`, `wire_ratio_vs_float32`, `encrypt_s` (per hospital), `add_s`,
`decrypt_s`, `plaintext_sum_s`, `aggregate_ratio_vs_plaintext`, `max_abs_error` and more.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

import bench.script_mode  # noqa: F401  (first: `python bench/X.py` must find the packages, not bench/X.py)

# isort: split
from privacy import he

ERROR_BOUND = 1e-4


def make_updates(hospitals: int, values: int, seed: int = 0) -> list[npt.NDArray[np.float64]]:
    """Updates in [-1, 1] stored as float32, as a model update would be: the numpy sum sees the same numbers."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, values).astype(np.float32).astype(np.float64) for _ in range(hospitals)]


def plaintext_sum_seconds(updates: list[npt.NDArray[np.float64]], repeats: int = 50) -> float:
    """Median time of the float32 numpy sum of the updates: the limit an encrypted sum is compared with."""
    stacked = np.stack(updates).astype(np.float32)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        stacked.sum(axis=0)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def measure(parameters: he.CKKSParameters, updates: list[npt.NDArray[np.float64]]) -> dict[str, Any]:
    """Encrypt every update, add them on the aggregator's public context, decrypt; sizes, times and error."""
    hospital = he.generate_secret_context(parameters)
    aggregator = he.PublicContext.deserialize(hospital.public().serialize())
    started = time.perf_counter()
    encrypted = [he.encrypt(hospital, update) for update in updates]
    encrypt_s = (time.perf_counter() - started) / len(updates)
    started = time.perf_counter()
    total = he.aggregate(aggregator, encrypted)
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    decrypted = he.decrypt(hospital, total)
    decrypt_s = time.perf_counter() - started
    values = updates[0].size
    bytes_per_hospital = statistics.mean(len(blob) for blob in encrypted)
    return {
        "poly_modulus_degree": parameters.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(parameters.coeff_mod_bit_sizes),
        "scale_bits": parameters.scale_bits,
        "max_parties": parameters.max_parties,
        "bytes_per_hospital": bytes_per_hospital,
        "wire_ratio_vs_float32": bytes_per_hospital / (4 * values),
        "sum_bytes": len(total),
        "sum_ratio_vs_float32": len(total) / (4 * values),
        "public_context_bytes": len(aggregator.serialize()),
        "encrypt_s": encrypt_s,
        "add_s": add_s,
        "decrypt_s": decrypt_s,
        "max_abs_error": float(np.max(np.abs(decrypted - np.sum(updates, axis=0)))),
    }


def tenseal_public_key_reference(
    updates: list[npt.NDArray[np.float64]], degree: int, bits: list[int], scale_bits: int
) -> dict[str, Any]:
    """TenSEAL's high-level public-key CKKS vectors, for comparison (what most CKKS federated setups ship)."""
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=bits)
    context.global_scale = 2.0**scale_bits
    slots = degree // 2
    chunked = [
        [ts.ckks_vector(context, update[i : i + slots].tolist()).serialize() for i in range(0, update.size, slots)]
        for update in updates
    ]
    public = context.copy()
    public.make_context_public()
    aggregator = ts.context_from(public.serialize())
    sums = [ts.ckks_vector_from(aggregator, chunk) for chunk in chunked[0]]
    for chunks in chunked[1:]:
        sums = [total + ts.ckks_vector_from(aggregator, chunk) for total, chunk in zip(sums, chunks, strict=True)]
    decrypted = np.concatenate([ts.ckks_vector_from(context, total.serialize()).decrypt() for total in sums])
    size = sum(len(chunk) for chunk in chunked[0])
    return {
        "scheme": f"TenSEAL public-key N={degree} {bits} 2^{scale_bits}",
        "wire_ratio_vs_float32": size / (4 * updates[0].size),
        "max_abs_error": float(np.max(np.abs(decrypted[: updates[0].size] - np.sum(updates, axis=0)))),
    }


def largest_scale_bits(prime_bits: int, max_parties: int) -> int:
    """The largest scale that still lets `max_parties` updates with |value| ≤ 1 add up without overflow."""
    return prime_bits - 3 - math.ceil(math.log2(max_parties))


def search(updates: list[npt.NDArray[np.float64]], console: Console) -> dict[str, Any]:
    """Measure single-prime parameter sets at 128-bit security and pick the smallest wire size within the bound."""
    rows = []
    for degree in (2048, 4096, 8192):
        for prime_bits in range(30, 35):
            parameters = he.CKKSParameters(degree, (prime_bits,), largest_scale_bits(prime_bits, 16), max_parties=16)
            rows.append(measure(parameters, updates))
    table = Table(title=f"single-prime seeded CKKS, sum of {len(updates)} x {updates[0].size} values in [-1, 1]")
    for column in ("N", "prime bits", "scale", "x float32", "max error", "within 1e-4"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["poly_modulus_degree"]),
            str(row["coeff_mod_bit_sizes"][0]),
            f"2^{row['scale_bits']}",
            f"{row['wire_ratio_vs_float32']:.3f}",
            f"{row['max_abs_error']:.1e}",
            "yes" if row["max_abs_error"] <= ERROR_BOUND else "no",
        )
    console.print(table)
    references = [
        tenseal_public_key_reference(updates, 8192, [40, 40], 30),
        tenseal_public_key_reference(updates, 8192, [60, 40, 40, 60], 40),
    ]
    for reference in references:
        console.print(
            f"reference {reference['scheme']}: {reference['wire_ratio_vs_float32']:.2f}x float32, "
            f"max error {reference['max_abs_error']:.1e}"
        )
    chosen = min((row for row in rows if row["max_abs_error"] <= ERROR_BOUND), key=lambda r: r["bytes_per_hospital"])
    console.print(
        f"chosen: N={chosen['poly_modulus_degree']}, primes {chosen['coeff_mod_bit_sizes']}, "
        f"scale 2^{chosen['scale_bits']} ({chosen['wire_ratio_vs_float32']:.3f}x, {chosen['max_abs_error']:.1e}); "
        f"privacy.he.DEFAULT_PARAMETERS = {he.DEFAULT_PARAMETERS}"
    )
    return {"chosen": chosen, "candidates": rows, "references": references}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=100_000, help="parameters per update")
    parser.add_argument("--hospitals", type=int, default=10, help="updates summed")
    parser.add_argument("--search", action="store_true", help="run the parameter search instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    console = Console()
    updates = make_updates(args.hospitals, args.values)
    if args.search:
        report = search(updates, console)
    else:
        report = measure(he.DEFAULT_PARAMETERS, updates)
        report["plaintext_sum_s"] = plaintext_sum_seconds(updates)
        report["aggregate_ratio_vs_plaintext"] = report["add_s"] / report["plaintext_sum_s"]
        report["hospitals"] = args.hospitals
        report["values"] = args.values
        table = Table(title=f"CKKS aggregation, {args.hospitals} hospitals x {args.values:,} values")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row(
            "parameters",
            f"N={report['poly_modulus_degree']}, primes {report['coeff_mod_bit_sizes']}, "
            f"scale 2^{report['scale_bits']}, <= {report['max_parties']} parties",
        )
        table.add_row("bytes per hospital", f"{report['bytes_per_hospital']:,.0f}")
        table.add_row("x float32 (wire)", f"{report['wire_ratio_vs_float32']:.3f}")
        table.add_row(
            "encrypted sum bytes (x float32)", f"{report['sum_bytes']:,} ({report['sum_ratio_vs_float32']:.2f})"
        )
        table.add_row("encrypt per hospital (s)", f"{report['encrypt_s']:.4f}")
        table.add_row("aggregate, public context only (s)", f"{report['add_s']:.4f}")
        table.add_row("decrypt (s)", f"{report['decrypt_s']:.4f}")
        table.add_row("numpy float32 sum (s)", f"{report['plaintext_sum_s']:.6f}")
        table.add_row("aggregate x plaintext sum", f"{report['aggregate_ratio_vs_plaintext']:.0f}")
        table.add_row("max abs error", f"{report['max_abs_error']:.2e}")
        console.print(table)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
