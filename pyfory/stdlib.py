"""Serializers for standard-library value types that are not inline in the core:
each one writes the few numbers or strings that define the value."""

from __future__ import annotations

import datetime
import decimal
import fractions
import uuid

from pyfory._core import Serializer
from pyfory.error import MalformedDataError

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


class SingletonSerializer(Serializer):
    """Ellipsis, NotImplemented: nothing to write, the reader returns the singleton."""

    def __init__(self, fory, cls, value):
        super().__init__(fory, cls)
        self.value = value

    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.value


class EmptyInstanceSerializer(Serializer):
    """Instances with no state at all: object() (a common sentinel), datetime.tzinfo()."""

    def write(self, ctx, obj):
        pass

    def read(self, ctx):
        return self.cls()


class RangeSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_value(obj.start)
        ctx.write_value(obj.stop)
        ctx.write_value(obj.step)

    def read(self, ctx):
        return range(ctx.read_value(), ctx.read_value(), ctx.read_value())


class SliceSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_value(obj.start)
        ctx.write_value(obj.stop)
        ctx.write_value(obj.step)

    def read(self, ctx):
        return slice(ctx.read_value(), ctx.read_value(), ctx.read_value())


def _time_of_day_us(t) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _split_time_of_day(us: int):
    s, micro = divmod(us, 1_000_000)
    m, sec = divmod(s, 60)
    h, minute = divmod(m, 60)
    return h, minute, sec, micro


class DateSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_varint64(obj.toordinal() - _EPOCH_ORDINAL)

    def read(self, ctx):
        return datetime.date.fromordinal(ctx.read_varint64() + _EPOCH_ORDINAL)


class TimeSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_varuint64(_time_of_day_us(obj) * 2 + obj.fold)
        ctx.write_value(obj.tzinfo)

    def read(self, ctx):
        packed = ctx.read_varuint64()
        tz = ctx.read_value()
        h, m, s, us = _split_time_of_day(packed >> 1)
        return datetime.time(h, m, s, us, tzinfo=tz, fold=packed & 1)


class DateTimeSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_varint64(obj.toordinal() - _EPOCH_ORDINAL)
        ctx.write_varuint64(_time_of_day_us(obj) * 2 + obj.fold)
        ctx.write_value(obj.tzinfo)

    def read(self, ctx):
        d = datetime.date.fromordinal(ctx.read_varint64() + _EPOCH_ORDINAL)
        packed = ctx.read_varuint64()
        tz = ctx.read_value()
        h, m, s, us = _split_time_of_day(packed >> 1)
        return datetime.datetime(d.year, d.month, d.day, h, m, s, us, tzinfo=tz, fold=packed & 1)


class TimeDeltaSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_varint64(obj.days)
        ctx.write_varint64(obj.seconds)
        ctx.write_varint64(obj.microseconds)

    def read(self, ctx):
        return datetime.timedelta(ctx.read_varint64(), ctx.read_varint64(), ctx.read_varint64())


class TimeZoneSerializer(Serializer):
    def write(self, ctx, obj):
        args = obj.__getinitargs__()  # (offset,) or (offset, name)
        ctx.write_value(args[0])
        ctx.write_value(args[1] if len(args) > 1 else None)

    def read(self, ctx):
        offset = ctx.read_value()
        name = ctx.read_value()
        if name is None:
            return datetime.timezone(offset)
        return datetime.timezone(offset, name)


class ZoneInfoSerializer(Serializer):
    """zoneinfo.ZoneInfo by its key, as pickle does (the same cached object comes back).

    A strict reader takes only keys of the installed time zones: each other key would make
    ZoneInfo search the time-zone path and the tzdata package (20 ms for 15 bytes of
    payload). The zones it loaded stay referenced here, so each zone file is read once
    per process, not once per payload (ZoneInfo's own cache keeps only a few)."""

    _known = None           # the installed keys, listed on the first strict read
    _loaded: dict = {}

    def write(self, ctx, obj):
        if obj.key is None:
            raise TypeError("a ZoneInfo built from a file has no key and cannot be serialized")
        ctx.write_string(obj.key)

    def read(self, ctx):
        key = ctx.read_string()
        if not self.fory.strict:
            return self.cls(key)
        zone = ZoneInfoSerializer._loaded.get((self.cls, key))
        if zone is not None:
            return zone
        if ZoneInfoSerializer._known is None:
            import zoneinfo

            ZoneInfoSerializer._known = frozenset(zoneinfo.available_timezones())
        if key not in ZoneInfoSerializer._known:
            raise MalformedDataError(f"no installed time zone has the key {key[:100]!r}")
        zone = ZoneInfoSerializer._loaded[self.cls, key] = self.cls(key)
        return zone


class DecimalSerializer(Serializer):
    # the string form is exact: sign, digits, exponent, nan payloads, infinities
    def write(self, ctx, obj):
        ctx.write_string(str(obj))

    def read(self, ctx):
        return decimal.Decimal(ctx.read_string())


_GCD_BITS = 1 << 16


def _fraction_as_written(num: int, den: int):
    f = object.__new__(fractions.Fraction)
    f._numerator = num
    f._denominator = den
    return f


class FractionSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_value(obj.numerator)
        ctx.write_value(obj.denominator)

    def read(self, ctx):
        num = ctx.read_value()
        den = ctx.read_value()
        # two ints, nothing else: Fraction() would also parse a string ("1e2000000000"
        # never finishes) or call a number type's methods
        if type(num) is not int or type(den) is not int or den <= 0:
            raise MalformedDataError("a Fraction needs an int numerator and a positive int denominator")
        if num.bit_length() <= _GCD_BITS and den.bit_length() <= _GCD_BITS:
            return fractions.Fraction(num, den)
        # the writer wrote a normalized fraction; checking that with gcd costs time
        # quadratic in the digits (seconds for two 300 KB ints), so large ones are taken
        # as written, as pickle's own Fraction(str) path would not do either
        return _fraction_as_written(num, den)


_SAFE = {uuid.SafeUUID.unknown: 0, uuid.SafeUUID.safe: 1, uuid.SafeUUID.unsafe: 2}
_SAFE_BACK = {v: k for k, v in _SAFE.items()}


class UUIDSerializer(Serializer):
    def write(self, ctx, obj):
        ctx.write_bytes(obj.bytes)
        ctx.write_uint8(_SAFE.get(obj.is_safe, 0))

    def read(self, ctx):
        raw = ctx.read_bytes(16)
        return uuid.UUID(bytes=raw, is_safe=_SAFE_BACK.get(ctx.read_uint8(), uuid.SafeUUID.unknown))
