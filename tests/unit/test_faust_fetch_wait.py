"""The one private Faust hook (shared/faust_app.py): Faust builds its aiokafka consumer with a 1.5 s
fetch wait and has no setting for it. This fails if Faust stops building the consumer through
`AIOKafkaConsumerThread._create_worker_consumer` or aiokafka renames `_fetch_max_wait_ms`, i.e. when
the hook no longer does anything. (What it buys is measured in bench/RESULTS.md.)"""

from __future__ import annotations

from shared.faust_app import FETCH_MAX_WAIT_MS, make_app
from shared.settings import Settings


async def test_the_worker_consumer_gets_the_configured_fetch_wait() -> None:
    for wait in (FETCH_MAX_WAIT_MS, 40):
        app = make_app("probe", Settings(kafka_bootstrap="127.0.0.1:1", faust_fetch_wait_ms=wait))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # nothing connects
        try:
            assert consumer._fetch_max_wait_ms == wait
        finally:
            await consumer.stop()

