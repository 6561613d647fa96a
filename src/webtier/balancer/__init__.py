"""webtier's HTTP/1.1 load balancer: any request to any worker."""

from webtier.balancer.compiled import warn_if_stale

warn_if_stale()  # before the hot-path modules load: a stale compiled one would hide a source edit

from webtier.balancer.config import BackendAddress, BalancerConfig, parse_backend  # noqa: E402
from webtier.balancer.server import Balancer  # noqa: E402

__all__ = ["BackendAddress", "Balancer", "BalancerConfig", "parse_backend"]
