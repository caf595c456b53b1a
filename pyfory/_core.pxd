# cython: language_level=3
cimport cython
from libc.stdint cimport uint8_t, int64_t, uint64_t
from cpython.object cimport PyObject
from cpython.long cimport PyLong_FromLongLong, PyLong_FromLong
from cpython.float cimport PyFloat_FromDouble
from cpython.list cimport PyList_New
from cpython.tuple cimport PyTuple_New
from pyfory._buffer cimport Buffer


# wire tags (docs/format.md)
cdef enum:
    T_NONE = 0
    T_TRUE = 1
    T_FALSE = 2
    T_INT = 3           # zigzag varint64
    T_BIGINT = 4        # varint nbytes, signed little-endian
    T_FLOAT = 5         # 8 bytes little-endian IEEE 754
    T_STR = 6           # string header + bytes
    T_BYTES = 7         # varint len + bytes
    T_LIST = 8          # varint n [kind] items
    T_TUPLE = 9
    T_DICT = 10         # varint n [key kind | value kind << 4] pairs
    T_SET = 11
    T_FROZENSET = 12
    T_BYTEARRAY = 13
    T_COMPLEX = 14      # two doubles
    T_REF = 15          # varint id: an object seen before in this payload
    T_OBJECT = 16       # type header, serializer payload
    T_TYPE = 17         # type header: a class object as a value
    T_BUFFER = 18       # buffer kind, [kind meta], buffer body (see write_buffer_body)
    T_FLOAT32 = 19      # a float that float32 holds exactly: 4 bytes little-endian
    T_SDICT = 20        # 20..23: a dict with str keys, its value kind in the tag (see
                        # sdict_tag in _core.pyx): varint n, pairs
    T_DISCARD = 0x80    # flag: read this value, drop it, the result is the next value
    # small values whose tag carries them (format version 3): n = tag - base
    FIX_LIST = 0x20     # 0x20..0x2F: a list of n items of any kind (no count, no kind byte)
    FIX_TUPLE = 0x30    # 0x30..0x3F: a tuple of n items of any kind
    FIX_DICT = 0x40     # 0x40..0x4F: a dict of n str keys, values of any kind
    FIX_MAX = 15        # the largest n of those three
    FIX_STR = 0xA0      # 0xA0..0xBF: a 1-byte-kind string of n bytes, not in the string table
    FIX_STR_MAX = 31
    FIX_INT = 0xC0      # 0xC0..0xFF: the int tag - FIX_INT_ZERO, -16..47
    FIX_INT_ZERO = 0xD0
    FIX_INT_MIN = -16
    FIX_INT_MAX = 47
    # the payload's first byte when it has flags (docs/format.md 2): 0x50 | flags;
    # 0x58..0x5F are kept for the header of a later format version
    HEADER_BASE = 0x50

# element kinds of packed containers: each item written without its tag
cdef enum:
    K_ANY = 0
    K_INT = T_INT
    K_FLOAT = T_FLOAT
    K_STR = T_STR
    K_OBJECT = T_OBJECT  # every item an instance of one class: type header once, then
                         # per item [marker when tracked] + the serializer's payload


# the reader's cache of dict key strings (ReadContext.read_key)
cdef enum:
    KEY_CACHE_SIZE = 512        # slots, a power of two
    KEY_CACHE_MAX_LEN = 32      # keys of at most this many bytes
    KEY_CACHE_MAX_DICT = 64     # used in dicts of at most this many items
    SMALL_DICT = 16             # WriteContext.write_dict iterates dicts this small once
    LIST_DICT_MAX = 1 << 21     # ... and lists larger ones' items up to this many


cdef struct PtrTable:
    # open addressing, linear probing: object address -> index in `keys`
    PyObject** slots_key
    Py_ssize_t* slots_val
    Py_ssize_t capacity        # power of two
    PyObject** keys            # insertion order; each holds a strong reference
    Py_ssize_t* key_slot       # where keys[i] sits in slots_key (for O(n) clearing)
    Py_ssize_t count
    Py_ssize_t keys_capacity


cdef struct ObjVec:
    # a growable array of strong references: the reader's value stack and its
    # back-reference tables (kept between payloads, like PtrTable)
    PyObject** items
    Py_ssize_t len
    Py_ssize_t cap


