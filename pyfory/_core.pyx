# cython: language_level=3
"""The hot loop: one write context and one read context per Fory, and the Fory class.

Values of the builtin types are dispatched inline on `type(obj) is ...` with no
Python-level call per value. Everything else goes through a per-Fory
`type -> TypeInfo` cache; only on a miss is the Python resolver (resolver.py) asked.
The wire format is described byte by byte in docs/format.md.
"""
cimport cython
from libc.stdint cimport uint8_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, realloc, free, calloc
from libc.string cimport memcpy, memmove, memset
from libc.math cimport fabs
from libc.float cimport FLT_MAX
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE, PyList_Append
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.dict cimport PyDict_SetItem, PyDict_Size
from cpython.set cimport PySet_Add, PyFrozenSet_New, PySet_New
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.complex cimport PyComplex_RealAsDouble, PyComplex_ImagAsDouble, PyComplex_FromDoubles
from cpython.type cimport PyType_Check
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyObject_CheckBuffer

from pyfory._buffer cimport Buffer, bytes_from, bytearray_from, copy_bytes, SMALL_CAPACITY, KEEP_CAPACITY

import os as _os
import pickle as _pickle
import types as _types
from gc import get_referents as _gc_referents

from pyfory import error as _error
from pyfory.policy import hook_exception as _hook_exception
from pyfory.buffers import BufferObject, OOB_THRESHOLD, as_view as _as_view

cdef object PickleBuffer = _pickle.PickleBuffer
# types written inline by the core (never as T_OBJECT), so never packed as K_OBJECT
_INLINE_TYPES = frozenset([str, int, float, bool, type(None), bytes, bytearray, list, tuple, dict,
                           set, frozenset, complex, memoryview, _pickle.PickleBuffer])


cdef void* _buffer_address(object obj) except? NULL:
    cdef Py_buffer view
    cdef void* address
    PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
    address = view.buf
    PyBuffer_Release(&view)
    return address
import copyreg as _copyreg
cdef dict _copyreg_dispatch = _copyreg.dispatch_table
# memoryview formats that memoryview.cast() can rebuild on the reading side
_CASTABLE = frozenset("bBhHiIlLqQnNfd?cePe")
from pyfory.error import (
    DepthLimitError,
    ForyError,
    FormatError,
    MalformedDataError,
    SerializationError,
    on_side as _on_side,
)

cdef extern from *:
    # The writer's per-value helpers (module-level `cdef inline` functions at the end of
    # this file) and the reader's (`cdef inline` methods) inlined wherever they are
    # called: GCC's own limits stop inlining write_atom into some item loops once it
    # has four callers, and a call costs ~25 instructions a value. The names are
    # Cython's for them (prefix, module path, name); if they ever change, these
    # declarations name nothing and only speed is lost.
    """
    #if defined(__GNUC__)
    struct __pyx_obj_6pyfory_5_core_WriteContext;
    #define PYFORY_ALWAYS_INLINE static inline __attribute__((always_inline))
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_write_atom(
        struct __pyx_obj_6pyfory_5_core_WriteContext *, PyObject *, PyObject *);
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_write_str_value(
        struct __pyx_obj_6pyfory_5_core_WriteContext *, PyObject *);
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_write_int_value(
        struct __pyx_obj_6pyfory_5_core_WriteContext *, PyObject *);
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_put_short_str(
        struct __pyx_obj_6pyfory_5_core_WriteContext *, PyObject *);
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_begin_write(
        struct __pyx_obj_6pyfory_5_core_WriteContext *);
    PYFORY_ALWAYS_INLINE void __pyx_f_6pyfory_5_core_end_write(
        struct __pyx_obj_6pyfory_5_core_WriteContext *);
    /* and the reader's: a value's atoms (read_any_inline) and a dict key */
    struct __pyx_obj_6pyfory_5_core_ReadContext;
    PYFORY_ALWAYS_INLINE PyObject *__pyx_f_6pyfory_5_core_11ReadContext_read_any_inline(
        struct __pyx_obj_6pyfory_5_core_ReadContext *);
    PYFORY_ALWAYS_INLINE PyObject *__pyx_f_6pyfory_5_core_11ReadContext_read_key_any(
        struct __pyx_obj_6pyfory_5_core_ReadContext *, int);
    PYFORY_ALWAYS_INLINE int __pyx_f_6pyfory_5_core_11ReadContext_begin(
        struct __pyx_obj_6pyfory_5_core_ReadContext *, PyObject *);
    PYFORY_ALWAYS_INLINE void __pyx_f_6pyfory_5_core_11ReadContext_end(
        struct __pyx_obj_6pyfory_5_core_ReadContext *);
    PYFORY_ALWAYS_INLINE PyObject *__pyx_f_6pyfory_5_core_11ReadContext_read_key(
        struct __pyx_obj_6pyfory_5_core_ReadContext *, uint64_t);
    struct __pyx_obj_6pyfory_7_buffer_Buffer;
    PYFORY_ALWAYS_INLINE PyObject *__pyx_f_6pyfory_7_buffer_6Buffer_get_str_body(
        struct __pyx_obj_6pyfory_7_buffer_Buffer *, uint64_t);
    #endif
    """

cdef extern from *:
    # Fory.dumps(obj) with one argument skips the argument parsing of the full signature
    # (~50 instructions, a tenth of a small dict's dumps): the method's C function is
    # replaced by one that hands a lone positional argument to _dumps_plain's METH_O
    # function and every other call to the original. Installed only when both are the
    # kinds of method expected; otherwise dumps stays as Cython made it.
    """
    static PyCFunction pyfory_dumps_one = NULL;
    static PyObject *(*pyfory_dumps_full)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *) = NULL;
    /* the error dumps raises for an exception e: e itself, or a new one (see
       dumps_failure_of); NULL with an error set if that failed */
    static PyObject *(*pyfory_dumps_failure)(PyObject *) = NULL;
    /* _dumps_plain raised: raise what dumps raises for it instead, with the original as
       its cause (as `raise failure from e`). Done here, on the error path only: a
       try/except in _dumps_plain saves and restores the thread's exception state on
       every call (~35 instructions of a small dict's ~900). */
    static PyObject *pyfory_dumps_failed(void) {
        PyObject *t, *v, *tb, *f;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        if (v == NULL) {
            PyErr_Restore(t, v, tb);
            return NULL;
        }
        if (tb != NULL) PyException_SetTraceback(v, tb);
        f = pyfory_dumps_failure(v);
        if (f == NULL || f == v) {
            Py_XDECREF(f);
            if (f == NULL) {
                Py_XDECREF(t); Py_DECREF(v); Py_XDECREF(tb);
            } else {
                PyErr_Restore(t, v, tb);
            }
            return NULL;
        }
        Py_INCREF(v);
        PyException_SetContext(f, v);   /* (both steal a reference to v) */
        PyException_SetCause(f, v);
        Py_XDECREF(t); Py_XDECREF(tb);
        Py_INCREF(Py_TYPE(f));
        PyErr_Restore((PyObject *)Py_TYPE(f), f, NULL);   /* (steals both) */
        return NULL;
    }
    static PyObject *pyfory_dumps_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames) {
        PyObject *r;
        if (nargs == 1 && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
            r = pyfory_dumps_one(self, args[0]);
            return r != NULL ? r : pyfory_dumps_failed();
        }
        return pyfory_dumps_full(self, args, nargs, kwnames);
    }
    static PyMethodDef pyfory_dumps_def = {"dumps", NULL, METH_FASTCALL | METH_KEYWORDS, NULL};
    static int pyfory_install_dumps_entry(PyTypeObject *type, PyObject *(*failure)(PyObject *)) {
        PyObject *dict = type->tp_dict, *full, *one, *d;
        PyMethodDef *fm, *om;
        if (dict == NULL) return 0;
        full = PyDict_GetItemString(dict, "dumps");
        one = PyDict_GetItemString(dict, "_dumps_plain");
        if (full == NULL || one == NULL || !Py_IS_TYPE(full, &PyMethodDescr_Type)
                || !Py_IS_TYPE(one, &PyMethodDescr_Type))
            return 0;
        fm = ((PyMethodDescrObject *)full)->d_method;
        om = ((PyMethodDescrObject *)one)->d_method;
        if (fm->ml_flags != (METH_FASTCALL | METH_KEYWORDS) || om->ml_flags != METH_O)
            return 0;
        pyfory_dumps_full = (PyObject *(*)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *))(void (*)(void))fm->ml_meth;
        pyfory_dumps_one = om->ml_meth;
        pyfory_dumps_failure = failure;
        pyfory_dumps_def.ml_meth = (PyCFunction)(void (*)(void))pyfory_dumps_entry;
        pyfory_dumps_def.ml_doc = fm->ml_doc;
        d = PyDescr_NewMethod(type, &pyfory_dumps_def);
        /* (serialize is dumps, one object, as in the class body) */
        if (d == NULL || PyDict_SetItemString(dict, "dumps", d) < 0
                || PyDict_SetItemString(dict, "serialize", d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_DECREF(d);
        PyType_Modified(type);
        return 1;
    }
    """
    int pyfory_install_dumps_entry(type t, object (*failure)(object)) except -1

cdef extern from *:
    # exported by every CPython since 3.6; from 3.13 on declared in an internal header only
    """
    #if PY_VERSION_HEX >= 0x030D0000
    PyAPI_FUNC(int) _PyDict_SetItem_KnownHash(PyObject *mp, PyObject *key, PyObject *item, Py_hash_t hash);
    #endif
    """
    int _PyDict_SetItem_KnownHash(object d, object key, object value, Py_hash_t h) except -1

cdef extern from *:
    # An exact int's value: read in place when it has one digit (most ints: up to 2**30),
    # else PyLong_AsLongLongAndOverflow. The layout is CPython's own: ob_digit and a
    # signed size up to 3.11, the compact-value helpers from 3.12 on.
    """
    #if PY_VERSION_HEX < 0x030B0000
    #include "longintrepr.h"
    #endif
    static inline long long pyfory_int_value(PyObject* op, int* overflow) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (_PyLong_IsCompact((PyLongObject*)op)) {
            *overflow = 0;
            return (long long)_PyLong_CompactValue((PyLongObject*)op);
        }
    #else
        Py_ssize_t size = Py_SIZE(op);
        if (size >= -1 && size <= 1) {
            *overflow = 0;
            return size * (long long)((PyLongObject*)op)->ob_digit[0];
        }
    #endif
        return PyLong_AsLongLongAndOverflow(op, overflow);
    }
    """
    long long pyfory_int_value(object o, int* overflow) except? -1

cdef extern from "Python.h":
    bint PyDict_Next(object p, Py_ssize_t *ppos, PyObject* *pkey, PyObject* *pvalue)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    PyObject** PySequence_Fast_ITEMS(object o)
    dict _PyDict_NewPresized(Py_ssize_t minused)
    # the address of an object's type, without touching reference counts
    PyObject* TYPE_OF "(PyObject*)Py_TYPE"(PyObject* o)
    PyObject* PyDict_GetItemWithError_raw "PyDict_GetItemWithError"(object p, object key)
    void PyErr_Clear()
    void PyObject_GC_UnTrack(void* o)
    void PyObject_GC_Track(void* o)
    # a list's item array: filled in one step by stack_extend_list
    ctypedef struct PyListObject:
        PyObject** ob_item
        Py_ssize_t allocated
    void* PyMem_Malloc(size_t n)
    void Py_SET_SIZE(object o, Py_ssize_t n)
    Py_ssize_t PyDict_GET_SIZE(object d)
    void Py_INCREF_raw "Py_INCREF"(PyObject* o)
    void Py_DECREF_raw "Py_DECREF"(PyObject* o)
    # new references as raw pointers: stored straight into a list's item array
    PyObject* PyFloat_FromDouble_raw "PyFloat_FromDouble"(double v)
    PyObject* PyLong_FromLongLong_raw "PyLong_FromLongLong"(long long v)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    bint PyUnicode_IS_ASCII(object s)
    int PyUnicode_KIND(object s)
    int PyUnicode_1BYTE_KIND
    Py_hash_t PyObject_Hash(object o) except -1
    int memcmp(const void* a, const void* b, size_t n)


cdef inline PyObject* class_lookup(dict table, object cls) noexcept:
    """table[cls] as a borrowed pointer, or NULL. A class whose metaclass defines __eq__
    without __hash__ cannot be a key: a miss (the resolver handles it), with no error
    left behind (PyDict_GetItem would report it as unraisable on 3.13)."""
    cdef PyObject* found = PyDict_GetItemWithError_raw(table, cls)
    if found == NULL:
        PyErr_Clear()
    return found

# ---- wire tags and element kinds: in _core.pxd (the inline readers there use them) ----

# kinds of T_BUFFER values
cdef enum:
    B_BYTES = 0
    B_BYTEARRAY = 1
    B_MEMORYVIEW = 2    # format, ndim, shape..., readonly
    B_PICKLEBUFFER = 3  # readonly


# the types whose instances are code (pyfory's "carriers"): see read_type_info
cdef frozenset _CODE_CARRIERS = frozenset([type, _types.FunctionType, _types.MethodType])
cdef frozenset _CODE_WRAPPERS = frozenset([staticmethod, classmethod])

# ReadContext.check_type_meta: its key in `scratch` (and the total's key in its counts)
_TYPE_META_COUNTS = object()
_MISSING = object()
SCHEMA_TOTAL_FLOOR = 8192

# an object left out of the payload by dumps' unsupported_callback (docs/format.md);
# far from the other tags (in _core.pxd), which grow from the bottom
cdef enum:
    T_UNSUPPORTED = 0x7E

# type header kinds (after the "new type" bit)
cdef enum:
    D_INTERNAL = 0
    D_USER_ID = 1
    D_NAME = 2          # module, qualname: importable by reference
    D_USER_NAME = 3     # a name given to register()
    D_BY_VALUE = 4      # class rebuilt from its definition

FORMAT_VERSION = 3
# Payload start (docs/format.md 2): a payload without flags is its value alone; one
# with flags starts with the byte HEADER_BASE | flags. Versions 1 and 2 started with
# these magic bytes, then the version: such a payload is refused by its version.
OLD_MAGIC = b"\xfd\x59"
cdef uint8_t F_REF = 1
cdef uint8_t F_OOB = 4
cdef uint8_t F_KNOWN = F_REF | F_OOB


# the tag of a dict with str keys whose values have the element kind vk (T_SDICT..+3),
# and back
cdef inline uint8_t sdict_tag(uint8_t vk) noexcept:
    if vk == K_INT:
        return T_SDICT + 1
    if vk == K_FLOAT:
        return T_SDICT + 2
    if vk == K_STR:
        return T_SDICT + 3
    return T_SDICT


cdef uint8_t[4] SDICT_KINDS = [K_ANY, K_INT, K_FLOAT, K_STR]


cdef inline uint64_t key_words(const uint8_t* p, Py_ssize_t n, uint64_t* w0, uint64_t* w1) noexcept:
    """The first and last 8 bytes of the n bytes at p (fewer, zero-extended, when n < 8:
    then w0 has them all), as two words; returns n. ReadContext.read_key's hash and
    comparison."""
    cdef uint32_t a, b
    if n >= 8:
        memcpy(w0, p, 8)
        memcpy(w1, p + n - 8, 8)
    elif n >= 4:
        memcpy(&a, p, 4)
        memcpy(&b, p + n - 4, 4)
        w0[0] = a | (<uint64_t>b << 32)
        w1[0] = 0
    elif n > 0:
        w0[0] = p[0] | (<uint64_t>p[n >> 1] << 8) | (<uint64_t>p[n - 1] << 16)
        w1[0] = 0
    else:
        w0[0] = w1[0] = 0
    return <uint64_t>n


cdef inline bint same_key(const uint8_t* q, const uint8_t* p, Py_ssize_t n,
                          uint64_t w0, uint64_t w1) noexcept:
    # the n bytes at q equal those at p, whose key_words are w0, w1 (which hold all of
    # them up to 16 bytes)
    cdef uint64_t v0, v1
    if n > 16:
        return memcmp(q, p, n) == 0
    key_words(q, n, &v0, &v1)
    return v0 == w0 and v1 == w1


