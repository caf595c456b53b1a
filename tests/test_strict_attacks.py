"""Payloads written by hand (tests/handmade.py), aimed at the reader as an attacker
would: the gadget chains, type objects handed out by internal id, and the inputs that
make work or memory grow faster than their size. Each attack runs in a child process
with a memory limit and a timeout, and must end in a pyfory error with no side effect
(the marker file its gadget would create stays absent)."""

from __future__ import annotations

import collections
import fractions
import os
import struct
import subprocess
import sys
import textwrap

import pytest

import pyfory
from pyfory.error import LimitExceededError, MalformedDataError, PolicyViolationError, TypeNotRegisteredError

sys.path.insert(0, os.path.dirname(__file__))
import handmade as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# internal type ids (docs/format.md §6.1)
ID_PUREPOSIXPATH, ID_MODULE, ID_PARTIAL = 36, 40, 46
ID_ITEMGETTER, ID_ATTRGETTER, ID_METHODCALLER = 47, 48, 49
ID_FUNCTION, ID_ELLIPSIS, ID_FRACTION = 51, 17, 25
ID_PATTERN = 35


def gadget_chain(marker: str, exc_descriptor: bytes) -> bytes:
    """methodcaller('system', cmd)(itemgetter('os')(attrgetter('__reduce__.__globals__')(
    PurePosixPath))), every step a reduce CALL inside an allowed exception class."""
    def call(func, args, first=False):
        return h.reduce_call(exc_descriptor if first else h.type_ref(0), func, args)
    getter = call(h.type_value(h.internal(ID_ATTRGETTER)), h.tuple_(h.str_("__reduce__.__globals__")))
    module_globals = call(getter, h.tuple_(h.type_value(h.internal(ID_PUREPOSIXPATH))))
    item = call(h.type_value(h.internal(ID_ITEMGETTER)), h.tuple_(h.str_("os")))
    os_module = call(item, h.tuple_(module_globals))
    system = call(h.type_value(h.internal(ID_METHODCALLER)),
                  h.tuple_(h.str_("system"), h.str_(f"touch {marker}")))
    return h.payload(call(system, h.tuple_(os_module), first=True))


def run_child(code: str, timeout: float = 60, memory_mb: int = 1024) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with an address-space limit; the attack must not
    crash it, exhaust it or outlast the timeout."""
    prologue = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} << 20, {memory_mb} << 20))
        sys.path.insert(0, {HERE!r})
        import handmade as h
        import pyfory
    """)
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)


def expect_child_error(code: str, error: str, **kw) -> None:
    proc = run_child(textwrap.dedent(code) + "\nprint('NO ERROR')\n", **kw)
    assert proc.returncode != 0, proc.stdout
    assert "NO ERROR" not in proc.stdout
    assert f"pyfory.error.{error}" in proc.stderr, proc.stderr[-2000:]


# ---- the call form: a strict reader never calls what the payload chose --------------
@pytest.mark.parametrize("exc", [("builtins", "ValueError"), ("builtins", "OSError")])
def test_gadget_chain_in_strict_mode_runs_nothing(tmp_path, exc):
    marker = str(tmp_path / "pwned")
    data = gadget_chain(marker, h.named(*exc))
    assert len(data) < 200
    code = f"pyfory.Fory().loads({data!r})"
    expect_child_error(code, "TypeNotRegisteredError")
    assert not os.path.exists(marker)


def test_call_form_refuses_a_payload_chosen_callable_even_if_allowed(tmp_path):
    # `dict` is an allowed type object; a ValueError rebuilt by calling it is not
    data = h.payload(h.reduce_call(h.named("builtins", "ValueError"), h.type_value(h.internal(8)),
                                   h.tuple_()))
    with pytest.raises(PolicyViolationError, match="only with its own class"):
        pyfory.Fory().loads(data)
    # and newobj with another class than the one named
    data = h.payload(h.reduce_newobj(h.named("builtins", "ValueError"), h.type_value(h.internal(8)),
                                     h.tuple_()))
    with pytest.raises(PolicyViolationError):
        pyfory.Fory().loads(data)


