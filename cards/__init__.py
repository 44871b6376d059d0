"""Shipped run cards (``resim generate --card NAME`` finds them by name)."""
