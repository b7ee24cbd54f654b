"""Singer output: RECORD lines written fast, in order with every other message.

The SDK turns each record into a message object, conforms its types to the schema, maps it through
the stream maps and writes it with a flush per line. Where none of that changes the record (no
stream maps, no flattening, no deselected field; types already checked by ``RecordShape``), a RECORD
line is the stream's fixed prefix, the record encoded by msgspec, and the page's extraction time.

Order is what keeps state honest: a STATE line must never reach the target before the records it
covers. RECORD lines collect in one process-wide buffer; every other message (SCHEMA, STATE) goes
through :class:`OrderedWriter`, which writes the pending records first. A run killed while records
are buffered loses them together with the STATE that would have followed them: the resume reads them
again from the previous STATE.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import typing as t

import msgspec
from singer_sdk.singerlib.encoding.simple import SimpleSingerWriter

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

#: Buffered RECORD bytes are written out once they pass this size (and before any other message).
FLUSH_AT_BYTES = 1 << 16

_encode = msgspec.json.Encoder().encode


class RecordBuffer:
    """RECORD lines waiting to be written to stdout."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def add(self, line: bytes) -> None:
        pending = self._pending
        pending += line
        if len(pending) >= FLUSH_AT_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with uninterrupted():
            data = bytes(self._pending)
            self._pending.clear()
            write_all(data)


def write_all(data: bytes) -> None:
    """Write ``data`` to stdout, every byte of it, then flush.

    ``BufferedWriter.write`` returns short when a signal is handled while it is blocked on a full
    pipe (measured: 77,824 of 1,980,000 bytes written, the call returning normally): the rest is
    written in further calls, never dropped. Text already written through ``sys.stdout`` goes first.
    """
    out = sys.stdout
    binary = getattr(out, "buffer", None)
    if binary is None:  # a text-only stdout (tests capturing in-process)
        out.write(data.decode("utf-8"))
        out.flush()
        return
    out.flush()
    view = memoryview(data)
    while view:
        written = binary.write(view)
        view = view[written:] if written else view  # None: nothing written yet (never blocks here)
    binary.flush()


class _Guard:
    depth = 0
    deferred: t.Callable[[], None] | None = None


@contextlib.contextmanager
def uninterrupted() -> t.Iterator[None]:
    """A section that a termination signal must not cut in two (see :func:`defer_if_busy`).

    Writing pending records and then a STATE is such a section: cut after the records were taken
    from the buffer and before they were written, a handler writing STATE would put the bookmark
    ahead of records the target never receives.
    """
    _Guard.depth += 1
    try:
        yield
    finally:
        _Guard.depth -= 1
        if _Guard.depth == 0 and _Guard.deferred is not None:
            deferred, _Guard.deferred = _Guard.deferred, None
            deferred()


def defer_if_busy(action: t.Callable[[], None]) -> bool:
    """Run ``action`` at the end of the current uninterrupted section, if one is running."""
    if _Guard.depth:
        _Guard.deferred = action
        return True
    return False


#: The one buffer of this process.
RECORDS = RecordBuffer()


def _flush_at_exit() -> None:
    # Records of a window cut short by a failure: harmless to deliver (no STATE covers them).
    with contextlib.suppress(OSError, ValueError):  # stdout closed, or its reader gone
        RECORDS.flush()


atexit.register(_flush_at_exit)


class OrderedWriter(SimpleSingerWriter):
    """The SDK's writer, except that pending RECORD lines are written before each message, and
    every line is written whole (:func:`write_all`; the SDK's text write drops a short write)."""

    def write_message(self, message: Message) -> None:
        with uninterrupted():
            RECORDS.flush()
            write_all((self.format_message(message) + "\n").encode("utf-8"))


class RecordLineWriter:
    """Writes one stream's records as RECORD lines into :data:`RECORDS`."""

    def __init__(self, stream_alias: str) -> None:
        self._prefix = b'{"type":"RECORD","stream":' + _encode(stream_alias) + b',"record":'
        self._suffix = b"}\n"

    def set_time_extracted(self, text: str) -> None:
        """The time the current page was received (canonical UTC text)."""
        self._suffix = b',"time_extracted":' + _encode(text) + b"}\n"

    def write(self, record: dict[str, t.Any]) -> None:
        RECORDS.add(self._prefix + _encode(record) + self._suffix)
