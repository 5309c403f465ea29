"""What a federated round costs on the wire: the serialized bytes the server sends and receives.

:class:`CountingGrid` wraps the ``Grid`` a ServerApp is handed and adds up, per round (a
message's ``group_id``), the protobuf size of every message it pushes and of every reply it
pulls: what a SuperLink would carry for it (framing and TLS excluded). Both the plain
Message-API path and SecAgg+ (four exchanges per round) go through it, so their costs compare.
It also times each round from its first push to its last reply (client work and transport; the
server's own evaluation between rounds is outside).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid

__all__ = ["CountingGrid", "message_bytes"]


def message_bytes(msg: Message) -> int:
    """Serialized size of ``msg`` (content, or error, plus metadata) as a SuperLink would store it."""
    return int(message_to_proto(msg).ByteSize())


class CountingGrid(Grid):
    """A ``Grid`` that counts the bytes of what passes through it (``down``/``up`` per round)."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.down: dict[int, int] = defaultdict(int)  # round -> bytes sent to clients
        self.up: dict[int, int] = defaultdict(int)  # round -> bytes of the replies received
        self._span: dict[int, list[float]] = {}  # round -> [first push, last reply] (perf_counter)

    def seconds(self, server_round: int) -> float | None:
        span = self._span.get(server_round)
        return None if span is None else span[1] - span[0]

    def _sent(self, messages: list[Message]) -> None:
        now = time.perf_counter()
        for msg in messages:
            r = self._round(msg)
            self.down[r] += message_bytes(msg)
            self._span.setdefault(r, [now, now])

    def _received(self, replies: list[Message]) -> None:
        now = time.perf_counter()
        for msg in replies:
            r = self._round(msg)
            self.up[r] += message_bytes(msg)
            self._span.setdefault(r, [now, now])[1] = now

    @staticmethod
    def _round(msg: Message) -> int:
        group = msg.metadata.group_id
        return int(group) if group.isdigit() else 0

    def set_run(self, run) -> None:  # noqa: ANN001 - flwr Run
        self.inner.set_run(run)

    @property
    def run(self):  # noqa: ANN201 - flwr Run
        return self.inner.run

    def create_message(self, content, message_type: str, dst_node_id: int, group_id: str,  # noqa: ANN001
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._sent(messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._received(replies)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self._sent(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._received(replies)
        return replies
