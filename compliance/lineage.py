"""A model version's lineage as W3C PROV (PROV-N, PROV-JSON via the ``prov`` package) and as a FHIR Provenance.

The facts come from the ledger's ``LineageContract.get_model_lineage`` alone: the run (purpose, hospitals,
DP and HE parameters, code version), every round up to the model's (participants, consent-snapshot ids and
roots, ε spent, hashes of each encrypted update and of the resulting model) and the model registration.

The PROV graph::

    cf:run/<run>                 activity   purpose, DP (ε, δ, ...) and HE parameters, code version
    cf:round/<run>/<r>           activity   aggregation of round r, informed by the run
    cf:training/<run>/<r>/<msp>  activity   a hospital's local DP training in round r (ε spent, examples)
    cf:consent-snapshot/<id>     entity     root of the consented pseudonyms the hospital trained on
    cf:update/<run>/<r>/<msp>    entity     the hospital's encrypted update (SHA-256)
    cf:round-model/<run>/<r>     entity     the global model after round r (SHA-256)
    cf:model/<model id>          entity     the registered model version, derived from its round's model
    cf:org/<msp>                 agent      each hospital, and the consortium that aggregates
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fhir.resources.R4B.provenance import Provenance
from prov.model import ProvDocument

from compliance.fhir_audit import ACT_REASON, ORG_SYSTEM

NAMESPACE = "urn:carefed:"
CONSORTIUM_MSP = "ConsortiumMSP"
MODEL_SYSTEM = "urn:carefed:model"
SNAPSHOT_SYSTEM = "urn:carefed:consent-snapshot"
UPDATE_SYSTEM = "urn:carefed:update-sha256"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _flat(prefix: str, params: dict[str, Any]) -> dict[str, str | int | float]:
    """DP/HE parameter objects as flat PROV attributes (lists become comma-separated text)."""
    return {
        f"cf:{prefix}_{key}": ",".join(map(str, value)) if isinstance(value, list) else value
        for key, value in sorted(params.items())
    }


def lineage_prov(lineage: dict[str, Any]) -> ProvDocument:
    """The W3C PROV document of one model version's lineage."""
    model, run, rounds = lineage["model"], lineage["run"], lineage["rounds"]
    run_id = run["run_id"]
    doc = ProvDocument()
    doc.add_namespace("cf", NAMESPACE)
    consortium = doc.agent(f"cf:org/{CONSORTIUM_MSP}", {"prov:type": "prov:Organization", "cf:role": "aggregator"})
    hospitals = {
        msp: doc.agent(f"cf:org/{msp}", {"prov:type": "prov:Organization", "cf:role": "hospital"})
        for msp in run["hospitals"]
    }
    run_attributes: dict[Any, Any] = {
        "cf:purpose": run["purpose"],
        "cf:code_version": run["code_version"],
        "cf:ledger_tx": run["tx_id"],
        **_flat("dp", run["dp"]),
        **_flat("he", run["he"]),
    }
    run_activity = doc.activity(f"cf:run/{run_id}", _time(run["registered_at"]), None, run_attributes)
    doc.wasAssociatedWith(run_activity, consortium)
    previous_model = None
    for round_record in rounds:
        number = round_record["round"]
        round_activity = doc.activity(
            f"cf:round/{run_id}/{number}",
            None,
            _time(round_record["recorded_at"]),
            {"cf:round": number, "cf:ledger_tx": round_record["tx_id"]},
        )
        doc.wasInformedBy(round_activity, run_activity)
        doc.wasAssociatedWith(round_activity, consortium)
        round_model = doc.entity(
            f"cf:round-model/{run_id}/{number}", {"cf:sha256": round_record["model_sha256"], "cf:round": number}
        )
        doc.wasGeneratedBy(round_model, round_activity)
        if previous_model is not None:
            doc.used(round_activity, previous_model)
            doc.wasDerivedFrom(round_model, previous_model)
        for participant in round_record["participants"]:
            msp = participant["hospital"]
            snapshot = doc.entity(
                f"cf:consent-snapshot/{participant['consent_snapshot_id']}",
                {"cf:merkle_root": participant["consent_snapshot_root"]},
            )
            training = doc.activity(
                f"cf:training/{run_id}/{number}/{msp}",
                None,
                None,
                {"cf:epsilon_spent": float(participant["epsilon_spent"]), "cf:hospital": msp}
                | ({"cf:num_examples": participant["num_examples"]} if "num_examples" in participant else {}),
            )
            doc.wasInformedBy(training, run_activity)
            doc.wasAssociatedWith(training, hospitals.get(msp) or doc.agent(f"cf:org/{msp}"))
            doc.used(training, snapshot)
            if previous_model is not None:
                doc.used(training, previous_model)
            update = doc.entity(f"cf:update/{run_id}/{number}/{msp}", {"cf:sha256": participant["update_sha256"]})
            doc.wasGeneratedBy(update, training)
            doc.wasAttributedTo(update, hospitals.get(msp) or doc.agent(f"cf:org/{msp}"))
            doc.used(round_activity, update)
            doc.wasDerivedFrom(round_model, update)
        previous_model = round_model
    model_entity = doc.entity(
        f"cf:model/{model['model_id']}",
        {"cf:sha256": model["sha256"], "cf:round": model["round"], "cf:ledger_tx": model["tx_id"]}
        | ({"cf:name": model["name"]} if "name" in model else {})
        | ({"cf:version": model["version"]} if "version" in model else {}),
    )
    if previous_model is not None:
        doc.specializationOf(model_entity, previous_model)
    doc.wasAttributedTo(model_entity, consortium)
    return doc


