"""A fleet of clusters that exist only in memory: for unit tests of the admission queue and
the placement shell, where no process should start. Real clusters are tested with real Spark."""

from __future__ import annotations

from typing import Callable

from sparkfleet.fleet.controller import Cluster
from sparkfleet.fleet.model import ClusterState, FleetSnapshot, SizeClass
from sparkfleet.fleet.runtimes import Runtime


class InMemoryFleet:
    """What the gateway asks of a FleetController, over Cluster objects it is handed."""

    def __init__(self, clusters: list[Cluster] | None = None) -> None:
        self._clusters = {c.id: c for c in clusters or []}
        self._listeners: list[Callable[[Cluster], None]] = []

    @staticmethod
    def cluster(cluster_id: str, size: SizeClass, runtime: Runtime,
                state: ClusterState = ClusterState.READY) -> Cluster:
        return Cluster(cluster_id, size, runtime, (), 0.0, state=state)

    def add(self, cluster: Cluster) -> None:
        self._clusters[cluster.id] = cluster
        self.set_state(cluster, cluster.state)

    def set_state(self, cluster: Cluster, state: ClusterState) -> None:
        cluster.state = state
        for listener in self._listeners:
            listener(cluster)

    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot(tuple(c.view() for c in self._clusters.values()))

    def get(self, cluster_id: str) -> Cluster | None:
        return self._clusters.get(cluster_id)

    def clusters(self) -> list[Cluster]:
        return list(self._clusters.values())

    def on_state_change(self, listener: Callable[[Cluster], None]) -> None:
        self._listeners.append(listener)