cdef inline bint is_value_tag(uint8_t b) noexcept:
    # a byte a value may start with (docs/format.md 3): the first byte of a payload
    # that is neither this nor a header byte is not ours (JSON, a pickle, text)
    return (b <= T_SDICT + 3 or FIX_LIST <= b <= FIX_DICT + FIX_MAX or b == T_UNSUPPORTED
            or b == (T_TUPLE | T_DISCARD) or b == (T_FROZENSET | T_DISCARD)
            or b == (T_OBJECT | T_DISCARD) or b >= FIX_STR)

# Hard cap for max_depth: each level costs C stack in the recursive core.
MAX_DEPTH_CAP = 2000

# Budgets of one loads (Fory options). Graph memory is estimated per container and
# object the reader makes, as CPython lays them out on a 64-bit build (approximately:
# the budget is a gate, not an exact heap limit); leaves (str, bytes, numbers, arrays)
# are backed byte for byte by the input and not counted.
DEFAULT_MAX_GRAPH_MEMORY = 128 * 1024 * 1024
DEFAULT_MAX_UNBACKED = 8192
cdef Py_ssize_t LIST_BYTES = 56, TUPLE_BYTES = 40, ITEM_BYTES = 8
cdef Py_ssize_t DICT_BYTES = 64, DICT_ITEM_BYTES = 48
cdef Py_ssize_t SET_BYTES = 200, SET_ITEM_BYTES = 32, OBJECT_BYTES = 64
# hash work allowed by default: per input byte, plus a floor for small payloads
cdef Py_ssize_t HASH_WORK_PER_BYTE = 64, HASH_WORK_BASE = 1 << 20

cdef uint64_t _payload_counter = 0


# ---- identity table ------------------------------------------------------------------
# Tables keep their memory between payloads (clearing touches only the used slots),
# unless one payload made them larger than this many slots.
cdef Py_ssize_t PTABLE_KEEP = 1 << 17


cdef int ptable_init(PtrTable* t, Py_ssize_t capacity) except -1:
    t.capacity = capacity
    t.slots_key = <PyObject**>calloc(capacity, sizeof(PyObject*))
    t.slots_val = <Py_ssize_t*>malloc(capacity * sizeof(Py_ssize_t))
    t.keys_capacity = capacity // 2
    t.keys = <PyObject**>malloc(t.keys_capacity * sizeof(PyObject*))
    t.key_slot = <Py_ssize_t*>malloc(t.keys_capacity * sizeof(Py_ssize_t))
    t.count = 0
    if t.slots_key == NULL or t.slots_val == NULL or t.keys == NULL or t.key_slot == NULL:
        raise MemoryError()
    return 0


cdef void ptable_free(PtrTable* t) noexcept:
    ptable_clear(t)
    free(t.slots_key)
    free(t.slots_val)
    free(t.keys)
    free(t.key_slot)
    t.slots_key = NULL
    t.slots_val = NULL
    t.keys = NULL
    t.key_slot = NULL


cdef inline Py_ssize_t ptable_slot(PyObject* p, Py_ssize_t mask) noexcept:
    cdef uint64_t h = (<uint64_t><size_t>p >> 3) * <uint64_t>0x9E3779B97F4A7C15
    return <Py_ssize_t>(h >> 32) & mask


cdef inline Py_ssize_t ptable_get(PtrTable* t, PyObject* p) noexcept:
    cdef Py_ssize_t mask = t.capacity - 1
    cdef Py_ssize_t i = ptable_slot(p, mask)
    cdef PyObject* k
    while True:
        k = t.slots_key[i]
        if k == p:
            return t.slots_val[i]
        if k == NULL:
            return -1
        i = (i + 1) & mask


