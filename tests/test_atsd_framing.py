"""ATSD framing: TCP stream (spec §2.1), UDP datagram (§2.2), HTTP body (§6.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsnet.protocols.atsd.framing import (
    HEAD,
    LIMIT,
    Overlong,
    TcpFramer,
    frame_datagram,
    frame_http_body,
)
from tsnet.protocols.atsd.parse import SeriesCommand, parse_command


def tcp(data: bytes, chunk: int | None = None) -> list[str | Overlong]:
    """Frame ``data`` as one connection (fed whole, or ``chunk`` bytes at a time)."""
    f = TcpFramer()
    out: list[str | Overlong] = []
    if chunk is None:
        out += f.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += f.feed(data[i : i + chunk])
    return out + f.close()


def text_of(command: str | Overlong) -> str | None:
    """The x: text of a framed ``series`` command."""
    assert isinstance(command, str)
    _, cmd = parse_command(command)
    assert isinstance(cmd, SeriesCommand)
    return cmd.samples[0][2]


# -- §2.1 worked examples: the value as sent inside x:m="…", then as stored ----------

TCP_EXAMPLES = [
    ("test\ntest", "test\ntest"),
    ("test\rtest\rtest", "test\rtest\rtest"),
    ("test\r\ntest\n\rtest", "test\ntest\n\rtest"),
    ("test\n\ntest\n\ntest", "test\ntest\ntest"),
    ("test\n\r", "test\n\r"),
    ("  \r\r\n\rtest\n\rtest  \n\r ", "  \n\rtest\n\rtest  \n\r "),
]


@pytest.mark.parametrize(("sent", "stored"), TCP_EXAMPLES)
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_tcp_worked_examples(sent: str, stored: str, chunk: int | None) -> None:
    line = f'series e:e1 x:m="{sent}" ms:1\n'.encode()
    out = tcp(line + b"series e:e2 m:n=1\n", chunk)
    assert len(out) == 2
    assert text_of(out[0]) == stored
    assert out[1] == "series e:e2 m:n=1"


@pytest.mark.parametrize(("sent", "stored"), TCP_EXAMPLES)
def test_tcp_worked_examples_in_tag_values(sent: str, stored: str) -> None:
    (command,) = tcp(f'series e:e1 m:m=1 t:k="{sent}"\n'.encode())
    _, cmd = parse_command(command)
    assert isinstance(cmd, SeriesCommand)
    assert cmd.tags == {"k": stored}


def test_issue_4411_metric_with_multiline_description_then_series() -> None:
    data = b'metric m:m1 d:"line one\nline two\n\nline three"\nseries e:e1 m:m1=1\n'
    assert tcp(data) == [
        'metric m:m1 d:"line one\nline two\nline three"',
        "series e:e1 m:m1=1",
    ]


@pytest.mark.parametrize(
    ("data", "commands"),
    [
        (b"a\nb\n", ["a", "b"]),
        (b"a\r\nb\r\n", ["a", "b"]),  # CRLF from telnet
        (b"a\r\r\r\nb", ["a", "b"]),  # every CR before the LF goes
        (b"a\rb\n", ["a\rb"]),  # a lone CR is kept
        (b"\n\n\na\n\n\nb\n\n", ["a", "b"]),  # blank lines skipped
        (b"   \n \t \na\n \r\n", ["a"]),  # blank-looking lines skipped outside quotes
        (b'x:"a\n   \nb"\n', ['x:"a\n   \nb"']),  # but kept inside
        (b'x:"a""\nb"\n', ['x:"a""\nb"']),  # "" counts two: still open after a""
        (b'x:"a"" b"\nc\n', ['x:"a"" b"', "c"]),
        (b"last without LF", ["last without LF"]),
        (b"a\nlast\r", ["a", "last"]),
        (b"", []),
        (b"\r\n\r\n", []),
    ],
)
def test_tcp_lines(data: bytes, commands: list[str]) -> None:
    assert tcp(data) == commands
    assert tcp(data, 1) == commands


def test_tcp_feed_returns_commands_as_they_complete() -> None:
    f = TcpFramer()
    assert f.feed(b"series e:a m:b=1\nseries e:a") == ["series e:a m:b=1"]
    assert f.feed(b' x:m="one') == []
    assert f.feed(b"\n") == []
    assert f.feed(b'two"\n') == ['series e:a x:m="one\ntwo"']
    assert f.close() == []


def test_tcp_utf8_split_across_feeds_and_invalid_bytes() -> None:
    data = "series e:Сервер m:温度=1\n".encode()
    for cut in range(len(data)):
        f = TcpFramer()
        assert f.feed(data[:cut]) + f.feed(data[cut:]) + f.close() == [
            "series e:Сервер m:温度=1"
        ]
    assert tcp(b"a\xffb\n") == ["a\ufffdb"]
    assert tcp("x\u00e9".encode()[:-1]) == ["x\ufffd"]  # truncated at EOF


def test_tcp_close_returns_unbalanced_command_as_is() -> None:
    # decision: returned (the parser rejects it with a reply) rather than lost
    f = TcpFramer()
    assert f.feed(b'series e:a x:m="open\nstill open\n') == []
    assert f.close() == ['series e:a x:m="open\nstill open']
    assert f.close() == []
    assert f.feed(b"series e:b m:c=1\n") == ["series e:b m:c=1"]  # reusable


def test_tcp_limit_exact_and_over() -> None:
    exact = "series e:e m:m=1 t:k=" + "v" * (LIMIT - 21)
    assert len(exact) == LIMIT
    over = exact + "w"
    assert tcp((exact + "\r\n").encode()) == [exact]
    assert tcp((exact + "\r\n").encode(), 4096) == [exact]
    for chunk in (None, 1000, 65536):
        out = tcp((over + "\nping\n").encode(), chunk)
        assert out == [Overlong(LIMIT + 1, over[:HEAD]), "ping"]


def test_tcp_limit_counts_debug_prefix_and_joining_lf() -> None:
    body = "x" * (LIMIT - 6)
    assert tcp(("debug " + body + "\n").encode()) == ["debug " + body]
    over = Overlong(LIMIT + 1, ("debug " + body)[:HEAD])
    assert tcp(("debug " + body + "y\n").encode()) == [over]
    # a quoted value over two lines: the LF between them counts
    half = (LIMIT - 1) // 2
    first = 'x:"' + "a" * (half - 3)
    second = "b" * (LIMIT - 1 - half - 1) + '"'
    assert len(first) + 1 + len(second) == LIMIT
    assert tcp(f"{first}\n{second}\n".encode()) == [f"{first}\n{second}"]
    out = tcp(f"{first}\n{second}b\nnext\n".encode(), 777)
    assert out == [Overlong(LIMIT + 1, (first + "\n" + second)[:HEAD]), "next"]


def test_tcp_overlong_memory_is_bounded() -> None:
    f = TcpFramer()
    chunk = b"z" * 65536
    for _ in range(160):  # 10 MiB of one line
        assert f.feed(chunk) == []
        held = sum(map(len, f._chunks)) + sum(map(len, f._parts))
        assert held <= LIMIT
    assert f.feed(b"\nok\n") == [Overlong(160 * 65536, "z" * HEAD), "ok"]


def test_tcp_crs_do_not_count_toward_the_limit() -> None:
    line = "a" * LIMIT
    f = TcpFramer()
    out = f.feed(line.encode())
    for _ in range(3):
        out += f.feed(b"\r" * 100_000)  # held as a count, not as text
    out += f.feed(b"\n")
    assert out == [line]
    # but CRs followed by more text are part of the line
    assert tcp(b"a" + b"\r" * LIMIT + b"b\n") == [Overlong(LIMIT + 2, "a" + "\r" * (HEAD - 1))]


def test_tcp_overlong_quoted_command_ends_at_its_closing_quote() -> None:
    data = b'series e:a x:m="' + b"q" * LIMIT + b'\nstill inside\n"\nping\n'
    out = tcp(data, 8192)
    assert len(out) == 2
    assert isinstance(out[0], Overlong)
    assert out[0].length == 16 + LIMIT + 1 + 12 + 1 + 1
    assert out[0].head == ('series e:a x:m="' + "q" * LIMIT)[:HEAD]
    assert out[1] == "ping"


# A small alphabet that exercises every rule: quotes, CR, LF, spaces, UTF-8.
_STREAM = st.lists(
    st.sampled_from(["a", "b", " ", '"', "\r", "\n", "\n\n", "é", "x:", "=", "\r\n"]),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_STREAM, st.lists(st.integers(1, 7), min_size=1, max_size=10))
def test_tcp_chunking_never_changes_the_result(text: str, sizes: list[int]) -> None:
    data = text.encode()
    whole = tcp(data)
    f = TcpFramer()
    out: list[str | Overlong] = []
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out += f.feed(data[i : i + n])
        i += n
        k += 1
    assert out + f.close() == whole


def reference_tcp(text: str) -> list[str]:
    """§2.1 read literally, on the whole decoded stream at once (no limit): the
    line-by-line procedure the framer's bulk paths must match."""
    trim = "".join(map(chr, range(0x21)))
    out: list[str] = []
    parts: list[str] = []
    odd = False
    for raw in text.split("\n"):  # the text after the last LF is ended by EOF
        line = raw.rstrip("\r")
        if not line or (not parts and not line.strip(trim)):
            continue  # empty lines anywhere, blank ones outside a quoted value
        parts.append(line)
        odd ^= line.count('"') & 1
        if not odd:
            out.append("\n".join(parts))
            parts = []
    if parts:
        out.append("\n".join(parts))
    return out


