"""Triton device functions shared by the kernels of :mod:`sb_kernels`, callable from compiled and
interpreted kernels alike: ``DeviceFunction`` (a ``@triton.jit`` device function the interpreter can
call), ``round_to``, ``round_half_even`` and ``quotient_rn``. All are None where triton is missing."""

from __future__ import annotations

try:  # the package must import without triton: the torch backends need none of this
    import triton.language as tl
    from triton.language.extra import libdevice
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
except ImportError:  # pragma: no cover - exercised only where triton is missing
    tl = DeviceFunction = round_to = round_half_even = quotient_rn = to_dtype = None

if tl is not None:

    class DeviceFunction(JITFunction):
        """A ``@triton.jit`` device function that Triton's interpreter can call too.

        Compiled kernels inline it like any ``JITFunction``; a kernel running in the interpreter calls
        it as a Python function, which plain ``JITFunction`` refuses outside compilation.
        """

        def __call__(self, *args, **kwargs):
            interpreted = self.__dict__.get("_interpreted")
            if interpreted is None:
                interpreted = self.__dict__["_interpreted"] = InterpretedFunction(self.fn)
            return interpreted(*args, **kwargs)

    @DeviceFunction
    def round_to(x, DT: tl.constexpr):
        """float32 ``x`` rounded to the nearest ``DT`` value (ties to even), returned as float32.

        bfloat16 is rounded on the bits: Triton's interpreter truncates a float32 -> bfloat16 cast,
        while PyTorch (and compiled Triton) round to nearest even. A value rounded here converts to
        bfloat16 exactly under either rule. Values past bfloat16's range become inf; NaN is passed through
        as it is (the carry of the bit trick would turn NVIDIA's NaN, 0x7FFFFFFF, into -0.0).
        """
        if DT == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
            return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
        elif DT == tl.float16:
            return x.to(tl.float16).to(tl.float32)
        else:
            return x

    @DeviceFunction
    def to_dtype(x, DT: tl.constexpr):
        """float32 ``x`` that :func:`round_to` has rounded to ``DT``, converted to ``DT`` exactly.

        bfloat16 takes the upper half of the bits: Triton's interpreter (3.9) converts a subnormal
        float32 to bfloat16 wrongly (``-9.18e-40`` becomes ``-2**-128``), and for a value already on
        bfloat16's grid the upper half is the exact conversion, compiled or interpreted.
        """
        if DT == tl.bfloat16:
            return (x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return x.to(DT)

    @DeviceFunction
    def round_half_even(y, COMPILED: tl.constexpr):
        """float32 ``y`` rounded to the nearest integer, ties to even (``torch.round``), as float32.

        Compiled: libdevice's ``rint``. The interpreter has no libdevice: ``|y| + 2**23`` lands where
        float32 spacing is 1, so the add rounds half to even (values from 2**23 on are integers already).
        """
        if COMPILED:
            r = libdevice.rint(y)
        else:
            a = tl.abs(y)
            a = tl.where(a < 8388608.0, (a + 8388608.0) - 8388608.0, a)
            r = tl.where(y < 0, -a, a)
        return r

    @DeviceFunction
    def quotient_rn(x, v, inv, COMPILED: tl.constexpr):
        """float32 ``RN(x / v)``, the correctly rounded IEEE quotient, capped at ``+-2**40``.

        ``inv`` is ``RN(1 / v)``, broadcast like ``v``. Compiled: with ``q = RN(x * inv)`` within an ulp
        of ``x / v``, the remainder ``x - q v`` is exact in one fma and ``RN(q + rem * inv)`` is
        ``RN(x / v)`` (Markstein): no division per element, which bounded 16-bit rows by the instruction
        rate. Interpreted: an IEEE division, because the interpreter of Triton 3.6 and earlier
        computes an fma as a product and a sum, rounded twice, which moves a quotient on a rounding tie
        (a one-element row gives exactly ``x / v = +-k``) by an ulp, and so its count.
        The cap keeps a quotient past float32's range (an absurd ``k``) finite on both paths.
        """
        if COMPILED:
            q = tl.minimum(tl.maximum(x * inv, -1099511627776.0), 1099511627776.0)
            y = tl.fma(tl.fma(-q, v, x), inv, q)
        else:
            y = tl.minimum(tl.maximum(tl.math.div_rn(x, v), -1099511627776.0), 1099511627776.0)
        return y
