"""CPython's own multiprocessing tests with pyfory's reducer swap installed.

    python tests/mp_conformance.py                        # spawn: all of test_multiprocessing_spawn
    python tests/mp_conformance.py --start-method fork    # or forkserver
    python tests/mp_conformance.py --types processes      # only the "processes" classes
    python tests/mp_conformance.py --stdlib               # the same tests, plain pickle
    python tests/mp_conformance.py -k Queue -k Pool -v    # unittest's -k patterns, verbosity

Runs ``test._test_multiprocessing`` of the interpreter that runs this script (some builds
leave the ``test`` package out: then this prints "skipped") with
``pyfory.integrations.multiprocessing.install()`` in effect in the parent process. The
children get the swap by propagation (see the integration's module docstring): spawn and
forkserver children when they load their ``Process`` object, fork children by inheritance.

The test classes are the ones ``test.test_multiprocessing_<method>`` builds with
``install_tests_in_module_dict``, taken from those modules (so a spawned child imports its
test class by name, as in CPython's own run); where that package is missing (3.11 has
single-file modules, some builds none) the script builds the same classes itself, in
modules its spawned children build too. ``--types`` picks which of its modules:
``processes`` (the classes whose work runs in child processes: their objects go through
``ForkingPickler``), ``manager`` (the same tests on manager proxies, whose messages go
through ``Connection.send``), ``threads`` (no pickling; run for completeness) and ``misc``
(the classes outside the three types). The default is all four, the whole of CPython's
run, and no subset is needed: 395 tests on 3.13.0, on a shared 2-core machine (times vary
by a third from run to run) 109-170 s with the swap (99-126 s stdlib) under spawn, 70 s
(69-74 s) under fork, 136-145 s (97-125 s) under forkserver; each spawned or forkserver
child pays for importing pyfory (about 35 ms). 3.11.7: 380 tests, 132 s (112 s) spawn,
65 s (64 s) fork, 120 s (104 s) forkserver.

Tests that read stdlib-private internals or are about pickle's own behaviour do not apply
and are skipped, each with its reason (``NOT_APPLICABLE`` below); a test that races in the
running interpreter's own suite, whatever the pickler, is skipped in both runs
(``_upstream_races``: 3.11's thread-pool ``test_terminate``). Every test has a time
limit (``--timeout``): a hang prints all threads' stacks and ends the run with failure.
The run also counts the pyfory envelopes the parent writes, and fails if there were
none (the swap was not in use). Exit status 0 when every test that applies passes.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import os
import sys
import time
import unittest

from _conformance import run_with_deadlines, skip_matching

# test id patterns (fnmatch on "module.Class.test") -> why the test does not apply
NOT_APPLICABLE = {
    "*.test_unpickleable_result": "its unpicklable result is a lambda, which pyfory sends by "
                                  "value; an unserializable result still fails with "
                                  "MaybeEncodingError (tests/test_mp_reducer.py)",
}


def _upstream_races():
    """Tests of this interpreter's suite that can hang whatever the pickler (skipped in
    both runs, --stdlib too): pattern -> reason."""
    import inspect

    from test import _test_multiprocessing as tmp

    races = {}
    try:
        source = inspect.getsource(tmp._TestPool.test_terminate)
    except (AttributeError, OSError, TypeError):
        source = ""
    if source and "'threads'" not in source:
        # fixed in later CPython (the threads variant sleeps 1 s)
        races["*.WithThreadsTestPool.test_terminate"] = (
            "ThreadPool workers cannot be stopped: when a task starts before terminate(), "
            "join() waits out its time.sleep(LONG_TIMEOUT) (300 s); no pickling involved")
    return races


_TYPE_MODULES = {"processes": "test_processes", "manager": "test_manager",
                 "threads": "test_threads", "misc": "test_misc"}


_BUILD_ENV = "PYFORY_MP_CONFORMANCE_BUILD"


def _build_modules(start_method, types):
    """The modules test.test_multiprocessing_<method>.test_<type> would be, built with
    install_tests_in_module_dict as those do, registered in sys.modules under names of
    their own (a child imports its test class by name)."""
    import types as pytypes

    from test._test_multiprocessing import install_tests_in_module_dict

    modules = []
    for type_ in types:
        name = f"_mp_conformance_{start_method}_{type_}"
        module = sys.modules.get(name)
        if module is None:
            module = pytypes.ModuleType(name)
            if type_ == "misc":
                install_tests_in_module_dict(module.__dict__, start_method, exclude_types=True)
            else:
                install_tests_in_module_dict(module.__dict__, start_method, only_type=type_)
            sys.modules[name] = module
        modules.append(module)
    return modules


def _count_envelopes(fory_mp):
    """Count the pyfory envelopes this process writes (a check that the swap is in use:
    ``_encode`` is what the installed pickler calls for every object not left to the stock
    pickler). Returns a one-item list, the count."""
    sent = [0]
    encode = fory_mp._encode

    def counting_encode(obj, options_tuple):
        sent[0] += 1
        return encode(obj, options_tuple)

    fory_mp._encode = counting_encode
    return sent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-method", choices=("spawn", "fork", "forkserver"),
                        default="spawn")
    parser.add_argument("--types", default="processes,manager,threads,misc",
                        help="comma-separated, of: processes, manager, threads, misc "
                             "(default: all four)")
    parser.add_argument("--stdlib", action="store_true",
                        help="run the same classes without the swap (plain pickle)")
    parser.add_argument("-k", action="append", default=[], dest="patterns",
                        help="only tests matching this substring or pattern (repeatable)")
    parser.add_argument("-v", action="count", default=1, dest="verbosity")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a test may take: then all threads' stacks are printed "
                             "and the run ends with failure (a hang)")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = set(types) - set(_TYPE_MODULES)
    if unknown:
        parser.error(f"unknown --types {sorted(unknown)}")

    import multiprocessing

    if args.start_method not in multiprocessing.get_all_start_methods():
        print(f"skipped: start method {args.start_method} is not available here")
        return 0
    package = f"test.test_multiprocessing_{args.start_method}"
    try:
        import test._test_multiprocessing  # noqa: F401
    except (ImportError, unittest.SkipTest) as e:
        print(f"skipped: this interpreter has no test._test_multiprocessing ({e!r})")
        return 0
    try:
        modules = [importlib.import_module(f"{package}.{_TYPE_MODULES[t]}") for t in types]
    except unittest.SkipTest as e:   # the package's own verdict (e.g. a PGO build)
        print(f"skipped: {package}: {e}")
        return 0
    except ImportError:
        # 3.11 has the test module but not these packages (or ships them as single
        # modules): build the same classes, in modules that spawned children build too
        os.environ[_BUILD_ENV] = f"{args.start_method}:{','.join(types)}"
        modules = _build_modules(args.start_method, types)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.patterns]
    suite = unittest.TestSuite()
    for module in modules:
        suite.addTests(loader.loadTestsFromModule(module))
    skip_matching(suite, _upstream_races(), "races in this CPython's own test")

    if args.stdlib:
        what = f"stdlib pickle ({args.start_method}; {','.join(types)})"
    else:
        from pyfory.integrations import multiprocessing as fory_mp

        fory_mp.install()
        sent = _count_envelopes(fory_mp)
        skip_matching(suite, NOT_APPLICABLE, "not applicable with pyfory's reducer swap")
        what = f"pyfory reducer swap ({args.start_method}; {','.join(types)})"

    timeout = args.timeout

    start = time.monotonic()
    result = run_with_deadlines(suite, args.verbosity, timeout)
    faulthandler.cancel_dump_traceback_later()
    if not args.stdlib:
        from pyfory.integrations import multiprocessing as fory_mp

        still = fory_mp.is_installed()
        fory_mp.uninstall()
        print(f"the parent wrote {sent[0]} pyfory envelopes")
        if not still:   # a test uninstalled it: the rest ran on plain pickle
            print("error: the swap was no longer installed at the end of the run")
            return 1
        if result.testsRun > len(result.skipped) and not sent[0]:
            print("error: the swap was installed but nothing went through it")
            return 1
    print(f"{what}: {result.testsRun} run, {len(result.failures)} failures, "
          f"{len(result.errors)} errors, {len(result.skipped)} skipped "
          f"in {time.monotonic() - start:.0f} s")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
elif os.environ.get(_BUILD_ENV):
    # a spawn or forkserver child imports this script as its main module: it needs the
    # built test modules too (their classes travel by reference)
    _method, _, _types = os.environ[_BUILD_ENV].partition(":")
    _build_modules(_method, _types.split(","))
