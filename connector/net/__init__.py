"""Net: what a node needs to talk to peers, below both ``connector.http`` and ``connector.services``.

- :mod:`connector.net.guard`: the outbound guard, which URLs and addresses a node may call (pure);
- :mod:`connector.net.client`: :class:`~connector.net.client.PeerClient`, the one outbound HTTP client,
  guarded, bounded and signed when the caller is a participant;
- :mod:`connector.net.signing`: RFC 9421 HTTP Message Signatures with RFC 9530 Content-Digest, used to
  sign outbound requests (the client) and to verify inbound ones (``connector.http.auth``).

The http layer (listeners, routes) and the services (the async glue) both import from here; this package
imports neither of them.
"""
