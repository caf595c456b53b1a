"""CPython's own concurrent.futures tests against pyfory's executors.

    python tests/futures_conformance.py                 # ProcessPoolExecutor classes
    python tests/futures_conformance.py --executor zmq  # zmq Executor, executor-generic classes
    python tests/futures_conformance.py --stdlib        # the same classes, stdlib executor
    python tests/futures_conformance.py -k Fork -v      # unittest's -k patterns, verbosity
    python3.11 tests/futures_conformance.py --suite-dir .../python3.13/test/test_concurrent_futures

Runs the package ``test.test_concurrent_futures`` of the interpreter that runs this
script (CPython 3.12+ ship it as a package; some builds leave the ``test`` package out)
with ``pyfory.integrations.futures.ProcessPoolExecutor`` in place of the standard
library's in its fork, forkserver and spawn test classes, or with
``pyfory.integrations.zmq.Executor(local_workers=N)`` in the classes that test any
executor. Tests that read or patch the stdlib executor's private attributes do not apply
and are skipped, each with its reason (``NOT_APPLICABLE`` below; the README lists them).
Every test has a time limit (``--timeout``): a hang is a failure, not a stuck run.
Exit status 0 when every test that applies passes.
"""

from __future__ import annotations

import argparse
import faulthandler
import inspect
import os
import sys
import unittest

from _conformance import run_with_deadlines, skip_matching

HERE = os.path.dirname(os.path.abspath(__file__))

# test id patterns (fnmatch on "module.Class.test") -> why the test does not apply
NOT_APPLICABLE = {
    "*.test_hang_gh83386": "its child process imports concurrent.futures.ProcessPoolExecutor "
                           "by name: it tests the stdlib's (which the stdlib skips: gh-83386)",
    "*.test_python_finalization_error": "makes the stdlib's second thread (its queue feeder) "
                                        "fail to start; ours has none, so the pool stays sound "
                                        "and the test's own map(mul, [(2, 3)] * 10) fails "
                                        "with TypeError instead",
}

# the children of these tests import concurrent.futures.<executor class name>: they test the
# standard library's executor whatever the class under test is
_STDLIB_BY_NAME = "its child process imports the stdlib's executor by name"
NOT_APPLICABLE.update({
    "*.test_interpreter_shutdown": _STDLIB_BY_NAME,
    "*.test_submit_after_interpreter_shutdown": _STDLIB_BY_NAME,
})

# the zmq executor only
NOT_APPLICABLE_ZMQ = {
    "*.test_max_workers_negative": "local_workers=0 is valid for the zmq Executor (all workers "
                                   "may be remote); negative counts are refused",
}

# different by design (see the README): a payload that cannot be loaded fails its own
# future with the loading error, and the pool, still sound, goes on; the stdlib breaks the
# whole pool (BrokenProcessPool). SystemExit/KeyboardInterrupt raised while loading come
# out as pyfory.error.DeserializationError, never as the task's outcome.
BY_DESIGN = {
    "*.test_exit_at_task_unpickle": "per-future DeserializationError (SystemExit while the "
                                    "worker loads the task), the pool goes on",
    "*.test_error_at_task_unpickle": "per-future UnpicklingError, the pool goes on",
    "*.test_exit_during_result_unpickle_in_result_handler":
        "per-future DeserializationError (SystemExit while the parent loads the result)",
    "*.test_error_during_result_unpickle_in_result_handler": "per-future UnpicklingError",
}


def _skip_not_applicable(suite, executor_name, zmq=False):
    skip_matching(suite, NOT_APPLICABLE, f"not applicable for {executor_name}")
    skip_matching(suite, BY_DESIGN, f"differs by design for {executor_name}")
    if zmq:
        skip_matching(suite, NOT_APPLICABLE_ZMQ, f"not applicable for {executor_name}")


def _process_pool_classes(module):
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and "ProcessPool" in name:
            yield obj


def _zmq_classes(util, modules):
    """The executor-generic test classes, built for the zmq executor."""
    from pyfory.integrations.zmq import Executor

    def make(max_workers=None, **kwargs):
        # the stdlib's pool starts its workers in a moment (fork); these are fresh
        # interpreters: the tests' own timings (a 5 s map timeout) start once they are up
        n = 2 if max_workers is None else max_workers
        executor = Executor(local_workers=n, heartbeat_timeout=30.0, **kwargs)
        executor.wait_for_workers(n, 120)
        return executor

    mixin = type("ZmqMixin", (util.ExecutorMixin,), {"executor_type": staticmethod(make)})
    generic = []
    for module in modules:
        for name in ("ExecutorTest", "WaitTests", "AsCompletedTests", "ExecutorShutdownTest"):
            base = getattr(module, name, None)
            if base is not None and base.__module__ == module.__name__:  # not re-imported ones
                generic.append(type(f"Zmq{name}", (base, mixin, util.BaseTestCase),
                                    {"__module__": module.__name__}))
    return generic


