"""``edge-agent``: run (the daemon), check (the health probe), replay (recorded drives), send
(the frames a replay could not send).

The only place that reads ``os.environ`` (``FLEETAL_*`` overrides) and configures logging.
Exit codes, every command: 0 ok (``check``: healthy), 1 failed (``check``: unhealthy), 2 bad
usage or a configuration ``run`` would refuse (README and docs/metrics.md list them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.errors import EdgeAgentError
from edge_agent.models.errors import ModelError
from edge_agent.uplink import install_kafka_log_summary, remove_kafka_log_summary
from schemas.config import ConfigError, config_help

log = logging.getLogger("edge_agent")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Score every camera + LiDAR frame on the vehicle; ship only what is worth "
        "a label.",
        epilog="Every configuration key can be overridden by an environment variable "
        "FLEETAL_<TABLE>__<KEY>; `edge-agent config-help` lists them all.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the daemon: live source -> pipeline -> spool -> Kafka")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")

    check = sub.add_parser(
        "check",
        help="health probe: asks the running daemon's /healthz, else checks what run needs; "
        "exit 0 healthy, 1 unhealthy, 2 bad configuration",
    )
    check.add_argument("--config", type=Path, required=True)

    rp = sub.add_parser("replay", help="a recorded drive through the same pipeline, with a report")
    rp.add_argument("drive", type=Path, help="a recorded drive (KITTI, nuScenes, AV2, ...)")
    rp.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file with the [models] to score with (defaults otherwise)",
    )
    rp.add_argument(
        "--no-models",
        action="store_true",
        help="replay without models (every uncertainty 0: time and space diversity only); "
        "without it, a configuration with no [models] is refused",
    )
    rp.add_argument(
        "--speed", default="max", help="max (default), realtime, or a factor like 2 or 0.5"
    )
    rp.add_argument("--report", type=Path, help="directory for summary.json, frames.csv, plots")
    rp.add_argument("--kafka", help="bootstrap server: also send the selected frames to Kafka")
    rp.add_argument("--topic", help="Kafka topic (default: kafka.topic of the configuration)")
    rp.add_argument(
        "--kafka-timeout",
        type=float,
        metavar="SECONDS",
        help="with --kafka: give up once the broker acknowledged nothing for this long "
        "(default: kafka.stall_timeout_s, 60 s); unsent frames stay in a spool file",
    )
    rp.add_argument(
        "--strategy",
        choices=["stream", "random"],
        default="stream",
        help="stream (uncertainty + diversity + budget) or the random baseline, same budget",
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")

    send = sub.add_parser(
        "send", help="send the frames of a kept spool file (left by an interrupted replay)"
    )
    send.add_argument("spool", type=Path, help="the spool file a replay or agent kept")
    send.add_argument("--kafka", required=True, help="bootstrap server (host:port)")
    send.add_argument("--topic", help="Kafka topic (default: kafka.topic of the configuration)")
    send.add_argument("--config", type=Path, help="TOML configuration file ([kafka] settings)")
    send.add_argument(
        "--kafka-timeout",
        type=float,
        metavar="SECONDS",
        help="give up once the broker acknowledged nothing for this long "
        "(default: kafka.stall_timeout_s, 60 s)",
    )

    sub.add_parser("config-help", help="list every configuration key and its variable")
    return p


def _load(path: Path | None) -> AgentConfig:
    env = {k: v for k, v in os.environ.items() if k.startswith("FLEETAL_")}
    return load_agent_config(path, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "config-help":
        print(config_help(AgentConfig))
        return 0
    try:
        cfg = _load(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"edge-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    summary = (
        None if args.log_level == "DEBUG" else install_kafka_log_summary(cfg.kafka.log_summary_s)
    )
    try:
        return _command(args, cfg)
    finally:
        remove_kafka_log_summary(summary)


def _command(args: argparse.Namespace, cfg: AgentConfig) -> int:
    try:
        if args.command == "check":
            from edge_agent.probe import check

            result = check(cfg)
            for line in result.lines:
                print(f"edge-agent check: {line}")
            for problem in result.problems:
                print(f"edge-agent check: {problem}", file=sys.stderr)
            if result.code == 0:
                print("edge-agent check: ok")
            return result.code
        if args.command == "run":
            from edge_agent.daemon import run

            return run(cfg)
        if args.command == "send":
            return _send(args, cfg)
        return _replay(args, cfg)
    except ConfigError as exc:  # what run refuses beyond loading (e.g. source.path unset)
        print(f"edge-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    except (EdgeAgentError, ModelError, ValueError) as exc:
        print(f"edge-agent {args.command}: {exc}", file=sys.stderr)
        return 1


def _replay(args: argparse.Namespace, cfg: AgentConfig) -> int:
    import dataclasses

    from edge_agent.errors import ReportDirError
    from edge_agent.replay import parse_speed, replay
    from edge_agent.report import check_report_dir

    if args.no_models:
        cfg = dataclasses.replace(
            cfg, models=dataclasses.replace(cfg.models, camera=None, lidar=None)
        )
    elif cfg.models.camera is None and cfg.models.lidar is None:
        where = f"in {args.config}" if args.config else "(no --config given)"
        print(
            f"edge-agent replay: no model configured {where}: every frame would score 0 and "
            "the selection would mean nothing. Give a configuration with [models] camera / "
            "lidar, e.g. `--config deploy/demo/agent.toml` (after `make models`), or pass "
            "--no-models to replay on time and space diversity only",
            file=sys.stderr,
        )
        return 2
    speed = parse_speed(args.speed)
    if args.report is not None:
        try:
            check_report_dir(args.report)  # before the replay, not after it
        except ReportDirError as exc:
            print(f"edge-agent replay: --report {exc}", file=sys.stderr)
            return 2
    result = replay(
        args.drive,
        cfg,
        speed=speed,
        report_dir=args.report,
        kafka=args.kafka,
        topic=args.topic,
        kafka_timeout_s=args.kafka_timeout,
        strategy=args.strategy,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    s = result.summary
    on = "without models (--no-models)" if args.no_models else f"on {s.provider}"
    print(
        f"{s.drive}: {s.frames_selected}/{s.frames_total} frames selected "
        f"({s.selection_rate:.1%} of {s.frames_scored} scored, budget {s.budget:.1%}), "
        f"{s.frames_per_second:.1f} frames/s {on}"
    )
    if s.dropped_by_reason:
        print("not selected: " + json.dumps(s.dropped_by_reason, sort_keys=True))
    if s.problems_by_reason:
        where = " (each named in problems.csv)" if result.report_files else " (--report names each)"
        print(
            f"problems in {s.frames_with_problems} frame(s){where}: "
            + json.dumps(s.problems_by_reason, sort_keys=True)
        )
    for note in s.notes:
        print(f"note: {note}")
    for path in result.report_files:
        print(f"report: {path}")
    return 0


def _send(args: argparse.Namespace, cfg: AgentConfig) -> int:
    import dataclasses

    from edge_agent.sink import KafkaSink
    from edge_agent.spool import Spool
    from edge_agent.uplink import send_spool

    sink_cfg = dataclasses.replace(
        cfg.kafka, bootstrap_servers=(args.kafka,), topic=args.topic or cfg.kafka.topic
    )

    def factory(spool: Spool) -> KafkaSink:
        return KafkaSink(sink_cfg, spool)

    timeout = cfg.kafka.stall_timeout_s if args.kafka_timeout is None else args.kafka_timeout
    result = send_spool(args.spool, factory, timeout_s=timeout)
    print(f"{args.spool}: {result.frames_sent} frame(s) sent, {result.frames_left} left")
    return 0 if result.frames_left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
