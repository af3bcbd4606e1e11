"""Composition root: which services exist and how they are put together into processes."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from mercato.platform.runtime import Platform, Role
from mercato.platform.service import ServiceModule
from mercato.platform.settings import Settings, get_settings

# Start-up order matters: identity must be up before services that provision clients in it.
SERVICE_NAMES = ("accounts", "identity", "catalog", "wallet", "orders", "integration")


def available_services() -> list[str]:
    """The services built into this installation, in start-up order."""
    return [name for name in SERVICE_NAMES if _has_module(name)]


def _has_module(service: str) -> bool:
    try:
        return importlib.util.find_spec(f"mercato.{service}.module") is not None
    except ModuleNotFoundError:  # the service's package itself is not installed
        return False


def load_modules(names: Sequence[str] | None = None) -> list[ServiceModule[Any]]:
    """The service modules of the given services (all available ones by default)."""
    chosen = list(names) if names else available_services()
    unknown = sorted(set(chosen) - set(available_services()))
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}")
    modules = []
    for name in SERVICE_NAMES:
        if name in chosen:
            module = importlib.import_module(f"mercato.{name}.module")
            modules.append(module.MODULE)
    return modules


def build_platform(
    settings: Settings | None = None,
    services: Sequence[str] | None = None,
    *,
    role: Role = "embedded",
    migrate_on_start: bool = True,
) -> Platform:
    """A platform holding the given services."""
    return Platform(
        settings or get_settings(),
        load_modules(services),
        role=role,
        migrate_on_start=migrate_on_start,
        topology=load_modules(),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The embedded app: every service in one process (used by `mercato run`)."""
    return build_platform(settings).create_app("Mercato")


def create_service_app(service: str, settings: Settings | None = None) -> FastAPI:
    """One service's HTTP API for a distributed deployment (used by `mercato serve`)."""
    platform = build_platform(settings, [service], role="api", migrate_on_start=False)
    return platform.create_app(f"Mercato {service}")
