"""Mutation fuzzing of real pyfory payloads (run in a child process by test_fuzz.py).

Every mutated payload must load or fail with a pyfory.error.ForyError, in bounded
time; anything else (another exception, a crash, a hang) is a bug. Prints one JSON
line with the counts; exits 1 and prints the offending cases if any.

usage: python fuzz_payloads.py [--seconds S] [--seed N]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import fractions
import io
import json
import os
import random
import sys
import time
import uuid

# importable classes (they travel by reference); the script's folder is on sys.path
from fuzz_models import BufferBacked, Color, Pair, Plain, Point, Reduced, Slotted  # noqa: E402

import pyfory
from pyfory.error import ForyError


def corpus_values():
    shared = [1, "s"]
    cyclic = [1]
    cyclic.append(cyclic)
    values = [
        None, True, 0, -1, 2**63, -(2**100), 1.5, float("inf"), "ascii", "latin\xe9", "日本語\U0001f600",
        "\ud800", b"bytes", bytearray(b"ba"), [1, 2, 3], [1.5, 2.5], ["a", "b", "a"], [1, "x", None, 2.0],
        (1, 2), ("a", (1, [2])), {"k": 1, "j": [1, {"z": None}]}, {"a": "b"}, {1: 2.0, 3: 4.0}, {"f": 1.5},
        {1, 2, 3}, {"x", "y"}, frozenset({1, "a"}), 3 + 4j, range(1, 9, 2), slice(1, None), ..., NotImplemented,
        datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.timezone.utc), datetime.date(2020, 1, 1),
        datetime.time(1, 2, 3), datetime.timedelta(days=-1, seconds=3), decimal.Decimal("-1.50E+3"),
        fractions.Fraction(3, 7), uuid.UUID(int=12345), int, str, type(None),
        collections.OrderedDict(a=1), collections.defaultdict(list, a=[1]), collections.deque([1, 2], 4),
        collections.Counter("abca"), Point(1, 2.0, ["t"]), [Point(i) for i in range(3)], Plain(), Slotted(),
        Color.BLUE, Pair(1, "r"), Reduced([1, 2]), ValueError("bad", 3), [shared, shared], cyclic,
        len, [].append, os.path.join, pyfory.error, BufferBacked(b"0123456789abcdef"),
        [BufferBacked(b"xy"), BufferBacked(b"z" * 40)],
    ]
    return values


def more_values():
    """Functions, classes by value and numpy arrays, when this build has them."""
    out = []
    k = 3
    out.append(lambda x: x * k)

    def local_fn(a, b=2):
        return a + b + k

    out.append(local_fn)

    class Local:
        attr = 1

        def m(self):
            return self.attr

    out.extend([Local, Local(), Local().m])
    try:
        import numpy as np

        out.extend([np.arange(12.0).reshape(3, 4), np.array(["a", "bc"]), np.float32(1.5),
                    np.zeros((2, 2), order="F"), np.matrix([[1.0, 2.0]])])
    except ImportError:
        pass
    return out


def build_corpus():
    corpus = []
    for ref in (False, True):
        fory = pyfory.Fory(ref=ref, strict=False)
        for value in corpus_values() + more_values():
            if value is not None and not ref and isinstance(value, list) and value and value[-1] is value:
                continue
            try:
                corpus.append((ref, False, fory.dumps(value)))
                bufs = []
                data = fory.dumps(value, buffer_callback=lambda b, bufs=bufs: bufs.append(b) or False)
            except Exception:  # noqa: BLE001 - a kind this build cannot write is left out
                continue
            if bufs:
                corpus.append((ref, True, data))
    strict = pyfory.Fory()
    strict.register(Point)
    corpus.append((False, False, strict.dumps([Point(1), Point(2)])))
    return corpus


def lying_lengths():
    """Headers whose count or length fields claim far more than the input holds."""
    head = b"\xfd\x59\x02\x00"
    big = bytes([0xFF] * 8 + [0x7F])
    return [head + bytes([tag]) + big + b"\x00" * 8 for tag in range(0, 20)] + [
        head + b"\x08\x80\x80\x80\x80\x80\x80\x01\x00",  # list of 2**48 items
        head + b"\x06\xff\xff\xff\xff\x0f",              # huge string
        head + b"\x0a\xff\xff\xff\xff\x0f\x66",          # huge dict
    ]


class Runner:
    def __init__(self):
        self.cases = 0
        self.failures = []
        self.readers = {
            False: pyfory.Fory(strict=False),
            True: pyfory.Fory(strict=False, ref=True),
            "strict": pyfory.Fory(),
        }

    def check(self, data, reader, oob):
        self.cases += 1
        fory = self.readers[reader]
        try:
            fory.loads(data, buffers=[b"\0" * 16] * 8 if oob else None)
        except ForyError as e:
            # a strict reader calls no foreign code: a MemoryError or SystemError behind
            # its error can only come from pyfory itself
            cause = e.__cause__
            if reader == "strict" and isinstance(cause, (MemoryError, SystemError)) and len(self.failures) < 20:
                self.failures.append(f"strict reader: {type(cause).__name__}: {cause} :: {data[:48].hex()}")
        except Exception as e:  # noqa: BLE001 - any other exception is the bug we look for
            if len(self.failures) < 20:
                self.failures.append(f"{type(e).__name__}: {e} :: {data[:48].hex()}")

    def stream_case(self, data):
        self.cases += 1
        stream = io.BytesIO(pyfory.Fory().dumps(1) + data)
        fory = self.readers[False]
        try:
            fory.load(stream)
            fory.load(stream)
        except (ForyError, EOFError):
            pass
        except Exception as e:  # noqa: BLE001
            if len(self.failures) < 20:
                self.failures.append(f"stream {type(e).__name__}: {e}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-random", type=int, default=20_000,
                        help="random cases to run even when the time budget is spent (a busy machine)")
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    runner = Runner()
    corpus = build_corpus()
    # deterministic part, always run to the end (about a second): every truncation and
    # single-byte change of every payload
    for ref, oob, data in corpus:
        for i in range(len(data)):
            runner.check(data[:i], ref, oob)
        for i in range(len(data)):
            original = data[i]
            for b in {0, 0xFF, 0x7F, 0x80, original ^ 1, original ^ 0x40, rnd.randrange(256)}:
                mutated = bytearray(data)
                mutated[i] = b
                runner.check(bytes(mutated), ref, oob)
                runner.check(bytes(mutated), "strict", oob)
    for data in lying_lengths():
        runner.check(data, False, False)
        runner.check(data, True, False)
        runner.stream_case(data[4:])
    systematic = runner.cases
    # random part, until the time budget is spent (and at least --min-random cases)
    while time.monotonic() < deadline or runner.cases < systematic + args.min_random:
        ref, oob, data = corpus[rnd.randrange(len(corpus))]
        mutated = bytearray(data)
        for _ in range(rnd.randrange(1, 8)):
            op = rnd.randrange(4)
            pos = rnd.randrange(4, len(mutated) + 1) if len(mutated) > 4 else 4
            if op == 0 and pos < len(mutated):
                mutated[pos] = rnd.randrange(256)
            elif op == 1 and pos < len(mutated):
                del mutated[pos]
            elif op == 2:
                mutated[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 5)))
            else:
                other = corpus[rnd.randrange(len(corpus))][2]
                start = rnd.randrange(4, max(5, len(other)))
                mutated[pos:pos] = other[start:start + rnd.randrange(1, 12)]
        runner.check(bytes(mutated), ref, oob)
        if rnd.random() < 0.05:
            runner.check(b"\xfd\x59\x02" + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40))), ref, oob)
            runner.stream_case(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 12))))
    # the readers still work after all those failures
    for fory in runner.readers.values():
        value = {"after": [1, 2.5, "fuzz"]}
        assert fory.loads(fory.dumps(value)) == value
    print(json.dumps({"cases": runner.cases, "systematic": systematic, "corpus": len(corpus),
                      "failures": runner.failures}))
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
