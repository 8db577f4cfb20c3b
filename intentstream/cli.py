"""The ``intentstream`` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from intentstream.progress import say
from intentstream.settings import Settings, get_settings


def cmd_up(settings: Settings, _: argparse.Namespace) -> int:
    from intentstream.deploy import stack

    services = stack.up(settings, say)
    endpoints = stack.resolve_endpoints(settings)
    for name, service in services.items():
        say(f"{name:7s} pid {service.pid:<7d} {service.address}  (log {service.log})")
    print(f"export KAFKA_BOOTSTRAP={endpoints.kafka_bootstrap} REDIS_URL={endpoints.redis_url}")
    return 0


def cmd_down(settings: Settings, _: argparse.Namespace) -> int:
    from intentstream.deploy import stack

    stack.down(settings, progress=say)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The local stack's services and the workers' key figures; exit 1 if anything is down."""
    import os
    import time

    from intentstream.deploy import stack
    from intentstream.stream.stats import read_stats

    services = stack.health(settings)
    workers = []
    for path in sorted((settings.home / "workers").glob("*.json")):
        stats = read_stats(path)
        if stats is None or time.time() - stats["at"] > 10 * settings.stats_interval_s:
            continue  # a worker that stopped (or died) long ago
        alive = os.path.exists(f"/proc/{stats['pid']}")
        workers.append(
            {
                "pid": stats["pid"],
                "alive": alive,
                **{
                    k: stats[k]
                    for k in ("partitions", "users", "events_per_s", "freshness_ms", "replan_queue")
                },
            }
        )
    healthy = all(s["running"] and s["answering"] for s in services.values()) and all(
        w["alive"] for w in workers
    )
    if args.json:
        print(orjson.dumps({"healthy": healthy, "services": services, "workers": workers}).decode())
        return 0 if healthy else 1
    if not services:
        say("local stack: not running (`intentstream up`)")
    for name, s in services.items():
        state = "up" if s["running"] and s["answering"] else "DOWN"
        print(f"{name:8} {state:5} {s['address']}  pid {s['pid']}  log {s['log']}")
    for w in workers:
        fresh = w["freshness_ms"].get("p99")
        print(
            f"worker   {'up' if w['alive'] else 'DEAD':5} pid {w['pid']}  partitions {w['partitions']}  "
            f"users {w['users']}  events/s {w['events_per_s']}  freshness p99 {fresh} ms  "
            f"replans pending {w['replan_queue']['pending']}"
        )
    if not workers:
        say("no worker has reported in the last seconds (`intentstream worker`)")
    return 0 if healthy and services else 1


