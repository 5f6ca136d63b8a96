"""Compliance toolkit: verifiable audit exports, lineage as PROV, and regulators' reports."""
