"""What a record from the API must look like before it becomes a Singer RECORD.

The rules (documented in the README's Reliability section):

- A field the stream's schema declares must have a type the schema allows. A figure that arrives as
  text (``"12.5"`` where a number belongs) or an id that arrives as a number is an API change: the run
  fails, naming the stream, the record's key and the field, rather than guessing a conversion that
  could change an invoice.
- A required field (the primary key, the time that places the record in a window) must be present
  and not null.
- A field the schema does not declare is left out of the record, and a warning names it once per
  stream and run: the record itself is kept.
"""

from __future__ import annotations

import typing as t

from singer_sdk.exceptions import FatalAPIError

from billing_toolkit.secrets import mask

#: JSON Schema type name -> the Python types ``json.loads`` produces for it.
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class RecordShapeError(FatalAPIError):
    """A record whose fields do not match what the stream declares (never retried)."""


def _allowed_types(schema: t.Mapping[str, t.Any]) -> frozenset[type]:
    names = _type_names(schema)
    if not names:  # an untyped property: anything goes
        return frozenset()
    allowed: set[type] = set()
    for name in names:
        allowed.update(_PYTHON_TYPES.get(name, ()))
    if "integer" not in names and "number" not in names:
        return frozenset(allowed)
    # bool is a subclass of int, but true is not a figure.
    return frozenset(allowed) - ({bool} if "boolean" not in names else set())


class RecordShape:
    """Checks records against a stream's JSON Schema: cheap enough to run on every record.

    Only exact types are compared (``type(value) in allowed``), with no conversion.
    """

    def __init__(
        self,
        stream_name: str,
        schema: t.Mapping[str, t.Any],
        key_fields: t.Sequence[str],
        warn: t.Callable[[str], None],
    ) -> None:
        self.stream_name = stream_name
        properties: t.Mapping[str, t.Any] = schema.get("properties") or {}
        self._allowed = {name: _allowed_types(spec) for name, spec in properties.items()}
        self._declared = {name: _type_names(spec) for name, spec in properties.items()}
        self._required = tuple(dict.fromkeys([*(schema.get("required") or ()), *key_fields]))
        self._key_fields = tuple(key_fields)
        self._warn = warn
        self._unknown_seen: set[str] = set()

    def check(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """Return the record (unknown fields removed) or raise RecordShapeError."""
        allowed = self._allowed
        unknown: list[str] | None = None
        for name, value in record.items():
            types = allowed.get(name)
            if types is None:
                (unknown := unknown or []).append(name)
            elif types and type(value) not in types:
                self._fail(record, f"field {name!r} is {_describe(value)}", name)
        for name in self._required:
            if record.get(name) is None:
                self._fail(record, f"required field {name!r} is missing or null", name)
        if unknown:
            for name in unknown:
                del record[name]
            new = [name for name in unknown if name not in self._unknown_seen]
            if new:
                self._unknown_seen.update(new)
                self._warn(
                    f"{self.stream_name}: the API sent field(s) {', '.join(map(repr, new))} that "
                    "the schema does not declare; records are kept without them"
                )
        return record

    def _fail(self, record: t.Mapping[str, t.Any], problem: str, name: str) -> t.NoReturn:
        key = ", ".join(f"{k}={record.get(k)!r}" for k in self._key_fields if k != name)
        types = self._declared.get(name)
        expected = f" (the schema allows {' or '.join(types)})" if types else ""
        msg = (
            f"{self.stream_name}: record {key or '(no key)'}: {problem}{expected}. The answer "
            "does not match the API's documented shape: failing rather than guessing"
        )
        raise RecordShapeError(mask(msg))


def _type_names(schema: t.Mapping[str, t.Any]) -> list[str]:
    declared = schema.get("type")
    return [declared] if isinstance(declared, str) else list(declared or [])


_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    kind = "null" if value is None else _JSON_NAMES.get(type(value), "array")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({text})"
