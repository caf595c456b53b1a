"""Serializer base class, importable where pyfory's guide imports it from.

``from pyfory.serializer import Serializer`` gives the same class as
``pyfory.Serializer``. A subclass may be written either way:

- pyfory's: ``__init__(self, type_resolver, cls)`` calling
  ``super().__init__(type_resolver, cls)``, registered as
  ``fory.register(Foo, type_id=100, serializer=FooSerializer(fory.type_resolver, Foo))``;
- this package's: ``FooSerializer(fory, cls)``, or the class itself as ``serializer=``.

``write(self, write_context, obj)`` and ``read(self, read_context)`` get the write /
read context of the call: a Buffer (``write_varint32``, ``write_var_uint32``,
``write_string``, ``write_float64``, ... and the matching ``read_*``) with
``write_ref(obj)`` / ``read_ref()`` for nested values of any type.
"""

from pyfory._core import ReadContext, Serializer, WriteContext

__all__ = ["Serializer", "WriteContext", "ReadContext"]
