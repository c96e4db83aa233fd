"""The store a configuration names: the station's SQLite file, or the fleet's PostgreSQL database (with the local
journal that keeps a station working through an outage)."""

from __future__ import annotations

from stationd.config import Config, FleetConfig
from stationd.errors import ConfigurationError
from stationd.files import SecretFileError, read_secret
from stationd.store import Store, StoreError, open_store


def store_for(config: Config, *, journal: bool = False) -> Store:
    """The configured store, not yet opened. With `journal` (the running station), a shared store keeps working
    through an outage: transitions wait in the local journal and are delivered in order when it is back."""
    settings = config.store
    if settings.url is None:
        return open_store(config.station.database, lease=settings.lease)
    password = None
    if settings.password_file is not None:
        try:
            password = read_secret(settings.password_file, "store.password_file")
        except SecretFileError as error:
            raise StoreError(str(error)) from None
    shared = open_store(
        settings.url,
        lease=settings.lease,
        password=password,
        pool_size=settings.pool,
        timeout=settings.timeout,
        application=f"stationd {config.station.id}",
    )
    if not journal:
        return shared
    from stationd.fleet.journal import JournaledStore

    assert settings.journal is not None
    return JournaledStore(shared, settings.journal, config.station.id)


def fleet_secret(fleet: FleetConfig) -> str | None:
    """The fleet's shared secret, from its 0600 file; None when none is configured (peers' requests are refused)."""
    if fleet.secret_file is None:
        return None
    try:
        return read_secret(fleet.secret_file, "fleet.secret_file")
    except SecretFileError as error:
        raise ConfigurationError(str(error)) from None
