"""The `fornax` command: each subcommand lives with the service that owns it and is imported lazily."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "service": ("services.client.commands", "service_main", "create, list, show and delete services"),
    "version": ("services.client.commands", "version_main", "create (--follow), list, show and cancel versions"),
    "deploy": ("services.client.commands", "deploy_main", "deploy a successful version to a target"),
    "rollback": ("services.client.commands", "rollback_main", "roll a target back (pins it)"),
    "history": ("services.client.commands", "history_main", "a service's deploy history"),
    "token": ("services.client.commands", "token_main", "rotate or revoke your API token"),
    "user": ("services.gateway.admin", "user_main", "manage users and API tokens (fornax user create NAME)"),
    "projections": ("services.projector.app", "projections_main", "rebuild read models from the archive"),
    "topics": ("shared.bus", "topics_main", "create the Kafka topics with their partition counts"),
    "demo": ("infra.demo.build", "main", "build and deploy a sample repository end to end"),
    "logs": ("services.client.follow", "main", "print or follow a version's log (fornax logs [-f] VERSION_ID)"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: fornax COMMAND [ARGS]\n\ncommands:")
        for name, (_, _, help_text) in COMMANDS.items():
            print(f"  {name:12} {help_text}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module, func, _ = COMMANDS[args[0]]
    result = getattr(importlib.import_module(module), func)(args[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
