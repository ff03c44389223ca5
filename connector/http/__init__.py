"""HTTP: the public (peer) listener with the DSP and data-plane routes, the management listener, and the
check of inbound request signatures. Outbound HTTP, the outbound guard and the signer sit below, in
``connector.net``."""
