"""Records as ts-store answers them: the object JSON of reads and pushes.

Pure functions over `tsnet.model.Record` and a store's type and schema.  The
data of a json record is the stored JSON, compacted as Go's encoder does (the
number texts kept exactly: no parse and re-encode); text is a JSON string,
binary padded base64, schema the object expanded with the current schema, or
the stored compact form on request (spec §5.1, §9).
"""

from __future__ import annotations

import base64
import json
import re

from tsnet.plugin import Record
from tsnet.protocols.tsstore import schema as schemas

_TOKENS = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\r\n]+')


def compact_json(raw: bytes) -> bytes:
    """JSON text without insignificant whitespace, everything else as sent."""
    if not raw.strip(b" \t\r\n"):
        return b"null"
    return _TOKENS.sub(lambda m: m.group(1) or b"", raw)


def data_json(rec: Record, data_type: str, fields: list[dict] | None = None,
              compact: bool = False) -> bytes:
    """The ``data`` value of an object, as JSON text."""
    raw = bytes(rec.data)
    if data_type == "binary":
        return b'"' + base64.b64encode(raw) + b'"'
    if data_type == "text":
        return json.dumps(raw.decode("utf-8", "replace")).encode()
    if data_type == "schema" and not compact:
        return schemas.expand(fields, raw)
    return compact_json(raw)


def data_value(rec: Record, data_type: str, fields: list[dict] | None = None) -> object:
    """The parsed data of a json or schema record (schema: expanded), or None."""
    if data_type == "schema":
        return schemas.expand_value(fields, bytes(rec.data))
    try:
        return json.loads(bytes(rec.data))
    except ValueError:
        return None


def object_json(rec: Record, data: bytes | None) -> bytes:
    """``{"timestamp","block_num","size","data"}``; ``data`` None is ``null``
    (ts-store keeps the key when data is left out)."""
    return b'{"timestamp":%d,"block_num":%d,"size":%d,"data":%s}' % (
        rec.time_ns, rec.block, rec.size, data if data is not None else b"null")


def object_list_json(objects: list[bytes]) -> bytes:
    """``{"objects":[...],"count":N}``."""
    return b'{"objects":[' + b",".join(objects) + b'],"count":%d}' % len(objects)


def matches(rec: Record, needle: str, ignore_case: bool) -> bool:
    """ts-store's ``filter``: a substring of the stored bytes (compact for schema)."""
    hay = bytes(rec.data)
    want = needle.encode("utf-8")
    if ignore_case:
        hay, want = hay.lower(), want.lower()
    return want in hay
