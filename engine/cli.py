"""The `pacs-edge` command: serve, echo, store, status, queue, dead, recall, reload, token.

Commands that talk to a running engine use its ops HTTP API; where it asks for a
token, they send the one in $PACS_EDGE_TOKEN or in the file given by --token-file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ByteSize

import core_rs
from engine.ops.client import TOKEN_VARIABLE, ApiError, OpsClient, token_from
from policies.config import Config, ConfigError, load_config
from storage.index import INDEX_FILLING


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags = {
        ("node", "data_dir"): args.data_dir,
        ("node", "ae_title"): args.ae_title,
        ("node", "workers"): getattr(args, "workers", None),
        ("dicom", "port"): args.port,
        ("dicom", "host"): args.host,
        ("http", "host"): args.http_host,
        ("http", "port"): args.http_port,
        ("storage", "durability"): args.durability,
    }
    out: dict[str, dict[str, Any]] = {}
    for (section, key), value in flags.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.workers import serve_workers
    from monitoring.logs import configure

    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
    configure(config.logging.level)
    if config.ingest_workers > 1:
        return serve_workers(args.config, _overrides(args))
    from engine.server import StartupError, run, serve  # not in the supervisor: ~10 MB less

    try:
        run(serve(config, load=lambda: load_config(args.config, _overrides(args))))
    except StartupError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from engine.echo import echo

    status = echo(args.host, args.port, args.calling_ae, args.called_ae)
    if status < 0:
        print(
            f"C-ECHO to {args.called_ae}@{args.host}:{args.port}: no association", file=sys.stderr
        )
        return 1
    print(f"C-ECHO to {args.called_ae}@{args.host}:{args.port}: status {status:#06x}")
    return 0 if status == 0 else 1


def cmd_store(args: argparse.Namespace) -> int:
    """`store` sends to any node; `import` to this edge, with its port and AE title."""
    from engine.send_files import send

    if args.command == "store":
        host, port, called_ae = args.host, args.port, args.called_ae
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"pacs-edge: {exc}", file=sys.stderr)
            return 2
        host = "127.0.0.1" if config.dicom.host in ("0.0.0.0", "::") else config.dicom.host
        port, called_ae = config.dicom.port, config.node.ae_title
    summary = send(host, port, args.paths, args.calling_ae, called_ae)
    mb = summary.bytes / 1e6
    print(
        f"{summary.sent} stored ({mb:.1f} MB), {len(summary.failed)} failed, "
        f"{len(summary.skipped)} skipped (not DICOM)"
    )
    for path, why in summary.failed[:20]:
        print(f"  failed: {path}: {why}")
    if args.command == "import":
        for path, why in summary.skipped[:20]:
            print(f"  skipped: {path}: {why}")
        if len(summary.skipped) > 20:
            print(f"  ... and {len(summary.skipped) - 20} more skipped")
    return 1 if summary.failed else 0


def _api(args: argparse.Namespace, path: str, method: str = "GET") -> Any:
    client = OpsClient(args.url, token_from(args.token_file))
    try:
        return client.json(path, method)
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    data = _api(args, "/api/v1/status")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    gib = data["bytes"] / 2**30
    site = f" site {data['site']}" if data.get("site") else ""
    workers = data["workers"]
    print(
        f"pacs-edge {data['version']} AE {data['ae_title']}{site}  ready={data['ready']}  "
        f"workers {workers['running']}/{workers['expected']}"
    )
    print(
        f"  {data['instances']} instances, {data['series']} series, "
        f"{data['studies']} studies, {gib:.2f} GiB"
    )
    assoc = data["associations"]
    print(
        f"  associations: {assoc['active']} active, {assoc['accepted_total']} accepted, "
        f"{assoc['rejected_total']} rejected"
    )
    for live in assoc["live"][:20]:
        via = f" via {live['via']}" if live.get("via") else ""
        tls = " TLS" if live["tls"] else ""
        print(f"    {live['calling_ae']:<16} {live['peer']}{via}{tls}  {live['seconds']:.0f} s")
    disk = data["storage"]
    print(
        f"  disk: {disk['disk_free_bytes'] / 2**30:.1f} GiB free of "
        f"{disk['disk_total_bytes'] / 2**30:.1f} GiB ({disk['data_dir']})"
        + ("  REFUSING NEW STORES: disk full" if disk.get("refusing_associations") else "")
    )
    used, size = disk.get("index_bytes", 0), disk.get("index_map_bytes", 0)
    if size and used / size >= INDEX_FILLING:
        print(
            f"  INDEX {used / size:.0%} FULL ({ByteSize(used).human_readable()} of "
            f"{ByteSize(size).human_readable()}): "
            "at 100% every store gets 0xA700; raise storage.index_map_size and restart"
        )
    if disk.get("catalog_rebuild_due"):
        print(
            "  INDEX CATALOG DAMAGED: the objects a damaged record counts get 0xA700; "
            "restart the engine to rebuild it"
        )
    tiers = disk.get("tiers", {})
    print(
        "  tiers: "
        + ", ".join(
            f"{tier} {t['instances']} ({t['bytes'] / 2**30:.2f} GiB"
            + (" at the destinations)" if tier == "central" else ")")
            for tier, t in tiers.items()
        )
    )
    for name, dest in data.get("destinations", {}).items():
        print(f"  -> {name}: {_destination_line(dest)}")
    return 0


def _destination_line(dest: dict[str, Any]) -> str:
    line = (
        f"{dest['depth']} queued (oldest {dest['oldest_age_seconds']:.0f} s), "
        f"{dest['in_flight']} in flight, {dest['sent']} sent, {dest['committed']} committed, "
        f"{dest['dead']} dead, circuit {dest['circuit']}"
    )
    return f"{line}; last error: {dest['last_error']}" if dest.get("last_error") else line


def _print_jobs(jobs: list[dict[str, Any]], dead: bool) -> None:
    if not jobs:
        print("  (none)")
    for job in jobs:
        why = f"  {job['attempts']} attempt(s): {job['last_error']}" if job["last_error"] else ""
        print(f"  {job['sop_instance_uid']}  {job['priority']}  {job['size']} B{why}")
    if dead and jobs:
        print("  `pacs-edge dead requeue DEST` sends them again once the cause is fixed")


def cmd_queue(args: argparse.Namespace) -> int:
    base = "/api/v1/queues"
    if args.action == "ls":
        data = _api(args, base)
        names = [args.destination] if args.destination else sorted(data)
        if args.json:
            print(json.dumps({n: _api(args, f"{base}/{n}?limit={args.limit}") for n in names}))
            return 0
        if not names:
            print("no destinations configured (add [[destination]] to the config)")
        for name in names:
            detail = _api(args, f"{base}/{name}?limit={args.limit}")
            print(f"{name}: {_destination_line(detail)}")
            _print_jobs(detail["jobs"], dead=False)
        return 0
    if args.destination is None:
        raise ApiError(f"`queue {args.action}` needs a destination name")
    if args.action == "purge" and not args.yes:
        raise ApiError(
            f"purge drops every queued job of {args.destination} (the objects stay on the "
            "edge but will not be forwarded); add --yes if that is what you want"
        )
    result = _api(args, f"{base}/{args.destination}/{args.action}", method="POST")
    if args.action == "retry":
        print(f"{args.destination}: backoff cleared on {result['retried']} job(s); sending now")
    else:
        print(f"{args.destination}: {result['purged']} job(s) purged")
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    base = "/api/v1/queues"
    if args.action == "ls":
        names = [args.destination] if args.destination else sorted(_api(args, base))
        for name in names:
            data = _api(args, f"{base}/{name}/dead?limit={args.limit}")
            if args.json:
                print(json.dumps(data))
                continue
            print(f"{name}: dead letters")
            _print_jobs(data["jobs"], dead=True)
        return 0
    if args.destination is None:
        raise ApiError("`dead requeue` needs a destination name")
    query = f"?uid={args.uid}" if args.uid else ""
    result = _api(args, f"{base}/{args.destination}/dead/requeue{query}", method="POST")
    print(f"{args.destination}: {result['requeued']} job(s) back in the queue")
    return 0


def _recall_line(progress: dict[str, Any]) -> str:
    remaining = progress["remaining"]
    left = "" if remaining is None else f", {remaining} to go"
    return (
        f"{progress['state']}: {progress['completed']} instance(s) back from "
        f"{progress['source']}{left}, {progress['failed']} failed"
    )


def cmd_recall(args: argparse.Namespace) -> int:
    """Start a recall and follow it with a progress line until it ends."""
    path = f"/api/v1/recalls/{args.study_uid}"
    progress = _api(args, path, method="POST")
    deadline = time.monotonic() + args.timeout
    while progress["state"] == "running" and time.monotonic() < deadline:
        if not args.json:
            print(f"\r  {_recall_line(progress)}   ", end="", flush=True)
        time.sleep(0.5)
        progress = _api(args, path)
    if args.json:
        print(json.dumps(progress, indent=2))
    else:
        print(f"\r  {_recall_line(progress)} in {progress['seconds'] or args.timeout:.1f} s   ")
        if progress["error"]:
            print(f"  {progress['error']}")
    if progress["state"] == "running":
        print(f"  still running after {args.timeout:.0f} s; follow it: GET {path}")
    return 0 if progress["state"] == "done" else 1


def cmd_reload(args: argparse.Namespace) -> int:
    """Apply the engine's config file again, or (--check FILE) show what FILE would
    change against the running configuration without applying it."""
    from engine.ops import reload

    if args.check is None:
        result = _api(args, "/api/v1/reload", method="POST")
        _print_reload(result["changed"], result["needs_restart"], result["removed"])
        return 0
    try:
        new = load_config(args.check)
    except ConfigError as exc:
        print(f"pacs-edge reload --check: {exc}", file=sys.stderr)
        return 2
    running = Config.model_validate(_api(args, "/api/v1/config"))
    merged, needs_restart = reload.merge(running, new)
    changed = reload.changed(running, merged)
    _print_reload(changed, needs_restart, reload.removals(running, merged))
    print("(not applied: `pacs-edge reload` or SIGHUP applies the engine's own config file)")
    return 0


def _print_reload(changed: list[str], needs_restart: list[str], removed: list[str]) -> None:
    print(f"changes at once: {', '.join(changed) or 'nothing'}")
    if needs_restart:
        print(f"changed, but only after a restart: {', '.join(needs_restart)}")
    for item in removed:
        print(f"  REMOVES {item}")


def cmd_token(args: argparse.Namespace) -> int:
    """A new ops API token: the secret once, and the config entry that admits it."""
    from policies.http_access import digest, new_token

    secret = new_token()
    print(f"token for {args.name!r} (role {args.role}); keep it, it is not shown again:")
    print(f"  {secret}")
    print("add to the engine's config, then `pacs-edge reload`:")
    print(
        f'[[http.token]]\nname = "{args.name}"\nsha256 = "{digest(secret)}"\nrole = "{args.role}"'
    )
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """A console user's [[http.user]] entry: the password asked twice (or read from
    stdin with --password-stdin), only its argon2 hash printed."""
    import getpass

    from policies.http_access import hash_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ; nothing made", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("a console password needs at least 8 characters", file=sys.stderr)
        return 2
    print("add to the engine's config, then `pacs-edge reload`:")
    print(
        f'[[http.user]]\nname = "{args.name}"\nargon2 = "{hash_password(password)}"\n'
        f'role = "{args.role}"'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacs-edge", description="DICOM ingest engine for PACS edge servers"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"pacs-edge {core_rs.__version__} ({core_rs.BUILD_PROFILE}; "
        f"HTJ2K encoder: {core_rs.HTJ2K_BACKEND})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the engine")
    serve.add_argument("--config", type=Path, help="TOML file overriding the embedded defaults")
    serve.add_argument("--data-dir", help="where objects and the index live (default ./var)")
    serve.add_argument("--host", help="DICOM listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="DICOM port (default 11112)")
    serve.add_argument(
        "--http-host", help="ops HTTP listen address (default 127.0.0.1: this box only)"
    )
    serve.add_argument("--http-port", type=int, help="ops HTTP port (default 9112)")
    serve.add_argument("--ae-title", help="our AE title (default PACS_EDGE)")
    serve.add_argument("--durability", choices=["fsync", "os"])
    serve.add_argument(
        "--workers", type=int, help="ingest processes sharing the DICOM port (default: cores)"
    )
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

    imp = sub.add_parser(
        "import", help="store a folder, DICOMDIR folder or CD mount into this edge"
    )
    imp.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    imp.add_argument("--config", type=Path, help="the engine's config (for its port and AE)")
    imp.add_argument("--calling-ae", default="PACS_EDGE_IMPORT")
    imp.set_defaults(run=cmd_store)

    st = sub.add_parser("status", help="show what a running engine holds")
    st.set_defaults(run=cmd_status)
    queue = sub.add_parser("queue", help="forward queues: ls, retry, purge")
    queue.add_argument("action", choices=["ls", "retry", "purge"])
    queue.add_argument("--yes", action="store_true", help="confirm purge")
    queue.set_defaults(run=cmd_queue)
    dead = sub.add_parser("dead", help="dead letters: ls, requeue")
    dead.add_argument("action", choices=["ls", "requeue"])
    dead.add_argument("--uid", help="requeue only this SOP Instance UID")
    dead.set_defaults(run=cmd_dead)
    rc = sub.add_parser("recall", help="bring a purged study back from central storage")
    rc.add_argument("study_uid", metavar="STUDY_UID")
    rc.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow it")
    rc.set_defaults(run=cmd_recall)
    rl = sub.add_parser("reload", help="apply the config file again (or --check one)")
    rl.add_argument(
        "--check", type=Path, metavar="FILE", help="show what FILE would change; apply nothing"
    )
    rl.set_defaults(run=cmd_reload)
    tk = sub.add_parser("token", help="make an ops API token and its [[http.token]] entry")
    tk.add_argument("name", help="who uses it (in the audit log)")
    tk.add_argument("--role", choices=["read", "admin"], default="read")
    tk.set_defaults(run=cmd_token)
    us = sub.add_parser("user", help="make a console user's [[http.user]] entry")
    us.add_argument("name", help="the login name (in the audit log)")
    us.add_argument("--role", choices=["read", "admin"], default="read")
    us.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (scripts)"
    )
    us.set_defaults(run=cmd_user)
    for p in (queue, dead):
        p.add_argument("destination", nargs="?", help="a [[destination]] name")
        p.add_argument("--limit", type=int, default=20, help="jobs to list (default 20)")
    for p in (st, queue, dead, rc, rl):
        p.add_argument("--url", default="http://127.0.0.1:9112", help="the engine's ops HTTP")
        p.add_argument(
            "--token-file",
            type=Path,
            help=f"file holding the API token (default: ${TOKEN_VARIABLE}, if set)",
        )
    for p in (st, queue, dead, rc):
        p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except ApiError as exc:
        print(f"pacs-edge {args.command}: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
