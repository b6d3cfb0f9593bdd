"""sipreg: an RFC 3261 SIP registrar with a sans-I/O core."""

__version__ = "0.1.0"
