"""tsnet: one Twisted server that ingests time series over many wire protocols."""

__version__ = "0.1.0"
