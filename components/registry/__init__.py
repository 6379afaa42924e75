"""The service registry: one entry per OpenStack service, read by every component.

Adding a service (say `orchestration`, heat) is one module here that defines a
ServiceDefinition (catalog, user, databases, files, units, HAProxy listens, db sync,
install), its templates under templates/<name>/, and its line in SERVICES below.
"""
from __future__ import annotations

from components.registry import cinder, glance, horizon, keystone, neutron, nova, placement
from components.registry.model import (ROLES, CatalogEntry, ConfigFile, Database, Listen, ServiceDefinition, Unit,
                                       Wsgi)

# The services a region can run, in the order they are configured and started.
SERVICES: tuple[ServiceDefinition, ...] = (
    keystone.SERVICE, glance.SERVICE, placement.SERVICE, nova.SERVICE, neutron.SERVICE, cinder.SERVICE,
    horizon.SERVICE,
)
KEYSTONE = keystone.SERVICE
INTERFACES = ("public", "internal", "admin")


def by_name(name: str) -> ServiceDefinition:
    return next(s for s in SERVICES if s.name == name)


def catalog_entries() -> tuple[tuple[ServiceDefinition, CatalogEntry], ...]:
    return tuple((s, c) for s in SERVICES for c in s.catalog)


def catalog_entry(service_type: str) -> CatalogEntry:
    return next(c for _, c in catalog_entries() if c.type == service_type)


def region_service_types() -> tuple[str, ...]:
    """What a stack's `services` may name: every catalog type but Keystone's, which
    every region gets anyway."""
    return tuple(c.type for s, c in catalog_entries() if s is not KEYSTONE)


def service_selectors() -> tuple[str, ...]:
    """What a stack's `services` may name: the catalog types, and the selectors of the
    services without one (`dashboard`)."""
    return tuple(dict.fromkeys((*region_service_types(), *(sel for s in SERVICES if not s.catalog
                                                            for sel in s.selectors))))


def selected(services: tuple[str, ...]) -> tuple[ServiceDefinition, ...]:
    """The registry entries a region running these service types (or selectors, such
    as `dashboard` for Horizon) configures, in registry order."""
    known = tuple(sel for s in SERVICES for sel in s.selectors)
    unknown = sorted(set(services) - set(known))
    if unknown:
        raise ValueError(f"unknown service type {unknown[0]!r}: expected one of {', '.join(known)}")
    return tuple(s for s in SERVICES if s.selected_by(services))


def owner_of_type(service_type: str) -> ServiceDefinition:
    return next(s for s, c in catalog_entries() if c.type == service_type)


def service_user(service_type: str) -> str:
    """The service user that authenticates for a catalog type (nova for compute)."""
    return owner_of_type(service_type).user


__all__ = ["ROLES", "SERVICES", "KEYSTONE", "INTERFACES", "CatalogEntry", "ConfigFile", "Database", "Listen",
           "ServiceDefinition", "Unit", "Wsgi", "by_name", "catalog_entries", "catalog_entry",
           "region_service_types", "service_selectors", "selected", "owner_of_type", "service_user"]
