"""A participant as the running node sees it: identity, keys, endpoints and its signed documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.identity import credentials
from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys, Signer
from connector.store.repository import Participant

DSP_VERSION_PATH = "api/dsp/2025-1"


@dataclass
class ParticipantRuntime:
    record: Participant
    keys: ParticipantKeys
    public_url: str
    _self_description: dict[str, Any] | None = field(default=None, repr=False)
    _sd_issued: datetime | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def did(self) -> str:
        return self.record.did

    @property
    def base_url(self) -> str:
        return f"{self.public_url}/participants/{self.name}"

    @property
    def base_path(self) -> str:
        return f"/participants/{self.name}"

    @property
    def dsp_base(self) -> str:
        return f"{self.base_url}/{DSP_VERSION_PATH}"

    @property
    def dsp_path(self) -> str:
        return f"{self.base_path}/{DSP_VERSION_PATH}"

    @property
    def key_id(self) -> str:
        return dids.signing_key_id(self.did)

    @property
    def signer(self) -> Signer:
        return Signer(self.keys.signing, self.key_id)

    def did_document(self) -> dict[str, Any]:
        if self.did.startswith("did:key:"):
            return dids.did_key_document(self.did)
        services = [
            {"id": f"{self.did}#dsp", "type": "DataService",
             "serviceEndpoint": f"{self.base_url}/.well-known/dspace-version"},
            {"id": f"{self.did}#catalog", "type": "CatalogService", "serviceEndpoint": f"{self.dsp_base}/catalog"},
        ]
        return dids.did_document(
            self.did,
            signing_multikey=self.keys.signing_multikey,
            agreement_multikey=self.keys.agreement_multikey,
            services=services,
        )

    def version_document(self) -> dict[str, Any]:
        """``/.well-known/dspace-version`` (DSP 2025-1 §4.3), valid against protocol-version-schema.json."""
        return {
            "protocolVersions": [
                {
                    "version": "2025-1",
                    "path": f"{self.dsp_path}",
                    "binding": "HTTPS",
                    "identifierType": "did:key" if self.did.startswith("did:key:") else "did:web",
                    "serviceId": f"{self.did}#dsp",
                }
            ]
        }

    def subject(self) -> credentials.Subject:
        r = self.record
        return credentials.Subject(
            id=r.did, legal_name=r.legal_name, region=r.region, industry=r.industry, contact=r.contact,
            dsp_endpoint=self.dsp_base, dsp_version="2025-1",
            signing_key=self.keys.signing_multikey, agreement_key=self.keys.agreement_multikey,
        )

    def self_description(self, now: datetime) -> dict[str, Any]:
        """The signed self-description, re-issued when half of its validity has passed."""
        if (
            self._self_description is None
            or self._sd_issued is None
            or now - self._sd_issued > credentials.VALIDITY / 2
            or now < self._sd_issued
        ):
            self._self_description = credentials.issue(self.subject(), self.keys.signing, now=now)
            self._sd_issued = now
        return self._self_description
