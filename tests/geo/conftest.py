"""A small geo configuration shared by the tests: two data centers, two client networks."""

from __future__ import annotations

import pytest

from webtier.geo.config import GeoConfig, geo_config_from_mapping

DOCUMENT = {
    "geo": {
        "zone": "webtier.test",
        "names": ["www", "@"],
        "ttl": 7,
        "default_location": [50.1, 8.7],  # Frankfurt
        "listen": "127.0.0.1:5353",
        "datacenters": [
            {"name": "seoul", "addresses": ["127.0.0.2", "::2"], "location": [37.57, 126.98]},
            {"name": "frankfurt", "addresses": ["127.0.0.3"], "location": [50.11, 8.68]},
        ],
        "networks": [{"prefix": "203.0.113.0/24", "location": [37.5, 127.0]}],
    }
}


@pytest.fixture
def geo_config() -> GeoConfig:
    return geo_config_from_mapping(DOCUMENT)
