"""ATSD's own Python client (atsd-client 3.0.6 from the package index) reads
back through tsnet's read-back API what was written over ATSD's TCP port, from
a real ``twistd -n tsnet``, with a READ token as its user and password."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from atsd_client import connect_url
from atsd_client.models import (
    DateFilter,
    EntityFilter,
    MessageQuery,
    PropertiesQuery,
    SeriesFilter,
    SeriesQuery,
)
from atsd_client.services import (
    EntitiesService,
    MessageService,
    MetricsService,
    PropertiesService,
    SeriesService,
)

from tsnet.testing.process import TsnetProcess, running, tsnet

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:atsd]
protocol = atsd
endpoint = tcp:0:interface=127.0.0.1
solution = plant

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = atsd metrics
"""

T_MS = 1_425_482_080_000
START, END = "2015-03-04T00:00:00Z", "2015-03-05T00:00:00Z"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TsnetProcess]:
    with running(tmp_path, CONFIG, {"atsd", "http"}) as srv:
        yield srv


def send_tcp(port: int, commands: list[str]) -> list[str]:
    """Send commands, half-close, return the reply lines (debug acks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\n".join(commands) + "\n").encode())
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode().splitlines()


def test_atsd_client_reads_back_what_tcp_wrote(server: TsnetProcess) -> None:
    replies = send_tcp(server.ports["atsd"], [
        f"series e:Boiler-1 m:temperature=71.5 m:pressure=2.25 t:unit=A ms:{T_MS}",
        f"series e:boiler-1 m:temperature=72 x:temperature=\"rising fast\" t:unit=A "
        f"ms:{T_MS + 60_000}",
        f"property e:boiler-1 t:config k:part=valve v:model=V2 v:vendor=acme ms:{T_MS}",
        f"message e:boiler-1 t:type=alarm t:source=plc t:severity=MAJOR m:\"over 70\" ms:{T_MS}",
        "metric m:temperature l:Temperature u:celsius p:double",
        "entity e:boiler-1 l:\"Boiler 1\" t:site=north",
        "debug ping",
        f"debug series e:boiler-1 m:pressure=2.5 t:unit=A ms:{T_MS + 60_000}",
    ])
    assert replies == ["ok", "ok"]
    tsnet(server.config, "solution", "list")
    made = json.loads(tsnet(server.config, "token", "create", "plant").stdout)
    user, password = made["read"].split(":", 1)
    conn = connect_url(f"http://127.0.0.1:{server.ports['http']}", user, password)

    [series] = SeriesService(conn).query(SeriesQuery(
        series_filter=SeriesFilter(metric="temperature", tags={"unit": "A"}),
        entity_filter=EntityFilter(entity="boiler-1"),
        date_filter=DateFilter(start_date=START, end_date=END)))
    assert (series.entity, series.metric, series.tags) == ("boiler-1", "temperature",
                                                          {"unit": "A"})
    assert series.values() == [71.5, 72.0]  # (the client drops the text, x, it reads)

    [prop] = PropertiesService(conn).query(PropertiesQuery(
        type="config", entity_filter=EntityFilter(entity="boiler-1"),
        date_filter=DateFilter(start_date=START, end_date=END)))
    assert (prop.key, prop.tags) == ({"part": "valve"}, {"model": "V2", "vendor": "acme"})

    [msg] = MessageService(conn).query(MessageQuery(
        entity_filter=EntityFilter(entity="boiler-1"),
        date_filter=DateFilter(start_date=START, end_date=END)))
    assert (msg.type, msg.source, msg.severity, msg.message) == ("alarm", "plc", "MAJOR",
                                                                 "over 70")

    metric = MetricsService(conn).get("temperature")
    assert (metric.label, metric.units, metric.data_type) == ("Temperature", "celsius",
                                                             "DOUBLE")
    entity = EntitiesService(conn).get("boiler-1")
    assert (entity.label, entity.tags) == ("Boiler 1", {"site": "north"})
    assert MetricsService(conn).get("no-such-metric") is None  # a 404, as ATSD answers