# Bytes that exercise the bulk path: whole plain lines, blank and CR-only lines,
# split UTF-8 and invalid bytes, and now and then a quote.
_BYTES = st.lists(
    st.sampled_from([b"series e:a m:b=1 ms:2", b"x", b" ", b"\t", b"\x00", b'"', b"\r",
                     b"\n", b"\n\n", b"\r\n", "\u00e9\u0416".encode(), b"\xd0", b"\xff",
                     b"\x1f!"]),
    max_size=80,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(_BYTES, st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_tcp_framer_equals_the_spec_procedure_on_any_chunking(
    data: bytes, sizes: list[int]
) -> None:
    f = TcpFramer()
    out: list[str | Overlong] = []
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out += f.feed(data[i : i + n])
        i += n
        k += 1
    assert out + f.close() == reference_tcp(data.decode("utf-8", "replace"))
    assert tcp(data) == reference_tcp(data.decode("utf-8", "replace"))


@settings(max_examples=300, deadline=None)
@given(_STREAM)
def test_tcp_commands_are_balanced_and_clean(text: str) -> None:
    out = tcp(text.encode())
    for c in out[:-1]:
        assert isinstance(c, str)
        assert c.count('"') % 2 == 0
        assert c.strip(" \t\r")
        assert "\n\n" not in c
        assert not c.endswith("\r")
        assert not c.startswith("\n")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters='\n"\r'), min_size=1),
        max_size=8,
    )
)
def test_tcp_plain_lines_round_trip(lines: list[str]) -> None:
    expected = [ln for ln in lines if ln.strip("".join(map(chr, range(33))))]
    assert tcp("\n".join(lines).encode() + b"\n") == expected