cdef int ptable_grow(PtrTable* t) except -1:
    # double the slots (kept at most half full) and the key arrays, then re-place keys
    cdef Py_ssize_t new_cap = t.capacity * 2
    cdef PyObject** nk = <PyObject**>calloc(new_cap, sizeof(PyObject*))
    cdef Py_ssize_t* nv = <Py_ssize_t*>malloc(new_cap * sizeof(Py_ssize_t))
    cdef PyObject** nkeys = <PyObject**>realloc(t.keys, (new_cap // 2) * sizeof(PyObject*))
    cdef Py_ssize_t* nslot
    cdef Py_ssize_t mask = new_cap - 1, idx, j
    if nkeys != NULL:
        t.keys = nkeys
    nslot = <Py_ssize_t*>realloc(t.key_slot, (new_cap // 2) * sizeof(Py_ssize_t))
    if nslot != NULL:
        t.key_slot = nslot
    if nk == NULL or nv == NULL or nkeys == NULL or nslot == NULL:
        free(nk)
        free(nv)
        raise MemoryError()
    t.keys_capacity = new_cap // 2
    for idx in range(t.count):
        j = ptable_slot(t.keys[idx], mask)
        while nk[j] != NULL:
            j = (j + 1) & mask
        nk[j] = t.keys[idx]
        nv[j] = idx
        t.key_slot[idx] = j
    free(t.slots_key)
    free(t.slots_val)
    t.slots_key = nk
    t.slots_val = nv
    t.capacity = new_cap
    return 0


cdef inline Py_ssize_t ptable_add(PtrTable* t, PyObject* p) except -1:
    """Add p (known absent); returns its index. Holds a reference until cleared."""
    cdef Py_ssize_t mask, i
    if t.count >= t.keys_capacity:
        ptable_grow(t)
    mask = t.capacity - 1
    i = ptable_slot(p, mask)
    while t.slots_key[i] != NULL:
        i = (i + 1) & mask
    t.slots_key[i] = p
    t.slots_val[i] = t.count
    Py_INCREF(<object>p)
    t.keys[t.count] = p
    t.key_slot[t.count] = i
    t.count += 1
    return t.count - 1


cdef void ptable_clear(PtrTable* t) noexcept:
    cdef Py_ssize_t i, n = t.count
    cdef PyObject* k
    if n == 0:
        return
    t.count = 0
    for i in range(n):
        t.slots_key[t.key_slot[i]] = NULL
    if t.capacity > PTABLE_KEEP:
        free(t.slots_key)
        free(t.slots_val)
        free(t.key_slot)
        t.capacity = 64
        t.keys_capacity = 32
        t.slots_key = <PyObject**>calloc(64, sizeof(PyObject*))
        t.slots_val = <Py_ssize_t*>malloc(64 * sizeof(Py_ssize_t))
        t.key_slot = <Py_ssize_t*>malloc(32 * sizeof(Py_ssize_t))
        # drop the references last: a destructor may run arbitrary code
        for i in range(n):
            k = t.keys[i]
            Py_DECREF(<object>k)
        free(t.keys)
        t.keys = <PyObject**>malloc(32 * sizeof(PyObject*))
        return
    for i in range(n):
        k = t.keys[i]
        Py_DECREF(<object>k)


# ---- object vector (the reader's value stack and back-reference tables) ---------------
cdef int objvec_grow(ObjVec* v) except -1:
    cdef Py_ssize_t cap = v.cap * 2 if v.cap else 64
    cdef PyObject** grown = <PyObject**>realloc(v.items, cap * sizeof(PyObject*))
    if grown == NULL:
        raise MemoryError()
    v.items = grown
    v.cap = cap
    return 0


cdef inline int objvec_push(ObjVec* v, object o) except -1:
    """Append o, holding a reference until the vector is truncated below it."""
    if v.len == v.cap:
        objvec_grow(v)
    Py_INCREF(o)
    v.items[v.len] = <PyObject*>o
    v.len += 1
    return 0


cdef void objvec_truncate(ObjVec* v, Py_ssize_t base) noexcept:
    # release the items above base, newest first (a destructor may run user code;
    # the vector is consistent at each step)
    cdef PyObject* o
    while v.len > base:
        v.len -= 1
        o = v.items[v.len]
        Py_XDECREF(o)


cdef void objvec_free(ObjVec* v) noexcept:
    objvec_truncate(v, 0)
    free(v.items)
    v.items = NULL
    v.cap = 0


cdef void objvec_reset(ObjVec* v) noexcept:
    # empty for the next payload: the memory is kept unless one payload made it large
    if v.cap > PTABLE_KEEP:
        objvec_free(v)
    else:
        objvec_truncate(v, 0)


# ---- serializers ---------------------------------------------------------------------
cdef class Serializer:
    """Base class of serializers: `write(ctx, obj)` and `read(ctx) -> obj`.

    `ctx` is a WriteContext / ReadContext: it has the Buffer methods
    (`write_varint32`, `write_int64`, `write_float64`, `write_string`, `write_bytes`,
    `write_bool` and the matching reads) plus `write_any(obj)` / `read_any()`
    for a nested value of any type.

    Two-phase objects (that may be part of a cycle) set `has_state = True`:
    `write`/`read` then only carry what is needed to create the object, which is
    registered for back-references before `write_state`/`read_state` run.
    """

    def __init__(self, fory=None, cls=None):
        # pyfory's guide writes Serializer(type_resolver, cls): take the resolver's Fory
        if fory is not None and not isinstance(fory, Fory) and isinstance(getattr(fory, "fory", None), Fory):
            fory = fory.fory
        self.fory = fory
        self.cls = cls

    @property
    def type_resolver(self):
        """The registry of this serializer's Fory (pyfory's name for it)."""
        return None if self.fory is None else self.fory.resolver

    @property
    def type_(self):
        """The class this serializer handles (pyfory's name for `cls`)."""
        return self.cls

    cpdef write(self, WriteContext ctx, obj):
        raise NotImplementedError(f"{type(self).__name__}.write")

    cpdef read(self, ReadContext ctx):
        raise NotImplementedError(f"{type(self).__name__}.read")

    cpdef write_state(self, WriteContext ctx, obj):
        pass

    cpdef read_state(self, ReadContext ctx, obj):
        pass

    cpdef write_type_meta(self, WriteContext ctx):
        pass

    cpdef read_type_meta(self, ReadContext ctx):
        return self


# Serializer kinds written in type descriptors (docs/format.md).
WIRE_CUSTOM, WIRE_OBJECT, WIRE_REDUCE, WIRE_ENUM, WIRE_NAMEDTUPLE, WIRE_CLASS_ONLY = 0, 1, 2, 3, 4, 255
WIRE_KIND_NAMES = {0: "custom", 1: "attribute-layout", 2: "reduce", 3: "enum", 4: "namedtuple",
                   255: "class-only"}


def wire_kind_of(serializer):
    """The wire kind of a serializer (see WIRE_KIND_NAMES)."""
    if serializer is None:
        return WIRE_CLASS_ONLY
    kind = getattr(type(serializer), "wire_kind", None)
    if kind is not None:
        return kind
    from pyfory._objects import ObjectSerializer
    from pyfory.objects import EnumSerializer, NamedTupleSerializer
    from pyfory._reduce import ReduceSerializer

    for cls, kind in ((ObjectSerializer, WIRE_OBJECT), (ReduceSerializer, WIRE_REDUCE),
                      (EnumSerializer, WIRE_ENUM), (NamedTupleSerializer, WIRE_NAMEDTUPLE)):
        if type(serializer) is cls:
            return kind
    return WIRE_CUSTOM


cdef class TypeInfo:
    """How one class is named on the wire and which serializer handles its instances."""

    def __init__(self, cls, serializer, int kind, type_id=None, name=None,
                 module=None, qualname=None, by_value=None):
        self.cls = cls
        self.serializer = serializer
        self.kind = kind
        self.type_id = type_id
        self.name = name
        self.module = module
        self.qualname = qualname
        self.by_value = by_value
        self.wire_kind = wire_kind_of(serializer)
        self.payload_gen = 0
        self.payload_index = 0

    def with_serializer(self, serializer):
        return TypeInfo(self.cls, serializer, self.kind, self.type_id, self.name,
                        self.module, self.qualname, self.by_value)

    def __repr__(self):
        return f"TypeInfo({self.cls!r}, kind={self.kind})"


# ---- writing -------------------------------------------------------------------------
cdef class WriteContext(Buffer):
    """State of one `dumps`: the output buffer, identity memo, string and type tables."""

    def __cinit__(self, *args, **kwargs):
        ptable_init(&self.memo, 64)
        ptable_init(&self.strings, 64)

    def __init__(self, fory):
        self.fory = fory
        self.resolver = fory.resolver
        self.type_cache = fory._type_cache
        self.max_depth = fory.max_depth
        self.ref = fory.ref
        self.ref_strict = fory.strict
        self.overrides = (<Fory>fory)._builtin_overrides
        self.in_use = False
        self.scratch = None

    def __dealloc__(self):
        ptable_free(&self.memo)
        ptable_free(&self.strings)
        free(self.dict_keys)
        free(self.dict_values)

    cdef int begin(self) except -1:
        return begin_write(self)

    cdef void end(self) noexcept:
        end_write(self)

    cdef int raise_depth(self) except -1:
        # (enter, inline in _core.pxd, went past max_depth)
        raise DepthLimitError(
                f"nesting deeper than max_depth={self.max_depth} while serializing: a cycle "
                "needs Fory(ref=True); for deeper data raise the limit with "
                f"Fory(max_depth=N), N up to {MAX_DEPTH_CAP} (pyfory.dumps allows "
                "1000, as pickle does)")
        return 0

    # -- the dispatch --
    cdef int write_any(self, object obj) except -1:
        cdef type t = type(obj)
        cdef PyObject* override
        if self.overrides is not None:
            # a serializer registered for a builtin type wins over the inline rules
            override = class_lookup(self.overrides, t)
            if override != NULL:
                return self.write_object(obj, <TypeInfo>override)
        if write_atom(self, <PyObject*>obj, <PyObject*>t):
            return 0
        return write_nonatom(self, obj, t)

    cdef int write_other(self, object obj, type t) except -1:
        cdef PyObject* cached
        cdef TypeInfo info
        cdef double d
        self.foreign += 1       # user code may run from here (see write_held_items)
        if t is bytes:
            if self.ref and self.write_ref_or_register(obj):
                return 0
            if self.buffer_callback is not None and PyBytes_GET_SIZE(obj) >= self.oob_threshold:
                self.put_u8(T_BUFFER)
                self.put_u8(B_BYTES)
                return self.write_buffer_body(obj, False)
            self.put_u8(T_BYTES)
            self.put_varuint64(PyBytes_GET_SIZE(obj))
            return self.put_raw(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
        if t is set:
            return self.write_setlike(obj, T_SET)
        if t is frozenset:
            return self.write_setlike(obj, T_FROZENSET)
        if t is bytearray:
            if self.ref and self.write_ref_or_register(obj):
                return 0
            if self.buffer_callback is not None and PyByteArray_GET_SIZE(obj) >= self.oob_threshold:
                self.put_u8(T_BUFFER)
                self.put_u8(B_BYTEARRAY)
                return self.write_buffer_body(obj, False)
            self.put_u8(T_BYTEARRAY)
            self.put_varuint64(PyByteArray_GET_SIZE(obj))
            return self.put_raw(PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj))
        if t is memoryview or t is PickleBuffer:
            return self.write_buffer_value(obj, t is PickleBuffer)
        if t is complex:
            self.reserve(17)
            self.data[self.pos] = T_COMPLEX
            self.pos += 1
            d = PyComplex_RealAsDouble(obj)
            self.put_double(d)
            d = PyComplex_ImagAsDouble(obj)
            return self.put_double(d)
        cached = class_lookup(self.type_cache, t)
        if cached == NULL:
            if PyType_Check(obj) and (t is type or self.ref_strict or t not in _copyreg_dispatch):
                # a class (pickle, too, names it unless its metaclass has a reducer)
                return self.write_class(obj)
            if self.unsupported_callback is None:
                info = self.resolver.get_typeinfo(t)
            else:
                try:
                    info = self.resolver.get_typeinfo(t)
                except ForyError as e:
                    return self.write_unsupported(obj, e)
        else:
            info = <TypeInfo>cached
        if info.serializer is None:
            # a metaclass instance: the value is a class object
            return self.write_class(obj)
        return self.write_object(obj, info)

    cdef int write_unsupported(self, object obj, object why) except -1:
        # dumps(unsupported_callback=): a falsy answer keeps obj out of the payload (the
        # reader takes the next of its unsupported_objects); a true one raises `why`,
        # the reason obj could not be written. Shared like any object with ref=True.
        if self.ref and self.write_ref_or_register(obj):
            return 0
        if self.unsupported_callback(obj):
            raise why
        return self.put_u8(T_UNSUPPORTED)

    cdef int write_object(self, object obj, TypeInfo info) except -1:
        cdef Serializer ser = info.serializer
        cdef Py_ssize_t start, idx
        cdef bint track
        track = self.ref or ser.track_identity
        if track:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                self.put_u8(T_REF)
                return self.put_varuint64(idx)
        start = self.pos
        self.put_u8(T_OBJECT)
        self.write_type_info(info)
        self.enter()
        ser.write(self, obj)
        if track:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                # the object was reached again while writing its own constructor
                # arguments and written in full there: drop this copy, point at that one
                self.data[start] |= T_DISCARD
                self.put_u8(T_REF)
                self.put_varuint64(idx)
                self.depth -= 1
                return 0
            ptable_add(&self.memo, <PyObject*>obj)
        if ser.has_state:
            ser.write_state(self, obj)
        self.depth -= 1
        return 0

    cdef int write_buffer_value(self, object obj, bint is_pickle_buffer) except -1:
        cdef object view
        if self.ref and self.write_ref_or_register(obj):
            return 0
        self.put_u8(T_BUFFER)
        if is_pickle_buffer:
            view = memoryview(obj)
            if not view.contiguous:
                raise SerializationError(
                    "a PickleBuffer that points to a non-contiguous buffer cannot be "
                    "serialized (as with pickle): pass a contiguous copy")
            self.put_u8(B_PICKLEBUFFER)
            self.put_u8(1 if view.readonly else 0)
            return self.write_buffer_body(view, True)
        view = <object>obj
        fmt = view.format
        if fmt.startswith("@"):
            fmt = fmt[1:]
        if fmt not in _CASTABLE:
            # a format memoryview.cast cannot rebuild: keep the bytes, flat
            view = memoryview(view.tobytes())
            fmt = "B"
        self.put_u8(B_MEMORYVIEW)
        self.put_str(fmt, 0)
        self.put_varuint64(view.ndim)
        for dim in view.shape:
            self.put_varuint64(dim)
        self.put_u8(1 if view.readonly else 0)
        return self.write_buffer_body(view, view.nbytes >= self.oob_threshold)

    cdef int write_buffer_body(self, object buf, bint offer) except -1:
        """varint (nbytes << 1 | out_of_band), then the bytes when in band.
        `buf` is offered to buffer_callback when `offer` (or when it is large)."""
        cdef Py_buffer view
        cdef object mv
        cdef bint oob = False
        if not PyObject_CheckBuffer(buf):
            raise SerializationError(f"{type(buf).__name__} does not expose the buffer protocol")
        mv = memoryview(buf)
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        if self.buffer_callback is not None and (offer or mv.nbytes >= self.oob_threshold):
            if self.oob_views is not None:
                oob = mv.nbytes >= self.oob_view_min
                if oob:
                    self.oob_views.append(mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B"))
            else:
                oob = not self.buffer_callback(BufferObject(mv))
        if oob:
            self.oob_count += 1
            return self.put_varuint64((<uint64_t>mv.nbytes << 1) | 1)
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            self.put_varuint64(<uint64_t>view.len << 1)
            self.put_raw(view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int write_class(self, object cls) except -1:
        cdef PyObject* cached = class_lookup(self.type_cache, cls)
        cdef TypeInfo info
        if cached == NULL:
            info = self.resolver.get_typeinfo(cls)
        else:
            info = <TypeInfo>cached
        self.put_u8(T_TYPE)
        return self.write_type_info(info)

    cdef int write_type_info(self, TypeInfo info) except -1:
        cdef Serializer ser
        if info.payload_gen == self.gen:
            return self.put_varuint64((<uint64_t>info.payload_index << 1) | 1)
        if info.strict_refused and self.ref_strict:
            raise _error.TypeNotRegisteredError(
                f"strict mode refuses {info.cls!r}: it is code or calls code, not a value "
                "type; use Fory(strict=False) for trusted data")
        self.put_varuint64(<uint64_t>info.kind << 1)
        if info.kind != D_INTERNAL:
            # which kind of serializer wrote the instances: lets a reader detect a class
            # that changed how it serializes, and lets `pyfory inspect` decode payloads
            self.put_u8(info.wire_kind)
        if info.kind == D_INTERNAL or info.kind == D_USER_ID:
            self.put_varuint64(info.type_id)
        elif info.kind == D_NAME:
            self.write_name(info.module)
            self.write_name(info.qualname)
        elif info.kind == D_USER_NAME:
            self.write_name(info.name)
        elif info.kind == D_BY_VALUE:
            self.enter()
            info.by_value.write_skeleton(self, info.cls)
            self.depth -= 1
        else:
            raise SerializationError(f"bad type kind {info.kind} for {info.cls!r}")
        info.payload_gen = self.gen
        info.payload_index = self.ntypes
        self.ntypes += 1
        if info.kind == D_BY_VALUE:
            self.enter()
            info.by_value.write_state(self, info.cls)
            self.depth -= 1
        ser = info.serializer
        if ser is not None and ser.has_type_meta:
            ser.write_type_meta(self)
        return 0

    cdef int write_ref_or_register(self, object obj) except -1:
        """1 if obj was written before (a back-reference is written now), else 0
        after registering it."""
        cdef Py_ssize_t idx = ptable_get(&self.memo, <PyObject*>obj)
        if idx >= 0:
            self.put_u8(T_REF)
            self.put_varuint64(idx)
            return 1
        ptable_add(&self.memo, <PyObject*>obj)
        return 0

    # -- scalars --
    cdef int write_str_dedup(self, str s) except -1:
        """A string that is likely to repeat: written once, then by index."""
        cdef Py_ssize_t idx = ptable_get(&self.strings, <PyObject*>s)
        if idx >= 0:
            return self.put_varuint64((<uint64_t>idx << 2) | 3)
        ptable_add(&self.strings, <PyObject*>s)
        return self.put_str(s, 1)

    cdef int write_name(self, str s) except -1:
        """A name (of an attribute, a class, a module, a global): deduplicated by value
        among names, never merged with an equal string value. Strings are otherwise
        deduplicated by identity, and which equal strings are one object differs between
        processes (a receiver's setattr and marshal intern names its payload gave as
        plain strings): keyed by a private copy, names give the same bytes whichever
        process writes the same value."""
        cdef object canon
        if self.names is None:
            self.names = {}
        canon = self.names.get(s)
        if canon is None:
            # a new object with the same characters (one-character strings are shared
            # singletons in every process, so they may stay shared)
            canon = s if len(s) < 2 else "".join([s[:1], s[1:]])
            self.names[s] = canon
        return self.write_str_dedup(<str>canon)

    cdef int write_bigint_body(self, object obj) except -1:
        cdef Py_ssize_t n = (obj.bit_length() + 8) // 8
        b = (<object>obj).to_bytes(n, "little", signed=True)
        self.put_varuint64(n)
        return self.put_raw(PyBytes_AS_STRING(b), n)

    # -- containers --
    cdef int write_list(self, list obj) except -1:
        cdef Py_ssize_t n
        cdef PyObject* t0
        if self.ref and self.write_ref_or_register(obj):
            return 0
        n = PyList_GET_SIZE(obj)
        if n == 0:
            return self.put_u8(FIX_LIST)
        self.enter()
        if n <= FIX_MAX and self.overrides is None:
            # a small list whose first item is a builtin value cannot be written as
            # K_OBJECT (write_seq): straight to the items. (Here, not in write_seq: the
            # call saved is ~8% of the instructions of 1,000 small nested lists.)
            t0 = TYPE_OF(PyList_GET_ITEM(obj, 0))
            if (t0 == <PyObject*>str or t0 == <PyObject*>int or t0 == <PyObject*>float
                    or t0 == <PyObject*>list or t0 == <PyObject*>dict or t0 == <PyObject*>tuple
                    or t0 == <PyObject*>bool or t0 == TYPE_OF(<PyObject*>None)):
                self.put_u8(FIX_LIST + <uint8_t>n)
                self.write_any_items(obj, n, True)
                self.depth -= 1
                return 0
        self.write_seq(obj, n, True)
        self.depth -= 1
        return 0

    cdef int write_seq(self, object seq, Py_ssize_t n, bint is_list) except -1:
        """A non-empty list or tuple: its tag (with the count and kind, or a small one
        of any items, FIX_LIST / FIX_TUPLE + n), then its items."""
        cdef uint8_t kind = K_ANY
        cdef TypeInfo info
        if self.overrides is None:
            # The kind of a long list is guessed from its first items: write_items checks
            # the type of every other item as it writes it, and starts over tagged (K_ANY,
            # which a full scan would have found) at the first that differs. A first
            # pass over every item's type cost ~1.5 ns a string on 10k-item lists, which
            # do not fit the L2 cache twice. Strings with references are registered as
            # they are written, so there is no starting over: a full scan first.
            kind = seq_kind(seq, KIND_GUESS_ITEMS if n > KIND_GUESS_ITEMS else n, is_list)
            if n > KIND_GUESS_ITEMS and (kind == K_UNIFORM or (kind == K_STR and self.ref)):
                kind = seq_kind(seq, n, is_list)
        if kind == K_UNIFORM:
            # one type throughout (mixed types never make K_OBJECT: no second look)
            kind = K_ANY
            if n >= 2:
                info = self.same_class_info(seq, n, is_list)
                if info is not None:
                    self.put_u8(T_LIST if is_list else T_TUPLE)
                    self.put_varuint64(n)
                    return self.write_same_objects(seq, n, is_list, info)
        if n <= FIX_MAX:
            # a small one: tagged items cost no more than packed ones after a count
            # and a kind byte (small ints and short strings carry themselves in the tag)
            self.put_u8((FIX_LIST if is_list else FIX_TUPLE) + <uint8_t>n)
            return self.write_any_items(seq, n, is_list)
        self.put_u8(T_LIST if is_list else T_TUPLE)
        self.put_varuint64(n)
        return self.write_items(seq, n, kind, is_list)

    cdef TypeInfo same_class_info(self, object seq, Py_ssize_t n, bint is_list):
        """The TypeInfo when every item is an instance of one class written through a
        serializer (a list of records, of dataclasses...), else None."""
        cdef PyObject* t0 = TYPE_OF(PyList_GET_ITEM(seq, 0) if is_list else PyTuple_GET_ITEM(seq, 0))
        cdef PyObject* cached
        cdef TypeInfo info
        cdef Py_ssize_t i
        if t0 == <PyObject*>dict or t0 == <PyObject*>list or t0 == <PyObject*>tuple or t0 == <PyObject*>bool:
            return None
        for i in range(1, n):
            if TYPE_OF(PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)) != t0:
                return None
        cls = <object>t0
        if cls in _INLINE_TYPES or issubclass(cls, type):   # metaclasses: items are classes
            return None
        self.foreign += 1       # the resolver may ask a policy (user code)
        cached = class_lookup(self.type_cache, cls)
        if cached == NULL:
            info = self.resolver.get_typeinfo(cls)
        else:
            info = <TypeInfo>cached
        if info.serializer is None:
            return None
        return info

    cdef int write_same_objects(self, object seq, Py_ssize_t n, bint is_list, TypeInfo info) except -1:
        cdef Serializer ser = info.serializer
        self.foreign += 1
        cdef bint track = self.ref or ser.track_identity
        cdef Py_ssize_t i, idx, mark = 0
        self.put_u8(K_OBJECT)
        self.write_type_info(info)
        for i in range(n):
            if is_list:
                if i >= PyList_GET_SIZE(seq):
                    raise _error.ChangedDuringSerializationError("list changed size during iteration")
                obj = <object>PyList_GET_ITEM(seq, i)
            else:
                obj = <object>PyTuple_GET_ITEM(seq, i)
            if type(obj) is not info.cls:
                raise _error.ChangedDuringSerializationError("list items changed during iteration")
            if track:
                # marker: 0 new, 1 new but dropped (see write_object), k >= 2 object #k-2
                idx = ptable_get(&self.memo, <PyObject*>obj)
                if idx >= 0:
                    self.put_varuint64(<uint64_t>idx + 2)
                    continue
                mark = self.pos
                self.put_u8(0)
            self.enter()
            ser.write(self, obj)
            if track:
                idx = ptable_get(&self.memo, <PyObject*>obj)
                if idx >= 0:
                    self.data[mark] = 1
                    self.put_u8(T_REF)
                    self.put_varuint64(idx)
                    self.depth -= 1
                    continue
                ptable_add(&self.memo, <PyObject*>obj)
            if ser.has_state:
                ser.write_state(self, obj)
            self.depth -= 1
        return 0

    cdef int write_tuple(self, tuple obj) except -1:
        # tuples are registered after their items (they cannot exist before them);
        # see write_other for the recursive case
        cdef Py_ssize_t n = PyTuple_GET_SIZE(obj)
        cdef Py_ssize_t start, idx
        if self.ref:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                self.put_u8(T_REF)
                return self.put_varuint64(idx)
        start = self.pos
        if n == 0:
            if self.ref:
                ptable_add(&self.memo, <PyObject*>obj)
            return self.put_u8(FIX_TUPLE)
        self.enter()
        self.write_seq(obj, n, False)
        self.depth -= 1
        if self.ref:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                self.mark_discard(start)
                self.put_u8(T_REF)
                return self.put_varuint64(idx)
            ptable_add(&self.memo, <PyObject*>obj)
        return 0

    cdef int mark_discard(self, Py_ssize_t start) except -1:
        """Mark the tuple, frozenset or object written from `start` as dropped (the
        T_DISCARD bit, docs/format.md 5.2). A small tuple's tag has no room for the bit:
        it is rewritten as T_TUPLE n K_ANY, two bytes longer (a rare case: a tuple met
        again inside itself)."""
        cdef uint8_t tag = self.data[start]
        if FIX_TUPLE <= tag <= FIX_TUPLE + FIX_MAX:
            self.reserve(2)
            memmove(self.data + start + 3, self.data + start + 1, self.pos - start - 1)
            self.data[start] = T_TUPLE | T_DISCARD
            self.data[start + 1] = tag - FIX_TUPLE
            self.data[start + 2] = K_ANY
            self.pos += 2
        else:
            self.data[start] |= T_DISCARD
        return 0

    cdef int write_items(self, object seq, Py_ssize_t n, uint8_t kind, bint is_list) except -1:
        """The kind byte and the n items of a list or tuple."""
        cdef Py_ssize_t i, start
        cdef PyObject* item
        cdef int overflow
        cdef long long v
        cdef double d
        start = self.pos
        self.put_u8(kind)
        # (for K_FLOAT, K_INT and K_STR, seq_kind may have seen only the first items: an
        # item of another type makes the items written again, tagged; see write_seq)
        if kind == K_FLOAT:
            self.reserve(8 * n)
            for i in range(n):
                item = PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)
                if TYPE_OF(item) != <PyObject*>float:
                    self.pos = start
                    return self.write_items(seq, n, K_ANY, is_list)
                d = PyFloat_AS_DOUBLE(<object>item)
                memcpy(self.data + self.pos, &d, 8)
                self.pos += 8
            return 0
        if kind == K_INT:
            for i in range(n):
                item = PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)
                overflow = TYPE_OF(item) != <PyObject*>int
                if not overflow:
                    v = pyfory_int_value(<object>item, &overflow)
                if overflow:
                    # a big int (or another type) among them: rewrite the items tagged
                    self.pos = start
                    return self.write_items(seq, n, K_ANY, is_list)
                if self.pos + 10 > self.size:
                    self.grow(10)
                self.put_varuint64_unchecked((<uint64_t>v << 1) ^ <uint64_t>(v >> 63))
            return 0
        if kind == K_STR:
            if self.ref:
                # (all strings: write_seq scanned every item first)
                for i in range(n):
                    item = PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)
                    self.write_str_dedup(<str>item)
                return 0
            for i in range(n):
                item = PyList_GET_ITEM(seq, i) if is_list else PyTuple_GET_ITEM(seq, i)
                if TYPE_OF(item) != <PyObject*>str:
                    self.pos = start
                    return self.write_items(seq, n, K_ANY, is_list)
                self.put_str(<str>item, 0)
            return 0
        return self.write_any_items(seq, n, is_list)

    cdef int write_any_items(self, object seq, Py_ssize_t n, bint is_list) except -1:
        """n items of a list or tuple, each with its tag."""
        cdef Py_ssize_t i
        cdef PyObject* item
        cdef bint plain = self.overrides is None
        for i in range(n):
            if is_list:
                # user code (a __reduce__) may shrink the list while we write it: stop
                # when the list got shorter
                if i >= PyList_GET_SIZE(seq):
                    raise _error.ChangedDuringSerializationError("list changed size during iteration")
                item = PyList_GET_ITEM(seq, i)
            else:
                item = PyTuple_GET_ITEM(seq, i)
            # an atom is written from the borrowed item (no user code runs); anything else
            # through write_any, holding our own reference to it (the list's may be the
            # last one)
            if not plain:
                element = <object>item
                self.write_any(element)
            elif not write_atom(self, item, TYPE_OF(item)):
                element = <object>item
                write_nonatom(self, element, <type>TYPE_OF(item))
        return 0

    cdef int write_dict(self, dict obj) except -1:
        # small and cheap itself (the usual dict, a message's or a record's, goes on to
        # write_small_dict); write_dict_items, with its listing arrays, only past that
        cdef Py_ssize_t n, start = self.pos
        cdef bint unique
        if self.ref and self.write_ref_or_register(obj):
            return 0
        n = PyDict_GET_SIZE(obj)
        if n == 0:
            return self.put_u8(FIX_DICT)
        self.enter()
        # the keys of a dict that is the whole payload go without the string table when
        # strings are not tracked: no other dict can refer back to them
        unique = not self.ref and start == self.body_start
        if not (n <= FIX_MAX and self.overrides is None
                and (self.write_flat_dict(obj, n) if unique else self.write_small_dict(obj, n, False))):
            self.write_dict_items(obj, n, unique)
        self.depth -= 1
        return 0

    cdef int write_dict_items(self, dict obj, Py_ssize_t n, bint unique) except -1:
        """A dict of n > 0 items that write_small_dict did not take: its tag, count and
        kinds, then the items (see write_dict)."""
        cdef Py_ssize_t pos = 0, count = 0, i = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef PyObject* kt = NULL
        cdef PyObject* vt = NULL
        cdef PyObject* t
        # the items of a small dict, kept by the first pass for the second (borrowed:
        # only used when writing them runs no user code)
        cdef PyObject* small_k[SMALL_DICT]
        cdef PyObject* small_v[SMALL_DICT]
        cdef uint8_t kkind, vkind
        cdef bint kuniform = True, vuniform = True, atoms = True, small, listed
        cdef PyObject** ks
        cdef PyObject** vs
        cdef int overflow
        cdef long long iv
        small = n <= SMALL_DICT
        # the items are listed by the first pass for the second: on the C stack for
        # small dicts, else (up to LIST_DICT_MAX) in the context's scratch arrays, which
        # nested dicts reuse once the listing dict no longer needs them
        listed = not small and n <= LIST_DICT_MAX and self.reserve_dict_scratch(n)
        ks = self.dict_keys
        vs = self.dict_values
        # one pass to find whether keys / values share one packable type, and whether
        # every value is an atom (None, bool, int, float, str)
        while PyDict_Next(obj, &pos, &k, &v):
            if small:
                if i < SMALL_DICT:
                    small_k[i] = k
                    small_v[i] = v
            elif listed and i < n:
                ks[i] = k
                vs[i] = v
            i += 1
            t = TYPE_OF(v)
            if atoms and not (t == <PyObject*>str or t == <PyObject*>int or t == <PyObject*>float
                              or t == <PyObject*>bool or v == <PyObject*>None):
                atoms = False
            if kt == NULL:
                kt = TYPE_OF(k)
                vt = t
            else:
                if kuniform and TYPE_OF(k) != kt:
                    kuniform = False
                if vuniform and t != vt:
                    vuniform = False
        if self.overrides is not None:
            kuniform = vuniform = False
        kkind = K_STR if kuniform and kt == <PyObject*>str else K_ANY
        vkind = K_ANY
        if vuniform:
            if vt == <PyObject*>str:
                vkind = K_STR
            elif vt == <PyObject*>float:
                vkind = K_FLOAT
            elif vt == <PyObject*>int:
                vkind = K_INT
                pos = 0
                while PyDict_Next(obj, &pos, &k, &v):
                    overflow = 0
                    PyLong_AsLongLongAndOverflow(<object>v, &overflow)
                    if overflow:
                        vkind = K_ANY
                        break
        if kkind == K_STR:
            # (str-keyed dicts of up to FIX_MAX items went through write_small_dict)
            self.put_u8(sdict_tag(vkind))
            self.put_varuint64(n)
        else:
            self.put_u8(T_DICT)
            self.put_varuint64(n)
            self.put_u8(kkind | (vkind << 4))
        pos = 0
        small = small and i == n
        listed = listed and i == n
        if kkind == K_STR and vkind == K_ANY and small and not atoms:
            # str keys, values that may run user code (objects, containers of them)
            self.write_held_items(obj, small_k, small_v, n, unique)
        elif kkind == K_STR and (vkind != K_ANY or atoms):
            # str keys and atom values: no user code can run in this loop. The keys go
            # into the string table (they repeat in lists of records), except in a dict
            # that is the whole payload (see `unique`)
            if small:
                self.write_str_keyed_atoms(obj, small_k, small_v, n, vkind, unique)
            elif listed:
                self.write_str_keyed_atoms(obj, ks, vs, n, vkind, unique)
            else:
                self.write_str_keyed_atoms(obj, NULL, NULL, n, vkind, unique)
        else:
            while PyDict_Next(obj, &pos, &k, &v):
                key = <object>k
                value = <object>v
                if kkind == K_STR:
                    if type(key) is not str:
                        raise _error.ChangedDuringSerializationError("dict changed during iteration")
                    if unique:
                        self.put_str(<str>key, 0)
                    else:
                        self.write_str_dedup(<str>key)
                else:
                    self.write_any(key)
                if vkind != K_ANY and TYPE_OF(<PyObject*>value) != vt:
                    raise _error.ChangedDuringSerializationError("dict changed during iteration")
                if vkind == K_STR:
                    if self.ref:
                        self.write_str_dedup(<str>value)
                    else:
                        self.put_str(<str>value, 0)
                elif vkind == K_FLOAT:
                    self.put_double(PyFloat_AS_DOUBLE(value))
                elif vkind == K_INT:
                    overflow = 0
                    iv = PyLong_AsLongLongAndOverflow(value, &overflow)
                    if overflow:
                        raise _error.ChangedDuringSerializationError("dict changed during iteration")
                    self.put_varint64(iv)
                else:
                    self.write_any(value)
                count += 1
            if count != n or PyDict_Size(obj) != n:
                raise _error.ChangedDuringSerializationError("dict changed size during iteration")
        return 0

    cdef int write_str_keyed_atoms(self, dict obj, PyObject** keys, PyObject** values,
                                   Py_ssize_t n, uint8_t vkind, bint unique) except -1:
        """The n items of a str-keyed dict whose values are atoms (vkind K_ANY) or all of
        one kind, as the first pass listed them (keys, values), or from the dict when
        keys is NULL. No user code runs here. (Its own small function, so that the C
        compiler inlines put_str into the loop.)"""
        cdef Py_ssize_t i = 0, pos = 0
        cdef PyObject* k
        cdef PyObject* v
        cdef int overflow
        while True:
            if keys != NULL:
                if i == n:
                    break
                k = keys[i]
                v = values[i]
                i += 1
            elif not PyDict_Next(obj, &pos, &k, &v):
                break
            if unique:
                self.put_str(<str>k, 0)
            else:
                self.write_str_dedup(<str>k)
            if vkind == K_STR:
                if self.ref:
                    self.write_str_dedup(<str>v)
                else:
                    self.put_str(<str>v, 0)
            elif vkind == K_FLOAT:
                self.put_double(PyFloat_AS_DOUBLE(<object>v))
            elif vkind == K_INT:
                self.put_varint64(pyfory_int_value(<object>v, &overflow))
            else:
                # (write_any, not write_atom: one more place to inline write_atom makes
                # GCC stop inlining it into write_small_dict)
                self.write_any(<object>v)
        return 0

    cdef bint reserve_dict_scratch(self, Py_ssize_t n) noexcept:
        # room for n items in dict_keys / dict_values; False when memory is short (the
        # caller then iterates the dict twice instead)
        cdef PyObject** nk
        cdef PyObject** nv
        if n <= self.dict_cap:
            return True
        nk = <PyObject**>realloc(self.dict_keys, n * sizeof(PyObject*))
        if nk == NULL:
            return False
        self.dict_keys = nk
        nv = <PyObject**>realloc(self.dict_values, n * sizeof(PyObject*))
        if nv == NULL:
            return False
        self.dict_values = nv
        self.dict_cap = n
        return True

    cdef int write_small_dict(self, dict obj, Py_ssize_t n, bint unique) except -1:
        """A dict of n <= FIX_MAX items whose keys are all str: FIX_DICT + n, then the
        pairs, from one pass over the dict. 0, having written nothing, when a key is not
        a str (write_dict then takes the general way), else 1."""
        cdef PyObject* ks[FIX_MAX]
        cdef PyObject* vs[FIX_MAX]
        cdef PyObject* k
        cdef PyObject* v
        cdef PyObject* t
        cdef Py_ssize_t pos = 0, i = 0
        cdef bint atoms = True
        # list the items (no user code runs here); note whether every value is an atom
        while PyDict_Next(obj, &pos, &k, &v):
            if i == n or TYPE_OF(k) != <PyObject*>str:
                return 0
            ks[i] = k
            vs[i] = v
            i += 1
            t = TYPE_OF(v)
            if atoms and not (t == <PyObject*>str or t == <PyObject*>int or t == <PyObject*>float
                              or t == <PyObject*>bool or v == <PyObject*>None):
                atoms = False
        if i != n:
            return 0
        self.put_u8(FIX_DICT + <uint8_t>n)
        if not atoms:
            # values that may run user code (objects, containers of them)
            self.write_held_items(obj, ks, vs, n, unique)
            return 1
        for i in range(n):
            # (writing atoms runs no user code: the borrowed items stay valid)
            if unique:
                put_short_str(self, ks[i])
            else:
                self.write_str_dedup(<str>ks[i])
            write_atom(self, vs[i], TYPE_OF(vs[i]))
        return 1

    cdef int write_flat_dict(self, dict obj, Py_ssize_t n) except -1:
        """write_small_dict for the dict that is the whole payload (its keys go without
        the string table), in one pass when every item is a str key and an atom value
        (the usual message): each item is written as PyDict_Next gives it. At the first
        item that is not, what was written is taken back and write_small_dict's two
        passes run: at most one prefix of atoms written twice. 0 or 1 as
        write_small_dict."""
        cdef Py_ssize_t start = self.pos, pos = 0, i = 0
        cdef PyObject* k
        cdef PyObject* v
        self.put_u8(FIX_DICT + <uint8_t>n)
        # (writing atoms runs no user code: the dict cannot change under the loop)
        while PyDict_Next(obj, &pos, &k, &v):
            if i == n or TYPE_OF(k) != <PyObject*>str:
                break
            put_short_str(self, k)
            if not write_atom(self, v, TYPE_OF(v)):
                break
            i += 1
        else:
            if i == n:
                return 1
        self.pos = start
        return self.write_small_dict(obj, n, True)

    cdef int write_held_items(self, dict obj, PyObject** keys, PyObject** values,
                              Py_ssize_t n, bint unique) except -1:
        """The items of a small dict with str keys, as the first pass of write_dict or
        write_small_dict kept them (a second PyDict_Next pass cost more than writing most
        items). Each is held by a reference while written, as user code may run (an
        object's serializer); if some did (self.foreign moved), the dict must still hold
        exactly these items afterwards, else the payload would not be a snapshot of it."""
        cdef Py_ssize_t i, mark = self.foreign
        cdef bint plain = self.overrides is None
        for i in range(n):
            Py_INCREF_raw(keys[i])
            Py_INCREF_raw(values[i])
        try:
            for i in range(n):
                if unique:
                    self.put_str(<str>keys[i], 0)
                else:
                    self.write_str_dedup(<str>keys[i])
                if not plain:
                    self.write_any(<object>values[i])
                elif not write_atom(self, values[i], TYPE_OF(values[i])):
                    write_nonatom(self, <object>values[i], <type>TYPE_OF(values[i]))
            if self.foreign != mark:
                if PyDict_Size(obj) != n:
                    raise _error.ChangedDuringSerializationError("dict changed size during iteration")
                for i in range(n):
                    if obj.get(<str>keys[i], _MISSING) is not <object>values[i]:
                        raise _error.ChangedDuringSerializationError("dict changed during iteration")
        finally:
            for i in range(n):
                Py_DECREF_raw(keys[i])
                Py_DECREF_raw(values[i])
        return 0

    cdef int write_setlike(self, object obj, uint8_t tag) except -1:
        cdef Py_ssize_t n = len(obj), start, idx, count = 0
        cdef type t0 = None
        cdef uint8_t kind = K_ANY
        if self.ref:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                self.put_u8(T_REF)
                return self.put_varuint64(idx)
            if tag == T_SET:
                ptable_add(&self.memo, <PyObject*>obj)
        start = self.pos
        self.put_u8(tag)
        self.put_varuint64(n)
        if n == 0:
            if self.ref and tag == T_FROZENSET:
                ptable_add(&self.memo, <PyObject*>obj)
            return 0
        self.enter()
        for item in obj:
            if t0 is None:
                t0 = type(item)
            elif type(item) is not t0:
                t0 = None
                break
        if t0 is str and self.overrides is None:
            kind = K_STR
        self.put_u8(kind)
        for item in obj:
            if kind == K_STR:
                if self.ref:
                    self.write_str_dedup(<str>item)
                else:
                    self.put_str(<str>item, 0)
            else:
                self.write_any(item)
            count += 1
        if count != n:
            raise _error.ChangedDuringSerializationError("set changed size during iteration")
        self.depth -= 1
        if self.ref and tag == T_FROZENSET:
            idx = ptable_get(&self.memo, <PyObject*>obj)
            if idx >= 0:
                self.data[start] |= T_DISCARD
                self.put_u8(T_REF)
                return self.put_varuint64(idx)
            ptable_add(&self.memo, <PyObject*>obj)
        return 0

    # -- Python-visible API for serializers --
    def write_value(self, obj):
        """Write a nested value of any type (with reference tracking as configured)."""
        self.write_any(obj)

    write_ref = write_value
    write_no_ref = write_value      # pyfory's name (references follow the Fory's `ref`)

    def write_str_ref(self, str s):
        """A name that repeats across the payload: written once, then by index (names
        are deduplicated by value, see write_name)."""
        self.write_name(s)

    def write_type(self, cls):
        """A class object, named once per payload."""
        self.write_class(cls)

    def write_buffer(self, buf, bint always_offer=True):
        """Binary data (any buffer-protocol object) that may travel out of band:
        offered to buffer_callback (always, or only when large). Read it back with
        ReadContext.read_buffer()."""
        self.write_buffer_body(buf, always_offer)

    @property
    def ref_tracking(self):
        return self.ref

    @property
    def depth_now(self):
        return self.depth

    def memo_index(self, obj):
        """Index of obj among the objects already written, or -1."""
        return ptable_get(&self.memo, <PyObject*>obj)


cdef enum:
    K_UNIFORM = 0xFF    # (seq_kind only) every item of one type that has no packed kind
    KIND_GUESS_ITEMS = 8    # write_seq guesses a long list's kind from this many items


cdef inline uint8_t seq_kind(object seq, Py_ssize_t n, bint is_list) noexcept:
    """K_STR / K_INT / K_FLOAT when every item has that exact type, K_UNIFORM when every
    item has one other type, else (mixed types) K_ANY. One pass."""
    cdef PyObject* t0
    cdef Py_ssize_t i
    if is_list:
        t0 = TYPE_OF(PyList_GET_ITEM(seq, 0))
        for i in range(1, n):
            if TYPE_OF(PyList_GET_ITEM(seq, i)) != t0:
                return K_ANY
    else:
        t0 = TYPE_OF(PyTuple_GET_ITEM(seq, 0))
        for i in range(1, n):
            if TYPE_OF(PyTuple_GET_ITEM(seq, i)) != t0:
                return K_ANY
    if t0 == <PyObject*>str:
        return K_STR
    if t0 == <PyObject*>int:
        return K_INT
    if t0 == <PyObject*>float:
        return K_FLOAT
    return K_UNIFORM


# ---- reading -------------------------------------------------------------------------
cdef inline int plain_key(object key) except -1:
    """1 for keys whose hash a payload cannot make collide in numbers: str and bytes
    (their hash is randomized per process), None, bools, floats (a hash value is shared
    by few of them) and ints within 64 bits (hash(i) is i mod 2**61-1: at most nine of
    them share one). Every other key goes through a KeyGuard."""
    cdef type t = type(key)
    cdef int overflow = 0
    if t is str or t is bytes or t is float or key is None or t is bool:
        return 1
    if t is int:
        PyLong_AsLongLongAndOverflow(key, &overflow)
        return overflow == 0
    return 0


# the multiplier that spreads hash values over a KeyGuard's table: odd, random per
# process, so that a payload cannot choose distinct hash values that share a slot
cdef uint64_t GUARD_SALT = int.from_bytes(_os.urandom(8), "little") | 1


cdef class KeyGuard:
    """The keys of one dict or set being filled from the payload. Python's dict and set
    compare a new key with every earlier key of the same hash, so n keys crafted to share
    one (big ints k*(2**61-1), complex numbers, tuples of ints) cost n**2/2 comparisons:
    200 KB of them took 4 s. The comparisons are counted against max_hash_work, with the
    nodes that hashing a key visits (ReadContext.check_key). For serializers that fill a
    container: ``guard = ctx.key_guard()``, then ``guard.check(key)`` before each insert."""

    def __cinit__(self, ReadContext ctx, Py_ssize_t expected=0):
        self.ctx = ctx
        self.expected = expected

    def __dealloc__(self):
        free(self.hashes)
        free(self.counts)

    cdef Py_ssize_t* slot(self, Py_hash_t h) noexcept:
        # the count of h, or the empty slot where it goes (count 0)
        cdef Py_ssize_t i = <Py_ssize_t>((<uint64_t>h * GUARD_SALT) >> 32) & self.mask
        while self.counts[i] != 0 and self.hashes[i] != h:
            i = (i + 1) & self.mask
        self.hashes[i] = h
        return &self.counts[i]

    cdef int grow(self) except -1:
        cdef Py_hash_t* old_hashes = self.hashes
        cdef Py_ssize_t* old_counts = self.counts
        cdef Py_ssize_t old_cap = self.mask + 1 if self.mask else 0, cap = 2 * old_cap, i
        if old_cap == 0:
            # room for the container's keys at half load, so that most never grow; past
            # 2**17 slots (2 MiB) it grows as keys come, not on the count's word alone
            cap = 64
            while cap < 2 * self.expected and cap < (1 << 17):
                cap *= 2
        self.hashes = <Py_hash_t*>malloc(cap * sizeof(Py_hash_t))
        self.counts = <Py_ssize_t*>calloc(cap, sizeof(Py_ssize_t))
        if self.hashes == NULL or self.counts == NULL:
            free(self.hashes)
            free(self.counts)
            self.hashes, self.counts = old_hashes, old_counts
            raise MemoryError()
        self.mask = cap - 1
        for i in range(old_cap):
            if old_counts[i]:
                self.slot(old_hashes[i])[0] = old_counts[i]
        free(old_hashes)
        free(old_counts)
        return 0

    cdef Py_hash_t add(self, object key) except? -1:
        # key is not a plain_key; its hash, for the insert that follows
        cdef Py_hash_t h
        cdef Py_ssize_t* count
        self.ctx.check_key(key)
        h = hash(key)
        if 2 * (self.used + 1) > self.mask:
            self.grow()
        count = self.slot(h)
        if count[0]:
            self.ctx.charge_collisions(count[0])
        else:
            self.used += 1
        count[0] += 1
        return h

    def check(self, key):
        """Call before inserting key (read from the payload) into this guard's container."""
        if not plain_key(key):
            self.add(key)


cdef bint _is_writable(object obj):
    cdef Py_buffer view
    try:
        PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE)
    except BufferError:
        return False
    PyBuffer_Release(&view)
    return True


cdef class ReadContext(Buffer):
    """State of one `loads`: the input cursor and the tables of objects, strings and
    types met so far, which back-references index into."""

    def __cinit__(self, *args, **kwargs):
        # (the ObjVec fields start zeroed: empty, nothing allocated)
        pass

    def __dealloc__(self):
        cdef Py_ssize_t i
        objvec_free(&self.stack)
        objvec_free(&self.refs)
        objvec_free(&self.strings)
        if self.key_cache != NULL:
            for i in range(KEY_CACHE_SIZE):
                Py_XDECREF(self.key_cache[i])
            free(self.key_cache)
            self.key_cache = NULL

    def __init__(self, fory):
        self.fory = fory
        self.resolver = fory.resolver
        self.max_depth = fory.max_depth
        self.policy = fory.policy
        self.types = []
        self.in_use = False
        self.buffers = None
        self.scratch = None

    cdef int begin(self, object data) except -1:
        cdef Fory fory = <Fory>self.fory
        if type(data) is bytes and self.source is None and not self.has_view and self.out == NULL:
            # (Buffer.attach of bytes, inline: the usual input, on a detached context)
            self.source = data
            self.data = <uint8_t*>PyBytes_AS_STRING(data)
            self.size = PyBytes_GET_SIZE(data)
            self.pos = 0
            self.owns_data = False
        else:
            self.attach(data)
        self.depth = 0
        self.in_use = True
        self.buffer_index = 0
        # the budgets of this loads (see Fory's docstring)
        self.unbacked = 0
        self.max_unbacked = fory.max_unbacked_container_items
        self.graph_bytes = 0
        self.max_graph_bytes = -1 if fory.max_graph_memory_bytes is None else fory.max_graph_memory_bytes
        self.backrefs_seen = False
        self.hash_work = 0
        self.max_hash_work = (HASH_WORK_PER_BYTE * self.size + HASH_WORK_BASE
                              if fory.max_hash_work is None else fory.max_hash_work)
        return 0

    cdef void end(self) noexcept:
        self.detach()
        if self.stack.len or self.stack.cap > PTABLE_KEEP:
            objvec_reset(&self.stack)   # what a failed read left on the value stack
        if self.refs.len or self.refs.cap > PTABLE_KEEP:
            objvec_reset(&self.refs)
        if self.strings.len or self.strings.cap > PTABLE_KEEP:
            objvec_reset(&self.strings)
        if PyList_GET_SIZE(self.types):
            self.types = []
        if self.buffers is not None:
            self.buffers = None
        if self.unsupported_objects is not None:
            self.unsupported_objects = None
        if self.scratch is not None:
            self.scratch = None
        if self.hash_memo is not None:
            self.hash_memo = None
        self.in_use = False

    # -- the value stack: the items of a tuple, list or frozenset being read wait here
    #    until the container is made, so no half-built one is ever visible to user code
    #    (gc.get_objects) while a nested read runs it --
    cdef Py_ssize_t stack_read_any(self, Py_ssize_t n) except -1:
        """Read n values of any type onto the value stack; returns where they start."""
        cdef Py_ssize_t base = self.stack.len, i
        for i in range(n):
            objvec_push(&self.stack, self.read_any_inline())
        return base

    cdef int stack_extend_list(self, list lst, Py_ssize_t base, Py_ssize_t n) except -1:
        """Move the n items above base on the value stack to the end of lst."""
        cdef PyListObject* raw = <PyListObject*>lst
        cdef PyObject** slots
        cdef Py_ssize_t i
        if raw.ob_item == NULL:
            # still the empty list made before the items (the usual case): give it
            # its whole item array at once rather than growing it append by append
            slots = <PyObject**>PyMem_Malloc(n * sizeof(PyObject*))
            if slots == NULL:
                raise MemoryError()
            memcpy(slots, self.stack.items + base, n * sizeof(PyObject*))
            raw.ob_item = slots
            raw.allocated = n
            Py_SET_SIZE(lst, n)
            self.stack.len = base
            return 0
        # user code reached the list through a back-reference and filled it: append
        for i in range(n):
            lst.append(<object>self.stack.items[base + i])
        objvec_truncate(&self.stack, base)
        return 0

    cdef void stack_move_into(self, object seq, Py_ssize_t base, Py_ssize_t n) noexcept:
        # into a new list/tuple of n empty slots, which takes over the references
        cdef PyObject** slots = PySequence_Fast_ITEMS(seq)
        cdef Py_ssize_t i
        for i in range(n):
            slots[i] = self.stack.items[base + i]
        self.stack.len = base

    cdef int raise_depth(self) except -1:
        # (enter, inline in _core.pxd, went past max_depth)
        raise DepthLimitError(
            f"payload nests deeper than max_depth={self.max_depth} (at offset {self.pos}); "
            f"for deeper data from a source you trust, raise the limit with "
            f"Fory(max_depth=N), N up to {MAX_DEPTH_CAP} (pyfory.loads allows 1000)")

    cdef object read_any(self):
        # read_any_inline, out of line: for the call sites off the hot loops
        return self.read_any_inline()

    cdef object read_tagged(self, int tag):
        """A value whose tag is not an atom (read_any_inline does those)."""
        cdef Py_ssize_t n
        cdef const uint8_t* p
        cdef double re, im
        cdef bint discard
        # the small containers first (their tags carry the count), then the common
        # tags: one if/elif chain, a jump table in C
        if FIX_LIST <= tag <= FIX_DICT + FIX_MAX:
            if tag >= FIX_DICT:
                return self.read_dict_items(tag - FIX_DICT, K_STR, K_ANY)
            if tag >= FIX_TUPLE:
                return self.read_tuple_items(tag - FIX_TUPLE, K_ANY, False)
            return self.read_list_items(tag - FIX_LIST, K_ANY)
        if tag == T_TUPLE:
            return self.read_tuple(False)
        elif tag == T_LIST:
            return self.read_list(False)
        elif tag == T_DICT:
            return self.read_dict()
        elif T_SDICT <= tag <= T_SDICT + 3:
            return self.read_dict_items(self.get_length(), K_STR, SDICT_KINDS[tag - T_SDICT])
        elif tag == T_REF:
            return self.get_ref(self.get_length())
        elif tag == T_OBJECT:
            return self.read_object(False)
        discard = (tag & T_DISCARD) != 0
        tag &= ~T_DISCARD
        if discard and tag != T_TUPLE and tag != T_FROZENSET and tag != T_OBJECT:
            raise MalformedDataError(f"invalid tag {tag | T_DISCARD} at offset {self.pos - 1}")
        if tag == T_TUPLE:
            return self.read_tuple(discard)
        if tag == T_REF:
            return self.get_ref(self.get_length())
        if tag == T_OBJECT:
            return self.read_object(discard)
        if tag == T_TYPE:
            return self.read_type_info().cls
        if tag == T_BYTES:
            n = self.get_length()
            p = self.take(n)
            obj = bytes_from(p, n)
            if self.ref:
                objvec_push(&self.refs, obj)
            return obj
        if tag == T_BIGINT:
            return self.read_bigint()
        if tag == T_SET or tag == T_FROZENSET:
            return self.read_setlike(tag, discard)
        if tag == T_BYTEARRAY:
            n = self.get_length()
            p = self.take(n)
            obj = bytearray_from(p, n)
            if self.ref:
                objvec_push(&self.refs, obj)
            return obj
        if tag == T_BUFFER:
            return self.read_buffer_value()
        if tag == T_COMPLEX:
            re = self.get_double()
            im = self.get_double()
            return PyComplex_FromDoubles(re, im)
        if tag == T_UNSUPPORTED and not discard:
            return self.read_unsupported()
        raise MalformedDataError(f"unknown value tag {tag} at offset {self.pos - 1}")

    cdef object read_unsupported(self):
        # an object the writer's unsupported_callback kept out of the payload
        if self.unsupported_objects is None:
            raise _error.OutOfBandBufferError(
                "the payload leaves objects out (dumps' unsupported_callback): pass them as "
                "loads(data, unsupported_objects=[...])")
        try:
            obj = next(self.unsupported_objects)
        except StopIteration:
            raise _error.OutOfBandBufferError(
                "the payload refers to more unsupported objects than were passed") from None
        if self.ref:
            objvec_push(&self.refs, obj)
        return obj

    cdef object read_buffer_body(self, bint writable):
        """The bytes of a buffer: for an out-of-band buffer, the object the caller
        passed (or a flat view of it), never a copy; in band, a copy out of the
        payload (a bytearray when `writable`, else bytes)."""
        cdef uint64_t h = self.get_varuint64()
        cdef uint64_t n = h >> 1
        cdef const uint8_t* p
        cdef Py_buffer view
        if h & 1:
            if self.buffers is None:
                raise _error.OutOfBandBufferError(
                    "the payload has out-of-band buffers: pass them as loads(data, buffers=[...])")
            if self.buffer_index >= len(self.buffers):
                raise _error.OutOfBandBufferError(
                    f"too few out-of-band buffers: {len(self.buffers)} given, the payload "
                    f"needs at least {self.buffer_index + 1}")
            buf = self.buffers[self.buffer_index]
            if isinstance(buf, BufferObject):
                buf = buf.getbuffer()
            if not PyObject_CheckBuffer(buf):
                raise _error.OutOfBandBufferError(
                    f"out-of-band buffer #{self.buffer_index} ({type(buf).__name__}) does not "
                    "expose the buffer protocol")
            try:
                PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
            except BufferError as e:
                raise _error.OutOfBandBufferError(
                    f"out-of-band buffer #{self.buffer_index} is not contiguous: {e}") from None
            size = view.len
            PyBuffer_Release(&view)
            if <uint64_t>size != n:
                raise _error.OutOfBandBufferError(
                    f"out-of-band buffer #{self.buffer_index} has {size} bytes, "
                    f"the payload expects {n}")
            self.buffer_index += 1
            # Hand back the caller's own object, and for a memoryview that covers all of
            # its object, that object (as pickle's consumers see it through
            # memoryview(x).obj). This also keeps PickleBuffers off memoryviews:
            # CPython <= 3.12 can crash collecting a PickleBuffer over a memoryview when
            # both end up in a garbage cycle.
            if type(buf) is memoryview:
                base = (<object>buf).obj
                # (a read-only view of a writable object stays the view: the caller lent
                # it read-only)
                if (base is not None and type(base) is not memoryview and PyObject_CheckBuffer(base)
                        and not ((<object>buf).readonly and _is_writable(base))):
                    try:
                        PyObject_GetBuffer(base, &view, PyBUF_SIMPLE)
                    except BufferError:
                        return buf
                    if view.len == size and view.buf == _buffer_address(buf):
                        buf = base
                    PyBuffer_Release(&view)
            return buf
        if n > <uint64_t>(self.size - self.pos):
            self.raise_truncated(<Py_ssize_t>min(n, <uint64_t>0x7FFFFFFFFFFFFFFF))
        p = self.take(<Py_ssize_t>n)
        if writable:
            return bytearray_from(p, <Py_ssize_t>n)
        return bytes_from(p, <Py_ssize_t>n)

    cdef object read_buffer_value(self):
        cdef int kind = self.get_u8()
        cdef Py_ssize_t ndim, i
        cdef bint readonly
        if kind == B_BYTES:
            data = self.read_buffer_body(False)
            if type(data) is not bytes:
                data = bytes(data)
        elif kind == B_BYTEARRAY:
            data = self.read_buffer_body(True)
            if type(data) is not bytearray:
                data = bytearray(data)
        elif kind == B_PICKLEBUFFER:
            readonly = self.get_u8() != 0
            data = PickleBuffer(self.read_buffer_body(not readonly))
        elif kind == B_MEMORYVIEW:
            fmt = self.read_str_any()
            ndim = self.get_length()
            if ndim > 64:
                raise MalformedDataError(f"memoryview with {ndim} dimensions")
            shape = [self.get_length() for i in range(ndim)]
            readonly = self.get_u8() != 0
            data = memoryview(self.read_buffer_body(not readonly))
            if readonly and not data.readonly:
                data = data.toreadonly()
            try:
                if data.format != "B" or data.ndim != 1:
                    data = data.cast("B")
                data = data.cast(fmt, shape) if (fmt != "B" or ndim != 1) else data
            except (TypeError, ValueError) as e:
                raise MalformedDataError(f"bad memoryview layout: {e}") from None
        else:
            raise MalformedDataError(f"unknown buffer kind {kind} at offset {self.pos - 1}")
        if self.ref:
            objvec_push(&self.refs, data)
        return data

    cdef object get_ref(self, Py_ssize_t idx):
        if idx >= self.refs.len:
            raise MalformedDataError(
                f"reference to object #{idx} but only {self.refs.len} "
                f"seen (offset {self.pos})")
        self.backrefs_seen = True
        return <object>self.refs.items[idx]

    # -- budgets: work and memory bounded by the input --
    cdef int raise_graph(self) except -1:
        raise _error.LimitExceededError(
            f"the payload's containers and objects need about {self.graph_bytes} bytes, more "
            f"than max_graph_memory_bytes={self.max_graph_bytes} (offset {self.pos}); raise "
            "it with Fory(max_graph_memory_bytes=N) for trusted data")

    cdef int check_seq_count(self, Py_ssize_t n) except -1:
        # a list or tuple: each item takes at least one byte, except instances of a
        # class whose serializer writes nothing (K_OBJECT), which draw on the budget of
        # unbacked items instead
        if n > self.size - self.pos and n - (self.size - self.pos) > self.max_unbacked - self.unbacked:
            return self.raise_count(n)
        return 0

    cdef int raise_unbacked(self) except -1:
        raise _error.LimitExceededError(
            f"more than max_unbacked_container_items={self.max_unbacked} container items "
            f"read from no input bytes (offset {self.pos}); raise it with "
            "Fory(max_unbacked_container_items=N) for trusted data")

    cdef int check_key(self, object key) except -1:
        """Before key is hashed (a set element, a dict key): count the nodes hashing it
        visits. A tuple's hash is not cached, so with back-references a few bytes can
        describe a tuple whose hash visits 2**40 nodes (t = (t, t) forty times); the
        total over one loads is held to max_hash_work. Without any back-reference yet,
        every object read so far is a tree no larger than its bytes: nothing to count."""
        cdef type t
        cdef Py_ssize_t w
        if not self.backrefs_seen:
            return 0
        t = type(key)
        if t is str or t is int or t is float or t is bytes or key is None or t is bool:
            return 0
        w = self.key_weight(key, 0)
        self.hash_work += w
        if self.hash_work > self.max_hash_work:
            raise _error.LimitExceededError(
                f"hashing the payload's set elements and dict keys would visit more than "
                f"max_hash_work={self.max_hash_work} nodes (offset {self.pos}): shared "
                "tuples nested to blow up a hash; raise it with Fory(max_hash_work=N) "
                "for trusted data")
        return 0

    cdef int charge_collisions(self, Py_ssize_t n) except -1:
        # n earlier keys of one dict or set share this key's hash: inserting it compares
        # it with each of them
        self.hash_work += n
        if self.hash_work > self.max_hash_work:
            raise _error.LimitExceededError(
                f"the payload's dict keys or set elements share hash values: inserting them "
                f"would compare keys more than max_hash_work={self.max_hash_work} times "
                f"(offset {self.pos}); raise it with Fory(max_hash_work=N) for trusted data")
        return 0

    cdef Py_ssize_t key_weight(self, object obj, int depth) except -1:
        # nodes that hash(obj) visits (an upper bound), memoized per object so that a
        # shared part is weighed once; stops counting past the budget
        cdef type t = type(obj)
        cdef Py_ssize_t w, limit = self.max_hash_work + 1
        cdef int overflow = 0
        if t is str or t is float or t is bytes or obj is None or t is bool or t is complex:
            return 1
        if t is int:
            PyLong_AsLongLongAndOverflow(obj, &overflow)
            return 1 if overflow == 0 else 1 + (<Py_ssize_t>obj.bit_length() >> 6)
        if self.hash_memo is None:
            self.hash_memo = {}
        entry = self.hash_memo.get(id(obj))
        if entry is not None and (<tuple>entry)[0] is obj:
            return (<tuple>entry)[1]
        if depth > 4 * self.max_depth:
            return limit
        w = 1
        if isinstance(obj, (tuple, frozenset)):
            children = obj
        elif PyType_Check(obj):
            children = ()
        else:
            # any other object (a frozen dataclass, a Fraction, an enum member): what it
            # refers to bounds what its __hash__ can reach
            children = [c for c in _gc_referents(obj) if not PyType_Check(c)]
        for child in children:
            w += self.key_weight(child, depth + 1)
            if w >= limit:
                w = limit
                break
        self.hash_memo[id(obj)] = (obj, w)
        return w

    cdef object read_bigint(self):
        cdef Py_ssize_t n = self.get_length()
        cdef const uint8_t* p = self.take(n)
        return int.from_bytes(PyBytes_FromStringAndSize(<const char*>p, n), "little", signed=True)

    cdef str read_str_header(self, uint64_t h):
        cdef uint64_t idx
        cdef str s
        if (h & 3) == 3:
            idx = h >> 2
            if idx >= <uint64_t>self.strings.len:
                raise MalformedDataError(f"reference to string #{idx} not yet seen (offset {self.pos})")
            return <str>self.strings.items[idx]
        s = self.get_str_body(h)
        if h & 4:
            objvec_push(&self.strings, s)
        return s

    cdef str read_key(self, uint64_t h):
        """A dict key of header h (ASCII or Latin-1, at most KEY_CACHE_MAX_LEN bytes):
        the string object an earlier key with the same characters made, when it is in
        the key cache. Small dicts of one shape are read again and again (messages,
        records): a hit costs a byte comparison instead of a new string and its
        siphash. Only ASCII strings are kept, so equal bytes are an ASCII string. Used
        without ref tracking only: equal keys of different dicts may be one object."""
        cdef Py_ssize_t n = <Py_ssize_t>(h >> 3)
        cdef const uint8_t* p
        cdef uint64_t x, w0, w1
        cdef PyObject** slot
        cdef PyObject* entry
        cdef str s
        if n > self.size - self.pos:
            return self.read_str_header(h)      # raises: truncated
        if self.key_cache == NULL:
            self.key_cache = <PyObject**>calloc(KEY_CACHE_SIZE, sizeof(PyObject*))
            if self.key_cache == NULL:
                raise MemoryError()
        p = self.data + self.pos
        # the slot: a hash of the length and of the first and last 8 bytes (all of a key
        # up to 16 bytes, read as two overlapping words; longer keys differing only in
        # the middle share a slot, and the full comparison tells them apart)
        x = key_words(p, n, &w0, &w1)
        x = (x ^ (w0 * 0x9E3779B97F4A7C15ULL)) * 0xFF51AFD7ED558CCDULL
        x ^= w1 * 0xC4CEB9FE1A85EC53ULL
        slot = &self.key_cache[(x >> 40) & (KEY_CACHE_SIZE - 1)]
        entry = slot[0]
        if (entry != NULL and PyUnicode_GET_LENGTH(<object>entry) == n
                and same_key(<const uint8_t*>PyUnicode_DATA(<object>entry), p, n, w0, w1)):
            self.pos += n
            s = <str>entry
        else:
            s = self.get_str_body(h)
            if PyUnicode_IS_ASCII(s):
                PyObject_Hash(s)                # cached in the string: the dict needs it
                Py_INCREF(s)
                Py_XDECREF(entry)
                slot[0] = <PyObject*>s
        if h & 4:
            objvec_push(&self.strings, s)
        return s

    cdef object read_elem(self, int kind):
        if kind == K_STR:
            return self.read_str_any()
        if kind == K_INT:
            return PyLong_FromLongLong(self.get_varint64())
        if kind == K_FLOAT:
            return PyFloat_FromDouble(self.get_double())
        return self.read_any_inline()

    cdef int raise_count(self, Py_ssize_t n) except -1:
        # (check_count, inline in _core.pxd, found n too large)
        raise _error.TruncatedDataError(
                f"count {n} at offset {self.pos} exceeds what the remaining "
                f"{self.size - self.pos} byte(s) can hold")

    cdef int fill_items(self, object seq, Py_ssize_t n, int kind) except -1:
        """Read n items of the given kind into a presized list or tuple that nobody
        else can see yet."""
        cdef PyObject** items = PySequence_Fast_ITEMS(seq)
        cdef PyObject* r
        cdef Py_ssize_t i
        cdef object o
        cdef double d
        # (ints and floats: the new reference goes into the item array as it is, no
        # reference count round trip; a NULL leaves the error set and the rest NULL)
        if kind == K_INT:
            for i in range(n):
                r = PyLong_FromLongLong_raw(self.get_varint64())
                if r == NULL:
                    return -1
                items[i] = r
        elif kind == K_FLOAT:
            self.check_count(n, 8)
            for i in range(n):
                memcpy(&d, self.data + self.pos, 8)
                self.pos += 8
                r = PyFloat_FromDouble_raw(d)
                if r == NULL:
                    return -1
                items[i] = r
        elif kind == K_STR:
            for i in range(n):
                o = self.read_str_any()
                Py_INCREF(o)
                items[i] = <PyObject*>o
        elif kind == K_ANY:
            for i in range(n):
                o = self.read_any()
                Py_INCREF(o)
                items[i] = <PyObject*>o
        elif kind == K_OBJECT:
            # the objects' serializers run user code: keep the half-filled sequence out
            # of gc's sight (gc.get_objects) until it is full
            PyObject_GC_UnTrack(<PyObject*>seq)
            self.read_same_objects(seq, n, False)
            PyObject_GC_Track(<PyObject*>seq)
        else:
            raise MalformedDataError(f"bad element kind {kind} at offset {self.pos - 1}")
        return 0

    cdef int read_same_objects(self, object seq, Py_ssize_t n, bint append) except -1:
        """Items written by WriteContext.write_same_objects: appended to the list `seq`,
        or stored into the presized list/tuple `seq`."""
        cdef TypeInfo info = self.read_type_info()
        cdef Serializer ser = info.serializer
        cdef bint track
        cdef uint64_t marker = 0
        cdef Py_ssize_t i, start
        cdef PyObject** items = NULL
        if ser is None:
            raise MalformedDataError(f"{info.cls!r} has no serializer for instances (offset {self.pos})")
        self.add_graph(n * OBJECT_BYTES)
        track = self.ref or ser.track_identity
        if not append:
            items = PySequence_Fast_ITEMS(seq)
        for i in range(n):
            start = self.pos
            if track:
                marker = self.get_varuint64()
            if marker >= 2:
                obj = self.get_ref(<Py_ssize_t>min(marker - 2, <uint64_t>0x7FFFFFFFFFFFFFFF))
            else:
                self.enter()
                obj = ser.read(self)
                if marker == 1:
                    obj = self.read_any()       # the back-reference that replaces it
                else:
                    if track:
                        objvec_push(&self.refs, obj)
                    if ser.has_state:
                        ser.read_state(self, obj)
                self.depth -= 1
                if self.pos == start:
                    # an item that took no input (Ellipsis, an empty object): n of them
                    # cost nothing to claim, so their number has its own budget
                    self.unbacked += 1
                    if self.unbacked > self.max_unbacked:
                        self.raise_unbacked()
            if append:
                seq.append(obj)
            else:
                Py_INCREF(obj)
                items[i] = <PyObject*>obj
        return 0

    cdef object read_list(self, bint discard):
        cdef Py_ssize_t n = self.get_length()
        if n == 0:
            return self.read_list_items(0, K_ANY)
        return self.read_list_items(n, self.get_u8())

    cdef object read_list_items(self, Py_ssize_t n, int kind):
        """A list of n items of the given kind (n and kind read by the caller)."""
        cdef Py_ssize_t base
        cdef list lst
        self.check_seq_count(n)
        self.add_graph(LIST_BYTES + n * ITEM_BYTES)
        if n == 0:
            lst = []
            if self.ref:
                objvec_push(&self.refs, lst)
            return lst
        self.enter()
        if (kind == K_ANY or kind == K_OBJECT) and self.ref:
            # registered before its items, which may refer back to it: an item sees
            # it empty (as in pickle: EMPTY_LIST, MEMOIZE, items, APPENDS)
            lst = []
            objvec_push(&self.refs, lst)
            if kind == K_OBJECT:
                self.read_same_objects(lst, n, True)
            else:
                base = self.stack_read_any(n)
                self.stack_extend_list(lst, base, n)
        else:
            # without ref tracking, or packed items (they register nothing): the list
            # is registered after its items, which keeps the same reference numbering
            lst = self.read_items(n, kind, False)
            if self.ref:
                objvec_push(&self.refs, lst)
        self.depth -= 1
        return lst

    cdef object read_tuple(self, bint discard):
        cdef Py_ssize_t n = self.get_length()
        if n == 0:
            return self.read_tuple_items(0, K_ANY, discard)
        return self.read_tuple_items(n, self.get_u8(), discard)

    cdef object read_tuple_items(self, Py_ssize_t n, int kind, bint discard):
        """A tuple of n items of the given kind (n and kind read by the caller)."""
        cdef tuple tup
        self.check_seq_count(n)
        self.add_graph(TUPLE_BYTES + n * ITEM_BYTES)
        if n == 0:
            tup = ()
        else:
            self.enter()
            tup = <tuple>self.read_items(n, kind, True)
            self.depth -= 1
        if discard:
            return self.read_any()
        if self.ref:
            objvec_push(&self.refs, tup)
        return tup

    cdef object read_dict(self):
        cdef Py_ssize_t n = self.get_length()
        cdef int kinds, kk, vk
        if n == 0:
            return self.read_dict_items(0, K_ANY, K_ANY)
        self.check_count(n, 2)
        kinds = self.get_u8()
        kk = kinds & 15
        vk = kinds >> 4
        if (kk != K_ANY and kk != K_STR) or (vk != K_ANY and vk != K_STR and vk != K_INT and vk != K_FLOAT):
            raise MalformedDataError(f"bad dict kinds {kinds} at offset {self.pos - 1}")
        return self.read_dict_items(n, kk, vk)

    cdef object read_dict_items(self, Py_ssize_t n, int kk, int vk):
        """A dict of n pairs, keys of kind kk and values of kind vk (read by the
        caller, or given by the tag)."""
        cdef Py_ssize_t i
        cdef dict d
        cdef KeyGuard guard = None
        cdef bint plain, cached
        self.check_count(n, 2)
        self.add_graph(DICT_BYTES + n * DICT_ITEM_BYTES)
        d = _PyDict_NewPresized(n)
        if self.ref:
            objvec_push(&self.refs, d)
        if n == 0:
            return d
        self.enter()
        # the keys of small dicts through the key cache (read_key)
        cached = n <= KEY_CACHE_MAX_DICT and not self.ref
        if kk == K_STR and vk == K_STR:
            for i in range(n):
                key = self.read_key_any(cached)
                PyDict_SetItem(d, key, self.read_str_any())
        elif kk == K_STR and vk == K_ANY:
            # (records, messages: read_any_inline here, not through read_elem's call)
            for i in range(n):
                key = self.read_key_any(cached)
                PyDict_SetItem(d, key, self.read_any_inline())
        elif kk == K_STR:
            for i in range(n):
                key = self.read_key_any(cached)
                PyDict_SetItem(d, key, self.read_elem(vk))
        else:
            for i in range(n):
                plain = self.next_is_plain_key()
                key = self.read_any_inline()
                value = self.read_elem(vk)
                if plain or plain_key(key):
                    PyDict_SetItem(d, key, value)
                else:
                    if guard is None:
                        guard = KeyGuard(self, n - i)
                    # the guard hashed the key: the dict takes that hash
                    _PyDict_SetItem_KnownHash(d, key, value, guard.add(key))
        self.depth -= 1
        return d

    cdef object read_setlike(self, int tag, bint discard):
        cdef Py_ssize_t n = self.get_length(), i
        cdef int kind
        cdef list items
        cdef KeyGuard guard = None
        cdef bint plain
        self.check_count(n, 1)
        self.add_graph(SET_BYTES + n * SET_ITEM_BYTES)
        if tag == T_SET:
            s = set()
            if self.ref:
                objvec_push(&self.refs, s)
            if n == 0:
                return s
        elif n == 0:
            fs = frozenset()
            if discard:
                return self.read_any()
            if self.ref:
                objvec_push(&self.refs, fs)
            return fs
        self.enter()
        kind = self.get_u8()
        if kind != K_ANY and kind != K_STR:
            raise MalformedDataError(f"bad element kind {kind} at offset {self.pos - 1}")
        if tag == T_SET:
            for i in range(n):
                plain = kind != K_ANY or self.next_is_plain_key()
                item = self.read_elem(kind)
                if not plain and not plain_key(item):
                    if guard is None:
                        guard = KeyGuard(self, n - i)
                    guard.add(item)
                s.add(item)
            self.depth -= 1
            return s
        items = self.read_items(n, kind, False)
        if kind == K_ANY:
            for item in items:
                if not plain_key(item):
                    if guard is None:
                        guard = KeyGuard(self, n)
                    guard.add(item)
        self.depth -= 1
        fs = frozenset(items)
        if discard:
            return self.read_any()
        if self.ref:
            objvec_push(&self.refs, fs)
        return fs

    cdef object read_object(self, bint discard):
        cdef TypeInfo info = self.read_type_info()
        cdef Serializer ser = info.serializer
        if ser is None:
            raise MalformedDataError(f"{info.cls!r} has no serializer for instances (offset {self.pos})")
        self.add_graph(OBJECT_BYTES)
        self.enter()
        obj = ser.read(self)
        if discard:
            # the same object follows as a back-reference (see WriteContext.write_other)
            self.depth -= 1
            return self.read_any()
        if self.ref or ser.track_identity:
            objvec_push(&self.refs, obj)
        if ser.has_state:
            ser.read_state(self, obj)
        self.depth -= 1
        return obj

    cdef TypeInfo read_type_info(self):
        cdef uint64_t h = self.get_varuint64()
        cdef uint64_t kind
        cdef int wire_kind
        cdef TypeInfo info
        cdef Serializer ser
        cdef Py_ssize_t slot
        if h & 1:
            h >>= 1
            if h >= <uint64_t>PyList_GET_SIZE(self.types):
                raise MalformedDataError(f"reference to type #{h} not yet seen (offset {self.pos})")
            return <TypeInfo>PyList_GET_ITEM(self.types, h)
        kind = h >> 1
        wire_kind = self.get_u8() if kind != D_INTERNAL else -1
        if kind == D_INTERNAL:
            info = self.resolver.internal_typeinfo(self.get_varuint64())
        elif kind == D_USER_ID:
            info = self.resolver.typeinfo_by_id(self.get_varuint64())
        elif kind == D_NAME:
            module = self.read_str_any()
            qualname = self.read_str_any()
            info = self.resolver.typeinfo_by_name(module, qualname)
        elif kind == D_USER_NAME:
            info = self.resolver.typeinfo_by_registered_name(self.read_str_any())
        elif kind == D_BY_VALUE:
            self.enter()
            info = self.resolver.read_class_skeleton(self)
            self.depth -= 1
        else:
            raise MalformedDataError(f"unknown type kind {kind} at offset {self.pos}")
        if wire_kind >= 0 and wire_kind != info.wire_kind:
            raise _error.SchemaMismatchError(
                f"{info.cls!r} was written by a {WIRE_KIND_NAMES.get(wire_kind, wire_kind)} "
                f"serializer but this side uses a {WIRE_KIND_NAMES.get(info.wire_kind, info.wire_kind)} "
                "serializer: the class differs between writer and reader")
        slot = PyList_GET_SIZE(self.types)
        self.types.append(info)
        if self.policy is not None:
            # internal ids too: a policy sees every class a payload names, however named;
            # the code carriers (a function, method, class... is about to be made) go to
            # authorize_instantiation, as pyfory's guide has it, the others to validate_*
            if kind == D_INTERNAL and info.cls in _CODE_CARRIERS:
                self.policy.authorize_instantiation(info.cls, args=(), kwargs=None)
            elif kind == D_INTERNAL and info.cls in _CODE_WRAPPERS:
                pass    # the function it wraps reaches validate_function
            else:
                if kind == D_INTERNAL:
                    self.policy.validate_module(getattr(info.cls, "__module__", "builtins"), is_local=False)
                self.policy.validate_class(info.cls, is_local=kind == D_BY_VALUE)
        if kind == D_BY_VALUE:
            self.enter()
            info.by_value.read_state(self, info.cls)
            self.depth -= 1
        ser = info.serializer
        if ser is not None and ser.has_type_meta:
            # (reading the state or the meta may have added types after this one's slot)
            info = info.with_serializer(ser.read_type_meta(self))
            self.types[slot] = info
        return info

    # -- Python-visible API for serializers --
    def read_value(self):
        """Read a nested value written with WriteContext.write_value."""
        return self.read_any()

    def read_ref(self):
        """Read any value written with WriteContext.write_ref / write_any."""
        return self.read_any()

    read_no_ref = read_ref

    def read_str_ref(self):
        return self.read_str_any()

    def read_buffer(self):
        """Binary data written with WriteContext.write_buffer: a flat memoryview of
        the out-of-band buffer the caller passed (zero copy), or a bytearray copied
        out of the payload."""
        data = self.read_buffer_body(True)
        if type(data) is bytearray:
            return data
        return _as_view(data)

    def read_buffer_view(self):
        """Binary data written with WriteContext.write_buffer, without a copy:
        `(view, in_band)`. Out of band, `view` is a flat memoryview of the buffer the
        caller passed (as read_buffer gives). In band it is a read-only memoryview of
        the payload's own bytes, for a serializer that copies them into memory it
        allocates itself (one copy instead of two, or a faster allocator)."""
        cdef Py_ssize_t start = self.pos
        cdef uint64_t h = self.get_varuint64()
        cdef uint64_t n = h >> 1
        if h & 1:
            self.pos = start
            return _as_view(self.read_buffer_body(True)), False
        if n > <uint64_t>(self.size - self.pos):
            self.raise_truncated(<Py_ssize_t>min(n, <uint64_t>0x7FFFFFFFFFFFFFFF))
        start = self.pos
        self.pos += <Py_ssize_t>n
        whole = memoryview(self.source)
        if whole.format != "B" or whole.ndim != 1:
            whole = whole.cast("B")
        return whole[start:start + <Py_ssize_t>n].toreadonly(), True

    def key_guard(self):
        """For serializers that fill a dict or set from the payload: a KeyGuard whose
        check(key) is called before each insert (hash bombs, colliding keys)."""
        return KeyGuard(self)
    def check_type_meta(self, owner, Py_ssize_t fields, Py_ssize_t nbytes):
        """For serializers that read type metadata (a layout or schema of the class that
        `owner`, the serializer, handles) from the payload: count it against the Fory's max_type_fields,
        max_type_meta_bytes, max_schema_versions_per_type and
        max_average_schema_versions_per_type (LimitExceededError past one)."""
        cdef Fory fory = <Fory>self.fory
        if fory.max_type_fields is not None and fields > fory.max_type_fields:
            raise _error.LimitExceededError(
                f"type metadata with {fields} fields (max_type_fields={fory.max_type_fields})")
        if fory.max_type_meta_bytes is not None and nbytes > fory.max_type_meta_bytes:
            raise _error.LimitExceededError(
                f"type metadata of {nbytes} bytes (max_type_meta_bytes={fory.max_type_meta_bytes})")
        if self.scratch is None:
            self.scratch = {}
        counts = self.scratch.get(_TYPE_META_COUNTS)
        if counts is None:
            counts = self.scratch[_TYPE_META_COUNTS] = {}
        versions = counts.get(owner, 0) + 1
        counts[owner] = versions
        if fory.max_schema_versions_per_type is not None and versions > fory.max_schema_versions_per_type:
            raise _error.LimitExceededError(
                f"{versions} versions of the metadata of one type in one payload "
                f"(max_schema_versions_per_type={fory.max_schema_versions_per_type})")
        if fory.max_average_schema_versions_per_type is not None:
            total = counts.get(_TYPE_META_COUNTS, 0) + 1
            counts[_TYPE_META_COUNTS] = total
            # pyfory's floor: 8192 in all, whatever the number of types
            if total > max(SCHEMA_TOTAL_FLOOR,
                           fory.max_average_schema_versions_per_type * (len(counts) - 1)):
                raise _error.LimitExceededError(
                    f"{total} type metadata versions for {len(counts) - 1} types in one payload "
                    f"(max_average_schema_versions_per_type={fory.max_average_schema_versions_per_type})")

    def check_hash_key(self, key):
        """For serializers: call before hashing a key read from the payload (a dict key,
        a set element, an enum value), so that its cost counts against max_hash_work."""
        self.check_key(key)

    def count_container(self, Py_ssize_t n, bint mapping):
        """For serializers: call before making a dict-like (`mapping`) or set-like
        container of n items that the payload asked for, so that its memory counts
        against max_graph_memory_bytes as the core's own dicts and sets do."""
        if mapping:
            self.add_graph(DICT_BYTES + n * DICT_ITEM_BYTES)
        else:
            self.add_graph(SET_BYTES + n * SET_ITEM_BYTES)

    def read_type(self):
        """A class object written with WriteContext.write_type."""
        return self.read_class()

    cdef object read_class(self):
        cdef int tag = self.get_u8()
        if tag != T_TYPE:
            raise MalformedDataError(f"expected a class at offset {self.pos - 1}")
        return self.read_type_info().cls

    def reference(self, obj):
        """Register obj for back-references now (used by two-phase serializers that
        build their object in `read` and must let `read_state` refer to it)."""
        objvec_push(&self.refs, obj)

    @property
    def ref_tracking(self):
        return self.ref



# ---- the public entry point ----------------------------------------------------------
_DEFAULT = object()


def _budget(name, value, int minimum):
    if value is None and name != "max_unbacked_container_items":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}"
                         + ("" if name == "max_unbacked_container_items" else " or None"))
    return min(value, 0x7FFFFFFFFFFFFFFF)


