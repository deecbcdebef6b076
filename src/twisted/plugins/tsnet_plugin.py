"""Makes `twistd tsnet` exist.  No __init__.py beside this file, by design."""

from twisted.application.service import ServiceMaker

tsnet = ServiceMaker(
    "tsnet",
    "tsnet.tap",
    "Ingest time series over OpenTSDB, ATSD and ts-store wire protocols into one store.",
    "tsnet",
)
