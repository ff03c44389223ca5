"""Participant identity: keys, DIDs, Data Integrity proofs and the signed self-description."""
