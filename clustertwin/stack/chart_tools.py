"""The tools that prove the Helm chart: Helm itself, and the Strimzi resources' schemas.

Helm is built from its Go module (``go install``), once, into the cache: the machines this
project runs on have Go and the Go module proxy, not Helm's release downloads. Strimzi's
KafkaTopic and KafkaUser are custom resources that the Kubernetes schemas do not know; their
published JSON schemas (the ``@kubernetes-models/strimzi-kafka-operator`` npm package,
generated from Strimzi's CRDs) validate them, with the machine's Node.js.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from clustertwin.stack.base import Progress, StackError, require_tool, run_logged
from clustertwin_base.settings import cache_dir

__all__ = [
    "HELM_VERSION",
    "STRIMZI_MODELS_VERSION",
    "ensure_helm",
    "ensure_strimzi_schemas",
    "validate_strimzi",
]

HELM_VERSION = "v4.3.2"
STRIMZI_MODELS_VERSION = "1.0.1"
STRIMZI_API = "kafka.strimzi.io/v1beta2"
_VALIDATOR = Path(__file__).parent / "files" / "validate-strimzi.mjs"


def ensure_helm(progress: Progress) -> Path:
    """The ``helm`` binary of HELM_VERSION, built from its Go module on first use."""
    home = cache_dir() / f"helm-{HELM_VERSION}"
    helm = home / "bin" / "helm"
    if helm.exists():
        return helm
    go = require_tool("go", "golang-go", progress)
    progress(f"building Helm {HELM_VERSION} from its Go module (first time only, minutes)")
    go_cache = cache_dir() / "go"
    run_logged(
        [go, "install", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"],
        home / "build.log",
        progress,
        f"building Helm {HELM_VERSION}",
        env={
            "GOBIN": str(home / "bin"),
            "GOMODCACHE": str(go_cache / "mod"),
            "GOCACHE": str(go_cache / "build"),
            "GOFLAGS": "-buildvcs=false",
            "CGO_ENABLED": "0",
        },
    )
    if not helm.exists():
        raise StackError(f"go install finished but {helm} is missing (see {home / 'build.log'})")
    return helm


def ensure_strimzi_schemas(progress: Progress) -> Path:
    """The directory holding the Strimzi models package (npm), installed on first use."""
    home = cache_dir() / f"strimzi-models-{STRIMZI_MODELS_VERSION}"
    marker = home / "node_modules" / "@kubernetes-models" / "strimzi-kafka-operator"
    if (marker / "package.json").exists():
        return home
    npm = require_tool("npm", "npm", progress)
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text('{"name": "clustertwin-chart-check", "private": true}\n')
    run_logged(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--no-save",
            f"@kubernetes-models/strimzi-kafka-operator@{STRIMZI_MODELS_VERSION}",
        ],
        home / "npm.log",
        progress,
        "installing the Strimzi resource schemas",
        cwd=home,
    )
    return home


def validate_strimzi(docs: list[dict[str, Any]], schemas: Path) -> list[str]:
    """Schema errors of Strimzi resources (``[]``: all valid), one line per resource."""
    node = require_tool("node", "nodejs", lambda _m: None)
    result = subprocess.run(
        [node, str(_VALIDATOR), str(schemas), STRIMZI_API],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode not in (0, 1):
        raise StackError(f"the Strimzi schema check failed to run: {result.stderr[-2000:]}")
    return [line for line in result.stdout.splitlines() if line.strip()]
