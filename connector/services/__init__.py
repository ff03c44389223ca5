"""Services: the async glue between the pure cores, the store and the network."""
