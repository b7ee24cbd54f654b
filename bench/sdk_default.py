"""The "SDK default" baseline: a tap run with singer-sdk's default writer and type conformance.

    python -m bench.sdk_default tap_luminai.tap:TapLuminai --config CONFIG.json [tap options]

The taps may be switched to a faster configuration (the msgspec writer, less type conformance, a
leaner record path). This baseline must not follow them: it measures what the same tap costs with
the SDK as it comes. So it imports the tap class and, on a subclass, forces

- ``message_writer_class`` = the SDK's default ``SingerWriter`` (``singer_sdk.io_base``), also when
  the tap hands its own writer instance to the constructor;
- on every stream instance: ``TYPE_CONFORMANCE_LEVEL`` = ``TypeConformanceLevel.RECURSIVE`` (the
  default of ``singer_sdk.Stream``), and the SDK's own ``_generate_record_messages`` and
  ``_write_record_message``, in case the tap's streams override the record path;

then runs the tap's CLI with the remaining arguments. Before forcing, it logs the configuration the
tap ships with on a stderr line starting with ``MARKER`` (the harness reports the last one).
"""

from __future__ import annotations

import importlib
import json
import sys
import types
import typing as t

MARKER = "bench-sdk-default:"
RECORD_PATH = ("_generate_record_messages", "_write_record_message")

if t.TYPE_CHECKING:
    from singer_sdk import Tap


def load(target: str) -> type[Tap]:
    """``package.module:ClassName`` to the class."""
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def with_sdk_defaults(tap_class: type[Tap]) -> type[Tap]:
    """A subclass of ``tap_class`` that writes and conforms records as singer-sdk does by default."""
    from singer_sdk import Stream
    from singer_sdk.helpers._state import StateWriter
    from singer_sdk.helpers._typing import TypeConformanceLevel
    from singer_sdk.io_base import SingerWriter

    class SDKDefaultTap(tap_class):  # type: ignore[valid-type, misc]
        message_writer_class = SingerWriter

        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            self._bench_shipped: dict[str, t.Any] = {
                "shipped_writer": getattr(tap_class, "message_writer_class", SingerWriter).__name__,
                "streams": {},
                "forced_writer": SingerWriter.__name__,
                "forced_type_conformance": TypeConformanceLevel.RECURSIVE.name,
            }
            kwargs.pop("message_writer", None)
            super().__init__(*args, **kwargs)
            writer: t.Any = getattr(self, "message_writer", None)
            if type(writer) is not SingerWriter:
                # The tap built its own writer instance: replace it (and the state writer on it).
                self._bench_shipped["shipped_writer"] = type(writer).__name__
                self.message_writer = SingerWriter()
                self._state_writer = StateWriter(self.message_writer)
            self._bench_init_done = True
            self._bench_report()

        def _bench_report(self) -> None:
            sys.stderr.write(f"{MARKER} {json.dumps(self._bench_shipped, sort_keys=True)}\n")

        def discover_streams(self) -> t.Any:
            streams = super().discover_streams()
            for stream in streams:
                overridden = [
                    name
                    for name in RECORD_PATH
                    if getattr(type(stream), name) is not getattr(Stream, name)
                ]
                level = stream.TYPE_CONFORMANCE_LEVEL
                self._bench_shipped["streams"][stream.name] = {
                    "type_conformance": getattr(level, "name", str(level)),
                    "record_path_overridden": overridden,
                }
                stream.TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.RECURSIVE
                for name in RECORD_PATH:
                    setattr(stream, name, types.MethodType(getattr(Stream, name), stream))
            if getattr(self, "_bench_init_done", False):
                self._bench_report()  # streams discovered after __init__: report them too
            return streams

    SDKDefaultTap.__name__ = SDKDefaultTap.__qualname__ = f"SDKDefault{tap_class.__name__}"
    return SDKDefaultTap


def launch(
    wrap: t.Callable[[type[Tap]], type[Tap]], usage: str, argv: list[str] | None = None
) -> None:
    """Run ``wrap(TARGET)``'s CLI with the remaining arguments (``TARGET`` = ``module:Class``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or ":" not in args[0]:
        sys.stderr.write(usage)
        raise SystemExit(2)
    tap_class = wrap(load(args.pop(0)))
    sys.argv = [sys.argv[0], *args]
    tap_class.cli()


def main(argv: list[str] | None = None) -> None:
    launch(with_sdk_defaults, __doc__ or "", argv)


if __name__ == "__main__":
    main()
