"""joblib with pyfory as loky's pickler: closures, local classes, and memmapped arrays.

    python examples/loky_example.py

The story: a script fans work out with joblib.Parallel (backend "loky"). Setting the loky
pickler to pyfory.integrations.loky (here with set_loky_pickler; LOKY_PICKLER in the
environment does the same) makes tasks and results travel through pyfory: closures and
local classes work, 10,000 small tasks go faster, and joblib still memory-maps the large
array instead of putting it in the messages.
"""

from __future__ import annotations

import time

from joblib import Parallel, delayed
from joblib.externals.loky import set_loky_pickler


def main() -> None:
    import numpy as np

    set_loky_pickler("pyfory.integrations.loky")
    rate = 1.5

    class Invoice:                                   # a local class
        def __init__(self, amount):
            self.amount = amount

    with Parallel(n_jobs=2, backend="loky") as parallel:
        invoices = parallel(delayed(lambda a: Invoice(a * rate))(a) for a in (10, 20, 30))
        print("local-class results:", [i.amount for i in invoices])

        start = time.perf_counter()
        out = parallel(delayed(lambda x: x + 1)(i) for i in range(10_000))
        print(f"10,000 small tasks: sum={sum(out)} in {time.perf_counter() - start:.3f} s")

        data = np.ones((2000, 2500))                 # 40 MB: joblib memmaps it
        kinds = parallel(delayed(lambda a: (type(a).__name__, float(a[0].sum())))(data) for _ in range(2))
        print("the array in the workers:", kinds)
    set_loky_pickler("cloudpickle")


if __name__ == "__main__":
    main()
