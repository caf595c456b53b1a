"""A pure-Python decoder of the pyfory wire format, for people debugging payloads.

``inspect(data)`` walks a payload (or a stream of ``Fory.dump`` frames) byte by byte and
returns a JSON-ready report: the header, then a tree of nodes, one per value, with its
byte offset, kind, type name and how the class is named (internal id, registered id or
name, by reference, by value), lengths, the object ids it takes and the back-references
to them, string-table and type-table hits, out-of-band buffer slots, and the class
schemas (attribute layouts, by-value class skeletons) written in the payload.
``render_text(report)`` prints the same as an indented tree; ``python -m pyfory inspect``
is the command line.

Safety: this module only reads bytes. It never imports a module named by the payload,
never calls anything the payload names, and never unmarshals code: code objects are
inflated with zlib (bounded) and walked by a small marshal reader written here, which
builds nothing but strings, numbers and tuples. It does not import numpy either.

Robustness: a malformed payload is decoded up to the point where it breaks; the report
then carries the offset and the reason (``status`` "error"). Data that the format does
not describe -- the bytes of a user's custom ``Serializer``, a ``compatible=False``
dataclass instance whose field count is not written, ... -- is shown as an opaque node
with a note, and decoding of that payload stops there (``status`` "opaque").
``inspect`` never raises (whatever the input); the wire format is docs/format.md.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
import zlib
from typing import Any, Dict, List, Optional

__all__ = ["inspect", "inspect_payload", "render_text", "to_json", "INTERNAL_TYPE_NAMES", "FORMAT_VERSION"]

FORMAT_VERSION = 3
# the payload's first byte when it has flags: HEADER_BASE | flags (docs/format.md section 2);
# a payload without flags has no header byte. Versions 1 and 2 began with OLD_MAGIC, version.
HEADER_BASE = 0x50
F_REF, F_OOB = 1, 4
FLAG_NAMES = ((F_REF, "REF"), (F_OOB, "OOB"))
OLD_MAGIC = b"\xfd\x59"

# value tags (docs/format.md section 3)
T_NONE, T_TRUE, T_FALSE, T_INT, T_BIGINT, T_FLOAT, T_STR, T_BYTES = range(8)
T_LIST, T_TUPLE, T_DICT, T_SET, T_FROZENSET, T_BYTEARRAY, T_COMPLEX = range(8, 15)
T_REF, T_OBJECT, T_TYPE, T_BUFFER, T_FLOAT32 = 15, 16, 17, 18, 19
T_SDICT = 20                # 20..23: a dict with str keys, the value kind in the tag
T_UNSUPPORTED = 0x7E
T_DISCARD = 0x80
# tags that carry a small value or count themselves (format version 3): n = tag - base
FIX_LIST, FIX_TUPLE, FIX_DICT, FIX_MAX = 0x20, 0x30, 0x40, 15
FIX_STR, FIX_INT, FIX_INT_ZERO = 0xA0, 0xC0, 0xD0
TAG_NAMES = {
    T_NONE: "none", T_TRUE: "bool", T_FALSE: "bool", T_INT: "int", T_BIGINT: "int", T_FLOAT: "float",
    T_STR: "str", T_BYTES: "bytes", T_LIST: "list", T_TUPLE: "tuple", T_DICT: "dict", T_SET: "set",
    T_FROZENSET: "frozenset", T_BYTEARRAY: "bytearray", T_COMPLEX: "complex", T_REF: "ref",
    T_OBJECT: "object", T_TYPE: "type", T_BUFFER: "buffer", T_FLOAT32: "float",
    T_UNSUPPORTED: "unsupported",
}
# element kinds of packed containers
K_ANY, K_INT, K_FLOAT, K_STR, K_OBJECT = 0, 3, 5, 6, 16
KIND_NAMES = {K_ANY: "any", K_INT: "int", K_FLOAT: "float", K_STR: "str", K_OBJECT: "object"}
SDICT_KINDS = (K_ANY, K_INT, K_FLOAT, K_STR)     # value kind of tag T_SDICT + i
# type descriptor kinds
D_INTERNAL, D_USER_ID, D_NAME, D_USER_NAME, D_BY_VALUE = range(5)
NAMING = {D_INTERNAL: "internal", D_USER_ID: "registered id", D_NAME: "by reference",
          D_USER_NAME: "registered name", D_BY_VALUE: "by value"}
# wire kinds: which serializer writes the instances
W_CUSTOM, W_OBJECT, W_REDUCE, W_ENUM, W_NAMEDTUPLE, W_ENUM_NAME, W_CLASS_ONLY = 0, 1, 2, 3, 4, 5, 255
WIRE_NAMES = {W_CUSTOM: "custom", W_OBJECT: "attribute-layout", W_REDUCE: "reduce", W_ENUM: "enum",
              W_NAMEDTUPLE: "namedtuple", W_ENUM_NAME: "enum-by-name", W_CLASS_ONLY: "class-only"}
# buffer kinds
BUFFER_KINDS = {0: "bytes", 1: "bytearray", 2: "memoryview", 3: "PickleBuffer"}

MAX_U63 = (1 << 63) - 1
PREVIEW_ITEMS = 8           # packed items shown inline in text
STR_PREVIEW = 256           # characters of a string kept in the report
BYTES_PREVIEW = 32          # bytes of a binary value kept (hex) in the report
MAX_DEPTH = 2000            # nesting the inspector follows (pyfory's own cap is 2000)
MAX_CODE_SIZE = 1 << 24     # inflated marshal data the inspector walks, per code object
MAX_CODE_TOTAL = 1 << 28    # ... and per payload

# ---- internal type ids (resolver.py, objects.stdlib_types, functions.function_types) ----
INTERNAL_TYPE_NAMES = [
    "builtins.NoneType", "builtins.bool", "builtins.int", "builtins.float", "builtins.str",
    "builtins.bytes", "builtins.list", "builtins.tuple", "builtins.dict", "builtins.set",
    "builtins.frozenset", "builtins.bytearray", "builtins.complex", "builtins.type", "builtins.object",
    "builtins.range", "builtins.slice", "builtins.ellipsis", "builtins.NotImplementedType",
    "datetime.date", "datetime.time", "datetime.datetime", "datetime.timedelta", "datetime.timezone",
    "decimal.Decimal", "fractions.Fraction", "uuid.UUID", "datetime.tzinfo", "zoneinfo.ZoneInfo",
    "collections.OrderedDict", "collections.defaultdict", "collections.deque", "collections.Counter",
    "collections.ChainMap", "types.SimpleNamespace", "re.Pattern", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath", "pathlib.PosixPath", "pathlib.WindowsPath", "builtins.module",
    "builtins.builtin_function_or_method", "builtins.method_descriptor", "builtins.wrapper_descriptor",
    "builtins.method-wrapper", "builtins.classmethod_descriptor", "functools.partial",
    "operator.itemgetter", "operator.attrgetter", "operator.methodcaller", "array.array",
    "builtins.function", "builtins.method", "builtins.code", "builtins.cell", "builtins.classmethod",
    "builtins.staticmethod", "builtins.property", "functools.cached_property", "builtins.mappingproxy",
    "typing.TypeVar", "dataclasses._MISSING_TYPE", "dataclasses._HAS_DEFAULT_FACTORY_CLASS",
    "dataclasses._FIELD_BASE", "dataclasses._KW_ONLY_TYPE",
    "builtins.dict_keys", "builtins.dict_values", "builtins.dict_items", "builtins.odict_keys",
    "builtins.odict_values", "builtins.odict_items", "_weakrefset.WeakSet",
    "weakref.WeakKeyDictionary", "weakref.WeakValueDictionary", "_io.TextIOWrapper",
    "_io.BufferedReader", "_io.BufferedRandom", "_io.FileIO", "builtins.getset_descriptor",
    "builtins.member_descriptor", "abc.abstractclassmethod", "abc.abstractstaticmethod",
    "abc.abstractproperty",
]
# ids whose class has no instance serializer (the class travels, never an instance)
CLASS_ONLY_IDS = frozenset(range(14))
# ids that Fory(strict=True) refuses to read
STRICT_REFUSED_IDS = frozenset(range(40, 50)) | frozenset(range(51, 59)) | {60} | frozenset(range(65, 83))
OPTIONAL_ID_BASE = 256
_SCALAR_CHARS = "?bBhHiIlLqQefdgFDGSUVMm"
_DTYPE_CHARS = _SCALAR_CHARS + "O"
_SCALAR_NAMES = {
    "?": "bool", "b": "int8", "B": "uint8", "h": "int16", "H": "uint16", "i": "int32", "I": "uint32",
    "l": "long", "L": "ulong", "q": "longlong", "Q": "ulonglong", "e": "float16", "f": "float32",
    "d": "float64", "g": "longdouble", "F": "complex64", "D": "complex128", "G": "clongdouble",
    "S": "bytes_", "U": "str_", "V": "void", "M": "datetime64", "m": "timedelta64", "O": "object",
}
OPTIONAL_TYPE_NAMES = (["numpy.ndarray", "numpy.dtype"]
                       + [f"numpy.{_SCALAR_NAMES[c]} (scalar '{c}')" for c in _SCALAR_CHARS]
                       + [f"numpy dtype class '{c}'" for c in _DTYPE_CHARS]
                       + ["numpy.dtypes.StringDType"])


def internal_type_name(type_id: int) -> str:
    if 0 <= type_id < len(INTERNAL_TYPE_NAMES):
        return INTERNAL_TYPE_NAMES[type_id]
    if 0 <= type_id - OPTIONAL_ID_BASE < len(OPTIONAL_TYPE_NAMES):
        return OPTIONAL_TYPE_NAMES[type_id - OPTIONAL_ID_BASE]
    return f"<unknown internal type {type_id}>"


# sizes of numpy's dtype characters on this platform (no numpy import)
def _longdouble_size() -> int:
    try:
        import ctypes

        return ctypes.sizeof(ctypes.c_longdouble)
    except Exception:  # pragma: no cover - ctypes missing
        return 16


_CHAR_SIZES = {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": struct.calcsize("l"),
               "L": struct.calcsize("L"), "q": 8, "Q": 8, "e": 2, "f": 4, "d": 8, "F": 8,
               "D": 16, "S": 0, "U": 0, "V": 0, "M": 8, "m": 8, "O": 8, "p": 8, "P": 8,
               "n": 8, "N": 8, "a": 0, "c": 1}
_CHAR_KIND = {"?": "b", "b": "i", "h": "i", "i": "i", "l": "i", "q": "i", "p": "i", "n": "i",
              "B": "u", "H": "u", "I": "u", "L": "u", "Q": "u", "P": "u", "N": "u",
              "e": "f", "f": "f", "d": "f", "g": "f", "F": "c", "D": "c", "G": "c",
              "S": "S", "a": "S", "c": "S", "U": "U", "V": "V", "M": "M", "m": "m", "O": "O", "T": "T"}
_PLAIN_KINDS = frozenset("biufcmMSUV")
_CASTABLE = frozenset("bBhHiIlLqQnNfd?cePe")     # memoryview formats the reader rebuilds (_core.pyx)

# bytecode magic numbers (importlib.util.MAGIC_NUMBER, little-endian u16) -> Python version
_MAGIC_RANGES = [(3413, "3.8"), (3425, "3.9"), (3439, "3.10"), (3495, "3.11"), (3531, "3.12"),
                 (3571, "3.13"), (3627, "3.14")]


def _python_of_magic(magic: int) -> str:
    for number, version in _MAGIC_RANGES:
        if magic <= number:
            return version
    return "newer than 3.14"


CODE_MAGIC_HERE = importlib.util.MAGIC_NUMBER[:2]


class _Stop(Exception):
    """Decoding of this payload cannot go on: malformed data (or an opaque region)."""

    def __init__(self, offset: int, reason: str, opaque: bool = False):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.opaque = opaque


class Node:
    """One element of the tree. Attributes left None are not reported."""

    __slots__ = ("offset", "end", "kind", "label", "type", "naming", "wire_kind", "value", "length",
                 "items", "elem_kind", "obj_id", "ref", "str_index", "str_ref", "type_index", "type_ref",
                 "oob_slot", "note", "children", "opaque", "error", "fields", "key", "tag")

    def __init__(self, offset: int, kind: str, label: Optional[str] = None):
        for name in self.__slots__:
            setattr(self, name, None)
        self.offset = offset
        self.kind = kind
        self.label = label
        self.children = []

    def add_note(self, text: str) -> None:
        self.note = text if self.note is None else f"{self.note}; {text}"

    def to_dict(self) -> Dict[str, Any]:
        """The node and its subtree as plain dicts (iterative: trees may be deep)."""
        def one(node):
            d = {}
            for name in node.__slots__:
                v = getattr(node, name)
                if v is not None and name != "children":
                    d[name] = v
            return d

        root = one(self)
        stack = [(self, root)]
        while stack:
            node, d = stack.pop()
            if node.children:
                kids = [one(c) for c in node.children]
                d["children"] = kids
                stack.extend(zip(node.children, kids))
        return root


class _TypeEntry:
    """One entry of the payload's type table."""

    __slots__ = ("index", "kind", "wire", "internal_id", "name", "module", "qualname", "user_id",
                 "user_name", "layouts", "schema_checked", "offset", "tracker")

    def __init__(self, index: int, kind: int, offset: int):
        self.index = index
        self.kind = kind
        self.offset = offset
        self.wire: Optional[int] = None
        self.internal_id: Optional[int] = None
        self.name = "?"
        self.module = self.qualname = self.user_name = self.tracker = None
        self.user_id: Optional[int] = None
        self.layouts: List[tuple] = []
        self.schema_checked = False

    @property
    def naming(self) -> str:
        return NAMING.get(self.kind, "?")

    def describe(self) -> Dict[str, Any]:
        d = {"index": self.index, "name": self.name, "naming": self.naming, "offset": self.offset}
        if self.wire is not None:
            d["wire_kind"] = WIRE_NAMES.get(self.wire, f"unknown ({self.wire})")
        if self.internal_id is not None:
            d["internal_id"] = self.internal_id
        if self.user_id is not None:
            d["user_id"] = self.user_id
        if self.user_name is not None:
            d["user_name"] = self.user_name
        if self.tracker is not None:
            d["tracker_id"] = self.tracker
        if self.layouts:
            d["layouts"] = [list(lay) for lay in self.layouts]
        return d


