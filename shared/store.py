"""The Mongo read-model store: one client, named collections, their indexes.

Collections (projections are written only by the projector from events; the rest say who writes them):
- services     {_id, user_id, name, description, repository{url,vcs,username}, config_file,
                deploy_targets, status (accepted|healthy|missing|unknownvcs), status_message,
                deleted, created_at, updated_at}                                   (projector)
- versions     {_id, service_id, user_id, name, description, commit, branch, trigger, operations,
                status (pending|queued|running|success|failed|cancelled), queued_reason,
                stages {<stage>: {status, start, end, error}}, image, image_id, digest, host, tag,
                error, delivery_id, created_at, started_at, finished_at}           (projector)
- deployments  {_id: deployment_id, service_id, user_id, version_id, target, namespace,
                application, image, digest, kind, status, reason, actor, requested_at,
                started_at, finished_at, duration}                                 (projector)
- targets      {_id: "<service_id>/<target>", service_id, target, pinned, pin_reason,
                current_deployment_id, current_version_id, current_digest}         (projector)
- events       the durable archive of every non-log event, _id = event_id, plus _pos (topic,
                partition, offset) and _applied (when it was folded: the rebuild's order) (projector)
- logs         {_id: "<version_id>:<seq:012d>", version_id, seq, stage, stream, text, ts}
                                                                  (log archiver in logstream)
- users        {_id: user name, token_hash, created_at}                 (`fornax user create`)
- secrets      {_id: service_id, webhook_secret, repo_password, repo_token, values{name: value},
                user_id, repo_url, repo_key (the normalized URL: the webhook lookup's indexed key)}
                (gateway, before it emits ServiceCreated/Updated; secrets never go into events;
                the secret values are Fernet-encrypted under `secrets_key`: shared/secretbox.py)
- builder_heartbeats {_id: version_id, worker, at (epoch s), takeovers}
                (builder: the worker building a version refreshes it; see services/builder/state.py)
- reservations {_id: "service:<user>/<name>" | "version:<service_id>/<name>" |
                "delivery:<provider>/<id>", ref}       (unique-name guards, written before emitting;
                a delivery's also holds emitted, event (the planned VersionRequested), at)

Times in read models are ISO-8601 UTC strings (`datetime.isoformat()` of an aware UTC datetime):
nx-27017 stores a datetime written by `$set` on an existing document as a naive string, so keep one
type everywhere; ISO strings sort correctly on both nx-27017 and MongoDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pymongo
from pymongo.collection import Collection as MongoCollection
from pymongo.database import Database

from .settings import Settings

PROJECTIONS = ("services", "versions", "deployments", "targets")


class Collection(Protocol):
    """The part of a pymongo collection that Fornax uses. Filters and updates are MongoDB's own
    documents (the operators used: $in $nin $ne $exists $gt $gte $lt $lte $or; $set $setOnInsert
    $inc $unset), so code written against this port runs unchanged on MongoDB and nx-27017; the
    in-memory fake (tests/fakes/store.py) evaluates the same documents."""

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any: ...
    def find(self, *args: Any, **kwargs: Any) -> Any: ...  # a cursor: sort, skip, limit, iteration
    def count_documents(self, filter: Mapping[str, Any], **kwargs: Any) -> int: ...
    def insert_one(self, document: Any) -> Any: ...
    def insert_many(self, documents: Any, ordered: bool = True) -> Any: ...
    def update_one(self, filter: Mapping[str, Any], update: Any, upsert: bool = False) -> Any: ...
    def replace_one(self, filter: Mapping[str, Any], replacement: Any, upsert: bool = False) -> Any: ...
    def delete_one(self, filter: Mapping[str, Any]) -> Any: ...
    def find_one_and_update(self, filter: Mapping[str, Any], update: Any, **kwargs: Any) -> Any: ...
    def find_one_and_delete(self, filter: Mapping[str, Any], **kwargs: Any) -> Any: ...
    def create_index(self, keys: Any, **kwargs: Any) -> Any: ...


class ReadModelStore(Protocol):
    """The read-model and secret-store port that routes and handlers take: the named collections
    above (read models, users and tokens, secrets, reservations, the outbox, the log archive).
    `Store` is the pymongo implementation; tests/fakes/store.py `MemoryStore` is the in-memory one."""

    settings: Settings

    @property
    def services(self) -> Collection: ...
    @property
    def versions(self) -> Collection: ...
    @property
    def deployments(self) -> Collection: ...
    @property
    def targets(self) -> Collection: ...
    @property
    def events(self) -> Collection: ...
    @property
    def logs(self) -> Collection: ...
    @property
    def users(self) -> Collection: ...
    @property
    def secrets(self) -> Collection: ...
    @property
    def reservations(self) -> Collection: ...
    @property
    def commit_statuses(self) -> Collection: ...

    def __getitem__(self, name: str) -> Collection: ...  # any other collection (oauth_states, oauth_tokens)
    def ensure_indexes(self) -> None: ...
    def drop(self, name: str) -> None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class Store:
    """The pymongo implementation of ReadModelStore. Holds the Mongo client; nothing connects until
    first use. Any other collection is an attribute too (`store.builder_heartbeats`)."""

    def __init__(self, settings: Settings, timeout_ms: int = 3000) -> None:
        self.settings = settings
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            settings.mongo_url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        self.db: Database[dict[str, Any]] = self.client[settings.mongo_db]

    def __getattr__(self, name: str) -> MongoCollection[dict[str, Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.db[name]

    def __getitem__(self, name: str) -> MongoCollection[dict[str, Any]]:
        return self.db[name]

    @property
    def services(self) -> MongoCollection[dict[str, Any]]:
        return self.db["services"]

    @property
    def versions(self) -> MongoCollection[dict[str, Any]]:
        return self.db["versions"]

    @property
    def deployments(self) -> MongoCollection[dict[str, Any]]:
        return self.db["deployments"]

    @property
    def targets(self) -> MongoCollection[dict[str, Any]]:
        return self.db["targets"]

    @property
    def events(self) -> MongoCollection[dict[str, Any]]:
        return self.db["events"]

    @property
    def logs(self) -> MongoCollection[dict[str, Any]]:
        return self.db["logs"]

    @property
    def users(self) -> MongoCollection[dict[str, Any]]:
        return self.db["users"]

    @property
    def secrets(self) -> MongoCollection[dict[str, Any]]:
        return self.db["secrets"]

    @property
    def reservations(self) -> MongoCollection[dict[str, Any]]:
        return self.db["reservations"]

    @property
    def commit_statuses(self) -> MongoCollection[dict[str, Any]]:
        return self.db["commit_statuses"]

    def drop(self, name: str) -> None:
        self.db.drop_collection(name)

    def ping(self) -> None:
        self.client.admin.command("ping")

    def ensure_indexes(self) -> None:
        db = self.db
        db.services.create_index([("user_id", 1), ("name", 1)])
        db.services.create_index([("repository.url", 1)])
        db.versions.create_index([("service_id", 1), ("created_at", -1)])
        db.versions.create_index([("user_id", 1)])
        db.versions.create_index([("status", 1)])
        db.deployments.create_index([("service_id", 1), ("requested_at", -1)])
        db.events.create_index([("aggregate_id", 1), ("occurred_at", 1)])
        db.events.create_index([("_applied", 1), ("occurred_at", 1)])  # the rebuild's replay order
        db.logs.create_index([("version_id", 1), ("seq", 1)], unique=True)
        db.users.create_index([("token_hash", 1)], unique=True)
        db.secrets.create_index([("repo_key", 1)])  # the webhook lookup (services/gateway/repo_index.py)

    def close(self) -> None:
        self.client.close()


def _implements_the_port(store: Store) -> ReadModelStore:
    return store  # (mypy checks here that Store implements ReadModelStore)

