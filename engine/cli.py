"""The `pacs-edge` command: serve, echo, store, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import core_rs
from policies.config import ConfigError, load_config


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags = {
        ("node", "data_dir"): args.data_dir,
        ("node", "ae_title"): args.ae_title,
        ("dicom", "port"): args.port,
        ("dicom", "host"): args.host,
        ("http", "port"): args.http_port,
        ("storage", "durability"): args.durability,
    }
    out: dict[str, dict[str, Any]] = {}
    for (section, key), value in flags.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.server import StartupError, serve
    from monitoring.logs import configure

    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
    configure(config.logging.level)
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(config))
    except StartupError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from engine.scu import echo

    status = echo(args.host, args.port, args.calling_ae, args.called_ae)
    if status < 0:
        print(
            f"C-ECHO to {args.called_ae}@{args.host}:{args.port}: no association", file=sys.stderr
        )
        return 1
    print(f"C-ECHO to {args.called_ae}@{args.host}:{args.port}: status {status:#06x}")
    return 0 if status == 0 else 1


def cmd_store(args: argparse.Namespace) -> int:
    from engine.scu import store

    summary = store(args.host, args.port, args.paths, args.calling_ae, args.called_ae)
    print(
        f"{summary.sent} stored, {len(summary.failed)} failed, "
        f"{len(summary.skipped)} skipped (not DICOM)"
    )
    for path, why in summary.failed[:20]:
        print(f"  failed: {path}: {why}")
    return 1 if summary.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    url = f"{args.url.rstrip('/')}/api/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"pacs-edge status: cannot reach {url}: {exc}; is `pacs-edge serve` running?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    gib = data["bytes"] / 2**30
    print(f"pacs-edge {data['version']} AE {data['ae_title']}  ready={data['ready']}")
    print(
        f"  {data['instances']} instances, {data['series']} series, "
        f"{data['studies']} studies, {gib:.2f} GiB"
    )
    assoc = data["associations"]
    print(
        f"  associations: {assoc['active']} active, {assoc['accepted_total']} accepted, "
        f"{assoc['rejected_total']} rejected"
    )
    disk = data["storage"]
    print(
        f"  disk: {disk['disk_free_bytes'] / 2**30:.1f} GiB free of "
        f"{disk['disk_total_bytes'] / 2**30:.1f} GiB ({disk['data_dir']})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacs-edge", description="DICOM ingest engine for PACS edge servers"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pacs-edge {core_rs.__version__} ({core_rs.BUILD_PROFILE})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the engine")
    serve.add_argument("--config", type=Path, help="TOML file overriding the embedded defaults")
    serve.add_argument("--data-dir", help="where objects and the index live (default ./var)")
    serve.add_argument("--host", help="DICOM listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="DICOM port (default 11112)")
    serve.add_argument("--http-port", type=int, help="ops HTTP port (default 9112)")
    serve.add_argument("--ae-title", help="our AE title (default PACS_EDGE)")
    serve.add_argument("--durability", choices=["fsync", "os"])
    serve.set_defaults(run=cmd_serve)

    for name, helptext in (
        ("echo", "C-ECHO a DICOM node"),
        ("store", "send DICOM files or folders to a node"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("host")
        p.add_argument("port", type=int)
        if name == "store":
            p.add_argument("paths", type=Path, nargs="+", metavar="PATH")
        p.add_argument("--calling-ae", default="PACS_EDGE_SCU")
        p.add_argument("--called-ae", default="PACS_EDGE")
        p.set_defaults(run=cmd_echo if name == "echo" else cmd_store)

    st = sub.add_parser("status", help="show what a running engine holds")
    st.add_argument("--url", default="http://127.0.0.1:9112", help="the engine's ops HTTP")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
