"""The audit export's formats, apart from the exporter so that `carefed --help` lists them without loading it."""

from enum import StrEnum


class ExportFormat(StrEnum):
    """How the events of an audit export are written; the Merkle leaves are the same units in every format."""

    CSV = "csv"
    JSONL = "jsonl"
    FHIR = "fhir"

    @property
    def events_file(self) -> str:
        return {"csv": "events.csv", "jsonl": "events.jsonl", "fhir": "events.fhir.json"}[self.value]
