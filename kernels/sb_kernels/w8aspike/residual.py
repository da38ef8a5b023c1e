"""Weight codes past int8: int8 base codes plus a sparse residual, exact for any code.

The release computes a W8ASpike weight code as ``round(w / scale)`` with no clamp, and its scales are not
``max|w| / 127``: in the published checkpoint about 1% of the codes lie outside ``[-127, 127]`` (a public
audit of layer 0 found -182 to 194). Clamping them changes the model. Here a code matrix ``Q [N, K]``
(any integers) is held as

    Q = weight_int8 + R,    weight_int8 = clamp(Q, -127, 127),    R = Q - weight_int8 (sparse)

so that the int8 tensor cores still multiply every weight, and the few codes past int8 add
``R[n, k] * c[m, k]`` on top. ``R`` is stored row by row (CSR over the output rows ``n``):

- ``row_ptr`` int32 ``[N + 1]``: row ``n``'s entries are ``row_ptr[n] .. row_ptr[n + 1] - 1``;
- ``columns`` int32 ``[nnz]``: the input index ``k`` of each entry, non-decreasing within a row;
- ``values`` int8 ``[nnz]``: the entry, in ``[-127, 127]`` and non-zero.

A residual past ``±127`` (a code past ``±254``) is several entries at the same ``(n, k)``, which add.
Canonical form, checked by :meth:`ResidualCodes.check_against`: where ``R`` has entries the base code is
``±127`` and every entry has its sign, so ``|Q| > 127`` there (a residual that would fit int8 belongs in
the base codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sb_neurons.validation import check_int, check_tensor

INT8_CODE_MAX = 127  # base codes are symmetric: -128 is never used, so negation stays in int8


@dataclass(frozen=True, eq=False)
class ResidualCodes:
    """The sparse part ``R`` of a weight code matrix ``Q = weight_int8 + R`` (module docstring).

    Attributes:
        row_ptr: int32 ``[N + 1]``, non-decreasing from 0 to ``nnz``.
        columns: int32 ``[nnz]``, each in ``[0, K)``, non-decreasing within a row.
        values: int8 ``[nnz]``, each non-zero in ``[-127, 127]``.
        in_features: ``K``.

    Construction checks dtypes, shapes, devices and every bound (one pass over the entries, with a host
    read); :meth:`check_against` checks the canonical form against the base codes.
    """

    row_ptr: torch.Tensor
    columns: torch.Tensor
    values: torch.Tensor
    in_features: int

    def __post_init__(self) -> None:
        for name, dtype in (("row_ptr", torch.int32), ("columns", torch.int32), ("values", torch.int8)):
            tensor = check_tensor(getattr(self, name), f"residual.{name}")
            if tensor.dtype != dtype or tensor.ndim != 1:
                raise TypeError(f"residual.{name} must be a 1-d {dtype} tensor, got {tensor.dtype} of shape {tuple(tensor.shape)}")
        check_int(self.in_features, "residual.in_features", minimum=1)
        devices = {t.device for t in (self.row_ptr, self.columns, self.values)}
        if len(devices) != 1:
            raise ValueError(f"residual tensors must be on one device, got {sorted(map(str, devices))}")
        nnz = self.columns.numel()
        if self.values.numel() != nnz:
            raise ValueError(f"residual.values has {self.values.numel()} entries but residual.columns has {nnz}")
        if self.row_ptr.numel() < 2:
            raise ValueError("residual.row_ptr must hold N + 1 >= 2 offsets")
        ptr = self.row_ptr.to(torch.int64)
        if int(ptr[0]) != 0 or int(ptr[-1]) != nnz or bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(f"residual.row_ptr must be non-decreasing from 0 to nnz = {nnz}")
        if nnz:
            columns = self.columns.to(torch.int64)
            if int(columns.min()) < 0 or int(columns.max()) >= self.in_features:
                raise ValueError(f"residual.columns must lie in [0, in_features) = [0, {self.in_features}), "
                                 f"got {int(columns.min())}..{int(columns.max())}")
            rows = self.rows()
            unordered = (rows[1:] == rows[:-1]) & (columns[1:] < columns[:-1])
            if bool(unordered.any()):
                raise ValueError("residual.columns must be non-decreasing within each row")
            values = self.values.to(torch.int16)
            if bool((values == 0).any()) or bool((values.abs() > INT8_CODE_MAX).any()):
                raise ValueError("residual.values must be non-zero and in [-127, 127]")

    @property
    def out_features(self) -> int:
        return self.row_ptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.columns.numel()

    @property
    def device(self) -> torch.device:
        return self.columns.device

    def rows(self) -> torch.Tensor:
        """int64 ``[nnz]``: the output row ``n`` of every entry."""
        counts = (self.row_ptr[1:] - self.row_ptr[:-1]).to(torch.int64)
        return torch.repeat_interleave(torch.arange(self.out_features, device=self.device), counts)

    def to(self, device: torch.device | str) -> ResidualCodes:
        return ResidualCodes(self.row_ptr.to(device), self.columns.to(device), self.values.to(device), self.in_features)

    def dense(self, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        """``R`` as a dense ``[N, K]`` tensor of ``dtype`` (repeated entries added)."""
        dense = torch.zeros(self.out_features, self.in_features, dtype=torch.int32, device=self.device)
        dense.index_put_((self.rows(), self.columns.to(torch.int64)), self.values.to(torch.int32), accumulate=True)
        return dense.to(dtype)

    def check_against(self, weight_int8: torch.Tensor) -> None:
        """Raise ``ValueError`` unless this residual belongs to ``weight_int8`` ``[N, K]`` in canonical form:
        same ``N``, ``K`` and device, and at every entry a base code of ``±127`` with the entry's sign."""
        if not isinstance(weight_int8, torch.Tensor) or weight_int8.dtype != torch.int8 or weight_int8.ndim != 2:
            raise TypeError("weight_int8 must be an int8 tensor [N, K]")
        if (self.out_features, self.in_features) != tuple(weight_int8.shape):
            raise ValueError(f"residual is for [N, K] = [{self.out_features}, {self.in_features}], "
                             f"but weight_int8 is {list(weight_int8.shape)}")
        if self.device != weight_int8.device:
            raise ValueError(f"residual is on {self.device}, weight_int8 on {weight_int8.device}")
        if not self.nnz:
            return
        rows, columns = self.rows(), self.columns.to(torch.int64)
        base = weight_int8[rows, columns].to(torch.int32)
        wrong = base != INT8_CODE_MAX * torch.sign(self.values.to(torch.int32))
        if bool(wrong.any()):
            i = int(wrong.nonzero()[0, 0])
            n, k = int(rows[i]), int(columns[i])
            code = int(weight_int8[n, k]) + int(self.dense()[n, k])
            raise ValueError(
                f"residual entry at (n, k) = ({n}, {k}) gives the code {code} from base {int(base[i])}: a residual "
                "must extend a base code of +-127 in its own sign (a code that fits int8 belongs in weight_int8)"
            )

    @classmethod
    def cat(cls, parts: list[ResidualCodes | None], out_features: list[int], in_features: int) -> ResidualCodes | None:
        """The residual of weights stacked along ``N`` (``torch.cat`` of the base codes), or None when no
        part has an entry. ``parts[i]`` (None: no entry) belongs to a block of ``out_features[i]`` rows."""
        if all(part is None or not part.nnz for part in parts):
            return None
        device = next(part.device for part in parts if part is not None)
        pointers, columns, values, offset = [torch.zeros(1, dtype=torch.int32, device=device)], [], [], 0
        for part, rows in zip(parts, out_features):
            if part is None:
                pointers.append(torch.full((rows,), offset, dtype=torch.int32, device=device))
                continue
            pointers.append(part.row_ptr[1:] + offset)
            columns.append(part.columns)
            values.append(part.values)
            offset += part.nnz
        return cls(torch.cat(pointers), torch.cat(columns), torch.cat(values), in_features)


