"""Raw struct access must agree with attribute access, and refuse layouts it does not know."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from agent.nvml import consts as C
from agent.nvml.fields import entries
from agent.nvml.layout import decode_value, struct_for


def test_struct_for_matches_ctypes_offsets() -> None:
    layout = struct_for(pynvml.c_nvmlFieldValue_t, (("fieldId", "I"), ("nvmlReturn", "I"), ("value", "Q")))
    assert layout is not None and layout.size == ctypes.sizeof(pynvml.c_nvmlFieldValue_t)
    fv = pynvml.c_nvmlFieldValue_t()
    fv.fieldId, fv.nvmlReturn, fv.value.ullVal = 186, 3, 2**40 + 5
    assert layout.unpack(bytes(fv)) == (186, 3, 2**40 + 5)


@pytest.mark.parametrize(
    "fields",
    [
        (("fieldId", "Q"),),  # wrong size
        (("scopeId", "I"), ("fieldId", "I")),  # out of offset order
        (("noSuchField", "I"),),
    ],
)
def test_struct_for_refuses_what_does_not_fit(fields: tuple[tuple[str, str], ...]) -> None:
    assert struct_for(pynvml.c_nvmlFieldValue_t, fields) is None


@pytest.mark.parametrize(
    "vtype,attr,value",
    [
        (C.VALUE_TYPE_DOUBLE, "dVal", 12.5),
        (C.VALUE_TYPE_UNSIGNED_INT, "uiVal", 4_000_000_000),
        (C.VALUE_TYPE_UNSIGNED_LONG, "ulVal", 2**33),
        (C.VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", 2**63 + 1),
        (C.VALUE_TYPE_SIGNED_LONG_LONG, "sllVal", -(2**40)),
        (C.VALUE_TYPE_SIGNED_INT, "siVal", -7),
        (C.VALUE_TYPE_UNSIGNED_SHORT, "usVal", 65000),
    ],
)
def test_decode_value_agrees_with_the_union(vtype: int, attr: str, value: float) -> None:
    union = pynvml.c_nvmlValue_t()
    setattr(union, attr, value)
    assert decode_value(vtype, bytes(union)) == value


def test_fast_and_plain_field_entries_agree() -> None:
    values = (pynvml.c_nvmlFieldValue_t * 3)()
    for fv, (fid, scope, vtype, ret, val) in zip(
        values, [(83, 0, 3, 0, 10**12), (82, 0, 1, 0, 71), (138, C.UINT_MAX, 3, 3, 0)], strict=True
    ):
        fv.fieldId, fv.scopeId, fv.valueType, fv.nvmlReturn = fid, scope, vtype, ret
        fv.value.ullVal = val
    fast = list(entries(values))
    plain = list(entries(list(values)))  # a plain list takes the attribute path
    assert fast == plain == [(83, 0, 0, 10**12), (82, 0, 0, 71), (138, C.UINT_MAX, 3, None)]
