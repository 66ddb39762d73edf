"""``edge-agent``: run (the daemon), check (the health probe), replay (recorded drives).

The only place that reads ``os.environ`` (``FLEETAL_*`` overrides) and configures logging.
Exit codes: 0 ok, 1 unhealthy or failed, 2 bad usage or configuration.
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

    check = sub.add_parser("check", help="exit 0 if the agent can run, 1 if not (for probes)")
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
        "--strategy",
        choices=["stream", "random"],
        default="stream",
        help="stream (uncertainty + diversity + budget) or the random baseline, same budget",
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")

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
    try:
        if args.command == "check":
            from edge_agent.daemon import check

            problems = check(cfg)
            for problem in problems:
                print(f"edge-agent check: {problem}", file=sys.stderr)
            if not problems:
                print("edge-agent check: ok")
            return 1 if problems else 0
        if args.command == "run":
            from edge_agent.daemon import run

            return run(cfg)
        return _replay(args, cfg)
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


if __name__ == "__main__":
    sys.exit(main())
