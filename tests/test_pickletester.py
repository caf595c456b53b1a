"""CPython's own pickle test-suite, run against pyfory.

``test.pickletester.AbstractPickleTests`` (standard library ``test`` package) is the
reference for pickle's semantics: the reduce protocol, ``__getstate__``/``__setstate__``,
``__getnewargs__``, subclasses of builtins, recursive structures, classes by reference.
Its ``dumps``/``loads`` hooks are ``pyfory.dumps``/``pyfory.loads``, the drop-ins for pickle's.

Tests about what only pickle has (opcodes, framing, protocol numbers, the extension
registry, Python 2 compatibility, the Pickler/Unpickler objects) are skipped, each with
its reason (``SKIPS``). pyfory has a single protocol and ignores ``proto``: tests that
only differ by protocol *before* 5 in what they expect run with ``protocols = [5]``
(``PROTOCOL_5_ONLY``). Where a skipped test also checks a round trip, that round trip is
checked by a ``test_pyfory_*`` counterpart below.

Errors are pyfory's own, with nothing converted here: what ``loads`` raises for bad input
is also a ``pickle.UnpicklingError`` and what ``dumps`` raises is also a
``pickle.PicklingError`` (``pyfory.error``), which is what those tests check. An exception
raised by a constructor, ``__setstate__`` or another callable of the payload comes as a
``DeserializationError`` (an ``UnpicklingError``) with the original as ``__cause__``,
where pickle lets it propagate as is: ``loads`` below re-raises that original (3.13's
``test_pickle_setstate_None`` checks it).
"""

from __future__ import annotations

import builtins
import pickle
import unittest
from unittest import mock

import pytest

import pyfory
from pyfory.error import DeserializationError

try:
    from test import pickletester
    from test.pickletester import AbstractPickleTests
except ImportError as exc:  # pragma: no cover - interpreters without the `test` package
    pytest.skip(f"the standard library `test` package (test.pickletester) is not available: {exc}",
                allow_module_level=True)


class PyMethodsTest:
    """test_py_methods's classes, importable (the original defines them as it runs)."""

    @staticmethod
    def cheese():
        return "cheese"

    @classmethod
    def wine(cls):
        assert cls is PyMethodsTest
        return "wine"

    def biscuits(self):
        assert isinstance(self, PyMethodsTest)
        return "biscuits"

    class Nested:
        @staticmethod
        def ketchup():
            return "ketchup"

        @classmethod
        def maple(cls):
            assert cls is PyMethodsTest.Nested
            return "maple"

        def pie(self):
            assert isinstance(self, PyMethodsTest.Nested)
            return "pie"


class Subclass(tuple):
    """test_c_methods's classes, importable."""

    class Nested(str):
        pass


_OPCODES = "checks pickle opcodes in the payload (pyfory has its own wire format)"

