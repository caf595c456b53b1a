"""The reading shortcuts for plain data of issue 21: what they give back must be what
the plain path gives (equal values, exact types), whatever the input."""

from __future__ import annotations

import os
import random
import sys

import pytest

import pyfory
from pyfory import quickbench
from pyfory.error import DepthLimitError, ForyError

sys.path.insert(0, os.path.dirname(__file__))
import handmade as H  # noqa: E402


# ---- the dict key cache (ReadContext.read_key) ------------------------------------------
def _keys(rng, count):
    # ASCII keys of 0..40 characters (some longer than what the cache keeps), and a few
    # Latin-1 and wide ones, which never go through it
    alphabet = "abcdefghijklmnopqrstuvwxyz_0123456789"
    out = []
    for i in range(count):
        n = rng.randint(0, 40)
        key = "".join(rng.choice(alphabet) for _ in range(n))
        if i % 17 == 0:
            key += "é"
        elif i % 23 == 0:
            key += "日"
        out.append(key)
    return out


@pytest.mark.parametrize("ref", [False, True])
def test_many_small_dicts_round_trip_through_the_key_cache(ref):
    # far more distinct keys than the cache has slots: entries are replaced, collide,
    # and keys of the same length and different bytes meet in one slot
    rng = random.Random(21)
    keys = _keys(rng, 3000)
    fory = pyfory.Fory(ref=ref)
    for _ in range(3):
        rng.shuffle(keys)
        for start in range(0, len(keys), 7):
            d = {k: i for i, k in enumerate(keys[start:start + 7])}
            out = fory.loads(fory.dumps(d))
            assert out == d and list(out) == list(d)
            assert all(type(k) is str for k in out)
            # the same dict of str values, and a record list sharing the keys
            d2 = {k: k for k in d}
            assert fory.loads(fory.dumps(d2)) == d2
            assert fory.loads(fory.dumps([d, d2, d])) == [d, d2, d]


def test_keys_that_differ_in_one_byte_are_not_confused():
    fory = pyfory.Fory()
    for n in (1, 2, 8, 31, 32):
        base = "k" * n
        for i in range(n):
            other = base[:i] + "j" + base[i + 1:]
            assert list(fory.loads(fory.dumps({base: 1}))) == [base]
            assert list(fory.loads(fory.dumps({other: 1}))) == [other]


def test_cached_keys_are_shared_between_loads_without_ref_only():
    d = {"id": 1, "name": "x"}
    fory = pyfory.Fory()
    a, b = fory.loads(fory.dumps(d)), fory.loads(fory.dumps(d))
    assert [x is y for x, y in zip(a, b)] == [True, True]
    # with ref=True, identity is the payload's: each loads makes its own strings
    fory = pyfory.Fory(ref=True)
    a, b = fory.loads(fory.dumps(d)), fory.loads(fory.dumps(d))
    assert [x is y for x, y in zip(a, b)] == [False, False]


def test_truncated_key_raises():
    fory = pyfory.Fory()
    data = fory.dumps({"abcdef": 1})
    fory.loads(data)     # the key is in the cache now
    for cut in range(4, len(data)):
        with pytest.raises(ForyError):
            fory.loads(data[:cut])


# ---- strings as CPython stores them (docs/format.md 1.1) -------------------------------
TWO_BYTE = [
    "αβγδε", "日本語の文字列", "Ā", "\uffff", "\u0100" * 3 + "\u00ff", "ωx", "x日y",
    "mostly ascii with one ’ quote", "\ud800", "\udfff日", "\ud83d\ude00 two surrogates",
    "Ελληνικά και English", "日" * 70_000,
]


def _str_payload(fory, s):
    # the payload of a string that is not a short 1-byte-kind one: T_STR, then the
    # string header and bytes (a payload without flags has no header)
    data = fory.dumps(s)
    assert data[0] == 6
    return data


