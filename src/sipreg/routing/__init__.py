"""Requests other than REGISTER: the redirect step and the lookup step of a chain."""
