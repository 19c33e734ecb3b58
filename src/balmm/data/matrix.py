"""Row and column access to a modality's matrix wherever it lives: a dense numpy array or a
scipy CSR matrix in memory, or on disk through anndata's backed mode (an h5py dataset or
anndata's CSR dataset). Every read returns float32, as the in-memory readers store it, so a
backed file gives the same numbers as the same file read into memory.

:class:`DiskMatrix` holds preprocessed (dense float32) rows in a plain file and reads a
batch of rows on demand, so a million-sample training set never sits in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# elements of one working chunk (64 MB as float32): bounds every chunked pass
CHUNK_ELEMENTS = 1 << 24
MAX_CHUNK_ROWS = 8192

Matrix = np.ndarray | sp.spmatrix


def is_backed(x: object) -> bool:
    """True for an on-disk matrix (anndata backed mode), False for numpy / scipy."""
    return not (isinstance(x, np.ndarray) or sp.issparse(x))


def is_sparse(x: object) -> bool:
    """Sparse in memory or on disk (anndata's backed CSR/CSC datasets)."""
    return sp.issparse(x) or hasattr(x, "format") and getattr(x, "format", "") in ("csr", "csc")


def chunk_rows(n_cols: int) -> int:
    """Rows per chunk so that a dense chunk of ``n_cols`` columns stays within the budget."""
    return int(max(1, min(MAX_CHUNK_ROWS, CHUNK_ELEMENTS // max(n_cols, 1))))


def _float32(x: Matrix) -> Matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32)
    return np.asarray(x, dtype=np.float32)


def read_rows(x: object, rows: np.ndarray) -> Matrix:
    """Rows ``rows`` (positions, any order) of ``x`` as an in-memory float32 matrix (CSR
    stays CSR), in the order given."""
    rows = np.asarray(rows, dtype=np.int64)
    if not is_backed(x):
        return _float32(x[rows])
    if len(rows) == 0:
        return _float32(x[0:0])
    # on disk, indices must increase: read the sorted unique rows (one span when they are
    # dense enough, which is cheaper than a point selection), then put them in order
    uniq, inverse = np.unique(rows, return_inverse=True)
    lo, hi = int(uniq[0]), int(uniq[-1]) + 1
    dense_span = hi - lo <= 2 * len(uniq)
    block = _float32(x[lo:hi])[uniq - lo] if dense_span else _float32(x[uniq])
    if len(uniq) == len(rows) and np.array_equal(uniq, rows):
        return block
    return block[inverse]


def to_dense(x: Matrix, dtype: type = np.float64) -> np.ndarray:
    """C-ordered dense copy (the layout fixes the summation order of later statistics)."""
    return np.array(x.toarray() if sp.issparse(x) else x, dtype=dtype, order="C")


def row_chunks(n: int, n_cols: int) -> Iterator[slice]:
    """Consecutive slices over ``range(n)`` sized by :func:`chunk_rows`."""
    step = chunk_rows(n_cols)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def column_blocks(n_cols: int, n_rows: int) -> list[np.ndarray]:
    """Column positions in blocks of at most :data:`CHUNK_ELEMENTS` / ``n_rows`` columns."""
    width = max(1, CHUNK_ELEMENTS // max(n_rows, 1))
    edges = list(range(0, n_cols, width)) + [n_cols]
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class ColumnReader:
    """Dense float64/float32 column blocks of ``rows`` x ``cols`` of a matrix, reading the
    source once: a CSR source (in memory or on disk) is gathered as one CSC matrix of just
    those rows and columns; a dense one on disk as one float32 array; an in-memory dense one
    is indexed directly."""

    def __init__(self, x: object, rows: np.ndarray, cols: np.ndarray) -> None:
        self.rows, self.cols = rows, cols
        if isinstance(x, np.ndarray):
            self._dense: np.ndarray | None = x
            self._csc = None
            return
        chunks = list(row_chunks(len(rows), x.shape[1] if is_backed(x) else len(cols)))
        # filled in place, a chunk at a time: gathering the chunks and then joining them
        # held the matrix two or three times (a 700,000 x 500 float32 block: 2.8 GB)
        if is_sparse(x):
            self._csc = _gather_csc(x, rows, cols, chunks) if chunks else None
            self._dense = None
        else:
            self._dense = np.empty((len(rows), len(cols)), dtype=np.float32)
            for sl in chunks:
                self._dense[sl] = read_rows(x, rows[sl])[:, cols]
            self._csc = None
        self.rows = np.arange(len(rows))  # positions in the gathered matrix
        self.cols = np.arange(len(cols))

    def block(self, which: np.ndarray) -> np.ndarray:
        """Columns ``which`` (positions in ``cols``) as a Fortran-ordered float32 array: each
        column contiguous, so numpy sums it pairwise whatever the block's width (and as it
        summed the column of a whole matrix before blocks)."""
        if self._csc is not None:
            return self._csc[:, self.cols[which]].toarray(order="F")
        assert self._dense is not None
        return np.asfortranarray(self._dense[np.ix_(self.rows, self.cols[which])])


def _gather_csc(
    x: object, rows: np.ndarray, cols: np.ndarray, chunks: list[slice]
) -> sp.csc_matrix:
    """``x[rows][:, cols]`` of a CSR matrix (in memory or on disk) as one CSC matrix, the
    same as stacking the chunks and converting, built in two passes over the row chunks
    (entries per column, then each chunk's entries put in place) so that only the result
    and one chunk are in memory."""
    counts = np.zeros(len(cols), dtype=np.int64)
    for sl in chunks:
        counts += np.bincount(read_rows(x, rows[sl])[:, cols].indices, minlength=len(cols))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    index_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    data = np.empty(indptr[-1], dtype=np.float32)
    indices = np.empty(indptr[-1], dtype=index_dtype)
    fill = indptr[:-1].copy()  # next free position of each column
    for sl in chunks:
        c = sp.csc_matrix(read_rows(x, rows[sl])[:, cols])  # rows increase within a column
        k = np.diff(c.indptr)
        dest = np.repeat(fill, k) + np.arange(c.nnz) - np.repeat(c.indptr[:-1], k)
        data[dest] = c.data
        indices[dest] = c.indices + sl.start
        fill += k
    return sp.csc_matrix((data, indices, indptr.astype(index_dtype)),
                         shape=(len(rows), len(cols)))  # fmt: skip


class DiskMatrix:
    """A dense float32 matrix in a plain file (row-major, no header), written once in row
    order and read a batch of rows at a time with ``pread``: nothing is memory-mapped, so
    only the rows asked for occupy memory."""

    def __init__(self, path: str | os.PathLike[str], n_rows: int, n_cols: int) -> None:
        self.path = Path(path)
        self.shape = (int(n_rows), int(n_cols))
        self.dtype = np.dtype(np.float32)
        self._row_bytes = self.shape[1] * 4
        self._fd: int | None = None
        self._written = 0

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 2

    # -- writing --------------------------------------------------------------------
    def append(self, block: np.ndarray) -> None:
        """Write the next rows (in order)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        with open(self.path, "ab") as f:
            f.write(block.tobytes())
        self._written += len(block)

    # -- reading --------------------------------------------------------------------
    def _fileno(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # the descriptor only; the file belongs to its folder
        with contextlib.suppress(OSError):
            self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (positions, any order) as a new float32 array."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        if len(rows) == 0 or self.shape[1] == 0:
            return out
        fd = self._fileno()
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        # runs of consecutive rows are read with one call each
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(srt)]])
        buf = np.empty_like(out)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            view = memoryview(buf[a:b]).cast("B")
            offset, done = int(srt[a]) * self._row_bytes, 0
            while done < len(view):  # one read returns at most 2 GiB on Linux
                got = os.preadv(fd, [view[done : done + (1 << 30)]], offset + done)
                if got <= 0:
                    raise OSError(f"{self.path}: short read ({done} of {len(view)} bytes)")
                done += got
        out[order] = buf
        return out

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
            return self[first][(slice(None), *rest)]
        if isinstance(key, slice):
            return self.read(np.arange(*key.indices(self.shape[0])))
        if isinstance(key, (int, np.integer)):
            return self.read(np.array([key]))[0]
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.read(key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # whole matrix: small data only
        out = self.read(np.arange(self.shape[0]))
        return out if dtype is None else out.astype(dtype)
