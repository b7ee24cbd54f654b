"""The "writer path" experiment of issue 15: records through the SDK's own record path, written by
a buffering subclass of singer-sdk's ``MsgSpecWriter``.

    python -m bench.writer_path tap_luminai.tap:TapLuminai --config CONFIG.json [tap options]

The tap ships a direct RECORD path (``billing_toolkit.output``) next to the SDK's, held together by
private SDK hooks (``billing_toolkit.sdk_seams``). The alternative measured here keeps one record
path: every stream's ``fast_records`` is turned off, so each record is a message object that goes
through the stream maps and field selection as the SDK does it, with the taps' type conformance
(``NONE``); the writer the SDK hands every message to buffers RECORD lines and writes the pending
ones before any other message, so a STATE never precedes the records it covers. ``make bench
BENCH_ARGS='--variants tap,writer-path'`` compares the two in the same run.
"""

from __future__ import annotations

import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.encoding.base import SingerMessageType

from bench.sdk_default import launch
from billing_toolkit.output import RECORDS, uninterrupted, write_all

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.singerlib.encoding.simple import Message


class BufferedMsgSpecWriter(MsgSpecWriter):
    """msgspec-encoded lines; RECORD lines wait in the toolkit's buffer, any other message is
    written after the pending RECORD lines, whole."""

    def write_message(self, message: Message) -> None:
        line = bytes(self.format_message(message))
        if message.type == SingerMessageType.RECORD:
            RECORDS.add(line)
            return
        with uninterrupted():
            RECORDS.flush()
            write_all(line)


def with_writer_path(tap_class: type[Tap]) -> type[Tap]:
    """A subclass of ``tap_class`` whose records take the SDK's path and the buffering writer."""

    class WriterPathTap(tap_class):  # type: ignore[valid-type, misc]
        message_writer_class = BufferedMsgSpecWriter

        def discover_streams(self) -> t.Any:
            streams = super().discover_streams()
            for stream in streams:
                stream.fast_records = False
            return streams

    WriterPathTap.__name__ = WriterPathTap.__qualname__ = f"WriterPath{tap_class.__name__}"
    return WriterPathTap


def main(argv: list[str] | None = None) -> None:
    launch(with_writer_path, __doc__ or "", argv)


if __name__ == "__main__":
    main()
