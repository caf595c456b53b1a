"""Binary arrays: `array.array`, and numpy (optional) arrays, dtypes and scalars.

numpy is never imported by this module on its own: the writer meets numpy objects only
when the user's data holds them (so numpy is already imported), and the reader imports
numpy only when a payload names a numpy type.

Optional types
--------------
Types of optional packages get internal type ids reserved up front, whether or not the
package is installed: `OPTIONAL_TYPES` below, id = `resolver.OPTIONAL_ID_BASE + position`
(positions are part of the wire format: append only). The resolver consults the table
when a class is not in its cache (`class_to_optional_position`) and when a payload names
one of these ids (`load_optional`). They are data, not code: allowed in strict mode
without registration (an object array's elements follow the normal strict rules).
Scalar types and dtype classes are keyed by their dtype character, which is stable
across numpy versions (their class names are not: `bool_` became `bool`,
`dtype[float64]` became `dtypes.Float64DType`).

Wire formats
------------
array.array: typecode (string), buffer (see WriteContext.write_buffer; offered to
buffer_callback when at least `fory.oob_threshold` bytes).

ndarray: dtype (below), flags (u8: 1 Fortran order, 2 read-only), ndim, dims (varuints),
then, for dtypes of plain memory, one buffer with the elements in that order (always
offered to buffer_callback, as pickle does: zero copy out of band; a non-contiguous
array is copied to C order first). Dtypes that hold Python objects (object, structured
with object fields, StringDType) carry their elements as values instead: a list in the
object's state phase (so an object array may contain itself), then u8 read-only flag.
Whether the elements are a buffer or values is decided by the dtype alone on both
sides, so a payload cannot make the reader build an object array out of raw bytes.
Arrays are identity-tracked even with ref=False (an array reached twice is written
once), as pickle's memo does.

dtype: u8 kind, then
  0 STR       the dtype string (`dtype.str`: '<f8', '|S3', '<M8[ns]', '|O', ...)
  1 STRUCT    u8 flags (1 aligned, 2 record), nfields, per field: name (string),
              dtype, offset, title (a value: None or str); then itemsize
  2 SUBARRAY  base dtype, ndim, dims
  3 STRING    numpy 2 StringDType: u8 flags (1 coerce, 2 has na_object), [na_object]
  4 OTHER     any other dtype, as a value (reduce protocol; refused in strict mode)
dtype metadata (`dtype.metadata`) is not kept.

numpy scalar: u8 (0: the class's default dtype, 1: a dtype follows), [dtype], then the
scalar's `itemsize` bytes, or its `item()` as a value when the dtype holds objects.
"""

from __future__ import annotations

import array
import importlib
import re
import sys
import warnings

from pyfory import _extras
from pyfory._core import Serializer
from pyfory._objects import fill_object_array as _fill_object_array
from pyfory.error import DeserializationError, MalformedDataError, SerializationError

# ---- array.array ---------------------------------------------------------------------


class ArraySerializer(Serializer):
    """array.array (exact class; subclasses go through the reduce protocol)."""

    def write(self, ctx, obj):
        ctx.write_string(obj.typecode)
        # offered to buffer_callback when large, like bytes and bytearray
        ctx.write_buffer(obj, always_offer=False)

    def read(self, ctx):
        typecode = ctx.read_string()
        if len(typecode) != 1 or typecode not in array.typecodes:
            raise MalformedDataError(f"unknown array.array typecode {typecode!r}")
        data, _ = ctx.read_buffer_view()
        if typecode == "u":
            with warnings.catch_warnings():   # 'u' is deprecated since 3.13
                warnings.simplefilter("ignore", DeprecationWarning)
                arr = array.array(typecode)
        else:
            arr = array.array(typecode)
        nbytes = data.nbytes
        if nbytes % arr.itemsize:
            raise MalformedDataError(
                f"array.array('{typecode}') data of {nbytes} bytes is not a multiple of "
                f"its item size {arr.itemsize}")
        # array.array owns its memory, so it cannot be a view of the buffer: one copy,
        # straight from the payload (in band) or from the caller's buffer
        arr.frombytes(data)
        return arr


