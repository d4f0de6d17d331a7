"""Run every benchmark: `python -m benchmarks [name ...]` (or `make bench`)."""

import argparse
import json
import platform
import sys

from benchmarks import (
    apps,
    budget,
    fastlog,
    fastlog_hub,
    faults,
    features,
    gates,
    imports,
    jobs,
    service_memory,
    spawn,
)
from tests.hubprocess import resolve_localhost

BENCHMARKS = {
    "spawn": spawn,
    "imports": imports,
    "service_memory": service_memory,
    "fastlog": fastlog,
    "fastlog_hub": fastlog_hub,
    "apps": apps,
    "jobs": jobs,
    "gates": gates,
    "faults": faults,
    "budget": budget,
    "features": features,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "names", nargs="*", help=f"which to run (default all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}"
        )
    resolve_localhost()  # users' servers and services live on *.localhost origins, as browsers see them
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    results = {}
    for name in args.names or BENCHMARKS:
        mod = BENCHMARKS[name]
        results[name] = mod.run(samples=args.samples)
        print(mod.report(results[name]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