cdef class Serializer:
    cdef public object fory
    cdef public object cls
    cdef public bint track_identity
    cdef public bint has_state
    cdef public bint has_type_meta
    cpdef write(self, WriteContext ctx, obj)
    cpdef read(self, ReadContext ctx)
    cpdef write_state(self, WriteContext ctx, obj)
    cpdef read_state(self, ReadContext ctx, obj)
    cpdef write_type_meta(self, WriteContext ctx)
    cpdef read_type_meta(self, ReadContext ctx)


cdef class TypeInfo:
    cdef public object cls
    cdef public Serializer serializer
    cdef public int kind              # how the type is named on the wire
    cdef public object type_id        # internal or user id
    cdef public object name           # registered name
    cdef public object module
    cdef public object qualname
    cdef public object by_value       # handler for classes sent by value
    cdef public int wire_kind         # which kind of serializer writes instances
    cdef public bint strict_refused   # an internal type strict mode neither writes nor reads
    # writer bookkeeping: index of this type in the payload being written
    cdef uint64_t payload_gen
    cdef Py_ssize_t payload_index


@cython.final   # no subclasses: its methods are called directly, and inlined
cdef class WriteContext(Buffer):
    cdef public object fory
    cdef object resolver
    cdef dict type_cache
    cdef bint ref
    cdef bint ref_strict                 # the Fory's strict flag
    cdef bint in_use
    cdef Py_ssize_t depth
    cdef Py_ssize_t max_depth
    cdef uint64_t gen
    cdef Py_ssize_t ntypes
    cdef PtrTable memo
    cdef PtrTable strings
    cdef dict names                      # name -> its private copy (write_name), or None
    cdef public object buffer_callback
    cdef public dict scratch             # per-payload state of serializers, keyed by serializer
    cdef public Py_ssize_t oob_count     # buffers handed out of band in this payload
    cdef public Py_ssize_t oob_threshold # bytes/bytearray/memoryview this large are offered
    cdef list oob_views                  # dumps_with_buffers: the buffers kept out of band
    cdef Py_ssize_t oob_view_min         # ... those of at least this many bytes
    cdef dict overrides                  # serializers registered for builtin types, or None
    cdef public object unsupported_callback  # dumps(unsupported_callback=): see write_unsupported
    cdef Py_ssize_t foreign              # times user code may have run (write_held_items)
    cdef PyObject** dict_keys            # write_dict's listing of a large dict's items
    cdef PyObject** dict_values          # (borrowed; see write_dict)
    cdef Py_ssize_t dict_cap
    cdef Py_ssize_t body_start           # where the value starts (after the header byte, if any)

    cdef int begin(self) except -1
    cdef void end(self) noexcept
    cdef int write_any(self, object obj) except -1
    cdef int write_other(self, object obj, type t) except -1
    cdef int write_object(self, object obj, TypeInfo info) except -1
    cdef int write_unsupported(self, object obj, object why) except -1
    cdef int write_str_dedup(self, str s) except -1
    cdef int write_name(self, str s) except -1
    cdef int write_bigint_body(self, object obj) except -1
    cdef int write_list(self, list obj) except -1
    cdef int write_tuple(self, tuple obj) except -1
    cdef int write_dict(self, dict obj) except -1
    cdef int write_dict_items(self, dict obj, Py_ssize_t n, bint unique) except -1
    cdef bint reserve_dict_scratch(self, Py_ssize_t n) noexcept
    cdef int write_held_items(self, dict obj, PyObject** keys, PyObject** values,
                              Py_ssize_t n, bint unique) except -1
    cdef int write_small_dict(self, dict obj, Py_ssize_t n, bint unique) except -1
    cdef int write_flat_dict(self, dict obj, Py_ssize_t n) except -1
    cdef int write_str_keyed_atoms(self, dict obj, PyObject** keys, PyObject** values,
                                   Py_ssize_t n, uint8_t vkind, bint unique) except -1
    cdef int write_setlike(self, object obj, uint8_t tag) except -1
    cdef int write_items(self, object seq, Py_ssize_t n, uint8_t kind, bint is_list) except -1
    cdef int write_any_items(self, object seq, Py_ssize_t n, bint is_list) except -1
    cdef int mark_discard(self, Py_ssize_t start) except -1
    cdef int write_seq(self, object seq, Py_ssize_t n, bint is_list) except -1
    cdef TypeInfo same_class_info(self, object seq, Py_ssize_t n, bint is_list)
    cdef int write_same_objects(self, object seq, Py_ssize_t n, bint is_list, TypeInfo info) except -1
    cdef int write_type_info(self, TypeInfo info) except -1
    cdef int write_ref_or_register(self, object obj) except -1
    cdef int write_class(self, object cls) except -1
    cdef int write_buffer_value(self, object obj, bint is_pickle_buffer) except -1
    cdef int write_buffer_body(self, object buf, bint offer) except -1
    cdef int raise_depth(self) except -1

    cdef inline int enter(self) except -1:
        self.depth += 1
        if self.depth > self.max_depth:
            return self.raise_depth()
        return 0


