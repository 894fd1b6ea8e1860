"""Steerable stand-ins for the ports of the services, for unit tests without Kafka, Docker or Mongo."""
