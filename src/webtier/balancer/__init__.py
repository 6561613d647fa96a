"""webtier's HTTP/1.1 load balancer: any request to any worker."""

from webtier.balancer.config import BackendAddress, BalancerConfig, parse_backend
from webtier.balancer.server import Balancer

__all__ = ["BackendAddress", "Balancer", "BalancerConfig", "parse_backend"]
