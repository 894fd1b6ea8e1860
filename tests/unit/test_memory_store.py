"""The in-memory store answers the filters and updates Fornax uses as MongoDB does (the semantics the
read models and handlers rely on)."""

from __future__ import annotations

import pytest
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.fakes.store import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    for i, status in enumerate(["pending", "running", "success", None]):
        doc = {"_id": f"v{i}", "n": i, "status": status, "stages": {"build": {"status": status}}}
        if status is None:
            del doc["status"]
        s.versions.insert_one(doc)
    return s


def ids(cursor: object) -> list[str]:
    return [d["_id"] for d in cursor]  # type: ignore[attr-defined]


def test_filters(store: MemoryStore) -> None:
    v = store.versions
    assert ids(v.find({"status": {"$in": ["pending", "running"]}})) == ["v0", "v1"]
    assert ids(v.find({"status": {"$nin": ["success"]}})) == ["v0", "v1", "v3"]  # a missing field too
    assert ids(v.find({"status": {"$ne": "pending"}})) == ["v1", "v2", "v3"]
    assert ids(v.find({"status": None})) == ["v3"]  # null matches a missing field
    assert ids(v.find({"status": {"$exists": False}})) == ["v3"]
    assert ids(v.find({"n": {"$gte": 1, "$lt": 3}})) == ["v1", "v2"]
    assert ids(v.find({"stages.build.status": "running"})) == ["v1"]
    assert ids(v.find({"$or": [{"n": 0}, {"status": "success"}]})) == ["v0", "v2"]
    assert v.count_documents({"n": {"$gt": 0}}) == 3 and v.count_documents({}, limit=1) == 1


def test_cursor_sort_skip_limit_and_projection(store: MemoryStore) -> None:
    v = store.versions
    assert ids(v.find({}).sort([("n", -1)]).skip(1).limit(2)) == ["v2", "v1"]
    assert ids(v.find({}).sort("status", 1)) == ["v3", "v0", "v1", "v2"]  # missing first, as null
    assert v.find_one({"_id": "v1"}, {"n": 1}) == {"_id": "v1", "n": 1}
    assert v.find_one({"_id": "v1"}, {"n": 1, "_id": 0}) == {"n": 1}
    assert "stages" not in v.find_one({"_id": "v1"}, {"stages": 0})


def test_updates_and_upserts(store: MemoryStore) -> None:
    v = store.versions
    r = v.update_one({"_id": "v0", "status": {"$in": ["pending"]}},
                     {"$set": {"status": "running", "stages.push.status": "running"}, "$inc": {"n": 5}})
    assert (r.matched_count, r.modified_count) == (1, 1)
    doc = v.find_one({"_id": "v0"})
    assert (doc["status"], doc["n"], doc["stages"]["push"]) == ("running", 5, {"status": "running"})
    assert v.update_one({"_id": "v0", "status": "pending"}, {"$set": {"x": 1}}).matched_count == 0
    v.update_one({"_id": "new"}, {"$setOnInsert": {"status": "pending"}, "$set": {"n": 9}}, upsert=True)
    v.update_one({"_id": "new"}, {"$setOnInsert": {"status": "other"}, "$set": {"n": 10}}, upsert=True)
    assert v.find_one({"_id": "new"}) == {"_id": "new", "status": "pending", "n": 10}
    # An upsert whose guard fails on an existing document tries to insert its _id: a duplicate, as in MongoDB.
    with pytest.raises(DuplicateKeyError):
        v.update_one({"_id": "v2", "status": {"$nin": ["success"]}}, {"$set": {"status": "x"}}, upsert=True)
    v.update_one({"_id": "v1"}, {"$unset": {"stages": ""}})
    assert "stages" not in v.find_one({"_id": "v1"})


def test_returned_documents_are_copies(store: MemoryStore) -> None:
    doc = store.versions.find_one({"_id": "v0"})
    doc["stages"]["build"]["status"] = "changed"
    assert store.versions.find_one({"_id": "v0"})["stages"]["build"]["status"] == "pending"


def test_inserts_deletes_and_find_and_modify(store: MemoryStore) -> None:
    r = store.reservations
    r.insert_one({"_id": "k", "ref": 1})
    with pytest.raises(DuplicateKeyError):
        r.insert_one({"_id": "k", "ref": 2})
    got = r.find_one_and_update({"_id": "k"}, {"$set": {"ref": 3}}, return_document=ReturnDocument.AFTER)
    assert got == {"_id": "k", "ref": 3}
    assert r.find_one_and_update({"_id": "k"}, {"$set": {"ref": 4}}) == {"_id": "k", "ref": 3}
    assert r.find_one_and_delete({"_id": "k"}) == {"_id": "k", "ref": 4}
    assert r.delete_one({"_id": "k"}).deleted_count == 0
    r.replace_one({"_id": "t"}, {"token": "a"}, upsert=True)
    r.replace_one({"_id": "t"}, {"token": "b"})
    assert r.find_one({"_id": "t"}) == {"_id": "t", "token": "b"}


def test_unique_indexes_and_unordered_bulk_inserts() -> None:
    store = MemoryStore()
    store.users.insert_one({"_id": "alice", "token_hash": "h"})
    with pytest.raises(DuplicateKeyError):
        store.users.insert_one({"_id": "bob", "token_hash": "h"})
    with pytest.raises(BulkWriteError) as err:
        store.logs.insert_many([{"_id": "a", "version_id": "v", "seq": 1}, {"_id": "a"}, {"_id": "b"}],
                               ordered=False)
    assert err.value.details["nInserted"] == 2
    assert [e["code"] for e in err.value.details["writeErrors"]] == [11000]