def test_state_setter_and_dunder_state_refused_in_strict():
    ve = h.named("builtins", "ValueError")
    with_setter = h.reduce_call(ve, h.type_value(h.type_ref(0)), h.tuple_(h.str_("x")),
                                state=bytes([h.S_STATE | h.S_SETTER]) + h.none() + h.dict_())
    with pytest.raises(PolicyViolationError, match="state_setter"):
        pyfory.Fory().loads(h.payload(with_setter))
    dunder = h.reduce_call(ve, h.type_value(h.type_ref(0)), h.tuple_(h.str_("x")),
                           state=bytes([h.S_STATE]) + h.dict_((h.str_("__class__"), h.type_value(h.internal(14)))))
    with pytest.raises(PolicyViolationError, match="__class__"):
        pyfory.Fory().loads(h.payload(dunder))
    plain = h.reduce_call(ve, h.type_value(h.type_ref(0)), h.tuple_(h.str_("x")),
                          state=bytes([h.S_STATE]) + h.dict_((h.str_("note"), h.int_(3))))
    err = pyfory.Fory().loads(h.payload(plain))
    assert type(err) is ValueError and err.args == ("x",) and err.note == 3


@pytest.mark.parametrize("type_id", [ID_MODULE, ID_PARTIAL, ID_ITEMGETTER, ID_ATTRGETTER,
                                     ID_METHODCALLER, ID_FUNCTION, 41, 42, 43, 44, 45, 52, 53,
                                     54, 55, 56, 57, 58, 60, *range(65, 83)])
def test_code_like_type_objects_refused_by_internal_id(type_id):
    # 65-82: dict views, weak collections, files, descriptors, abc's abstract wrappers
    data = h.payload(h.type_value(h.internal(type_id)))
    assert len(data) - 4 <= 3          # three bytes after the header
    with pytest.raises(TypeNotRegisteredError, match="strict mode refuses"):
        pyfory.Fory().loads(data)
    # the same type object loads with strict=False (it is not malformed, only refused)
    assert isinstance(pyfory.Fory(strict=False).loads(data), type)


def test_strict_writer_refuses_the_same_type_objects():
    import operator
    import types
    import weakref
    for cls in (operator.attrgetter, types.FunctionType, types.ModuleType, type({}.keys()),
                weakref.WeakSet, types.GetSetDescriptorType):
        with pytest.raises(TypeNotRegisteredError):
            pyfory.Fory().dumps(cls)


def test_registered_class_globals_not_reachable(tmp_path):
    # with one class registered, attrgetter('__init__.__globals__') over it used to
    # return its module's __dict__
    from policy_models import Plain
    fory = pyfory.Fory()
    fory.register(Plain)
    ve = h.named("builtins", "ValueError")
    getter = h.reduce_call(h.type_ref(0), h.type_value(h.internal(ID_ATTRGETTER)),
                           h.tuple_(h.str_("__init__.__globals__")))
    data = h.payload(h.reduce_call(ve, getter, h.tuple_(h.type_value(h.named("policy_models", "Plain", 1)))))
    with pytest.raises(TypeNotRegisteredError):
        fory.loads(data)


# ---- policies see the real callable, by name and by internal id ----------------------
def test_no_gadgets_policy_stops_the_chain_named_by_internal_id(tmp_path):
    marker = str(tmp_path / "pwned")
    data = gadget_chain(marker, h.named("builtins", "ValueError"))
    code = f"""
        from policy_examples import NoGadgets
        pyfory.Fory(strict=False, policy=NoGadgets()).loads({data!r})
    """
    expect_child_error(code, "PolicyViolationError")
    assert not os.path.exists(marker)


def test_no_gadgets_policy_stops_os_system_behind_methodcaller_even_if_getattr_allowed(tmp_path):
    from policy_examples import NoGadgets

    class AllowGetattr(NoGadgets):
        BLOCKED_CALLABLES = tuple(f for f in NoGadgets.BLOCKED_CALLABLES if f is not getattr)

    marker = str(tmp_path / "pwned")
    seen = []

    class Recording(AllowGetattr):
        def intercept_reduce_call(self, callable_obj, args, **kwargs):
            seen.append(callable_obj)
            return super().intercept_reduce_call(callable_obj, args, **kwargs)

    with pytest.raises(PolicyViolationError, match="system"):
        pyfory.Fory(strict=False, policy=Recording()).loads(gadget_chain(marker, h.named("builtins", "ValueError")))
    assert not os.path.exists(marker)
    assert getattr in seen and os.system in seen        # the policy saw what really runs