cdef object _unread_bytes(Buffer b):
    # loads(Buffer): a Buffer being written holds one payload (what dumps(obj, buffer=)
    # appended); one being read gives its unread bytes, which are then consumed
    cdef Py_ssize_t start = b.pos
    if b.owns_data or b.source is None:
        return b.getvalue_bytes()
    b.pos = b.size
    view = memoryview(b.source)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view[start:]


def _register_on(Fory fory, cls, type_id, name, serializer, namespace, typename):
    cdef TypeInfo known
    if typename is not None or namespace is not None:
        if name is not None:
            raise ValueError("give name, or namespace and typename, not both")
        if typename is None:
            typename = cls.__name__
        name = f"{namespace}.{typename}" if namespace else typename
    if type_id is None and name is None and serializer is None and isinstance(cls, type):
        known = fory._type_cache.get(cls)
        if known is not None and known.kind == D_INTERNAL and cls not in fory.resolver._registered:
            # a type the core serializes itself (function, type, method, ...: pyfory's
            # "carriers"): nothing to install; strict mode keeps refusing the unsafe ones
            return known
    if serializer is not None and not isinstance(serializer, (Serializer, type)) and callable(serializer):
        serializer = serializer(fory.resolver, cls)     # a factory(type_resolver, cls)
    return fory.resolver.register(cls, type_id=type_id, name=name, serializer=serializer)


