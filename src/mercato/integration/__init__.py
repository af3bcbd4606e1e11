"""The integration service: token manager, resilient HTTP, partner sandbox and jobs (DESIGN §5)."""
