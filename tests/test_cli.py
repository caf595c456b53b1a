"""The command line (issue 10): ``python -m pyfory inspect | bench | --version | --help``.

The commands run as subprocesses (``sys.executable -m pyfory ...``) on payloads of every
kind -- builtins, references, repeated strings, registered dataclasses, plain, reduce and
enum objects, functions and classes by value, numpy arrays in and out of band, streams --
and on truncated and corrupted ones; the tests check what is printed, not only the exit
status. The decoder itself (``pyfory.inspector.inspect``) is also called in-process on
mutated payloads: it must never raise.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import io
import json
import os
import pickle
import random
import re
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyfory
from pyfory import inspector
from pyfory.inspector import inspect, render_text, to_json

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyfory.__file__)))


# ---- classes the payloads use (module level: they travel by reference) -----------------------
@dataclasses.dataclass
class Point:
    x: int
    y: float


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Plain:
    def __init__(self, a=1, b="x"):
        self.a = a
        self.b = b


class Reduced:
    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        return (Reduced, (self.v,), {"extra": 1})


Pair = collections.namedtuple("Pair", "left right")


class Opaque:
    def __init__(self, n):
        self.n = n


class OpaqueSerializer(pyfory.Serializer):
    """A user serializer: its bytes have no length prefix on the wire."""

    def write(self, ctx, obj):
        ctx.write_int32(obj.n)
        ctx.write_bytes(b"raw!")

    def read(self, ctx):
        n = ctx.read_int32()
        ctx.read_bytes(4)
        return Opaque(n)


# ---- helpers --------------------------------------------------------------------------------
F64 = b"\x00\x00\x00\x00\x00\x00\xf8\x3f"     # 1.5 as the 8 bytes of a double
def run_cli(*args, input=None, cwd=None, extra_path=None, timeout=120):
    env = dict(os.environ)
    paths = [PACKAGE_ROOT] + ([extra_path] if extra_path else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONSTARTUP", None)
    return subprocess.run([sys.executable, "-m", "pyfory", *args], input=input, capture_output=True,
                          cwd=cwd, env=env, timeout=timeout)


def inspect_file(tmp_path, data: bytes, *args, name="payload.bin"):
    path = tmp_path / name
    path.write_bytes(data)
    proc = run_cli("inspect", *args, str(path))
    return proc, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def assert_no_traceback(*texts):
    for text in texts:
        assert "Traceback" not in text, text


def lines_matching(text, pattern):
    return [line for line in text.splitlines() if re.search(pattern, line)]


def local_things():
    """A lambda with a closure and a local class with a method: they travel by value."""
    k = 3

    class Local:
        attr = 1

        def m(self):
            return self.attr + k

    return lambda x: x * k, Local


def corpus():
    """(name, payload) of every kind the format has; all decode completely."""
    out = []
    f = pyfory.Fory()
    r = pyfory.Fory(ref=True)
    ns = pyfory.Fory(ref=True, strict=False)
    out.append(("builtins", f.dumps([None, True, 1, -5, 2**70, 1.5, float("nan"), "ascii", "latin\xe9", "日本",
                                     "\ud800", b"bytes", bytearray(b"ba"), (1, 2), {1, 2}, frozenset({"a"}),
                                     3 + 4j, {"a": 1}, {1: "x", (1, 2): [3]}, {"f": 1.5}, [1.5], ["a"], (), {}])))
    shared = [1, 2]
    out.append(("refs", r.dumps([shared, shared, "s", "s"])))
    cyc = []
    cyc.append(cyc)
    out.append(("cycle", r.dumps(cyc)))
    t = ([],)
    t[0].append(t)
    out.append(("discard", r.dumps(t)))
    fr = pyfory.Fory()
    fr.register(Point, type_id=7)
    out.append(("dataclass_id", fr.dumps([Point(1, 2.0), Point(3, 4.0)])))
    fn = pyfory.Fory(ref=True)
    fn.register(Point, name="pt")
    out.append(("dataclass_name", fn.dumps([Point(1, 2.0), Point(3, 4.0)])))
    out.append(("objects", ns.dumps([Plain(), Plain(2), Reduced([1]), ValueError("bad", 3), Color.BLUE,
                                     Pair(1, "r"), datetime.datetime(2024, 5, 6, tzinfo=datetime.timezone.utc),
                                     decimal.Decimal("1.5"), uuid.UUID(int=5), collections.OrderedDict(a=1),
                                     collections.deque([1], 3), range(3), len, os.path.join])))
    fn_, Local = local_things()
    out.append(("by_value", ns.dumps([fn_, Local, Local(), Local().m])))
    out.append(("by_value_noref", pyfory.Fory(strict=False).dumps([fn_, fn_])))
    out.append(("pyfory_dumps", pyfory.dumps({"f": fn_, "data": [1, 2]})))
    out.append(("oob_bytes", f.dumps([b"x" * 70000, pickle.PickleBuffer(b"abc"), memoryview(b"abcd")],
                                     buffer_callback=lambda b: False)))
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        out.append(("numpy", f.dumps([np.arange(6.0).reshape(2, 3), np.array(["a", "bc"]), np.float32(1.5),
                                      np.zeros((2, 2), order="F"), np.array([1, None], dtype=object),
                                      np.dtype("<i4"), np.int64(7)])))
        out.append(("numpy_oob", f.dumps([np.arange(3, dtype="<i4")], buffer_callback=lambda b: False)))
    return out


# ---- --version, --help ----------------------------------------------------------------------
def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert out.startswith(f"pyfory {pyfory.__version__}")
    assert "wire format version 3" in out


@pytest.mark.parametrize("args, expected", [
    ((), ["inspect", "bench", "--version"]),
    (("inspect",), ["FILE", "--json", "--max-items", "--stream", "exit status", "never imports",
                    "payload or stream"]),
    (("bench",), ["--quick", "pickle", "cloudpickle", "-k"]),
])
def test_help(args, expected):
    proc = run_cli(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("usage: python -m pyfory")
    for word in expected:
        assert word in out


def test_no_command_prints_help_and_fails():
    proc = run_cli()
    assert proc.returncode == 2
    assert b"usage:" in proc.stdout
    proc = run_cli("inspect")       # FILE missing: argparse's usage error
    assert proc.returncode == 2
    assert b"FILE" in proc.stderr
    assert_no_traceback(proc.stderr.decode())


# ---- inspect: payloads of every kind --------------------------------------------------------
def test_inspect_builtins(tmp_path):
    data = pyfory.Fory().dumps([None, True, 7, 2**70, 1.5, "héllo", b"\x00\x01", (1, 2), {"k": [1.5, 2.5]},
                                {1: "x"}, frozenset({"a"}), 3 + 4j])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    # no flags: no header byte, the value starts at offset 0 (a list of 12: FIX_LIST 0x2c)
    assert out.startswith(f"pyfory payload: {len(data)} bytes, format version 3, no header byte, flags 0x00 (none)")
    assert lines_matching(out, r"^\s+0  list len=12 kind=any$")
    for expected in [r"\[0\]: None", r"\[1\]: bool  True", r"\[2\]: int  7$", r"\[3\]: int  1180591620717411303424",
                     r"\[4\]: float  1.5", r"\[5\]: str  'héllo'", r"\[6\]: bytes len=2  0001",
                     r"\[7\]: tuple len=2 kind=any$", r"\[8\]: dict len=1 kind=str:any",
                     r"'k': list len=2 kind=any  \(key: str#0 new\)", r"\[9\]: dict len=1 kind=any:str",
                     r"key: int  1", r"\[10\]: frozenset len=1 kind=str$", r"item: str  'a'$",
                     r"\[11\]: complex  \(3\+4j\)"]:
        assert lines_matching(out, expected), (expected, out)
    # children are indented under their parent, offsets in the first column
    child = lines_matching(out, r"'k': list")[0]
    parent = lines_matching(out, r"\[8\]: dict")[0]
    assert len(child) - len(child.lstrip(" 0123456789")) > len(parent) - len(parent.lstrip(" 0123456789"))
    assert "objects with ids: 0" in out


def test_inspect_references(tmp_path):
    x = [1, 2]
    data = pyfory.Fory(ref=True).dumps([x, x])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert "header byte 0x51, flags 0x01 (REF)" in out
    assert lines_matching(out, r"^\s+1  list len=2 kind=any  =obj#0$")
    assert lines_matching(out, r"^\s+2    \[0\]: list len=2 kind=any  =obj#1$")
    assert lines_matching(out, r"^\s+3      \[0\]: int  1$")
    assert lines_matching(out, r"^\s+5    \[1\]: ref -> obj#1 \(list @2\)$")
    assert "objects with ids: 2" in out


def test_inspect_cycle_and_discarded_copy(tmp_path):
    t = ([],)
    t[0].append(t)
    proc, out, err = inspect_file(tmp_path, pyfory.Fory(ref=True).dumps(t))
    assert proc.returncode == 0, err
    # 51 89 01 00 21 31 0f 00 0f 01: the outer (fix) tuple rewritten as T_TUPLE|T_DISCARD
    assert lines_matching(out, r"^\s+1  tuple len=1 kind=any  \(discarded copy")
    assert lines_matching(out, r"^\s+5      \[0\]: tuple len=1 kind=any  =obj#1$")
    assert lines_matching(out, r"result: ref -> obj#1 \(tuple @5\)")


# format version 3: values whose tag carries them (hand-written payloads, each checked
# against pyfory's own reader too)
NEW_TAGS = [
    # (payload, value, kind, length, elem_kind)
    (b"\xc0", -16, "int", None, None),
    (b"\xd0", 0, "int", None, None),
    (b"\xff", 47, "int", None, None),
    (b"\xa0", "", "str", 0, None),
    (b"\xa3abc", "abc", "str", 3, None),
    (b"\xa2\xe9\x80", "\xe9\x80", "str", 2, None),                   # Latin-1
    (b"\xbf" + b"z" * 31, "z" * 31, "str", 31, None),
    (b"\x20", [], "list", 0, None),
    (b"\x22\xd1\xa1x", [1, "x"], "list", 2, "any"),
    (b"\x2f" + b"\x00" * 15, [None] * 15, "list", 15, "any"),
    (b"\x30", (), "tuple", 0, None),
    (b"\x32\xd1\x20", (1, []), "tuple", 2, "any"),
    (b"\x40", {}, "dict", 0, None),
    (b"\x42\x08a\xd1\x08b\x20", {"a": 1, "b": []}, "dict", 2, "str:any"),
    (b"\x14\x01\x08a\xa1b", {"a": "b"}, "dict", 1, "str:any"),
    (b"\x15\x02\x08a\x02\x08b\x04", {"a": 1, "b": 2}, "dict", 2, "str:int"),
    (b"\x16\x01\x08a" + F64, {"a": 1.5}, "dict", 1, "str:float"),
    (b"\x17\x01\x08a\x08b", {"a": "b"}, "dict", 1, "str:str"),
    (b"\x14\x00", {}, "dict", 0, None),
    # the header byte with no flag (a buffer_callback was given, nothing went out of band)
    (b"\x50\xd5", 5, "int", None, None),
    # the general forms of version 2 are still read
    (b"\x08\x00", [], "list", 0, None),
    (b"\x0a\x01\x36\x08a\x02", {"a": 1}, "dict", 1, "str:int"),
    (b"\x08\x02\x03\x02\x04", [1, 2], "list", 2, "int"),
]


@pytest.mark.parametrize("data, value, kind, length, elem_kind", NEW_TAGS, ids=[d.hex()[:16] for d, *_ in NEW_TAGS])
def test_inspect_new_tags(data, value, kind, length, elem_kind):
    assert pyfory.Fory().loads(data) == value
    report = inspect(data)
    assert report["status"] == "ok" and report["stream"] is False, report["error"]
    root = report["payloads"][0]["root"]
    assert (root["kind"], root.get("length"), root.get("elem_kind")) == (kind, length, elem_kind)
    assert root["end"] == len(data) and root["tag"] == data[1 if data[0] == 0x50 else 0]
    if kind in ("int", "str"):
        assert root["value"] == value
    elif kind == "dict":
        assert [c["key"]["value"] for c in root.get("children", ())] == list(value)
    elif root.get("items") is not None:                    # packed items (version 2 form)
        assert root["items"] == list(value)
    else:
        assert [c.get("value") for c in root.get("children", ())] == [
            v if not isinstance(v, list) else None for v in value]
    assert report["payloads"][0]["tables"]["strings"] == 0     # none of these registers a string


def test_inspect_new_tags_ids_with_ref():
    # fix lists and dicts take their id before their items, fix tuples after them
    data = b"\x51\x23\x20\x31\xd1\x41\x0c\x6b\x0f\x01"      # [[], (1,), {"k": <the []>}]
    got = pyfory.Fory(ref=True).loads(data)
    assert got[2]["k"] is got[0] and got[1] == (1,)
    payload = inspect(data)["payloads"][0]
    root = payload["root"]
    assert payload["header"]["flag_names"] == ["REF"]
    assert [root["obj_id"]] + [c["obj_id"] for c in root["children"]] == [0, 1, 2, 3]
    assert root["children"][2]["children"][0]["ref"] == 1
    assert root["children"][2]["children"][0]["key"]["str_index"] == 0
    # a short string is never registered, even with F_REF; a T_STR one is
    data = b"\x51\x22\xa1s\x06\x0cs"
    payload = inspect(data)["payloads"][0]
    assert payload["tables"]["strings"] == 1
    assert [c.get("str_index") for c in payload["root"]["children"]] == [None, 0]


def test_inspect_writer_choices(tmp_path):
    """What dumps writes for each size, as the inspector shows it."""
    big = {f"k{i}": i for i in range(16)}
    data = pyfory.Fory().dumps([list(range(16)), tuple(range(15)), {f"k{i}": i for i in range(15)}, big,
                                {f"k{i}": str(i) for i in range(16)}, {f"k{i}": [i] for i in range(16)},
                                {1: 2}, "x" * 31, "x" * 32, 47, 48, -16, -17])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert data[0] == 0x2d                                   # FIX_LIST of 13
    for expected in [r"\[0\]: list len=16 kind=int  \[0, 1, 2, 3, 4, 5, 6, 7, \.\.\. \(8 more\)\]$",
                     r"\[1\]: tuple len=15 kind=any$", r"\[2\]: dict len=15 kind=str:any$",
                     r"\[3\]: dict len=16 kind=str:int$", r"\[4\]: dict len=16 kind=str:str$",
                     r"\[5\]: dict len=16 kind=str:any$", r"\[6\]: dict len=1 kind=any:int$",
                     r"\[7\]: str  'x{31}'$", r"\[8\]: str  'x{32}'$", r"\[9\]: int  47$", r"\[10\]: int  48$",
                     r"\[11\]: int  -16$", r"\[12\]: int  -17$"]:
        assert lines_matching(out, expected), (expected, out)
    tags = [c["tag"] for c in inspect(data)["payloads"][0]["root"]["children"]]
    assert tags == [0x08, 0x3f, 0x4f, 0x15, 0x17, 0x14, 0x0a, 0xbf, 0x06, 0xff, 0x03, 0xc0, 0x03]


def test_ambiguous_input_is_a_payload_with_a_warning(tmp_path):
    # a stream of one 33-byte frame without a header byte is also a payload: 0x21 is a
    # FIX_LIST of one item
    value = ["a" * 30, 1]
    bio = io.BytesIO()
    pyfory.Fory().dump(value, bio)
    stream = bio.getvalue()
    assert stream[0] == 0x21
    proc, out, err = inspect_file(tmp_path, stream)
    assert proc.returncode == 0, err
    assert out.startswith(f"pyfory payload: {len(stream)} bytes")
    assert "warning: the input also reads as a stream of 1 Fory.dump frame(s)" in out
    proc, out, err = inspect_file(tmp_path, stream, "--stream")
    assert proc.returncode == 0, err
    assert out.startswith("stream of 1 frame(s)") and "warning" not in out


def test_old_version_stream(tmp_path):
    proc, out, err = inspect_file(tmp_path, b"\x06\xfd\x59\x02\x02\x03\x02")
    assert proc.returncode == 1
    assert out.startswith("stream of 1 frame(s)")
    assert "malformed payload: offset 3: payload has pyfory format version 2; this inspector reads version 3" \
        in err.replace(" (magic bytes fd 59, then the version)", "")


def test_inspect_repeated_strings(tmp_path):
    s = "a repeated string"
    data = pyfory.Fory(ref=True).dumps([s, s, s])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert len(lines_matching(out, r"str  'a repeated string'  str#0 new")) == 1
    assert len(lines_matching(out, r"str  'a repeated string'  -> str#0")) == 2
    assert "strings in table: 1" in out
    # without ref, values are written in full, dict keys still go to the table
    data = pyfory.Fory().dumps([s, s, {"key": 1}, {"key": 2}])
    proc, out, err = inspect_file(tmp_path, data)
    assert len(lines_matching(out, r"str  'a repeated string'$")) == 2
    assert "strings in table: 1" in out


def test_inspect_registered_dataclass(tmp_path):
    fory = pyfory.Fory()
    fory.register(Point, type_id=7)
    proc, out, err = inspect_file(tmp_path, fory.dumps([Point(1, 2.0), Point(3, 4.0)]))
    assert proc.returncode == 0, err
    assert lines_matching(out, r"\[0\]: object <registered id 7> \(registered id, attribute-layout\)")
    assert lines_matching(out, r"class: type#0 = <registered id 7> \(registered id 7, attribute-layout\)")
    assert lines_matching(out, r"layout: new #0 \[x, y\] \(writer's class: dataclass\)")
    assert lines_matching(out, r"name\[0\]: str  'x'  str#0 new")
    assert lines_matching(out, r"x: int  1$") and lines_matching(out, r"y: float  4.0$")
    # a list of one class is packed: the class once, then each item's layout and values
    assert lines_matching(out, r"list len=2 kind=object <registered id 7>$")
    assert lines_matching(out, r"\[1\]: object <registered id 7> .*\(layout #0\)")
    assert "layout #0: x, y" in out                        # the schema, in the type table
    assert "registrations: type_id=7" in out
    fory = pyfory.Fory()
    fory.register(Point, name="pt")
    proc, out, err = inspect_file(tmp_path, fory.dumps(Point(1, 2.0)))
    assert proc.returncode == 0, err
    assert lines_matching(out, r"object <registered name 'pt'> \(registered name, attribute-layout\)")
    assert "registrations: name='pt'" in out


def test_inspect_objects_by_reference(tmp_path):
    fory = pyfory.Fory(ref=True, strict=False)
    data = fory.dumps([Plain(), Reduced([1]), ValueError("bad", 3), Color.BLUE, Pair(1, "r")])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    mod = Plain.__module__
    assert lines_matching(out, rf"object {mod}\.Plain \(by reference, attribute-layout\)")
    assert lines_matching(out, r"layout: new #0 \[a, b\] \(writer's class: plain\)")
    assert lines_matching(out, rf"object {mod}\.Reduced \(by reference, reduce\).*\(reduce CALL\)")
    assert lines_matching(out, r"state: dict len=1 kind=str:any")
    assert lines_matching(out, r"'extra': int  1  \(key: str#\d+ new\)")
    assert lines_matching(out, r"object builtins\.ValueError \(by reference, reduce\)")
    assert lines_matching(out, r"args: tuple len=2 kind=any")
    assert lines_matching(out, rf"object {mod}\.Color \(by reference, enum\)")
    assert lines_matching(out, r"value: int  2$")
    assert lines_matching(out, rf"object {mod}\.Pair \(by reference, namedtuple\)")
    assert f"classes by reference: {mod}.Plain" in out


def test_inspect_stdlib_values(tmp_path):
    fory = pyfory.Fory(ref=True)
    data = fory.dumps([datetime.date(2020, 1, 2), datetime.timedelta(days=-1), decimal.Decimal("-1.50"),
                       uuid.UUID(int=0x3039), collections.OrderedDict(a=1)])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert lines_matching(out, r"object datetime\.date \(internal\)  2020-01-02")
    assert lines_matching(out, r"class: type#0 = datetime\.date \(internal id 19\)")
    assert lines_matching(out, r"days: varint  -1")
    assert lines_matching(out, r"text: str  '-1\.50'  \(plain string\)")
    assert lines_matching(out, r"uuid\.UUID \(internal\)  00000000-0000-0000-0000-000000003039")
    assert lines_matching(out, r"collections\.OrderedDict \(internal\)  =obj#\d+")


def test_inspect_functions_and_classes_by_value(tmp_path):
    fn, Local = local_things()
    data = pyfory.Fory(ref=True, strict=False).dumps([fn, fn, Local, Local(), len])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    # before 3.11 a code object has no qualified name: the header shows co_name
    qualname = r"local_things\.<locals>\.<lambda>" if sys.version_info >= (3, 11) else r"<lambda>"
    assert lines_matching(out, r"\[0\]: object builtins\.function \(by value\)  .*" + qualname + r"  =obj#1")
    code = lines_matching(out, r"code: code new #0 \(")[0]
    assert "free vars k" in code and "bytecode magic" in code and "code encoding 1" in code
    assert lines_matching(out, r"closure: cell  1 new cell\(s\) #0\.\.#0 \(k\), contents in the state")
    assert lines_matching(out, r"cell contents\[0\]: int  3")
    assert lines_matching(out, r"\[1\]: ref -> obj#1 \(object builtins\.function")
    assert lines_matching(out, r"\[2\]: type .*local_things\.<locals>\.Local \(by value, attribute-layout\)")
    assert lines_matching(out, r"skeleton: flags 0x[0-9a-f]+  \(tracker id [0-9a-f]{32}\)")
    # 3.13 adds __firstlineno__ and __static_attributes__ to every class dict
    assert lines_matching(out, r"class dict: %d attribute\(s\)" % (4 if sys.version_info >= (3, 13) else 2))
    assert lines_matching(out, r"attr: int  1  \(name: str#\d+ new\)")
    assert lines_matching(out, r"m: object builtins\.function \(by value\)")
    assert lines_matching(out, r"\[3\]: object .*Local \(by value, attribute-layout\)  =obj#\d+  -> type#\d+")
    assert lines_matching(out, r"\[4\]: object builtins\.builtin_function_or_method .*\(reduce GLOBAL\)")
    needs = out[out.index("to load this payload the reader needs:"):]
    assert "strict=False:" in needs and "by value" in needs and "python: 3." in needs
    assert "imports: builtins.len" in needs


def test_inspect_numpy_in_band_and_out_of_band(tmp_path):
    np = pytest.importorskip("numpy")
    data = pyfory.Fory().dumps([np.arange(6.0).reshape(2, 3), np.array([1, None], dtype=object), np.float32(1.5)])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert lines_matching(out, r"object numpy\.ndarray \(internal\)  dtype <f8, shape \(2, 3\)  =obj#0")
    assert lines_matching(out, r"class: type#0 = numpy\.ndarray \(internal id 256\)")
    assert lines_matching(out, r"data: buffer 48 byte\(s\) in band  0{16}")
    assert lines_matching(out, r"dtype \|O, shape \(2,\)")
    assert lines_matching(out, r"elements: list len=2 kind=any")
    assert lines_matching(out, r"numpy\.float32 \(scalar 'f'\) \(internal\)  1\.5")
    assert "packages: numpy" in out
    bufs = []
    data = pyfory.Fory().dumps([np.arange(3, dtype="<i4"), np.ones(2)], buffer_callback=bufs.append)
    assert bufs == [] or True
    data = pyfory.Fory().dumps([np.arange(3, dtype="<i4"), np.ones(2)], buffer_callback=lambda b: False)
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert "header byte 0x54, flags 0x04 (OOB)" in out
    assert lines_matching(out, r"data: buffer 12 byte\(s\) OUT OF BAND, slot #0")
    assert lines_matching(out, r"data: buffer 16 byte\(s\) OUT OF BAND, slot #1")
    assert "out-of-band buffers: #0 12 bytes, #1 16 bytes" in out


def test_inspect_out_of_band_buffers(tmp_path):
    data = pyfory.Fory().dumps([b"x" * 70000, pickle.PickleBuffer(b"abc"), memoryview(b"abcd").cast("B", (2, 2))],
                               buffer_callback=lambda b: False)
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 0, err
    assert lines_matching(out, r"\[0\]: buffer bytes 70000 byte\(s\) OUT OF BAND, slot #0")
    assert lines_matching(out, r"\[1\]: buffer PickleBuffer 3 byte\(s\) OUT OF BAND, slot #1  \(read-only\)")
    assert lines_matching(out, r"\[2\]: buffer memoryview 4 byte\(s\) in band  61626364  "
                               r"\(format 'B', shape \(2, 2\), read-only\)")


def test_inspect_stream_and_stdin(tmp_path):
    bio = io.BytesIO()
    fory = pyfory.Fory()
    for value in ([1, 2], {"a": "b"}, "x"):
        fory.dump(value, bio)
    stream = bio.getvalue()
    proc = run_cli("inspect", "-", input=stream)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert out.startswith(f"stream of 3 frame(s), {len(stream)} bytes")
    assert "== frame #2" in out
    # 03 22 d1 d2 | 05 41 08 61 a1 62 | 02 a1 78
    assert lines_matching(out, r"^\s+1  list len=2 kind=any$")
    assert lines_matching(out, r"^\s+2    \[0\]: int  1$")
    assert lines_matching(out, r"^\s+5  dict len=1 kind=str:any$")
    # (a dict that is the whole payload, of atom values: its keys skip the string table)
    assert lines_matching(out, r"^\s+6    'a': str  'b'$")
    assert lines_matching(out, r"^\s+11  str  'x'$")
    # a stream cut inside its last frame
    proc = run_cli("inspect", "-", input=stream[:-2])
    assert proc.returncode == 1
    assert b"frame #2" in proc.stderr and b"truncated" in proc.stderr
    # forcing --payload on a stream: its first byte (the length 3) is read as T_INT
    proc = run_cli("inspect", "--payload", "-", input=stream)
    assert proc.returncode == 1
    assert b"offset 2: 11 unexpected byte(s) after the value" in proc.stderr
    # forcing --stream on a payload
    proc = run_cli("inspect", "--stream", "-", input=pyfory.Fory().dumps([1, 2]))
    assert proc.returncode == 1
    assert b"frame #0 at offset 0 announces 34 bytes, 2 left" in proc.stderr


def test_inspect_json(tmp_path):
    x = [1, 2]
    fory = pyfory.Fory(ref=True)
    fory.register(Point, type_id=7)
    data = fory.dumps([x, x, "s", "s", Point(1, 2.0)])
    proc, out, err = inspect_file(tmp_path, data, "--json")
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report == json.loads(to_json(inspect(data)))
    assert report["status"] == "ok" and report["stream"] is False and report["error"] is None
    (payload,) = report["payloads"]
    assert payload["header"] == {"header_byte": 0x51, "version": 3, "flags": 1, "flag_names": ["REF"]}
    root = payload["root"]
    assert (root["offset"], root["kind"], root["length"], root["obj_id"], root["elem_kind"]) == (1, "list", 5, 0, "any")
    assert root["tag"] == 0x25                              # FIX_LIST of 5
    first, second, s1, s2, point = root["children"]
    assert first["obj_id"] == 1 and first["label"] == "[0]" and first["tag"] == 0x22
    assert [(c["kind"], c["value"], c["tag"]) for c in first["children"]] == [("int", 1, 0xD1), ("int", 2, 0xD2)]
    assert second["kind"] == "ref" and second["ref"] == 1 and second["offset"] == first["end"]
    assert s1["str_index"] == 0 and s2["str_ref"] == 0 and s2["value"] == "s"
    assert point["type"] == "<registered id 7>" and point["naming"] == "registered id"
    assert point["wire_kind"] == "attribute-layout" and point["type_index"] == 0
    layout = [c for c in point["children"] if c["kind"] == "layout"][0]
    assert layout["fields"]["names"] == ["x", "y"] and layout["fields"]["writer_is_dataclass"] is True
    assert [c["label"] for c in point["children"] if c["kind"] in ("int", "float")] == ["x", "y"]
    tables = payload["tables"]
    assert tables["objects"] == 3 and tables["strings"] == 3
    assert tables["types"][0]["layouts"] == [["x", "y"]] and tables["types"][0]["user_id"] == 7
    assert payload["needs"] == {"registrations": ["type_id=7"]}


def test_max_items(tmp_path):
    data = pyfory.Fory().dumps([i if i % 2 else str(i) for i in range(500)])
    proc, out, err = inspect_file(tmp_path, data, "--max-items", "10")
    assert proc.returncode == 0, err
    assert len(lines_matching(out, r"^\s+\d+    \[\d+\]: ")) == 10
    assert "... 490 more item(s) not shown (--max-items)" in out
    proc, out, err = inspect_file(tmp_path, data, "--max-items", "0")
    assert len(lines_matching(out, r"^\s+\d+    \[\d+\]: ")) == 500


# ---- inspect: what cannot be decoded ------------------------------------------------------------
def test_custom_serializer_is_opaque(tmp_path):
    fory = pyfory.Fory()
    fory.register(Opaque, type_id=3, serializer=OpaqueSerializer)
    data = fory.dumps(["before", Opaque(5), "after"])
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 3, (out, err)
    assert_no_traceback(out, err)
    assert lines_matching(out, r"\[0\]: str  'before'")
    assert lines_matching(out, r"\[1\]: object <registered id 3> \(registered id, custom\)")
    # the next bytes: int32 5 and b"raw!" (the custom serializer's), then the str 'after'
    assert lines_matching(out, r"OPAQUE \(14 byte\(s\) left: 0500000072617721a56166746572\): instance bytes of "
                               r"<registered id 3> were written by a custom Serializer")
    assert "not an error in the payload" in out
    assert "stopped at offset 12" in err


def test_compatible_false_dataclass_is_opaque(tmp_path):
    fory = pyfory.Fory(compatible=False)
    fory.register(Point, type_id=7)
    proc, out, err = inspect_file(tmp_path, fory.dumps([Point(1, 2.0)]))
    assert proc.returncode == 3
    assert lines_matching(out, r"layout: code 0: the declared dataclass fields  \(schema hash 0x[0-9a-f]{8}")
    assert "does not say how many fields" in out


# ---- inspect: malformed payloads --------------------------------------------------------------
GOOD = pyfory.Fory(ref=True).dumps({"key": [1, "two", 3.0], "other": ("a", "a")})


H = GOOD[:1]             # the header byte 0x51 (F_REF): the value starts at offset 1


@pytest.mark.parametrize("name, data, offset, reason", [
    ("truncated", GOOD[:-3], None, "truncated"),
    ("header only", H, 1, "truncated: the payload ends where a value tag was expected"),
    ("empty", b"", 0, "truncated: empty payload: no value"),
    ("pickle data", b"\x80\x04\x95" + GOOD[1:], 0, "invalid tag 0x80"),
    ("version 2 payload", b"\xfd\x59\x02\x03" + GOOD[1:], 2, "payload has pyfory format version 2"),
    ("version 1 payload", b"\xfd\x59\x01\x02\x00", 2, "payload has pyfory format version 1"),
    ("later header byte", b"\x58" + GOOD[1:], 0, "header byte 0x58 is not one of format version 3"),
    ("old compatible flag", b"\x53" + GOOD[1:], 0, "written by a later version?"),
    ("unknown tag 0x18", H + b"\x18", 1, "unknown value tag 24 (0x18)"),
    ("unknown tag 0x7f", H + b"\x21\x7f", 2, "unknown value tag 127"),
    ("unknown tag 0x9f", H + b"\x9f", 1, "invalid tag 0x9f"),
    ("header byte as a value", H + b"\x21\x51", 2, "range of the payload header byte, never a value"),
    ("discard bit on a list", H + b"\x88\x00", 1, "invalid tag 0x88"),
    ("dangling reference", H + b"\x21\x0f\x05", 2, "reference to object #5 but only 1 seen"),
    ("dangling string", H + b"\x06\x0b", 2, "reference to string #2 but only 0 seen"),
    ("dangling type", H + b"\x10\x05", 2, "reference to type #2 not yet seen"),
    ("huge count", H + b"\x08\xff\xff\xff\x0f\x00", 2, "exceeds what the remaining"),
    ("bad kind", H + b"\x0b\x01\x03\x02", 3, "bad element kind 3 for a set"),
    ("trailing bytes", GOOD + b"\x00\x00", len(GOOD), "2 unexpected byte(s) after the value"),
    ("trailing after a fix int", b"\xd1\x00", 1, "1 unexpected byte(s) after the value"),
    ("narrow UCS-2", H + b"\x06\x11\xe9\x00", 2, "marked UCS-2 has no character above U+00FF"),
    ("odd UCS-2", H + b"\x06\x09\xe9", 2, "marked UCS-2 has an odd 1 bytes"),
    ("bad utf-8", H + b"\x06\x0a\xff", 2, "marked UTF-8 is not"),
    ("long varint", H + b"\x03" + b"\xff" * 10, 2, "varint too long"),
    # the new tags of format version 3
    ("truncated fix string", H + b"\xa5abc", 1, "truncated: a short string (tag 0xa5) of 5 byte(s), 3 left"),
    ("truncated fix string, no header", b"\x22\xd1\xa5ab", 2, "a short string (tag 0xa5) of 5 byte(s), 2 left"),
    ("truncated fix list", H + b"\x23\xd1\xd2", 4, "the payload ends where a value tag was expected"),
    ("truncated fix tuple", b"\x32\xd1", 2, "the payload ends where a value tag was expected"),
    ("fix dict key: dangling string", H + b"\x41\x03\xd1", 2, "reference to string #0 but only 0 seen"),
    ("fix dict key: a tagged int", b"\x41\xd1\x02\xd1", 1, "truncated: a dict key of 42 byte(s), 1 left"),
    ("fix dict key: bad utf-8", b"\x41\x0a\xff\xd1", 1, "a dict key marked UTF-8 is not"),
    ("fix dict without its value", b"\x41\x08a", 3, "the payload ends where a value tag was expected"),
    ("str dict count", H + b"\x15\x05\x0c\x61\x02", 2, "dict length 5 exceeds what the remaining 3 byte(s)"),
    ("str dict of floats, truncated", H + b"\x16\x01\x0c\x61\x00\x00", 5, "a float needs 8 byte(s), 2 left"),
    ("str dict of strs, bad value", H + b"\x17\x01\x08a\x07", 5, "reference to string #1 but only 0 seen"),
])
def test_malformed_payloads(tmp_path, name, data, offset, reason):
    proc, out, err = inspect_file(tmp_path, data)
    assert proc.returncode == 1, (name, out, err)
    assert_no_traceback(out, err)
    match = re.search(r"malformed payload: offset (\d+): (.*)", err)
    assert match, err
    if offset is not None:
        assert int(match.group(1)) == offset, (name, err)
    assert reason in match.group(2), (name, err)
    assert f"ERROR at offset {match.group(1)}: " in out


def test_truncated_payload_shows_the_tree_up_to_the_break(tmp_path):
    proc, out, err = inspect_file(tmp_path, GOOD[:-3])
    assert proc.returncode == 1
    assert lines_matching(out, r"^\s+1  dict len=2 kind=str:any  =obj#0$")
    assert lines_matching(out, r"^\s+2    'key': list len=3 kind=any  =obj#1  \(key: str#0 new\)$")
    assert lines_matching(out, r"\[1\]: str  'two'")
    assert lines_matching(out, r"ERROR: truncated")
    report = inspect(GOOD[:-3])
    assert report["status"] == "error" and report["error"]["offset"] <= len(GOOD) - 3


def test_every_truncation_fails_cleanly(tmp_path):
    fn, Local = local_things()
    data = pyfory.Fory(ref=True, strict=False).dumps([fn, Local(), {"k": b"v"}])
    for cut in range(len(data)):
        report = inspect(data[:cut])
        assert report["status"] == "error", cut
        assert 0 <= report["error"]["offset"] <= cut, (cut, report["error"])
        render_text(report)
    # through the command line, for a few cuts
    for cut in (2, 5, len(data) // 2, len(data) - 1):
        proc, out, err = inspect_file(tmp_path, data[:cut], "--json")
        assert proc.returncode == 1
        assert_no_traceback(out, err)
        assert json.loads(out)["status"] == "error"


def test_unreadable_file():
    proc = run_cli("inspect", "/nonexistent/payload.bin")
    assert proc.returncode == 2
    assert b"cannot read /nonexistent/payload.bin" in proc.stderr
    assert_no_traceback(proc.stderr.decode())


def test_inspect_never_imports_or_runs_payload_code(tmp_path):
    """A payload naming a module that would leave a marker when imported, and a reduce
    call of os.system: inspect shows both and runs neither."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_module_xyz.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n"
                                                 "class Thing:\n    pass\n")
    boom = tmp_path / "boom.txt"

    class Call:
        def __reduce__(self):
            return (os.system, (f"touch {boom}",))

    sys.path.insert(0, str(tmp_path))
    try:
        import evil_module_xyz  # noqa: F401  (to write the payload)

        marker.unlink()
        data = pyfory.Fory(ref=True, strict=False).dumps([evil_module_xyz.Thing(), Call()])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("evil_module_xyz", None)
    path = tmp_path / "evil.bin"
    path.write_bytes(data)
    proc = run_cli("inspect", str(path), cwd=str(tmp_path), extra_path=str(tmp_path))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "evil_module_xyz.Thing (by reference, attribute-layout)" in out
    assert lines_matching(out, r"module: str  '(posix|os|nt)'") and lines_matching(out, r"qualname: str  'system'")
    assert not marker.exists() and not boom.exists()