SKIPS = {
    # pickle's wire format: opcodes, framing, memo, protocol header
    "test_appends_on_non_lists": _OPCODES + " (APPEND/APPENDS); round trip: test_pyfory_appends_setitems",
    "test_setitems_on_non_dicts": _OPCODES + " (SETITEM/SETITEMS); round trip: test_pyfory_appends_setitems",
    "test_bytearray": _OPCODES + " (BYTEARRAY8/GLOBAL); bytearray round trips are in test_builtins.py",
    "test_complex_newobj": _OPCODES + " (NEWOBJ, BININT2, unicode opcodes); round trip: test_pyfory_newobj",
    "test_complex_newobj_ex": _OPCODES + " (NEWOBJ_EX); round trip: test_pyfory_newobj",
    "test_simple_newobj": _OPCODES + " (NEWOBJ, BININT2); round trip: test_pyfory_newobj",
    "test_dict_chunking": _OPCODES + " (SETITEMS batching)",
    "test_list_chunking": _OPCODES + " (APPENDS batching)",
    "test_set_chunking": _OPCODES + " (ADDITEMS batching)",
    "test_long1": _OPCODES + " (LONG1); big ints: test_pyfory_long_sizes and test_builtins.py",
    "test_long4": _OPCODES + " (LONG4); big ints: test_pyfory_long_sizes and test_builtins.py",
    "test_int_pickling_efficiency": _OPCODES + " (LONG); size monotonicity: test_pyfory_long_sizes",
    "test_singletons": _OPCODES + " (NONE/NEWTRUE/NEWFALSE); singletons round trip in test_builtins.py",
    "test_short_tuples": _OPCODES + " (TUPLE1/2/3); tuples round trip in test_builtins.py",
    "test_proto": "checks pickle's PROTO header and its 'unsupported pickle protocol' error",
    "test_float_format": "checks the text of protocol 0's FLOAT opcode",
    "test_framing_many_objects": "checks pickle protocol 4 framing (FRAME opcodes)",
    "test_framing_large_objects": "checks pickle protocol 4 framing (FRAME opcodes)",
    "test_optional_frames": "checks pickle protocol 4 framing (FRAME opcodes)",
    "test_framed_write_sizes_with_delayed_writer": "checks how pickle.Pickler writes frames to a file",
    "test_evil_pickler_mutating_collection": "needs pickle's Pickler class (persistent_id hook)",
    "test_global_ext1": "pickle's copyreg extension registry (EXT1 opcode)",
    "test_global_ext2": "pickle's copyreg extension registry (EXT2 opcode)",
    "test_global_ext4": "pickle's copyreg extension registry (EXT4 opcode)",
    "test_compat_pickle": "Python 2 names written by protocols 0-2 (fix_imports)",
    "test_pickle_to_2x": "Python 2 compatible output of protocols 0-2",
    # out-of-band buffers: the opcode-free parts are in tests of the buffer issue
    "test_in_band_buffers": _OPCODES + " (SHORT_BINBYTES/BYTEARRAY8/NEXT_BUFFER)",
    "test_oob_buffers": _OPCODES + " (NEXT_BUFFER/READONLY_BUFFER) and needs protocols < 5 to fail",
    "test_picklebuffer_error": "expects PickleBuffer to be refused by protocols 0-4 (pyfory has one "
                               "protocol); the refusal pickle 5 makes: test_pyfory_picklebuffer_error",
    # pyfory's semantics deliberately differ here
    "test_local_lookup_error": "expects a local function to be unpicklable; pyfory sends it by value "
                               "(cloudpickle semantics)",
    "test_bad_getattr": "expects RuntimeError only for protocols 0-1 (copyreg._reduce_ex path); "
                        "the protocol 2+ part: test_pyfory_bad_getattr",
    "test_py_methods": "expects staticmethod/classmethod objects to be refused; pyfory sends them "
                       "(cloudpickle semantics: class dicts by value hold them); the methods part: "
                       "test_pyfory_py_methods",
    "test_c_methods": "expects a staticmethod object (bytearray.__dict__['maketrans']) to be refused; "
                      "pyfory sends it (cloudpickle semantics); the methods part: test_pyfory_c_methods",
}

PROTOCOL_5_ONLY = {
    "test_builtin_exceptions": "protocols 0-2 map OSError/ImportError subclasses to Python 2 names",
    "test_reduce_ex_called": "checks that __reduce_ex__ receives the requested protocol number",
    "test_reduce_ex_calls_base": "checks that __reduce_ex__ receives the requested protocol number",
    "test_reduce_ex_overrides_reduce": "checks that __reduce_ex__ receives the requested protocol number",
}


def _skip(reason):
    def skipped(self):
        self.skipTest(reason)
    return skipped


def _at_protocol_5(test):
    def run(self):
        with mock.patch.object(pickletester, "protocols", [pickle.HIGHEST_PROTOCOL]):
            test(self)
    run.__doc__ = test.__doc__
    return run


