"""Services: the async glue between the pure cores, the store and the network.

Each service is built by the node with only what it uses (repositories, the outbound client, the clock,
the other services it calls) and is tested without sockets through the fakes in ``connector.testing``.
What a service needs from below is written down as Protocols in :mod:`connector.services.ports`."""