def test_deep_nesting():
    deep = []
    for _ in range(1500):
        deep = [deep]
    data = pyfory.Fory(max_depth=2000).dumps(deep)
    proc = run_cli("inspect", "--json", "-", input=data)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.rstrip().endswith(b'"status":"ok"}')
    report = inspect(data)          # in-process, at the default recursion limit: no exception
    assert report["status"] in ("ok", "error")


# ---- the decoder in-process ---------------------------------------------------------------------
CORPUS = corpus()


@pytest.mark.parametrize("name, data", CORPUS, ids=[n for n, _ in CORPUS])
def test_corpus_decodes_completely(name, data):
    report = inspect(data)
    assert report["status"] == "ok", (name, report["error"])
    (payload,) = report["payloads"]
    assert payload["root"]["end"] == len(data)
    text = render_text(report)
    assert "ERROR" not in text and "OPAQUE" not in text
    json.loads(to_json(report))


def _loads_ok(data) -> bool:
    try:
        pyfory.Fory(ref=True, strict=False).loads(data, buffers=[b"\0" * 70000, b"abc", b"\0" * 12, b"\0" * 4])
        return True
    except Exception:
        return False


def _check_inspect(data):
    report = inspect(data)
    assert report["status"] in ("ok", "opaque", "error")
    if report["status"] != "ok":
        assert 0 <= report["error"]["offset"] <= len(data)
        assert "internal inspector error" not in report["error"]["reason"]
    render_text(report)
    to_json(report)
    return report


