#!/usr/bin/env python3
"""Static checks of the operator-side observability files (no collector or Grafana can run
here): the collector's pipelines reference components that exist, in a sane order; the
Grafana datasources link traces and logs both ways; every dashboard query names a metric
that the code really emits (read from common/telemetry/src/metrics.rs) and a datasource
that is provisioned. Exits non-zero with every problem listed.

Usage: python3 scripts/check_observability.py
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OBS = ROOT / "observability"
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def collector():
    config = yaml.safe_load((OBS / "otel-collector.yaml").read_text())
    sections = {k: set((config.get(k) or {}).keys()) for k in
                ("receivers", "processors", "exporters", "connectors", "extensions")}
    service = config["service"]
    for ext in service.get("extensions", []):
        check(ext in sections["extensions"], f"collector: extension {ext} is not defined")
    used = set()
    pipelines = service["pipelines"]
    for signal in ("traces", "metrics", "logs"):
        check(signal in pipelines, f"collector: no {signal} pipeline")
    for name, pipeline in pipelines.items():
        for kind, pool in (("receivers", sections["receivers"] | sections["connectors"]),
                           ("processors", sections["processors"]),
                           ("exporters", sections["exporters"] | sections["connectors"])):
            for component in pipeline.get(kind, []):
                check(component in pool, f"collector: {name} uses undefined {kind[:-1]} {component}")
                used.add(component)
        processors = pipeline.get("processors", [])
        check(processors[:1] == ["memory_limiter"], f"collector: {name} must start with memory_limiter")
        check(processors[-1:] == ["batch"], f"collector: {name} must end with batch")
    for kind in ("receivers", "processors", "exporters", "connectors"):
        for component in sections[kind]:
            check(component in used, f"collector: {kind[:-1]} {component} is defined but unused")
    check("spanmetrics" in pipelines["traces"]["exporters"]
          and "spanmetrics" in pipelines["metrics"]["receivers"],
          "collector: spanmetrics must connect traces to metrics")
    for name, exporter in config["exporters"].items():
        endpoint = str(exporter.get("endpoint", ""))
        check(endpoint.startswith("${env:") and ":-" in endpoint,
              f"collector: exporter {name} endpoint must come from the environment with a default")


def datasources():
    config = yaml.safe_load((OBS / "grafana/provisioning/datasources/missive.yaml").read_text())
    by_type = {d["type"]: d for d in config["datasources"]}
    uids = [d["uid"] for d in config["datasources"]]
    check(len(uids) == len(set(uids)), "grafana: datasource uids must be unique")
    tempo, loki = by_type.get("tempo"), by_type.get("loki")
    check(tempo and loki and "prometheus" in by_type, "grafana: Tempo, Loki and Prometheus are all needed")
    if tempo and loki:
        to_logs = tempo["jsonData"].get("tracesToLogsV2", {})
        check(to_logs.get("datasourceUid") == loki["uid"], "grafana: Tempo tracesToLogsV2 must point at Loki")
        check(to_logs.get("filterByTraceID") is True, "grafana: trace-to-logs must filter by trace id")
        derived = loki["jsonData"].get("derivedFields", [])
        check(any(f.get("datasourceUid") == tempo["uid"] and "trace_id" in (f.get("matcherRegex", "") + f.get("name", ""))
                  for f in derived), "grafana: Loki needs a trace_id derived field to Tempo")
    return set(uids)


def emitted_metrics():
    """Prometheus names of our instruments, as remote write spells them."""
    source = (ROOT / "common/telemetry/src/metrics.rs").read_text()
    names = set()
    for kind, name, rest in re.findall(r'\.(f64_histogram|u64_counter|u64_gauge|f64_gauge)\("([^"]+)"\)(.*?)\.build\(\)',
                                       source, re.S):
        base = name.replace(".", "_")
        if '.with_unit("s")' in rest:
            base += "_seconds"
        if kind.endswith("histogram"):
            names |= {base + "_bucket", base + "_count", base + "_sum"}
        elif kind.endswith("counter"):
            names.add(base + "_total")
        else:
            names.add(base)
    return names


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers left once selectors, ranges,
    strings and grouping clauses are removed, that are not function calls."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)
    return re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", bare)


def dashboards(uids):
    metrics = emitted_metrics()
    check(len(metrics) > 10, f"dashboards: could not read the instruments ({metrics})")
    for path in sorted((OBS / "grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        check(dashboard.get("uid"), f"{path.name}: needs a uid")
        for panel in dashboard["panels"]:
            uid = panel.get("datasource", {}).get("uid")
            check(uid in uids, f"{path.name}: panel {panel['title']!r} uses unknown datasource {uid}")
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if panel["datasource"]["type"] != "prometheus":
                    continue
                for name in metric_names(expr):
                    check(name in metrics, f"{path.name}: panel {panel['title']!r} queries {name}, which nothing emits")


collector()
uids = datasources()
dashboards(uids)
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("observability config: collector, datasources and dashboards are consistent")
