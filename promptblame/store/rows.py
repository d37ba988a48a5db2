"""Arrow results as Python rows, for results of many rows with few distinct values.

`Table.to_pylist` builds a new Python object for every value; a statistics-cell read returns
tens of thousands of rows whose strings (app, route, version) and hour starts repeat a few
hundred distinct values, and building the same `datetime` again for each row cost most of the
read (issue 18). Here each such column is dictionary-encoded and each distinct value converted
once (by Arrow, so the objects are the ones `to_pylist` gives: same values, types and tzinfo);
the rows share them. Numbers are converted column by column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _repeating(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
    )


def column_values(col: pa.ChunkedArray) -> list[Any]:
    """The column as a Python list, equal to `col.to_pylist()` (nulls as None)."""
    if not _repeating(col.type):
        return col.to_pylist()
    enc = pc.dictionary_encode(col).combine_chunks()
    distinct = np.array([*enc.dictionary.to_pylist(), None], dtype=object)
    index = enc.indices.fill_null(len(distinct) - 1).to_numpy()
    return distinct[index].tolist()


def to_dicts(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of `table` as dicts, equal to `table.to_pylist()`."""
    if table.num_rows == 0:
        return []
    names = table.column_names
    columns = [column_values(c) for c in table.itercolumns()]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
