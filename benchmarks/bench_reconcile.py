"""Benchmark of the pure reconciler (``knit.domain.reconcile``) on a deployment of 1,000
instances: the cost of one decision, which a DeploymentActor pays after every burst of facts.

Run ``python -m benchmarks.bench_reconcile``. It prints one line per case, then, as its last
line, one JSON object of the figures (microseconds per call, the median of ``ROUNDS``)::

    steady_us          1,000 instances running and healthy, nothing to do
    scale_up_us        1,000 wanted, 900 there: 100 created
    rollout_stop_first_us   half-way through a rollout, batches of 10
    rollout_start_first_us  the same, start_first
    node_lost_us       a node with 100 of them is lost (``node_lost``)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from knit.domain.reconcile import Desired, node_lost, reconcile
from knit.domain.rollout import Rollout, Update
from knit.domain.specs import RolloutState
from knit.domain.update_policy import UpdateOrder
from tests.support.observed import Inst

INSTANCES = 1_000
ROUNDS = 200
NOW = 10_000.0


def fleet(count: int, version: int = 1, start: int = 0) -> list[Inst]:
    return [
        Inst(id=f"{version}-{i}", index=i, version=version, node_id=f"n{i % 10}", health="healthy")
        for i in range(start, start + count)
    ]


def measure(call: Callable[[], object]) -> float:
    """Median microseconds of one call."""
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1e6)
    return statistics.median(times)


def main() -> None:
    done = Rollout(1, RolloutState.COMPLETE)
    steady = Desired(replicas=INSTANCES, checked=True, rollout=done)
    half = fleet(INSTANCES // 2, version=2) + fleet(INSTANCES // 2, start=INSTANCES // 2)
    rolling = Rollout(2, RolloutState.RUNNING, started_at=NOW - 1)

    def rollout(order: UpdateOrder) -> Desired:
        return Desired(
            replicas=INSTANCES,
            version=2,
            checked=True,
            update=Update(max_parallel=10, order=order),
            rollout=rolling,
            stable=frozenset({1}),
        )

    everything, fewer = fleet(INSTANCES), fleet(INSTANCES - 100)
    figures = {
        "steady_us": measure(lambda: reconcile(steady, everything, {}, NOW)),
        "scale_up_us": measure(lambda: reconcile(steady, fewer, {}, NOW)),
        "rollout_stop_first_us": measure(
            lambda: reconcile(rollout(UpdateOrder.STOP_FIRST), half, {}, NOW)
        ),
        "rollout_start_first_us": measure(
            lambda: reconcile(rollout(UpdateOrder.START_FIRST), half, {}, NOW)
        ),
        "node_lost_us": measure(
            lambda: node_lost(everything, {}, "n3", removed=False, lost_after=30, now=NOW)
        ),
    }
    for name, value in figures.items():
        print(f"{name:28} {value:10.0f}")
    print(json.dumps({k: round(v, 1) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
