"""The accounts service (DESIGN §1)."""
