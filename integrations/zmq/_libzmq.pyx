"""One-frame send and receive straight through libzmq's C functions, for the transport's
small messages (see transport.py: ``send``/``recv``).

pyzmq's ``recv(copy=False)`` builds a ``zmq.Frame`` (a Python-level object and a second
call into libzmq to learn whether more frames follow), and that is most of a small
message's receive cost. Here one call receives a frame, reads its "more" flag and hands
out its bytes. No header or library is needed at build time: :func:`bind` is given the
addresses of the libzmq functions that pyzmq's own extension already loaded, so the
sockets and the functions always come from the same libzmq. Without them (another pyzmq
backend, a libzmq whose symbols are hidden) the transport keeps pyzmq's path.
"""

from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR
from libc.stdint cimport uintptr_t

cdef extern from *:
    """
    /* zmq.h's zmq_msg_t: 64 opaque bytes, aligned for any scalar (its ABI since libzmq
       4.1; the caller checks the version). This union has its size and is at least as
       aligned. */
    typedef union { unsigned char opaque[64]; void *p; double d; long double ld; } pyfory_zmq_msg_t;
    typedef int (*pyfory_zmq_msg_fn)(pyfory_zmq_msg_t *);
    typedef int (*pyfory_zmq_msg_move_fn)(pyfory_zmq_msg_t *, pyfory_zmq_msg_t *);
    typedef int (*pyfory_zmq_msg_recv_fn)(pyfory_zmq_msg_t *, void *, int);
    typedef void *(*pyfory_zmq_msg_data_fn)(pyfory_zmq_msg_t *);
    typedef size_t (*pyfory_zmq_msg_size_fn)(const pyfory_zmq_msg_t *);
    typedef int (*pyfory_zmq_msg_more_fn)(const pyfory_zmq_msg_t *);
    typedef int (*pyfory_zmq_errno_fn)(void);
    typedef int (*pyfory_zmq_send_fn)(void *, const void *, size_t, int);
    """
    ctypedef struct pyfory_zmq_msg_t:
        pass
    ctypedef int (*pyfory_zmq_msg_fn)(pyfory_zmq_msg_t *) noexcept nogil
    ctypedef int (*pyfory_zmq_msg_move_fn)(pyfory_zmq_msg_t *, pyfory_zmq_msg_t *) noexcept nogil
    ctypedef int (*pyfory_zmq_msg_recv_fn)(pyfory_zmq_msg_t *, void *, int) noexcept nogil
    ctypedef void *(*pyfory_zmq_msg_data_fn)(pyfory_zmq_msg_t *) noexcept nogil
    ctypedef size_t (*pyfory_zmq_msg_size_fn)(const pyfory_zmq_msg_t *) noexcept nogil
    ctypedef int (*pyfory_zmq_msg_more_fn)(const pyfory_zmq_msg_t *) noexcept nogil
    ctypedef int (*pyfory_zmq_errno_fn)() noexcept nogil
    ctypedef int (*pyfory_zmq_send_fn)(void *, const void *, size_t, int) noexcept nogil

# the libzmq functions this module calls, by their C names (what bind() needs)
FUNCTIONS = ("zmq_msg_init", "zmq_msg_close", "zmq_msg_move", "zmq_msg_recv", "zmq_msg_data",
             "zmq_msg_size", "zmq_msg_more", "zmq_errno", "zmq_send")

cdef pyfory_zmq_msg_fn msg_init = NULL
cdef pyfory_zmq_msg_fn msg_close = NULL
cdef pyfory_zmq_msg_move_fn msg_move = NULL
cdef pyfory_zmq_msg_recv_fn msg_recv = NULL
cdef pyfory_zmq_msg_data_fn msg_data = NULL
cdef pyfory_zmq_msg_size_fn msg_size = NULL
cdef pyfory_zmq_msg_more_fn msg_more = NULL
cdef pyfory_zmq_errno_fn zmq_errno = NULL
cdef pyfory_zmq_send_fn zmq_send = NULL
cdef object raise_error = None
# frames of at least this many bytes are handed out in place (a Message), smaller ones
# as a bytes copy, which loads reads fastest
cdef Py_ssize_t copy_below = 65536


