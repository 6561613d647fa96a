"""The worker pool: supervised worker processes behind the balancer."""

from webtier.pool.supervisor import PoolConfig, Supervisor, Worker

__all__ = ["PoolConfig", "Supervisor", "Worker"]
