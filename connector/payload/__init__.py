"""What travels and what is kept: manifests and their signed envelopes, chunk sealing for transfers, and
the sealed file format of the vault (pure)."""
