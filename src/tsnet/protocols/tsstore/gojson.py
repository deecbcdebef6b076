"""JSON with Go's ``encoding/json`` semantics, for ts-store compatibility.

ts-store clients see Go's decoder messages and Go's ``json.Marshal`` output, so
this module reproduces both: the scanner's syntax errors word for word, the
type errors of decoding into the reference's structs and maps, and the way
Go re-encodes values decoded into ``interface{}`` (sorted keys, float64
numbers, HTML-safe strings). Parsing uses the C-accelerated :mod:`json`
module; the pure-Python Go scanner runs only to word an error, or for input
nested deeper than Python's decoder can follow.
"""

from __future__ import annotations

import json
import math
import re
from json.decoder import scanstring
from json.encoder import encode_basestring

__all__ = [
    "PULL_ENVELOPE_TYPE",
    "REST_ENVELOPE_TYPE",
    "WS_ENVELOPE_TYPE",
    "GoJSONError",
    "check_json",
    "decode_envelope",
    "go_loads",
    "go_loads_map",
    "go_marshal",
    "go_quote",
    "go_trim_space",
]

#: Go's ``reflect`` name of the anonymous struct the REST handler decodes into.
REST_ENVELOPE_TYPE = (
    'struct { Timestamp int64 "json:\\"timestamp,omitempty\\""; '
    'Data json.RawMessage "json:\\"data\\"" }'
)
#: The WebSocket write handler's envelope type.
WS_ENVELOPE_TYPE = "handlers.WSWriteRequest"
#: The outbound pull connection's envelope type.
PULL_ENVELOPE_TYPE = "ws.PullMessage"

