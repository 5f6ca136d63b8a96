"""UCUM unit conversion for Observation values, through `ucumvert` (a UCUM grammar onto `pint`).

Why a units library: hospitals export the same analyte in different units (eGFR as `mL/min` and
`mL/min/{1.73_m2}`, glucose as `mg/dL` or `mmol/L`); comparing unit strings rejects good data, and hand-written
factor tables are where silent thousandfold errors live. Two conversions are not dimensional and are declared per
feature in the schema: mass ↔ amount of substance needs the analyte's molar mass (`molar_mass`, g/mol), and
HbA1c % (NGSP/DCCT) ↔ mmol/mol (IFCC) is the master equation IFCC = 10.929 * (NGSP - 2.15), not a factor.

Every conversion is affine (`value * scale + offset`); it is worked out once per (source unit, feature) and
cached, so the per-Observation cost is one multiply-add.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

# NGSP (DCCT) % → IFCC mmol/mol, the IFCC/NGSP master equation (Hoelzel et al., Clin Chem 2004).
_HBA1C_SLOPE = 10.929
_HBA1C_NGSP_AT_ZERO = 2.15


class UnitError(ValueError):
    """A unit that is not valid UCUM, or cannot be converted to the unit the schema declares."""


@dataclass(frozen=True)
class Conversion:
    """`target = value * scale + offset`."""

    scale: float
    offset: float = 0.0

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def parse_unit(code: str) -> Any:
    """The pint unit of a UCUM code; raises UnitError naming the code when it is not UCUM."""
    try:
        return _registry().from_ucum(code)
    except Exception as exc:  # ucumvert raises lark's parse errors and pint's undefined-unit errors
        raise UnitError(f"{code!r} is not a UCUM unit ({type(exc).__name__})") from exc


def _is_percent(code: str) -> bool:
    return code.strip() == "%"


def _is_mmol_per_mol(code: str) -> bool:
    return code.replace(" ", "") == "mmol/mol"


@cache
def conversion(source: str, target: str, molar_mass: float | None = None, analyte: str | None = None) -> Conversion:
    """How to turn a value in UCUM unit `source` into `target` (cached); UnitError says why it cannot."""
    if source == target:
        return Conversion(1.0)
    if analyte == "hba1c":
        if _is_percent(source) and _is_mmol_per_mol(target):
            return Conversion(_HBA1C_SLOPE, -_HBA1C_SLOPE * _HBA1C_NGSP_AT_ZERO)
        if _is_mmol_per_mol(source) and _is_percent(target):
            return Conversion(1 / _HBA1C_SLOPE, _HBA1C_NGSP_AT_ZERO)
    import pint

    src, dst = parse_unit(source), parse_unit(target)
    candidates = [1.0 * src]
    if molar_mass is not None:
        mass = molar_mass * parse_unit("g/mol")
        candidates += [1.0 * src / mass, 1.0 * src * mass]
    for quantity in candidates:
        try:
            one = quantity.to(dst).magnitude
            zero = (0.0 * quantity).to(dst).magnitude
        except pint.DimensionalityError:
            continue
        return Conversion(float(one - zero), float(zero))
    hint = " (declare the analyte's molar_mass to convert mass ↔ substance)" if molar_mass is None else ""
    raise UnitError(f"cannot convert {source!r} to {target!r}{hint}")