def _load_suite_from(directory):
    """Make ``test.test_concurrent_futures`` the package in directory, on this
    interpreter's ``test.support`` (what the newer suite needs from it and an older one
    lacks is filled in: ``requires_gil_enabled``, a no-op where the GIL always is)."""
    import importlib.util

    import test.support

    if not hasattr(test.support, "requires_gil_enabled"):
        test.support.requires_gil_enabled = lambda msg="": (lambda f: f)
    if not hasattr(test.support, "Py_GIL_DISABLED"):
        test.support.Py_GIL_DISABLED = False
    # no thread= (TSAN builds) before 3.13: asked only about TSAN, the answer is no
    check, skip = test.support.check_sanitizer, test.support.skip_if_sanitizer
    if "thread" not in inspect.signature(check).parameters:
        test.support.check_sanitizer = (
            lambda thread=False, **k: check(**k) if any(k.values()) else False)
        test.support.skip_if_sanitizer = (
            lambda reason=None, thread=False, **k: skip(reason, **k) if any(k.values())
            else (lambda f: f))
    name = "test.test_concurrent_futures"
    spec = importlib.util.spec_from_file_location(name, os.path.join(directory, "__init__.py"),
                                                  submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_SUITE_DIR_ENV = "PYFORY_CONFORMANCE_SUITE_DIR"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", choices=("futures", "zmq"), default="futures")
    parser.add_argument("--stdlib", action="store_true",
                        help="run the same classes with the standard library's executor")
    parser.add_argument("-k", action="append", default=[], dest="patterns",
                        help="only tests matching this substring or pattern (repeatable)")
    parser.add_argument("-v", action="count", default=1, dest="verbosity")
    parser.add_argument("--suite-dir", metavar="DIR",
                        help="the test_concurrent_futures directory of another CPython (e.g. "
                             "3.13's), for an interpreter whose test package lacks it")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a test may take: then all threads' stacks are printed "
                             "and the run ends with failure (a hang)")
    args = parser.parse_args(argv)

    if args.suite_dir:
        os.environ[_SUITE_DIR_ENV] = os.path.abspath(args.suite_dir)  # for spawned workers
        _load_suite_from(args.suite_dir)
    try:
        from test.test_concurrent_futures import util
    except ImportError as e:
        print(f"skipped: this interpreter has no test.test_concurrent_futures package ({e})")
        return 0
    import importlib

    names = ["executor", "test_as_completed", "test_deadlock", "test_future", "test_init",
             "test_process_pool", "test_shutdown", "test_wait"]
    modules = [importlib.import_module(f"test.test_concurrent_futures.{n}") for n in names]
    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.patterns]
    suite = unittest.TestSuite()
    if args.executor == "futures":
        if not args.stdlib:
            from pyfory.integrations.futures import ProcessPoolExecutor

            for mixin in (util.ProcessPoolForkMixin, util.ProcessPoolForkserverMixin,
                          util.ProcessPoolSpawnMixin):
                mixin.executor_type = ProcessPoolExecutor
        for module in modules:
            for cls in _process_pool_classes(module):
                suite.addTests(loader.loadTestsFromTestCase(cls))
        what = "stdlib ProcessPoolExecutor" if args.stdlib else "pyfory ProcessPoolExecutor"
    else:
        for cls in _zmq_classes(util, modules):
            suite.addTests(loader.loadTestsFromTestCase(cls))
        what = "pyfory zmq Executor"
    if not args.stdlib:
        _skip_not_applicable(suite, what, zmq=args.executor == "zmq")

    util.setup_module()
    timeout = args.timeout
    result = run_with_deadlines(suite, args.verbosity, timeout)
    faulthandler.dump_traceback_later(timeout, exit=True)  # the module cleanups may not hang either
    unittest.case.doModuleCleanups()
    faulthandler.cancel_dump_traceback_later()
    print(f"{what}: {result.testsRun} run, {len(result.failures)} failures, "
          f"{len(result.errors)} errors, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
elif os.environ.get(_SUITE_DIR_ENV):
    # a spawn or forkserver worker imports this script as its main module: it needs the
    # suite's modules too (their functions travel by reference)
    _load_suite_from(os.environ[_SUITE_DIR_ENV])