def prov_round_trip_equal(doc: ProvDocument) -> bool:
    """Whether PROV-JSON written by ``prov`` reads back to the same graph (the export's self-check)."""
    return bool(ProvDocument.deserialize(content=doc.serialize(format="json"), format="json") == doc)


def _org(msp: str) -> dict[str, Any]:
    return {"identifier": {"system": ORG_SYSTEM, "value": msp}, "display": msp}


def lineage_fhir_provenance(lineage: dict[str, Any]) -> dict[str, Any]:
    """A FHIR R4 Provenance whose target is the model version, validated by fhir.resources."""
    model, run, rounds = lineage["model"], lineage["run"], lineage["rounds"]
    entities: list[dict[str, Any]] = []
    for round_record in rounds:
        for participant in round_record["participants"]:
            entities.append(
                {
                    "role": "source",
                    "what": {
                        "identifier": {"system": SNAPSHOT_SYSTEM, "value": participant["consent_snapshot_id"]},
                        "display": f"consent snapshot root {participant['consent_snapshot_root']} "
                        f"(round {round_record['round']}, {participant['hospital']})",
                    },
                }
            )
            entities.append(
                {
                    "role": "derivation",
                    "what": {
                        "identifier": {"system": UPDATE_SYSTEM, "value": participant["update_sha256"]},
                        "display": f"encrypted update of {participant['hospital']} in round {round_record['round']}, "
                        f"ε spent {participant['epsilon_spent']}",
                    },
                }
            )
    dp, he = run["dp"], run["he"]
    resource = {
        "resourceType": "Provenance",
        "id": f"lineage-{model['model_id']}".replace("/", "-").replace(":", "-").replace("_", "-")[:64],
        "target": [
            {"identifier": {"system": MODEL_SYSTEM, "value": model["model_id"]}, "display": f"sha256 {model['sha256']}"}
        ],
        "occurredPeriod": {"start": run["registered_at"], "end": model["registered_at"]},
        "recorded": model["registered_at"],
        "policy": [f"urn:carefed:run:{run['run_id']}"],
        "reason": [{"coding": [{"system": ACT_REASON, "code": run["purpose"]}]}],
        "activity": {
            "text": f"federated training: {len(rounds)} round(s); DP ε={dp['epsilon']} δ={dp['delta']}; "
            f"HE {he['scheme']}; code {run['code_version']}"
        },
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "assembler"}]},
                "who": _org(CONSORTIUM_MSP),
            },
            *(
                {"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]}, "who": _org(msp)}
                for msp in run["hospitals"]
            ),
        ],
        "entity": entities or None,
    }
    return Provenance.model_validate({k: v for k, v in resource.items() if v is not None}).model_dump(
        mode="json", exclude_none=True
    )
