"""`fornax logs [-f] VERSION_ID`: print a version's log in the terminal.

Prints each line's text (or, with --json, each line as JSON) from the logstream's
ws://host:port/ws/versions/{id}/logs endpoint. Without `-f` it prints what is archived so far and exits
(`follow=false` on the endpoint); with `-f` it follows live lines until the version ends. For an ended
version both print the whole log. After a dropped connection (or a 4008 "too slow") it reconnects with
`since=<last seq printed>`, so no line is printed twice or skipped.

Token: --token, else the FORNAX_TOKEN environment variable. Server: --server, else
ws://<settings.logstream_host>:<settings.logstream_port>.

Exit status: 0 the version succeeded (or, without -f, is still running), 1 it failed, 2 it was
cancelled, 3 refused (bad token, someone else's or an unknown version) or the server stayed unreachable,
64 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

OUTCOME_CODES = {"success": 0, "failed": 1, "cancelled": 2}
REFUSED = 3
USAGE = 64
REFUSALS = {
    4400: "bad request",
    4401: "missing or invalid token",
    4403: "not your version",
    4404: "unknown version",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax logs", description="print (or follow) a version's build log")
    p.add_argument("-f", "--follow", action="store_true", help="follow live lines until the version ends")
    p.add_argument("version_id")
    p.add_argument("--token", default=None, help="API token (default: $FORNAX_TOKEN)")
    p.add_argument("--server", default=None, help="logstream base URL, e.g. ws://127.0.0.1:8000")
    p.add_argument("--since", type=int, default=0, help="start after this sequence number")
    p.add_argument("--json", action="store_true", help="print each line as JSON")
    p.add_argument(
        "--retries",
        type=int,
        default=120,
        help="reconnect attempts in a row (about one a second) before giving up",
    )
    return p


async def follow(
    server: str,
    version_id: str,
    token: str,
    since: int = 0,
    *,
    as_json: bool = False,
    retries: int = 120,
    live: bool = True,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the log from `since` until the version ends (`live`) or up to what is archived; returns the
    exit status."""
    last = since
    failures = 0
    while True:
        url = f"{server.rstrip('/')}/ws/versions/{version_id}/logs?since={last}"
        if not live:
            url += "&follow=false"
        try:
            async with connect(
                url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, open_timeout=10
            ) as ws:
                before = last
                try:
                    async for frame in ws:
                        data: Any = json.loads(frame)
                        if isinstance(data, dict) and data.get("final"):
                            status = str(data.get("status"))
                            print(f"fornax: version {version_id} ended: {status}", file=err)
                            return OUTCOME_CODES.get(status, REFUSED)
                        if isinstance(data, dict) and data.get("end"):
                            print(
                                f"fornax: version {version_id} is {data.get('status')}: printed its log so far "
                                "(fornax logs -f follows it)",
                                file=err,
                            )
                            return 0
                        for line in data if isinstance(data, list) else [data]:
                            if line["seq"] <= last:
                                continue
                            print(json.dumps(line) if as_json else line["text"], file=out, flush=True)
                            last = line["seq"]
                except ConnectionClosed:
                    pass
                code = ws.close_code
            if code in REFUSALS:
                print(f"fornax: {REFUSALS[code]} ({ws.close_reason})", file=err)
                return REFUSED
            # A drop after progress retries at once; repeated drops without progress count as failures.
            failures = 0 if last > before else failures + 1
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            failures += 1
            reason = str(exc)
        else:
            reason = f"closed with {code}"
        if failures > retries:
            print(f"fornax: logstream unreachable ({reason})", file=err)
            return REFUSED
        await asyncio.sleep(min(1.0, 0.1 * (failures + 1)))


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else USAGE
    token = args.token or os.environ.get("FORNAX_TOKEN")
    if not token:
        print("fornax: no token: pass --token or set FORNAX_TOKEN", file=sys.stderr)
        return USAGE
    server = args.server
    if server is None:
        from shared.settings import get_settings

        s = get_settings()
        server = f"ws://{s.logstream_host}:{s.logstream_port}"
    try:
        return asyncio.run(
            follow(
                server,
                args.version_id,
                token,
                args.since,
                as_json=args.json,
                retries=args.retries,
                live=args.follow,
            )
        )
    except InvalidURI as exc:
        print(f"fornax: bad server URL: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
