"""The `tsnet` command: check the config, manage solutions and tokens, export.

It opens the same storage the server uses (SQLite in WAL mode takes a second
process), so it works while the server runs; the server notices token and
solution changes within ``[tsnet] auth_refresh`` seconds.  Output is JSON, one
object per line, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any

from twisted.internet import defer, task

from tsnet.errors import ConfigError, Conflict, NotFound
from tsnet.model import READ, WRITE, valid_solution_name
from tsnet.records import SolutionRecord

_TAG_CHARS = re.compile(r"[-_./\w]+\Z")


class CommandError(Exception):
    """A user error: printed as one line, exit status 1."""


def _tag(text: str) -> tuple[str, str]:
    k, eq, v = text.partition("=")
    if not eq or not k or not v or "=" in v:
        raise argparse.ArgumentTypeError(f"{text!r} is not K=V")
    for part in (k, v):
        if not _TAG_CHARS.match(part) or "\\" in part:
            raise argparse.ArgumentTypeError(
                f"{text!r}: tag keys and values take letters, digits, '-', '_', '.', '/'")
    if k == "ovh.auth":
        raise argparse.ArgumentTypeError("ovh.auth is reserved for authentication")
    return k, v


def _expires(text: str) -> int | None:
    if text.lower() == "never":
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    if not scopes or scopes - {READ, WRITE}:
        raise argparse.ArgumentTypeError("--scope takes read, write or read,write")
    return scopes


def _san(text: str) -> str:
    from tsnet.certs import san_entry

    try:
        san_entry(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _retention(text: str) -> str:
    """A retention as given (checked), or ``none``."""
    from tsnet.retention import parse_retention

    try:
        return "none" if parse_retention(text) is None else text.strip()
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def build_parser(plugins: Any = None) -> argparse.ArgumentParser:
    """The parser; each plugin's `IProtocolPlugin.addCommands` adds its own."""
    p = argparse.ArgumentParser(
        prog="tsnet", description="Manage a tsnet server: config, TLS certificates, "
                                  "solutions, tokens, export and import.")
    p.add_argument("--config", "-c", default=os.environ.get("TSNET_CONFIG") or "etc/tsnet.ini",
                   help="the server's config file (default: $TSNET_CONFIG, else "
                        "etc/tsnet.ini in the current folder; now %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("check-config", help="validate the config file without starting anything")

    tc = sub.add_parser(
        "tls-cert", help="write a self-signed certificate and key for local TLS (the config "
                         "file is not read: its ssl: listeners may be waiting for them)")
    tc.add_argument("--out", default=None, metavar="DIR",
                    help="where cert.pem and key.pem go (default: tls/ in the config "
                         "file's folder, where ssl: endpoints' relative paths start)")
    tc.add_argument("--host", type=_san, action="append", default=[], metavar="NAME",
                    help="a host name or IP address it is valid for, besides localhost, "
                         "127.0.0.1 and ::1 (repeatable)")
    tc.add_argument("--days", type=int, default=365, help="days it is valid (default 365)")
    tc.add_argument("--rsa", action="store_true", help="an RSA 2048 key (default: EC P-256)")
    tc.add_argument("--force", action="store_true", help="replace the files if they exist")

    sol = sub.add_parser("solution", help="create, list, update, delete solutions (tenants)")
    ssub = sol.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = ssub.add_parser("create", help="create a solution")
    c.add_argument("name")
    c.add_argument("--description", default="")
    c.add_argument("--storage", default="default", help="a [storage:NAME] of the config")
    c.add_argument("--retention", type=_retention, default=None, metavar="DURATION",
                   help="how long its points and messages are kept (90d, 12h, 1w; none: "
                        "as [tsnet] retention says)")
    ssub.add_parser("list", help="one JSON object per solution")
    up = ssub.add_parser("update", help="change a solution's description or retention")
    up.add_argument("name")
    up.add_argument("--description", default=None)
    up.add_argument("--retention", type=_retention, default=None, metavar="DURATION",
                    help="90d, 12h, 1w..., or none (then [tsnet] retention applies)")
    d = ssub.add_parser("delete", help="delete a solution and its tokens")
    d.add_argument("name")
    d.add_argument("--force", action="store_true", help="also delete the data it holds")

    tok = sub.add_parser("token", help="create, list, update, revoke tokens")
    tsub = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = tsub.add_parser("create", help="create a READ/WRITE token pair (secrets shown once)")
    c.add_argument("solution")
    c.add_argument("--description", default="")
    c.add_argument("--expires", type=_expires, default=None, help="ISO 8601 date, or never")
    c.add_argument("--tag", type=_tag, action="append", default=[], metavar="K=V",
                   help="added to every point written (WRITE) / every query (READ)")
    c.add_argument("--scope", type=_scopes, default=frozenset((READ, WRITE)),
                   help="read, write or read,write (default)")
    c.add_argument("--single", action="store_true",
                   help="one token with every scope instead of a pair")
    c.add_argument("--read-token", default=None, metavar="SECRET",
                   help="import a READ secret devices already hold")
    c.add_argument("--write-token", default=None, metavar="SECRET",
                   help="import a WRITE secret devices already hold")
    ls = tsub.add_parser("list", help="the tokens of a solution (never their secrets)")
    ls.add_argument("solution")
    u = tsub.add_parser("update", help="change description, expiry or tags")
    u.add_argument("id")
    u.add_argument("--description", default=None)
    u.add_argument("--expires", type=_expires, default=False, help="ISO 8601 date, or never")
    u.add_argument("--tag", type=_tag, action="append", default=None, metavar="K=V",
                   help="replaces all tags of the token")
    r = tsub.add_parser("revoke", help="revoke a token (both halves of a pair)")
    r.add_argument("id")

    e = sub.add_parser("export", help="every stored item as one JSON object per line")
    e.add_argument("--solution", default=None)

    im = sub.add_parser("import", help="load what export wrote, idempotently (also while the "
                                       "server runs)")
    im.add_argument("file", metavar="FILE", help="an export file, or - for standard input")
    im.add_argument("--storage", default="default", metavar="NAME",
                    help="the [storage:NAME] where solutions that do not exist are created "
                         "(default: default)")
    im.add_argument("--solution", default=None, help="import only this solution's lines")

    st = sub.add_parser("storage", help="upkeep of a [storage:*] section")
    stsub = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    rb = stsub.add_parser(
        "rebalance", help="after adding shards to a redis url: move each series to the "
                          "shard the ring names (run while no node writes)")
    rb.add_argument("name", nargs="?", default="default", help="the [storage:NAME] (default)")
    for plugin in (plugins or {}).values():
        for key, run in plugin.addCommands(sub).items():
            if key in COMMANDS:
                raise ValueError(f"plugin {plugin.name!r} redefines tsnet {' '.join(key)}")
            COMMANDS[key] = run
    return p


def main(argv: list[str] | None = None) -> None:
    from tsnet.config import load_config
    from tsnet.plugins import load_plugins

    plugins = load_plugins()
    args = build_parser(plugins).parse_args(argv)
    if args.command == "tls-cert":
        try:
            _out(tls_cert(args))
        except CommandError as e:
            print(f"tsnet: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        return
    try:
        config = load_config(args.config, plugins)
        if args.command == "check-config":
            from tsnet.service import TsnetService

            TsnetService(config, plugins, reactor=None)  # builds every listener: full check
            print(f"{config.path}: OK ({len(config.listeners)} listeners: "
                  f"{', '.join(config.listeners) or 'none'}; "
                  f"{len(config.storages)} storages: {', '.join(config.storages)})")
            return
    except ConfigError as e:
        print(f"tsnet: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    task.react(lambda reactor: defer.ensureDeferred(_run(reactor, args, config)))


async def _run(reactor: Any, args: argparse.Namespace, config: Any) -> None:
    from tsnet.storages import Storages

    storages = Storages(config, reactor)
    await storages.open()
    try:
        await COMMANDS[(args.command, getattr(args, "action", None))](args, storages, reactor)
    except (CommandError, ConfigError) as e:
        print(f"tsnet: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        sys.stdout.flush()
        await storages.close()


def _out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")


def _now_ns(reactor: Any) -> int:
    return int(reactor.seconds() * 1e9)


def tls_cert(args: argparse.Namespace) -> dict:
    """``tsnet tls-cert``: a self-signed pair for local TLS (see `tsnet.certs`)."""
    from pathlib import Path

    from tsnet.certs import fingerprint, hosts_of, self_signed, write_pair

    out = Path(args.out if args.out is not None
               else os.path.join(os.path.dirname(os.path.abspath(args.config)), "tls"))
    try:
        key, cert = self_signed(args.host, days=args.days, use_rsa=args.rsa)
        cert_path, key_path = write_pair(out, key, cert, force=args.force)
    except (ValueError, OSError) as e:  # FileExistsError included
        raise CommandError(str(e)) from None
    return {"cert": str(cert_path.absolute()), "key": str(key_path.absolute()),
            "hosts": hosts_of(cert),
            "not_after": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
            "sha256": fingerprint(cert)}


async def solution_create(args: Any, storages: Any, reactor: Any) -> None:
    if not valid_solution_name(args.name):
        raise CommandError(f"{args.name!r} is not a solution name (letters, digits, '-', '_', '.')")
    if args.storage not in storages.backends:
        raise CommandError(f"--storage: no [storage:{args.storage}] in the config "
                           f"(have: {', '.join(storages.backends)})")
    rec = SolutionRecord(name=args.name, description=args.description, storage=args.storage,
                         created_ns=_now_ns(reactor))
    _set_retention(rec, args.retention)
    try:
        await storages.catalog.create_solution(rec)
    except Conflict:
        raise CommandError(f"solution {args.name!r} exists already") from None
    _out(_solution_json(rec))


def _solution_json(rec: SolutionRecord) -> dict:
    from tsnet.retention import ATTRIBUTE

    return {"name": rec.name, "description": rec.description, "storage": rec.storage,
            "created": _iso(rec.created_ns),
            # its own retention (None: [tsnet] retention applies)
            "retention": rec.attributes.get(ATTRIBUTE)}


def _set_retention(rec: SolutionRecord, text: str | None) -> None:
    from tsnet.retention import ATTRIBUTE

    if text == "none":
        rec.attributes.pop(ATTRIBUTE, None)
    elif text is not None:
        rec.attributes[ATTRIBUTE] = text


async def solution_update(args: Any, storages: Any, reactor: Any) -> None:
    rec = await storages.catalog.get_solution(args.name)
    if rec is None:
        raise CommandError(f"no solution {args.name!r}")
    if args.description is None and args.retention is None:
        raise CommandError("nothing to change: give --description or --retention")
    if args.description is not None:
        rec.description = args.description
    _set_retention(rec, args.retention)
    try:
        await storages.catalog.update_solution(rec)
    except NotFound:
        raise CommandError(f"no solution {args.name!r}") from None
    _out(_solution_json(rec))


async def solution_list(args: Any, storages: Any, reactor: Any) -> None:
    for rec in sorted(await storages.catalog.list_solutions(), key=lambda r: r.name):
        _out(_solution_json(rec))


async def solution_delete(args: Any, storages: Any, reactor: Any) -> None:
    rec = await storages.catalog.get_solution(args.name)
    if rec is None:
        raise CommandError(f"no solution {args.name!r}")
    if args.name == "default":
        raise CommandError("the default solution always exists and cannot be deleted")
    backend = storages.backends.get(rec.storage)
    if backend is not None and await backend.solution_has_data(args.name):
        if not args.force:
            raise CommandError(f"solution {args.name!r} holds data: add --force to delete it too")
        await backend.delete_solution_data(args.name)
    await storages.catalog.delete_solution(args.name)
    _out({"name": args.name, "deleted": True})


async def token_create(args: Any, storages: Any, reactor: Any) -> None:
    from tsnet.auth import mint_token

    if await storages.catalog.get_solution(args.solution) is None:
        raise CommandError(f"no solution {args.solution!r} (create it with: tsnet solution "
                           f"create {args.solution})")
    if args.expires is not None and args.expires <= _now_ns(reactor):
        raise CommandError("--expires is in the past")
    try:
        record, shown = mint_token(
            args.solution, scopes=args.scope, single=args.single,
            description=args.description, expires_ns=args.expires, tags=dict(args.tag),
            now_ns=_now_ns(reactor), read_secret=args.read_token, write_secret=args.write_token)
    except ValueError as e:
        raise CommandError(str(e)) from None
    try:
        await storages.catalog.save_token(record)
    except Conflict:
        raise CommandError("that secret is already in use by another token") from None
    # each secret's own credential id: HTTP Basic's user name (the password is the
    # key after "<id>:" of a generated secret, or an imported secret whole)
    ids = {f"{role}_id": cred.id for role, cred in zip(shown, record.credentials, strict=True)}
    _out({"id": record.id, "solution": record.solution, **shown, **ids})


def _token_json(rec: Any) -> dict:
    out = rec.public()
    if "expires_ns" in out:
        out["expires"] = _iso(out.pop("expires_ns"))
    out["created"] = _iso(rec.created_ns)
    return out


async def token_list(args: Any, storages: Any, reactor: Any) -> None:
    if await storages.catalog.get_solution(args.solution) is None:
        raise CommandError(f"no solution {args.solution!r}")
    for rec in await storages.catalog.list_tokens(args.solution):
        _out(_token_json(rec))


async def _get_token(storages: Any, token_id: str) -> Any:
    rec = await storages.catalog.get_token(token_id)
    if rec is None:
        raise CommandError(f"no token {token_id!r}")
    return rec


async def token_update(args: Any, storages: Any, reactor: Any) -> None:
    rec = await _get_token(storages, args.id)
    if args.description is not None:
        rec.description = args.description
    if args.expires is not False:
        rec.expires_ns = args.expires
    if args.tag is not None:
        rec.tags = dict(args.tag)
    await storages.catalog.save_token(rec)
    _out(_token_json(rec))


async def token_revoke(args: Any, storages: Any, reactor: Any) -> None:
    rec = await _get_token(storages, args.id)
    rec.revoked = True
    await storages.catalog.save_token(rec)
    _out({"id": rec.id, "solution": rec.solution, "revoked": True})


async def export(args: Any, storages: Any, reactor: Any) -> None:
    from tsnet.export import store_line
    from tsnet.export_text import line_text
    from tsnet.interfaces import IExportText

    write = sys.stdout.write

    def emit(obj: dict) -> None:
        write(line_text(obj))

    async def lines_of(backend: Any, solution: str | None) -> None:
        if IExportText.providedBy(backend):  # rendered in bulk, no dict per line
            await backend.export_text(solution, write)
        else:
            await backend.export(solution, emit)

    if args.solution is not None:
        rec = await storages.catalog.get_solution(args.solution)
        if rec is None:
            raise CommandError(f"no solution {args.solution!r}")
        if rec.attributes.get("tsstore"):
            emit(store_line(rec.name, rec.attributes["tsstore"]))
        await lines_of(storages.retained(rec.storage), args.solution)  # (retention applied)
        return
    # the catalog's store lines first, so each comes before its records
    for rec in sorted(await storages.catalog.list_solutions(), key=lambda r: r.name):
        if rec.attributes.get("tsstore"):
            emit(store_line(rec.name, rec.attributes["tsstore"]))
    for name in storages.backends:
        await lines_of(storages.retained(name), None)


#: refused lines named one by one; past that, only counted
SHOWN_REFUSALS = 100


async def import_(args: Any, storages: Any, reactor: Any) -> None:
    """``tsnet import FILE|-``: see `tsnet.importer`.  Refused lines are named
    on stderr (``tsnet: FILE:LINE: why``); the counts go to stdout as one JSON
    object; the status is 1 when a line was refused or a write failed."""
    from tsnet.core import build_ingest
    from tsnet.errors import NotFound
    from tsnet.importer import ImportAborted, Importer, family_importers
    from tsnet.metrics import Metrics
    from tsnet.plugins import load_plugins
    from tsnet.service import settle_gc

    # a batch in flight is tens of thousands of young objects: as in the
    # server, full collections over everything loaded so far are spaced out
    settle_gc()
    config = storages.config
    name = "<stdin>" if args.file == "-" else args.file
    shown = [0]

    def report(lineno: int, message: str, refused: bool) -> None:
        if not refused:
            print(f"tsnet: {name}:{lineno}: note: {message}", file=sys.stderr)
            return
        shown[0] += 1
        if shown[0] <= SHOWN_REFUSALS:
            print(f"tsnet: {name}:{lineno}: {message}", file=sys.stderr)

    try:
        source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as e:
        raise CommandError(f"{name}: {e.strerror}") from None
    ingest = build_ingest(config, storages, reactor, Metrics())
    aborted = None
    try:
        try:
            importer = Importer(
                storages, ingest, storage=args.storage, only=args.solution,
                families=family_importers(load_plugins(), storages, args.storage),
                now_ns=lambda: _now_ns(reactor), report=report)
        except NotFound as e:
            raise CommandError(f"--storage: {e}") from None
        except ValueError as e:  # (two plugins restore one kind)
            raise CommandError(str(e)) from None
        try:
            await importer.run(source)
        except ImportAborted as e:
            aborted = str(e)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        await ingest.stop()
    counts = importer.counts
    if shown[0] > SHOWN_REFUSALS:
        print(f"tsnet: {name}: {shown[0] - SHOWN_REFUSALS} more lines refused",
              file=sys.stderr)
    _out({"file": name, **counts.as_dict()})
    if aborted is not None:
        print(f"tsnet: {name}: {aborted}", file=sys.stderr)
    if aborted is not None or counts.rejected:
        sys.stdout.flush()
        raise SystemExit(1)


async def storage_rebalance(args: Any, storages: Any, reactor: Any) -> None:
    backend = storages.backends.get(args.name)
    if backend is None:
        raise CommandError(f"no [storage:{args.name}] in the config")
    rebalance = getattr(backend, "rebalance", None)
    if rebalance is None:
        raise CommandError(f"[storage:{args.name}] is not sharded: nothing to rebalance")
    _out({"storage": args.name, **(await rebalance())})


COMMANDS = {
    ("solution", "create"): solution_create,
    ("solution", "list"): solution_list,
    ("solution", "update"): solution_update,
    ("solution", "delete"): solution_delete,
    ("token", "create"): token_create,
    ("token", "list"): token_list,
    ("token", "update"): token_update,
    ("token", "revoke"): token_revoke,
    ("export", None): export,
    ("import", None): import_,
    ("storage", "rebalance"): storage_rebalance,
}