# ---- numpy: helpers ------------------------------------------------------------------

def _numpy():
    np = sys.modules.get("numpy")
    if np is None:
        import numpy as np
    return np


DT_STR, DT_STRUCT, DT_SUBARRAY, DT_STRING, DT_OTHER = 0, 1, 2, 3, 4
_ALIGNED, _RECORD = 1, 2
_SD_COERCE, _SD_NA = 1, 2
_MAX_DTYPE_DEPTH = 32
_MAX_NDIM = 64
# what `dtype.str` looks like: byte order, kind, size, optional datetime unit
_DTYPE_STR = re.compile(r"[<>|=][?a-zA-Z][0-9]{0,10}(\[[0-9]{0,10}[a-zA-Z\u03bc]{1,3}\])?\Z")
# kinds of dtypes whose elements are plain memory
_PLAIN_KINDS = frozenset("biufcmMSUV")

# dtype -> (kind, dtype.str) for dtypes written as their string; dtype string -> dtype
_encode_cache: dict = {}
_decode_cache: dict = {}


def _plain_uncached(dt) -> bool:
    if dt.hasobject:
        return False
    if dt.fields is not None:
        return all(_plain_uncached(dt.fields[name][0]) for name in dt.names)
    if dt.subdtype is not None:
        return _plain_uncached(dt.subdtype[0])
    return dt.kind in _PLAIN_KINDS


_plain_cache: dict = {}


def _is_plain(dt) -> bool:
    """True when the dtype's elements are plain memory (can travel as a buffer)."""
    plain = _plain_cache.get(dt)
    if plain is None:
        plain = _plain_uncached(dt)
        if len(_plain_cache) < 4096:
            _plain_cache[dt] = plain
    return plain


def write_dtype(ctx, dt, depth: int = 0) -> None:
    cached = _encode_cache.get(dt)
    if cached is not None and cached[0] is type(dt):
        ctx.write_uint8(DT_STR)
        ctx.write_string(cached[1])
        return
    np = _numpy()
    if depth > _MAX_DTYPE_DEPTH:
        raise SerializationError("numpy dtype nests too deeply")
    if dt.fields is not None:
        names = dt.names
        fields = [dt.fields[name] for name in names]
        if all(len(f) == 2 or f[2] is None or type(f[2]) is str for f in fields):
            ctx.write_uint8(DT_STRUCT)
            ctx.write_uint8((_ALIGNED if dt.isalignedstruct else 0)
                            | (_RECORD if dt.type is np.record else 0))
            ctx.write_varuint64(len(names))
            for name, f in zip(names, fields):
                ctx.write_string(name)
                write_dtype(ctx, f[0], depth + 1)
                ctx.write_varuint64(f[1])
                ctx.write_value(f[2] if len(f) > 2 else None)
            ctx.write_varuint64(dt.itemsize)
            return
    elif dt.subdtype is not None:
        base, shape = dt.subdtype
        ctx.write_uint8(DT_SUBARRAY)
        write_dtype(ctx, base, depth + 1)
        ctx.write_varuint64(len(shape))
        for n in shape:
            ctx.write_varuint64(n)
        return
    elif dt.kind == "T" and type(dt).__name__ == "StringDType":
        na = getattr(dt, "na_object", _MISSING)
        ctx.write_uint8(DT_STRING)
        ctx.write_uint8((_SD_COERCE if dt.coerce else 0) | (_SD_NA if na is not _MISSING else 0))
        if na is not _MISSING:
            ctx.write_value(na)
        return
    else:
        # dtype.str, or byte order + char for the aliases it does not name apart
        # ('q' longlong and 'l' long are both '<i8' on 64-bit Linux)
        for s in (dt.str, dt.byteorder + dt.char):
            if not _DTYPE_STR.match(s):
                continue
            try:
                same = np.dtype(s)
            except TypeError:
                continue
            if same == dt and type(same) is type(dt) and same.type is dt.type:
                if len(_encode_cache) < 4096 and dt not in _encode_cache:
                    _encode_cache[dt] = (type(dt), s)
                ctx.write_uint8(DT_STR)
                ctx.write_string(s)
                return
    if class_to_optional_position(type(dt)) is not None:
        raise SerializationError(
            f"cannot serialize numpy dtype {dt!r} (field titles must be str or None)")
    ctx.write_uint8(DT_OTHER)
    ctx.write_value(dt)


