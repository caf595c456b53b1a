"""Functions by value: code objects, closure cells, and the globals the code uses.

A function the receiver cannot import (see functions.travels_by_value) is written in
the two phases of a Serializer (see FunctionSerializer):

Skeleton -- what `types.FunctionType` needs to create the function:
  code        [before the first code object of a payload: the bytecode magic (2 bytes)
              and the code encoding (1 byte), checked by the reader] varint: k >= 1 the
              code object #k-1 of this payload, 0 a new code object: varint length + the
              marshal bytes of the code without its file name, compressed (raw deflate
              with a preset dictionary), + a CRC-32 of the marshal bytes (see _compat),
              then its file name (str_ref: written once for all the code of a payload).
              A code object reached as a value of its own (CodeSerializer) is written
              the same way.
  globals     varint: 0 new globals dict without a module name, 1 new globals dict and
              the module name (str_ref) follows, k >= 2 the globals dict #k-2 of this
              payload. Functions by value from one module share one globals dict after
              loading (as they did before), so a global assigned by one is seen by the
              others.
  cells       (only when the code has free variables) varint 0: every cell is new and
              its contents follow in the state phase (the common case); varint 1: one
              varint per free variable follows: 0 a new cell whose contents follow in
              the state phase, 1 a new empty cell, k >= 2 the cell #k-2 of this payload
              (cells shared between functions stay shared)

State -- written after the function was registered for back-references, so anything
here may refer to the function itself (recursion through a global or a closure cell,
mutually recursive local functions, methods referring to their class):
  flags       varint, F_* below
  contents    the value of each new non-empty cell of the skeleton, in order
  globals     [F_GLOBALS] varint n, then n x (name str_ref, value): only the globals the
              code (and the code nested in it) refers to, each name once per globals dict
              and payload; builtins are not sent (they resolve on the receiver's side)
  then, each when its flag is set: __defaults__, __kwdefaults__, __annotations__,
  __dict__ (also carries __wrapped__), __name__, __qualname__, __module__ (these three
  str_ref; a __module__ that is not a str as a value), __doc__, __type_params__,
  submodules (a list of modules to import, for code that reaches `package.submodule`
  through a global `package`). A field is sent only when it differs from what
  `types.FunctionType(code, globals)` gives.
"""

from __future__ import annotations

import builtins
import marshal
import sys
import types
import weakref
import zlib

from pyfory import _compat
from pyfory._core import Serializer
from pyfory.error import FormatError, MalformedDataError, SerializationError, TypeNotRegisteredError

CellType = _compat.CellType
CodeType = types.CodeType
FunctionType = types.FunctionType
ModuleType = types.ModuleType

F_GLOBALS = 1
F_DEFAULTS = 2
F_KWDEFAULTS = 4
F_ANNOTATIONS = 8
F_DICT = 16
F_NAME = 32
F_QUALNAME = 64
F_MODULE = 128
F_DOC = 256
F_TYPE_PARAMS = 512
F_SUBMODULES = 1024
F_MODULE_VALUE = 2048       # __module__ is not a str (written as a value)
F_ALL = 4095

_SCRATCH_KEY = "pyfory.code"      # ctx.scratch entry of this module (per payload)


def refuse_in_strict(fory, what: str) -> None:
    if fory is not None and fory.strict:
        raise TypeNotRegisteredError(
            f"strict mode refuses {what} (a payload carrying code is only loaded with "
            "Fory(strict=False), for trusted data)")


# ---- per-payload state -----------------------------------------------------------------
class _GlobalsEntry:
    __slots__ = ("index", "globals", "names")

    def __init__(self, index, g):
        self.index = index
        self.globals = g          # keeps the dict alive, so its id stays unique
        self.names = set()        # global names already written for this dict


class _WriteState:
    __slots__ = ("globals", "cells", "keep", "codes", "pending", "pending_cell")

    def __init__(self):
        self.globals = {}         # id(globals dict) -> _GlobalsEntry
        self.cells = {}           # id(cell) -> index
        self.codes = {}           # id(code) -> index
        self.keep = []            # cells and code objects, alive until the payload ends
        self.pending = None       # (func, globals entry, cells to fill, code info) between the phases
        self.pending_cell = None


