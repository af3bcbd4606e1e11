"""The catalog service (DESIGN §1)."""