def bind(dict addresses, raise_error_for_errno, Py_ssize_t copy_threshold):
    """Set the libzmq functions (``{C name: address}`` for every name in FUNCTIONS), the
    callable that raises pyzmq's exception for an errno (it must raise), and the frame
    size from which received frames are not copied."""
    global msg_init, msg_close, msg_move, msg_recv, msg_data, msg_size, msg_more, zmq_errno, zmq_send
    global raise_error, copy_below
    cdef dict found = {}
    for name in FUNCTIONS:
        address = addresses.get(name)
        if not address:
            raise ValueError(f"no address for libzmq's {name}")
        found[name] = <uintptr_t>address
    msg_init = <pyfory_zmq_msg_fn><uintptr_t>found["zmq_msg_init"]
    msg_close = <pyfory_zmq_msg_fn><uintptr_t>found["zmq_msg_close"]
    msg_move = <pyfory_zmq_msg_move_fn><uintptr_t>found["zmq_msg_move"]
    msg_recv = <pyfory_zmq_msg_recv_fn><uintptr_t>found["zmq_msg_recv"]
    msg_data = <pyfory_zmq_msg_data_fn><uintptr_t>found["zmq_msg_data"]
    msg_size = <pyfory_zmq_msg_size_fn><uintptr_t>found["zmq_msg_size"]
    msg_more = <pyfory_zmq_msg_more_fn><uintptr_t>found["zmq_msg_more"]
    zmq_errno = <pyfory_zmq_errno_fn><uintptr_t>found["zmq_errno"]
    zmq_send = <pyfory_zmq_send_fn><uintptr_t>found["zmq_send"]
    raise_error = raise_error_for_errno
    copy_below = copy_threshold


cdef class Message:
    """A received frame of at least the copy threshold, read in place: the buffer
    protocol gives its bytes (read-only) for as long as this object lives."""

    cdef pyfory_zmq_msg_t msg
    cdef bint live

    def __cinit__(self):
        check_bound()
        msg_init(&self.msg)     # cannot fail: an empty message
        self.live = True

    def __dealloc__(self):
        if self.live:
            msg_close(&self.msg)

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, msg_data(&self.msg), <Py_ssize_t>msg_size(&self.msg), 1, flags)

    def __len__(self):
        return <Py_ssize_t>msg_size(&self.msg)

    @property
    def bytes(self):
        """A copy of the frame's bytes (what ``zmq.Frame.bytes`` gives)."""
        return PyBytes_FromStringAndSize(<char *>msg_data(&self.msg), <Py_ssize_t>msg_size(&self.msg))


cdef inline int check_bound() except -1:
    if msg_recv == NULL:
        raise RuntimeError("pyfory.integrations.zmq._libzmq: bind() was not called")
    return 0


cdef int receive(pyfory_zmq_msg_t *msg, void *socket, int flags) except -1:
    """zmq_msg_recv without the GIL, retried after a signal whose handler did not raise
    (as pyzmq does); any other failure raises pyzmq's exception."""
    cdef int rc, errno
    while True:
        with nogil:
            rc = msg_recv(msg, socket, flags)
        if rc >= 0:
            return 0
        errno = zmq_errno()
        if errno != EINTR:
            raise_error(errno)
            raise SystemError("raise_error returned")   # (bind's contract: it raises)
        PyErr_CheckSignals()


def recv_frame(uintptr_t socket, int flags):
    """Receive one frame on the libzmq socket at that address: its bytes (a copy, or a
    :class:`Message` from the copy threshold up) when it is the last frame of its
    message, or a one-item list holding them when more frames of the message follow."""
    cdef Message large
    cdef pyfory_zmq_msg_t small
    cdef Py_ssize_t size
    cdef int more
    check_bound()
    msg_init(&small)
    try:
        receive(&small, <void *>socket, flags)
        size = <Py_ssize_t>msg_size(&small)
        more = msg_more(&small)
        if size < copy_below:
            frame = PyBytes_FromStringAndSize(<char *>msg_data(&small), size)
        else:
            # hand the message to an object that owns it (a move: no copy)
            large = Message.__new__(Message)
            msg_move(&large.msg, &small)
            frame = large
    finally:
        msg_close(&small)
    if more:
        return [frame]
    return frame


def send_bytes(uintptr_t socket, bytes data not None, int flags):
    """Send data as one frame (copied by libzmq, as pyzmq's send(copy=True) does) on the
    libzmq socket at that address."""
    cdef const char *p = PyBytes_AS_STRING(data)
    cdef size_t n = <size_t>PyBytes_GET_SIZE(data)
    cdef int rc, errno
    check_bound()
    while True:
        with nogil:
            rc = zmq_send(<void *>socket, p, n, flags)
        if rc >= 0:
            return None
        errno = zmq_errno()
        if errno != EINTR:
            raise_error(errno)
            raise SystemError("raise_error returned")
        PyErr_CheckSignals()