class _ReadState:
    __slots__ = ("globals", "cells", "codes", "pending", "pending_cell")

    def __init__(self):
        self.globals = []
        self.cells = []
        self.codes = []
        self.pending = None       # (func, globals dict, cells to fill)
        self.pending_cell = None


def _write_state(ctx) -> _WriteState:
    scratch = ctx.scratch
    if scratch is None:
        scratch = ctx.scratch = {}
    st = scratch.get(_SCRATCH_KEY)
    if st is None:
        st = scratch[_SCRATCH_KEY] = _WriteState()
    return st


def _read_state(ctx) -> _ReadState:
    scratch = ctx.scratch
    if scratch is None:
        scratch = ctx.scratch = {}
    st = scratch.get(_SCRATCH_KEY)
    if st is None:
        st = scratch[_SCRATCH_KEY] = _ReadState()
    return st


# ---- code objects ----------------------------------------------------------------------
class _CodeInfo:
    """What is derived once per code object: its wire bytes and the global names."""

    __slots__ = ("ref", "filename", "wire", "wire_first", "global_names", "all_names", "submodules",
                 "name", "qualname", "doc")


_NO_DOC = object()      # a Python whose default __doc__ rule is unknown: always send it


_code_infos: dict = {}          # id(code) -> _CodeInfo (dropped when the code dies)


def _forget_code(key, ref):
    info = _code_infos.get(key)
    if info is not None and info.ref is ref:
        _code_infos.pop(key, None)


# id(code) -> (weakref, data, filename) of the code objects loaded from payloads: a
# receiver writes such code back with the bytes it got (marshal's output depends on
# reference counts and on which strings are interned, so marshalling the loaded code
# again would not always give the sender's bytes)
_received_code: dict = {}


def _forget_received(key, ref):
    entry = _received_code.get(key)
    if entry is not None and entry[0] is ref:
        _received_code.pop(key, None)


def code_info(code) -> _CodeInfo:
    key = id(code)
    info = _code_infos.get(key)
    if info is not None and info.ref() is code:
        return info
    info = _CodeInfo()
    info.ref = weakref.ref(code, lambda ref, key=key: _forget_code(key, ref))
    received = _received_code.get(key)
    if received is not None and received[0]() is code:
        data, filename = received[1], received[2]
    else:
        data, filename = _marshalled(code)
    info.wire = b"\x00" + _varuint(len(data)) + data        # "new code object", size, bytes
    info.wire_first = _CODE_HEADER + info.wire
    info.filename = filename
    info.global_names = _compat.code_global_names(code)
    # what types.FunctionType(code, globals) gives: attributes equal to these are not sent
    info.name = code.co_name
    info.qualname = _compat.default_qualname(code)
    info.doc = _compat.default_doc(code) if _compat.DEFAULT_DOC_RULE_HOLDS else _NO_DOC
    info.all_names = None
    info.submodules = None
    _code_infos[key] = info
    return info


def _marshalled(code):
    """(compressed marshal data, file name) of code, the file name taken out of the data."""
    filename = code.co_filename
    if filename and _filenames_are(code, filename):
        stripped = _with_filename(code, "")
    else:
        filename = ""
        stripped = code
    try:
        raw = marshal.dumps(stripped)
    except ValueError as e:     # a code object holding unmarshallable constants
        raise SerializationError(f"cannot serialize code of {code.co_name}: {e}") from e
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _compat.CODE_ZDICT)
    return packer.compress(raw) + packer.flush() + zlib.crc32(raw).to_bytes(4, "little"), filename


def _filenames_are(code, filename) -> bool:
    if code.co_filename != filename:
        return False
    return all(_filenames_are(c, filename) for c in code.co_consts if type(c) is CodeType)


def _with_filename(code, filename):
    consts = code.co_consts
    for c in consts:
        if type(c) is CodeType:
            consts = tuple(_with_filename(c, filename) if type(c) is CodeType else c for c in consts)
            return code.replace(co_filename=filename, co_consts=consts)
    return code.replace(co_filename=filename)


