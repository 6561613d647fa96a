"""GeoDNS: send each client to the nearest healthy data center, and fail over when one goes down.

``routing`` (where a client is, which site answers), ``health`` (is a site up) and ``answer`` (the
DNS reply) are pure; ``dns`` moves bytes over UDP and TCP; ``service`` runs it all. ``webtier geo
--config geo.toml`` is the command line.
"""

from webtier.geo.config import GeoConfig, load_geo_config
from webtier.geo.routing import Answer, DataCenter, GeoTable, Location, Reason, route
from webtier.geo.service import GeoDNS

__all__ = ["Answer", "DataCenter", "GeoConfig", "GeoDNS", "GeoTable", "Location", "Reason", "load_geo_config", "route"]