def _short(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _float_value(x: float):
    return x if math.isfinite(x) else repr(x)


# ---------------------------------------------------------------------------------------
class _Decoder:
    def __init__(self, data: bytes, base: int, max_items: int):
        self.data = data
        self.base = base            # offset of this payload in the input (streams)
        self.size = len(data)
        self.pos = 0
        self.max_items = max_items
        self.ref = False
        self.oob = False
        self.strings: List[str] = []
        self.types: List[_TypeEntry] = []
        self.objects: List[str] = []
        self.oob_slots: List[int] = []
        self.codes: List[Dict[str, Any]] = []
        self.n_globals = 0
        self.n_cells = 0
        self.stack: List[Node] = []
        self.depth = 0
        self.needs: Dict[str, List[str]] = {}
        self.warnings: List[str] = []
        self.code_magic = 0
        self.code_budget = MAX_CODE_TOTAL

    # ---- bookkeeping --------------------------------------------------------------------
    def off(self, pos: Optional[int] = None) -> int:
        return self.base + (self.pos if pos is None else pos)

    def need(self, what: str, item: str) -> None:
        lst = self.needs.setdefault(what, [])
        if item not in lst and len(lst) < 200:
            lst.append(item)

    def fail(self, reason: str, pos: Optional[int] = None):
        raise _Stop(self.off(pos), reason)

    def opaque(self, parent: Node, reason: str, label: Optional[str] = None):
        node = Node(self.off(), "opaque", label)
        node.opaque = True
        node.note = reason
        node.length = self.size - self.pos
        node.value = bytes(self.data[self.pos:self.pos + BYTES_PREVIEW]).hex()
        parent.children.append(node)
        raise _Stop(self.off(), reason, opaque=True)

    def open(self, parent: Optional[Node], kind: str, label: Optional[str] = None, pos=None) -> Node:
        node = Node(self.off(pos), kind, label)
        if parent is not None:
            parent.children.append(node)
        self.stack.append(node)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        return node

    def close(self, node: Node) -> Node:
        node.end = self.off()
        self.depth -= 1
        if self.stack and self.stack[-1] is node:
            self.stack.pop()
        return node

    def new_object(self, node: Node, desc: str) -> None:
        node.obj_id = len(self.objects)
        self.objects.append(f"{desc} @{node.offset}")

    # ---- primitives ---------------------------------------------------------------------
    def remaining(self) -> int:
        return self.size - self.pos

    def u8(self, what: str = "a byte") -> int:
        if self.pos >= self.size:
            self.fail(f"truncated: the payload ends where {what} was expected")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            self.fail(f"truncated: {what} needs {n} byte(s), {self.size - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(b)

    def varuint(self, what: str = "a varuint") -> int:
        start = self.pos
        result = 0
        for i in range(10):
            if self.pos >= self.size:
                self.fail(f"truncated: the payload ends inside {what}", start)
            b = self.data[self.pos]
            self.pos += 1
            if i == 9 and b > 1:
                self.fail(f"varint too long ({what})", start)
            result |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return result
        return result  # pragma: no cover - unreachable

    def varint(self, what: str = "a varint") -> int:
        u = self.varuint(what)
        return (u >> 1) ^ -(u & 1)

    def length(self, what: str) -> int:
        start = self.pos
        n = self.varuint(what)
        if n > MAX_U63:
            self.fail(f"{what} {n} is larger than 2^63-1", start)
        return n

    def count(self, what: str, min_item_size: int = 1) -> int:
        start = self.pos
        n = self.length(what)
        if n > self.remaining() or n * min_item_size > self.remaining():
            self.fail(f"truncated: {what} {n} exceeds what the remaining {self.remaining()} byte(s) "
                      "can hold", start)
        return n

    def f64(self) -> float:
        return struct.unpack("<d", self.take(8, "a float"))[0]

    # ---- strings ------------------------------------------------------------------------
    def string(self, node: Node, table: bool = True, what: str = "a string") -> str:
        """A str-ref (table=True) or a plain string; fills node's string annotations."""
        start = self.pos
        h = self.varuint(f"{what} header")
        if (h & 3) == 3:
            if not table:
                self.fail(f"a string back-reference where a plain string is expected ({what})", start)
            idx = h >> 2
            if idx >= len(self.strings):
                self.fail(f"reference to string #{idx} but only {len(self.strings)} seen", start)
            node.str_ref = idx
            return self.strings[idx]
        if (h & 4) and not table:
            self.fail(f"a registered string where a plain string is expected ({what})", start)
        n = h >> 3
        if n > self.remaining():
            self.fail(f"truncated: {what} of {n} byte(s), {self.remaining()} left", start)
        raw = self.take(n, what)
        enc = h & 3
        try:
            if enc == 0:
                s = raw.decode("latin-1")
            elif enc == 1:
                if n & 1:
                    self.fail(f"{what} marked UCS-2 has an odd {n} bytes", start)
                units = struct.unpack(f"<{n // 2}H", raw)
                if max(units, default=0) < 0x100:
                    # CPython's 2-byte kind needs a character above U+00FF
                    self.fail(f"{what} marked UCS-2 has no character above U+00FF", start)
                # each unit one character (two surrogates stay two, as in CPython)
                s = "".join(map(chr, units))
            else:
                s = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            self.fail(f"{what} marked {('Latin-1', 'UCS-2', 'UTF-8')[enc]} is not: {e.reason}", start)
        if h & 4:
            node.str_index = len(self.strings)
            self.strings.append(s)
        return s

    def name(self, parent: Node, label: str) -> str:
        """A str-ref name as a leaf node (names in descriptors, layouts, reduce globals...)."""
        node = self.open(parent, "str", label)
        s = self.string(node, what=label)
        node.value = s if len(s) <= STR_PREVIEW else s[:STR_PREVIEW]
        self.close(node)
        return s

    def plain_string(self, parent: Node, label: str) -> str:
        node = self.open(parent, "str", label)
        s = self.string(node, table=False, what=label)
        node.value = s if len(s) <= STR_PREVIEW else s[:STR_PREVIEW]
        node.add_note("plain string")
        self.close(node)
        return s

    def scalar(self, parent: Node, label: str, kind: str, reader, what: str):
        node = self.open(parent, kind, label)
        v = reader(what)
        node.value = v
        self.close(node)
        return v

    def raw_u8(self, parent: Node, label: str) -> int:
        return self.scalar(parent, label, "u8", self.u8, label)

    # ---- values -------------------------------------------------------------------------
    def value(self, parent: Node, label: Optional[str] = None, key: Optional[Dict[str, Any]] = None) -> Node:
        start = self.pos
        tag_byte = self.u8("a value tag")
        node = self.value_body(parent, label, key, start, tag_byte)
        node.tag = tag_byte
        return node

    def value_body(self, parent: Node, label: Optional[str], key: Optional[Dict[str, Any]], start: int,
                   tag_byte: int) -> Node:
        if tag_byte >= FIX_STR:
            # a small int or a short 1-byte-kind string: the tag carries it
            if tag_byte >= FIX_INT:
                node = self.open(parent, "int", label, start)
                node.value = tag_byte - FIX_INT_ZERO
            else:
                node = self.open(parent, "str", label, start)
                n = tag_byte - FIX_STR
                if n > self.remaining():
                    self.fail(f"truncated: a short string (tag {tag_byte:#04x}) of {n} byte(s), "
                              f"{self.remaining()} left", start)
                s = self.take(n, "a short string").decode("latin-1")
                node.length = n
                node.value = s
            node.key = key
            return self.close(node)
        if FIX_LIST <= tag_byte <= FIX_DICT + FIX_MAX:
            # a small list, tuple or str-keyed dict: the tag carries the count
            n = tag_byte & 15
            if tag_byte >= FIX_DICT:
                node = self.open(parent, "dict", label, start)
                node.key = key
                self.dict_items(node, n, K_STR, K_ANY)
            else:
                tag = T_LIST if tag_byte < FIX_TUPLE else T_TUPLE
                node = self.open(parent, TAG_NAMES[tag], label, start)
                node.key = key
                self.sequence_items(node, tag, n, K_ANY, False)
            return self.close(node)
        discard = bool(tag_byte & T_DISCARD)
        tag = tag_byte & ~T_DISCARD
        node = self.open(parent, TAG_NAMES.get(tag, "dict" if T_SDICT <= tag <= T_SDICT + 3 else "?"), label, start)
        node.key = key
        if discard and tag not in (T_TUPLE, T_FROZENSET, T_OBJECT):
            self.fail(f"invalid tag {tag_byte:#04x} (the discard bit is only valid on tuple, "
                      "frozenset and object)", start)
        if tag == T_NONE:
            node.value = None
            node.type = "None"
        elif tag in (T_TRUE, T_FALSE):
            node.value = tag == T_TRUE
        elif tag == T_INT:
            node.value = self.varint("an int")
        elif tag == T_BIGINT:
            node.value = self.bigint(node)
        elif tag == T_FLOAT:
            node.value = _float_value(self.f64())
        elif tag == T_FLOAT32:
            node.value = _float_value(struct.unpack("<f", self.take(4, "a float32"))[0])
        elif tag == T_COMPLEX:
            re_, im = self.f64(), self.f64()
            node.value = repr(complex(re_, im))
        elif tag == T_STR:
            s = self.string(node, what="a str value")
            node.length = len(s)
            node.value = s if len(s) <= STR_PREVIEW else s[:STR_PREVIEW]
        elif tag in (T_BYTES, T_BYTEARRAY):
            n = self.length("a byte length")
            data = self.take(n, f"{TAG_NAMES[tag]} of {n} byte(s)")
            node.length = n
            node.value = data[:BYTES_PREVIEW].hex()
            if self.ref:
                self.new_object(node, TAG_NAMES[tag])
        elif tag in (T_LIST, T_TUPLE, T_SET, T_FROZENSET):
            self.sequence(node, tag, discard)
        elif tag == T_DICT:
            self.dict_(node)
        elif T_SDICT <= tag <= T_SDICT + 3:
            self.dict_items(node, self.count("dict length", 2), K_STR, SDICT_KINDS[tag - T_SDICT])
        elif tag == T_REF:
            idx = self.length("an object id")
            if idx >= len(self.objects):
                self.fail(f"reference to object #{idx} but only {len(self.objects)} seen", start)
            node.ref = idx
            node.type = self.objects[idx]
        elif tag == T_OBJECT:
            self.object_(node, discard)
        elif tag == T_TYPE:
            entry = self.descriptor(node)
            node.type = entry.name
            node.naming = entry.naming
            if entry.wire is not None:
                node.wire_kind = WIRE_NAMES.get(entry.wire, str(entry.wire))
        elif tag == T_BUFFER:
            self.buffer_value(node)
        elif tag == T_UNSUPPORTED:
            node.add_note("kept out of the payload by unsupported_callback: the reader takes the next "
                          "of loads(..., unsupported_objects=)")
            if self.ref:
                self.new_object(node, "unsupported object")
        elif HEADER_BASE <= tag_byte <= HEADER_BASE + 15:
            self.fail(f"unknown value tag {tag_byte} ({tag_byte:#04x}: the range of the payload header "
                      "byte, never a value)", start)
        else:
            self.fail(f"unknown value tag {tag_byte} ({tag_byte:#04x})", start)
        return self.close(node)

    def bigint(self, node: Node) -> Any:
        n = self.length("a big int byte count")
        raw = self.take(n, f"a big int of {n} byte(s)")
        node.length = n
        if n <= 512:
            return int.from_bytes(raw, "little", signed=True)
        node.add_note(f"{n * 8}-bit integer, value not shown")
        return None

    def packed(self, kind: int, n: int, container: str) -> List[Any]:
        """n packed items of one kind; returns a preview of the first ones."""
        preview = []
        keep = n if self.max_items == 0 else max(PREVIEW_ITEMS, self.max_items)
        if kind == K_FLOAT:
            self.count_check(n, 8)
        dummy = Node(0, "str")
        for i in range(n):
            if kind == K_INT:
                v = self.varint("a packed int")
            elif kind == K_FLOAT:
                v = _float_value(self.f64())
            else:
                v = self.string(dummy, what=f"a packed {container} string")
                if len(v) > STR_PREVIEW:
                    v = v[:STR_PREVIEW]
            if i < keep:
                preview.append(v)
        return preview

    def count_check(self, n: int, size: int) -> None:
        if n * size > self.remaining():
            self.fail(f"truncated: {n} items of {size} bytes exceed the remaining {self.remaining()} byte(s)")

    def sequence(self, node: Node, tag: int, discard: bool) -> None:
        name = TAG_NAMES[tag]
        n = self.count(f"{name} length")
        kind = K_ANY
        if n:
            kpos = self.pos
            kind = self.u8("an element kind")
            allowed = (K_ANY, K_INT, K_FLOAT, K_STR, K_OBJECT) if tag in (T_LIST, T_TUPLE) else (K_ANY, K_STR)
            if kind not in allowed:
                self.fail(f"bad element kind {kind} for a {name}", kpos)
        self.sequence_items(node, tag, n, kind, discard)

    def sequence_items(self, node: Node, tag: int, n: int, kind: int, discard: bool) -> None:
        """The n items of a list, tuple, set or frozenset (count and kind read by the caller,
        or given by the tag)."""
        name = TAG_NAMES[tag]
        node.type = name
        node.length = n
        pre = tag in (T_LIST, T_SET)
        if self.ref and pre:
            self.new_object(node, name)
        if n:
            node.elem_kind = KIND_NAMES[kind]
            label_of = (lambda i: f"[{i}]") if tag in (T_LIST, T_TUPLE) else (lambda i: "item")
            if kind == K_ANY:
                self.entries(node, n, lambda i: self.value(node, label_of(i)))
            elif kind == K_OBJECT:
                self.same_class_items(node, n, label_of)
            elif kind == K_STR:
                self.entries(node, n, lambda i: self.leaf(node, label_of(i), K_STR, name))
            else:
                node.items = self.packed(kind, n, name)
        if discard:
            node.add_note("discarded copy: the value is the back-reference that follows")
            self.value(node, "result")
            return
        if self.ref and not pre:
            self.new_object(node, name)

    def entries(self, node: Node, n: int, one) -> None:
        """n entries, each read by one(i) (which appends its nodes to node.children);
        entries past --max-items are decoded, then summarized by one "elided" node."""
        limit = self.max_items
        elided = None
        for i in range(n):
            first = len(node.children)
            start = self.pos
            one(i)
            if limit and i >= limit:
                del node.children[first:]
                if elided is None:
                    elided = Node(self.off(start), "elided")
                    elided.length = 0
                    node.children.append(elided)
                elided.length += 1
                elided.end = self.off()
        if elided is not None:
            elided.note = f"{elided.length} more item(s) not shown (--max-items)"

    def children(self, node: Node, n: int, label_of) -> None:
        self.entries(node, n, lambda i: self.value(node, label_of(i)))

    def leaf(self, parent: Node, label: str, kind: int, container: str,
             key: Optional[Dict[str, Any]] = None) -> Node:
        """A packed item (no tag): K_STR, K_INT or K_FLOAT."""
        node = self.open(parent, KIND_NAMES[kind], label)
        node.key = key
        if kind == K_STR:
            v = self.string(node, what=f"a packed {container} string")
            node.length = len(v)
            node.value = v if len(v) <= STR_PREVIEW else v[:STR_PREVIEW]
        elif kind == K_INT:
            node.value = self.varint("a packed int")
        else:
            node.value = _float_value(self.f64())
        return self.close(node)

    def dict_(self, node: Node) -> None:
        n = self.count("dict length", 2)
        kk = vk = K_ANY
        if n:
            kpos = self.pos
            kinds = self.u8("dict kinds")
            kk, vk = kinds & 15, kinds >> 4
            if kk not in (K_ANY, K_STR) or vk not in (K_ANY, K_INT, K_FLOAT, K_STR):
                self.fail(f"bad dict kinds {kinds:#04x}", kpos)
        self.dict_items(node, n, kk, vk)

    def dict_items(self, node: Node, n: int, kk: int, vk: int) -> None:
        """The n pairs of a dict (count and kinds read by the caller, or given by the tag)."""
        node.type = "dict"
        node.length = n
        if self.ref:
            self.new_object(node, "dict")
        if not n:
            return
        node.elem_kind = f"{KIND_NAMES[kk]}:{KIND_NAMES[vk]}"

        def one(i):
            key = None
            if kk == K_STR:
                key = self.key_name("a dict key")
                label = _short(key["value"], 40)
            else:
                self.value(node, "key")
                label = "value"
            if vk == K_ANY:
                self.value(node, label, key)
            else:
                self.leaf(node, label, vk, "dict", key)

        self.entries(node, n, one)

    # ---- buffers ------------------------------------------------------------------------
    def buffer_value(self, node: Node) -> None:
        kpos = self.pos
        kind = self.u8("a buffer kind")
        if kind not in BUFFER_KINDS:
            self.fail(f"unknown buffer kind {kind}", kpos)
        node.type = BUFFER_KINDS[kind]
        if kind == 3:
            node.add_note("read-only" if self.u8("a readonly flag") else "writable")
        elif kind == 2:
            fmt = self.string(Node(0, "str"), what="a memoryview format")
            ndim = self.length("a memoryview ndim")
            if ndim > 64:
                self.fail(f"memoryview with {ndim} dimensions", kpos)
            shape = [self.length("a memoryview dimension") for _ in range(ndim)]
            ro = self.u8("a readonly flag")
            node.add_note(f"format {fmt!r}, shape {tuple(shape)}, {'read-only' if ro else 'writable'}")
        bpos = self.pos
        self.buffer_body(node)
        if kind == 2:
            if fmt not in _CASTABLE:
                self.fail(f"bad memoryview layout: format {fmt!r} cannot be rebuilt by memoryview.cast", bpos)
            try:
                itemsize = struct.calcsize(fmt)
            except (struct.error, TypeError):
                itemsize = None
            if itemsize is not None and (fmt != "B" or ndim != 1) and itemsize * math.prod(shape) != node.length:
                self.fail(f"bad memoryview layout: format {fmt!r} and shape {tuple(shape)} need "
                          f"{itemsize * math.prod(shape)} bytes, the buffer has {node.length}", bpos)
        if self.ref:
            self.new_object(node, f"buffer ({node.type})")

    def buffer_body(self, node: Node) -> None:
        start = self.pos
        h = self.varuint("a buffer header")
        n = h >> 1
        node.length = n
        if h & 1:
            node.oob_slot = len(self.oob_slots)
            self.oob_slots.append(n)
            if not self.oob:
                self.warnings.append(f"out-of-band buffer at offset {self.off(start)} but the header "
                                     "has no out-of-band flag")
            return
        if n > self.remaining():
            self.fail(f"truncated: in-band buffer of {n} byte(s), {self.remaining()} left", start)
        node.value = bytes(self.data[self.pos:self.pos + min(n, BYTES_PREVIEW)]).hex()
        self.pos += n

    def buffer_leaf(self, parent: Node, label: str) -> Node:
        node = self.open(parent, "buffer", label)
        self.buffer_body(node)
        return self.close(node)

    # ---- type descriptors ---------------------------------------------------------------
    def descriptor(self, node: Node) -> _TypeEntry:
        start = self.pos
        h = self.varuint("a type descriptor")
        if h & 1:
            idx = h >> 1
            if idx >= len(self.types):
                self.fail(f"reference to type #{idx} not yet seen", start)
            entry = self.types[idx]
            node.type_ref = idx
            return entry
        kind = h >> 1
        if kind > D_BY_VALUE:
            self.fail(f"unknown type descriptor kind {kind}", start)
        d = self.open(node, "descriptor", "class", start)
        entry = _TypeEntry(-1, kind, self.off(start))
        d.naming = entry.naming
        if kind != D_INTERNAL:
            entry.wire = self.u8("a wire kind")
            d.wire_kind = WIRE_NAMES.get(entry.wire, f"unknown ({entry.wire})")
        if kind == D_INTERNAL:
            tid = self.varuint("an internal type id")
            entry.internal_id = tid
            known = tid < len(INTERNAL_TYPE_NAMES) or 0 <= tid - OPTIONAL_ID_BASE < len(OPTIONAL_TYPE_NAMES)
            if not known:
                self.fail(f"unknown internal type id {tid}", start)
            entry.name = internal_type_name(tid)
            d.value = tid
            if tid >= OPTIONAL_ID_BASE:
                self.need("packages", "numpy")
        elif kind == D_USER_ID:
            entry.user_id = self.varuint("a registered type id")
            entry.name = f"<registered id {entry.user_id}>"
            d.value = entry.user_id
            self.need("registrations", f"type_id={entry.user_id}")
        elif kind == D_NAME:
            entry.module = self.name(d, "module")
            entry.qualname = self.name(d, "qualname")
            entry.name = f"{entry.module}.{entry.qualname}"
            self.need("classes by reference", entry.name)
        elif kind == D_USER_NAME:
            entry.user_name = self.name(d, "name")
            entry.name = f"<registered name {entry.user_name!r}>"
            self.need("registrations", f"name={entry.user_name!r}")
        else:
            self.class_skeleton(d, entry)
        entry.index = len(self.types)
        self.types.append(entry)
        d.type_index = entry.index
        d.type = entry.name
        if kind == D_BY_VALUE:
            self.class_state(d, entry)
        self.close(d)
        node.type_index = entry.index
        return entry

    def class_skeleton(self, d: Node, entry: _TypeEntry) -> None:
        sk = self.open(d, "skeleton", "skeleton")
        entry.tracker = self.take(16, "a class tracker id").hex()
        sk.add_note(f"tracker id {entry.tracker}")
        wire2 = self.u8("the skeleton's wire kind")
        if wire2 != entry.wire:
            sk.add_note(f"wire kind {wire2} differs from the descriptor's {entry.wire}")
        flags = self.u8("class skeleton flags")
        sk.value = flags
        name = self.name(sk, "__name__")
        qualname = self.name(sk, "__qualname__") if flags & 4 else name
        if flags & 8:
            module = self.name(sk, "__module__")
        else:
            mnode = self.value(sk, "__module__")
            module = mnode.value if isinstance(mnode.value, str) else None
        entry.module, entry.qualname = module, qualname
        entry.name = f"{module}.{qualname}" if module else qualname
        self.need("strict=False", f"class {entry.name} by value")
        if flags & 1:
            self.type_value(sk, "metaclass")
        if flags & 2:
            n = self.count("a number of bases")
            for i in range(n):
                self.type_value(sk, f"base[{i}]")
        if flags & 16:
            self.value(sk, "__slots__")
        if flags & 32:
            self.value(sk, "__orig_bases__")
        if flags & 128:
            self.value(sk, "metaclass kwargs")
        if flags & 64:
            self.value(sk, "enum members")
        self.close(sk)

    def class_state(self, d: Node, entry: _TypeEntry) -> None:
        st = self.open(d, "class-state", "class dict")
        n = self.count("a number of class attributes")
        st.length = n
        for _ in range(n):
            self.named_value(st, "a class attribute name", "")
        fpos = self.pos
        flags = self.u8("class state flags")
        if flags & ~3:
            self.fail(f"bad class state flags {flags}", fpos)
        if flags & 1:
            self.value(st, "ABC registry")
        if flags & 2:
            self.value(st, "enum member attributes")
        self.close(st)

    def key_name(self, what: str) -> Dict[str, Any]:
        """A str-ref naming the value that follows (dict key, class attribute, global)."""
        start = self.pos
        holder = Node(0, "str")
        name = self.string(holder, what=what)
        key: Dict[str, Any] = {"offset": self.off(start), "value": name[:STR_PREVIEW]}
        if holder.str_index is not None:
            key["str_index"] = holder.str_index
        if holder.str_ref is not None:
            key["str_ref"] = holder.str_ref
        return key

    def named_value(self, parent: Node, what: str, prefix: str) -> Node:
        """str-ref name, then a value labelled with it (class dicts, function globals)."""
        key = self.key_name(what)
        key["name"] = True
        return self.value(parent, prefix + key["value"], key)

    def type_value(self, parent: Node, label: str) -> _TypeEntry:
        """T_TYPE + descriptor (read_type: the tag must be T_TYPE)."""
        start = self.pos
        tag = self.u8("a class")
        if tag != T_TYPE:
            self.fail(f"expected a class (tag {T_TYPE}), found tag {tag}", start)
        node = self.open(parent, "type", label, start)
        entry = self.descriptor(node)
        node.type = entry.name
        node.naming = entry.naming
        self.close(node)
        return entry

    # ---- objects ------------------------------------------------------------------------
    def same_class_items(self, node: Node, n: int, label_of) -> None:
        """K_OBJECT items: one type header, then per item [marker] + the object body
        (marker when tracked: 0 new, 1 discarded copy + back-reference, k >= 2 object #k-2)."""
        entry = self.descriptor(node)
        node.elem_kind = f"object {entry.name}"
        tracked = self.ref or (entry.kind == D_INTERNAL and entry.internal_id in (51, 54, OPTIONAL_ID_BASE))

        def one(i):
            start = self.pos
            marker = self.varuint("an item marker") if tracked else 0
            item = self.open(node, "ref" if marker >= 2 else "object", label_of(i), start)
            if marker >= 2:
                idx = marker - 2
                if idx >= len(self.objects):
                    self.fail(f"reference to object #{idx} but only {len(self.objects)} seen", start)
                item.ref = idx
                item.type = self.objects[idx]
            else:
                self.object_body(item, entry, marker == 1)
            self.close(item)

        self.entries(node, n, one)

    def object_(self, node: Node, discard: bool) -> None:
        entry = self.descriptor(node)
        self.object_body(node, entry, discard)

    def object_body(self, node: Node, entry: "_TypeEntry", discard: bool) -> None:
        node.type = entry.name
        node.naming = entry.naming
        if entry.kind == D_INTERNAL:
            self.internal_object(node, entry, discard)
            return
        wire = entry.wire
        node.wire_kind = WIRE_NAMES.get(wire, f"unknown ({wire})")
        if wire == W_OBJECT:
            self.finish(node, entry, discard, True, False, None, self.layout_state)
        elif wire == W_REDUCE:
            self.finish(node, entry, discard, True, False, self.reduce_construction, self.reduce_state)
        elif wire == W_ENUM:
            self.finish(node, entry, discard, False, False, lambda n, e: self.value(n, "value"), None)
        elif wire == W_ENUM_NAME:
            self.finish(node, entry, discard, False, False, lambda n, e: self.name(n, "member"), None)
        elif wire == W_NAMEDTUPLE:
            self.finish(node, entry, discard, False, False, self.namedtuple_construction, None)
        elif wire == W_CLASS_ONLY:
            self.fail(f"{entry.name} has no serializer for instances (its wire kind says its instances "
                      "are classes)")
        elif wire == W_CUSTOM:
            self.opaque(node, f"instance bytes of {entry.name} were written by a custom Serializer "
                              "(wire kind 0): the format has no length prefix for them, so the inspector "
                              "cannot tell where they end; decoding stops here")
        else:
            self.opaque(node, f"wire kind {wire} of {entry.name} is not one the format describes "
                              "(a serializer that declares its own wire_kind); decoding stops here")

    def finish(self, node: Node, entry: _TypeEntry, discard: bool, two_phase: bool, track: bool,
               construction, state) -> None:
        """The T_OBJECT body: construction part, id, state part (docs/format.md section 7)."""
        pending = None
        if construction is not None:
            pending = construction(node, entry)
        if discard:
            node.add_note("discarded copy: the value is the back-reference that follows")
            self.value(node, "result")
            return
        if self.ref or track:
            self.new_object(node, f"object {entry.name}")
        if two_phase and state is not None:
            state(node, entry, pending)

    def namedtuple_construction(self, node: Node, entry: _TypeEntry):
        n = self.count("a namedtuple length")
        node.length = n
        self.children(node, n, lambda i: f"[{i}]")

    # attribute layouts (wire kind 1) -------------------------------------------------------
    def layout_state(self, node: Node, entry: _TypeEntry, _pending) -> None:
        start = self.pos
        code = self.varuint("a layout code")
        if code == 0:
            lay = self.open(node, "layout", "layout", start)
            lay.value = 0
            if not entry.schema_checked:
                h = self.take(4, "a schema hash")
                entry.schema_checked = True
                lay.add_note(f"schema hash {int.from_bytes(h, 'little'):#010x} (CRC-32 of the field names)")
            self.close(lay)
            self.opaque(node, f"layout code 0: the declared fields of dataclass {entry.name} "
                              "(compatible=False); the payload does not say how many fields there are, "
                              "so their values cannot be told apart; decoding stops here")
        if code == 1:
            lay = self.open(node, "layout", "layout", start)
            n = self.count("a layout size")
            names = []
            for i in range(n):
                names.append(self.name(lay, f"name[{i}]"))
            fpos = self.pos
            flag = self.varuint("a layout schema flag")
            if flag > 1:
                self.fail(f"bad layout schema flag {flag}", fpos)
            fields: Dict[str, Any] = {"names": names, "writer_is_dataclass": bool(flag)}
            if flag:
                e = self.count("a number of extra attributes")
                extras = []
                for _ in range(e):
                    jpos = self.pos
                    j = self.varuint("a layout index")
                    if j >= n:
                        self.fail(f"bad layout index {j}", jpos)
                    extras.append(names[j])
                a = self.count("a number of absent fields")
                absent = [self.name(lay, f"absent[{i}]") for i in range(a)]
                fields["extras"] = extras
                fields["absent_fields"] = absent
            entry.layouts.append(tuple(names))
            fields["index"] = len(entry.layouts) - 1
            lay.value = 1
            lay.length = n
            lay.fields = fields
            self.close(lay)
            layout = names
        else:
            idx = code - 2
            if idx >= len(entry.layouts):
                self.fail(f"unknown layout #{idx} of {entry.name}", start)
            layout = list(entry.layouts[idx])
            node.add_note(f"layout #{idx}")
        node.length = len(layout)
        for attr in layout:
            self.value(node, attr)

    # reduce (wire kind 2) -------------------------------------------------------------------
    def reduce_construction(self, node: Node, entry: _TypeEntry):
        fpos = self.pos
        form = self.u8("a reduce form")
        names = {0: "GLOBAL", 1: "NEWOBJ", 2: "NEWOBJ_EX", 3: "CALL"}
        if form not in names:
            self.fail(f"unknown reduce form {form}", fpos)
        node.add_note(f"reduce {names[form]}")
        if form == 0:
            module = self.name(node, "module")
            qualname = self.name(node, "qualname")
            self.need("imports", f"{module}.{qualname}")
            self.need("strict=False", f"global {module}.{qualname}")
        elif form in (1, 2):
            self.type_value(node, "class")
            self.value(node, "args")
            if form == 2:
                self.value(node, "kwargs")
        else:
            self.value(node, "callable")
            self.value(node, "args")
        return None

    def reduce_state(self, node: Node, entry: _TypeEntry, _pending) -> None:
        fpos = self.pos
        flags = self.u8("reduce state flags")
        if flags & ~15:
            self.fail(f"bad reduce state flags {flags}", fpos)
        if flags & 2:
            self.value(node, "listitems")
        if flags & 4:
            self.value(node, "dictitems")
        if flags & 8:
            self.value(node, "state_setter")
        if flags & 1:
            self.value(node, "state")

    # internal types ---------------------------------------------------------------------
    def internal_object(self, node: Node, entry: _TypeEntry, discard: bool) -> None:
        tid = entry.internal_id
        v = self.value
        if tid in STRICT_REFUSED_IDS:
            self.need("strict=False", entry.name)
        if tid in CLASS_ONLY_IDS:
            self.fail(f"{entry.name} has no serializer for instances (internal id {tid} is a class only)")
        if tid in (15, 16):
            one = lambda n, e: [v(n, "start"), v(n, "stop"), v(n, "step")] and None  # noqa: E731
            self.finish(node, entry, discard, False, False, one, None)
        elif tid in (14, 17, 18, 27):   # object(), Ellipsis, NotImplemented, tzinfo(): no bytes
            self.finish(node, entry, discard, False, False, None, None)
        elif tid == 19:
            self.finish(node, entry, discard, False, False, lambda n, e: self.date_part(n), None)
        elif tid == 20:
            self.finish(node, entry, discard, False, False, lambda n, e: self.time_part(n, False), None)
        elif tid == 21:
            self.finish(node, entry, discard, False, False, lambda n, e: self.time_part(n, True), None)
        elif tid == 22:
            def td(n, e):
                for lab in ("days", "seconds", "microseconds"):
                    self.scalar(n, lab, "varint", self.varint, lab)
            self.finish(node, entry, discard, False, False, td, None)
        elif tid == 23:
            self.finish(node, entry, discard, False, False, lambda n, e: [v(n, "offset"), v(n, "name")] and None,
                        None)
        elif tid in (24, 28) or 36 <= tid <= 39:
            self.finish(node, entry, discard, False, False,
                        lambda n, e: self.plain_string(n, "key" if tid == 28 else "text"), None)
        elif tid == 25:
            self.finish(node, entry, discard, False, False,
                        lambda n, e: [v(n, "numerator"), v(n, "denominator")] and None, None)
        elif tid == 26:
            def uuid_(n, e):
                raw = self.take(16, "UUID bytes")
                safe = self.u8("UUID is_safe")
                n.value = "%s-%s-%s-%s-%s" % (raw[:4].hex(), raw[4:6].hex(), raw[6:8].hex(), raw[8:10].hex(),
                                              raw[10:].hex())
                n.add_note(f"is_safe {safe}")
            self.finish(node, entry, discard, False, False, uuid_, None)
        elif tid in (29, 32):
            self.finish(node, entry, discard, True, False, None,
                        lambda n, e, p: [v(n, "items"), v(n, "__dict__")] and None)
        elif tid == 30:
            self.finish(node, entry, discard, True, False, lambda n, e: v(n, "default_factory") and None,
                        lambda n, e, p: v(n, "items") and None)
        elif tid == 31:
            self.finish(node, entry, discard, True, False, lambda n, e: v(n, "maxlen") and None,
                        lambda n, e, p: v(n, "items") and None)
        elif tid in (33, 34):
            self.finish(node, entry, discard, True, False, None, lambda n, e, p: v(n, "__dict__") and None)
        elif tid == 35:
            def pattern(n, e):
                v(n, "pattern")
                self.scalar(n, "flags", "varint", self.varint, "pattern flags")
            self.finish(node, entry, discard, False, False, pattern, None)
        elif tid == 40:
            def module(n, e):
                by_value = self.raw_u8(n, "by value")
                name = self.name(n, "module")
                if not by_value:
                    self.need("imports", name)
                return by_value
            self.finish(node, entry, discard, True, True, module,
                        lambda n, e, p: v(n, "attributes") if p else None)
        elif 41 <= tid <= 49:
            self.finish(node, entry, discard, True, False, self.reduce_construction, self.reduce_state)
        elif tid == 50:
            def array_(n, e):
                self.plain_string(n, "typecode")
                self.buffer_leaf(n, "data")
            self.finish(node, entry, discard, False, False, array_, None)
        elif tid == 51:
            self.finish(node, entry, discard, True, True, self.function_construction, self.function_state)
        elif tid == 52:
            self.finish(node, entry, discard, False, False,
                        lambda n, e: [v(n, "__func__"), v(n, "__self__")] and None, None)
        elif tid == 53:
            self.finish(node, entry, discard, False, False, lambda n, e: self.code_ref(n, "code") and None, None)
        elif tid == 54:
            self.finish(node, entry, discard, True, True, self.cell_construction,
                        lambda n, e, p: v(n, "contents") if p else None)
        elif tid in (55, 56, 59):
            label = "dict" if tid == 59 else "__func__"
            self.finish(node, entry, discard, False, False, lambda n, e: v(n, label) and None, None)
        elif tid in (57, 82):       # property, abc.abstractproperty
            self.finish(node, entry, discard, False, False, self.property_parts, None)
        elif tid == 58:
            self.finish(node, entry, discard, False, False,
                        lambda n, e: [v(n, "func"), v(n, "attrname"), v(n, "doc")] and None, None)
        elif tid == 60:
            self.finish(node, entry, discard, False, False, self.typevar, None)
        elif 61 <= tid <= 64:
            self.finish(node, entry, discard, False, False, lambda n, e: self.name(n, "sentinel") and None, None)
        elif 65 <= tid <= 70:
            self.finish(node, entry, discard, False, False, lambda n, e: v(n, "items") and None, None)
        elif 71 <= tid <= 73:
            self.finish(node, entry, discard, True, False, None, lambda n, e, p: v(n, "items") and None)
        elif 74 <= tid <= 77:
            def file_(n, e):
                if self.raw_u8(n, "kind (0 standard stream, 1 text, 2 binary)") == 0:
                    self.name(n, "stream")
                else:
                    v(n, "content")
                    self.scalar(n, "position", "varuint", self.varuint, "a file position")
            self.finish(node, entry, discard, False, False, file_, None)
        elif tid in (78, 79):
            def descriptor(n, e):
                self.type_value(n, "owner")
                self.name(n, "name")
            self.finish(node, entry, discard, False, False, descriptor, None)
        elif tid in (80, 81):
            self.finish(node, entry, discard, False, False, lambda n, e: v(n, "__func__") and None, None)
        elif tid == OPTIONAL_ID_BASE:
            self.finish(node, entry, discard, True, True, self.ndarray_construction, self.ndarray_state)
        elif tid == OPTIONAL_ID_BASE + 1 or tid >= OPTIONAL_ID_BASE + 2 + len(_SCALAR_CHARS):
            self.finish(node, entry, discard, False, False, lambda n, e: self.dtype(n, "dtype") and None, None)
        elif tid >= OPTIONAL_ID_BASE + 2:
            char = _SCALAR_CHARS[tid - OPTIONAL_ID_BASE - 2]
            self.finish(node, entry, discard, False, False, lambda n, e: self.numpy_scalar(n, char), None)
        else:  # pragma: no cover - every known id is handled above
            self.opaque(node, f"internal type id {tid} has no decoder in this inspector")

    def property_parts(self, n: Node, e) -> None:
        self.value(n, "fget")
        self.value(n, "fset")
        self.value(n, "fdel")
        if self.raw_u8(n, "has doc"):
            self.value(n, "doc")

    def date_part(self, n: Node) -> None:
        days = self.scalar(n, "days since 1970-01-01", "varint", self.varint, "a date")
        try:
            import datetime

            n.value = (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()
        except (OverflowError, ValueError):
            n.add_note("out of range for datetime.date")

    def time_part(self, n: Node, with_date: bool) -> None:
        import datetime

        text = ""
        if with_date:
            days = self.scalar(n, "days since 1970-01-01", "varint", self.varint, "a datetime date")
            try:
                text = (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat() + " "
            except (OverflowError, ValueError):
                text = "? "
        packed = self.scalar(n, "us*2+fold", "varuint", self.varuint, "a time of day")
        us = packed >> 1
        s, micro = divmod(us, 1_000_000)
        m, sec = divmod(s, 60)
        h, minute = divmod(m, 60)
        n.value = f"{text}{h:02d}:{minute:02d}:{sec:02d}.{micro:06d}" + (" fold=1" if packed & 1 else "")
        self.value(n, "tzinfo")

    def typevar(self, n: Node, e) -> None:
        hpos = self.pos
        head = self.raw_u8(n, "header")
        if head == 0:
            module = self.name(n, "module")
            name = self.name(n, "name")
            self.need("imports", f"{module}.{name}")
            return
        if not head & 1 or head >> 5:
            self.fail(f"bad TypeVar header {head}", hpos)
        n.add_note(f"by value, tracker id {self.take(16, 'a TypeVar tracker id').hex()}")
        self.name(n, "name")
        self.value(n, "module")
        self.value(n, "constraints")
        self.value(n, "bound")
        if head & 16:
            self.value(n, "default")

    # functions, code, cells --------------------------------------------------------------
    def function_construction(self, node: Node, entry: _TypeEntry):
        fpos = self.pos
        how = self.u8("a function kind")
        if how == 0:
            module = self.name(node, "module")
            qualname = self.name(node, "qualname")
            node.naming = "by reference"
            node.value = f"{module}.{qualname}"
            self.need("imports", f"{module}.{qualname}")
            return None
        if how != 1:
            self.fail(f"bad function kind {how}", fpos)
        node.naming = "by value"
        code = self.code_ref(node, "code")
        gpos = self.pos
        g = self.varuint("a globals reference")
        if g < 2:
            gn = Node(self.off(gpos), "globals", "globals")
            node.children.append(gn)
            gn.value = f"new #{self.n_globals}"
            self.n_globals += 1
            if g == 1:
                gn.add_note("module " + repr(self.string(gn, what="a globals __name__")))
            gn.end = self.off()
        else:
            if g - 2 >= self.n_globals:
                self.fail(f"reference to globals dict #{g - 2} but only {self.n_globals} seen", gpos)
            gn = Node(self.off(gpos), "globals", "globals")
            gn.value = f"#{g - 2}"
            gn.end = self.off()
            node.children.append(gn)
        if code is None:
            self.opaque(node, "the code object could not be walked, so the number of closure cells "
                              "that follow is unknown; decoding stops here")
        fill = 0
        name = code.get("qualname") or code.get("name")
        if name:
            node.value = name
        freevars = code["freevars"]
        if freevars:
            mpos = self.pos
            mode = self.varuint("a closure mode")
            if mode == 0:
                cn = Node(self.off(mpos), "cell", "closure")
                cn.end = self.off()
                cn.value = (f"{len(freevars)} new cell(s) #{self.n_cells}..#{self.n_cells + len(freevars) - 1} "
                            f"({', '.join(freevars)}), contents in the state")
                node.children.append(cn)
                self.n_cells += len(freevars)
                fill = len(freevars)
            elif mode == 1:
                for var in freevars:
                    cpos = self.pos
                    k = self.varuint("a closure cell")
                    cn = Node(self.off(cpos), "cell", f"cell {var}")
                    cn.end = self.off()
                    node.children.append(cn)
                    if k < 2:
                        cn.value = f"new #{self.n_cells}" + (", contents in the state" if k == 0 else ", empty")
                        self.n_cells += 1
                        fill += k == 0
                    else:
                        if k - 2 >= self.n_cells:
                            self.fail(f"reference to cell #{k - 2} but only {self.n_cells} seen", cpos)
                        cn.value = f"#{k - 2}"
            else:
                self.fail(f"bad closure mode {mode}", mpos)
        return ("by value", fill)

    def function_state(self, node: Node, entry: _TypeEntry, pending) -> None:
        if pending is None:
            return      # a function by reference has no state
        fill = pending[1]
        st = self.open(node, "function-state", "state")
        fpos = self.pos
        flags = self.varuint("function flags")
        st.value = flags
        for i in range(fill):
            self.value(st, f"cell contents[{i}]")
        if flags & ~4095:
            self.fail(f"bad function flags {flags:#x}", fpos)
        if flags & 1:
            n = self.count("a number of globals")
            for _ in range(n):
                self.named_value(st, "a global name", "global ")
        for bit, label in ((2, "__defaults__"), (4, "__kwdefaults__"), (8, "__annotations__"),
                           (16, "__dict__"), (32, "__name__"), (64, "__qualname__"), (128, "__module__"),
                           (2048, "__module__"), (256, "__doc__"), (512, "__type_params__"),
                           (1024, "submodules")):
            if flags & bit:
                if bit in (32, 64, 128):
                    self.name(st, label)        # str-ref, no tag
                elif bit == 2048 and flags & 128:
                    continue                    # __module__ was a str (the reader skips this bit)
                else:
                    self.value(st, label)
        self.close(st)

    def cell_construction(self, node: Node, entry: _TypeEntry):
        cpos = self.pos
        k = self.varuint("a cell reference")
        if k < 2:
            node.value = f"new cell #{self.n_cells}" + (", contents in the state" if k == 0 else ", empty")
            self.n_cells += 1
            return k == 0
        if k - 2 >= self.n_cells:
            self.fail(f"reference to cell #{k - 2} but only {self.n_cells} seen", cpos)
        node.value = f"cell #{k - 2}"
        return False

    def code_ref(self, parent: Node, label: str) -> Optional[Dict[str, Any]]:
        node = self.open(parent, "code", label)
        if not self.codes:
            hpos = self.pos
            header = self.take(3, "the code header")
            magic = int.from_bytes(header[:2], "little")
            version = _python_of_magic(magic)
            node.add_note(f"bytecode magic {magic} (Python {version}), code encoding {header[2]}")
            self.need("python", version)
            if header[2] != 1:
                self.fail(f"code encoding {header[2]} is unknown (this format has 1)", hpos + 2)
            self.code_magic = magic
        kpos = self.pos
        k = self.varuint("a code reference")
        if k:
            if k - 1 >= len(self.codes):
                self.fail(f"reference to code object #{k - 1} but only {len(self.codes)} seen", kpos)
            info = self.codes[k - 1]
            node.value = f"#{k - 1}"
            if info.get("qualname"):
                node.add_note(info["qualname"])
            self.close(node)
            return info if info.get("freevars") is not None else None
        n = self.length("a code object size")
        data = self.take(n, f"a code object of {n} byte(s)")
        filename = self.string(Node(0, "str"), what="a code file name")
        node.length = n
        if self.code_budget <= 0:
            info = {"compressed_bytes": n, "error": "not inflated: the payload's code objects exceed the "
                                                     "inspector's limit"}
        else:
            info = _describe_code(data, self.code_magic)
            self.code_budget -= info.get("marshal_bytes", 0)
        if info.pop("corrupt", False):
            self.fail(f"bad code object: {info['error']}", kpos)
        info["index"] = len(self.codes)
        if filename:
            info["filename"] = filename
        self.codes.append(info)
        node.value = f"new #{info['index']}"
        node.fields = {k: v for k, v in info.items() if k != "index"}
        if "error" in info:
            node.add_note(info["error"])
        self.close(node)
        return info if info.get("freevars") is not None else None

    # numpy ------------------------------------------------------------------------------
    def dtype(self, parent: Node, label: str, depth: int = 0) -> Dict[str, Any]:
        """A numpy dtype; returns {"str": text, "plain": bool|None, "itemsize": int|None}."""
        node = self.open(parent, "dtype", label)
        if depth > 32:
            self.fail("numpy dtype nests too deeply")
        kpos = self.pos
        kind = self.u8("a dtype kind")
        if kind == 0:
            s = self.string(Node(0, "str"), table=False, what="a dtype string")
            info = _dtype_info(s)
            if info is None:
                self.fail(f"bad numpy dtype string {s!r}", kpos)
        elif kind == 1:
            flags = self.u8("struct dtype flags")
            n = self.count("a number of fields")
            plain, parts = True, []
            for _ in range(n):
                fname = self.string(Node(0, "str"), table=False, what="a field name")
                sub = self.dtype(node, f"field {fname!r}", depth + 1)
                offset = self.varuint("a field offset")
                self.value(node, f"title of {fname!r}")
                parts.append(f"{fname!r}: {sub['str']}@{offset}")
                plain = plain and sub["plain"] is True
            itemsize = self.varuint("a struct itemsize")
            info = {"str": "{" + ", ".join(parts) + "}" + (" aligned" if flags & 1 else "")
                    + (" record" if flags & 2 else ""), "plain": plain, "itemsize": itemsize}
        elif kind == 2:
            base = self.dtype(node, "base", depth + 1)
            ndim = self.varuint("a subarray ndim")
            if ndim > 64:
                self.fail(f"numpy subarray with {ndim} dimensions", kpos)
            shape = tuple(self.varuint("a subarray dimension") for _ in range(ndim))
            size = None if base["itemsize"] is None else base["itemsize"] * math.prod(shape)
            info = {"str": f"({base['str']}, {shape})", "plain": base["plain"], "itemsize": size}
        elif kind == 3:
            flags = self.u8("StringDType flags")
            if flags & 2:
                self.value(node, "na_object")
            info = {"str": "StringDType" + ("(coerce)" if flags & 1 else ""), "plain": False, "itemsize": 16}
        elif kind == 4:
            child = self.value(node, "dtype object")
            info = {"str": f"<dtype by reduce: {child.type}>", "plain": None, "itemsize": None}
        else:
            self.fail(f"unknown numpy dtype kind {kind}", kpos)
        node.value = info["str"]
        self.close(node)
        return info

    def ndarray_construction(self, node: Node, entry: _TypeEntry):
        dt = self.dtype(node, "dtype")
        fpos = self.pos
        flags = self.u8("array flags")
        if flags & ~3:
            self.fail(f"bad numpy array flags {flags}", fpos)
        ndim = self.varuint("array ndim")
        if ndim > 64:
            self.fail(f"numpy array with {ndim} dimensions", fpos + 1)
        shape = tuple(self.varuint("an array dimension") for _ in range(ndim))
        desc = f"dtype {dt['str']}, shape {shape}" + (", Fortran order" if flags & 1 else "") \
            + (", read-only" if flags & 2 else "")
        node.value = desc
        node.length = math.prod(shape)
        if dt["plain"] is None:
            self.opaque(node, "the array's dtype travels as a reduced object: whether its elements follow "
                              "as raw memory or as values depends on the dtype, which the inspector does not "
                              "rebuild; decoding stops here")
        if dt["plain"]:
            bpos = self.pos
            buf = self.buffer_leaf(node, "data")
            if dt["itemsize"] is not None and buf.length != node.length * dt["itemsize"]:
                self.fail(f"numpy array {shape} of {dt['str']} needs {node.length * dt['itemsize']} bytes, "
                          f"the payload has {buf.length}", bpos)
            return False
        return True

    def ndarray_state(self, node: Node, entry: _TypeEntry, pending) -> None:
        if not pending:
            return
        epos = self.pos
        elements = self.value(node, "elements")
        if elements.kind != "list" or elements.length != node.length:
            self.fail(f"numpy object array elements do not match its shape ({node.length} element(s))", epos)
        fpos = self.pos
        ro = self.u8("array read-only flag")
        if ro & ~2:
            node.add_note(f"unexpected read-only byte {ro} at offset {self.off(fpos)}")

    def numpy_scalar(self, node: Node, char: str) -> None:
        fpos = self.pos
        flag = self.u8("a numpy scalar flag")
        if flag == 0:
            info = _dtype_info("=" + char)
        elif flag == 1:
            info = self.dtype(node, "dtype")
        else:
            self.fail(f"bad numpy scalar flag {flag}", fpos)
        if info is None or info["plain"] is None:
            self.opaque(node, "the scalar's dtype is not one the inspector can size; decoding stops here")
        if info["plain"]:
            size = info["itemsize"]
            if size is None:
                self.opaque(node, "unknown itemsize; decoding stops here")
            raw = self.take(size, f"a numpy scalar of {size} byte(s)")
            node.value = raw[:BYTES_PREVIEW].hex()
            node.length = size
            val = _scalar_value(char, raw)
            if val is not None:
                node.value = val
        else:
            self.value(node, "item")


def _scalar_value(char: str, raw: bytes):
    fmt = {"?": "?", "b": "b", "B": "B", "h": "h", "H": "H", "i": "i", "I": "I", "q": "q", "Q": "Q",
           "e": "e", "f": "f", "d": "d", "l": {4: "i", 8: "q"}.get(len(raw)),
           "L": {4: "I", 8: "Q"}.get(len(raw))}.get(char)
    if fmt is None or struct.calcsize("<" + fmt) != len(raw):
        return None
    v = struct.unpack("<" + fmt, raw)[0]
    return _float_value(v) if isinstance(v, float) else v


def _dtype_info(s: str) -> Optional[Dict[str, Any]]:
    """Parse a dtype string ('<f8', '|S3', '<M8[ns]', '=q', '|O'): kind, size, plainness."""
    if len(s) < 2 or s[0] not in "<>|=":
        return None
    ch = s[1]
    rest = s[2:]
    unit = ""
    if "[" in rest:
        rest, _, unit = rest.partition("[")
        if not unit.endswith("]"):
            return None
    if rest and not (rest.isascii() and rest.isdigit()):
        # (isdigit alone takes '¹', which int() refuses: strings may be Latin-1 now)
        return None
    kind = ch if ch in "biufcmMSUVOT" and rest else _CHAR_KIND.get(ch)
    if kind is None:
        return None
    if rest:
        size = int(rest) * (4 if kind == "U" else 1)
    elif ch in "gG":
        size = _longdouble_size() * (2 if ch == "G" else 1)
    else:
        size = _CHAR_SIZES.get(ch)
    return {"str": s, "plain": kind in _PLAIN_KINDS, "itemsize": size}


# ---- code objects: a bounded, pure-Python marshal walker ---------------------------------
class _MarshalError(Exception):
    pass


class _CodeRef:
    """Stands for a code object met inside marshal data."""

    def __init__(self, fields):
        self.fields = fields


def _describe_code(data: bytes, magic: int) -> Dict[str, Any]:
    """What the inspector can tell about a code object from its wire bytes, without
    unmarshalling it: checksum, size, and (walking the marshal data) its names and free
    variables. 'freevars' is absent when the walk failed."""
    out: Dict[str, Any] = {"compressed_bytes": len(data)}
    if len(data) < 5:
        out["error"] = "code object too short"
        return out
    try:
        from pyfory._compat import CODE_ZDICT
    except Exception as e:  # pragma: no cover - pyfory always has it
        out["error"] = f"cannot load the code dictionary: {e}"
        return out
    try:
        d = zlib.decompressobj(-15, zdict=CODE_ZDICT)
        raw = d.decompress(data[:-4], MAX_CODE_SIZE)
        if not d.eof or d.unconsumed_tail or d.unused_data:
            out["error"] = "bad or oversized compressed code stream"
            out["corrupt"] = True
            return out
    except zlib.error as e:
        out["error"] = f"bad compressed code stream: {e}"
        out["corrupt"] = True
        return out
    out["marshal_bytes"] = len(raw)
    if zlib.crc32(raw) != int.from_bytes(data[-4:], "little"):
        out["error"] = "code checksum mismatch: the payload is corrupted"
        out["corrupt"] = True
        return out
    out["checksum"] = "ok"
    try:
        walker = _Marshal(raw, magic)
        top = walker.read(0)
        if not isinstance(top, _CodeRef):
            raise _MarshalError("the marshal data is not a code object")
        out.update(top.fields)
        out["nested_code_objects"] = walker.ncodes - 1
    except (_MarshalError, IndexError, ValueError, struct.error, OverflowError, RecursionError) as e:
        out.pop("freevars", None)
        out["error"] = f"cannot walk the marshal data: {e}"
    return out


class _Marshal:
    def __init__(self, raw: bytes, magic: int):
        self.raw = raw
        self.pos = 0
        self.refs: List[Any] = []
        self.new_layout = magic == 0 or magic >= 3450    # 3.11+: localsplusnames/kinds
        self.ncodes = 0

    def byte(self) -> int:
        b = self.raw[self.pos]
        self.pos += 1
        return b

    def long(self) -> int:
        if self.pos + 4 > len(self.raw):
            raise _MarshalError("truncated")
        v = struct.unpack_from("<i", self.raw, self.pos)[0]
        self.pos += 4
        return v

    def bytes_(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise _MarshalError("truncated")
        b = self.raw[self.pos:self.pos + n]
        self.pos += n
        return b

    def read(self, depth: int):
        if depth > 200:
            raise _MarshalError("marshal data nests too deeply")
        code = self.byte()
        flag = code & 0x80
        t = chr(code & 0x7F)
        idx = None
        if flag:
            idx = len(self.refs)
            self.refs.append(None)
        v = self.read_type(t, depth)
        if idx is not None:
            self.refs[idx] = v
        return v

    def read_type(self, t: str, depth: int):
        if t in "0NFTS.?":
            return {"N": None, "F": False, "T": True}.get(t)
        if t == "i":
            return self.long()
        if t == "I":
            return int.from_bytes(self.bytes_(8), "little", signed=True)
        if t == "l":
            n = self.long()
            digits = self.bytes_(2 * abs(n))
            if abs(n) > 64:
                return 0
            v = 0
            for i in range(abs(n) - 1, -1, -1):
                v = (v << 15) | int.from_bytes(digits[2 * i:2 * i + 2], "little")
            return -v if n < 0 else v
        if t == "g":
            return struct.unpack("<d", self.bytes_(8))[0]
        if t == "y":
            self.bytes_(16)
            return 0j
        if t == "f":
            self.bytes_(self.byte())
            return 0.0
        if t == "x":
            self.bytes_(self.byte())
            self.bytes_(self.byte())
            return 0j
        if t == "s":
            return self.bytes_(self.long())
        if t in "tua":
            return self.bytes_(self.long()).decode("utf-8", "surrogatepass")
        if t == "A":
            return self.bytes_(self.long()).decode("latin-1")
        if t in "zZ":
            return self.bytes_(self.byte()).decode("latin-1")
        if t == "r":
            i = self.long()
            if not 0 <= i < len(self.refs):
                raise _MarshalError(f"bad marshal back-reference {i}")
            return self.refs[i]
        if t in "([<>":
            n = self.long()
            if n < 0 or n > len(self.raw) - self.pos:
                raise _MarshalError("bad marshal length")
            return tuple(self.read(depth + 1) for _ in range(n))
        if t == ")":
            n = self.byte()
            return tuple(self.read(depth + 1) for _ in range(n))
        if t == "{":
            while True:
                k = self.read(depth + 1)
                if k is None and self.raw[self.pos - 1] & 0x7F == ord("0"):
                    return {}
                self.read(depth + 1)
        if t == ":":
            return (self.read(depth + 1), self.read(depth + 1), self.read(depth + 1))
        if t == "c":
            return self.code(depth)
        raise _MarshalError(f"unknown marshal type {t!r}")

    def code(self, depth: int) -> _CodeRef:
        self.ncodes += 1
        r = lambda: self.read(depth + 1)  # noqa: E731
        if self.new_layout:
            argcount, _posonly, kwonly, _stack, _flags = (self.long() for _ in range(5))
            r()                     # bytecode
            r()                     # consts
            r()                     # names
            names = r()
            kinds = r()
            filename, name, qualname = r(), r(), r()
            firstlineno = self.long()
            r()                     # linetable
            r()                     # exception table
            if not isinstance(names, tuple) or not isinstance(kinds, (bytes, bytearray)):
                raise _MarshalError("unexpected code object layout")
            freevars = [str(n) for n, k in zip(names, kinds) if k & 0x80]
        else:
            argcount, _posonly, kwonly, _nlocals, _stack, _flags = (self.long() for _ in range(6))
            r()
            r()
            r()
            r()                     # varnames
            free = r()
            r()                     # cellvars
            filename, name = r(), r()
            qualname = None
            firstlineno = self.long()
            r()                     # lnotab / linetable
            if not isinstance(free, tuple):
                raise _MarshalError("unexpected code object layout")
            freevars = [str(n) for n in free]
        fields = {"name": name if isinstance(name, str) else None, "freevars": freevars,
                  "argcount": argcount, "kwonlyargcount": kwonly, "firstlineno": firstlineno}
        if isinstance(qualname, str):
            fields["qualname"] = qualname
        if isinstance(filename, str) and filename:
            fields["filename"] = filename
        return _CodeRef(fields)


# ---------------------------------------------------------------------------------------
def inspect_payload(data: bytes, base: int = 0, max_items: int = 100) -> Dict[str, Any]:
    """Decode one payload (the header byte, if any, then one value). Never raises."""
    report: Dict[str, Any] = {"offset": base, "size": len(data)}
    dec = _Decoder(data, base, max_items)
    root = Node(base, "payload")
    dec.stack = [root]
    status, error = "ok", None
    try:
        header: Dict[str, Any] = {}
        report["header"] = header
        if not data:
            dec.fail("truncated: empty payload: no value", 0)
        first = data[0]
        flags = 0
        if first & 0xF0 == HEADER_BASE:
            flags = first & 0x0F
            header["header_byte"] = first
            if flags & ~(F_REF | F_OOB):
                dec.fail(f"payload header byte {first:#04x} is not one of format version {FORMAT_VERSION} "
                         f"(flag bits {flags & ~(F_REF | F_OOB):#x} unknown): written by a later version?", 0)
            dec.pos = 1
        elif len(data) >= 4 and data[:2] == OLD_MAGIC:
            header["magic"] = OLD_MAGIC.hex()
            header["version"] = data[2]
            dec.fail(f"payload has pyfory format version {data[2]} (magic bytes fd 59, then the version); "
                     f"this inspector reads version {FORMAT_VERSION}", 2)
        else:
            header["header_byte"] = None
        header["version"] = FORMAT_VERSION
        header["flags"] = flags
        header["flag_names"] = [n for bit, n in FLAG_NAMES if flags & bit]
        dec.ref = bool(flags & F_REF)
        dec.oob = bool(flags & F_OOB)
        dec.value(root, None)
        if dec.pos != dec.size:
            dec.fail(f"{dec.size - dec.pos} unexpected byte(s) after the value")
    except _Stop as e:
        status = "opaque" if e.opaque else "error"
        error = {"offset": e.offset, "reason": e.reason}
    except RecursionError:
        status = "error"
        error = {"offset": dec.off(), "reason": "nesting too deep for the inspector at this recursion limit "
                                                "(the command line raises it)"}
    except MemoryError:  # pragma: no cover - huge inputs only
        status = "error"
        error = {"offset": dec.off(), "reason": "out of memory while inspecting"}
    except Exception as e:  # an inspector bug: report it, never raise
        status = "error"
        error = {"offset": dec.off(), "reason": f"internal inspector error: {type(e).__name__}: {e}"}
    if error is not None and status == "error":
        parent = dec.stack[-1] if dec.stack else root
        node = Node(error["offset"], "error")
        node.error = error["reason"]
        parent.children.append(node)
    root.end = base + len(data) if status == "ok" else None
    report["status"] = status
    report["error"] = error
    report["root"] = root.children[0].to_dict() if root.children else None
    if status == "error" and root.children and root.children[-1].kind == "error" and len(root.children) == 1:
        report["root"] = None
    report["tables"] = {
        "objects": len(dec.objects),
        "strings": len(dec.strings),
        "types": [t.describe() for t in dec.types],
        "out_of_band_buffers": [{"slot": i, "bytes": n} for i, n in enumerate(dec.oob_slots)],
        "code_objects": len(dec.codes),
    }
    report["needs"] = dec.needs
    if dec.warnings:
        report["warnings"] = dec.warnings
    return report


def _read_frame_length(data: bytes, pos: int):
    result = 0
    for i in range(10):
        if pos + i >= len(data):
            return None, "truncated: the stream ends inside a frame length"
        b = data[pos + i]
        if i == 9 and b > 1:
            return None, "bad frame length (varint too long)"
        result |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return (result, pos + i + 1), None
    return None, "bad frame length"  # pragma: no cover


def looks_like_stream(data: bytes, max_items: int = 100) -> bool:
    """Whether input that is not one complete payload is a stream of Fory.dump frames.

    Version 3 payloads have no magic bytes, so the input is tried as one payload first
    (see inspect); this is asked only when that fails. A stream begins with a frame:
    varuint length, then that many bytes, which decode as one payload (completely, or up
    to data the format does not describe), or which begin with the magic bytes of a
    version 1/2 payload (each frame is then refused by its version)."""
    got, _ = _read_frame_length(data, 0)
    if got is None:
        return False
    n, body = got
    if n == 0 or n > len(data) - body:
        return False
    frame = data[body:body + n]
    if frame[:2] == OLD_MAGIC:
        return True
    return inspect_payload(frame, body, max_items)["status"] in ("ok", "opaque")


def _also_a_stream(data: bytes, max_items: int) -> int:
    """The number of frames when data, a complete payload, also reads as a stream of
    complete frames (an ambiguous input), else 0."""
    pos = frames = 0
    bounds = []
    while pos < len(data):
        got, _ = _read_frame_length(data, pos)
        if got is None or got[0] == 0 or got[0] > len(data) - got[1]:
            return 0
        bounds.append((got[1], got[1] + got[0]))
        pos = got[1] + got[0]
    for start, end in bounds:       # the framing fits exactly: now decode the frames
        if inspect_payload(data[start:end], start, max_items)["status"] not in ("ok", "opaque"):
            return 0
        frames += 1
    return frames


def inspect(data, *, stream: Optional[bool] = None, max_items: int = 100) -> Dict[str, Any]:
    """Inspect a payload, or a stream of Fory.dump frames (stream=None: detect).

    Detection (payloads have no magic bytes since format version 3): the input is one
    payload if it decodes as one to its end (or up to data the format does not describe);
    otherwise it is a stream if its first length-prefixed frame fits and decodes (see
    looks_like_stream); otherwise it is reported as one (malformed) payload. An input that
    reads both ways is shown as a payload, with a warning.

    Returns a JSON-ready dict: {"stream", "size", "status", "payloads": [...]} where each
    payload has "header", "root" (the tree), "tables", "needs", "status" ("ok", "opaque",
    "error") and "error" ({"offset", "reason"} or None). Never raises."""
    try:
        data = memoryview(data).tobytes()
    except Exception as e:
        return {"stream": False, "size": 0, "status": "error", "payloads": [],
                "error": {"offset": 0, "reason": f"cannot read the input as bytes: {e}"}}
    try:
        if max_items is None or max_items < 0:
            max_items = 0
        rep = None
        if stream is None:
            # no magic bytes (format version 3): one payload if the input decodes as one,
            # else a stream if it begins with a length-prefixed frame that decodes
            rep = inspect_payload(data, 0, max_items)
            if rep["status"] in ("ok", "opaque"):
                stream = False
                frames = _also_a_stream(data, max_items)
                if frames:
                    rep.setdefault("warnings", []).append(
                        f"the input also reads as a stream of {frames} Fory.dump frame(s); shown as one "
                        "payload (use --stream to read it as a stream)")
            else:
                stream = looks_like_stream(data, max_items)
        out: Dict[str, Any] = {"stream": bool(stream), "size": len(data), "payloads": [], "error": None}
        if not stream:
            if rep is None:
                rep = inspect_payload(data, 0, max_items)
            out["payloads"].append(rep)
            out["status"] = rep["status"]
            out["error"] = rep["error"]
            return out
        pos = 0
        status = "ok"
        while pos < len(data):
            got, err = _read_frame_length(data, pos)
            if got is None:
                out["error"] = {"offset": pos, "reason": err}
                status = "error"
                break
            n, body = got
            if n > len(data) - body:
                rep = inspect_payload(data[body:], body, max_items)
                rep["frame"] = {"offset": pos, "length": n}
                out["payloads"].append(rep)
                out["error"] = {"offset": len(data),
                                "reason": f"truncated: frame #{len(out['payloads']) - 1} at offset {pos} "
                                          f"announces {n} bytes, {len(data) - body} left"}
                status = "error"
                break
            rep = inspect_payload(data[body:body + n], body, max_items)
            rep["frame"] = {"offset": pos, "length": n}
            out["payloads"].append(rep)
            if rep["status"] == "error":
                status = "error"
                out["error"] = rep["error"]
            elif rep["status"] == "opaque" and status == "ok":
                status = "opaque"
            pos = body + n
        if not out["payloads"] and status == "ok":
            status = "error"
            out["error"] = {"offset": 0, "reason": "empty input: no payload"}
        out["status"] = status
        return out
    except Exception as e:  # pragma: no cover - defensive
        return {"stream": bool(stream), "size": len(data), "status": "error", "payloads": [],
                "error": {"offset": 0, "reason": f"internal inspector error: {type(e).__name__}: {e}"}}


# ---- rendering -----------------------------------------------------------------------------
def _preview(v: Any, limit: int = 60) -> str:
    if isinstance(v, str):
        return _short(v, limit)
    return repr(v) if not isinstance(v, float) else repr(v)


def _items_preview(items: List[Any], n: int) -> str:
    shown = items[:PREVIEW_ITEMS]
    parts = []
    for it in shown:
        if isinstance(it, list) and len(it) == 2:
            parts.append(f"{_preview(it[0], 30)}: {_preview(it[1], 30)}")
        else:
            parts.append(_preview(it, 30))
    more = f", ... ({n - len(shown)} more)" if n > len(shown) else ""
    return "[" + ", ".join(parts) + more + "]"


_RAW_VALUE_KINDS = frozenset(("object", "cell", "globals", "float", "complex", "u8", "varint", "varuint"))


def _node_line(d: Dict[str, Any]) -> str:
    kind = d.get("kind", "?")
    parts = []
    label = d.get("label")
    head = f"{label}: " if label is not None else ""
    if kind == "error":
        return f"{head}ERROR: {d.get('error')}"
    if kind == "opaque":
        nxt = d.get("value") or ""
        more = "..." if d.get("length", 0) > BYTES_PREVIEW else ""
        return f"{head}OPAQUE ({d.get('length', 0)} byte(s) left: {nxt}{more}): {d.get('note')}"
    if kind == "elided":
        return f"... {d.get('note')}"
    typ = d.get("type")
    value = d.get("value")
    if kind == "descriptor":
        extra = [d.get("naming")]
        if d.get("naming") == "internal":
            extra = [f"internal id {value}"]
        elif d.get("naming") == "registered id":
            extra = [f"registered id {value}"]
        if d.get("wire_kind"):
            extra.append(d["wire_kind"])
        parts.append(f"type#{d.get('type_index')} = {typ} ({', '.join(x for x in extra if x)})")
    elif kind in ("object", "type"):
        text = f"{kind} {typ}" if typ else kind
        extra = [x for x in (d.get("naming"), d.get("wire_kind")) if x]
        if extra:
            text += " (" + ", ".join(extra) + ")"
        parts.append(text)
        if kind == "object" and value is not None:
            parts.append(value if isinstance(value, str) else _preview(value, 80))
    elif kind == "ref":
        parts.append(f"ref -> obj#{d.get('ref')} ({typ})")
    elif kind in ("list", "tuple", "set", "frozenset", "dict"):
        text = f"{kind} len={d.get('length')}"
        if d.get("elem_kind"):
            text += f" kind={d['elem_kind']}"
        parts.append(text)
        if d.get("items") is not None:
            parts.append(_items_preview(d["items"], d.get("length", 0)))
    elif kind in ("bytes", "bytearray"):
        parts.append(f"{kind} len={d.get('length')}")
        if value:
            parts.append(value + ("..." if d.get("length", 0) > BYTES_PREVIEW else ""))
    elif kind == "buffer":
        text = "buffer" + (f" {typ}" if typ else "") + f" {d.get('length')} byte(s)"
        if d.get("oob_slot") is not None:
            text += f" OUT OF BAND, slot #{d['oob_slot']}"
        else:
            text += " in band"
        parts.append(text)
        if value:
            parts.append(value + ("..." if d.get("length", 0) > BYTES_PREVIEW else ""))
    elif kind == "layout":
        f = d.get("fields")
        if f:
            text = f"new #{f.get('index', '?')} [{', '.join(f['names'])}]"
            text += " (writer's class: dataclass" if f.get("writer_is_dataclass") else " (writer's class: plain"
            if f.get("extras"):
                text += f"; extra attributes {', '.join(f['extras'])}"
            if f.get("absent_fields"):
                text += f"; absent fields {', '.join(f['absent_fields'])}"
            parts.append(text + ")")
        elif value == 0:
            parts.append("code 0: the declared dataclass fields")
        else:
            parts.append(f"code {value}")
    elif kind == "code":
        f = d.get("fields") or {}
        text = f"code {value}"
        if f:
            bits = []
            if f.get("qualname") or f.get("name"):
                bits.append(f.get("qualname") or f.get("name"))
            if f.get("freevars"):
                bits.append("free vars " + ", ".join(f["freevars"]))
            if f.get("filename"):
                bits.append(f"{f['filename']}:{f.get('firstlineno', '?')}")
            bits.append(f"{f.get('compressed_bytes')} bytes compressed")
            text += " (" + "; ".join(bits) + ")"
        parts.append(text)
    elif kind == "skeleton":
        parts.append(f"flags {value:#04x}" if isinstance(value, int) else "")
    elif kind == "class-state":
        parts.append(f"{d.get('length')} attribute(s)")
    elif kind == "function-state":
        parts.append(f"flags {value:#x}" if isinstance(value, int) else "")
    elif kind == "none":
        parts.append("None")
    else:
        text = kind
        if typ and typ != kind:
            text += f" {typ}"
        parts.append(text)
        if "value" in d:
            if kind in _RAW_VALUE_KINDS and isinstance(value, str):
                parts.append(value)
            elif kind == "str" and d.get("length") is not None and d["length"] > STR_PREVIEW:
                parts.append(_preview(value, 60) + f" ({d['length']} chars)")
            else:
                parts.append(_preview(value, 80))
        elif d.get("length") is not None:
            parts.append(f"len={d['length']}")
    ann = []
    if d.get("obj_id") is not None:
        ann.append(f"=obj#{d['obj_id']}")
    if d.get("str_index") is not None:
        ann.append(f"str#{d['str_index']} new")
    if d.get("str_ref") is not None:
        ann.append(f"-> str#{d['str_ref']}")
    if d.get("type_ref") is not None:
        ann.append(f"-> type#{d['type_ref']}")
    key = d.get("key")
    what = "name" if key and key.get("name") else "key"
    if key and key.get("str_index") is not None:
        ann.append(f"({what}: str#{key['str_index']} new)")
    elif key and key.get("str_ref") is not None:
        ann.append(f"({what}: -> str#{key['str_ref']})")
    if d.get("note"):
        ann.append(f"({d['note']})")
    return head + "  ".join(parts + ann)


def _render_node(root: Dict[str, Any], out: List[str]) -> None:
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        offset = (d.get("key") or d).get("offset", 0)      # a named entry starts at its name
        out.append(f"{offset:>7}  {'  ' * depth}{_node_line(d)}")
        stack.extend((c, depth + 1) for c in reversed(d.get("children", ())))


def render_payload(rep: Dict[str, Any], out: List[str]) -> None:
    h = rep.get("header") or {}
    first = f"pyfory payload: {rep.get('size')} bytes"
    if rep.get("frame"):
        first += f" at offset {rep.get('offset', 0)}"
    if "version" in h:
        first += f", format version {h['version']}"
    if "header_byte" in h:
        hb = h["header_byte"]
        first += f", header byte {hb:#04x}" if hb is not None else ", no header byte"
    if "flags" in h:
        first += f", flags {h['flags']:#04x} ({'|'.join(h.get('flag_names') or ['none'])})"
    out.append(first)
    out.append(" offset  value")
    if rep.get("root"):
        _render_node(rep["root"], out)
    t = rep.get("tables") or {}
    types = t.get("types") or []
    if types:
        out.append("type table:")
        for e in types:
            line = f"  #{e['index']}  {e['name']}  ({e['naming']}"
            if e.get("wire_kind"):
                line += f", {e['wire_kind']}"
            line += f")  at {e['offset']}"
            for i, lay in enumerate(e.get("layouts", ())):
                line += f"\n        layout #{i}: {', '.join(lay) if lay else '(no attributes)'}"
            out.append(line)
    oob = t.get("out_of_band_buffers") or []
    counts = f"objects with ids: {t.get('objects', 0)}, strings in table: {t.get('strings', 0)}"
    if t.get("code_objects"):
        counts += f", code objects: {t['code_objects']}"
    if oob:
        counts += ", out-of-band buffers: " + ", ".join(f"#{b['slot']} {b['bytes']} bytes" for b in oob)
    out.append(counts)
    needs = rep.get("needs") or {}
    if needs:
        out.append("to load this payload the reader needs:")
        for what, items in needs.items():
            out.append(f"  {what}: {', '.join(items)}")
    for w in rep.get("warnings") or ():
        out.append(f"warning: {w}")
    status = rep.get("status")
    err = rep.get("error")
    if status == "error" and err:
        out.append(f"ERROR at offset {err['offset']}: {err['reason']}")
    elif status == "opaque" and err:
        out.append(f"STOPPED at offset {err['offset']} (opaque data, not an error in the payload): "
                   f"{err['reason']}")


def render_text(report: Dict[str, Any]) -> str:
    out: List[str] = []
    payloads = report.get("payloads") or []
    if report.get("stream"):
        out.append(f"stream of {len(payloads)} frame(s), {report.get('size')} bytes")
    for i, rep in enumerate(payloads):
        if report.get("stream"):
            out.append("")
            out.append(f"== frame #{i}")
        render_payload(rep, out)
    err = report.get("error")
    if err and report.get("stream") and report.get("status") == "error":
        last = payloads[-1].get("error") if payloads else None
        if last != err:
            out.append(f"ERROR at offset {err['offset']}: {err['reason']}")
    if not payloads and err:
        out.append(f"ERROR at offset {err['offset']}: {err['reason']}")
    return "\n".join(out)


def to_json(report: Dict[str, Any], indent: Optional[int] = None) -> str:
    """The report as JSON text (strings are ASCII-escaped; lone surrogates survive)."""
    import json

    old = sys.getrecursionlimit()
    try:
        # a report is as deep as the payload (up to MAX_DEPTH levels of nodes)
        sys.setrecursionlimit(max(old, 4 * MAX_DEPTH + 1000))
        # iterencode without _one_shot is the pure-Python encoder: it follows the
        # recursion limit set above, where CPython 3.12's C encoder stops near 1,500 levels
        encoder = json.JSONEncoder(ensure_ascii=True, default=repr, indent=indent,
                                   separators=(",", ":") if indent is None else None)
        return "".join(encoder.iterencode(report))
    finally:
        sys.setrecursionlimit(old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m pyfory inspect FILE")
