"""MemoryStore: the in-memory ReadModelStore (shared/store.py), for unit tests without Mongo.

It evaluates the same filter and update documents MongoDB does, for the operators Fornax uses:
filters with equality on (dotted) fields, $in $nin $ne $exists $gt $gte $lt $lte $or $and; updates
with $set $setOnInsert $inc $unset (dotted fields); upserts that seed the new document from the
filter's equality fields; `_id` and unique indexes raise DuplicateKeyError; insert_many(ordered=False)
raises BulkWriteError with the duplicates as code 11000, as pymongo does. Documents are copied in and
out, so a caller never shares a stored document.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.settings import Settings

_MISSING = object()
_ids = itertools.count(1)


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = copy.deepcopy(value)


def _unset(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.get(part)  # type: ignore[assignment]
        if not isinstance(doc, dict):
            return
    doc.pop(last, None)


def _cmp(a: Any, b: Any, op: str) -> bool:
    if a is _MISSING or a is None or b is None:
        return False
    try:
        return bool({"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op])
    except TypeError:
        return False  # MongoDB compares across types by type order; Fornax never relies on that


def _eq(value: Any, wanted: Any) -> bool:
    if wanted is None:
        return value is _MISSING or value is None
    if isinstance(value, list) and not isinstance(wanted, list):
        return wanted in value
    return value is not _MISSING and value == wanted


def _field_matches(value: Any, cond: Any) -> bool:
    if not (isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond)):
        return _eq(value, cond)
    for op, arg in cond.items():
        if op == "$in":
            ok = any(_eq(value, a) for a in arg)
        elif op == "$nin":
            ok = not any(_eq(value, a) for a in arg)
        elif op == "$ne":
            ok = not _eq(value, arg)
        elif op == "$exists":
            ok = (value is not _MISSING) == bool(arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = _cmp(value, arg, op)
        else:
            raise NotImplementedError(f"MemoryStore: query operator {op}")
        if not ok:
            return False
    return True


def matches(doc: Mapping[str, Any], query: Mapping[str, Any] | None) -> bool:
    for key, cond in (query or {}).items():
        if key == "$or":
            if not any(matches(doc, q) for q in cond):
                return False
        elif key == "$and":
            if not all(matches(doc, q) for q in cond):
                return False
        elif key.startswith("$"):
            raise NotImplementedError(f"MemoryStore: query operator {key}")
        elif not _field_matches(_get(doc, key), cond):
            return False
    return True


def _project(doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if not projection:
        return doc
    fields = dict.fromkeys(projection, 1) if isinstance(projection, list | tuple) else dict(projection)
    keep_id = fields.pop("_id", 1)
    if any(fields.values()):
        out = {k: doc[k] for k in fields if k in doc}
    else:
        out = {k: v for k, v in doc.items() if k not in fields}
    if keep_id and "_id" in doc:
        out["_id"] = doc["_id"]
    elif not keep_id:
        out.pop("_id", None)
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    # MongoDB's order across the types Fornax sorts on: missing/null < numbers < strings < others.
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, value)


class Cursor:
    def __init__(self, docs: list[dict[str, Any]], projection: Any) -> None:
        self._docs = docs
        self._projection = projection
        self._skip = 0
        self._limit = 0

    def sort(self, key: Any, direction: int = 1) -> Cursor:
        keys = [(key, direction)] if isinstance(key, str) else list(key)
        for field, way in reversed(keys):
            self._docs.sort(key=lambda d, f=field: _sort_key(_get(d, f)), reverse=way < 0)
        return self

    def skip(self, n: int) -> Cursor:
        self._skip = n
        return self

    def limit(self, n: int) -> Cursor:
        self._limit = n
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        docs = self._docs[self._skip:]
        if self._limit:
            docs = docs[: self._limit]
        return iter([_project(d, self._projection) for d in docs])


@dataclass
class Result:
    matched_count: int = 0
    modified_count: int = 0
    upserted_id: Any = None
    deleted_count: int = 0
    inserted_id: Any = None
    inserted_ids: list[Any] | None = None


class MemoryCollection:
    def __init__(self, name: str, lock: threading.RLock) -> None:
        self.name = name
        self.docs: dict[Any, dict[str, Any]] = {}
        self.unique: list[tuple[str, ...]] = []
        self._lock = lock

    # -- reads -------------------------------------------------------------------------------------
    def _matching(self, query: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        return [d for d in self.docs.values() if matches(d, query)]

    def find(self, filter: Any = None, projection: Any = None, **kwargs: Any) -> Cursor:
        with self._lock:
            return Cursor(self._matching(filter), projection)

    def find_one(self, filter: Any = None, projection: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        return next(iter(self.find(filter, projection).limit(1)), None)

    def count_documents(self, filter: Mapping[str, Any], limit: int = 0, **kwargs: Any) -> int:
        n = len(self._matching(filter))
        return min(n, limit) if limit else n

    # -- writes ------------------------------------------------------------------------------------
    def _check_unique(self, doc: dict[str, Any], ignore: Any = _MISSING) -> None:
        if doc["_id"] in self.docs and doc["_id"] != ignore:
            raise DuplicateKeyError(f"E11000 duplicate key error collection: {self.name} _id: {doc['_id']!r}")
        for keys in self.unique:
            mine = tuple(_get(doc, k) for k in keys)
            if any(tuple(_get(o, k) for k in keys) == mine for i, o in self.docs.items() if i != doc["_id"]):
                raise DuplicateKeyError(f"E11000 duplicate key error collection: {self.name} index: {keys}")

    def insert_one(self, document: Any, **kwargs: Any) -> Result:
        with self._lock:
            doc = copy.deepcopy(dict(document))
            doc.setdefault("_id", f"oid{next(_ids)}")
            self._check_unique(doc)
            self.docs[doc["_id"]] = doc
            return Result(inserted_id=doc["_id"])

    def insert_many(self, documents: Any, ordered: bool = True, **kwargs: Any) -> Result:
        inserted, errors = [], []
        for i, document in enumerate(documents):
            try:
                inserted.append(self.insert_one(document).inserted_id)
            except DuplicateKeyError as exc:
                errors.append({"index": i, "code": 11000, "errmsg": str(exc)})
                if ordered:
                    break
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(inserted)})
        return Result(inserted_ids=inserted)

    @staticmethod
    def _apply(doc: dict[str, Any], update: Mapping[str, Any], inserting: bool) -> None:
        for op, fields in update.items():
            if op == "$setOnInsert" and not inserting:
                continue
            for path, value in fields.items():
                if op in ("$set", "$setOnInsert"):
                    _set(doc, path, value)
                elif op == "$inc":
                    current = _get(doc, path)
                    _set(doc, path, (0 if current is _MISSING else current) + value)
                elif op == "$unset":
                    _unset(doc, path)
                else:
                    raise NotImplementedError(f"MemoryStore: update operator {op}")

    def _upsert(self, filter: Mapping[str, Any], update: Mapping[str, Any] | None,
                replacement: Mapping[str, Any] | None = None) -> Result:
        doc: dict[str, Any] = {}
        for key, cond in filter.items():
            if not key.startswith("$") and not (isinstance(cond, Mapping) and any(k.startswith("$") for k in cond)):
                _set(doc, key, cond)
        if replacement is not None:
            doc = {"_id": doc.get("_id"), **copy.deepcopy(dict(replacement))}
        else:
            self._apply(doc, update or {}, inserting=True)
        doc.setdefault("_id", doc.get("_id") or f"oid{next(_ids)}")
        self.insert_one(doc)
        return Result(upserted_id=doc["_id"])

    def update_one(self, filter: Mapping[str, Any], update: Any, upsert: bool = False, **kwargs: Any) -> Result:
        with self._lock:
            found = self._matching(filter)
            if not found:
                return self._upsert(filter, update) if upsert else Result()
            doc = found[0]
            before = copy.deepcopy(doc)
            self._apply(doc, update, inserting=False)
            return Result(matched_count=1, modified_count=int(doc != before))

    def replace_one(self, filter: Mapping[str, Any], replacement: Any, upsert: bool = False,
                    **kwargs: Any) -> Result:
        with self._lock:
            found = self._matching(filter)
            if not found:
                return self._upsert(filter, None, replacement) if upsert else Result()
            old = found[0]
            new = {**copy.deepcopy(dict(replacement)), "_id": old["_id"]}
            self._check_unique(new, ignore=old["_id"])
            self.docs[old["_id"]] = new
            return Result(matched_count=1, modified_count=int(new != old))

    def delete_one(self, filter: Mapping[str, Any], **kwargs: Any) -> Result:
        with self._lock:
            found = self._matching(filter)
            if found:
                del self.docs[found[0]["_id"]]
            return Result(deleted_count=len(found[:1]))

    def find_one_and_update(self, filter: Mapping[str, Any], update: Any, projection: Any = None,
                            return_document: Any = ReturnDocument.BEFORE, upsert: bool = False,
                            **kwargs: Any) -> dict[str, Any] | None:
        with self._lock:
            found = self._matching(filter)
            if not found:
                if not upsert:
                    return None
                made = self._upsert(filter, update)
                return _project(self.docs[made.upserted_id], projection) if return_document else None
            before = _project(found[0], projection)
            self._apply(found[0], update, inserting=False)
            return _project(found[0], projection) if return_document == ReturnDocument.AFTER else before

    def find_one_and_delete(self, filter: Mapping[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        with self._lock:
            found = self._matching(filter)
            if not found:
                return None
            return self.docs.pop(found[0]["_id"])

    def create_index(self, keys: Any, unique: bool = False, **kwargs: Any) -> str:
        names = tuple(k if isinstance(k, str) else k[0] for k in ([keys] if isinstance(keys, str) else keys))
        if unique and names not in self.unique:
            self.unique.append(names)
        return "_".join(names)


class MemoryStore:
    """A ReadModelStore held in dicts: collections appear on first use, as in MongoDB."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.collections: dict[str, MemoryCollection] = {}
        self._lock = threading.RLock()
        self.ensure_indexes()

    def __getitem__(self, name: str) -> MemoryCollection:
        with self._lock:
            if name not in self.collections:
                self.collections[name] = MemoryCollection(name, self._lock)
            return self.collections[name]

    def __getattr__(self, name: str) -> MemoryCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def ensure_indexes(self) -> None:
        self["logs"].create_index([("version_id", 1), ("seq", 1)], unique=True)
        self["users"].create_index([("token_hash", 1)], unique=True)

    def drop(self, name: str) -> None:
        self.collections.pop(name, None)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