# -- §2.2 UDP ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "commands", "dropped"),
    [
        (b"series e:a m:b=1", ["series e:a m:b=1"], 0),  # printf: no LF at all
        (b"series e:a m:b=1\n", ["series e:a m:b=1"], 0),
        (b"a\nb\n", ["a", "b"], 0),
        (b"a\nb\nc", ["a", "b"], 1),  # the unterminated last one is dropped
        (b"a\r\nb\r\n", ["a", "b"], 0),
        (b"a\n  \r", ["a"], 0),  # a blank tail is nothing to drop
        (b"\n\n", [], 0),
        (b"", [], 0),
        # quoted values may span lines inside a datagram (§10.17, as over TCP)
        (b'series e:a x:m="1\n2"\n', ['series e:a x:m="1\n2"'], 0),
        (b'series e:a x:m="1\n2"', ['series e:a x:m="1\n2"'], 0),  # the only command
        (b'a\nseries e:a x:m="1\n2"', ["a"], 1),
        (b'a\nseries e:a x:m="open\n', ["a"], 1),  # never closed: unfinished
        (b'series e:a x:m="open\n', ['series e:a x:m="open'], 0),  # the only one: parser rejects
    ],
)
def test_udp_datagrams(data: bytes, commands: list[str], dropped: int) -> None:
    assert frame_datagram(data) == (commands, dropped)


def test_udp_invalid_utf8_and_overlong() -> None:
    assert frame_datagram(b"a\xfe\n") == (["a\ufffd"], 0)
    big = b"x" * (LIMIT + 5)
    assert frame_datagram(big + b"\nping\n") == ([Overlong(LIMIT + 5, "x" * HEAD), "ping"], 0)


# -- §6.2 HTTP body --------------------------------------------------------------------


HTTP_EXAMPLES = [
    ("test\rtest\rtest", "test\ntest\ntest"),
    ("test\n\r", "test\n"),
    ("  \r\r\n\rtest\n\rtest  \n\r ", "\ntest\ntest\n"),
    ("test\r\ntest", "test\ntest"),
    ("test\n\ntest", "test\ntest"),
]


@pytest.mark.parametrize(("sent", "stored"), HTTP_EXAMPLES)
def test_http_worked_examples(sent: str, stored: str) -> None:
    out = frame_http_body(f'series e:e1 x:m="{sent}" ms:1\nseries e:e2 m:n=1')
    assert len(out) == 2
    assert text_of(out[0]) == stored
    assert out[1] == "series e:e2 m:n=1"


@pytest.mark.parametrize(
    ("body", "commands"),
    [
        ("a\nb", ["a", "b"]),
        ("a\rb\r\nc\n", ["a", "b", "c"]),  # CR, CRLF and LF all end a line
        ("  a  \n\t b\t\n", ["a", "b"]),  # trimmed (Java String.trim)
        ("\n \n\r\n\r", []),
        ('x:"a\n   b  \n"', ['x:"a\nb\n"']),
        ('x:"open\nmore', ['x:"open\nmore']),  # unbalanced at the end: as it stands
        ("a\u00a0\n", ["a\u00a0"]),  # trim removes only <= U+0020
        ("a\u2028b\x85c\n", ["a\u2028b\x85c"]),  # not line breaks for BufferedReader
    ],
)
def test_http_lines(body: str, commands: list[str]) -> None:
    assert frame_http_body(body) == commands


def test_http_limit() -> None:
    exact = "x" * LIMIT
    assert frame_http_body(f"  {exact}  \n") == [exact]  # trimmed before counting
    assert frame_http_body(exact + "y\nping") == [Overlong(LIMIT + 1, "x" * HEAD), "ping"]
    joined = 'x:"' + "a" * (LIMIT - 4)  # + LF + '"' is one over
    assert frame_http_body(joined + '\n"') == [Overlong(LIMIT + 1, joined[:HEAD])]
