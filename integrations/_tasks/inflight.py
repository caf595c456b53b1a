"""What one worker holds: the batches sent to it and not answered in full yet.

Both executors keep one ``InFlight`` per worker. A result message answers some tasks of
a batch (answer); when the last one is answered the batch's buffer references are given
back to be released. A worker that is lost hands back every task it held (take_all):
the futures executor then breaks the pool, as the standard library's does; the zmq
executor sends them to another worker (at-least-once delivery, ``max_retries``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


class _Batch:
    __slots__ = ("tids", "tasks", "waiting", "refs", "size")

    def __init__(self, tids: List[Any], tasks: List[Any], refs: Any, size: int):
        self.tids = tids
        self.tasks = tasks
        # task id -> task for those not answered yet; made at the first partial answer
        # (most batches are answered whole: a futures batch always, a short zmq one too)
        self.waiting: Optional[Dict[Any, Any]] = None
        self.refs = refs  # buffer references the batch's message named
        self.size = size  # bytes of the message

    def unanswered(self) -> List[Any]:
        return self.tasks if self.waiting is None else list(self.waiting.values())


class InFlight:
    __slots__ = ("batches", "count")

    def __init__(self) -> None:
        self.batches: Dict[Any, _Batch] = {}
        self.count = 0  # tasks not answered yet

    def __len__(self) -> int:
        return len(self.batches)

    def add(self, batch_id: Any, tids: List[Any], tasks: List[Any], refs: Any = None, size: int = 0) -> None:
        self.batches[batch_id] = _Batch(list(tids), list(tasks), refs, size)
        self.count += len(tids)

    def answer(self, batch_id: Any, tids: List[Any]) -> Tuple[Optional[List[Any]], Any]:
        """(tasks answered, in the order of tids, None for ids not waiting; refs to release
        when this answer completes the batch). (None, None) for a batch not held: a stale
        answer (its tasks went to another worker)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None, None
        waiting = batch.waiting
        if waiting is None:
            if tids == batch.tids:  # the whole batch, in order
                del self.batches[batch_id]
                self.count -= len(tids)
                return batch.tasks, batch.refs
            waiting = batch.waiting = dict(zip(batch.tids, batch.tasks))
        pop = waiting.pop
        tasks = [pop(tid, None) for tid in tids]
        self.count -= sum(1 for task in tasks if task is not None)
        if waiting:
            return tasks, None
        del self.batches[batch_id]
        return tasks, batch.refs

    def only(self) -> Tuple[int, int]:
        """(tasks not answered, message bytes) of the one batch held (there must be one)."""
        (batch,) = self.batches.values()
        return len(batch.unanswered()), batch.size

    def take_all(self) -> Tuple[List[Any], List[Any]]:
        """Every task not answered (in the order sent) and every batch's refs; forgets them."""
        tasks: List[Any] = []
        refs: List[Any] = []
        for batch in self.batches.values():
            tasks.extend(batch.unanswered())
            if batch.refs:
                refs.append(batch.refs)
        self.batches.clear()
        self.count = 0
        return tasks, refs
