"""``tsnet store ...``: ts-store's CLI (``tsstore create``, ``tsstore key
regenerate|list|revoke``, spec §10) against the catalog, also while the
server runs (a key change reaches the server within seconds)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

from tsnet.plugin import CommandError, NotFound
from tsnet.protocols.tsstore.stores import STORE_TYPES, Settings, StoreError, Stores


class _Offline:
    """The part of a core the catalog commands use: catalog and storage."""

    def __init__(self, storages: Any) -> None:
        self.catalog = storages.catalog
        self.storage = storages


def _stores(storages: Any) -> Stores:
    section = storages.config.sections.get("tsstore", {})
    return Stores(_Offline(storages), Settings(
        admin_hash=None, num_blocks=section.get("num_blocks", 1024),
        data_block_size=section.get("data_block_size", 4096),
        index_block_size=section.get("index_block_size", 4096)))


def _out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def add_commands(sub: Any) -> dict:
    st = sub.add_parser("store", help="ts-store stores and their API keys")
    ssub = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = ssub.add_parser("create", help="create a store and print its first key (shown once)")
    c.add_argument("name")
    c.add_argument("--blocks", type=int, default=0, help="num_blocks (default: [tsstore])")
    c.add_argument("--data-size", type=int, default=0, help="data block size in bytes")
    c.add_argument("--index-size", type=int, default=0, help="index block size in bytes")
    c.add_argument("--type", choices=STORE_TYPES, default="json", help="default json")
    ssub.add_parser("list", help="one JSON object per store")
    k = ssub.add_parser("key", help="regenerate, list or revoke a store's API keys")
    ksub = k.add_subparsers(dest="key_action", required=True, metavar="KEY_ACTION")
    r = ksub.add_parser("regenerate", help="replace every key with one new key (shown once)")
    r.add_argument("store")
    ls = ksub.add_parser("list", help="key ids, creation times and notes")
    ls.add_argument("store")
    rv = ksub.add_parser("revoke", help="revoke one key by its id")
    rv.add_argument("store")
    rv.add_argument("id")
    return {("store", "create"): create, ("store", "list"): list_stores,
            ("store", "key"): key}


async def create(args: argparse.Namespace, storages: Any, reactor: Any) -> None:
    try:
        _, api_key, key_id = await _stores(storages).create(
            args.name, args.blocks, args.data_size, args.index_size, args.type)
    except StoreError as e:
        raise CommandError(e.message) from None
    _out({"name": args.name, "api_key": api_key, "key_id": key_id})


async def list_stores(args: argparse.Namespace, storages: Any, reactor: Any) -> None:
    for rec in sorted(await storages.catalog.list_solutions(), key=lambda r: r.name):
        attrs = rec.attributes.get("tsstore")
        if attrs:
            _out({"name": rec.name, **{k: v for k, v in attrs.items()
                                       if k not in ("schema", "connections")}})


async def key(args: argparse.Namespace, storages: Any, reactor: Any) -> None:
    stores = _stores(storages)
    try:
        if args.key_action == "regenerate":
            api_key, key_id = await stores.regenerate_key(args.store)
            _out({"store": args.store, "api_key": api_key, "key_id": key_id})
        elif args.key_action == "list":
            for t in await stores.keys(args.store):
                _out({"id": t.id, "created": _iso(t.created_ns), "note": t.description})
        else:
            await stores.revoke_key(args.store, args.id)
            _out({"store": args.store, "id": args.id, "revoked": True})
    except NotFound:
        raise CommandError(f"no store {args.store!r}") from None
    except StoreError as e:
        raise CommandError(e.message) from None
