"""Alembic's environment for the audit store: run by `service.migrations` (at service start and by
`python -m service.migrations`) on a connection it has opened, locked and begun; or by the
`alembic` command line, with `sqlalchemy.url` from its configuration or AEGRADE_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData, create_engine, pool


def target_metadata() -> MetaData:
    """Every table the code declares (for `alembic revision --autogenerate` and `check`)."""
    import service.cds_hooks  # noqa: F401 - declares its tables on the shared metadata
    import service.episodes  # noqa: F401
    from service.store import metadata

    return metadata


def database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.settings import ServiceSettings

    return ServiceSettings().database_url


def run() -> None:
    if context.is_offline_mode():  # `alembic upgrade --sql`: the DDL, printed
        context.configure(url=database_url(), target_metadata=target_metadata(), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:  # in the caller's transaction: it commits, or rolls back
        context.configure(connection=connection, target_metadata=target_metadata())
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as own:
            context.configure(connection=own, target_metadata=target_metadata())
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run()