def split_weight_codes(codes: torch.Tensor) -> tuple[torch.Tensor, ResidualCodes | None]:
    """Integer weight codes ``[N, K]`` (any integer dtype, any values) as ``(weight_int8, residual)``:
    ``weight_int8 = clamp(codes, -127, 127)`` and the canonical :class:`ResidualCodes` of the rest, None
    when every code fits int8. Identity: ``weight_int8 + residual.dense() == codes``."""
    check_tensor(codes, "codes")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool or codes.ndim != 2:
        raise TypeError(f"codes must be a 2-d integer tensor [N, K], got {codes.dtype} of shape {tuple(codes.shape)}")
    wide = codes.to(torch.int64)
    base = wide.clamp(-INT8_CODE_MAX, INT8_CODE_MAX)
    rest = wide - base
    where = rest.nonzero()
    if not where.numel():
        return base.to(torch.int8), None
    left = rest[where[:, 0], where[:, 1]]
    # A residual past +-127 becomes ceil(|r| / 127) entries of at most 127 each, at the same (n, k).
    pieces = (left.abs() + INT8_CODE_MAX - 1) // INT8_CODE_MAX
    entry_rows = torch.repeat_interleave(where[:, 0], pieces)
    entry_columns = torch.repeat_interleave(where[:, 1], pieces)
    sign = torch.repeat_interleave(torch.sign(left), pieces)
    magnitude = torch.repeat_interleave(left.abs(), pieces)
    first = torch.repeat_interleave(torch.cumsum(pieces, 0) - pieces, pieces)
    index_in_code = torch.arange(entry_rows.numel(), device=codes.device) - first
    part = (magnitude - index_in_code * INT8_CODE_MAX).clamp(max=INT8_CODE_MAX)
    per_row = torch.bincount(entry_rows, minlength=codes.shape[0])
    row_ptr = torch.zeros(codes.shape[0] + 1, dtype=torch.int64, device=codes.device)
    row_ptr[1:] = torch.cumsum(per_row, 0)
    residual = ResidualCodes(row_ptr.to(torch.int32), entry_columns.to(torch.int32), (sign * part).to(torch.int8), codes.shape[1])
    return base.to(torch.int8), residual


def weight_codes(weight_int8: torch.Tensor, residual: ResidualCodes | None) -> torch.Tensor:
    """The full codes ``weight_int8 + R`` as int32 ``[N, K]``."""
    codes = weight_int8.to(torch.int32)
    return codes if residual is None else codes + residual.dense()


def code_statistics(weight_int8: torch.Tensor, residual: ResidualCodes | None) -> tuple[int, int]:
    """``(codes past int8, largest |code|)`` of ``weight_int8 + R``."""
    if residual is None or not residual.nnz:
        return 0, int(weight_int8.to(torch.int16).abs().max()) if weight_int8.numel() else 0
    codes = weight_codes(weight_int8, residual)
    return int((codes.abs() > INT8_CODE_MAX).sum()), int(codes.abs().max())


__all__ = ["INT8_CODE_MAX", "ResidualCodes", "code_statistics", "split_weight_codes", "weight_codes"]