@pytest.mark.parametrize("s", TWO_BYTE + ["", "ascii", "é", "ÿ\x80", "😀", "a😀日"], ids=repr)
@pytest.mark.parametrize("ref", [False, True])
def test_strings_of_every_kind_round_trip(s, ref):
    fory = pyfory.Fory(ref=ref)
    for value in (s, [s, s + "x"], {s: s}, (s, 1)):
        out = fory.loads(fory.dumps(value))
        assert out == value and type(out) is type(value)
    out = fory.loads(fory.dumps(s))
    # == compares the storage kinds first: equal means the same (narrowest) kind
    assert out == s and hash(out) == hash(s) and len(out) == len(s)


@pytest.mark.parametrize("s", TWO_BYTE, ids=repr)
def test_two_byte_strings_take_the_shorter_form(s):
    fory = pyfory.Fory()
    body = _str_payload(fory, s)[1:]
    utf8 = len(s.encode("utf-8", "surrogatepass"))
    size = min(2 * len(s), utf8)
    assert len(body) - size in (0, 1, 2, 3)        # the header's own bytes
    header_len = len(body) - size
    header = int.from_bytes(body[:header_len], "little")
    enc = body[0] & 3
    assert enc == (1 if 2 * len(s) <= utf8 else 2), (s, header)
    if enc == 1:
        assert body[header_len:] == s.encode("utf-16-le", "surrogatepass")


@pytest.mark.parametrize("body, message", [
    (b"\x11\xe9\x00", "no character above U\\+00FF"),      # 'é' as UCS-2: not the narrowest kind
    (b"\x01", "no character above U\\+00FF"),              # empty UCS-2
    (b"\x09\xe9", "odd"),                                  # 1 byte
    (b"\x21\x00\x01", "truncated|need"),                   # 4 bytes claimed, 2 there
    (b"\x12\xff\xfe", "UTF-8"),
])
def test_malformed_ucs2_strings_raise(body, message):
    fory = pyfory.Fory()
    data = b"\x06" + body
    with pytest.raises(ForyError, match=message):
        fory.loads(data)
    # inside a packed list too (and after a good string)
    good = fory.dumps(["日本", "x"])
    assert fory.loads(good) == ["日本", "x"]
    with pytest.raises(ForyError):
        fory.loads(b"\x08\x02\x06\x21\xe5\x65\x2c\x67" + body)


def _string_encoding(fory, s):
    data = fory.dumps(s)
    assert data[0] == 0x06  # a string's general tag; its header's low 2 bits: the encoding
    return data[1] & 3


@pytest.mark.parametrize("wide", ["\u03b1", "\u65e5", "\u0800", "\uffff"])
def test_two_byte_strings_take_the_shorter_of_ucs2_and_utf8(wide):
    # UCS-2 (encoding 1) unless UTF-8 (2) is shorter: with a ASCII characters and c from
    # U+0800 up, UCS-2 when a <= c. One ASCII character at every place of every length
    # up to 40 (the ASCII probe reads 8 units, then 4, then 1 at a time).
    fory = pyfory.Fory()
    ascii_wins = 0 if wide in ("\u03b1",) else 1  # U+03B1 takes 2 bytes in UTF-8 too
    for n in range(1, 41):
        plain = wide * n
        assert _string_encoding(fory, plain) == 1
        assert fory.loads(fory.dumps(plain)) == plain
        for at in range(n):
            s = plain[:at] + "x" + plain[at + 1:]
            if n == 1:
                continue  # "x" alone is ASCII, a 1-byte-kind string
            c = (n - 1) * ascii_wins
            assert _string_encoding(fory, s) == (1 if 1 <= c else 2), (n, at)
            assert fory.loads(fory.dumps(s)) == s
            # a string with ASCII at both ends and one wide character between
            t = "x" * at + wide + "y" * (n - at)
            assert _string_encoding(fory, t) == (1 if n <= ascii_wins else 2), (n, at)
            assert fory.loads(fory.dumps(t)) == t


