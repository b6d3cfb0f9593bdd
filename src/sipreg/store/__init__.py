"""Binding stores: one async interface, several backends."""

from .base import AorState, BindingStore, Change, open_store

__all__ = ["AorState", "BindingStore", "Change", "open_store"]
