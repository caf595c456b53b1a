"""Classes for the fuzz corpus, importable by reference."""

import collections
import enum
from dataclasses import dataclass, field


@dataclass
class Point:
    x: int
    y: float = 0.0
    tags: list = field(default_factory=list)


class Plain:
    def __init__(self, a=1):
        self.a = a
        self.b = "text"


class Slotted:
    __slots__ = ("p", "q")

    def __init__(self):
        self.p = 1
        self.q = [1, 2]


class Color(enum.Enum):
    RED = 1
    BLUE = 2


Pair = collections.namedtuple("Pair", "left right")


class Reduced:
    def __init__(self, v):
        self.v = v

    def __reduce__(self):
        return (Reduced, (self.v,), {"extra": self.v})


class BufferBacked:
    """Reduces to a callable applied to a PickleBuffer, as numpy arrays do with protocol 5."""

    def __init__(self, data: bytes):
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol):
        import pickle

        return (rebuild_buffer_backed, (pickle.PickleBuffer(self.data),))


def rebuild_buffer_backed(buf):
    obj = BufferBacked.__new__(BufferBacked)
    obj.data = memoryview(buf)
    return obj
