"""Reading request bodies: a size limit (413), JSON parsing (400), pydantic validation (422 + field)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")


def body_limit(request: Request) -> int:
    return int(request.app.state.settings.max_body_bytes)


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The raw body, refusing more than `limit` bytes (Content-Length first, then while reading)."""
    limit = body_limit(request) if limit is None else limit
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "client disconnected while sending the body") from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; a JSON object is expected")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}"[:300]) from None


def validate(model: type[M], data: Any) -> M:
    """Validate `data` against `model`; the first error becomes a 422 naming its field."""
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        where = f"{field}: " if field else ""
        raise ApiError(422, "validation_error", f"{where}{msg}", field) from None


async def read_json(request: Request, model: type[M], limit: int | None = None) -> M:
    """Read, parse and validate a JSON body in one step (413 / 400 / 422)."""
    return validate(model, parse_json(await read_body(request, limit)))
