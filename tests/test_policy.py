"""DeserializationPolicy: the hooks see what a payload asks for, and can stop it."""

import builtins
import importlib
import os
import subprocess

import pytest
from policy_models import Account, Gadget, Plain, touch

import pyfory
from pyfory.error import ForyError, PolicyViolationError

GADGETS = [
    (os.system, ("echo pwned",)),
    (subprocess.Popen, (["echo", "pwned"],)),
    (builtins.eval, ("1+1",)),
    (builtins.exec, ("x = 1",)),
    (importlib.import_module, ("this",)),
]


class NoGadgets(pyfory.DeserializationPolicy):
    forbidden = {os.system, subprocess.Popen, builtins.eval, builtins.exec, importlib.import_module}

    def __init__(self):
        self.seen_calls = []

    def intercept_reduce_call(self, callable_obj, args):
        self.seen_calls.append(callable_obj)
        if callable_obj in self.forbidden:
            raise PolicyViolationError(f"refused to call {callable_obj!r}")
        return None


@pytest.mark.parametrize("target,args", GADGETS, ids=lambda v: getattr(v, "__name__", "args"))
def test_policy_stops_classic_gadgets(target, args):
    payload = pyfory.Fory(strict=False).dumps(Gadget(target, *args))
    policy = NoGadgets()
    with pytest.raises(ForyError) as info:
        pyfory.Fory(strict=False, policy=policy).loads(payload)
    assert "refused to call" in str(info.value)
    assert policy.seen_calls and policy.seen_calls[-1] is target


def test_without_policy_the_gadget_runs(tmp_path):
    # the contrast that makes the test above meaningful: strict=False is pickle's trust model
    marker = tmp_path / "ran"
    payload = pyfory.Fory(strict=False).dumps(Gadget(touch, str(marker)))
    pyfory.Fory(strict=False).loads(payload)
    assert marker.exists()


def test_policy_stops_gadget_before_it_runs(tmp_path):
    marker = tmp_path / "ran"

    class Refuse(pyfory.DeserializationPolicy):
        def intercept_reduce_call(self, callable_obj, args):
            if callable_obj is touch:
                raise PolicyViolationError("no touching")

    payload = pyfory.Fory(strict=False).dumps(Gadget(touch, str(marker)))
    with pytest.raises(PolicyViolationError):
        pyfory.Fory(strict=False, policy=Refuse()).loads(payload)
    assert not marker.exists()


def test_intercept_reduce_call_can_replace_the_result():
    class Replace(pyfory.DeserializationPolicy):
        def intercept_reduce_call(self, callable_obj, args):
            return "replaced" if callable_obj is touch else None

    payload = pyfory.Fory(strict=False).dumps(Gadget(touch, "/nonexistent/x"))
    assert pyfory.Fory(strict=False, policy=Replace()).loads(payload) == "replaced"


def test_inspect_reduced_object_can_replace():
    class Swap(pyfory.DeserializationPolicy):
        def inspect_reduced_object(self, obj):
            return ("swapped", obj) if isinstance(obj, complex) else None

    payload = pyfory.Fory(strict=False).dumps(Gadget(complex, 1, 2))
    assert pyfory.Fory(strict=False, policy=Swap()).loads(payload) == ("swapped", 1 + 2j)


@pytest.mark.parametrize("ref", [False, True])
def test_redacting_intercept_setstate(ref):
    class Redact(pyfory.DeserializationPolicy):
        def intercept_setstate(self, obj, state):
            for key in ("password", "secret"):
                if key in state:
                    state[key] = "<redacted>"

    writer = pyfory.Fory(ref=ref)
    writer.register(Account)
    writer.register(Plain)
    reader = pyfory.Fory(ref=ref, policy=Redact())
    reader.register(Account)
    reader.register(Plain)
    account, plain = reader.loads(writer.dumps([Account("ann", "hunter2", 5), Plain()]))
    assert account == Account("ann", "<redacted>", 5)
    assert plain.secret == "<redacted>" and plain.visible == 1


def test_authorize_instantiation_sees_every_class():
    seen = []

    class Audit(pyfory.DeserializationPolicy):
        def authorize_instantiation(self, cls, args, kwargs):
            seen.append(cls)
            if cls is Plain:
                raise PolicyViolationError("no Plain objects")

    fory = pyfory.Fory(strict=False, policy=Audit())
    fory.loads(pyfory.Fory(strict=False).dumps(Account("a", "b")))
    assert Account in seen
    with pytest.raises(PolicyViolationError):
        fory.loads(pyfory.Fory(strict=False).dumps(Plain()))


def test_validate_class_and_module_hooks():
    calls = []

    class Watch(pyfory.DeserializationPolicy):
        def validate_class(self, cls, is_local):
            calls.append(("class", cls, is_local))

        def validate_module(self, module_name, is_local):
            calls.append(("module", module_name, is_local))
            if module_name == "posix" or module_name == "os":
                raise PolicyViolationError("no os")

    fory = pyfory.Fory(strict=False, policy=Watch())
    fory.loads(pyfory.Fory(strict=False).dumps(Account("a", "b")))
    assert ("class", Account, False) in calls
    with pytest.raises(PolicyViolationError):
        fory.loads(pyfory.Fory(strict=False).dumps(os.system))


def test_validate_function_for_functions_by_value_and_reference():
    calls = []

    class Watch(pyfory.DeserializationPolicy):
        def validate_function(self, func, is_local):
            calls.append((getattr(func, "__name__", None), is_local))

    k = 2
    fory = pyfory.Fory(strict=False, policy=Watch())
    fn = fory.loads(pyfory.Fory(strict=False).dumps([lambda x: x * k, touch]))
    assert fn[0](3) == 6
    assert ("<lambda>", True) in calls and ("touch", False) in calls
