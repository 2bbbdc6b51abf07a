"""One Redis connection that sends a burst of notifications in one round trip.

Used by the notifier's background thread only. The PUBLISH commands are packed here, not
through redis-py's pipeline, because the pipeline spends several times more CPU per command
than the command costs Redis, and that CPU is taken from the tasks of the same process.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flowworker.notification import encode_result, flow_execution_channel, organization_channel
from persistence.reports import UpsertResult

_CHANNEL_CACHE_SIZE = 10_000


class RedisPublisher:
    def __init__(self, redis_url: str, channel_prefix: str, socket_timeout: float) -> None:
        self.channel_prefix = channel_prefix
        self._client = redis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # the notifier retries with backoff; redis-py's retries would hold a burst longer
            retry=Retry(NoBackoff(), 0),
        )
        self._channels: dict[tuple[uuid.UUID, uuid.UUID], tuple[bytes, bytes]] = {}

    def ping(self) -> None:
        self._client.ping()

    def publish_results(self, results: Sequence[UpsertResult]) -> None:
        """PUBLISH each result on its organization's and its flow execution's channel."""
        sent_at = dt.datetime.now(dt.UTC).isoformat()
        commands: list[bytes] = []
        for result in results:
            message = encode_result(result, sent_at)
            for channel in self._channels_of(result):
                commands.append(
                    b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                    % (len(channel), channel, len(message), message)
                )
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            for _ in commands:
                connection.read_response()
        except BaseException:
            # replies left unread would answer the next command
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)

    def disconnect(self) -> None:
        self._client.connection_pool.disconnect()

    def close(self) -> None:
        self._client.close()

    def _channels_of(self, result: UpsertResult) -> tuple[bytes, bytes]:
        key = (result.organization_id, result.report.flow_execution_id)
        channels = self._channels.get(key)
        if channels is None:
            if len(self._channels) >= _CHANNEL_CACHE_SIZE:
                self._channels.clear()
            organization_id, flow_execution_id = key
            channels = self._channels[key] = (
                organization_channel(self.channel_prefix, organization_id).encode(),
                flow_execution_channel(
                    self.channel_prefix, organization_id, flow_execution_id
                ).encode(),
            )
        return channels


def redacted(url: str) -> str:
    """The URL without credentials, for log lines."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