cdef class Fory:
    """Serializer for Python objects (Python native mode).

    Fory(xlang=False, ref=False, strict=True, compatible=None, max_depth=50, policy=None,
         *, max_graph_memory_bytes=..., max_unbacked_container_items=8192, max_hash_work=None)

    - ref: track shared and circular references (like pickle's memo). Off is faster;
      a cycle then fails with a DepthLimitError.
    - strict: only builtin and registered classes may be read or written. Turn off
      (trusted data only) to serialize arbitrary objects, functions and classes.
    - compatible: objects carry their field names once per payload, so readers with
      another version of the class still load them (default on).
    - max_depth: maximum nesting of containers and objects, on write and on read.
    - policy: a DeserializationPolicy whose hooks see every class, function and
      reduce call a payload asks for.

    Budgets of one loads, so that work and memory stay proportional to the input
    (each raises LimitExceededError, docs/security.md):

    - max_graph_memory_bytes: approximate memory of the containers and objects a
      payload makes (128 MiB by default when strict; None, no cap, with strict=False).
    - max_unbacked_container_items: items of a container that take no input bytes
      (instances of a class whose serializer writes nothing, such as Ellipsis);
      default 8192, 0 allows none.
    - max_hash_work: nodes that hashing set elements and dict keys may visit when
      the payload shares objects (ref=True), plus the comparisons that keys sharing one
      hash value cost when inserted; default 64 per input byte + 2**20.

    One Fory is not meant to be used by two threads at once (see ThreadSafeFory);
    if that happens, or a serializer calls back into the same Fory, a fresh context
    is used so the result is still correct.
    """

    def __init__(self, xlang=False, ref=False, strict=True, compatible=None, max_depth=50,
                 policy=None, *, max_graph_memory_bytes=_DEFAULT, max_unbacked_container_items=DEFAULT_MAX_UNBACKED,
                 max_hash_work=None, max_type_fields=_DEFAULT, max_type_meta_bytes=_DEFAULT,
                 max_schema_versions_per_type=_DEFAULT, max_average_schema_versions_per_type=_DEFAULT,
                 field_nullable=False, meta_compressor=None):
        if xlang:
            raise NotImplementedError(
                "pyfory implements only Python native mode: use Fory(xlang=False); "
                "cross-language (xlang=True) serialization is not implemented")
        if max_depth < 1 or max_depth > MAX_DEPTH_CAP:
            raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_CAP}")
        self.ref = bool(ref)
        self.strict = bool(strict)
        self.compatible = True if compatible is None else bool(compatible)
        self.max_depth = max_depth
        self.policy = policy
        if max_graph_memory_bytes is _DEFAULT:
            # a strict reader gets a gate; strict=False has pickle's trust model and,
            # like pickle, no cap beyond the input's own size
            max_graph_memory_bytes = DEFAULT_MAX_GRAPH_MEMORY if self.strict else None
        self.max_graph_memory_bytes = _budget("max_graph_memory_bytes", max_graph_memory_bytes, 1)
        self.max_unbacked_container_items = _budget(
            "max_unbacked_container_items", max_unbacked_container_items, 0)
        self.max_hash_work = _budget("max_hash_work", max_hash_work, 0)
        # pyfory's limits on received type metadata, with its defaults when strict (like
        # the graph memory budget, none with strict=False: pickle's trust model)
        for name, value, default in (
                ("max_type_fields", max_type_fields, 512),
                ("max_type_meta_bytes", max_type_meta_bytes, 4096),
                ("max_schema_versions_per_type", max_schema_versions_per_type, 10),
                ("max_average_schema_versions_per_type", max_average_schema_versions_per_type, 3)):
            if value is _DEFAULT:
                value = default if self.strict else None
            setattr(self, name, _budget(name, value, 1))
        self.field_nullable = bool(field_nullable)
        if meta_compressor is not None:
            raise NotImplementedError(
                "meta_compressor is not implemented: type metadata is written once per payload, "
                "with repeated names as string-table references")
        self.oob_threshold = OOB_THRESHOLD
        self._type_cache = {}
        from pyfory.resolver import TypeResolver
        self.resolver = TypeResolver(self)
        self._wctx = WriteContext(self)
        self._rctx = ReadContext(self)

    def __reduce__(self):
        raise TypeError("a Fory instance cannot be serialized; create one on each side")

    def register_type(self, cls, *, type_id=None, name=None, serializer=None,
                      namespace=None, typename=None):
        """Allow `cls` in strict mode and choose how it is named and serialized.

        type_id: a small integer naming the class on the wire (both sides must agree);
        name: a string naming it instead (or pyfory's `namespace` + `typename`, joined
        with a dot); neither: module and qualified name.
        serializer: a Serializer instance, a Serializer subclass or a factory called
        as `factory(fory.type_resolver, cls)`; it wins over every builtin rule.
        """
        return _register_on(self, cls, type_id, name, serializer, namespace, typename)

    def register(self, cls, type_id=None, name=None, serializer=None, *,
                 namespace=None, typename=None):
        """register_type (type_id, name and serializer may also be given by position)."""
        return _register_on(self, cls, type_id, name, serializer, namespace, typename)

    def register_serializer(self, cls, serializer):
        """Serialize cls with `serializer`, keeping the name or id it was registered
        under (registering it by module and qualified name if it was not)."""
        cdef TypeInfo info = self.resolver._registered.get(cls) if isinstance(cls, type) else None
        if info is not None and info.kind == D_USER_ID:
            return _register_on(self, cls, info.type_id, None, serializer, None, None)
        if info is not None and info.kind == D_USER_NAME:
            return _register_on(self, cls, None, info.name, serializer, None, None)
        return _register_on(self, cls, None, None, serializer, None, None)

    @property
    def type_resolver(self):
        """The registry (what a guide-style `Serializer(type_resolver, cls)` takes)."""
        return self.resolver

    def dumps(self, obj, buffer=None, buffer_callback=None, unsupported_callback=None):
        """Serialize obj to bytes.

        buffer: a pyfory.Buffer to append the payload to (it is then returned instead
        of bytes). buffer_callback: as pickle's (protocol 5 out-of-band buffers).
        unsupported_callback: called with each object this Fory cannot serialize (a
        class not registered in strict mode, one the resolver refuses); a falsy result
        keeps the object out of the payload, to be handed back in order as
        `loads(..., unsupported_objects=[...])`; a true result raises as without it."""
        if buffer is not None and not isinstance(buffer, Buffer) and callable(buffer):
            # dumps(obj, callback): buffer_callback given by position, as before
            buffer, buffer_callback = None, buffer
        payload = self.dumps_into(obj, buffer_callback, None, 0, unsupported_callback)
        if buffer is None:
            return payload
        (<Buffer>buffer).write_bytes(payload)
        return buffer

    cdef object dumps_plain(self, obj):
        # dumps(obj) without options: the usual call, kept short (~10 ns less than
        # dumps_into). Reached from Python through _dumps_plain (see
        # pyfory_install_dumps_entry, which raises what dumps raises for its errors:
        # they come out of here unconverted). A call of dumps with options or keywords
        # goes to dumps_into, which converts its own.
        cdef WriteContext ctx = self._wctx
        if ctx.in_use:
            return self.dumps_into(obj, None, None, 0, None)
        begin_write(ctx)
        try:
            if self.ref:
                ctx.put_u8(HEADER_BASE | F_REF)
            ctx.body_start = ctx.pos
            if type(obj) is dict and ctx.overrides is None:
                # the usual message: straight to the dict writer, past write_any's
                # checks of the atom types (~30 instructions of a 3-key dict's ~730)
                ctx.write_dict(<dict>obj)
            else:
                ctx.write_any(obj)
            return ctx.finish()
        finally:
            end_write(ctx)

    @cython.always_allow_keywords(False)    # (METH_O: one argument, no parsing)
    def _dumps_plain(self, obj):
        """dumps(obj), one argument: what a call of dumps with one argument runs, through
        an entry that also converts its errors (not meant to be called by name)."""
        return self.dumps_plain(obj)

    def reset(self):
        """Drop the per-call state of an interrupted call (each call starts clean by
        itself; kept for code written against pyfory's API)."""
        self.reset_write()
        self.reset_read()

    def reset_write(self):
        """Drop the write state left by an interrupted dumps."""
        if not self._wctx.in_use:
            self._wctx.end()

    def reset_read(self):
        """Drop the read state left by an interrupted loads."""
        if not self._rctx.in_use:
            self._rctx.end()

    def dumps_with_buffers(self, obj, Py_ssize_t min_size=OOB_THRESHOLD) -> list:
        """Serialize obj, leaving its binary buffers of at least min_size bytes out of
        band: returns [payload, buffer, ...], each buffer a flat memoryview of the
        original memory (not a copy). Read it back with loads(out[0], buffers=out[1:]).
        The frames of a multipart message, without a buffer_callback to write."""
        frames = [None]        # the buffers are appended while the payload is written
        frames[0] = self.dumps_into(obj, None, frames, min_size, None)
        return frames

    cdef object dumps_into(self, obj, buffer_callback, list views, Py_ssize_t min_size,
                           unsupported_callback):
        # dumps, or with `views`, dumps_with_buffers
        cdef WriteContext ctx = self._wctx
        cdef uint8_t flags = 0
        if ctx.in_use:
            ctx = WriteContext(self)
        ctx.begin()
        try:
            if unsupported_callback is not None:
                ctx.unsupported_callback = unsupported_callback
            if views is not None:
                # buffers are offered as to a callback (buffer_callback only has to be
                # set), and write_buffer_body appends them to oob_views instead of calling
                ctx.buffer_callback = views
                ctx.oob_views = views
                ctx.oob_view_min = min_size
            elif buffer_callback is not None:
                ctx.buffer_callback = buffer_callback
            # the header byte only when the payload has flags; otherwise the value is
            # the payload
            if self.ref:
                ctx.put_u8(HEADER_BASE | F_REF)
            ctx.body_start = ctx.pos
            ctx.write_any(obj)
            if ctx.oob_count:
                if not self.ref:
                    # (buffers went out of band: the header goes in front, once)
                    ctx.reserve(1)
                    memmove(ctx.data + 1, ctx.data, ctx.pos)
                    ctx.pos += 1
                    ctx.data[0] = HEADER_BASE
                ctx.data[0] |= F_OOB
            return ctx.finish()
        except (ForyError, RecursionError) as e:
            failure = _dumps_failure(e)
            if failure is e:
                raise
            raise failure from e
        finally:
            ctx.end()

    serialize = dumps

    def loads(self, data, buffers=None, unsupported_objects=None):
        """Deserialize a value from bytes, bytearray, memoryview or any buffer object
        (read in place, not copied), or from a pyfory.Buffer (its unread bytes: one
        payload). `buffers`: the out-of-band buffers, in order. `unsupported_objects`:
        the objects that dumps' unsupported_callback kept out of the payload, in order."""
        cdef ReadContext ctx = self._rctx
        cdef uint8_t flags
        if buffers is not None:
            buffers = list(buffers)
        if type(data) is not bytes and isinstance(data, Buffer):
            data = _unread_bytes(<Buffer>data)
        if ctx.in_use:
            ctx = ReadContext(self)
        ctx.begin(data)
        try:
            if unsupported_objects is not None:
                ctx.unsupported_objects = iter(unsupported_objects)
            if ctx.size == 0:
                raise _error.TruncatedDataError("empty payload: no value")
            flags = 0
            if (ctx.data[0] & 0xF0) == HEADER_BASE:
                flags = ctx.data[0] & 0x0F
                if flags & ~F_KNOWN:
                    raise FormatError(
                        f"payload header byte {ctx.data[0]:#04x} is not one of this pyfory's "
                        f"(format version {FORMAT_VERSION}): written by a later version?")
                ctx.pos = 1
            elif ctx.size >= 4 and ctx.data[0] == 0xFD and ctx.data[1] == 0x59:
                raise FormatError(
                    f"payload has pyfory format version {ctx.data[2]}; this pyfory "
                    f"reads version {FORMAT_VERSION}")
            elif not is_value_tag(ctx.data[0]):
                raise FormatError(
                    f"not a pyfory payload: it starts with byte {ctx.data[0]:#04x}, which "
                    "is neither a header nor a value tag"
                    + (" (it looks like a pickle)" if ctx.data[0] == 0x80 else ""))
            ctx.ref = (flags & F_REF) != 0
            if (flags & F_OOB) and buffers is None:
                raise _error.OutOfBandBufferError(
                    "the payload has out-of-band buffers: pass them as loads(data, buffers=[...])")
            if buffers is not None:
                ctx.buffers = buffers
            obj = ctx.read_any()
            if ctx.pos != ctx.size:
                raise MalformedDataError(
                    f"{ctx.size - ctx.pos} unexpected byte(s) after the value at offset {ctx.pos}")
            return obj
        except ForyError as e:
            _on_side(e, True)       # also a pickle.UnpicklingError
            raise
        except RecursionError as e:
            raise _on_side(DepthLimitError(f"payload nests too deeply: {e}"), True) from e
        except Exception as e:
            # a policy hook's own rejection reaches the caller as itself
            if self.policy is not None:
                hooked = _hook_exception(self.policy, e)
                if hooked is e:
                    raise
                if hooked is not None:
                    raise hooked
            # whatever a constructor, __setstate__ or reduce callable raised (the
            # original stays visible as __cause__)
            raise _error.DeserializationError(
                f"failed to rebuild an object from the payload: {type(e).__name__}: {e}") from e
        finally:
            ctx.end()

    deserialize = loads

    def dump(self, obj, stream):
        """Write obj to a binary file-like object (length-prefixed, so several values
        can follow each other)."""
        payload = self.dumps(obj)
        stream.write(encode_length(len(payload)))
        stream.write(payload)

    def load(self, stream):
        """Read one value written by `dump` from a binary file-like object.
        Raises EOFError at the end of the stream."""
        return self.loads(read_framed(stream))