def test_no_gadgets_policy_stops_os_system_named_by_module_and_name(tmp_path):
    from policy_examples import NoGadgets
    marker = str(tmp_path / "pwned")
    call = h.reduce_call(h.named("builtins", "ValueError"),
                         h.obj(h.internal(41), bytes([h.F_GLOBAL]) + h.str_body("os") + h.str_body("system") + b"\x00"),
                         h.tuple_(h.str_(f"touch {marker}")))
    with pytest.raises(PolicyViolationError):
        pyfory.Fory(strict=False, policy=NoGadgets()).loads(h.payload(call))
    assert not os.path.exists(marker)


def test_validate_class_and_module_fire_for_internal_ids():
    calls = []

    class Recorder(pyfory.DeserializationPolicy):
        def validate_class(self, cls, is_local=False, **kwargs):
            calls.append(("class", cls))

        def validate_module(self, module_name, is_local=False, **kwargs):
            calls.append(("module", module_name))

    pyfory.Fory(strict=False, policy=Recorder()).loads(h.payload(h.type_value(h.internal(ID_METHODCALLER))))
    import operator
    assert ("class", operator.methodcaller) in calls and ("module", "operator") in calls


def test_allowlist_policy_refuses_unlisted_classes_by_id_and_by_name():
    from policy_examples import OnlyModules
    policy = OnlyModules({"builtins", "datetime", "collections"})
    fory = pyfory.Fory(strict=False, policy=policy)
    import datetime
    assert fory.loads(fory.dumps(datetime.date(2024, 1, 2))) == datetime.date(2024, 1, 2)
    with pytest.raises(PolicyViolationError):
        fory.loads(h.payload(h.type_value(h.internal(ID_METHODCALLER))))
    with pytest.raises(PolicyViolationError):
        fory.loads(h.payload(h.type_value(h.named("os", "PathLike", 255))))


# ---- work and memory bounded by the input ------------------------------------------
def unbacked_lists(m: int) -> bytes:
    """m lists of Ellipsis (zero bytes per item), each claiming all the input after it."""
    tail = b""
    for i in range(m):
        desc = h.internal(ID_ELLIPSIS) if i == m - 1 else h.type_ref(0)
        tail = h.packed_objects(h.T_LIST, len(tail) + 1, desc) + tail
    return h.payload(bytes([h.T_LIST]) + h.varuint(m) + bytes([h.K_ANY]) + tail)


def test_zero_byte_items_have_a_budget():
    data = unbacked_lists(2000)             # ~10 KB claiming ~10 M items
    with pytest.raises(LimitExceededError, match="max_unbacked_container_items"):
        pyfory.Fory().loads(data)
    small = unbacked_lists(20)
    assert len(pyfory.Fory().loads(small)) == 20
    with pytest.raises(LimitExceededError):
        pyfory.Fory(max_unbacked_container_items=0).loads(small)
    # legitimate data of that shape still loads below the budget
    assert pyfory.Fory().loads(pyfory.Fory().dumps([...] * 5000)) == [...] * 5000


def test_zero_byte_items_in_a_child_stay_small():
    code = """
        import time
        from test_strict_attacks import unbacked_lists
        data = unbacked_lists(3000)
        pyfory.Fory(strict=False).loads(data)
    """
    expect_child_error(code, "LimitExceededError", memory_mb=512, timeout=60)


def hash_bomb(container: str, depth: int = 40) -> bytes:
    """t0 = (1,), t_i = (t_{i-1}, t_{i-1}); t_depth as a set element or dict key."""
    elems = [h.tuple_(h.int_(1))]              # ids: outer list 0, inner list 1, t0 2
    for i in range(1, depth + 1):
        elems.append(h.tuple_(h.ref(i + 1), h.ref(i + 1)))
    last = h.ref(depth + 2)
    holder = {"set": lambda: h.set_(last), "frozenset": lambda: h.frozenset_(last),
              "dict": lambda: h.dict_((last, h.none()))}[container]()
    return h.payload(bytes([h.T_LIST]) + h.varuint(2) + bytes([h.K_ANY]) + h.list_(*elems) + holder, ref=True)


@pytest.mark.parametrize("container", ["set", "frozenset", "dict"])
def test_hash_bomb_through_references(container):
    data = hash_bomb(container)
    assert len(data) < 320
    code = f"pyfory.Fory().loads({data!r})"
    expect_child_error(code, "LimitExceededError", timeout=60)
    # a shallow one is fine
    out = pyfory.Fory().loads(hash_bomb(container, depth=8))
    assert len(out[1]) == 1


