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
        """The DID URL of the current signing key (``#key-1`` until the first rotation, then ``#key-3`` …)."""
        return self._key_id(self.keys)

    def _key_id(self, keys: ParticipantKeys) -> str:
        return dids.signing_key_id(self.did) if self.did.startswith("did:key:") else f"{self.did}#{keys.signing_id}"

    @property
    def signer(self) -> Signer:
        """The current signing key with its id, read together (a rotation replaces ``keys`` as a whole)."""
        keys = self.keys
        return Signer(keys.signing, self._key_id(keys))

    def rotated(self, keys: ParticipantKeys) -> None:
        """Switch to *keys* (one assignment: whoever reads ``keys`` or ``signer`` gets the old or the new keys,
        never a mix); the self-description is signed anew with them on its next use."""
        self.keys = keys
        self._self_description = None
        self._sd_issued = None

    def did_document(self) -> dict[str, Any]:
        if self.did.startswith("did:key:"):
            return dids.did_key_document(self.did)
        services = [
            {"id": f"{self.did}#dsp", "type": "DataService",
             "serviceEndpoint": f"{self.base_url}/.well-known/dspace-version"},
            {"id": f"{self.did}#catalog", "type": "CatalogService", "serviceEndpoint": f"{self.dsp_base}/catalog"},
        ]
        keys = self.keys
        return dids.did_document(
            self.did,
            signing_multikey=keys.signing_multikey,
            agreement_multikey=keys.agreement_multikey,
            services=services,
            signing_fragment=keys.signing_id,
            agreement_fragment=keys.agreement_id,
            retired=keys.retired,
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
        r, keys = self.record, self.keys
        return credentials.Subject(
            id=r.did, legal_name=r.legal_name, region=r.region, industry=r.industry, contact=r.contact,
            dsp_endpoint=self.dsp_base, dsp_version="2025-1",
            signing_key=keys.signing_multikey, agreement_key=keys.agreement_multikey,
        )

    def self_description(self, now: datetime) -> dict[str, Any]:
        """The signed self-description, re-issued when half of its validity has passed."""
        if (
            self._self_description is None
            or self._sd_issued is None
            or now - self._sd_issued > credentials.VALIDITY / 2
            or now < self._sd_issued
        ):
            signer = self.signer
            self._self_description = credentials.issue(self.subject(), signer.key, now=now, key_id=signer.key_id)
            self._sd_issued = now
        return self._self_description
