"""`kubetune operator`: run the operator (settings from KUBETUNE_* environment variables)."""

from __future__ import annotations

import argparse
import logging
import sys

from kubetune import __version__

from .settings import OperatorSettings, SettingsError


def _operator(args: argparse.Namespace) -> int:
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.namespace:
        settings = settings.model_copy(update={"watch_namespaces": tuple(args.namespace)})
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("kubetune").info("kubetune operator %s starting", __version__)
    from .runner import LeadershipLost, run  # kopf is imported only when the operator runs

    try:
        run(settings)
    except LeadershipLost as exc:  # exit non-zero: Kubernetes restarts the container as a follower
        print(exc, file=sys.stderr)
        return 1
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "operator",
        help="run the kubetune operator (needs the 'operator' extra)",
        description="Run the operator against the current cluster. Settings come from KUBETUNE_* variables: "
        + ", ".join(f"KUBETUNE_{name.upper()}" for name in OperatorSettings.model_fields if name != "kubeconfig")
        + " (and KUBECONFIG outside a cluster).",
    )
    parser.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable; default: all)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(handler=_operator)
