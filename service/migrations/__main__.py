"""`python -m service.migrations upgrade|current|check`: the audit store's schema, by hand.

The store is AEGRADE_DATABASE_URL's (or --database-url's), as for the service.

  upgrade   bring the store to this code's revision (what the service does at start unless
            AEGRADE_MIGRATE is false); under the same lock, in one transaction
  current   print the store's revision and the one this code needs
  check     the same; exit status 1 unless the store is at this code's revision
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import SQLAlchemyError

from service.migrations import SchemaMismatch, check, state, upgrade
from service.settings import ServiceSettings
from service.store import AuditStore, StoreUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.migrations", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["upgrade", "current", "check"])
    parser.add_argument("--database-url", help="the store's SQLAlchemy URL (default: AEGRADE_DATABASE_URL)")
    args = parser.parse_args(argv)
    settings = ServiceSettings()
    store = AuditStore(args.database_url or settings.database_url, lock_timeout_s=settings.store_lock_timeout_s)
    try:
        if args.action == "upgrade":
            before = upgrade(store)
            if before.at_head:
                print(f"{store.safe_url}: at revision {before.head}; nothing to do")
            else:
                print(f"{store.safe_url}: upgraded from revision {before.describe()} to {before.head}")
            return 0
        if args.action == "check":
            found = check(store)
            print(f"{store.safe_url}: at revision {found.head}")
            return 0
        with store.engine.connect() as connection:
            found = state(connection)
        print(f"current: {found.describe()}{' (unknown to this code)' if found.ahead else ''}")
        print(f"head: {found.head}")
        return 0
    except SchemaMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the type, not the database's text (it can quote rows)
        print(f"error: {store.safe_url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
