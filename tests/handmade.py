"""A small encoder that writes pyfory payloads by hand, from docs/format.md.

The safety tests use it the way an attacker would: they never call `dumps`, they write
bytes. Each helper returns the bytes of one wire element; compose them with `+`.
"""

from __future__ import annotations

import struct

# value tags (docs/format.md §3)
T_NONE, T_TRUE, T_FALSE, T_INT, T_BIGINT, T_FLOAT, T_STR, T_BYTES = range(8)
T_LIST, T_TUPLE, T_DICT, T_SET, T_FROZENSET, T_BYTEARRAY, T_COMPLEX, T_REF = range(8, 16)
T_OBJECT, T_TYPE, T_BUFFER, T_FLOAT32 = 16, 17, 18, 19
T_SDICT = 20            # 20..23: str keys, values K_ANY / K_INT / K_FLOAT / K_STR
T_DISCARD = 0x80
# tags that carry their value or count (n = tag - base)
FIX_LIST, FIX_TUPLE, FIX_DICT, FIX_STR, FIX_INT_ZERO = 0x20, 0x30, 0x40, 0xA0, 0xD0
HEADER_BASE = 0x50      # the payload's first byte when it has flags (§2)
# element kinds (§4)
K_ANY, K_INT, K_FLOAT, K_STR, K_OBJECT = 0, 3, 5, 6, 16
# type descriptor kinds (§6)
D_INTERNAL, D_USER_ID, D_NAME, D_USER_NAME, D_BY_VALUE = range(5)
# wire kinds (§6)
W_CUSTOM, W_LAYOUT, W_REDUCE, W_ENUM, W_NAMEDTUPLE = range(5)
# reduce construction forms (§7.3)
F_GLOBAL, F_NEWOBJ, F_NEWOBJ_EX, F_CALL = range(4)
S_STATE, S_LIST, S_DICT, S_SETTER = 1, 2, 4, 8

REF, OOB = 1, 4
COMPATIBLE = 0          # (a header flag until format version 2; kept for the call sites)


def header(flags: int = 0) -> bytes:
    """The payload's header: none without flags, else one byte (§2)."""
    return bytes([HEADER_BASE | flags]) if flags else b""


def payload(value: bytes, ref: bool = False) -> bytes:
    return header(REF if ref else 0) + value


def varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint(v: int) -> bytes:
    return varuint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def str_body(s: str) -> bytes:
    """A string without table registration (§1.1), ASCII or UTF-8."""
    if s.isascii():
        data, enc = s.encode("ascii"), 0
    else:
        data, enc = s.encode("utf-8", "surrogatepass"), 2
    return varuint((len(data) << 3) | enc) + data


# ---- values -------------------------------------------------------------------------
def none() -> bytes:
    return bytes([T_NONE])


def int_(v: int) -> bytes:
    if -(1 << 63) <= v < (1 << 63):
        return bytes([T_INT]) + varint(v)
    n = (v.bit_length() + 8) // 8
    return bytes([T_BIGINT]) + varuint(n) + v.to_bytes(n, "little", signed=True)


def float_(v: float) -> bytes:
    return bytes([T_FLOAT]) + struct.pack("<d", v)


def str_(s: str) -> bytes:
    return bytes([T_STR]) + str_body(s)


def bytes_(b: bytes) -> bytes:
    return bytes([T_BYTES]) + varuint(len(b)) + b


def fix_int(v: int) -> bytes:
    assert -16 <= v <= 47
    return bytes([FIX_INT_ZERO + v])


def fix_str(s: str) -> bytes:
    data = s.encode("latin-1")
    assert len(data) <= 31
    return bytes([FIX_STR + len(data)]) + data


def fix_list(*items: bytes) -> bytes:
    return bytes([FIX_LIST + len(items)]) + b"".join(items)


def fix_tuple(*items: bytes) -> bytes:
    return bytes([FIX_TUPLE + len(items)]) + b"".join(items)


def fix_dict(*pairs) -> bytes:
    """A dict of up to 15 pairs: each key a string body (str_body), each value tagged."""
    return bytes([FIX_DICT + len(pairs)]) + b"".join(k + v for k, v in pairs)


def ref(i: int) -> bytes:
    return bytes([T_REF]) + varuint(i)


def tuple_(*items: bytes) -> bytes:
    return _seq(T_TUPLE, items)


def list_(*items: bytes) -> bytes:
    return _seq(T_LIST, items)


def set_(*items: bytes) -> bytes:
    return _seq(T_SET, items)


def frozenset_(*items: bytes) -> bytes:
    return _seq(T_FROZENSET, items)


def _seq(tag: int, items) -> bytes:
    if not items:
        return bytes([tag, 0])
    return bytes([tag]) + varuint(len(items)) + bytes([K_ANY]) + b"".join(items)


def dict_(*pairs) -> bytes:
    if not pairs:
        return bytes([T_DICT, 0])
    return (bytes([T_DICT]) + varuint(len(pairs)) + bytes([K_ANY])
            + b"".join(k + v for k, v in pairs))


def packed_objects(tag: int, n: int, descriptor: bytes, item: bytes = b"") -> bytes:
    """A list/tuple of n instances of one class (K_OBJECT), each item `item` bytes."""
    return bytes([tag]) + varuint(n) + bytes([K_OBJECT]) + descriptor + item * n


# ---- type descriptors (§6) ------------------------------------------------------------
def internal(type_id: int) -> bytes:
    return varuint(D_INTERNAL << 1) + varuint(type_id)


def named(module: str, qualname: str, wire_kind: int = W_REDUCE) -> bytes:
    return varuint(D_NAME << 1) + bytes([wire_kind]) + str_body(module) + str_body(qualname)


def user_id(type_id: int, wire_kind: int = W_LAYOUT) -> bytes:
    return varuint(D_USER_ID << 1) + bytes([wire_kind]) + varuint(type_id)


def type_ref(index: int) -> bytes:
    """A back-reference to entry `index` of the payload's type table."""
    return varuint((index << 1) | 1)


def type_value(descriptor: bytes) -> bytes:
    return bytes([T_TYPE]) + descriptor


def obj(descriptor: bytes, body: bytes = b"") -> bytes:
    return bytes([T_OBJECT]) + descriptor + body


# ---- reduce objects (§7.3) -----------------------------------------------------------
def reduce_call(descriptor: bytes, func: bytes, args: bytes, state: bytes = b"\x00") -> bytes:
    """T_OBJECT of a reduce-serialized class whose construction is `func(*args)`."""
    return obj(descriptor, bytes([F_CALL]) + func + args + state)


def reduce_newobj(descriptor: bytes, cls: bytes, args: bytes, state: bytes = b"\x00") -> bytes:
    return obj(descriptor, bytes([F_NEWOBJ]) + cls + args + state)


def reduce_global(descriptor: bytes, module: str, qualname: str) -> bytes:
    return obj(descriptor, bytes([F_GLOBAL]) + str_body(module) + str_body(qualname) + b"\x00")