# receiver side: the same bytes give the same (immutable) code object
_code_by_data: dict = {}
_CODE_CACHE_MAX = 1024
# deflate expands at most ~1032x; code larger than this is refused
_MAX_CODE_SIZE = 1 << 26


def load_code(data: bytes, filename: str = ""):
    key = (data, filename)
    code = _code_by_data.get(key)
    if code is not None:
        return code
    if len(data) < 5:
        raise MalformedDataError("code object too short")
    unpacker = zlib.decompressobj(-15, zdict=_compat.CODE_ZDICT)
    try:
        raw = unpacker.decompress(memoryview(data)[:-4], min(_MAX_CODE_SIZE, 1100 * len(data)))
    except zlib.error as e:
        raise MalformedDataError(f"bad code object in payload: {e}") from e
    if not unpacker.eof or unpacker.unconsumed_tail or unpacker.unused_data:
        raise MalformedDataError("bad code object in payload: bad compressed stream")
    if zlib.crc32(raw) != int.from_bytes(data[-4:], "little"):
        raise MalformedDataError("code object checksum mismatch: the payload is corrupted")
    try:
        code = marshal.loads(raw)
    except (ValueError, EOFError, TypeError) as e:
        raise MalformedDataError(f"bad code object in payload: {e}") from e
    if type(code) is not CodeType:
        raise MalformedDataError(f"payload carries a {type(code).__name__} where code was expected")
    if filename:
        code = _with_filename(code, filename)
    if len(_code_by_data) >= _CODE_CACHE_MAX:
        _code_by_data.clear()
    _code_by_data[key] = code
    ident = id(code)
    _received_code[ident] = (weakref.ref(code, lambda ref, key=ident: _forget_received(key, ref)),
                             bytes(data), filename)
    return code


_CODE_HEADER = _compat.CODE_MAGIC + bytes([_compat.CODE_ENCODING])


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def write_code(ctx, st: _WriteState, code) -> _CodeInfo:
    codes = st.codes
    idx = codes.get(id(code))
    info = code_info(code)
    if idx is not None:
        ctx.write_varuint64(idx + 1)
        return info
    ctx.write_bytes(info.wire if codes else info.wire_first)
    codes[id(code)] = len(codes)
    st.keep.append(code)
    ctx.write_str_ref(info.filename)
    return info


def read_code(ctx, st: _ReadState):
    codes = st.codes
    if not codes:
        header = ctx.read_bytes(len(_CODE_HEADER))
        if header != _CODE_HEADER:
            _bad_code_header(header)
    k = ctx.read_varuint64()
    if k:
        if k <= len(codes):
            return codes[k - 1]
        return _table_get(codes, k - 1, "code object")
    return _read_new_code(ctx, codes)


def _read_new_code(ctx, codes):
    data = ctx.read_bytes_and_size()
    code = load_code(data, ctx.read_str_ref())
    codes.append(code)
    return code


def _bad_code_header(header):
    magic, encoding = header[:-1], header[-1]
    if magic != _compat.CODE_MAGIC:
        raise FormatError(
            f"payload carries code compiled by another Python version (bytecode magic "
            f"{magic.hex()}, this is Python {sys.version_info[0]}.{sys.version_info[1]} with "
            f"{_compat.CODE_MAGIC.hex()}): functions and classes by value need the same "
            "Python minor version on both sides")
    raise FormatError(f"payload encodes code objects in format {encoding}; this pyfory "
                      f"reads format {_compat.CODE_ENCODING}")


class CodeSerializer(Serializer):
    """A code object reached as a value of its own (see write_code)."""

    def write(self, ctx, code):
        refuse_in_strict(self.fory, "code objects")
        write_code(ctx, _write_state(ctx), code)

    def read(self, ctx):
        refuse_in_strict(self.fory, "code objects")
        return read_code(ctx, _read_state(ctx))