_MAX_DEPTH = 10000  # encoding/json's maxNestingDepth
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_WS_RE = re.compile(r"[ \t\n\r]*")
_STRING_RE = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_INT_RE = re.compile(r"-?[0-9]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_HTML_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_HTML_CHARS = re.compile("[<>&\u2028\u2029]")
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"

# Go's unicode.IsSpace, which strings.TrimSpace uses (Python's isspace differs:
# it also counts U+001C..U+001F).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class GoJSONError(ValueError):
    """A decode or encode failure; ``str()`` is the text Go would report."""


class _Truncated(Exception):
    """Input ended inside a value.

    ``space_msg`` is what Go's scanner says when its end-of-input probe (a
    space fed to the current state) is itself invalid, e.g. after ``1.``.
    """

    def __init__(self, space_msg: str | None = None) -> None:
        super().__init__(space_msg)
        self.space_msg = space_msg


class _Bad(Exception):
    """The fast path gave up; let the Go scanner word the problem."""


# ---------------------------------------------------------------- Go helpers


def go_trim_space(s: str) -> str:
    """``strings.TrimSpace``: strip Go's (not Python's) Unicode whitespace."""
    return s.strip(_GO_SPACE)


def _go_quote_rune(ch: str, quote: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ch.isprintable():
        return ch
    short = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v"}.get(ch)
    if short:
        return short
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(s: str) -> str:
    """``strconv.Quote`` (what Go's ``%q`` prints), used in error texts."""
    return '"' + "".join(_go_quote_rune(ch, '"') for ch in s) + '"'


def _quote_char(ch: str) -> str:
    """encoding/json's quoteChar: Go reports the offending *byte*."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        byte = code - 0xDC00
    elif code < 0x80:
        byte = code
    else:
        byte = ch.encode("utf-8", "surrogatepass")[0]
    if byte == 0x27:
        return "'\\''"
    if byte == 0x22:
        return "'\"'"
    return "'" + _go_quote_rune(chr(byte), '"') + "'"


def _syntax(ch: str, context: str) -> GoJSONError:
    return GoJSONError(f"invalid character {_quote_char(ch)} {context}")


# ---------------------------------------------------------------- Go scanner


def _scan_string(text: str, i: int) -> int:
    """Scan the string literal opening at ``text[i]``; return the index after it."""
    m = _STRING_RE.match(text, i)
    if m:
        return m.end()
    n = len(text)
    j = i + 1
    while True:
        if j >= n:
            raise _Truncated()
        c = text[j]
        if c == '"':
            return j + 1
        if c == "\\":
            j += 1
            if j >= n:
                raise _Truncated(str(_syntax(" ", "in string escape code")))
            c = text[j]
            if c == "u":
                for _ in range(4):
                    j += 1
                    if j >= n:
                        raise _Truncated(str(_syntax(" ", "in \\u hexadecimal character escape")))
                    if text[j] not in _HEX:
                        raise _syntax(text[j], "in \\u hexadecimal character escape")
            elif c not in 'bfnrt\\/"':
                raise _syntax(c, "in string escape code")
        elif ord(c) < 0x20:
            raise _syntax(c, "in string literal")
        j += 1


def _scan_number(text: str, i: int) -> int:
    """Scan the number starting at ``text[i]`` (a digit or '-')."""
    n = len(text)
    j = i
    if text[j] == "-":
        j += 1
        if j >= n:
            raise _Truncated(str(_syntax(" ", "in numeric literal")))
        if text[j] not in _DIGITS:
            raise _syntax(text[j], "in numeric literal")
    if text[j] == "0":
        j += 1
    else:
        while j < n and text[j] in _DIGITS:
            j += 1
    if j < n and text[j] == ".":
        j += 1
        if j >= n:
            raise _Truncated(str(_syntax(" ", "after decimal point in numeric literal")))
        if text[j] not in _DIGITS:
            raise _syntax(text[j], "after decimal point in numeric literal")
        while j < n and text[j] in _DIGITS:
            j += 1
    if j < n and text[j] in "eE":
        j += 1
        if j < n and text[j] in "+-":
            j += 1
        if j >= n:
            raise _Truncated(str(_syntax(" ", "in exponent of numeric literal")))
        if text[j] not in _DIGITS:
            raise _syntax(text[j], "in exponent of numeric literal")
        while j < n and text[j] in _DIGITS:
            j += 1
    return j


def _scan_literal(text: str, i: int, word: str) -> int:
    n = len(text)
    for k in range(1, len(word)):
        context = f"in literal {word} (expecting {_quote_char(word[k])})"
        if i + k >= n:
            raise _Truncated(str(_syntax(" ", context)))
        if text[i + k] != word[k]:
            raise _syntax(text[i + k], context)
    return i + len(word)


def _scan_value(text: str, i: int) -> int:
    """Go's scanner over one value starting at or after ``i``; return its end.

    Iterative, so nesting is limited by Go's 10000 and not by Python's stack.
    Raises :class:`GoJSONError` for a syntax error, :class:`_Truncated` when
    the input ends first.
    """
    n = len(text)
    stack: list[str] = []  # "{" or "["
    ws = _WS_RE.match
    while True:
        # ---- begin value
        i = ws(text, i).end()
        if i >= n:
            raise _Truncated()
        c = text[i]
        if c == "{" or c == "[":
            stack.append(c)
            if len(stack) > _MAX_DEPTH:
                raise _syntax(c, "exceeded max depth")
            i = ws(text, i + 1).end()
            if i >= n:
                raise _Truncated()
            c2 = text[i]
            if c == "[":
                if c2 != "]":
                    continue  # first element
                stack.pop()
                i += 1
            elif c2 == "}":
                stack.pop()
                i += 1
            else:
                i = _scan_key(text, i)
                continue
        elif c == '"':
            i = _scan_string(text, i)
        elif c == "-" or c in _DIGITS:
            i = _scan_number(text, i)
        elif c == "t":
            i = _scan_literal(text, i, "true")
        elif c == "f":
            i = _scan_literal(text, i, "false")
        elif c == "n":
            i = _scan_literal(text, i, "null")
        else:
            raise _syntax(c, "looking for beginning of value")
        # ---- end value: climb out of finished containers
        while True:
            if not stack:
                return i
            i = ws(text, i).end()
            if i >= n:
                raise _Truncated()
            c = text[i]
            if stack[-1] == "{":
                if c == ",":
                    i = _scan_key(text, ws(text, i + 1).end())
                    break
                if c == "}":
                    stack.pop()
                    i += 1
                    continue
                raise _syntax(c, "after object key:value pair")
            if c == ",":
                i += 1
                break
            if c == "]":
                stack.pop()
                i += 1
                continue
            raise _syntax(c, "after array element")


def _scan_key(text: str, i: int) -> int:
    """Scan ``"key" :`` at ``i``; return the index after the colon."""
    n = len(text)
    if i >= n:
        raise _Truncated()
    if text[i] != '"':
        raise _syntax(text[i], "looking for beginning of object key string")
    i = _WS_RE.match(text, _scan_string(text, i)).end()
    if i >= n:
        raise _Truncated()
    if text[i] != ":":
        raise _syntax(text[i], "after object key")
    return i + 1


def _go_value_end(text: str, i: int, stream: bool) -> int:
    """End of the value at ``i`` per Go, raising Go's error.

    ``stream`` selects ``json.Decoder`` behaviour (what gin's binding uses):
    input that stops early is ``unexpected EOF``; otherwise it is
    ``json.Unmarshal``'s wording.
    """
    try:
        return _scan_value(text, i)
    except _Truncated as exc:
        if stream:
            raise GoJSONError("unexpected EOF") from None
        raise GoJSONError(exc.space_msg or "unexpected end of JSON input") from None


def _go_check_whole(text: str) -> None:
    """``json.Unmarshal``'s checkValid: one value, then only whitespace."""
    end = _go_value_end(text, 0, stream=False)
    j = _WS_RE.match(text, end).end()
    if j < len(text):
        raise _syntax(text[j], "after top-level value")


# ------------------------------------------------------------------ decoding


def _reject_constant(name: str) -> object:
    raise _Bad(name)


_FAST = json.JSONDecoder(parse_constant=_reject_constant)


def _to_text(raw: bytes | bytearray | memoryview | str, stream: bool = False) -> str:
    """Decode UTF-8; for invalid bytes, report Go's syntax error if it has one."""
    if isinstance(raw, str):
        return raw
    data = bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", "surrogateescape")
    i = _WS_RE.match(text).end()
    if i < len(text):
        if stream:
            end = _go_value_end(text, i, stream=True)
            text = text[:end]
        else:
            _go_check_whole(text)
    if _SURROGATE_RE.search(text):
        raise GoJSONError("invalid UTF-8 in JSON input")
    return text


def check_json(raw: bytes | str) -> None:
    """Raise :class:`GoJSONError` unless ``raw`` is exactly one JSON value.

    This is ``json.Unmarshal(raw, &json.RawMessage{})``: a syntax check with
    Go's messages (used for json stores and Unix-socket lines).
    """
    text = _to_text(raw)
    try:
        _FAST.decode(text)
    except (ValueError, _Bad, RecursionError):
        _go_check_whole(text)  # raises, unless Python merely hit its depth limit


def _pairs_to_dict(pairs: list[tuple[str, object]]) -> dict:
    # Go decodes a lone-surrogate escape to U+FFFD, which can merge keys.
    return {_go_string(k): v for k, v in pairs}


def _slow_loads(text: str, parse_float, parse_int, fix_keys: bool) -> object:
    """Iterative decoder for input already validated by :func:`_scan_value`.

    Only used when nesting is too deep for Python's recursive decoder.
    """
    ws = _WS_RE.match
    stack: list[tuple[dict | list, str | None]] = []
    i = ws(text, 0).end()
    while True:
        c = text[i]
        if c == "{" or c == "[":
            i = ws(text, i + 1).end()
            if c == "{":
                if text[i] == "}":
                    value, i = {}, i + 1
                else:
                    key, i = scanstring(text, i + 1, True)
                    i = ws(text, ws(text, i).end() + 1).end()  # past ':'
                    stack.append(({}, _go_string(key) if fix_keys else key))
                    continue
            elif text[i] == "]":
                value, i = [], i + 1
            else:
                stack.append(([], None))
                continue
        elif c == '"':
            value, i = scanstring(text, i + 1, True)
        elif c == "t":
            value, i = True, i + 4
        elif c == "f":
            value, i = False, i + 5
        elif c == "n":
            value, i = None, i + 4
        else:
            j = _scan_number(text, i)
            lit = text[i:j]
            value = parse_int(lit) if _INT_RE.fullmatch(lit) else parse_float(lit)
            i = j
        # attach the value, closing finished containers
        while True:
            if not stack:
                return value
            container, key = stack[-1]
            if isinstance(container, dict):
                container[key] = value  # type: ignore[index]
            else:
                container.append(value)
            i = ws(text, i).end()
            if text[i] == ",":
                i = ws(text, i + 1).end()
                if isinstance(container, dict):
                    key, i = scanstring(text, i + 1, True)
                    i = ws(text, ws(text, i).end() + 1).end()
                    stack[-1] = (container, _go_string(key) if fix_keys else key)
                break
            stack.pop()
            value, i = container, i + 1


_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _unmarshal(text: str, target_map: bool) -> object:
    """``json.Unmarshal`` into ``interface{}`` or ``map[string]interface{}``.

    Go orders its errors: syntax (whole input) first, then a top-level type
    mismatch, then the first number out of float64's range.
    """
    range_errors: list[str] = []

    def parse_float(s: str) -> float:
        f = float(s)
        if math.isinf(f):
            range_errors.append(s)
        return f

    def parse_int(s: str) -> int | float:
        if s == "-0":
            return -0.0  # Go decodes every number as float64, keeping the sign
        if len(s) - s.startswith("-") > 309:  # beyond float64 for sure
            range_errors.append(s)
            return 0
        v = int(s)
        try:
            float(v)
        except OverflowError:
            range_errors.append(s)
        return v

    fix_keys = _SURROGATE_ESCAPE_RE.search(text) is not None
    dec = json.JSONDecoder(
        parse_float=parse_float,
        parse_int=parse_int,
        parse_constant=_reject_constant,
        object_pairs_hook=_pairs_to_dict if fix_keys else None,
    )
    try:
        value = dec.decode(text)
    except (ValueError, _Bad, RecursionError):
        _go_check_whole(text)  # raises unless it was only too deep for Python
        range_errors.clear()
        value = _slow_loads(text, parse_float, parse_int, fix_keys)
    if target_map and value is not None and not isinstance(value, dict):
        raise GoJSONError(
            f"json: cannot unmarshal {go_kind(value)} into Go value of type "
            "map[string]interface {}"
        )
    if range_errors:
        raise GoJSONError(
            f"json: cannot unmarshal number {range_errors[0]} into Go value of type float64"
        )
    return value


def go_loads(raw: bytes | str) -> object:
    """Parse one JSON value as Go's ``json.Unmarshal`` into ``interface{}`` would.

    Integers stay Python ``int`` (exact); :func:`go_marshal` applies Go's
    float64 rounding when re-encoding. Raises :class:`GoJSONError`.
    """
    return _unmarshal(_to_text(raw), target_map=False)


def go_loads_map(raw: bytes | str) -> dict | None:
    """Like :func:`go_loads` but into ``map[string]interface{}``.

    ``null`` decodes to ``None`` (Go leaves the map nil, without error); any
    other non-object is Go's ``cannot unmarshal ... into Go value of type
    map[string]interface {}``.
    """
    value = _unmarshal(_to_text(raw), target_map=True)
    return value  # type: ignore[return-value]


def go_kind(value: object) -> str:
    """Go's name for a JSON value's kind in UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _literal_kind(lit: str) -> str:
    return {"{": "object", "[": "array", '"': "string", "t": "bool", "f": "bool",
            "n": "null"}.get(lit[0], "number")


def _go_fold(s: str) -> str:
    """encoding/json's foldName, enough to compare against ASCII field names.

    ASCII letters upper-case; a non-ASCII rune folds to the smallest rune of
    its case-fold set, which is ASCII only for U+017F (long s) and U+212A
    (Kelvin sign).
    """
    if s.isascii():
        return s.upper()
    return "".join(c.upper() if c < "\x80" else c for c in s.translate(_NON_ASCII_FOLD))


_NON_ASCII_FOLD = {0x017F: "S", 0x212A: "K"}


def _members(text: str, i: int, value_end) -> tuple[list[tuple[str, int, int]], int]:
    """Split the object at ``text[i]`` into (key, value start, value end)."""
    n = len(text)
    ws = _WS_RE.match
    out: list[tuple[str, int, int]] = []
    j = ws(text, i + 1).end()
    if j < n and text[j] == "}":
        return out, j + 1
    while True:
        if j >= n or text[j] != '"':
            raise _Bad()
        key, j = scanstring(text, j + 1, True)
        j = ws(text, j).end()
        if j >= n or text[j] != ":":
            raise _Bad()
        start = ws(text, j + 1).end()
        j = value_end(text, start)
        out.append((key, start, j))
        j = ws(text, j).end()
        if j >= n:
            raise _Bad()
        if text[j] == ",":
            j = ws(text, j + 1).end()
            continue
        if text[j] == "}":
            return out, j + 1
        raise _Bad()


def _fast_end(text: str, i: int) -> int:
    return _FAST.raw_decode(text, i)[1]


def _slow_end(text: str, i: int) -> int:
    return _scan_value(text, i)


def decode_envelope(
    body: bytes | str,
    empty: str = "unexpected end of JSON input",
    *,
    type_name: str | None = None,
    stream: bool | None = None,
) -> tuple[int | None, bytes | None]:
    """Decode a ``{"timestamp"?: int64, "data"?: any}`` write envelope.

    Returns ``(timestamp, data)``: the timestamp, or ``None`` when absent or
    null; the *raw bytes* of the data value exactly as sent, or ``None`` when
    the key is absent (``"data": null`` gives ``b"null"``). As in Go, unknown
    keys are ignored, keys match case-insensitively and the last repeat wins.

    ``empty`` is the message for an empty or all-whitespace body: the REST
    handler passes ``"EOF"``. ``stream`` (default: ``empty == "EOF"``) means
    gin's ``json.Decoder``: a truncated body is ``unexpected EOF`` and bytes
    after the first value are ignored; otherwise it is ``json.Unmarshal``
    (WebSocket and pull frames). ``type_name`` names the Go type in type
    errors (default: REST's anonymous struct when streaming, else
    ``handlers.WSWriteRequest``).
    """
    if stream is None:
        stream = empty == "EOF"
    if type_name is None:
        type_name = REST_ENVELOPE_TYPE if stream else WS_ENVELOPE_TYPE
    struct_name = "" if type_name.startswith("struct ") else type_name.rpartition(".")[2]
    text = _to_text(body, stream)
    n = len(text)
    i = _WS_RE.match(text).end()
    if i >= n:
        raise GoJSONError(empty)

    def parse(value_end) -> tuple[list[tuple[str, int, int]], int]:
        if text[i] == "{":
            members, end = _members(text, i, value_end)
        elif stream:
            # A scalar's end is where Go's scanner says (Python stops "5." at 5).
            members, end = [], _go_value_end(text, i, stream=True)
        else:
            members, end = [], value_end(text, i)
        if not stream:
            j = _WS_RE.match(text, end).end()
            if j < n:
                raise _Bad()
        return members, end

    try:
        members, _ = parse(_fast_end)
    except (ValueError, _Bad, RecursionError):
        # Let Go's scanner word the error; if it finds none, the input was
        # only too deep for Python's decoder, so redo the split iteratively.
        if stream:
            _go_value_end(text, i, stream=True)
        else:
            _go_check_whole(text)
        members, _ = parse(_slow_end)

    if text[i] != "{":
        kind = _literal_kind(text[i])
        if kind == "null":
            return None, None  # null into a struct is a no-op in Go
        raise GoJSONError(f"json: cannot unmarshal {kind} into Go value of type {type_name}")

    timestamp: int | None = None
    data: bytes | None = None
    first_error: str | None = None
    for key, start, end in members:
        folded = _go_fold(key)
        if folded == "DATA":
            data = text[start:end].encode("utf-8")
        elif folded == "TIMESTAMP":
            lit = text[start:end]
            kind = _literal_kind(lit)
            if kind == "null":
                continue
            # (past 20 characters it is out of int64 anyway, and int() of a long
            # enough literal fails: Python's int-digit limit)
            if kind == "number" and len(lit) <= 20 and _INT_RE.fullmatch(lit):
                value = int(lit)
                if _INT64_MIN <= value <= _INT64_MAX:
                    timestamp = value
                    continue
            if first_error is None:
                shown = f"number {lit}" if kind == "number" else kind
                first_error = (
                    f"json: cannot unmarshal {shown} into Go struct field "
                    f"{struct_name}.timestamp of type int64"
                )
    if first_error is not None:
        raise GoJSONError(first_error)
    return timestamp, data


# ------------------------------------------------------------------ encoding


def _format_float(f: float) -> str:
    """Go's float64 encoder: shortest digits, 'f' form unless tiny or huge."""
    if not math.isfinite(f):
        shown = "NaN" if math.isnan(f) else ("+Inf" if f > 0 else "-Inf")
        raise GoJSONError(f"json: unsupported value: {shown}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    r = repr(f)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mant, _, exp_text = r.partition("e")
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    point = len(ip) + (int(exp_text) if exp_text else 0)  # value = 0.digits * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        e = point - 1
        out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        # %e gives at least two exponent digits; Go then trims "e-07" to "e-7".
        exp = f"{abs(e):02d}"
        if e < 0 and len(exp) == 2 and exp[0] == "0":
            exp = exp[1]
        return f"{sign}{out}e{'-' if e < 0 else '+'}{exp}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_string(s: str) -> str:
    """Go's string as it is after decoding: invalid UTF-16 halves become U+FFFD."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", s)
    return s


def _encode_string(s: str) -> str:
    out = encode_basestring(_go_string(s))
    if _HTML_CHARS.search(out):
        out = out.translate(_HTML_ESCAPES)
    return out


def _first(item: tuple[str, object]) -> str:
    return item[0]


def _encode_scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, int):
        try:
            f = float(value)
        except OverflowError:
            raise GoJSONError(
                f"json: unsupported value: {'+Inf' if value > 0 else '-Inf'}"
            ) from None
        return _format_float(f)
    if isinstance(value, float):
        return _format_float(value)
    raise GoJSONError(f"json: unsupported type: {type(value).__name__}")


def _sorted_items(value: dict) -> list[tuple[str, object]]:
    return sorted(((_go_string(str(k)), v) for k, v in value.items()), key=_first)


def _encode(value: object, parts: list[str]) -> None:
    if isinstance(value, dict):
        parts.append("{")
        for n, (k, v) in enumerate(_sorted_items(value)):
            if n:
                parts.append(",")
            parts.append(_encode_string(k))
            parts.append(":")
            _encode(v, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for n, v in enumerate(value):
            if n:
                parts.append(",")
            _encode(v, parts)
        parts.append("]")
    else:
        parts.append(_encode_scalar(value))


def _encode_iterative(value: object, parts: list[str]) -> None:
    """Same output as :func:`_encode`, for values nested beyond Python's stack."""
    stack: list[tuple[str, object]] = [("value", value)]
    while stack:
        kind, item = stack.pop()
        if kind == "text":
            parts.append(item)  # type: ignore[arg-type]
            continue
        if isinstance(item, dict):
            todo: list[tuple[str, object]] = [("text", "{")]
            for n, (k, v) in enumerate(_sorted_items(item)):
                todo.append(("text", ("," if n else "") + _encode_string(k) + ":"))
                todo.append(("value", v))
            todo.append(("text", "}"))
            stack.extend(reversed(todo))
        elif isinstance(item, (list, tuple)):
            todo = [("text", "[")]
            for n, v in enumerate(item):
                if n:
                    todo.append(("text", ","))
                todo.append(("value", v))
            todo.append(("text", "]"))
            stack.extend(reversed(todo))
        else:
            parts.append(_encode_scalar(item))


def go_marshal(value: object) -> bytes:
    """Encode as Go's ``json.Marshal`` does for ``interface{}`` values.

    Numbers become float64 and print like Go (``45``, ``0.1``, ``1e+21``,
    ``1e-7``, ``-0``); object keys are sorted bytewise; no spaces; ``<``,
    ``>``, ``&``, U+2028 and U+2029 are escaped. Raises :class:`GoJSONError`
    for NaN or infinities, as Go does.
    """
    parts: list[str] = []
    try:
        _encode(value, parts)
    except RecursionError:
        parts = []
        _encode_iterative(value, parts)
    return "".join(parts).encode("utf-8")
