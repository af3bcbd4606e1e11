"""The wallet service (DESIGN §1)."""
