"""The pure rules of the protocols: DSP messages and state tables, the agreement lifecycle, the decisions
each party takes on the other's messages, offers, agreements and their proofs, export control, and the data
sandbox's query check, privacy and signed results (``sandbox``).

No I/O (no event loop, HTTP or database; ``now`` is an argument): checked by ``lint-imports``."""