@cython.final   # no subclasses: its methods are called directly, and inlined
cdef class ReadContext(Buffer):
    cdef public object fory
    cdef object resolver
    cdef bint ref
    cdef bint in_use
    cdef Py_ssize_t depth
    cdef Py_ssize_t max_depth
    cdef ObjVec refs                  # objects met so far, for back-references
    cdef ObjVec strings               # strings written once, then by index
    cdef list types
    cdef public list buffers
    cdef public Py_ssize_t buffer_index
    cdef public object policy
    cdef public dict scratch
    cdef public object unsupported_objects  # loads(unsupported_objects=): an iterator, or None
    cdef ObjVec stack                 # the value stack (see read_tuple)
    # work budgets of one loads (see Fory: max_unbacked_container_items, ...)
    cdef Py_ssize_t unbacked          # container items read from zero bytes of input
    cdef Py_ssize_t max_unbacked
    cdef Py_ssize_t graph_bytes       # estimated memory of the containers and objects made
    cdef Py_ssize_t max_graph_bytes   # (-1: no limit)
    cdef bint backrefs_seen           # a T_REF was resolved: objects may share parts
    cdef Py_ssize_t hash_work         # nodes that hashing keys visits (see check_key)
    cdef Py_ssize_t max_hash_work
    cdef dict hash_memo               # id -> (object, weight) for check_key
    cdef PyObject** key_cache         # short ASCII dict keys of earlier loads (see read_key)
    cdef str read_key(self, uint64_t h)
    cdef int check_key(self, object key) except -1
    cdef int charge_collisions(self, Py_ssize_t n) except -1
    cdef object read_unsupported(self)
    cdef Py_ssize_t key_weight(self, object obj, int depth) except -1
    cdef int raise_graph(self) except -1
    cdef int raise_unbacked(self) except -1
    cdef int check_seq_count(self, Py_ssize_t n) except -1

    cdef int begin(self, object data) except -1
    cdef Py_ssize_t stack_read_any(self, Py_ssize_t n) except -1
    cdef void stack_move_into(self, object seq, Py_ssize_t base, Py_ssize_t n) noexcept
    cdef int stack_extend_list(self, list lst, Py_ssize_t base, Py_ssize_t n) except -1
    cdef void end(self) noexcept
    cdef object read_any(self)
    cdef object read_tagged(self, int tag)
    cdef str read_str_header(self, uint64_t h)
    cdef int fill_items(self, object seq, Py_ssize_t n, int kind) except -1
    cdef int read_same_objects(self, object seq, Py_ssize_t n, bint append) except -1
    cdef object read_list(self, bint discard)
    cdef object read_list_items(self, Py_ssize_t n, int kind)
    cdef object read_tuple(self, bint discard)
    cdef object read_tuple_items(self, Py_ssize_t n, int kind, bint discard)
    cdef object read_dict(self)
    cdef object read_dict_items(self, Py_ssize_t n, int kk, int vk)
    cdef object read_setlike(self, int tag, bint discard)
    cdef object read_object(self, bint discard)
    cdef TypeInfo read_type_info(self)
    cdef object read_class(self)
    cdef object read_bigint(self)
    cdef object read_elem(self, int kind)
    cdef object get_ref(self, Py_ssize_t idx)
    cdef object read_buffer_body(self, bint writable)
    cdef object read_buffer_value(self)
    cdef int raise_count(self, Py_ssize_t n) except -1
    cdef int raise_depth(self) except -1

    cdef inline int check_count(self, Py_ssize_t n, Py_ssize_t min_item_size) except -1:
        # a count the remaining input cannot back is rejected before allocating
        if n > self.size - self.pos or n * min_item_size > self.size - self.pos:
            return self.raise_count(n)
        return 0

    cdef inline str read_str_any(self):
        return self.read_str_header(self.get_varuint64())

    cdef inline str read_key_any(self, bint cached):
        # a packed K_STR dict key; `cached`: through the key cache (read_key)
        cdef uint64_t h = self.get_varuint64()
        if cached and (h & 3) == 0 and (h >> 3) <= KEY_CACHE_MAX_LEN:
            return self.read_key(h)
        return self.read_str_header(h)

    cdef inline object read_any_inline(self):
        # the atoms here, inline where a hot loop reads values; the rest in read_tagged
        cdef int tag = self.get_u8()
        if tag >= FIX_STR:
            if tag >= FIX_INT:
                return PyLong_FromLong(tag - FIX_INT_ZERO)
            return self.get_str_body(<uint64_t>(tag - FIX_STR) << 3)
        elif tag == T_STR:
            return self.read_str_any()
        elif tag == T_INT:
            return PyLong_FromLongLong(self.get_varint64())
        elif tag == T_FLOAT:
            return PyFloat_FromDouble(self.get_double())
        elif tag == T_FLOAT32:
            return PyFloat_FromDouble(self.get_float32())
        elif tag == T_NONE:
            return None
        elif tag == T_TRUE:
            return True
        elif tag == T_FALSE:
            return False
        return self.read_tagged(tag)

    cdef inline object read_items(self, Py_ssize_t n, int kind, bint as_tuple):
        """A new tuple or list of n items of the given kind. Items of any kind are read
        first, onto the value stack, and the container made after them: it never exists
        with NULL items while user code may run (a nested object's serializer)."""
        cdef Py_ssize_t base
        if kind == K_ANY:
            base = self.stack_read_any(n)
            seq = PyTuple_New(n) if as_tuple else PyList_New(n)
            self.stack_move_into(seq, base, n)
        else:
            seq = PyTuple_New(n) if as_tuple else PyList_New(n)
            self.fill_items(seq, n, kind)
        return seq

    cdef inline bint next_is_plain_key(self) noexcept:
        # the next value is an atom whose hash a payload cannot make collide in numbers
        # (see plain_key): None, bools, 64-bit ints, floats, str, bytes. Peeking the tag
        # costs less than looking at the object read
        cdef uint8_t tag
        if self.pos >= self.size:
            return False
        tag = self.data[self.pos]
        return (tag <= T_BYTES and tag != T_BIGINT) or tag == T_FLOAT32 or tag >= FIX_STR

    cdef inline int enter(self) except -1:
        self.depth += 1
        if self.depth > self.max_depth:
            return self.raise_depth()
        return 0

    cdef inline int add_graph(self, Py_ssize_t nbytes) except -1:
        # the approximate memory of a container or object about to be made
        self.graph_bytes += nbytes
        if self.max_graph_bytes >= 0 and self.graph_bytes > self.max_graph_bytes:
            return self.raise_graph()
        return 0