def test_mutated_payloads_never_raise():
    rng = random.Random(10)
    checked = 0
    for name, data in CORPUS:
        for _ in range(150):
            b = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(b))
                op = rng.random()
                if op < 0.6:
                    b[i] = rng.randrange(256)
                elif op < 0.8:
                    del b[i]
                else:
                    b.insert(i, rng.randrange(256))
            report = _check_inspect(bytes(b))
            checked += 1
            # whatever the reader loads, the inspector decodes (only names and sizes it
            # cannot check make the reverse untrue)
            if report["status"] == "error" and name not in ("numpy", "numpy_oob") and _loads_ok(bytes(b)):
                raise AssertionError(f"{name}: pyfory loads {bytes(b).hex()} but inspect says {report['error']}")
    assert checked == 150 * len(CORPUS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.integers(0, 10**6))
def test_hypothesis_mutations_never_raise(item, flips, cut):
    data = bytearray(item[1])
    for pos, byte in flips:
        data[pos % len(data)] = byte
    _check_inspect(bytes(data))
    _check_inspect(bytes(data[:cut % (len(data) + 1)]))


def test_dtype_strings_with_latin1_digits_are_not_dtypes():
    # strings of the 1-byte kind may be Latin-1 (format 2): '¹' passes str.isdigit but
    # not int(); found by test_hypothesis_mutations_never_raise
    from pyfory.inspector import _dtype_info
    assert _dtype_info("<i\xb9") is None and _dtype_info("<U\xb2[ns]") is None
    assert _dtype_info("<i4")["itemsize"] == 4


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(tail):
    _check_inspect(b"\x51" + tail)
    _check_inspect(tail)
    assert inspect(object())["status"] == "error"      # not even bytes


