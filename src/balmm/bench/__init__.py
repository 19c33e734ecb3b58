"""balmm.bench: multi-seed comparisons of balancers with classic floors, shards and merging.

From Python::

    from balmm.bench import BenchSpec, run_bench, write_report
    result = run_bench(data, BenchSpec(balancers=["balmm", "none"], seeds=list(range(10))))
    write_report(result, "bench_out")
"""

from balmm.bench.aggregate import aggregate, write_partial
from balmm.bench.report import write_report
from balmm.bench.run import BenchResult, run_bench
from balmm.bench.spec import BenchSpec

__all__ = ["BenchResult", "BenchSpec", "aggregate", "run_bench", "write_partial", "write_report"]
