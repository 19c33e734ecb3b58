"""Property tests for the CSV/TSV reader: whatever table we write, we read back exactly."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pandas._libs.parsers import STR_NA_VALUES

from balmm.data.readers import read_table

_NA = set(STR_NA_VALUES) | {"None"}  # pandas reads these as missing: not valid IDs
_id_chars = string.ascii_letters + string.digits + "-_.:"
ids_st = st.lists(
    st.text(_id_chars, min_size=1, max_size=8).filter(lambda s: s not in _NA),
    min_size=1,
    max_size=8,
    unique=True,
)
values_st = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.just(float("nan")),
)


@st.composite
def tables(draw):
    rows = draw(ids_st)
    cols = draw(ids_st)
    vals = draw(
        st.lists(
            st.lists(values_st, min_size=len(cols), max_size=len(cols)),
            min_size=len(rows),
            max_size=len(rows),
        )
    )
    return pd.DataFrame(
        np.array(vals, dtype=np.float32).reshape(len(rows), len(cols)),
        index=pd.Index(rows, name="sample"),
        columns=cols,
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(df=tables(), fmt=st.sampled_from([(".csv", ","), (".tsv", "\t"), (".csv.gz", ",")]))
@example(  # a feature named like the ID column's header: pandas would read "sample.1"
    df=pd.DataFrame([[1.0]], index=pd.Index(["a"], name="sample"), columns=["sample"]),
    fmt=(".csv", ","),
)
def test_csv_round_trip(tmp_path, df, fmt):
    ext, sep = fmt
    path = tmp_path / f"m{ext}"
    df.to_csv(path, sep=sep, float_format="%.9g")
    a = read_table(path, "m")
    assert list(a.obs_names) == list(df.index)
    assert list(a.var_names) == list(df.columns)
    np.testing.assert_array_equal(np.isnan(a.X), np.isnan(df.to_numpy()))
    np.testing.assert_allclose(a.X, df.to_numpy(), rtol=1e-6, equal_nan=True)
    assert a.X.dtype == np.float32
