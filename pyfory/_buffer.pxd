# cython: language_level=3
"""The Buffer: a growable write buffer and a bounds-checked read cursor.

The hot helpers are `cdef inline` here so the core loop inlines them; every read
checks the remaining length first and raises a pyfory error instead of reading past
the end.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uint64_t
from libc.string cimport memcpy
from cpython.buffer cimport Py_buffer
from cpython.object cimport PyObject

cdef extern from "Python.h":
    str PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object s)
    int PyUnicode_KIND(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    bint PyUnicode_IS_ASCII(object s)
    int PyUnicode_1BYTE_KIND
    int PyUnicode_2BYTE_KIND


# copies of at least this many bytes go to memory advised for huge pages
cdef enum:
    HUGE_PAGE_MIN = 1 << 22
    # payloads up to this size are written into the buffer's kept block and handed out
    # as one exact-size bytes copy: cheaper than allocating a bytes object of a guessed
    # size and shrinking it (a realloc, which pymalloc does by a new block and a copy)
    SMALL_CAPACITY = 512
    # The next output starts at the last output's size, up to this much; larger ones
    # grow geometrically, and a failed write's buffer is dropped past it.
    KEEP_CAPACITY = 1 << 26

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* 17 to 128 bytes as two, four or eight overlapping 16-byte moves (a struct of two
       words: compilers make one vector load and store of each) */
    typedef struct { uint64_t lo, hi; } pyfory_16_bytes;
    static inline void pyfory_move_16(uint8_t* dst, const uint8_t* src) {
        pyfory_16_bytes t;
        memcpy(&t, src, 16);
        memcpy(dst, &t, 16);
    }
    static inline void pyfory_copy_17_to_128(uint8_t* dst, const uint8_t* src, Py_ssize_t n) {
        if (n > 64) {
            pyfory_move_16(dst + 32, src + 32);
            pyfory_move_16(dst + 48, src + 48);
            pyfory_move_16(dst + n - 64, src + n - 64);
            pyfory_move_16(dst + n - 48, src + n - 48);
        }
        if (n > 32) {
            pyfory_move_16(dst + 16, src + 16);
            pyfory_move_16(dst + n - 32, src + n - 32);
        }
        pyfory_move_16(dst, src);
        pyfory_move_16(dst + n - 16, src + n - 16);
    }
    """
    void pyfory_copy_17_to_128(uint8_t* dst, const uint8_t* src, Py_ssize_t n) nogil


cdef inline void copy_bytes(uint8_t* dst, const void* src_, Py_ssize_t n) noexcept:
    # memcpy, with the short copies of most strings (up to 128 bytes) done inline as
    # overlapping fixed-size moves: no call, and no size classes inside memcpy for the
    # branch predictor to guess on strings of random lengths
    cdef const uint8_t* src = <const uint8_t*>src_
    cdef uint64_t a, b
    cdef uint32_t c, d
    if n > 16:
        if n > 128:
            memcpy(dst, src, n)
        else:
            pyfory_copy_17_to_128(dst, src, n)
    elif n >= 8:
        memcpy(&a, src, 8)
        memcpy(&b, src + n - 8, 8)
        memcpy(dst, &a, 8)
        memcpy(dst + n - 8, &b, 8)
    elif n >= 4:
        memcpy(&c, src, 4)
        memcpy(&d, src + n - 4, 4)
        memcpy(dst, &c, 4)
        memcpy(dst + n - 4, &d, 4)
    elif n > 0:
        dst[0] = src[0]
        dst[n >> 1] = src[n >> 1]
        dst[n - 1] = src[n - 1]


cdef object bytes_from(const uint8_t* p, Py_ssize_t n)
cdef object bytearray_from(const uint8_t* p, Py_ssize_t n)