def test_internal_type_table_matches_the_resolver():
    """The inspector's copy of the internal type ids (it cannot ask the resolver while
    decoding) must follow resolver.py, objects.stdlib_types and functions.function_types."""
    fory = pyfory.Fory()
    names = []
    # display names: pathlib's classes live in pathlib._local since 3.13, and 3.9 has a
    # stand-in for dataclasses' KW_ONLY type (same ids on the wire)
    aliases = {"pyfory._compat._NoKwOnlyType": "dataclasses._KW_ONLY_TYPE"}
    for info in fory.resolver._by_internal_id:
        cls = info.cls
        name = f"{cls.__module__}.{cls.__qualname__}".replace("pathlib._local.", "pathlib.")
        names.append(aliases.get(name, name))
    assert names == inspector.INTERNAL_TYPE_NAMES[:len(names)]
    assert len(names) == len(inspector.INTERNAL_TYPE_NAMES)
    from pyfory import arrays

    assert len(arrays.OPTIONAL_TYPES) == len(inspector.OPTIONAL_TYPE_NAMES)
    class_only = {i for i, info in enumerate(fory.resolver._by_internal_id) if info.serializer is None}
    assert class_only == set(inspector.CLASS_ONLY_IDS)


# ---- bench -----------------------------------------------------------------------------------
def test_bench_quick(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = run_cli("bench", "--quick", "-k", "small_dict", "-k", "lambda", "--repeats", "3",
                   "--min-time", "0.001", "--json", str(out_json))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert out.startswith(f"pyfory {pyfory.__version__} vs pickle (protocol 5)")
    header = lines_matching(out, r"^workload\s+ref\s+vs\s+dumps ours\s+dumps base\s+x dumps.*\sspread$")
    assert header
    rows = lines_matching(out, r"^small_dict\s+(False|True)\s+pickle\s+.*\d\.\d\dx.*\s\d+%$")
    assert len(rows) == 2
    assert lines_matching(out, r"^geomean \(ref=False, n=1\)\s+pickle")
    assert lines_matching(out, r"^geomean \(ref=True, n=1\)\s+pickle")
    raw = json.loads(out_json.read_text())
    assert {r["workload"] for r in raw["rows"]} >= {"small_dict"}
    assert all(r["ours"]["size"] > 0 and len(r["ours"]["dumps_times"]) == 3 for r in raw["rows"])
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return
    assert lines_matching(out, r"^lambda_fn\s+True\s+cloudpickle")


def test_bench_unknown_workload():
    proc = run_cli("bench", "-k", "no-such-workload")
    assert proc.returncode == 2
    assert b"no workload matches" in proc.stderr


def test_bench_plain_data_baselines(tmp_path):
    # issue 21: msgspec, orjson and msgpack, where installed, on the plain-data workloads,
    # with ref=False only (they keep no shared references), in the same alternating runs
    from pyfory import quickbench

    installed = [n for n in quickbench.PLAIN_DATA if n in quickbench.available_baselines()]
    if not installed:
        pytest.skip("none of msgspec, orjson, msgpack is installed")
    out_json = tmp_path / "bench.json"
    status = quickbench.run(patterns=["nested_lists_1k", "dataclasses_5k"], repeats=2, min_time=0.001,
                            json_path=str(out_json), out=open(os.devnull, "w"))
    assert status == 0
    rows = json.loads(out_json.read_text())["rows"]
    plain = {(r["workload"], r["ref"], r["baseline"]) for r in rows if r["baseline"] in quickbench.PLAIN_DATA}
    assert plain == {("nested_lists_1k", False, n) for n in installed}
    for r in rows:
        assert len(r["ours"]["dumps_times"]) == len(r["base"]["loads_times"]) == 2
        assert r["ratio_dumps"] > 0 and r["base"]["size"] > 0