@pytest.mark.parametrize("ref", [False, True])
def test_strings_of_every_length_are_copied_exactly(ref):
    # Short strings are copied by overlapping fixed-size moves (up to 128 bytes) and
    # short UCS-2 ones are probed for ASCII as they are copied (up to 32 units); every
    # character differs from its neighbours, so a misplaced move changes the string.
    fory = pyfory.Fory(ref=ref)
    bases = {"ascii": 0x21, "latin1": 0xA1, "greek": 0x391, "cjk": 0x4E00, "emoji": 0x1F300}
    for name, base in bases.items():
        for n in range(0, 200):
            s = "".join(chr(base + i % 90) for i in range(n))
            mixed = "".join("x" if i % 3 == 0 else c for i, c in enumerate(s))  # some ASCII
            for value in (s, mixed, [s, mixed, s + "!"], {"k": s}):
                out = fory.loads(fory.dumps(value))
                assert out == value, (name, n)
            if not ref and n > 31 and base >= 0x391:
                body = fory.dumps(s)[1:]
                raw = s.encode("utf-16-le") if body[0] & 3 == 1 else s.encode("utf-8")
                assert body.endswith(raw) and len(body) - len(raw) <= 2, (name, n)


class _Str(str):
    pass


def _list_kind(data: bytes, n: int) -> int:
    # the element kind of a long list at the top of a payload (after its header)
    if data[0] & 0xF0 == H.HEADER_BASE:
        data = data[1:]
    assert data[0] == H.T_LIST
    return data[1 + len(H.varuint(n))]


@pytest.mark.parametrize("first", ["s", 7, 1.5], ids=["str", "int", "float"])
@pytest.mark.parametrize("other", ["t", 8, 2.5, None, True, 2**70, -(2**63) - 1, [1], b"x",
                                   "SUB"], ids=repr)