cdef class KeyGuard:
    cdef ReadContext ctx
    # hash values met so far and how many keys had each: open addressing, linear probing
    cdef Py_hash_t* hashes
    cdef Py_ssize_t* counts
    cdef Py_ssize_t mask              # capacity - 1 (0: nothing allocated yet)
    cdef Py_ssize_t used
    cdef Py_ssize_t expected          # keys the container will get: the first capacity
    cdef Py_hash_t add(self, object key) except? -1
    cdef Py_ssize_t* slot(self, Py_hash_t h) noexcept
    cdef int grow(self) except -1


cdef class Fory:
    cdef public bint ref
    cdef public bint strict
    cdef public bint compatible
    cdef public Py_ssize_t max_depth
    cdef public Py_ssize_t oob_threshold
    cdef public object policy
    cdef public object resolver
    cdef public dict _type_cache
    cdef public Py_ssize_t max_unbacked_container_items
    cdef public object max_graph_memory_bytes
    cdef public object max_hash_work
    # received type metadata (attribute layouts, schemas), per loads; None: no limit
    cdef public object max_type_fields
    cdef public object max_type_meta_bytes
    cdef public object max_schema_versions_per_type
    cdef public object max_average_schema_versions_per_type
    cdef public bint field_nullable
    # the resolver's builtin_overrides (serializers registered for builtin types), kept
    # here by the resolver so each dumps reads a C field, not two attributes
    cdef public dict _builtin_overrides
    cdef WriteContext _wctx
    cdef ReadContext _rctx

    cdef object dumps_into(self, obj, buffer_callback, list views, Py_ssize_t min_size,
                           unsupported_callback)
    cdef object dumps_plain(self, obj)
