"""The pyfory command line: ``python -m pyfory {inspect,bench} ...``.

    python -m pyfory inspect payload.bin        # the payload as an indented tree
    python -m pyfory inspect --json - < p.bin   # the same as JSON, from stdin
    python -m pyfory bench --quick              # pyfory vs pickle (and cloudpickle) here
    python -m pyfory --version
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import List, Optional, Sequence

EXIT_OK = 0
EXIT_MALFORMED = 1
EXIT_USAGE = 2
EXIT_OPAQUE = 3

INSPECT_EPILOG = """\
Each line of the tree is: byte offset, then the value -- its kind, its type and how the
class is named (internal, registered id/name, by reference = imported by module and
name on loading, by value = rebuilt from the payload), lengths, and annotations:
  =obj#N     the value takes object id N (what a later "ref -> obj#N" points to)
  str#N new  the string is added to the string table as entry N; "-> str#N" reuses it
  type#N     the class takes (or reuses, "-> type#N") entry N of the type table
Out-of-band buffers are shown with their slot (the index in loads(..., buffers=[...])).
The inspector only reads bytes: it never imports a module named by the payload nor runs
code from it, so it is safe on untrusted input.

payload or stream: payloads have no magic bytes (format version 3), so without --stream
or --payload the input is taken as one payload (Fory.dumps) when it decodes as one to
its end; otherwise as a stream (Fory.dump: varuint length + payload, repeated) when its
first frame fits in the input and decodes; otherwise it is reported as one malformed
payload. An input that reads both ways is shown as one payload, with a warning.

exit status: 0 decoded completely; 1 malformed or truncated (the offset and the reason
are printed); 2 usage error or unreadable input; 3 decoding stopped at data the format
does not describe (e.g. the bytes of a custom Serializer), not an error in the payload.
"""


def _version() -> str:
    import pyfory
    from pyfory import inspector

    return (f"pyfory {getattr(pyfory, '__version__', '?')} (wire format version {inspector.FORMAT_VERSION}, "
            f"Python {sys.version.split()[0]})")


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _run_with_big_stack(fn):
    """Run fn in a thread with a large stack and recursion limit: deeply nested payloads
    are decoded recursively."""
    result: List = []
    failure: List[BaseException] = []

    def target(limit=20000):
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, limit))
        try:
            result.append(fn())
        except BaseException as e:  # reported by the caller
            failure.append(e)
        finally:
            sys.setrecursionlimit(old)

    try:
        old_size = threading.stack_size(512 * 1024 * 1024)
    except (ValueError, RuntimeError):  # pragma: no cover - platform without it
        old_size = None
    try:
        t = threading.Thread(target=target, name="pyfory-inspect")
        try:
            t.start()
        except RuntimeError:        # no thread with such a stack here: inline, at the usual limit
            target(0)
        else:
            t.join()
    finally:
        if old_size is not None:
            threading.stack_size(old_size)
    if failure:
        raise failure[0]
    return result[0]


def cmd_inspect(args) -> int:
    from pyfory import inspector

    try:
        data = _read_input(args.file)
    except OSError as e:
        print(f"pyfory inspect: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    stream = None
    if args.stream:
        stream = True
    elif args.payload:
        stream = False

    def work():
        report = inspector.inspect(data, stream=stream, max_items=args.max_items)
        text = inspector.to_json(report, args.indent) if args.json else inspector.render_text(report)
        return report, text

    report, text = _run_with_big_stack(work)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    status = report.get("status")
    err = report.get("error") or {}
    if status == "error":
        print(f"pyfory inspect: malformed payload: offset {err.get('offset')}: {err.get('reason')}",
              file=sys.stderr)
        return EXIT_MALFORMED
    if status == "opaque":
        print(f"pyfory inspect: stopped at offset {err.get('offset')}: {err.get('reason')}", file=sys.stderr)
        return EXIT_OPAQUE
    return EXIT_OK


def cmd_bench(args) -> int:
    from pyfory import quickbench

    return quickbench.run(quick=args.quick, patterns=args.patterns, json_path=args.json,
                          repeats=args.repeats, min_time=args.min_time, all_cloudpickle=args.cloudpickle)


def build_parser() -> argparse.ArgumentParser:
    from pyfory import quickbench  # the bench's defaults, for --help (it imports nothing heavy)

    parser = argparse.ArgumentParser(
        prog="python -m pyfory",
        description="pyfory command line: look inside payloads, compare speed with pickle.",
        epilog="Run 'python -m pyfory COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "inspect", help="show what is inside a payload (like python -m pickletools)",
        description="Decode a pyfory payload (the bytes of Fory.dumps, or a stream written by "
                    "Fory.dump) and print its structure as an indented tree.",
        epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="the payload file, or - for standard input")
    p.add_argument("--json", action="store_true", help="print the tree as JSON (for tools), on one line")
    p.add_argument("--indent", type=int, default=None, metavar="N",
                   help="with --json: indent nested levels by N spaces (for reading)")
    p.add_argument("--max-items", type=int, default=100, metavar="N",
                   help="show at most N items of each container (the rest are decoded and "
                        "summarized); 0 shows all (default: 100)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stream", action="store_true",
                   help="the input is a stream of length-prefixed frames (Fory.dump); by default "
                        "this is detected (see below)")
    g.add_argument("--payload", action="store_true", help="the input is one payload (Fory.dumps)")
    p.set_defaults(func=cmd_inspect)

    b = sub.add_parser(
        "bench", help="time pyfory against pickle (and cloudpickle) on this machine",
        description="Serialize and deserialize a set of typical values with pyfory, pickle "
                    "(protocol 5) and cloudpickle (when installed), on this machine, and print "
                    "the ratios. Ratios > 1 in the x dumps / x loads columns mean pyfory is "
                    "faster; size o/b < 1 means pyfory's payload is smaller. The workloads and "
                    "the method (timed runs alternating between the contenders, medians, the "
                    "spread of the runs shown) are those of the repository's bench/report.py, "
                    "which makes 21 runs of 0.2 s per figure.")
    b.add_argument("--quick", action="store_true",
                   help=f"{quickbench.QUICK_REPEATS} runs of >= {quickbench.QUICK_MIN_TIME} s per figure "
                        f"instead of {quickbench.DEFAULT_REPEATS} of >= {quickbench.DEFAULT_MIN_TIME} s")
    b.add_argument("-k", dest="patterns", action="append", default=[], metavar="SUBSTR",
                   help="only workloads whose name contains SUBSTR (repeatable)")
    b.add_argument("--repeats", type=int, default=None, help="timed runs per figure (median reported)")
    b.add_argument("--min-time", type=float, default=None, help="seconds each timed run lasts at least")
    b.add_argument("--cloudpickle", action="store_true",
                   help="also compare the data workloads with cloudpickle (by default only functions and "
                        "local classes, which pickle cannot serialize)")
    b.add_argument("--json", metavar="FILE", default=None, help="also write the raw numbers as JSON")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    if hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="backslashreplace")
        except Exception:  # pragma: no cover - an unusual stdout
            pass
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (python -m pyfory inspect f | head): not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
