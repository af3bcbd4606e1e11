"""The orders service (DESIGN §1)."""
