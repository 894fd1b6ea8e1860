"""`fornax user create NAME`: creates a user and prints its API token on the last line."""

from __future__ import annotations

import argparse
import re
import sys

from shared.auth import UserExists, create_user, rotate_token
from shared.settings import get_settings
from shared.store import Store

USER_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62}[a-z0-9])?$")


def user_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fornax user", description="manage users and API tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a user and print its token (shown only once)")
    create.add_argument("name", help="the user id used in API paths, e.g. alice")
    reissue = sub.add_parser("token", help="issue a new token for a user (the old one stops working)")
    reissue.add_argument("name")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "token":
        return _reissue(args.name)
    if not USER_NAME.match(args.name):
        print(
            f"fornax user: invalid user name {args.name!r}: use lower-case letters, digits, '-' and '_'",
            file=sys.stderr,
        )
        return 1
    store = Store(get_settings())
    try:
        store.ensure_indexes()
        token = create_user(store, args.name)
    except UserExists:
        print(
            f"fornax user: user {args.name!r} already exists (its token cannot be shown again)",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
        print(f"fornax user: cannot reach MongoDB at {store.settings.mongo_url}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"created user {args.name}; API token (shown only once):")
    print(token)
    return 0


def _reissue(name: str) -> int:
    store = Store(get_settings())
    try:
        token = rotate_token(store, name)
    except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
        print(f"fornax user: cannot reach MongoDB at {store.settings.mongo_url}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if token is None:
        print(f"fornax user: no user {name!r}", file=sys.stderr)
        return 1
    print(f"new API token for {name} (shown only once; the old one no longer works):")
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(user_main())
