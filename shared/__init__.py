"""Fornax's common package: event schemas, settings, the event bus and Mongo read models."""
