"""The identifier systems, code systems and extension URLs of referral-ml's FHIR mapping
(docs/fhir.md), in one place: the exporter (`features.fhir_export`), the directory importer
(`features.fhir_directory`) and the request/appointment readers (`features.fhir_inbound`) must
agree on every one of them, or a round trip loses data silently."""

from __future__ import annotations

from typing import Final

# Standard systems.
NPI_SYSTEM: Final = "http://hl7.org/fhir/sid/us-npi"
NUCC_SYSTEM: Final = "http://nucc.org/provider-taxonomy"
ICD10_CM_SYSTEM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
BCP47_SYSTEM: Final = "urn:ietf:bcp:47"
SNOMED_SYSTEM: Final = "http://snomed.info/sct"
V2_0276_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0276"  # appointment types
COVERAGE_CLASS_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/coverage-class"
GEOLOCATION_URL: Final = "http://hl7.org/fhir/StructureDefinition/geolocation"

# Da Vinci PDex Plan-Net.
PLAN_NET: Final = "http://hl7.org/fhir/us/davinci-pdex-plan-net"
NEWPATIENTS_URL: Final = f"{PLAN_NET}/StructureDefinition/newpatients"
NETWORK_REFERENCE_URL: Final = f"{PLAN_NET}/StructureDefinition/network-reference"
ACCEPTING_PATIENTS_CS: Final = f"{PLAN_NET}/CodeSystem/AcceptingPatientsCS"
ORG_TYPE_CS: Final = f"{PLAN_NET}/CodeSystem/OrgTypeCS"

# referral-ml's own: extensions are EXTENSION_BASE + name; code systems urn:referral-ml:<name>.
BASE_URL: Final = "http://referral-ml.org/fhir"
EXTENSION_BASE: Final = f"{BASE_URL}/StructureDefinition/"
PATIENT_ID_SYSTEM: Final = "urn:referral-ml:patient-id"  # a Patient identifier: our patient_id