def cmd_llm(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.deploy import stack
    from intentstream.deploy.model import ensure_model

    if settings.llm_base_url:
        say(f"LLM_BASE_URL is set ({settings.llm_base_url}): using that server, starting none")
        return 0
    services = stack.load_state(settings)
    if "llm" not in services:
        model = ensure_model(settings, say)
        say(f"starting the vLLM server on CPU for {model} ...")
        services["llm"] = stack.start_llm(settings, model, say)
        stack.save_state(settings, services)
    service = services["llm"]
    say(f"llm     pid {service.pid:<7d} {service.address}  model {settings.llm_model_name}")
    print(f"export LLM_BASE_URL={service.address}")
    if args.foreground:
        try:
            while stack.load_state(settings).get("llm"):
                time.sleep(1.0)
        except KeyboardInterrupt:
            stack.down(settings, iter(["llm"]), say)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.deploy.stack import resolve_endpoints
    from intentstream.kafka import KafkaSecurity
    from intentstream.store import redacted
    from intentstream.stream.app import run_worker

    if args.no_planner and args.planner_only:
        say("--no-planner and --planner-only exclude each other")
        return 2
    endpoints = resolve_endpoints(settings, need_llm=not args.no_planner, need_redis=not args.no_planner)
    security = KafkaSecurity.from_settings(settings)
    say(
        f"worker: kafka {endpoints.kafka_bootstrap} ({security.describe()}), "
        f"redis {endpoints.redis_url and redacted(endpoints.redis_url)}, "
        f"llm {endpoints.llm_base_url}"
    )
    run_worker(
        settings,
        endpoints,
        with_planner=not args.no_planner,
        with_contexts=not args.planner_only,
        loglevel=args.loglevel,
    )
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.replay import replay

    started = time.perf_counter()
    sent, stats, calendar = asyncio.run(
        replay(
            settings,
            Path(args.log),
            args.format,
            limit=args.limit,
            rate=args.rate,
            speedup=args.speedup,
            signals=args.signals,
        )
    )
    seconds = time.perf_counter() - started
    skipped = dict(stats.skipped)
    print(
        orjson.dumps(
            {
                "sent": sent,
                "pace": _pace(args),
                "rows_read": stats.rows,
                "skipped": skipped,
                "seconds": round(seconds, 2),
                "events_per_s": round(sent / seconds) if seconds else None,
                "signals": calendar.summary() if calendar else None,
            }
        ).decode()
    )
    return 0


def cmd_signals(settings: Settings, args: argparse.Namespace) -> int:
    """Publish (or, with --print, write as JSONL) the holiday signals of a calendar."""
    from intentstream.deploy.stack import resolve_endpoints
    from intentstream.producer import IntentProducer
    from intentstream.signal_sources import CalendarError, Country, holiday_signals

    try:
        countries = [Country.parse(spec) for spec in args.holidays.split(",") if spec.strip()]
        if not countries:
            raise CalendarError("--holidays names no country")
        signals = holiday_signals(countries, args.start, args.end, lead_days=args.lead_days)
    except CalendarError as exc:
        say(f"error: {exc}")
        return 2
    if args.print:
        for signal in signals:
            print(signal.model_dump_json())
        return 0

    async def publish() -> None:
        async with IntentProducer(resolve_endpoints(settings).kafka_bootstrap, settings) as producer:
            for signal in signals:
                await producer.send_signal(signal)

    asyncio.run(publish())
    kinds: dict[str, int] = {}
    for signal in signals:
        kinds[signal.kind.value] = kinds.get(signal.kind.value, 0) + 1
    print(orjson.dumps({"published": len(signals), "by_kind": kinds}).decode())
    return 0


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date as YYYY-MM-DD, not {text!r}") from None


def _pace(args: argparse.Namespace) -> str:
    if args.max:
        return "as fast as possible"
    if args.rate:
        return f"{args.rate:g} events/s"
    if args.speedup:
        return f"the log's timing, {args.speedup:g}x faster"
    return "as fast as possible (no pace given)"


def cmd_convert(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.replay import convert

    stats = convert(Path(args.log), args.format, Path(args.out), loops=args.repeat)
    print(
        orjson.dumps(
            {"events": stats.events, "rows_read": stats.rows, "skipped": dict(stats.skipped)}
        ).decode()
    )
    return 0


def cmd_get(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.deploy.stack import resolve_endpoints
    from intentstream.store import IntentStore, connect_with

    async def fetch() -> bytes | None:
        client = connect_with(settings, resolve_endpoints(settings).redis)
        try:
            store = IntentStore.from_settings(client, settings)
            record = await store.get(args.user_id)
            return (
                None
                if record is None
                else orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
            )
        finally:
            await client.aclose()

    found = asyncio.run(fetch())
    if found is None:
        say(f"no intent record for user {args.user_id}")
        return 1
    print(found.decode())
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.demo import run_demo

    log = Path(args.log) if args.log else settings.datasets_dir / "rees46" / "events.csv"
    return run_demo(settings, log, events=args.events, follow=args.follow, timeout_s=args.timeout, say=say)


def _print_result(result: dict[str, Any], args: argparse.Namespace) -> int:
    print(orjson.dumps(result, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


def cmd_bench_redis(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_redis import bench_redis

    return _print_result(bench_redis(args.users, args.redis_url), args)


def cmd_bench_items(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_items import bench_items

    return _print_result(bench_items(args.items, args.users), args)


def cmd_bench_context(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_context import bench_context

    return _print_result(bench_context(settings), args)


def cmd_bench_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_ingest import bench_ingest

    return _print_result(bench_ingest(settings, args.events), args)


def cmd_bench_kernels(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_kernels import bench_kernels

    return _print_result(bench_kernels(), args)


def cmd_bench_agents(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_agents import SEED, bench_agents

    seed = SEED if args.seed is None else args.seed
    return _print_result(bench_agents(settings, args.users, delta=args.delta, seed=seed), args)


def _seed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the users sampled (default 20261201; the prompts were shaped on 20261122)",
    )


def cmd_bench_judge(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_agents import SEED
    from intentstream.perf.bench_judge import bench_judge

    return _print_result(
        bench_judge(settings, args.users, seed=SEED if args.seed is None else args.seed), args
    )


def cmd_bench_replay(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.bench_replay import bench_replay

    result = bench_replay(
        settings,
        Path(args.log),
        args.format,
        rate=args.rate,
        limit=args.limit,
        drain_s=args.drain,
        plot_dir=Path(args.plot) if args.plot else None,
        signals=args.signals,
    )
    return _print_result(result, args)


def cmd_bench_compare(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.compare import compare

    reports = []
    for name in (args.before, args.after):
        try:
            reports.append(orjson.loads(Path(name).read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            print(f"error: cannot read the report {name}: {exc}", file=sys.stderr)
            return 2
    if not all(isinstance(r, dict) and r.get("benchmark") == "replay" for r in reports):
        print("error: both reports must be `intentstream bench replay` JSON", file=sys.stderr)
        return 2
    result = compare(reports[0], reports[1], Path(args.plot) if args.plot else None)
    return _print_result(result, args)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from intentstream.perf.evaluation import run_eval
    from intentstream.perf.quality import SEED, EvaluationFailed, NothingToEvaluate

    users = None if args.all_users else args.users
    seed = SEED if args.seed is None else args.seed
    plot_dir = Path(args.plot) if args.plot else None
    try:
        result = run_eval(
            settings,
            Path(args.log),
            args.format,
            k=args.k,
            users=users,
            seed=seed,
            plot_dir=plot_dir,
            signals=args.signals,
            level=args.level,
        )
    except (NothingToEvaluate, EvaluationFailed) as exc:
        say(f"error: {exc}")
        return 2
    print(orjson.dumps(result, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intentstream", description=__doc__ and "Streaming real-time intent engine."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the local broker (Tansu) and redis-server").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` and `llm` started").set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="health of the local stack and the running workers")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    llm = sub.add_parser(
        "llm", help="start the vLLM OpenAI-compatible server on CPU (fetches the model once)"
    )
    llm.add_argument("--foreground", action="store_true", help="stay until Ctrl-C, then stop it")
    llm.set_defaults(func=cmd_llm)

    worker = sub.add_parser("worker", help="run a stream worker (faust) until SIGTERM")
    worker.add_argument("--no-planner", action="store_true", help="ingest only; no LLM re-planning")
    worker.add_argument(
        "--planner-only", action="store_true", help="plan only: read replans, keep no contexts"
    )
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(func=cmd_worker)

    from intentstream.perf.logs import FORMATS
    from intentstream.signal_sources import SIGNAL_SOURCES

    SIGNALS_ARGUMENT: dict[str, Any] = {
        "choices": SIGNAL_SOURCES,
        "default": "none",
        "help": "also publish the log's environment signals at their moments (holidays: the "
        "public holidays and Christmas lead-up of each user's country, from the holidays package)",
    }

    replay = sub.add_parser("replay", help="publish an event log to the behaviours topic")
    replay.add_argument("--log", required=True, help="path of the log file")
    replay.add_argument("--format", required=True, choices=FORMATS)
    replay.add_argument("--limit", type=int, default=None, help="publish only the first N events")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive, default=None, help="events per second")
    pace.add_argument("--speedup", type=_positive, default=None, help="the log's own timing, X times faster")
    replay.add_argument("--signals", **SIGNALS_ARGUMENT)
    pace.add_argument("--max", action="store_true", help="as fast as possible (the default)")
    replay.set_defaults(func=cmd_replay)

    signals = sub.add_parser("signals", help="publish environment signals from a real calendar")
    signals.add_argument(
        "--holidays", required=True, metavar="CODE[=Region],...",
        help="countries (ISO codes, e.g. GB=United Kingdom,FR=France): the region is what the users carry",
    )  # fmt: skip
    signals.add_argument("--from", dest="start", type=_date, required=True, help="first day, YYYY-MM-DD")
    signals.add_argument("--to", dest="end", type=_date, required=True, help="last day, YYYY-MM-DD")
    signals.add_argument(
        "--lead-days", type=int, default=21, help="days of lead-up before a gift holiday (21)"
    )
    signals.add_argument(
        "--print", action="store_true", help="write the signals as JSONL instead of publishing"
    )
    signals.set_defaults(func=cmd_signals)

    convert = sub.add_parser("convert", help="write a log as JSONL, the project's event schema")
    convert.add_argument("--log", required=True, help="path of the log file")
    convert.add_argument("--format", required=True, choices=[f for f in FORMATS if f != "jsonl"])
    convert.add_argument("--out", required=True, help="the JSONL file to write")
    convert.add_argument(
        "--repeat", type=_positive_int, default=1, help="write the log N times, ids renamed <id>~k (1)"
    )
    convert.set_defaults(func=cmd_convert)

    get = sub.add_parser("get", help="print a user's intent record from Redis")
    get.add_argument("user_id")
    get.set_defaults(func=cmd_get)

    bench = sub.add_parser("bench", help="benchmarks that print JSON (baselines measured in the same run)")
    benches = bench.add_subparsers(dest="what", required=True, metavar="BENCHMARK")

    def benchmark(
        name: str, func: Callable[[Settings, argparse.Namespace], int], what: str
    ) -> argparse.ArgumentParser:
        one = benches.add_parser(name, help=what)
        one.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
        one.set_defaults(func=func)
        return one

    redis_bench = benchmark("redis", cmd_bench_redis, "versioned writes and reads against redis-server")
    redis_bench.add_argument("--users", type=_positive_int, default=100_000, help="users written and read")
    redis_bench.add_argument("--redis-url", default=None, help="an existing server (default: start one)")
    benchmark("context", cmd_bench_context, "prompt tokens the compressed context saves")
    items_bench = benchmark(
        "items", cmd_bench_items, "the item catalog: build, memory, candidates, reader lookups"
    )
    items_bench.add_argument("--items", type=_positive_int, default=1_000_000, help="synthetic catalog size")
    items_bench.add_argument("--users", type=_positive_int, default=1000, help="users looked up")
    ingest = benchmark("ingest", cmd_bench_ingest, "one worker's context throughput and freshness")
    ingest.add_argument("--events", type=_positive_int, default=100_000, help="events replayed")
    benchmark("kernels", cmd_bench_kernels, "FP8 attention kernels: error and speed")
    agents = benchmark("agents", cmd_bench_agents, "the HMAS chain against the V1 baseline")
    agents.add_argument("--users", type=_positive_int, default=20, help="users planned")
    agents.add_argument("--delta", action="store_true", help="also a delta plan per user, against full plans")
    _seed_argument(agents)
    judge = benchmark("judge", cmd_bench_judge, "the judge against true plans and code-made false ones")
    judge.add_argument("--users", type=_positive_int, default=40, help="users planned (half per shared log)")
    _seed_argument(judge)
    replay_bench = benchmark("replay", cmd_bench_replay, "a load report of the whole loop on real parts")
    replay_bench.add_argument("--log", required=True, help="path of the log file")
    replay_bench.add_argument("--format", required=True, choices=FORMATS, help="the log's format")
    replay_bench.add_argument("--rate", type=_positive, default=None, help="events/s (default: all at once)")
    replay_bench.add_argument("--limit", type=_positive_int, default=None, help="only the first N events")
    replay_bench.add_argument("--drain", type=float, default=60.0, help="seconds of re-planning after")
    replay_bench.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots here")
    replay_bench.add_argument("--signals", **SIGNALS_ARGUMENT)

    compare_bench = benchmark(
        "compare", cmd_bench_compare, "two replay reports, before and after, in one picture"
    )
    compare_bench.add_argument("--before", required=True, help="a `bench replay` JSON report")
    compare_bench.add_argument("--after", required=True, help="a `bench replay` JSON report")
    compare_bench.add_argument(
        "--plot", default=None, metavar="DIR", help="write replay-before-after.png here"
    )

    evaluate = sub.add_parser(
        "eval", help="HR@K and NDCG@K of tags refreshed in real time vs late vs baselines (JSON)"
    )
    evaluate.add_argument("--log", required=True, help="path of the log file")
    evaluate.add_argument("--format", required=True, choices=FORMATS)
    evaluate.add_argument("--k", type=_positive_int, default=30, help="predictions per user (30)")
    evaluate.add_argument(
        "--users", type=_positive_int, default=100, help="users sampled from those who qualify (100)"
    )
    evaluate.add_argument("--all-users", action="store_true", help="every qualifying user (slow)")
    evaluate.add_argument("--seed", type=int, default=None, help="the sample's seed (20261122)")
    evaluate.add_argument("--plot", default=None, metavar="DIR", help="write eval-<log>.png here")
    evaluate.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    evaluate.add_argument(
        "--level",
        choices=("category", "item"),
        default="category",
        help="item: score each tag's catalog items on the items users touched next, against item "
        "baselines (popular, co-viewed, the last category's popular); the category report is kept inside",
    )
    evaluate.add_argument(
        "--signals",
        choices=SIGNAL_SOURCES,
        default="none",
        help="holidays: also plan real time with the signals of each user's country in force "
        "(the holidays package) and report both, for the users a signal concerned",
    )
    evaluate.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="the whole loop on real parts with REES46 events, then stop")
    demo.add_argument("--log", default=None, help="REES46 log (default: the shared datasets' events.csv)")
    demo.add_argument("--events", type=int, default=3000, help="replay the first N events")
    demo.add_argument("--follow", type=int, default=5, help="print the N most active users")
    demo.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for their plans")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    from intentstream.deploy.stack import StackError
    from intentstream.kafka import KafkaSecurityError
    from intentstream.signal_sources import CalendarError

    args = build_parser().parse_args(argv)
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    try:
        return func(get_settings(), args)
    except ValidationError as exc:  # settings from the environment; their values not echoed
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        say(f"error: invalid settings: {problems}")
        return 2
    except (StackError, FileNotFoundError, KafkaSecurityError, CalendarError) as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `intentstream signals --print | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
