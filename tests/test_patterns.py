"""User patterns matched in linear time (tsnet.patterns): RE2 for regexes, a
glob matcher that never backtracks, and the filters built on them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsnet.patterns import PatternError, compile_regex, glob_matcher
from tsnet.query import QueryError, make_filter


def reference_glob(pattern: str, value: str, fold: bool = False) -> bool:
    """What a glob means, by Python's (backtracking) regex engine: fine for the
    short inputs hypothesis draws."""
    if fold:
        pattern, value = pattern.lower(), value.lower()
    rx = ".*".join(re.escape(p) for p in pattern.split("*"))
    return re.fullmatch(rx, value, re.DOTALL) is not None


GLOB_TEXT = st.text(alphabet="ab*Ab.", max_size=8)


@given(pattern=GLOB_TEXT, value=st.text(alphabet="abAB.", max_size=10), fold=st.booleans())
def test_glob_matches_as_the_backtracking_definition(pattern: str, value: str,
                                                     fold: bool) -> None:
    assert glob_matcher(pattern, fold)(value) == reference_glob(pattern, value, fold)


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("web*", "web01", True),
    ("web*", "db01", False),
    ("*.tsdb.net", "web01.tsdb.net", True),
    ("web*.tsdb.net", "web01.tsdb.net", True),
    ("web*.tsdb.net", "web01.tsdb.org", False),
    ("a*a", "a", False),  # the two ends may not share a character
    ("ab*ba", "aba", False),
    ("*", "", True),
    ("**", "x", True),
    ("x*y*z", "xyz", True),
    ("x*y*z", "xzy", False),
])
def test_glob_examples(pattern: str, value: str, expected: bool) -> None:
    assert glob_matcher(pattern)(value) is expected


def test_the_issues_inputs_answer_and_are_right() -> None:
    """Python's ``re`` takes seconds on the first (doubling per character) and
    does not finish the others; here each is one linear pass."""
    redos = compile_regex("^(a+)+$")
    assert redos("a" * 26 + "-") is False
    assert redos("a" * 10_000 + "-") is False
    assert redos("a" * 10_000) is True
    glob = glob_matcher("*a*a*a*b")
    assert glob("a" * 2000) is False
    assert glob("a" * 100_000) is False
    assert glob("a" * 1999 + "b") is True
    f = make_filter("wildcard", "host", "*a*a*a*b")
    assert f.matches({"host": "a" * 50_000}) is False
    f = make_filter("iwildcard", "host", "*A*A*A*B")
    assert f.matches({"host": "a" * 50_000 + "b"}) is True
    f = make_filter("regexp", "host", "(x+x+)+y")
    assert f.matches({"host": "x" * 50_000}) is False


def test_regex_is_found_anywhere_as_java_find() -> None:
    assert compile_regex("web0[12]")("prod-web01-a") is True
    assert compile_regex("^web0[12]$")("prod-web01-a") is False
    assert compile_regex("(?i)WEB")("web") is True
    assert compile_regex("é+")("café") is True  # text, not bytes


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)", "(?<=a)b", "[", "a{2,1}"])
def test_patterns_re2_cannot_run_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError) as e:
        compile_regex(pattern)
    assert str(e.value) and "b'" not in str(e.value)  # RE2's reason, as text
    with pytest.raises(QueryError, match="Invalid regular expression"):
        make_filter("regexp", "host", pattern)


def test_a_pattern_too_big_for_re2_is_refused_not_compiled(capfd: pytest.CaptureFixture
                                                            ) -> None:
    """Refused, and quietly: RE2 itself would write thousands of stderr lines
    for a pattern of megabytes, whatever its logging option says."""
    with pytest.raises(PatternError, match="invalid repetition size"):
        compile_regex("(((a{100}){100}){100})")
    with pytest.raises(PatternError, match="longer than the 65536 characters"):
        compile_regex("(a|b)" * 1_000_000)
    with pytest.raises(PatternError, match="pattern too large"):
        compile_regex("a{1000}" * 9000)
    assert compile_regex("(a|b)" * 13_000)("ab") is False  # under the cap: compiled
    assert capfd.readouterr().err == ""