def test_shared_tuple_keys_that_hash_cheaply_still_load():
    shared = tuple(range(50))
    value = {(shared, i): i for i in range(2000)}
    fory = pyfory.Fory(ref=True)
    assert fory.loads(fory.dumps(value)) == value


MERSENNE = (1 << 61) - 1     # hash(i) is i mod this prime: every k * MERSENNE hashes to 0


def colliding_keys(kind: str, n: int) -> list:
    """n wire values that are distinct keys with one hash value."""
    if kind == "bigint":
        return [h.int_(k * MERSENNE) for k in range(1, n + 1)]
    # hash(complex(a, b)) is hash(a) + 1000003 * hash(b), and hash(float(k)) is k
    c = 10 ** 12
    return [bytes([h.T_COMPLEX]) + struct.pack("<dd", float(c - 1000003 * b), float(b)) for b in range(n)]


def collision_payload(container: str, kind: str, n: int) -> bytes:
    keys = colliding_keys(kind, n)
    if container == "dict":
        return h.payload(h.dict_(*[(k, h.none()) for k in keys]))
    return h.payload({"set": h.set_, "frozenset": h.frozenset_}[container](*keys))


@pytest.mark.parametrize("container", ["set", "frozenset", "dict"])
@pytest.mark.parametrize("kind", ["bigint", "complex"])
def test_keys_crafted_to_share_a_hash_have_a_budget(tmp_path, container, kind):
    # 20,000 keys with one hash: 2 * 10**8 comparisons unguarded (minutes), in ~200 KB
    path = tmp_path / "payload"
    path.write_bytes(collision_payload(container, kind, 20000))
    code = f"pyfory.Fory(strict={container != 'dict'}).loads(open({str(path)!r}, 'rb').read())"
    expect_child_error(code, "LimitExceededError", timeout=60)
    # a few hundred such keys are ordinary data and load
    small = pyfory.Fory().loads(collision_payload(container, kind, 300))
    assert len(small) == 300 and len({hash(k) for k in small}) == 1


def test_colliding_keys_through_python_serializers_and_reduce_state():
    keys = [k * MERSENNE for k in range(1, 3501)]     # 6 * 10**6 comparisons, budget ~3 * 10**6
    writer = pyfory.Fory(strict=False, max_hash_work=10 ** 9)
    for value in (collections.OrderedDict.fromkeys(keys), collections.Counter(dict.fromkeys(keys, 1)),
                  collections.defaultdict(int, dict.fromkeys(keys, 1)), DictWithState.fromkeys(keys),
                  dict.fromkeys(keys).keys(), dict.fromkeys(keys, 1).items()):
        data = writer.dumps(value)
        with pytest.raises(LimitExceededError, match="share hash values"):
            pyfory.Fory(strict=False).loads(data)
        # the budget is an option: a trusted reader raises it
        assert writer.loads(data) == value


class DictWithState(dict):
    """A dict subclass: pickle's reduce writes its items as dict state (S_DICT)."""

    def __reduce__(self):
        return (DictWithState, (), None, None, iter(self.items()))


def test_distinct_hashes_cost_nothing_extra():
    value = {(i, str(i)): i for i in range(20000)}
    value.update({10 ** 30 + i: i for i in range(20000)})
    value.update({complex(i, 1): i for i in range(20000)})
    fory = pyfory.Fory(max_hash_work=0)       # none of these keys shares a hash
    assert fory.loads(fory.dumps(value)) == value
    assert fory.loads(fory.dumps(set(value))) == set(value)


def test_zoneinfo_keys_must_name_an_installed_zone():
    import zoneinfo
    fory = pyfory.Fory()
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    assert fory.loads(fory.dumps(paris)) is paris
    for key in ("Nope/Nope", "../../etc/passwd", "/etc/passwd", "Europe", ""):
        data = fory.dumps(paris).replace(h.str_body("Europe/Paris"), h.str_body(key))
        with pytest.raises(MalformedDataError, match="no installed time zone"):
            fory.loads(data)
    # strict=False keeps pickle's behaviour: ZoneInfo(key) decides
    with pytest.raises(pyfory.error.DeserializationError):
        pyfory.Fory(strict=False).loads(fory.dumps(paris).replace(h.str_body("Europe/Paris"),
                                                                  h.str_body("Nope/Nope")))