cdef object _dumps_failure(e):
    """The error dumps raises for `e`: a ForyError, now also a pickle.PicklingError, or
    for a RecursionError a DepthLimitError (Python-level serializers nest Python frames,
    and so does an object whose attribute lookup recurses without end)."""
    if isinstance(e, ForyError):
        return _on_side(e, False)
    return _on_side(DepthLimitError(
        f"serializing needs deeper recursion than the interpreter allows ({e}): the "
        "value nests too deeply, or looking up an attribute of an object in it "
        "recurses without end"), False)


def encode_length(Py_ssize_t n):
    cdef uint8_t out[10]
    cdef int i = 0
    cdef uint64_t v = n
    while v >= 0x80:
        out[i] = <uint8_t>(v | 0x80)
        v >>= 7
        i += 1
    out[i] = <uint8_t>v
    return PyBytes_FromStringAndSize(<char*>out, i + 1)


# reading a length-prefixed payload: never trust the length for allocation
cdef Py_ssize_t STREAM_CHUNK = 1 << 20


def read_framed(stream):
    cdef uint64_t n = 0
    cdef int shift = 0
    cdef int b
    while True:
        c = stream.read(1)
        if not c:
            if shift == 0:
                raise EOFError("end of stream")
            raise _error.TruncatedDataError("stream ended inside a length prefix")
        b = c[0]
        if shift == 63 and b > 1:
            raise MalformedDataError("bad length prefix in stream")
        n |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            break
        shift += 7
    parts = []
    cdef uint64_t got = 0
    while got < n:
        want = min(n - got, <uint64_t>STREAM_CHUNK)
        chunk = stream.read(want)
        if not chunk:
            raise _error.TruncatedDataError(
                f"stream ended after {got} of {n} payload bytes")
        parts.append(chunk)
        got += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