@pytest.mark.parametrize("ref", [False, True])
def test_long_lists_guess_their_kind_and_start_over_at_another_type(first, other, ref):
    # A long list's kind is guessed from its first items and each later item checked as
    # it is written; one item of another type makes the list tagged item by item (K_ANY),
    # the form a scan of every item gives, wherever that item is.
    fory = pyfory.Fory(ref=ref)
    fory.register(_Str)
    if other == "SUB":
        other = _Str("a str subclass")
    packed = {str: H.K_STR, int: H.K_INT, float: H.K_FLOAT}
    for n in (17, 40, 300):
        uniform = [first] * n
        assert _list_kind(fory.dumps(uniform), n) == packed[type(first)]
        for at in sorted({0, 7, 8, 9, n // 2, n - 1}):
            items = list(uniform)
            items[at] = other
            data = fory.dumps(items)
            same = type(other) is type(first) and (type(other) is not int or other == 8)
            assert _list_kind(data, n) == (packed[type(first)] if same else H.K_ANY), (n, at)
            out = fory.loads(data)
            assert quickbench.deep_equal(out, items) and type(out[at]) is type(other)
            assert fory.loads(fory.dumps(tuple(items))) == tuple(items)


def _utf8_payload(raw: bytes) -> bytes:
    # a string value in encoding 2 (UTF-8), written by hand
    return b"\x06" + H.varuint((len(raw) << 3) | 2) + raw


def _check_utf8_like_cpython(fory, raw: bytes):
    # pyfory's UTF-8 reader accepts exactly what Python's "surrogatepass" decoder
    # accepts, and makes the same string (== compares the kinds too: a str of a wider
    # kind than its characters need is never equal to the canonical one)
    try:
        expected = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        with pytest.raises(ForyError, match="invalid UTF-8"):
            fory.loads(_utf8_payload(raw))
        return
    got = fory.loads(_utf8_payload(raw))
    assert type(got) is str and got == expected and hash(got) == hash(expected), raw
    assert got.isascii() == expected.isascii()


def test_utf8_reader_matches_cpython_on_every_boundary():
    fory = pyfory.Fory()
    leads = [0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xDF, 0xE0, 0xE1, 0xEC, 0xED,
             0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF8, 0xFF]
    conts = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    for lead in leads:
        for c1 in conts:
            for tail in (b"", b"\x80", b"\xbf\xbf", b"\x80\x80\x80"):
                seq = bytes([lead, c1]) + tail
                for prefix in (b"", b"abcdefgh", b"abc"):
                    _check_utf8_like_cpython(fory, prefix + seq)
                    _check_utf8_like_cpython(fory, prefix + seq + b"xyz")
        _check_utf8_like_cpython(fory, bytes([lead]))


def test_utf8_reader_matches_cpython_on_random_bytes_and_strings():
    fory = pyfory.Fory()
    rng = random.Random(21)
    pieces = ["a", "é", "ÿ", "Ā", "\u07ff", "\u0800", "日", "\ud800", "\udfff", "\uffff",
              "\U00010000", "😀", "\U0010ffff", "abcdefghij"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        raw = text.encode("utf-8", "surrogatepass")
        _check_utf8_like_cpython(fory, raw)
        # and with one byte changed, cut or dropped
        b = bytearray(raw)
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256)
        _check_utf8_like_cpython(fory, bytes(b))
        _check_utf8_like_cpython(fory, raw[:i])
        _check_utf8_like_cpython(fory, raw[:i] + raw[i + 1:])


def test_latin1_bytes_in_the_one_byte_form():
    fory = pyfory.Fory()
    # encoding 0 with bytes >= 0x80: a Latin-1 string (what version 1 called encoding 1)
    assert fory.loads(b"\x06\x20caf\xe9") == "café"
    assert fory.loads(b"\x06\x20caf\x65") == "cafe"
    # the same in a short string's tag (FIX_STR + 4), which is what dumps writes
    assert fory.loads(b"\xa4caf\xe9") == "café"
    assert fory.dumps("café") == b"\xa4caf\xe9"


# ---- dict writing (WriteContext.write_dict) ----------------------------------------------
def _dict_values(i):
    return [None, True, False, i, -i * 1000, 2**70 + i, i * 0.5, 1e300, f"v{i}", "日本", (i,), [i],
            {"x": i}]


@pytest.mark.parametrize("size", [1, 2, 15, 16, 17, 40])
@pytest.mark.parametrize("ref", [False, True])
def test_dicts_of_every_size_and_value_mix_round_trip(size, ref):
    fory = pyfory.Fory(ref=ref)
    values = _dict_values(size)
    for start in range(len(values)):
        # atoms only, then with a container among them; str keys, then other keys
        d = {f"k{i}": values[(start + i) % 9] for i in range(size)}
        e = dict(d, last=values[start])
        f = {i: values[(start + i) % len(values)] for i in range(size)}
        for value in (d, e, f, [d, d, e], {"outer": d}):
            out = fory.loads(fory.dumps(value))
            assert out == value and type(out) is type(value)
            if type(value) is dict:
                assert list(out) == list(value)


def test_top_level_dict_keys_skip_the_string_table_without_ref():
    fory = pyfory.Fory()
    # the whole payload, atom values: key headers without the register bit (bit 2)
    # (a small dict: FIX_DICT + n, key string header, tagged value)
    assert fory.dumps({"ab": 1}) == b"\x41\x10ab\xd1"
    assert fory.dumps({"ab": 1, "c": None}) == b"\x42\x10ab\xd1\x08c\x00"
    assert fory.dumps({"ab": "c"}) == b"\x41\x10ab\xa1c"
    # a larger one: T_SDICT + value kind (K_STR: 23), count, packed pairs
    big = {f"k{i:02}": "v" for i in range(16)}
    assert fory.dumps(big)[:2] == b"\x17\x10" and fory.dumps(big)[2:6] == b"\x18k00"
    # nested: the keys are registered, and the second dict refers back to them
    data = fory.dumps([{"ab": 1}, {"ab": 2}])
    assert data.count(b"ab") == 1
    # whatever the values: nothing can refer back to a top-level dict's keys (a dict
    # below it has keys of its own), so they stay out of the table
    assert not fory.dumps({"ab": [1]})[1] & 4
    nested = fory.dumps({"ab": {"ab": 1}, "cd": {"ab": 2}})
    assert nested.count(b"ab") == 2           # the top key, then the inner ones once
    assert pyfory.Fory().loads(nested) == {"ab": {"ab": 1}, "cd": {"ab": 2}}
    # records keep sharing their keys
    records = [{"name": f"n{i}", "id": i} for i in range(100)]
    assert fory.dumps(records).count(b"name") == 1
    # with ref=True strings are tracked: registered
    assert pyfory.Fory(ref=True).dumps({"ab": 1})[2] & 4


class _Key(str):
    pass


@pytest.mark.parametrize("n", [1, 2, 3, 8, 15])
def test_top_level_dict_written_in_one_pass_takes_back_its_prefix(n):
    # The dict that is the whole payload is written as PyDict_Next gives its items; at
    # the first item that is not a str key with an atom value, the prefix is taken back
    # and the two-pass writer runs. Either way the bytes are the header, then each key
    # (its length in the header byte) and value in order.
    fory = pyfory.Fory()
    atoms = [1, "v", 2.5, None, True, 2**70, "日本", -300]
    for p in range(n):
        for other in ([1, "x"], (2,), b"bytes", frozenset({3}), bytearray(b"z")):
            d = {f"k{i}": (other if i == p else atoms[i % len(atoms)]) for i in range(n)}
            data = fory.dumps(d)
            expected = bytes([0x40 + n]) + b"".join(
                bytes([len(k) << 3]) + k.encode() + fory.dumps(v) for k, v in d.items())
            assert data == expected
            out = fory.loads(data)
            assert out == d and list(out) == list(d)
        # keys that are not exactly str, at each position: the general dict writer
        lax = pyfory.Fory(strict=False)     # (a str subclass is a class of its own)
        for key in (p, _Key(f"k{p}"), (p,)):
            d = {(key if i == p else f"k{i}"): atoms[i % len(atoms)] for i in range(n)}
            out = lax.loads(lax.dumps(d))
            assert out == d and list(out) == list(d)
            assert [type(k) for k in out] == [type(k) for k in d]
        # a dict below it, at each position (its keys go through the string table)
        d = {f"k{i}": ({"x": i} if i == p else atoms[i % len(atoms)]) for i in range(n)}
        assert fory.loads(fory.dumps(d)) == d


# ---- the tags that carry their value or count (format 3) ---------------------------------
def test_small_values_are_written_in_their_tags():
    fory = pyfory.Fory()
    assert fory.dumps(-16) == bytes([0xC0]) and fory.dumps(47) == bytes([0xFF])
    assert fory.dumps(48)[0] == 3 and fory.dumps(-17)[0] == 3      # T_INT beyond
    assert fory.dumps("x" * 31)[0] == 0xBF and fory.dumps("x" * 32)[0] == 6
    assert fory.dumps([]) == b"\x20" and fory.dumps(()) == b"\x30" and fory.dumps({}) == b"\x40"
    assert fory.dumps([None] * 15)[0] == 0x2F and fory.dumps([None] * 16)[:2] == b"\x08\x10"
    assert fory.dumps((1, "a")) == b"\x32\xd1\xa1a"
    # str-keyed dicts above 15 items: T_SDICT + value kind, no kinds byte
    for values, tag in ((range(16), 0x15), ([0.5] * 16, 0x16), (["s"] * 16, 0x17), ([None] * 16, 0x14)):
        d = {f"k{i}": v for i, v in zip(range(16), values)}
        assert fory.dumps(d)[0] == tag and fory.loads(fory.dumps(d)) == d
    # with ref tracking strings go through the string table: no short-string tag
    assert pyfory.Fory(ref=True).dumps("ab") == b"\x51\x06\x14ab"


@pytest.mark.parametrize("data, error", [
    (H.fix_str("abc")[:-1], "truncated"),
    (bytes([H.FIX_LIST + 3]) + H.fix_int(1), "truncated|exceeds"),
    (bytes([H.FIX_DICT + 1]) + H.str_body("k"), "truncated"),
    (bytes([H.FIX_DICT + 1]) + b"\x0f" + H.fix_int(1), "reference to string"),   # key: string #3
    (bytes([H.T_SDICT + 3]) + H.varuint(1 << 40), "exceeds"),
    # the discard bit exists on T_TUPLE, T_FROZENSET, T_OBJECT only (a fix tuple's tag
    # with it would be a short string's)
    (bytes([H.T_LIST | H.T_DISCARD, 0]), "not a pyfory payload"),
    (H.list_(bytes([H.T_LIST | H.T_DISCARD, 0])), "invalid tag"),
])
def test_malformed_small_forms_raise(data, error):
    with pytest.raises(ForyError, match=error):
        pyfory.Fory().loads(data)


def test_small_forms_read_in_the_general_forms_too():
    # version-3 readers accept T_LIST / T_TUPLE / T_DICT with counts and kinds for any n
    fory = pyfory.Fory()
    assert fory.loads(H.list_(H.fix_int(1), H.fix_str("a"))) == [1, "a"]
    assert fory.loads(H.tuple_()) == () and fory.loads(H.dict_()) == {}
    assert fory.loads(H.fix_dict((H.str_body("a"), H.list_()))) == {"a": []}
    t = ([],)
    t[0].append(t)
    out = pyfory.Fory(ref=True).loads(pyfory.Fory(ref=True).dumps(t))
    assert out[0][0] is out


def test_dumps_with_one_argument_takes_the_short_entry_and_the_same_bytes():
    # Fory.dumps(obj) goes to a METH_O entry (no argument parsing); every other call to
    # the full signature. Both give the same bytes and the same errors as before.
    import pyfory._core as core
    assert core.DUMPS_ENTRY_INSTALLED
    fory = pyfory.Fory()
    value = {"id": 42, "name": "alice", "tags": ["a", "b"], "n": None}
    plain = fory.dumps(value)
    assert fory.dumps(value, None) == plain
    assert fory.dumps(value, buffer_callback=None) == plain
    assert fory.dumps(obj=value) == plain
    assert fory.serialize(value) == plain
    assert fory.loads(plain) == value
    with pytest.raises(TypeError, match="at least 1 positional"):
        fory.dumps()
    with pytest.raises(TypeError, match="unexpected keyword"):
        fory.dumps(value, bogus=1)
    with pytest.raises(TypeError):
        fory.dumps(1, None, None, None, None)

    class Loud(pyfory.Fory):
        def dumps(self, obj):
            return b"!" + super().dumps(obj)

    assert Loud().dumps(value) == b"!" + plain
    # an error inside still comes out as pyfory's (and pickle's) error
    with pytest.raises(ForyError):
        pyfory.Fory(strict=True).dumps(lambda: 1)

    # and a RecursionError as a DepthLimitError caused by it, on both paths (the short
    # entry converts its errors in C, on the error path only)
    class Endless:
        def __getattribute__(self, name):
            return getattr(self, name)

    loose = pyfory.Fory(strict=False)
    for call in (lambda: loose.dumps(Endless()), lambda: loose.dumps(Endless(), None)):
        with pytest.raises(DepthLimitError, match="recursion") as info:
            call()
        assert isinstance(info.value.__cause__, RecursionError)
        assert info.value.__context__ is info.value.__cause__ and info.value.__suppress_context__
        assert loose.dumps(value) == plain   # the state was reset
