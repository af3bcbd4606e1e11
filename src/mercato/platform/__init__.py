"""Shared building blocks every service stands on: settings, storage, events, errors, auth."""
