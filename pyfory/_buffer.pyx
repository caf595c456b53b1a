# cython: language_level=3
"""Buffer implementation and its Python-visible API (used by custom serializers)."""
from libc.stdint cimport uint8_t, uint32_t, int64_t, uint64_t, int32_t, int16_t, int8_t, uint16_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES)
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_DecodeLatin1

from pyfory.error import MalformedDataError, TruncatedDataError

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject** pv, Py_ssize_t newsize) except -1
    int _PyBytes_Resize_noexc "_PyBytes_Resize"(PyObject** pv, Py_ssize_t newsize)
    PyObject* PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n)
    char* PyBytes_AS_STRING_raw "PyBytes_AS_STRING"(PyObject* o)
    void Py_XDECREF(PyObject* o)
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except? NULL
    # the same, its error left set for the caller (no try block per string)
    const char* PyUnicode_AsUTF8AndSize_raw "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* size)
    bint PyErr_ExceptionMatches(object exc)
    void PyErr_Clear()
    object PyUnicode_AsEncodedString(object s, const char* encoding, const char* errors)

cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/mman.h>
    #include <unistd.h>
    #endif
    /* Ask Linux for transparent huge pages over a large block we are about to fill:
       the first touch of 100 MB then costs about 50 page faults instead of 25,000,
       which is most of the time of copying into fresh memory. numpy's allocator does
       the same for its arrays. A no-op elsewhere, and when the kernel says no. */
    static void pyfory_advise_huge_pages(void* p, Py_ssize_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        static uintptr_t page = 0;
        if (page == 0) {
            long ps = sysconf(_SC_PAGESIZE);
            page = ps > 0 ? (uintptr_t)ps : 4096;
        }
        uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t end = ((uintptr_t)p + (uintptr_t)n) & ~(page - 1);
        if (end > start) {
            (void)madvise((void*)start, end - start, MADV_HUGEPAGE);
        }
    #endif
    }
    /* -1: the caller's error check then raises the exception already set */
    static int pyfory_error_is_set(void) { return -1; }
    """
    void pyfory_advise_huge_pages(void* p, Py_ssize_t n) nogil
    int pyfory_error_is_set() except -1

cdef extern from *:
    """
    /* 1 when the UCS-2 form of a 2-byte-kind string is not longer than its UTF-8:
       (characters below U+0080) - (characters from U+0800 up) <= 0. 32-bit partial
       sums over blocks, so that the compiler can vectorize the loop. */
    static int pyfory_ucs2_not_longer(const uint16_t* u, Py_ssize_t n) {
        Py_ssize_t i = 0;
        long long d = 0;
        while (i < n) {
            Py_ssize_t end = n - i > 65536 ? i + 65536 : n;
            int32_t acc = 0;
            for (; i < end; i++) {
                acc += (int32_t)(u[i] < 0x80) - (int32_t)(u[i] >= 0x800);
            }
            d += acc;
        }
        return d <= 0;
    }

    /* 1 when some code unit is below U+0080: a unit is ASCII when its bits 7-15 are
       all clear. Most text of a 2-byte-kind script (CJK, Greek, Cyrillic without
       spaces) has no ASCII at all, and then UCS-2 is never longer than UTF-8 without
       counting. Eight units a step with SSE2 (x86-64's baseline), four as one 64-bit
       word elsewhere ("some 16-bit lane is zero" is exact for the word as a whole). */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline int pyfory_ascii_in_8_units(const uint16_t* u) {
        __m128i v = _mm_and_si128(_mm_loadu_si128((const __m128i*)u), _mm_set1_epi16((short)0xFF80));
        return _mm_movemask_epi8(_mm_cmpeq_epi16(v, _mm_setzero_si128())) != 0;
    }
    #endif
    static inline int pyfory_ascii_in_4_units(const uint16_t* u) {
        uint64_t w;
        memcpy(&w, u, 8);
        w &= 0xFF80FF80FF80FF80ULL;
        return ((w - 0x0001000100010001ULL) & ~w & 0x8000800080008000ULL) != 0;
    }
    static int pyfory_ucs2_has_ascii(const uint16_t* u, Py_ssize_t n) {
        Py_ssize_t i = 0;
        /* the last block overlaps the one before it rather than going unit by unit */
    #if defined(__SSE2__)
        if (n >= 8) {
            for (; i + 8 <= n; i += 8) {
                if (pyfory_ascii_in_8_units(u + i)) return 1;
            }
            return i < n && pyfory_ascii_in_8_units(u + n - 8);
        }
    #endif
        if (n >= 4) {
            for (; i + 4 <= n; i += 4) {
                if (pyfory_ascii_in_4_units(u + i)) return 1;
            }
            return i < n && pyfory_ascii_in_4_units(u + n - 4);
        }
        for (; i < n; i++) {
            if (u[i] < 0x80) return 1;
        }
        return 0;
    }

    /* The short string's case of the two steps above and the copy, in one: copies the
       n <= 32 code units at u to dst and returns 1 when one of them is ASCII. Straight
       overlapping 16-byte moves (8-byte words below 8 units, or without SSE2): strings
       of random lengths then take no loop whose exit, and no memcpy size class, the
       branch predictor must guess; that guess cost ~1.4 mispredictions a string. */
    static inline int pyfory_ascii_in_word(uint64_t w) {
        w &= 0xFF80FF80FF80FF80ULL;
        return ((w - 0x0001000100010001ULL) & ~w & 0x8000800080008000ULL) != 0;
    }
    static inline int pyfory_copy_short_ucs2(uint8_t* dst, const uint16_t* u, Py_ssize_t n) {
        const uint8_t* s = (const uint8_t*)u;
        Py_ssize_t nb = 2 * n, i;
        uint64_t a, b;
        int found = 0;
    #if defined(__SSE2__)
        if (nb >= 16) {
            const __m128i hi = _mm_set1_epi16((short)0xFF80), z = _mm_setzero_si128();
            __m128i x = _mm_loadu_si128((const __m128i*)s);
            __m128i y = _mm_loadu_si128((const __m128i*)(s + nb - 16));
            __m128i m = _mm_or_si128(_mm_cmpeq_epi16(_mm_and_si128(x, hi), z),
                                     _mm_cmpeq_epi16(_mm_and_si128(y, hi), z));
            _mm_storeu_si128((__m128i*)dst, x);
            _mm_storeu_si128((__m128i*)(dst + nb - 16), y);
            if (nb > 32) {
                x = _mm_loadu_si128((const __m128i*)(s + 16));
                y = _mm_loadu_si128((const __m128i*)(s + nb - 32));
                m = _mm_or_si128(m, _mm_or_si128(_mm_cmpeq_epi16(_mm_and_si128(x, hi), z),
                                                 _mm_cmpeq_epi16(_mm_and_si128(y, hi), z)));
                _mm_storeu_si128((__m128i*)(dst + 16), x);
                _mm_storeu_si128((__m128i*)(dst + nb - 32), y);
            }
            return _mm_movemask_epi8(m) != 0;
        }
    #endif
        if (nb >= 8) {
            for (i = 0; i + 8 < nb; i += 8) {
                memcpy(&a, s + i, 8);
                memcpy(dst + i, &a, 8);
                found |= pyfory_ascii_in_word(a);
            }
            memcpy(&b, s + nb - 8, 8);
            memcpy(dst + nb - 8, &b, 8);
            return found | pyfory_ascii_in_word(b);
        }
        for (i = 0; i < n; i++) {
            found |= u[i] < 0x80;
        }
        memcpy(dst, s, nb);
        return found;
    }

    /* UTF-8 (with surrogates, as Python's "surrogatepass" reads it) to a str: one pass
       checks and decodes every character into a UCS-4 scratch array, noting the widest,
       then the str is made in the narrowest kind and filled from it. CPython's own
       decoder starts narrow and widens and reallocates as it goes, and takes a string of
       emoji at ~60 instructions a character; this, at ~20. Multi-byte sequences are read
       as one 32-bit little-endian word when 4 bytes remain. Returns NULL with *bad set to
       the offset of the first byte that does not start a valid sequence (no exception
       set), or NULL with an exception (no memory). */
    static inline uint32_t pyfory_le32(const uint8_t* p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    }
    static PyObject* pyfory_decode_utf8(const uint8_t* s, Py_ssize_t n, Py_ssize_t* bad) {
        Py_UCS4 stack[256];
        Py_UCS4* out = n <= 256 ? stack : (Py_UCS4*)PyMem_Malloc(n * sizeof(Py_UCS4));
        Py_ssize_t i = 0, j = 0, k;
        uint32_t all = 0, cp, w;
        PyObject* u;
        if (out == NULL) { PyErr_NoMemory(); return NULL; }
        while (i < n) {
            uint8_t b = s[i];
            if (b < 0x80) { out[j++] = b; i += 1; continue; }
            if (n - i >= 4) w = pyfory_le32(s + i);
            else {
                /* the last 1-3 bytes: the same word with zeros past the end, which fail
                   the continuation-byte checks of any sequence longer than what is left */
                w = b;
                if (n - i > 1) w |= (uint32_t)s[i + 1] << 8;
                if (n - i > 2) w |= (uint32_t)s[i + 2] << 16;
            }
            if ((b & 0xE0) == 0xC0) {
                cp = ((uint32_t)(b & 0x1F) << 6) | ((w >> 8) & 0x3F);
                if ((w & 0xC000) != 0x8000 || cp < 0x80) goto invalid;
                i += 2;
            } else if ((b & 0xF0) == 0xE0) {
                cp = ((uint32_t)(b & 0x0F) << 12) | ((w >> 2) & 0xFC0) | ((w >> 16) & 0x3F);
                if ((w & 0xC0C000) != 0x808000 || cp < 0x800) goto invalid;
                i += 3;
            } else if ((b & 0xF8) == 0xF0) {
                cp = ((uint32_t)(b & 0x07) << 18) | ((w << 4) & 0x3F000) | ((w >> 10) & 0xFC0)
                     | ((w >> 24) & 0x3F);
                if ((w & 0xC0C0C000) != 0x80808000 || cp - 0x10000 > 0xFFFFF) goto invalid;
                i += 4;
            } else goto invalid;
            out[j++] = cp;
            all |= cp;
        }
        /* (a bit at or above 2**k is set in `all` exactly when some character is) */
        u = PyUnicode_New(j, all >= 0x10000 ? 0x10FFFF : all >= 0x100 ? 0xFFFF : all >= 0x80 ? 0xFF : 0x7F);
        if (u != NULL) {
            if (all >= 0x10000) memcpy(PyUnicode_DATA(u), out, j * sizeof(Py_UCS4));
            else if (all >= 0x100) {
                Py_UCS2* d = (Py_UCS2*)PyUnicode_DATA(u);
                for (k = 0; k < j; k++) d[k] = (Py_UCS2)out[k];
            } else {
                Py_UCS1* d = (Py_UCS1*)PyUnicode_DATA(u);
                for (k = 0; k < j; k++) d[k] = (Py_UCS1)out[k];
            }
        }
        if (out != stack) PyMem_Free(out);
        return u;
    invalid:
        if (out != stack) PyMem_Free(out);
        *bad = i;
        return NULL;
    }
    """
    int pyfory_ucs2_not_longer(const uint16_t* u, Py_ssize_t n) nogil
    int pyfory_ucs2_has_ascii(const uint16_t* u, Py_ssize_t n) nogil
    int pyfory_copy_short_ucs2(uint8_t* dst, const uint16_t* u, Py_ssize_t n) nogil
    PyObject* pyfory_decode_utf8(const uint8_t* s, Py_ssize_t n, Py_ssize_t* bad)


cdef inline void copy_advised(char* dst, const uint8_t* p, Py_ssize_t n) noexcept:
    # a large copy into fresh memory: advise it for huge pages before touching it
    pyfory_advise_huge_pages(dst, n)
    memcpy(dst, p, n)


cdef object bytes_from(const uint8_t* p, Py_ssize_t n):
    """A copy of n bytes at p as bytes (huge pages for large blocks)."""
    if n < HUGE_PAGE_MIN:
        return PyBytes_FromStringAndSize(<const char*>p, n)
    cdef object out = PyBytes_FromStringAndSize(NULL, n)
    copy_advised(PyBytes_AS_STRING(out), p, n)
    return out


cdef object bytearray_from(const uint8_t* p, Py_ssize_t n):
    """A copy of n bytes at p as a bytearray (huge pages for large blocks)."""
    if n < HUGE_PAGE_MIN:
        return PyByteArray_FromStringAndSize(<const char*>p, n)
    cdef object out = PyByteArray_FromStringAndSize(NULL, n)
    copy_advised(PyByteArray_AS_STRING(out), p, n)
    return out


cdef Py_ssize_t INITIAL_CAPACITY = 256
# SMALL_CAPACITY, KEEP_CAPACITY: in _buffer.pxd


cdef uint64_t _take_unsigned(Buffer buf, Py_ssize_t n) except? 0xFFFFFFFFFFFFFFFF:
    # an n-byte little-endian unsigned int (n <= 8; the host is little-endian, as the
    # other fixed-width readers here assume)
    cdef uint64_t v = 0
    memcpy(&v, buf.take(n), n)
    return v


cdef int _put_unsigned(Buffer buf, object value, Py_ssize_t n) except -1:
    # value as an n-byte little-endian unsigned int
    if value < 0 or value >> (8 * n):
        raise OverflowError(f"{value} does not fit in an unsigned {8 * n}-bit int")
    cdef uint64_t v = value
    return buf.put_raw(&v, n)


cdef class Buffer:
    """A byte buffer: `Buffer()` to write, `Buffer(data)` to read `data` without copying."""

    def __cinit__(self, *args, **kwargs):
        self.data = NULL
        self.size = 0
        self.pos = 0
        self.owns_data = False
        self.has_view = False
        self.source = None
        self.out = NULL
        self.size_hint = 0
        self.small = NULL

    def __init__(self, data=None):
        if data is not None:
            self.attach(data)

    def __dealloc__(self):
        self.detach()
        Py_XDECREF(self.out)
        self.out = NULL
        self.data = NULL
        free(self.small)
        self.small = NULL

    cdef int grow(self, Py_ssize_t needed) except -1:
        # The output is written straight into a bytes object, so handing it out
        # costs no copy (see finish()).
        cdef Py_ssize_t new_size
        cdef PyObject* grown
        if not self.owns_data and self.data != NULL:
            raise ValueError("cannot write to a read-only Buffer")
        if (self.data == NULL and self.size_hint <= SMALL_CAPACITY
                and self.pos + needed <= SMALL_CAPACITY):
            # a fresh write that the last one says will be small: the kept block
            if self.small == NULL:
                self.small = <uint8_t*>malloc(SMALL_CAPACITY)
                if self.small == NULL:
                    raise MemoryError()
            self.data = self.small
            self.size = SMALL_CAPACITY
            self.owns_data = True
            return 0
        new_size = self.size * 2
        if new_size < self.size_hint:
            # the last result's size, and room for the writer's reserve() of the last
            # item's worst case (a varint header of 10 bytes, 3 bytes a character of
            # UTF-8...): an output of the same size then grows no more (a second growth
            # copied the whole output: ~25 us of a 10k-string dumps). finish() hands out
            # the exact size.
            new_size = self.size_hint + (self.size_hint >> 4) + 256
        if new_size < INITIAL_CAPACITY:
            new_size = INITIAL_CAPACITY
        if new_size < self.pos + needed:
            new_size = self.pos + needed + (self.pos + needed) // 2
        if self.out != NULL and new_size < HUGE_PAGE_MIN:
            if _PyBytes_Resize_noexc(&self.out, new_size) < 0:
                # the old object is gone (freed, out = NULL): forget its memory
                self.data = NULL
                self.size = 0
                self.pos = 0
                raise MemoryError()
        else:
            # A large block is allocated afresh and only the bytes written so far are
            # copied: realloc would copy (and so touch) the whole old capacity, before
            # the new block could be advised for huge pages.
            grown = PyBytes_FromStringAndSize_raw(NULL, new_size)
            if grown == NULL:
                raise MemoryError()
            if new_size >= HUGE_PAGE_MIN:
                pyfory_advise_huge_pages(PyBytes_AS_STRING_raw(grown), new_size)
            if self.data != NULL:
                # what was written, in the old bytes object or in the kept block
                memcpy(PyBytes_AS_STRING_raw(grown), self.data, self.pos)
                Py_XDECREF(self.out)
            self.out = grown
        self.data = <uint8_t*>PyBytes_AS_STRING_raw(self.out)
        self.size = new_size
        self.owns_data = True
        return 0

    cdef object finish(self):
        """The bytes written, handed out without copying; the buffer starts afresh."""
        cdef object result
        if self.out == NULL:
            if self.data == NULL or self.data != self.small:
                return b""
            # written in the kept block (see grow)
            result = PyBytes_FromStringAndSize(<char*>self.data, self.pos)
            self.data = NULL
            self.size = 0
            self.size_hint = self.pos
            self.pos = 0
            return result
        if _PyBytes_Resize_noexc(&self.out, self.pos) < 0:
            self.data = NULL
            self.size = 0
            self.pos = 0
            raise MemoryError()
        result = <object>self.out
        Py_XDECREF(self.out)    # ownership moves to `result`
        self.out = NULL
        self.data = NULL
        self.size = 0
        self.size_hint = self.pos if self.pos < KEEP_CAPACITY else KEEP_CAPACITY
        self.pos = 0
        return result

    cdef int raise_truncated(self, Py_ssize_t needed) except -1:
        if needed < 0:
            raise MalformedDataError(f"invalid length field at offset {self.pos}")
        raise TruncatedDataError(
            f"payload truncated: need {needed} byte(s) at offset {self.pos}, "
            f"{self.size - self.pos} left")

    cdef int attach(self, object source) except -1:
        # read mode over any buffer-protocol object, without copying it
        self.detach()
        Py_XDECREF(self.out)
        self.out = NULL
        self.owns_data = False
        if type(source) is bytes:
            # immutable: its storage is read directly, without the buffer protocol
            self.source = source
            self.data = <uint8_t*>PyBytes_AS_STRING(source)
            self.size = PyBytes_GET_SIZE(source)
            self.pos = 0
            return 0
        PyObject_GetBuffer(source, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        self.source = source
        self.data = <uint8_t*>self.view.buf
        self.size = self.view.len
        self.pos = 0
        return 0

    cdef void detach(self) noexcept:
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
        if self.source is not None:
            self.source = None
            self.data = NULL
            self.size = 0
            self.pos = 0

    cdef object getvalue_bytes(self):
        return PyBytes_FromStringAndSize(<char*>self.data, self.pos)

    cpdef void reset_for_write(self):
        """Start writing again from the beginning."""
        self.detach()
        if self.out != NULL and self.size > KEEP_CAPACITY:
            Py_XDECREF(self.out)
            self.out = NULL
            self.data = NULL
            self.size = 0
        self.pos = 0

    cdef uint64_t get_varuint64_slow(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t result = 0
        cdef int shift = 0
        cdef uint8_t b
        cdef const uint8_t* p
        cdef int i
        if self.size - self.pos >= 10:
            # enough input for the longest varint: no bounds check per byte
            p = self.data + self.pos
            for i in range(10):
                b = p[i]
                if i == 9 and b > 1:
                    raise MalformedDataError(f"varint too long at offset {self.pos}")
                result |= (<uint64_t>(b & 0x7F)) << (7 * i)
                if b < 0x80:
                    self.pos += i + 1
                    return result
        while True:
            if self.pos >= self.size:
                self.raise_truncated(1)
            b = self.data[self.pos]
            self.pos += 1
            if shift == 63 and b > 1:
                raise MalformedDataError(f"varint too long at offset {self.pos - 1}")
            result |= (<uint64_t>(b & 0x7F)) << shift
            if b < 0x80:
                return result
            shift += 7

    cdef int put_str_other(self, str s, uint64_t flags) except -1:
        # put_str (_buffer.pxd) of a string that is not of the 1-byte kind. A 2-byte-kind
        # string goes as CPython stores it (UCS-2: 2 bytes a character, copied as is, and
        # read back by a copy) unless UTF-8 is shorter: with a ASCII characters, b below
        # U+0800 and c from U+0800 up, UTF-8 takes a + 2b + 3c bytes and UCS-2 2(a+b+c),
        # so UCS-2 when a <= c. 4-byte-kind strings go as UTF-8 (never longer than UCS-4).
        cdef Py_ssize_t n, nchars, start
        cdef const char* p
        cdef const uint16_t* u
        if PyUnicode_KIND(s) == PyUnicode_2BYTE_KIND:
            nchars = PyUnicode_GET_LENGTH(s)
            u = <const uint16_t*>PyUnicode_DATA(s)
            if nchars <= 32:
                # short: copied while looking for ASCII; taken back if UTF-8 is shorter
                self.reserve(2 + 2 * nchars)
                start = self.pos
                self.put_varuint64_unchecked((<uint64_t>(2 * nchars) << 3) | flags | 1)
                if (not pyfory_copy_short_ucs2(self.data + self.pos, u, nchars)
                        or pyfory_ucs2_not_longer(u, nchars)):
                    self.pos += 2 * nchars
                    return 0
                self.pos = start
            elif not pyfory_ucs2_has_ascii(u, nchars) or pyfory_ucs2_not_longer(u, nchars):
                n = 2 * nchars
                self.reserve(10 + n)
                self.put_varuint64_unchecked((<uint64_t>n << 3) | flags | 1)
                memcpy(self.data + self.pos, u, n)
                self.pos += n
                return 0
        p = PyUnicode_AsUTF8AndSize_raw(s, &n)
        if p == NULL:
            if not PyErr_ExceptionMatches(UnicodeEncodeError):
                pyfory_error_is_set()
            # lone surrogates: keep them, as pickle does
            PyErr_Clear()
            b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")
            p = PyBytes_AS_STRING(b)
            n = PyBytes_GET_SIZE(b)
        self.reserve(10 + n)
        self.put_varuint64_unchecked((<uint64_t>n << 3) | flags | 2)
        copy_bytes(self.data + self.pos, p, n)
        self.pos += n
        return 0

    cdef str get_str_other(self, uint64_t header):
        cdef uint64_t enc = header & 3
        cdef uint64_t n64 = header >> 3
        cdef Py_ssize_t n, i
        cdef uint16_t acc = 0
        cdef uint16_t* dst
        cdef str s
        if n64 > <uint64_t>(self.size - self.pos):
            self.raise_truncated(<Py_ssize_t>min(n64, <uint64_t>0x7FFFFFFFFFFFFFFF))
        n = <Py_ssize_t>n64
        cdef const char* p = <const char*>(self.data + self.pos)
        if enc == 0:
            # 1-byte kind with a character above U+007F (get_str_body did ASCII)
            self.pos += n
            return PyUnicode_DecodeLatin1(p, n, NULL)
        if enc == 1:
            # 2-byte kind: the code units as CPython stores them, copied as they are.
            # CPython requires the narrowest kind: one character must be above U+00FF
            if n & 1:
                raise MalformedDataError(f"UCS-2 string of an odd {n} bytes at offset {self.pos}")
            s = PyUnicode_New(n >> 1, 0xFFFF)
            dst = <uint16_t*>PyUnicode_DATA(s)
            memcpy(dst, p, n)
            for i in range(n >> 1):
                acc |= dst[i]
            if acc < 0x100:
                raise MalformedDataError(
                    f"string marked UCS-2 has no character above U+00FF (offset {self.pos})")
            self.pos += n
            return s
        if enc == 2:
            s = self.get_utf8(n)
            self.pos += n
            return s
        raise MalformedDataError(f"invalid string header at offset {self.pos}")

    cdef str get_utf8(self, Py_ssize_t n):
        # n bytes of UTF-8 at pos (there), with surrogates as "surrogatepass" reads them
        cdef Py_ssize_t bad = -1
        cdef PyObject* r = pyfory_decode_utf8(self.data + self.pos, n, &bad)
        if r == NULL:
            if bad < 0:
                pyfory_error_is_set()     # (no memory)
            raise MalformedDataError(
                f"invalid UTF-8 in string: byte {self.data[self.pos + bad]:#04x} at offset "
                f"{self.pos + bad} does not start a valid sequence")
        s = <str>r
        Py_DECREF(s)    # (the new reference pyfory_decode_utf8 returned; s holds one)
        return s

    # ---- Python-visible API for custom serializers -----------------------------
    @property
    def writer_index(self):
        return self.pos

    @property
    def reader_index(self):
        return self.pos

    def getvalue(self) -> bytes:
        """The bytes written so far."""
        return self.getvalue_bytes()

    def __len__(self):
        return self.pos if self.owns_data or self.data == NULL else self.size

    def write_bool(self, bint v):
        self.put_u8(1 if v else 0)

    def write_uint8(self, int v):
        if v < 0 or v > 255:
            raise OverflowError("uint8 out of range")
        self.put_u8(<uint8_t>v)

    def write_int8(self, int8_t v):
        self.put_u8(<uint8_t>v)

    def write_int16(self, int16_t v):
        self.put_raw(&v, 2)

    def write_int32(self, int32_t v):
        self.put_raw(&v, 4)

    def write_int64(self, int64_t v):
        self.put_raw(&v, 8)

    def write_float32(self, float v):
        self.put_raw(&v, 4)

    def write_float64(self, double v):
        self.put_double(v)

    def write_varint32(self, int32_t v):
        self.put_varint64(v)

    def write_varuint32(self, uint32_t v):
        self.put_varuint64(v)

    def write_varint64(self, int64_t v):
        self.put_varint64(v)

    def write_varuint64(self, uint64_t v):
        self.put_varuint64(v)

    def write_bytes(self, data):
        """Raw bytes, no length prefix (pair with read_bytes(n))."""
        cdef const uint8_t[::1] view = memoryview(data).cast("B")
        if view.shape[0]:
            self.put_raw(&view[0], view.shape[0])

    def write_bytes_and_size(self, data):
        cdef const uint8_t[::1] view = memoryview(data).cast("B")
        self.put_varuint64(view.shape[0])
        if view.shape[0]:
            self.put_raw(&view[0], view.shape[0])

    def write_string(self, str s):
        self.put_str(s, 0)

    def read_bool(self) -> bool:
        return self.get_u8() != 0

    def read_uint8(self) -> int:
        return self.get_u8()

    def read_int8(self) -> int:
        return <int8_t>self.get_u8()

    def read_int16(self) -> int:
        cdef int16_t v
        memcpy(&v, self.take(2), 2)
        return v

    def read_int32(self) -> int:
        cdef int32_t v
        memcpy(&v, self.take(4), 4)
        return v

    def read_int64(self) -> int:
        cdef int64_t v
        memcpy(&v, self.take(8), 8)
        return v

    def read_float32(self) -> float:
        cdef float v
        memcpy(&v, self.take(4), 4)
        return v

    def read_float64(self) -> float:
        return self.get_double()

    def read_varint32(self) -> int:
        cdef int64_t v = self.get_varint64()
        if v < -0x80000000 or v > 0x7FFFFFFF:
            raise MalformedDataError("varint32 out of range")
        return v

    def read_varuint32(self) -> int:
        cdef uint64_t v = self.get_varuint64()
        if v > 0xFFFFFFFF:
            raise MalformedDataError("varuint32 out of range")
        return v

    def read_varint64(self) -> int:
        return self.get_varint64()

    def read_varuint64(self) -> int:
        return self.get_varuint64()

    def read_bytes(self, Py_ssize_t n) -> bytes:
        return PyBytes_FromStringAndSize(<const char*>self.take(n), n)

    def read_bytes_and_size(self) -> bytes:
        cdef Py_ssize_t n = self.get_length()
        return PyBytes_FromStringAndSize(<const char*>self.take(n), n)

    def read_string(self) -> str:
        cdef uint64_t h = self.get_varuint64()
        if (h & 3) == 3 or (h & 4):
            raise MalformedDataError("unexpected string reference in a plain string")
        return self.get_str_body(h)

    # ---- the same under pyfory's names (code written from pyfory's guide) ------
    write_var_int32 = write_varint32
    write_var_uint32 = write_varuint32
    write_var_int64 = write_varint64
    write_var_uint64 = write_varuint64
    read_var_int32 = read_varint32
    read_var_uint32 = read_varuint32
    read_var_int64 = read_varint64
    read_var_uint64 = read_varuint64
    write_float = write_float32
    write_double = write_float64
    read_float = read_float32
    read_double = read_float64
    write = write_bytes

    @classmethod
    def allocate(cls, Py_ssize_t size):
        """A buffer to write into, its first allocation `size` bytes."""
        cdef Buffer buf = cls()
        buf.size_hint = size
        return buf

    def write_uint16(self, v):
        _put_unsigned(self, v, 2)

    def write_uint32(self, v):
        _put_unsigned(self, v, 4)

    def write_uint64(self, v):
        _put_unsigned(self, v, 8)

    def read_uint16(self) -> int:
        return _take_unsigned(self, 2)

    def read_uint32(self) -> int:
        return _take_unsigned(self, 4)

    def read_uint64(self) -> int:
        return _take_unsigned(self, 8)

    def skip(self, Py_ssize_t n):
        """Move the read position n bytes on."""
        self.take(n)

    def get_reader_index(self) -> int:
        return self.pos

    def get_writer_index(self) -> int:
        return self.pos

    def set_reader_index(self, Py_ssize_t index):
        """Read from `index` on (0 <= index <= the input's length)."""
        if self.owns_data or index < 0 or index > self.size:
            raise ValueError(f"reader index {index} outside the input (0..{self.size})")
        self.pos = index

    def set_writer_index(self, Py_ssize_t index):
        """Go back to `index` of what was written (the later bytes are dropped)."""
        if (not self.owns_data and self.data != NULL) or index < 0 or index > self.pos:
            raise ValueError(f"writer index {index} outside what was written (0..{self.pos})")
        self.pos = index

    def to_bytes(self, Py_ssize_t offset=0, length=None) -> bytes:
        """`length` bytes from `offset` (default: to the end of what was written, or of
        the input)."""
        cdef Py_ssize_t end = self.pos if self.owns_data or self.data == NULL else self.size
        cdef Py_ssize_t n = end - offset if length is None else length
        if offset < 0 or n < 0 or offset + n > end:
            raise ValueError(f"bytes {offset}..{offset + n} outside the buffer (0..{end})")
        return PyBytes_FromStringAndSize(<const char*>self.data + offset, n)


cdef char* FORMAT_B = b"B"


cdef class BufferObject:
    """One out-of-band buffer: a view of the original memory, never a copy.

    It exposes the buffer protocol (flat bytes), like pickle.PickleBuffer, so
    `bytes(bo)`, `bytearray(bo)`, `memoryview(bo)` and `sock.sendall(bo)` work on it.
    """

    cdef public object _view          # the memoryview handed out by getbuffer()
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _one

    def __init__(self, view):
        view = memoryview(view)
        if not view.c_contiguous:
            raise ValueError("a BufferObject needs C-contiguous memory")
        self._view = view
        self._nbytes = view.nbytes
        self._one = 1

    def getbuffer(self):
        """The memory as a memoryview (format and shape kept; zero copy)."""
        return self._view

    def raw(self):
        """The memory as a flat memoryview of bytes (format 'B')."""
        view = self._view
        if view.format == "B" and view.ndim == 1:
            return view
        return view.cast("B")

    def total_bytes(self):
        return self._nbytes

    def write_to(self, stream):
        stream.write(self.raw())

    def __len__(self):
        return self._nbytes

    def __repr__(self):
        return f"BufferObject({self._nbytes} bytes)"

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        cdef Py_buffer src
        if (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE and self._view.readonly:
            raise BufferError("the buffer is read-only")
        # borrow the pointer: self._view keeps the memory alive while we exist
        PyObject_GetBuffer(self._view, &src, PyBUF_SIMPLE)
        buffer.buf = src.buf
        PyBuffer_Release(&src)
        buffer.len = self._nbytes
        buffer.readonly = self._view.readonly
        buffer.itemsize = 1
        if (flags & PyBUF_FORMAT) == PyBUF_FORMAT:
            buffer.format = FORMAT_B
        else:
            buffer.format = NULL
        buffer.ndim = 1
        buffer.shape = &self._nbytes if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buffer.strides = &self._one if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        buffer.obj = self

    def __releasebuffer__(self, Py_buffer* buffer):
        pass