def test_regular_expressions_have_a_compile_budget_and_no_debug_flag():
    import re
    fory = pyfory.Fory()
    one = re.compile("x" * 60000, re.IGNORECASE)
    assert fory.loads(fory.dumps(one)) == one
    two = [re.compile("x" * 40000), re.compile("y" * 40000)]
    with pytest.raises(LimitExceededError, match="regular-expression characters"):
        fory.loads(fory.dumps(two))
    assert pyfory.Fory(strict=False).loads(fory.dumps(two)) == two
    # re.DEBUG would make the reader print the compiled program
    data = h.payload(h.obj(h.internal(ID_PATTERN), h.str_("a") + h.varint(re.DEBUG)))
    with pytest.raises(MalformedDataError, match="re.Pattern"):
        fory.loads(data)


def test_strict_flag_values_are_combinations_of_members():
    import enum

    class Perm(enum.IntFlag):
        R = 4
        W = 2
        X = 1

    fory = pyfory.Fory()
    fory.register(Perm)
    for member in (Perm.R, Perm.R | Perm.X, Perm(0), Perm.R | Perm.W | Perm.X):
        assert fory.loads(fory.dumps(member)) is member
    data = fory.dumps(Perm(64))
    Perm._value2member_map_.pop(64, None)
    size = len(Perm._value2member_map_)
    with pytest.raises(MalformedDataError, match="no member"):
        fory.loads(data)
    assert len(Perm._value2member_map_) == size      # nothing was added to the enum
    lenient = pyfory.Fory(strict=False)
    assert lenient.loads(lenient.dumps(Perm(64 | 1))) == 65


def test_fraction_reads_ints_only_and_never_runs_gcd_on_huge_parts():
    with pytest.raises(MalformedDataError):
        pyfory.Fory().loads(h.payload(h.obj(h.internal(ID_FRACTION), h.str_("1e2000000000") + h.int_(1))))
    with pytest.raises(MalformedDataError):
        pyfory.Fory().loads(h.payload(h.obj(h.internal(ID_FRACTION), h.int_(1) + h.int_(0))))
    code = """
        import time
        data = h.payload(h.obj(h.internal(25), h.int_(3 ** 700000) + h.int_(3 * 5 ** 600000)))
        t = time.perf_counter()
        f = pyfory.Fory().loads(data)
        assert time.perf_counter() - t < 5, time.perf_counter() - t
        print("OK")
    """
    proc = run_child(code)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
    big = fractions.Fraction(3 ** 2000, 7 ** 1500)
    assert pyfory.Fory().loads(pyfory.Fory().dumps(big)) == big


def test_graph_memory_budget():
    fory = pyfory.Fory(max_graph_memory_bytes=10_000)
    assert fory.loads(fory.dumps(list(range(100)))) == list(range(100))
    with pytest.raises(LimitExceededError, match="max_graph_memory_bytes"):
        fory.loads(fory.dumps([[i] for i in range(1000)]))
    assert pyfory.Fory().max_graph_memory_bytes == 128 << 20
    assert pyfory.Fory(strict=False).max_graph_memory_bytes is None


@pytest.mark.parametrize("option,bad", [("max_graph_memory_bytes", 0), ("max_unbacked_container_items", -1),
                                        ("max_hash_work", -5), ("max_graph_memory_bytes", "1")])
def test_budget_options_are_checked(option, bad):
    with pytest.raises(ValueError, match=option):
        pyfory.Fory(**{option: bad})