cdef inline int write_atom(WriteContext ctx, PyObject* obj, PyObject* t) except -1:
    """1 after writing obj when it is an atom (str, int, float, None, bool: no user
    code runs), else 0. Borrowed pointers: the caller holds obj. A function, not a
    method, so that the C compiler may inline it into the item loops (Cython ignores
    `inline` on methods)."""
    cdef double d
    cdef float f
    if t == <PyObject*>str:
        write_str_value(ctx, <str>obj)
    elif t == <PyObject*>int:
        write_int_value(ctx, <object>obj)
    elif t == <PyObject*>float:
        d = PyFloat_AS_DOUBLE(<object>obj)
        ctx.reserve(9)
        if fabs(d) <= FLT_MAX and <double>(<float>d) == d:
            # exact in 4 bytes (0.5, 2.25, whole numbers, ...); nan stays 8 bytes
            f = <float>d
            ctx.data[ctx.pos] = T_FLOAT32
            memcpy(ctx.data + ctx.pos + 1, &f, 4)
            ctx.pos += 5
        else:
            ctx.data[ctx.pos] = T_FLOAT
            memcpy(ctx.data + ctx.pos + 1, &d, 8)
            ctx.pos += 9
    elif obj == <PyObject*>None:
        ctx.put_u8(T_NONE)
    elif t == <PyObject*>bool:
        ctx.put_u8(T_TRUE if <object>obj is True else T_FALSE)
    else:
        return 0
    return 1


