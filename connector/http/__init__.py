"""HTTP: the public (peer) listener with the DSP and data-plane routes, the management listener, request
signing and the outbound guard."""