_MISSING = object()


def read_dtype(ctx, depth: int = 0):
    kind = ctx.read_uint8()
    if kind == DT_STR:
        s = ctx.read_string()
        dt = _decode_cache.get(s)
        if dt is not None:
            return dt
        return _dtype_from_str(s)
    return _read_dtype_kind(ctx, kind, depth)


def _dtype_from_str(s: str):
    if not _DTYPE_STR.match(s):
        raise MalformedDataError(f"bad numpy dtype string {s!r}")
    np = _numpy()
    try:
        dt = np.dtype(s)
    except (TypeError, ValueError) as e:
        raise MalformedDataError(f"bad numpy dtype string {s!r}: {e}") from None
    if len(_decode_cache) < 4096:
        _decode_cache[s] = dt
    return dt


def _read_dtype_kind(ctx, kind: int, depth: int):
    if depth > _MAX_DTYPE_DEPTH:
        raise MalformedDataError("numpy dtype nests too deeply")
    np = _numpy()
    if kind == DT_STRUCT:
        flags = ctx.read_uint8()
        n = ctx.read_varuint64()
        if n > len(ctx) - ctx.reader_index:
            raise MalformedDataError(f"structured dtype with {n} fields in a short payload")
        names, formats, offsets, titles = [], [], [], []
        for _ in range(n):
            names.append(ctx.read_string())
            formats.append(read_dtype(ctx, depth + 1))
            offsets.append(ctx.read_varuint64())
            title = ctx.read_value()
            if title is not None and type(title) is not str:
                raise MalformedDataError("bad numpy field title")
            titles.append(title)
        itemsize = ctx.read_varuint64()
        spec = {"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize}
        if any(t is not None for t in titles):
            spec["titles"] = titles
        try:
            dt = np.dtype(spec, align=bool(flags & _ALIGNED))
            if flags & _RECORD:
                dt = np.dtype((np.record, dt))
        except (TypeError, ValueError, OverflowError) as e:
            raise MalformedDataError(f"bad structured numpy dtype: {e}") from None
        return dt
    if kind == DT_SUBARRAY:
        base = read_dtype(ctx, depth + 1)
        shape = _read_shape(ctx)
        try:
            return np.dtype((base, shape))
        except (TypeError, ValueError, OverflowError) as e:
            raise MalformedDataError(f"bad numpy subarray dtype: {e}") from None
    if kind == DT_STRING:
        flags = ctx.read_uint8()
        string_dtype = getattr(getattr(np, "dtypes", None), "StringDType", None)
        kwargs = {"coerce": bool(flags & _SD_COERCE)}
        if flags & _SD_NA:
            kwargs["na_object"] = ctx.read_value()
        if string_dtype is None:
            raise DeserializationError("payload holds a numpy StringDType: it needs numpy >= 2")
        return string_dtype(**kwargs)
    if kind == DT_OTHER:
        dt = ctx.read_value()
        if not isinstance(dt, np.dtype):
            raise MalformedDataError(f"expected a numpy dtype, got {type(dt).__name__}")
        return dt
    raise MalformedDataError(f"unknown numpy dtype kind {kind}")


def _read_shape(ctx) -> tuple:
    ndim = ctx.read_varuint64()
    if ndim > _MAX_NDIM:
        raise MalformedDataError(f"numpy array with {ndim} dimensions")
    return tuple([ctx.read_varuint64() for _ in range(ndim)])


def _write_shape(ctx, shape) -> None:
    ctx.write_varuint64(len(shape))
    for n in shape:
        ctx.write_varuint64(n)


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---- numpy: serializers --------------------------------------------------------------

F_FORTRAN = 1
F_READONLY = 2

# in-band arrays at least this large are copied into numpy-allocated memory
_NUMPY_ALLOC_MIN = 1 << 20


class NdarraySerializer(Serializer):
    """numpy.ndarray (exact class; np.matrix and other subclasses use reduce)."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        # object arrays carry their elements in the state phase (cycles work)
        self.has_state = True
        # an array reached twice is written once, even with ref=False (as pickle's memo
        # does): pandas' state, for one, names each block's values twice
        self.track_identity = True
        np = _numpy()
        self._np = np
        self._uint8 = np.dtype(np.uint8)
        self._frombuffer = np.frombuffer

    def write(self, ctx, arr):
        dt = arr.dtype
        write_dtype(ctx, dt)
        flags = arr.flags
        readonly = 0 if flags.writeable else F_READONLY
        if not _is_plain(dt):
            fortran = F_FORTRAN if flags.f_contiguous and not flags.c_contiguous else 0
            ctx.write_uint8(fortran)        # read-only: after the elements (write_state)
            _write_shape(ctx, arr.shape)
            return
        if flags.c_contiguous:
            order = 0
        elif flags.f_contiguous:
            order = F_FORTRAN
        else:
            # not contiguous: one copy, in C order
            arr = self._np.ascontiguousarray(arr)
            order = 0
        ctx.write_uint8(order | readonly)
        _write_shape(ctx, arr.shape)
        if dt.itemsize == 0:
            ctx.write_buffer(b"", always_offer=True)
        else:
            # a flat byte view of the array's own memory, in memory order: no copy
            ctx.write_buffer(arr.ravel(order="K").view(self._uint8), always_offer=True)

    def write_state(self, ctx, arr):
        dt = arr.dtype
        if _is_plain(dt):
            return
        flags = arr.flags
        order = "F" if flags.f_contiguous and not flags.c_contiguous else "C"
        ctx.write_value(arr.ravel(order=order).tolist())
        ctx.write_uint8(0 if flags.writeable else F_READONLY)

    def read(self, ctx):
        np = self._np
        kind = ctx.read_uint8()
        if kind == DT_STR:      # the common case, inline
            s = ctx.read_string()
            dt = _decode_cache.get(s)
            if dt is None:
                dt = _dtype_from_str(s)
        else:
            dt = _read_dtype_kind(ctx, kind, 0)
        flags = ctx.read_uint8()
        if flags & ~(F_FORTRAN | F_READONLY):
            raise MalformedDataError(f"bad numpy array flags {flags}")
        ndim = ctx.read_varuint64()
        if ndim == 1:
            count = ctx.read_varuint64()
            shape = (count,)
        else:
            if ndim > _MAX_NDIM:
                raise MalformedDataError(f"numpy array with {ndim} dimensions")
            shape = tuple([ctx.read_varuint64() for _ in range(ndim)])
            count = _prod(shape)
        order = "F" if flags & F_FORTRAN else "C"
        if not _is_plain(dt):
            # elements follow as values (read_state): each costs at least one byte
            remaining = len(ctx) - ctx.reader_index
            if count > remaining or count * dt.itemsize > 16 * remaining + (1 << 16):
                raise MalformedDataError(
                    f"numpy array of {count} {dt} elements in a payload with {remaining} "
                    "bytes left")
            try:
                return np.empty(shape, dtype=dt, order=order)
            except (TypeError, ValueError) as e:
                raise MalformedDataError(f"bad numpy array: {e}") from None
        data, in_band = ctx.read_buffer_view()
        nbytes = data.nbytes
        if nbytes != count * dt.itemsize:
            raise MalformedDataError(
                f"numpy array {shape} of {dt} needs {count * dt.itemsize} bytes, the payload "
                f"has {nbytes}")
        try:
            if count == 0 or dt.itemsize == 0:
                arr = np.empty(shape, dtype=dt, order=order)
            else:
                if in_band:
                    # the one copy in band, out of the payload into memory the array owns
                    data = self._copy_out(data, nbytes)
                # a view of the buffer: the out-of-band buffer itself (zero copy) or
                # the copy just made
                arr = self._frombuffer(data, dt)
                if ndim != 1:
                    arr = arr.reshape(shape, order=order)
        except (TypeError, ValueError) as e:
            raise MalformedDataError(f"bad numpy array: {e}") from None
        if flags & F_READONLY and arr.flags.writeable:
            arr.flags.writeable = False
        return arr

    def _copy_out(self, view, nbytes: int):
        if nbytes < _NUMPY_ALLOC_MIN:
            return bytearray(view)
        # numpy's allocator asks the kernel for huge pages on large blocks: the first
        # touch of 100 MB costs a few page faults instead of 25,000 (3-5x faster than
        # a bytearray of the same size, which is what pickle copies into)
        flat = self._np.empty(nbytes, self._uint8)
        flat[:] = self._frombuffer(view, self._uint8)
        return flat

    def _fill_flat(self, flat, dt, items: list) -> None:
        if dt.fields is None and len(items) > 1:
            try:
                # StringDType (or object) elements: one C loop; fromiter keeps each item
                # as it is (a list stays a list), where flat[:] = items would not
                flat[:] = self._np.fromiter(items, dtype=object, count=len(items))
                return
            except (TypeError, ValueError):     # numpy < 1.23: no object fromiter
                pass
        for i, item in enumerate(items):
            flat[i] = item

    def read_state(self, ctx, arr):
        if _is_plain(arr.dtype):
            return
        items = ctx.read_value()
        if type(items) is not list or len(items) != arr.size:
            raise MalformedDataError("numpy object array elements do not match its shape")
        if arr.dtype.kind == "O" and (arr.flags.c_contiguous or arr.flags.f_contiguous):
            # the array read() made: its slots are filled in place, in memory order
            _fill_object_array(arr.__array_interface__["data"][0], items)
        else:
            self._fill_flat(arr.ravel(order="K"), arr.dtype, items)   # a view, memory order
        if ctx.read_uint8() & F_READONLY:
            arr.flags.writeable = False


class DtypeSerializer(Serializer):
    """numpy.dtype objects (every dtype class)."""

    def write(self, ctx, obj):
        write_dtype(ctx, obj)

    def read(self, ctx):
        dt = read_dtype(ctx)
        if not isinstance(dt, self.cls):
            raise MalformedDataError(f"payload names {self.cls!r} but holds dtype {dt!r}")
        return dt


class ScalarSerializer(Serializer):
    """numpy scalars (numpy.float64(1.5), numpy.datetime64('2020-01-01', 'ns'), ...)."""

    def __init__(self, fory, cls):
        super().__init__(fory, cls)
        np = _numpy()
        self._np = np
        self.default_dtype = np.dtype(cls)

    def write(self, ctx, x):
        dt = x.dtype
        if dt == self.default_dtype and dt.str == self.default_dtype.str:
            ctx.write_uint8(0)
        else:
            ctx.write_uint8(1)
            write_dtype(ctx, dt)
        if _is_plain(dt):
            if dt.itemsize:     # exactly itemsize bytes ('U0' scalars have none)
                ctx.write_bytes(x.tobytes())
        else:
            ctx.write_value(x.item())

    def read(self, ctx):
        np = self._np
        flag = ctx.read_uint8()
        if flag == 0:
            dt = self.default_dtype
        elif flag == 1:
            dt = read_dtype(ctx)
        else:
            raise MalformedDataError(f"bad numpy scalar flag {flag}")
        try:
            if _is_plain(dt):
                if dt.itemsize == 0:
                    x = np.zeros(1, dtype=dt)[0]
                else:
                    data = bytearray(ctx.read_bytes(dt.itemsize))
                    x = np.frombuffer(data, dtype=dt)[0]
            else:
                remaining = len(ctx) - ctx.reader_index
                if dt.itemsize > 16 * remaining + (1 << 16):
                    raise MalformedDataError(f"numpy {dt} scalar in a payload with {remaining} "
                                             "bytes left")
                value = ctx.read_value()
                holder = np.empty((), dtype=dt)
                holder[()] = value
                x = holder[()]
        except (TypeError, ValueError) as e:
            raise MalformedDataError(f"bad numpy scalar: {e}") from None
        if type(x) is not self.cls:
            raise MalformedDataError(f"payload names {self.cls!r} but holds a {type(x)!r}")
        return x


# ---- the table of optional types ----------------------------------------------------

class OptionalType:
    """A type of an optional package, loaded only when needed."""

    __slots__ = ("module", "name", "loader", "serializer")

    def __init__(self, module, name, loader, serializer):
        self.module = module          # the package to import
        self.name = name              # for messages; not written
        self.loader = loader          # loader(module object) -> the class
        self.serializer = serializer  # serializer(fory, cls)

    def load(self):
        try:
            mod = importlib.import_module(self.module)
        except ImportError as e:
            hint = _extras.install_hint(self.module)
            raise DeserializationError(
                f"the payload holds a {self.module} object ({self.name}), but {self.module} "
                f"cannot be imported here: {e}" + (f"; {hint}" if hint else "")) from e
        cls = self.loader(mod)
        if cls is None:
            raise DeserializationError(
                f"the payload holds a {self.module} object ({self.name}), which this "
                f"version of {self.module} does not have")
        return cls


def _scalar_type(char):
    return lambda np: np.dtype(char).type


def _dtype_class(char):
    return lambda np: type(np.dtype(char))


# dtype characters, in a fixed order (positions are wire ids)
_SCALAR_CHARS = "?bBhHiIlLqQefdgFDGSUVMm"
_DTYPE_CHARS = _SCALAR_CHARS + "O"

# Positions are internal type ids (OPTIONAL_ID_BASE + position): append only.
OPTIONAL_TYPES = [
    OptionalType("numpy", "ndarray", lambda np: np.ndarray, NdarraySerializer),
    OptionalType("numpy", "dtype", lambda np: np.dtype, DtypeSerializer),
    *[OptionalType("numpy", f"scalar type of dtype {c!r}", _scalar_type(c), ScalarSerializer)
      for c in _SCALAR_CHARS],
    *[OptionalType("numpy", f"class of dtype {c!r}", _dtype_class(c), DtypeSerializer)
      for c in _DTYPE_CHARS],
    OptionalType("numpy", "dtypes.StringDType",
                 lambda np: getattr(getattr(np, "dtypes", None), "StringDType", None),
                 DtypeSerializer),
]

OPTIONAL_MODULES = frozenset(t.module for t in OPTIONAL_TYPES)

# module -> {class: position}, built when the writer first meets a class of that module
_class_positions: dict = {}


def class_to_optional_position(cls):
    """Position in OPTIONAL_TYPES of cls (exactly that class), or None."""
    module = getattr(cls, "__module__", None)
    if type(module) is not str:
        return None
    root = module.partition(".")[0]
    if root not in OPTIONAL_MODULES:
        return None
    table = _class_positions.get(root)
    if table is None:
        mod = sys.modules.get(root)
        if mod is None:
            return None
        table = {}
        for position, entry in enumerate(OPTIONAL_TYPES):
            if entry.module != root:
                continue
            try:
                found = entry.loader(mod)
            except Exception:      # a dtype this numpy version lacks
                found = None
            if isinstance(found, type):
                table.setdefault(found, position)
        _class_positions[root] = table
    return table.get(cls)


def load_optional(position: int):
    """(class, serializer factory) of OPTIONAL_TYPES[position]; imports its package."""
    if position < 0 or position >= len(OPTIONAL_TYPES):
        raise MalformedDataError(f"unknown internal type id (optional type #{position})")
    entry = OPTIONAL_TYPES[position]
    return entry.load(), entry.serializer