cdef inline int write_nonatom(WriteContext ctx, object obj, type t) except -1:
    # write_any past the atoms (and past the overrides, which the caller checked)
    if t is dict:
        return ctx.write_dict(<dict>obj)
    if t is list:
        return ctx.write_list(<list>obj)
    if t is tuple:
        return ctx.write_tuple(<tuple>obj)
    return ctx.write_other(obj, t)


cdef inline int write_str_value(WriteContext ctx, str s) except -1:
    cdef Py_ssize_t n
    if ctx.ref:
        ctx.put_u8(T_STR)
        return ctx.write_str_dedup(s)
    n = PyUnicode_GET_LENGTH(s)
    if n <= FIX_STR_MAX and PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND:
        # short ASCII/Latin-1: the tag carries the length
        ctx.reserve(1 + FIX_STR_MAX)
        ctx.data[ctx.pos] = <uint8_t>(FIX_STR + n)
        copy_bytes(ctx.data + ctx.pos + 1, PyUnicode_DATA(s), n)
        ctx.pos += 1 + n
        return 0
    ctx.put_u8(T_STR)
    return ctx.put_str(s, 0)


cdef inline int write_int_value(WriteContext ctx, object obj) except -1:
    cdef int overflow = 0
    cdef long long v = pyfory_int_value(obj, &overflow)
    if overflow:
        ctx.put_u8(T_BIGINT)
        return ctx.write_bigint_body(obj)
    ctx.reserve(11)
    if FIX_INT_MIN <= v <= FIX_INT_MAX:
        ctx.data[ctx.pos] = <uint8_t>(FIX_INT_ZERO + v)
        ctx.pos += 1
        return 0
    ctx.data[ctx.pos] = T_INT
    ctx.pos += 1
    ctx.put_varuint64_unchecked((<uint64_t>v << 1) ^ <uint64_t>(v >> 63))
    return 0


cdef inline int put_short_str(WriteContext ctx, PyObject* s) except -1:
    # put_str(s, 0), with the usual dict key (1-byte kind, under 16 bytes: a one-byte
    # string header) inline
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(<object>s)
    if n >= 16 or PyUnicode_KIND(<object>s) != PyUnicode_1BYTE_KIND:
        return ctx.put_str(<str>s, 0)
    ctx.reserve(17)
    ctx.data[ctx.pos] = <uint8_t>(n << 3)
    copy_bytes(ctx.data + ctx.pos + 1, PyUnicode_DATA(<object>s), n)
    ctx.pos += 1 + n
    return 0


cdef inline int begin_write(WriteContext ctx) except -1:
    # (WriteContext.begin; a function so that dumps inlines it)
    global _payload_counter
    _payload_counter += 1
    ctx.gen = _payload_counter
    ctx.ntypes = 0
    ctx.depth = 0
    ctx.oob_count = 0
    # C fields of the Fory (typed access: no attribute lookup per call)
    ctx.oob_threshold = (<Fory>ctx.fory).oob_threshold
    if ctx.overrides is not (<Fory>ctx.fory)._builtin_overrides:
        ctx.overrides = (<Fory>ctx.fory)._builtin_overrides
    ctx.in_use = True
    # (reset_for_write, inline: a WriteContext never reads)
    if ctx.out != NULL and ctx.size > KEEP_CAPACITY:
        ctx.reset_for_write()
    ctx.pos = 0
    if ctx.out == NULL and ctx.small != NULL and ctx.size_hint <= SMALL_CAPACITY:
        # the last payload was small: write into the kept block (see Buffer.grow)
        ctx.data = ctx.small
        ctx.size = SMALL_CAPACITY
        ctx.owns_data = True
    return 0


cdef inline void end_write(WriteContext ctx) noexcept:
    # (WriteContext.end; a function so that dumps inlines it)
    if ctx.dict_cap > PTABLE_KEEP:
        # one payload had a large dict: do not keep its scratch arrays
        free(ctx.dict_keys)
        free(ctx.dict_values)
        ctx.dict_keys = ctx.dict_values = NULL
        ctx.dict_cap = 0
    if ctx.memo.count:
        ptable_clear(&ctx.memo)
    if ctx.strings.count:
        ptable_clear(&ctx.strings)
    if ctx.names is not None:
        ctx.names = None
    if ctx.buffer_callback is not None:
        ctx.buffer_callback = None
    if ctx.unsupported_callback is not None:
        ctx.unsupported_callback = None
    if ctx.oob_views is not None:
        ctx.oob_views = None
    if ctx.scratch is not None:
        ctx.scratch = None
    ctx.in_use = False


# (see pyfory_install_dumps_entry)
cdef object dumps_failure_of(object e):
    # (for pyfory_dumps_failed) the error dumps raises for the exception e
    if isinstance(e, (ForyError, RecursionError)):
        return _dumps_failure(e)
    return e


DUMPS_ENTRY_INSTALLED = pyfory_install_dumps_entry(Fory, dumps_failure_of) == 1
