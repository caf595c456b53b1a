# cython: language_level=3
"""Fast serializer for plain objects and dataclasses: attribute values only.

An object's attribute names form a *layout*. Each distinct layout is written once per
payload (names through the string table) and then referred to by a small index, so
each instance costs a varint plus its values. Objects are two-phase: created empty
with ``cls.__new__(cls)`` (as pickle does), registered for back-references, then
filled, so cycles through attributes work.

Layout index on the wire (before the values):
  0       the class's declared dataclass fields, verified by a schema hash the first
          time in a payload (only with compatible=False)
  1       a new layout follows: varint count, then the names
  k >= 2  layout number k - 2 of this class in this payload
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.dict cimport PyDict_SetItem, PyDict_GetItem
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM

from pyfory._core cimport Serializer, WriteContext, ReadContext

import copyreg
import dataclasses
import zlib

from pyfory.error import MalformedDataError, SchemaMismatchError, SerializationError

cdef extern from "Python.h":
    bint PyDict_Next(object p, Py_ssize_t *ppos, PyObject* *pkey, PyObject* *pvalue)
    object PyObject_GenericGetDict(object o, void* context)
    int PyObject_GenericSetDict(object o, object value, void* context) except -1
    dict _PyDict_NewPresized(Py_ssize_t minused)
    object PyObject_Call(object callable, object args, object kwargs)

cdef extern from *:
    """
    static PyObject* pyfory_call_tp_new(PyObject* cls, PyObject* args) {
        PyTypeObject* t = (PyTypeObject*)cls;
        if (t->tp_new == NULL) {
            PyErr_Format(PyExc_TypeError, "cannot create '%s' instances", t->tp_name);
            return NULL;
        }
        return t->tp_new(t, args, NULL);
    }
    """
    object call_tp_new "pyfory_call_tp_new"(object cls, object args)

cdef tuple EMPTY = ()
cdef int MAX_INLINE_NAMES = 64

# what a name of an incoming layout becomes on this side
cdef enum:
    A_DICT = 0      # goes into the instance __dict__
    A_SLOT = 1      # set with setattr (a __slots__ member)
    A_SKIP = 2      # a dataclass field this side no longer has


cdef class _WriteState:
    # per payload: layouts met so far (tuple of names -> index); the last one used
    cdef dict index
    cdef tuple last
    cdef Py_ssize_t last_index
    cdef bint schema_sent

    def __cinit__(self):
        self.index = {}
        self.last = None
        self.last_index = -1
        self.schema_sent = False


cdef class _ReadLayout:
    cdef tuple names
    cdef bytes actions          # one A_* per name
    cdef bint any_slot
    cdef bint any_skip
    cdef list missing           # dataclass fields absent from the layout: (name, default, factory)


cdef class _ReadState:
    cdef list layouts
    cdef bint schema_checked

    def __cinit__(self):
        self.layouts = []
        self.schema_checked = False


cdef class ObjectSerializer(Serializer):
    cdef public bint uses_dict
    cdef public tuple slot_names
    cdef public bint is_dataclass
    cdef tuple field_names
    cdef dict field_info          # name -> (default, factory) for dataclass fields
    cdef uint32_t schema_hash
    cdef bint compatible
    cdef bint custom_new          # cls.__new__ is not object.__new__: it may set attributes
    cdef _ReadLayout declared

    def __init__(self, fory, cls):
        Serializer.__init__(self, fory, cls)
        self.has_state = True
        self.compatible = fory.compatible if fory is not None else True
        self.slot_names = tuple(copyreg._slotnames(cls))
        self.uses_dict = hasattr(cls, "__dictoffset__") and cls.__dictoffset__ != 0
        self.is_dataclass = dataclasses.is_dataclass(cls)
        self.field_info = {}
        if self.is_dataclass:
            fields = dataclasses.fields(cls)
            self.field_names = tuple(f.name for f in fields)
            for f in fields:
                default = f.default
                factory = f.default_factory
                self.field_info[f.name] = (
                    None if default is dataclasses.MISSING else default,
                    default is not dataclasses.MISSING,
                    None if factory is dataclasses.MISSING else factory,
                )
        else:
            self.field_names = EMPTY
        self.schema_hash = zlib.crc32(
            (cls.__qualname__ + "|" + ",".join(self.field_names)).encode("utf-8", "surrogatepass"))
        self.custom_new = cls.__new__ is not object.__new__
        self.declared = self.make_layout(self.field_names)

    # -- writing --
    cpdef write(self, WriteContext ctx, obj):
        # nothing: the reader creates the object with cls.__new__(cls)
        pass

    cdef _WriteState write_state_for(self, WriteContext ctx):
        cdef _WriteState st
        if ctx.scratch is None:
            ctx.scratch = {}
        st = ctx.scratch.get(self)
        if st is None:
            st = _WriteState()
            ctx.scratch[self] = st
        return st

    cpdef write_state(self, WriteContext ctx, obj):
        cdef _WriteState st = self.write_state_for(ctx)
        cdef object d = None
        cdef Py_ssize_t pos = 0, n = 0, i, idx
        cdef PyObject* k
        cdef PyObject* v
        cdef tuple last = st.last
        cdef bint same
        cdef list slot_values = None
        cdef list names_list
        if self.uses_dict:
            d = PyObject_GenericGetDict(obj, NULL)
            n = len(d)
        if self.slot_names:
            slot_values = []
            names_list = []
            for name in self.slot_names:
                try:
                    slot_values.append(getattr(obj, name))
                    names_list.append(name)
                except AttributeError:
                    pass
        # is it the layout of the previous instance? (compare names by identity:
        # attribute names are interned, so this is the common case and cheap)
        same = last is not None and PyTuple_GET_SIZE(last) == n + (len(slot_values) if slot_values is not None else 0)
        if same and d is not None:
            i = 0
            while PyDict_Next(d, &pos, &k, &v):
                if k != PyTuple_GET_ITEM(last, i):
                    same = False
                    break
                i += 1
        if same and slot_values is not None:
            for i in range(len(names_list)):
                if names_list[i] is not <object>PyTuple_GET_ITEM(last, n + i):
                    same = False
                    break
        if same:
            idx = st.last_index
        else:
            names = (tuple(d) if d is not None else EMPTY) + (tuple(names_list) if slot_values is not None else EMPTY)
            if (not self.compatible and self.is_dataclass and names == self.field_names):
                idx = -1
            else:
                found = st.index.get(names)
                if found is None:
                    idx = len(st.index)
                    st.index[names] = idx
                    ctx.put_varuint64(1)
                    ctx.put_varuint64(len(names))
                    for name in names:
                        if type(name) is not str:
                            raise TypeError(f"attribute name {name!r} of {type(obj).__name__} is not a str")
                        ctx.write_str_dedup(name)
                    idx = -2   # already written
                else:
                    idx = found
            st.last = names
            st.last_index = idx
        if idx == -1:
            ctx.put_varuint64(0)
            if not st.schema_sent:
                st.schema_sent = True
                for i in range(4):
                    ctx.put_u8((self.schema_hash >> (8 * i)) & 0xFF)
        elif idx >= 0:
            ctx.put_varuint64(idx + 2)
        else:
            st.last_index = len(st.index) - 1
        if d is not None:
            pos = 0
            i = 0
            while PyDict_Next(d, &pos, &k, &v):
                ctx.write_any(<object>v)
                i += 1
            if i != n or len(d) != n:
                raise SerializationError(
                    f"attributes of a {type(obj).__name__} changed while it was serialized")
        if slot_values is not None:
            for value in slot_values:
                ctx.write_any(value)

    # -- reading --
    cpdef read(self, ReadContext ctx):
        # cls.__new__(cls), through the type slot (what copyreg.__newobj__ ends up doing)
        return call_tp_new(self.cls, EMPTY)

    cdef _ReadLayout make_layout(self, tuple names):
        cdef _ReadLayout lay = _ReadLayout()
        cdef bytearray actions = bytearray(len(names))
        cdef set slots = set(self.slot_names)
        lay.names = names
        lay.any_slot = False
        lay.any_skip = False
        for i, name in enumerate(names):
            if name in slots:
                actions[i] = A_SLOT
                lay.any_slot = True
            elif self.is_dataclass and name not in self.field_info:
                # a field the writer's class had and ours has not: skip it
                actions[i] = A_SKIP
                lay.any_skip = True
            else:
                actions[i] = A_DICT
        lay.actions = bytes(actions)
        lay.missing = None
        if self.is_dataclass:
            present = set(names)
            missing = [(name, info) for name, info in self.field_info.items() if name not in present]
            if missing:
                lay.missing = missing
        return lay

    cpdef read_state(self, ReadContext ctx, obj):
        cdef _ReadState st
        cdef _ReadLayout lay
        cdef uint64_t code = ctx.get_varuint64()
        cdef Py_ssize_t n, i
        cdef uint32_t h
        cdef dict d
        cdef const uint8_t* acts
        if ctx.scratch is None:
            ctx.scratch = {}
        st = ctx.scratch.get(self)
        if st is None:
            st = _ReadState()
            ctx.scratch[self] = st
        if code == 0:
            if not self.is_dataclass:
                raise MalformedDataError(f"{self.cls.__qualname__} has no declared schema (offset {ctx.pos})")
            if not st.schema_checked:
                memcpy_u32(&h, ctx.take(4))
                if h != self.schema_hash:
                    raise SchemaMismatchError(
                        f"the fields of {self.cls.__module__}.{self.cls.__qualname__} differ between "
                        "writer and reader; write with compatible=True (the default) to read "
                        "across class versions")
                st.schema_checked = True
            lay = self.declared
        elif code == 1:
            n = ctx.get_length()
            ctx.check_count(n, 1)
            names = tuple([ctx.read_str_any() for i in range(n)])
            lay = self.make_layout(names)
            st.layouts.append(lay)
        else:
            if code - 2 >= <uint64_t>PyList_GET_SIZE(st.layouts):
                raise MalformedDataError(f"unknown layout #{code - 2} at offset {ctx.pos}")
            lay = <_ReadLayout>PyList_GET_ITEM(st.layouts, code - 2)
        n = PyTuple_GET_SIZE(lay.names)
        d = _PyDict_NewPresized(n)
        acts = <const uint8_t*><const char*>lay.actions
        if not lay.any_slot and not lay.any_skip:
            for i in range(n):
                PyDict_SetItem(d, <object>PyTuple_GET_ITEM(lay.names, i), ctx.read_any())
        else:
            for i in range(n):
                value = ctx.read_any()
                if acts[i] == A_DICT:
                    PyDict_SetItem(d, <object>PyTuple_GET_ITEM(lay.names, i), value)
                elif acts[i] == A_SLOT:
                    setattr(obj, <object>PyTuple_GET_ITEM(lay.names, i), value)
        if lay.missing is not None:
            for name, info in lay.missing:
                default, has_default, factory = info
                if has_default:
                    d[name] = default
                elif factory is not None:
                    d[name] = factory()
                else:
                    raise SchemaMismatchError(
                        f"payload has no value for field {name!r} of "
                        f"{self.cls.__qualname__}, and the field has no default")
        if self.uses_dict:
            if self.custom_new:
                # keep what a custom __new__ may have set, as pickle does
                PyObject_GenericGetDict(obj, NULL).update(d)
            else:
                PyObject_GenericSetDict(obj, d, NULL)
        elif d:
            for key, value in d.items():
                setattr(obj, key, value)


cdef inline void memcpy_u32(uint32_t* dst, const uint8_t* src) noexcept:
    dst[0] = (<uint32_t>src[0]) | (<uint32_t>src[1] << 8) | (<uint32_t>src[2] << 16) | (<uint32_t>src[3] << 24)
