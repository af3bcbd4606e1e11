"""The identity service (DESIGN §1)."""