cdef class Buffer:
    cdef uint8_t* data          # start of the bytes (inside `out` when writing)
    cdef Py_ssize_t size        # capacity when writing, input length when reading
    cdef Py_ssize_t pos         # write position / read position
    cdef bint owns_data         # write mode: data lives in `out`
    cdef PyObject* out          # write mode: the bytes object being filled (owned)
    cdef Py_ssize_t size_hint   # size of the last result: first allocation of the next
    cdef bint has_view          # view holds a Py_buffer we must release
    cdef Py_buffer view
    cdef object source          # keeps the input alive while reading
    cdef uint8_t* small         # write mode: a kept block small payloads are written in
                                # (data == small, out == NULL), copied out by finish()

    cdef int grow(self, Py_ssize_t needed) except -1
    cdef int raise_truncated(self, Py_ssize_t needed) except -1
    cdef int attach(self, object source) except -1
    cdef void detach(self) noexcept
    cdef object getvalue_bytes(self)
    cdef object finish(self)
    cpdef void reset_for_write(self)

    # ---- writing --------------------------------------------------------------
    cdef inline int reserve(self, Py_ssize_t n) except -1:
        if self.pos + n > self.size:
            self.grow(n)
        return 0

    cdef inline int put_u8(self, uint8_t v) except -1:
        if self.pos + 1 > self.size:
            self.grow(1)
        self.data[self.pos] = v
        self.pos += 1
        return 0

    cdef inline int put_raw(self, const void* src, Py_ssize_t n) except -1:
        if self.pos + n > self.size:
            self.grow(n)
        memcpy(self.data + self.pos, src, n)
        self.pos += n
        return 0

    cdef inline void put_varuint64_unchecked(self, uint64_t v) noexcept:
        # caller reserved 10 bytes
        cdef uint8_t* p = self.data + self.pos
        cdef Py_ssize_t i = 0
        while v >= 0x80:
            p[i] = <uint8_t>(v | 0x80)
            v >>= 7
            i += 1
        p[i] = <uint8_t>v
        self.pos += i + 1

    cdef inline int put_varuint64(self, uint64_t v) except -1:
        if self.pos + 10 > self.size:
            self.grow(10)
        self.put_varuint64_unchecked(v)
        return 0

    cdef inline int put_varint64(self, int64_t v) except -1:
        # zigzag: small negative numbers stay small
        return self.put_varuint64((<uint64_t>v << 1) ^ <uint64_t>(v >> 63))

    cdef inline void put_u64_unchecked(self, uint64_t v) noexcept:
        # little-endian fixed 8 bytes (the machines we target are little-endian;
        # memcpy keeps it alignment-safe)
        memcpy(self.data + self.pos, &v, 8)
        self.pos += 8

    cdef inline int put_double(self, double v) except -1:
        if self.pos + 8 > self.size:
            self.grow(8)
        memcpy(self.data + self.pos, &v, 8)
        self.pos += 8
        return 0

    # ---- reading --------------------------------------------------------------
    cdef inline int need(self, Py_ssize_t n) except -1:
        if n < 0 or n > self.size - self.pos:
            self.raise_truncated(n)
        return 0

    cdef inline Py_ssize_t remaining(self) noexcept:
        return self.size - self.pos

    cdef inline int get_u8(self) except -1:
        if self.pos >= self.size:
            self.raise_truncated(1)
        cdef uint8_t v = self.data[self.pos]
        self.pos += 1
        return v

    cdef inline const uint8_t* take(self, Py_ssize_t n) except NULL:
        # returns a pointer to n bytes and advances past them
        if n < 0 or n > self.size - self.pos:
            self.raise_truncated(n)
        cdef const uint8_t* p = self.data + self.pos
        self.pos += n
        return p

    cdef uint64_t get_varuint64_slow(self) except? 0xFFFFFFFFFFFFFFFF

    cdef inline uint64_t get_varuint64(self) except? 0xFFFFFFFFFFFFFFFF:
        # up to 4 bytes (values below 2**28) inline, when 4 bytes of input remain
        cdef const uint8_t* p
        cdef uint64_t r
        cdef uint8_t b
        if self.size - self.pos >= 4:
            p = self.data + self.pos
            b = p[0]
            if b < 0x80:
                self.pos += 1
                return b
            r = b & 0x7F
            b = p[1]
            if b < 0x80:
                self.pos += 2
                return r | (<uint64_t>b << 7)
            r |= <uint64_t>(b & 0x7F) << 7
            b = p[2]
            if b < 0x80:
                self.pos += 3
                return r | (<uint64_t>b << 14)
            r |= <uint64_t>(b & 0x7F) << 14
            b = p[3]
            if b < 0x80:
                self.pos += 4
                return r | (<uint64_t>b << 21)
        return self.get_varuint64_slow()

    cdef inline int64_t get_varint64(self) except? -0x7FFFFFFFFFFFFFFF:
        cdef uint64_t u = self.get_varuint64()
        return <int64_t>(u >> 1) ^ -<int64_t>(u & 1)

    cdef inline Py_ssize_t get_length(self) except -1:
        # a count or byte length: must fit in Py_ssize_t
        cdef uint64_t u = self.get_varuint64()
        if u > <uint64_t>0x7FFFFFFFFFFFFFFF:
            self.raise_truncated(-1)
        return <Py_ssize_t>u

    cdef inline double get_double(self) except? -1.0:
        cdef double v
        if 8 > self.size - self.pos:
            self.raise_truncated(8)
        memcpy(&v, self.data + self.pos, 8)
        self.pos += 8
        return v

    cdef inline double get_float32(self) except? -1.0:
        # 4 bytes little-endian, widened to a double
        cdef float v
        if 4 > self.size - self.pos:
            self.raise_truncated(4)
        memcpy(&v, self.data + self.pos, 4)
        self.pos += 4
        return v

    cdef inline uint64_t get_u64(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t v
        if 8 > self.size - self.pos:
            self.raise_truncated(8)
        memcpy(&v, self.data + self.pos, 8)
        self.pos += 8
        return v

    # ---- strings (shared by the core and custom serializers) ------------------
    # A string is a varint header then its bytes. Header = (nbytes << 3) | flags,
    # flags = (register << 2) | encoding: 0 the 1-byte kind (Latin-1 bytes, ASCII
    # included), 1 the 2-byte kind (UCS-2 little-endian, as CPython stores it), 2 UTF-8.
    # Encoding 3 is a back-reference: header = (index << 2) | 3 (see _core.pyx).
    cdef int put_str_other(self, str s, uint64_t flags) except -1

    cdef inline int put_str(self, str s, int register) except -1:
        # string header (length << 3 | register << 2 | encoding), then the bytes;
        # 1-byte-kind strings (most, ASCII) are copied as they are, inline here
        cdef Py_ssize_t n
        cdef uint64_t flags = <uint64_t>register << 2
        if PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND:
            return self.put_str_other(s, flags)
        n = PyUnicode_GET_LENGTH(s)
        self.reserve(10 + n)
        self.put_varuint64_unchecked((<uint64_t>n << 3) | flags)
        copy_bytes(self.data + self.pos, PyUnicode_DATA(s), n)
        self.pos += n
        return 0
    cdef str get_str_other(self, uint64_t header)
    cdef str get_utf8(self, Py_ssize_t n)

    cdef inline str get_str_body(self, uint64_t header):
        # ASCII (the common case) is checked and copied here, inline; the rest
        # (Latin-1, UCS-2, UTF-8) in get_str_other
        cdef uint64_t n64 = header >> 3
        cdef Py_ssize_t n, i
        cdef const uint8_t* p
        cdef uint8_t acc = 0
        cdef uint8_t* dst
        cdef str s
        if (header & 3) != 0 or n64 > <uint64_t>(self.size - self.pos):
            return self.get_str_other(header)
        n = <Py_ssize_t>n64
        p = self.data + self.pos
        # optimistic: copy and check in one pass (no memcpy call for short strings);
        # a Latin-1 string is rarer and starts over in get_str_other
        s = PyUnicode_New(n, 127)
        dst = <uint8_t*>PyUnicode_DATA(s)
        for i in range(n):
            dst[i] = p[i]
            acc |= p[i]
        if acc & 0x80:
            return self.get_str_other(header)
        self.pos += n
        return s
