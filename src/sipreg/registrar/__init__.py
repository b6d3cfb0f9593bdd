"""Registrar: the binding model, the pure RFC 3261 section 10.3 rules and the Registrar class."""
