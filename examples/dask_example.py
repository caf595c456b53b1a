"""Dask distributed with pyfory: local classes and closures as results, arrays as frames.

    python examples/dask_example.py

The story: an analysis runs on a Dask cluster (here a LocalCluster of 2 worker processes
on 127.0.0.1; the same code talks to a remote scheduler). Workers load the "pyfory"
serialization family through a preload; the client asks for it first. Results that hold
a local class and a closure come back through pyfory, a 40 MB array is scattered and
gathered without a copy, and with the task-graph opt-in the tasks themselves go through
pyfory too. A worker started without the preload would be reported by connect() instead
of a gather that retries forever.
"""

from __future__ import annotations

import time

from distributed import LocalCluster
from pyfory.integrations import dask as fory_dask


def main() -> None:
    import numpy as np

    with LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                      dashboard_address=":0", preload=["pyfory.integrations.dask"]) as cluster:
        with fory_dask.connect(cluster) as client:        # checks every worker has the family
            class Summary:                                 # a local class
                def __init__(self, n, mean):
                    self.n, self.mean = n, mean

            offset = 10.0

            def summarize(values):
                return Summary(len(values), sum(values) / len(values) + offset), (lambda x: x + offset)

            summary, shift = client.submit(summarize, [1.0, 2.0, 3.0]).result(timeout=60)
            print(f"local-class result: n={summary.n} mean={summary.mean}; closure: shift(1)={shift(1)}")

            data = np.random.default_rng(0).random((2000, 2500))     # 40 MB
            start = time.perf_counter()
            [remote] = client.scatter([data])
            back = client.gather(remote)
            print(f"40 MB scatter + gather: {time.perf_counter() - start:.3f} s, "
                  f"equal={np.array_equal(back, data)}, writeable={back.flags.writeable}")

            fory_dask.enable_task_graphs()                 # tasks through pyfory as well
            try:
                print("task graph through pyfory:",
                      client.submit(lambda s: s.n * 100, summary).result(timeout=60))
            finally:
                fory_dask.disable_task_graphs()


if __name__ == "__main__":
    main()