class PyforyPickleTests(AbstractPickleTests, unittest.TestCase):
    """AbstractPickleTests with pyfory as pickle."""

    def dumps(self, arg, proto=None, **kwargs):
        return pyfory.dumps(arg, proto, **kwargs)

    def loads(self, buf, **kwds):
        try:
            return pyfory.loads(buf, **kwds)
        except DeserializationError as e:
            # pickle lets what a constructor or __setstate__ raised propagate as is;
            # pyfory wraps it (the original is the __cause__): the tests check the original
            if e.__cause__ is None:
                raise
            raise e.__cause__ from None

    # ---- counterparts of skipped tests: their round-trip parts -----------------------
    def test_pyfory_appends_setitems(self):
        # __reduce__ returning listitems / dictitems for objects that are not lists/dicts
        for obj in (pickletester.REX_six([1, 2, 3]), pickletester.REX_seven({1: -1, 2: -2, 3: -3})):
            self.assertEqual(self.loads(self.dumps(obj)), obj)

    def test_pyfory_newobj(self):
        for cls, args, kwargs in ((pickletester.SimpleNewObj, (0xFACE,), {}),
                                  (pickletester.ComplexNewObj, (0xFACE,), {}),
                                  (pickletester.ComplexNewObjEx, (0xFACE,), {})):
            x = cls.__new__(cls, *args, **kwargs)  # avoid __init__
            x.abc = 666
            y = self.loads(self.dumps(x))  # raises TypeError if __init__ is called
            self.assert_is_copy(x, y)

    def test_pyfory_long_sizes(self):
        for n in range(200):
            for x in (2**n, -(2**n), 2**n - 1, -(2**n) + 1):
                self.assert_is_copy(x, self.loads(self.dumps(x)))
        sizes = [len(self.dumps(2**n)) for n in range(200)]
        self.assertEqual(sorted(sizes), sizes)
        x = 12345678910111213141516178920 << (256 * 8)
        self.assert_is_copy(x, self.loads(self.dumps(x)))

    def test_pyfory_bad_getattr(self):
        x = pickletester.BadGetattr()
        self.dumps(x)   # __getattr__ loops forever; pyfory must not look attributes up on x

    def test_pyfory_picklebuffer_error(self):
        # what protocol 5 refuses: a PickleBuffer over a non-contiguous buffer
        strided = memoryview(bytearray(range(100))).cast("B", (10, 10))[::2]
        for callback in (None, [].append):
            with self.assertRaises(pickle.PicklingError):
                self.dumps(pickle.PickleBuffer(strided), buffer_callback=callback)
        self.assertEqual(bytes(self.loads(self.dumps(pickle.PickleBuffer(b"foobar")))), b"foobar")

    def test_pyfory_py_methods(self):
        for method in (PyMethodsTest.cheese, PyMethodsTest.wine, PyMethodsTest().biscuits,
                       PyMethodsTest.Nested.ketchup, PyMethodsTest.Nested.maple,
                       PyMethodsTest.Nested().pie):
            with self.subTest(method=method):
                self.assertEqual(self.loads(self.dumps(method))(), method())
        for method, cls in ((PyMethodsTest.biscuits, PyMethodsTest),
                            (PyMethodsTest.Nested.pie, PyMethodsTest.Nested)):
            with self.subTest(method=method):
                self.assertEqual(self.loads(self.dumps(method))(cls()), method(cls()))

    def test_pyfory_c_methods(self):
        c_methods = (
            ("abcd".index, ("c",)), (str.index, ("abcd", "c")), ([1, 2, 3].__len__, ()),
            (list.__len__, ([1, 2, 3],)), ({1, 2}.__contains__, (2,)), (set.__contains__, ({1, 2}, 2)),
            (dict.fromkeys, (("a", 1), ("b", 2))), (bytearray.maketrans, (b"abc", b"xyz")),
            (Subclass([1, 2, 2]).count, (2,)), (Subclass.count, (Subclass([1, 2, 2]), 2)),
            (Subclass.Nested("sweet").count, ("e",)), (Subclass.Nested.count, (Subclass.Nested("sweet"), "e")),
        )
        for method, args in c_methods:
            with self.subTest(method=method):
                self.assertEqual(self.loads(self.dumps(method))(*args), method(*args))

    def test_pyfory_builtin_exception_classes(self):
        for t in builtins.__dict__.values():
            if isinstance(t, type) and issubclass(t, BaseException):
                self.assertIs(self.loads(self.dumps(t)), t)


for _name, _reason in SKIPS.items():
    if hasattr(AbstractPickleTests, _name):
        setattr(PyforyPickleTests, _name, _skip(_reason))
for _name, _reason in PROTOCOL_5_ONLY.items():
    if hasattr(AbstractPickleTests, _name):
        setattr(PyforyPickleTests, _name, _at_protocol_5(getattr(AbstractPickleTests, _name)))
del _name, _reason
