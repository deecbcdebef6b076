"""twistd glue: options and makeService.  Config file -> service tree, nothing else."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from tsnet.errors import ConfigError


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the tsnet server: every [listener:*] of the config file, writing into "
                "its [storage:*] backends. Stop it with SIGTERM: it stops accepting, commits "
                "what it has read and closes storage.")
    optParameters = [["config", "c", "etc/tsnet.ini", "The config file."]]

    def postOptions(self) -> None:
        from tsnet.config import load_config
        from tsnet.plugins import load_plugins

        self.plugins = load_plugins()
        try:
            self.config = load_config(self["config"], self.plugins)
        except ConfigError as e:
            # One line that names the problem, status 1: twistd's usage text
            # (what a UsageError prints) says nothing about a config file.
            raise SystemExit(f"tsnet: {e}") from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor  # the entry point is where the reactor is chosen

    from tsnet.service import TsnetService
    from tsnet.startup import StartupReport

    # twistd's own options (the parent of ours) carry its status pipe and pidfile
    report = StartupReport(options.parent)
    try:
        return TsnetService(options.config, options.plugins, reactor, freeze_gc=True,
                            report=report)
    except ConfigError as e:
        raise SystemExit(f"tsnet: {e}") from None