# ---- closure cells ---------------------------------------------------------------------
class CellSerializer(Serializer):
    """A cell reached as a value of its own (cells of a closure are written by the
    function, see the module docstring); shares the payload's cell table with functions."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        self.track_identity = True
        self.has_state = True

    def write(self, ctx, cell):
        refuse_in_strict(self.fory, "closure cells")
        st = _write_state(ctx)
        idx = st.cells.get(id(cell))
        if idx is not None:
            ctx.write_varuint64(idx + 2)
            return
        st.cells[id(cell)] = len(st.cells)
        st.keep.append(cell)
        try:
            cell.cell_contents
        except ValueError:
            ctx.write_varuint64(1)
            return
        ctx.write_varuint64(0)
        st.pending_cell = cell

    def write_state(self, ctx, cell):
        st = _write_state(ctx)
        if st.pending_cell is cell:
            st.pending_cell = None
            ctx.write_value(cell.cell_contents)

    def read(self, ctx):
        refuse_in_strict(self.fory, "closure cells")
        st = _read_state(ctx)
        k = ctx.read_varuint64()
        if k < 2:
            cell = CellType()
            st.cells.append(cell)
            st.pending_cell = cell if k == 0 else None
            return cell
        st.pending_cell = None
        return _table_get(st.cells, k - 2, "cell")

    def read_state(self, ctx, cell):
        st = _read_state(ctx)
        if st.pending_cell is cell:
            st.pending_cell = None
            cell.cell_contents = ctx.read_value()


def _table_get(table, idx, what):
    if idx >= len(table):
        raise MalformedDataError(f"reference to {what} #{idx}, but only {len(table)} seen")
    return table[idx]


# ---- functions -------------------------------------------------------------------------
def write_function_skeleton(ctx, func) -> None:
    scratch = ctx.scratch
    if scratch is None:
        scratch = ctx.scratch = {}
    st = scratch.get(_SCRATCH_KEY)
    if st is None:
        st = scratch[_SCRATCH_KEY] = _WriteState()
    info = write_code(ctx, st, func.__code__)
    g = func.__globals__
    entry = st.globals.get(id(g))
    if entry is None:
        entry = _GlobalsEntry(len(st.globals), g)
        st.globals[id(g)] = entry
        name = g.get("__name__")
        if type(name) is str:
            ctx.write_varuint64(1)
            ctx.write_str_ref(name)
        else:
            ctx.write_varuint64(0)
    else:
        ctx.write_varuint64(entry.index + 2)
    closure = func.__closure__
    fill = None
    if closure is not None:
        cells = st.cells
        keep = st.keep
        markers = None
        fill = []
        for i, cell in enumerate(closure):
            idx = cells.get(id(cell))
            if idx is not None:
                marker = idx + 2
            else:
                cells[id(cell)] = len(cells)
                keep.append(cell)
                try:
                    cell.cell_contents
                    marker = 0
                    fill.append(cell)
                except ValueError:
                    marker = 1
            if marker and markers is None:
                markers = [0] * i
            if markers is not None:
                markers.append(marker)
        if markers is None:
            ctx.write_varuint64(0)          # all new, all filled
        else:
            ctx.write_varuint64(1)
            for marker in markers:
                ctx.write_varuint64(marker)
        if not fill:
            fill = None
    st.pending = (func, entry, fill, info)


def _submodules(info: _CodeInfo, modules) -> list:
    """Submodules of `modules` that the code reaches as attributes (`os.path.join` with
    only `os` a global): the receiver must import them too."""
    if info.all_names is None:
        info.all_names = _compat.code_all_names(info.ref())
        info.submodules = {}
    names = info.all_names
    out = []
    stamp = len(sys.modules)
    for module in modules:
        mname = getattr(module, "__name__", None)
        if type(mname) is not str:
            continue
        cached = info.submodules.get(mname)
        if cached is None or cached[0] != stamp:
            prefix = mname + "."
            found = []
            for name, sub in list(sys.modules.items()):
                if sub is not None and name.startswith(prefix):
                    if all(token in names for token in name[len(prefix):].split(".")):
                        found.append(sub)
            cached = (stamp, found)
            info.submodules[mname] = cached
        out.extend(cached[1])
    return out


def write_function_state(ctx, func) -> None:
    """The state of func if its skeleton was written just before (by value); nothing
    for a function by reference."""
    scratch = ctx.scratch
    st = scratch.get(_SCRATCH_KEY) if scratch is not None else None
    if st is None:
        return
    pending = st.pending
    if pending is None or pending[0] is not func:
        return
    st.pending = None
    entry, fill, info = pending[1], pending[2], pending[3]
    g = entry.globals
    gnames = None
    modules = None
    if info.global_names:
        written = entry.names
        for name in info.global_names:
            if name not in written and name in g:
                written.add(name)
                if gnames is None:
                    gnames = [name]
                else:
                    gnames.append(name)
                if type(g[name]) is ModuleType:
                    if modules is None:
                        modules = [g[name]]
                    else:
                        modules.append(g[name])
    flags = F_GLOBALS if gnames is not None else 0
    if func.__defaults__ is not None:
        flags |= F_DEFAULTS
    if func.__kwdefaults__ is not None:
        flags |= F_KWDEFAULTS
    if func.__annotations__:
        flags |= F_ANNOTATIONS
    if func.__dict__:
        flags |= F_DICT
    if func.__name__ != info.name:
        flags |= F_NAME
    if func.__qualname__ != info.qualname:
        flags |= F_QUALNAME
    module = func.__module__
    gname = g.get("__name__")
    if module is not gname and module != gname:
        flags |= F_MODULE if type(module) is str else F_MODULE_VALUE
    doc = func.__doc__
    if doc is not info.doc and (info.doc is _NO_DOC or type(doc) is not str or doc != info.doc):
        flags |= F_DOC
    if _compat.HAS_TYPE_PARAMS and _compat.function_type_params(func):
        flags |= F_TYPE_PARAMS
    if fill is not None:
        for cell in fill:
            contents = cell.cell_contents
            if type(contents) is ModuleType:
                if modules is None:
                    modules = [contents]
                else:
                    modules.append(contents)
    if modules is not None:
        submodules = _submodules(info, modules)
        if submodules:
            flags |= F_SUBMODULES
    else:
        submodules = None
    ctx.write_varuint64(flags)
    if fill is not None:
        write_value = ctx.write_value
        for cell in fill:
            write_value(cell.cell_contents)
    if flags:
        _write_function_fields(ctx, func, flags, g, gnames, submodules)


def _write_function_fields(ctx, func, flags, g, gnames, submodules) -> None:
    if gnames is not None:
        ctx.write_varuint64(len(gnames))
        for gname in gnames:
            ctx.write_str_ref(gname)
            ctx.write_value(g[gname])
    if flags & F_DEFAULTS:
        ctx.write_value(func.__defaults__)
    if flags & F_KWDEFAULTS:
        ctx.write_value(func.__kwdefaults__)
    if flags & F_ANNOTATIONS:
        ctx.write_value(func.__annotations__)
    if flags & F_DICT:
        ctx.write_value(func.__dict__)
    if flags & F_NAME:
        ctx.write_str_ref(func.__name__)
    if flags & F_QUALNAME:
        ctx.write_str_ref(func.__qualname__)
    if flags & F_MODULE:
        ctx.write_str_ref(func.__module__)
    elif flags & F_MODULE_VALUE:
        ctx.write_value(func.__module__)
    if flags & F_DOC:
        ctx.write_value(func.__doc__)
    if flags & F_TYPE_PARAMS:
        ctx.write_value(tuple(_compat.function_type_params(func)))
    if flags & F_SUBMODULES:
        ctx.write_value(submodules)


def read_function_skeleton(ctx):
    scratch = ctx.scratch
    if scratch is None:
        scratch = ctx.scratch = {}
    st = scratch.get(_SCRATCH_KEY)
    if st is None:
        st = scratch[_SCRATCH_KEY] = _ReadState()
    read_varuint64 = ctx.read_varuint64
    codes = st.codes
    if codes:
        k = read_varuint64()            # read_code, inlined for the common case
        if 0 < k <= len(codes):
            code = codes[k - 1]
        elif k == 0:
            code = _read_new_code(ctx, codes)
        else:
            code = _table_get(codes, k - 1, "code object")
    else:
        code = read_code(ctx, st)
    k = read_varuint64()
    if k < 2:
        g = {"__builtins__": builtins}
        if k == 1:
            g["__name__"] = ctx.read_str_ref()
        st.globals.append(g)
    elif k - 2 < len(st.globals):
        g = st.globals[k - 2]
    else:
        g = _table_get(st.globals, k - 2, "globals dict")
    nfree = len(code.co_freevars)
    closure = None
    fill = None
    if nfree:
        table = st.cells
        mode = read_varuint64()
        if mode == 0:                       # all new, all filled
            # one or two cells without a comprehension: its frame costs more than the
            # cells (~180 ns, a tenth of loading a small closure)
            if nfree == 1:
                fill = [CellType()]
            elif nfree == 2:
                fill = [CellType(), CellType()]
            else:
                fill = [CellType() for _ in range(nfree)]
            table.extend(fill)
            closure = tuple(fill)
        elif mode == 1:
            cells = []
            for _ in range(nfree):
                k = read_varuint64()
                if k == 0:
                    cell = CellType()
                    table.append(cell)
                    if fill is None:
                        fill = [cell]
                    else:
                        fill.append(cell)
                elif k == 1:
                    cell = CellType()
                    table.append(cell)
                else:
                    cell = _table_get(table, k - 2, "cell")
                cells.append(cell)
            closure = tuple(cells)
        else:
            raise MalformedDataError(f"bad closure mode {mode}")
    func = FunctionType(code, g, None, None, closure)
    st.pending = (func, g, fill)
    return func


def read_function_state(ctx, func) -> None:
    """The state of func if its skeleton was read just before (by value); nothing for
    a function by reference."""
    scratch = ctx.scratch
    st = scratch.get(_SCRATCH_KEY) if scratch is not None else None
    if st is None:
        return
    pending = st.pending
    if pending is None or pending[0] is not func:
        return
    st.pending = None
    fill = pending[2]
    flags = ctx.read_varuint64()
    if fill is not None:
        read_value = ctx.read_value
        for cell in fill:
            cell.cell_contents = read_value()
    if flags:
        _read_function_fields(ctx, func, pending[1], flags)
    policy = ctx.policy
    if policy is not None:
        policy.validate_function(func, is_local=True)


def rebuilt_by_value(ctx, func) -> bool:
    """True when func was rebuilt from its code by the payload being read."""
    scratch = ctx.scratch
    st = scratch.get(_SCRATCH_KEY) if scratch is not None else None
    if st is None or type(func) is not FunctionType:
        return False
    g = func.__globals__
    return any(g is d for d in st.globals)


def _read_function_fields(ctx, func, g, flags) -> None:
    if flags & ~F_ALL:
        raise MalformedDataError(f"bad function flags {flags:#x}")
    if flags & F_GLOBALS:
        n = ctx.read_varuint64()
        for _ in range(n):
            name = ctx.read_str_ref()
            g[name] = ctx.read_value()
    if flags & F_DEFAULTS:
        func.__defaults__ = ctx.read_value()
    if flags & F_KWDEFAULTS:
        func.__kwdefaults__ = ctx.read_value()
    if flags & F_ANNOTATIONS:
        func.__annotations__ = ctx.read_value()
    if flags & F_DICT:
        fdict = ctx.read_value()
        if type(fdict) is not dict:
            raise MalformedDataError("function __dict__ is not a dict")
        func.__dict__.update(fdict)
    if flags & F_NAME:
        func.__name__ = ctx.read_str_ref()
    if flags & F_QUALNAME:
        func.__qualname__ = ctx.read_str_ref()
    if flags & F_MODULE:
        func.__module__ = ctx.read_str_ref()
    elif flags & F_MODULE_VALUE:
        func.__module__ = ctx.read_value()
    if flags & F_DOC:
        func.__doc__ = ctx.read_value()
    if flags & F_TYPE_PARAMS:
        func.__type_params__ = ctx.read_value()
    if flags & F_SUBMODULES:
        ctx.read_value()        # reading the modules imported them


__all__ = [
    "CodeSerializer",
    "CellSerializer",
    "write_function_skeleton",
    "write_function_state",
    "read_function_skeleton",
    "read_function_state",
    "code_info",
    "load_code",
]
