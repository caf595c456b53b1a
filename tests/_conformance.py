"""What the conformance scripts (futures_conformance.py, mp_conformance.py) share: walking
a unittest suite, skipping tests by id pattern with a reason, and a runner that gives
every test a deadline (a hang prints every thread's stack and ends the run)."""

from __future__ import annotations

import faulthandler
import fnmatch
import unittest


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def skip_matching(suite, table, why):
    """Skip each test whose id ("module.Class.test") matches a pattern of table (pattern ->
    reason), with the message "why: reason"."""
    for test in iter_tests(suite):
        tid = test.id()
        for pattern, reason in table.items():
            if fnmatch.fnmatchcase(tid, pattern):
                method = getattr(test, test._testMethodName)
                setattr(test, test._testMethodName, unittest.skip(f"{why}: {reason}")(method))


def run_with_deadlines(suite, verbosity, timeout):
    """Run suite; every test has timeout seconds. The deadline stays armed between tests
    (class and module cleanups run there and may not hang either) and after the run: the
    caller cancels it (faulthandler.cancel_dump_traceback_later) when its own cleanups end."""

    class Result(unittest.TextTestResult):
        def startTest(self, test):
            faulthandler.dump_traceback_later(timeout, exit=True)
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            faulthandler.dump_traceback_later(timeout, exit=True)

    return unittest.TextTestRunner(verbosity=verbosity, resultclass=Result).run(suite)
