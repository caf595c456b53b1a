"""Optional dependencies (issue 16): pyfory needs none of them, and a feature that needs a
missing one says which extra installs it (``pip install "pyfory[numpy]"``).

Each case runs in a child interpreter in which the packages are hidden by a meta-path
finder placed first (``import numpy`` fails there as if numpy were not installed), and
reads a payload that this process wrote with the package present.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import pyfory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyfory.__file__)))

HIDE = '''
import sys

class _Hide:
    """Pretend the packages in HIDDEN are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Hide())
'''


def run_hidden(hidden, body, *args, stdin=None):
    code = f"HIDDEN = {set(hidden)!r}\n" + HIDE + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True,
                          timeout=120, env=env, cwd=ROOT)


READ = '''
import pyfory
from pyfory.error import ForyError

try:
    pyfory.Fory(ref=True, strict=STRICT).loads(sys.stdin.buffer.read())
except ForyError as e:
    print(type(e).__name__)
    print(e)
else:
    print("loaded")
'''


def read_hidden(hidden, payload, strict):
    proc = run_hidden(hidden, f"STRICT = {strict}\n" + READ, stdin=payload)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_core_needs_no_optional_package():
    proc = run_hidden({"numpy", "pandas", "cloudpickle", "zmq"}, '''
        import pyfory

        fory = pyfory.Fory(ref=True, strict=False)
        value = {"a": [1, 2.5, "x"], "f": lambda x: x + 1}
        back = fory.loads(fory.dumps(value))
        print(back["a"], back["f"](1), sorted(m for m in HIDDEN if m in sys.modules))
    ''')
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["[1,", "2.5,", "'x']", "2", "[]"]


def test_numpy_array_without_numpy_names_the_extra():
    np = pytest.importorskip("numpy")
    payload = pyfory.Fory().dumps({"w": np.arange(5.0)})
    out = read_hidden({"numpy"}, payload, strict=True)
    kind, message = out.split("\n", 1)
    assert kind == "DeserializationError"
    assert "numpy" in message and 'pip install "pyfory[numpy]"' in message


def test_numpy_class_by_reference_without_numpy_names_the_extra():
    np = pytest.importorskip("numpy")
    payload = pyfory.Fory(ref=True, strict=False).dumps([np.lib.NumpyVersion("1.22.0")])
    out = read_hidden({"numpy"}, payload, strict=False)
    assert "No module named 'numpy" in out and 'pip install "pyfory[numpy]"' in out, out


def test_pandas_frame_without_pandas_names_the_extra():
    pd = pytest.importorskip("pandas")
    payload = pyfory.Fory(ref=True, strict=False).dumps(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    out = read_hidden({"pandas"}, payload, strict=False)
    assert "pandas" in out and 'pip install "pyfory[pandas]"' in out, out


def test_a_missing_module_that_is_no_extra_gets_no_hint():
    # the payload names a module nobody installs: the error says so, and names no extra
    proc = run_hidden(set(), '''
        import pyfory
        from pyfory.error import ForyError
        from pyfory._reduce import lookup_global

        try:
            lookup_global("no_such_module_xyz", "f")
        except ModuleNotFoundError as e:
            print(e)
    ''')
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "No module named 'no_such_module_xyz'"


def test_quick_bench_without_cloudpickle_names_the_extra():
    proc = run_hidden({"cloudpickle"}, '''
        from pyfory import quickbench

        sys.exit(quickbench.run(patterns=["lambda_fn"], repeats=1, min_time=0.001))
    ''')
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    assert 'cloudpickle is not installed' in err and 'pip install "pyfory[bench]"' in err, err
    # the workload still runs, without a baseline
    assert "lambda_fn" in proc.stdout.decode()


@pytest.mark.parametrize(("script", "hidden", "extra"), [
    ("bench/oob.py", {"numpy"}, "bench"),
    ("bench/zmq_bench.py", {"zmq"}, "bench"),
])
def test_bench_scripts_name_the_extra(script, hidden, extra):
    if not os.path.exists(os.path.join(ROOT, script)):
        pytest.skip("not a source checkout")
    proc = run_hidden(hidden, f'''
        import runpy

        sys.argv = [{script!r}, "--help"]
        runpy.run_path({script!r}, run_name="__main__")
    ''')
    assert proc.returncode != 0
    assert f'pip install "pyfory[{extra}]"' in proc.stderr.decode(), proc.stderr.decode()
