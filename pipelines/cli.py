"""`vidistill`: the user-facing commands in one place (each has --help).

    vidistill demo [--paper]                      the whole recipe on the embedded corpus
    vidistill search "a red circle moves left" [-k 10] [--json]
    vidistill serve [--port 8080]                 the search page, model and index kept loaded
    vidistill ui                                  the Dagster UI on this project's instance
    vidistill mlflow                              the MLflow UI on this project's tracking store
    vidistill stale [ASSET ...]                   stale partitions (default: captions) and why
    vidistill free-dead-runs [--dry-run]          end runs whose process died; free their slots

Commands that use the Dagster instance default DAGSTER_HOME to ./.dagster_home (what
`bash .ci/setup` creates), and all of them run offline (HF_HUB_OFFLINE=1). Developers can still
run each piece as `python -m model_code....` / `python -m pipelines....`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _environment() -> None:
    os.environ.setdefault("DAGSTER_HOME", os.path.abspath(".dagster_home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _data_root() -> str:
    from pipelines.definitions import defs

    return str(defs.resources["store"].root)


def _search(args) -> int:
    from pipelines.search.app import search_cli

    return search_cli(args.query, k=args.k, json_out=args.json, data_root=args.data) or 0


def _serve(args) -> int:
    from pipelines.search.app import serve

    serve(data_root=args.data, host=args.host, port=args.port)
    return 0


def _ui(args) -> int:
    """`dagster dev` on this project's instance, prepared first (a new DAGSTER_HOME gets the
    project's dagster.yaml; seed 0 and the source's shards are registered), so the UI's
    "Materialize all" on a fresh instance targets every shard."""
    from dagster import DagsterInstance

    from pipelines.definitions import defs
    from pipelines.local import prepare_home, prepare_instance

    prepare_home()
    with DagsterInstance.get() as instance:
        added = prepare_instance(instance, defs.resources["clip_source"])
    if added["shards"] or added["seeds"]:
        print(
            f"registered {len(added['shards'])} clip_shards and {len(added['seeds'])} seeds "
            "partitions on the instance",
            flush=True,
        )
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-m",
            "pipelines.definitions",
            "--port",
            str(args.port),
        ],
    )


def _mlflow(args) -> int:
    from pipelines.definitions import defs

    uri = defs.resources["tracking"].uri()
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--port",
            str(args.port),
        ],
    )


def _stale(args) -> int:
    """Each stale partition of the named assets (default: the caption assets) and why."""
    from dagster import AssetKey, DagsterInstance

    from pipelines.definitions import defs
    from pipelines.staleness import CAPTION_ASSETS, stale_causes

    graph = defs.resolve_asset_graph()
    names = args.assets or CAPTION_ASSETS
    unknown = [n for n in names if not graph.has(AssetKey.from_user_string(n))]
    if unknown:
        print(f"no such asset: {', '.join(unknown)}", file=sys.stderr)
        return 2
    found = 0
    with DagsterInstance.get() as instance:
        for name in names:
            for partition, causes in stale_causes(
                instance, graph, AssetKey.from_user_string(name)
            ).items():
                found += 1
                where = f"{name}[{partition}]" if partition else name
                print(f"{where}: {'; '.join(causes)}")
    print(
        f"{found} stale partition(s)"
        + (". Re-caption them: switch on the stale_captions sensor in the UI" if found else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _environment()
    parser = argparse.ArgumentParser(
        prog="vidistill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo",
        add_help=False,
        help="the whole pipeline on the embedded corpus (vidistill demo --help)",
    )
    commands.add_parser(
        "free-dead-runs",
        add_help=False,
        help="end runs whose process died and free their slots (--help)",
    )
    search = commands.add_parser("search", help="text-to-video search over the video index")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="hits to show (1-100)")
    search.add_argument("--json", action="store_true", help="JSON instead of a table")
    serve = commands.add_parser("serve", help="the search page (model and index kept loaded)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    for sub in (search, serve):
        sub.add_argument("--data", default=None, help="data root (default: the project's)")
    ui = commands.add_parser("ui", help="the Dagster UI on this project's instance")
    ui.add_argument("--port", type=int, default=3000)
    stale = commands.add_parser(
        "stale", help="stale partitions (inputs or code changed since) and why"
    )
    stale.add_argument("assets", nargs="*", help="asset keys (default: the caption assets)")
    mlflow = commands.add_parser("mlflow", help="the MLflow UI on this project's runs")
    mlflow.add_argument("--port", type=int, default=5000)

    if argv and argv[0] == "demo":  # its own parser, its own --help
        from pipelines.demo import main as demo

        demo(argv[1:])
        return 0
    if argv and argv[0] == "free-dead-runs":
        from pipelines.free_dead_runs import main as free

        free(argv[1:])
        return 0
    args = parser.parse_args(argv)
    if getattr(args, "data", "") is None:
        args.data = _data_root()
    commands_by_name = {
        "search": _search,
        "serve": _serve,
        "ui": _ui,
        "mlflow": _mlflow,
        "stale": _stale,
    }
    return commands_by_name[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
