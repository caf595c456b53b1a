"""Functions and classes by value loaded in a fresh `python` that never defined them.

The payload goes to the child on stdin (or through a file); the child prints what the
loaded functions and classes compute, as JSON, and the test compares it with what the
originals compute here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import subprocess
import sys
import textwrap
import typing

import pytest

import pyfory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(pyfory.__file__)))
TIMEOUT = 120


def run_python(args, stdin=None, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, timeout=TIMEOUT,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout


def load_in_child(payload: bytes, body: str, ref: bool = True):
    """Load payload in a fresh interpreter as `value`, run body, return the JSON it prints."""
    code = "import json, sys, pyfory\n"
    code += f"value = pyfory.Fory(ref={ref}, strict=False).loads(sys.stdin.buffer.read())\n"
    code += textwrap.dedent(body)
    out = run_python(["-c", code], stdin=payload)
    return json.loads(out.decode().strip().splitlines()[-1])


def dumps(obj, ref=True):
    return pyfory.Fory(ref=ref, strict=False).dumps(obj)


# ---- functions ------------------------------------------------------------------------------
def test_lambda_closure_and_recursion(ref):
    def make():
        offset, label = 5, "r"

        def closure(x):
            return [label, x + offset]

        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        return [lambda x: 10 * x + 1, closure, fact, is_even]

    fns = make()
    expected = [fns[0](7), fns[1](2), fns[2](6), fns[3](9)]
    got = load_in_child(dumps(fns, ref), """
        f, closure, fact, is_even = value
        print(json.dumps([f(7), closure(2), fact(6), is_even(9)]))
    """, ref)
    assert got == expected


def test_shared_cells_and_generators(ref):
    def make():
        total = 0

        def add(k):
            nonlocal total
            total += k
            return total

        def peek():
            return total

        def squares(n):
            yield from (i * i for i in range(n))

        return add, peek, squares

    got = load_in_child(dumps(make(), ref), """
        add, peek, squares = value
        add(3); add(4)
        print(json.dumps([peek(), list(squares(4)), add.__closure__[0] is peek.__closure__[0]]))
    """, ref)
    assert got == [7, [0, 1, 4, 9], True]


def test_submodule_reached_through_a_global():
    namespace = {"__name__": "sender_module"}
    exec("import xml.dom.minidom\n"
         "def tag(text):\n"
         "    return xml.dom.minidom.parseString(text).documentElement.tagName\n", namespace)
    got = load_in_child(dumps(namespace["tag"]), """
        print(json.dumps(value("<root><a/></root>")))
    """)
    assert got == "root"


# ---- classes ----------------------------------------------------------------------------------
def _local_classes():
    class Base:
        def __init__(self, x):
            self.x = x

        def describe(self):
            return f"base {self.x}"

    class Item(Base):
        kind = "item"

        def __init__(self, x, qty):
            super().__init__(x)
            self.qty = qty

        def describe(self):
            return "item/" + super().describe()

        @property
        def double(self):
            return 2 * self.qty

        @classmethod
        def make(cls, x):
            return cls(x, 1)

        @staticmethod
        def helper(v):
            return v + 100

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

        def lower(self):
            return self.name.lower()

    @dataclasses.dataclass
    class Record:
        name: str
        tags: list = dataclasses.field(default_factory=list)

    T = typing.TypeVar("T")

    class Box(typing.Generic[T]):
        def __init__(self, item):
            self.item = item

    return Item, Color, Record, Box


def test_local_classes_and_instances(ref):
    item_cls, color, record, box = _local_classes()
    value = [item_cls, [item_cls(i, i * 2) for i in range(5)], color.BLUE, record("r"), box(3),
             item_cls(9, 9).describe]
    got = load_in_child(dumps(value, ref), """
        Item, items, blue, rec, box, bound = value
        print(json.dumps([
            [i.describe() for i in items], [i.double for i in items], Item.make(4).describe(),
            Item.helper(1), Item.kind, all(type(i) is Item for i in items),
            blue.lower(), type(blue)(1).name, repr(rec), rec.tags is not type(rec)("x").tags,
            type(box)[int](5).item, len(type(box).__parameters__), bound(),
            type(bound.__self__) is Item,
        ]))
    """, ref)
    assert got == [[f"item/base {i}" for i in range(5)], [4 * i for i in range(5)], "item/base 4", 101,
                   "item", True, "blue", "RED", repr(record("r")), True, 5, 1, "item/base 9", True]


def test_class_arriving_twice_is_the_same_class(ref):
    def make():
        class Message:
            def __init__(self, v):
                self.v = v

        return Message

    msg = make()
    redefined = make()
    fory = pyfory.Fory(ref=ref, strict=False)
    # two payloads of the same class (from two writers), one of a redefined class
    payloads = [fory.dumps(msg(1)), pyfory.Fory(ref=ref, strict=False).dumps(msg(2)), fory.dumps(redefined(3))]
    stream = b"".join(len(p).to_bytes(4, "little") + p for p in payloads)
    code = textwrap.dedent(f"""
        import json, sys, pyfory
        data = sys.stdin.buffer.read()
        out, pos = [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos:pos + 4], "little")
            out.append(pyfory.Fory(ref={ref}, strict=False).loads(data[pos + 4:pos + 4 + n]))
            pos += 4 + n
        a, b, c = out
        print(json.dumps([type(a) is type(b), isinstance(b, type(a)), type(c) is type(a),
                          type(c).__qualname__ == type(a).__qualname__, a.v + b.v + c.v]))
    """)
    got = json.loads(run_python(["-c", code], stdin=stream).decode())
    assert got == [True, True, False, True, 6]


def test_class_sent_back_is_the_original_class(ref):
    def make():
        class Result:
            def __init__(self, v):
                self.v = v

        return Result

    result_cls = make()
    out = run_python(["-c", textwrap.dedent(f"""
        import sys, pyfory
        fory = pyfory.Fory(ref={ref}, strict=False)
        cls = fory.loads(sys.stdin.buffer.read())
        sys.stdout.buffer.write(fory.dumps([cls(41), lambda r: r.v + 1]))
    """)], stdin=dumps(result_cls, ref))
    obj, fn = pyfory.Fory(ref=ref, strict=False).loads(out)
    assert type(obj) is result_cls
    assert fn(obj) == 42


# ---- a script's __main__ ------------------------------------------------------------------------
SENDER_SCRIPT = '''
import sys
import pyfory

counter = 0
SCALE = 3


def bump():
    global counter
    counter += 1
    return counter


def scaled(x):
    return x * SCALE


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Shape:
    sides = 0

    def describe(self):
        return f"{type(self).__name__} with {self.sides} sides, scaled {scaled(self.sides)}"


class Square(Shape):
    sides = 4


with open(sys.argv[1], "wb") as fh:
    pyfory.dump([bump, scaled, fib, Square(), Shape], fh)
    pyfory.dump(Square, fh)
'''

RECEIVER_SCRIPT = '''
import json, sys
import pyfory

with open(sys.argv[1], "rb") as fh:
    bump, scaled, fib, square, shape = pyfory.load(fh)
    square_again = pyfory.load(fh)
bump()
print(json.dumps([bump(), bump.__globals__ is scaled.__globals__, scaled(5), fib(12), square.describe(),
                  isinstance(square, shape), square_again is type(square), type(square).__module__,
                  "counter" in scaled.__globals__]))
'''


def test_functions_and_classes_of_a_script_main(tmp_path):
    sender = tmp_path / "sender.py"
    sender.write_text(SENDER_SCRIPT)
    receiver = tmp_path / "receiver.py"
    receiver.write_text(RECEIVER_SCRIPT)
    payload = tmp_path / "payload.bin"
    run_python([str(sender), str(payload)], cwd=str(tmp_path))
    got = json.loads(run_python([str(receiver), str(payload)], cwd=str(tmp_path)).decode())
    assert got == [2, True, 15, 144, "Square with 4 sides, scaled 12", True, True, "__main__", True]


def test_module_registered_by_value_is_not_needed_by_the_receiver(tmp_path):
    package = tmp_path / "sender_only_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tools.py").write_text(textwrap.dedent("""
        RATE = 0.5

        def apply(x):
            return x * RATE

        class Account:
            def __init__(self, balance):
                self.balance = balance

            def interest(self):
                return apply(self.balance)
    """))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import pyfory
        import sender_only_pkg.tools as tools
        pyfory.register_pickle_by_value(tools)
        sys.stdout.buffer.write(pyfory.dumps([tools.apply, tools.Account(10)]))
    """)
    payload = run_python(["-c", script])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = textwrap.dedent("""
        import json, sys, pyfory
        apply, account = pyfory.loads(sys.stdin.buffer.read())
        print(json.dumps([apply(4), account.interest(), type(account).__module__,
                          "sender_only_pkg.tools" in sys.modules]))
    """)
    out = run_python(["-c", code], stdin=payload, cwd=str(elsewhere))
    assert json.loads(out.decode()) == [2.0, 5.0, "sender_only_pkg.tools", False]


def test_strict_child_refuses_code_payload():
    code = textwrap.dedent("""
        import json, sys, pyfory
        try:
            pyfory.Fory().loads(sys.stdin.buffer.read())
            print(json.dumps("loaded"))
        except pyfory.ForyError as e:
            print(json.dumps(type(e).__name__))
    """)
    out = run_python(["-c", code], stdin=dumps(lambda: 1))
    assert json.loads(out.decode()) in ("TypeNotRegisteredError", "PolicyViolationError")


@pytest.mark.parametrize("payload_kind", ["lambda", "class"])
def test_payload_through_a_file(tmp_path, payload_kind):
    def make():
        class Local:
            def hello(self):
                return "hello"

        return Local

    value = (lambda: "hello") if payload_kind == "lambda" else make()
    path = tmp_path / "value.bin"
    with open(path, "wb") as fh:
        pyfory.dump(value, fh)
    code = textwrap.dedent(f"""
        import json, pyfory
        with open({str(path)!r}, "rb") as fh:
            v = pyfory.load(fh)
        print(json.dumps(v() if {payload_kind == "lambda"} else v().hello()))
    """)
    assert json.loads(run_python(["-c", code]).decode()) == "hello"
