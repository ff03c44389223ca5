"""usage_policies: an ODRL 2.2 policy engine (pure: no I/O, no clock)."""