# ---- the allowlist of docs/security.md, one value per row, in strict mode -------------
def _allowlist_rows():
    import array
    import collections
    import datetime
    import decimal
    import pathlib
    import re
    import types
    import uuid
    import zoneinfo

    from policy_models import Account

    rows = {
        "atoms": [None, True, 3, 2.5, 1j, "s", b"b", bytearray(b"ba")],
        "containers": [[1], (1,), {1: 2}, {1}, frozenset({1})],
        "range/slice": [range(1, 9, 2), slice(1, None, 3)],
        "singletons": [Ellipsis, NotImplemented],
        "datetime": [datetime.date(2020, 1, 2), datetime.time(1, 2, 3, 4),
                     datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
                     datetime.timedelta(days=3, seconds=2), datetime.timezone(datetime.timedelta(hours=2), "X")],
        "decimal": [decimal.Decimal("1.25"), decimal.Decimal("-1e999999")],
        "fraction": [fractions.Fraction(3, 7)],
        "uuid": [uuid.UUID(int=12345)],
        "zoneinfo": [zoneinfo.ZoneInfo("UTC")],
        "collections": [collections.OrderedDict(a=1), collections.defaultdict(list, {1: [2]}),
                        collections.deque([1, 2], maxlen=5), collections.Counter("aab"),
                        collections.ChainMap({1: 2}), types.SimpleNamespace(a=1)],
        "re": [re.compile("a+b", re.I)],
        "pathlib": [pathlib.PurePosixPath("/a/b")],
        "array": [array.array("i", [1, 2, 3])],
        "mappingproxy": [types.MappingProxyType({"a": 1})],
        "type objects": [int, type, object, ValueError, datetime.date],
        "exceptions": [ValueError("x"), OSError(2, "gone")],
        "registered": [Account("u", "p", 3)],
    }
    return [(name, v) for name, values in rows.items() for v in values]


@pytest.mark.parametrize("row,value", _allowlist_rows(), ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_allowlist_row_round_trips_in_strict_mode(row, value):
    from policy_models import Account
    fory = pyfory.Fory()
    fory.register(Account)
    out = fory.loads(fory.dumps(value))
    if isinstance(value, BaseException):
        assert type(out) is type(value) and out.args == value.args
    elif row == "collections" and type(value).__name__ == "SimpleNamespace":
        assert vars(out) == vars(value)
    elif isinstance(value, float) or value is NotImplemented or value is Ellipsis or isinstance(value, type):
        assert out is value or out == value
    else:
        assert out == value and type(out) is type(value)


def test_numpy_rows_round_trip_in_strict_mode():
    np = pytest.importorskip("numpy")
    fory = pyfory.Fory()
    arr = np.arange(6, dtype="<i4").reshape(2, 3)
    assert (fory.loads(fory.dumps(arr)) == arr).all()
    assert fory.loads(fory.dumps(np.dtype("<f8"))) == np.dtype("<f8")
    assert fory.loads(fory.dumps(np.float32(1.5))) == np.float32(1.5)


def test_defaultdict_factory_must_be_a_class_in_strict():
    import collections
    # a defaultdict whose factory is an exception instance (callable? no) or a callable
    # object: only classes pass
    data = h.payload(h.obj(h.internal(30), h.type_value(h.internal(6)) + h.list_()))
    out = pyfory.Fory().loads(data)
    assert isinstance(out, collections.defaultdict) and out.default_factory is list
    fory = pyfory.Fory()
    fory.register(Caller, name="caller")
    callable_object = h.obj(h.varuint(h.D_USER_NAME << 1) + bytes([h.W_LAYOUT]) + h.str_body("caller"),
                            h.varuint(1) + h.varuint(0) + h.varuint(0))
    bad = h.payload(h.obj(h.internal(30), callable_object + h.list_()))
    with pytest.raises(PolicyViolationError, match="defaultdict factory"):
        fory.loads(bad)


class Caller:
    """A registered class whose instances are callable: not a factory strict mode takes."""

    def __call__(self):
        raise AssertionError("called")


# ---- every attack and row above, again in a child with a memory limit and a timeout ----
# The tests above that run in this process check the error; run in a fresh interpreter
# under RLIMIT_AS they also show that no attack needs more memory or time than that.
def _in_process_tests() -> list:
    import inspect

    names = []
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not inspect.isfunction(fn) or inspect.signature(fn).parameters:
            continue
        source = inspect.getsource(fn)
        if "run_child(" not in source and "expect_child_error(" not in source:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _in_process_tests())
def test_again_in_a_child_with_a_memory_limit(name):
    proc = run_child(f"import test_strict_attacks as t\nt.{name}()\nprint('OK')\n", timeout=120, memory_mb=1024)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_allowlist_rows_in_a_child_with_a_memory_limit():
    code = """
        import test_strict_attacks as t
        rows = t._allowlist_rows()
        for row, value in rows:
            t.test_allowlist_row_round_trips_in_strict_mode(row, value)
        print("OK", len(rows))
    """
    proc = run_child(code, timeout=120, memory_mb=1024)
    assert proc.returncode == 0 and f"OK {len(_allowlist_rows())}" in proc.stdout, proc.stderr[-2000:]
