"""The plot of a run's rollouts: ``rollouts.png``, one panel per rollout.

Layer: simulations. Imports matplotlib (the Agg canvas only, as ``simulations.report``)
and ``simulations.rollouts`` (the traces). Nothing from Knit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.rollouts import RolloutTrace

MAX_PANELS = 6
"""Rollouts drawn at most (the first ones): a group of many deployments would be unreadable."""


def plot_rollouts(traces: Sequence[RolloutTrace], path: Path, *, title: str = "") -> None:
    """Draw, per rollout and against the seconds since its PUT, the new version's instances
    updated and healthy and the deployment's instances running (all versions, and of the new
    version), into a PNG at ``path``."""
    shown = [t for t in traces if t.samples][:MAX_PANELS]
    figure = Figure(figsize=(10, 3.2 * max(1, len(shown))), layout="constrained")
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title)
    for index, trace in enumerate(shown):
        axes = figure.add_subplot(len(shown), 1, index + 1)
        times = [s.at for s in trace.samples]
        series = [
            ("running (all versions)", [s.running for s in trace.samples], "tab:grey"),
            ("running (new version)", [s.running_new for s in trace.samples], "tab:blue"),
            ("updated", [s.updated for s in trace.samples], "tab:orange"),
            ("healthy", [s.healthy for s in trace.samples], "tab:green"),
        ]
        for name, values, colour in series:
            axes.step(times, values, where="post", label=name, color=colour)
        axes.axhline(trace.replicas, color="black", linewidth=0.6, linestyle=":")
        if trace.ended_at is not None:
            axes.axvline(trace.ended_at, color="grey", linestyle="--", linewidth=0.8)
        policy = trace.update.policy
        axes.set_title(
            f"{trace.name} → version {trace.version}: {policy.order}, max_parallel "
            f"{policy.max_parallel}, min_healthy_time {policy.min_healthy_time:g} s",
            fontsize="small",
        )
        axes.set_ylabel("instances")
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="x-small")
        if index == len(shown) - 1:
            axes.set_xlabel("seconds since the PUT")
    figure.savefig(path, format="png", dpi=100)


__all__ = ["MAX_PANELS", "plot_rollouts"]
