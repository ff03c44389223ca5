"""HTTP: the public (peer) listener, the management listener, request signing and the outbound guard."""
