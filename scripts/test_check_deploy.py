#!/usr/bin/env python3
"""Tests of scripts/check_deploy.py's own logic, on the rendered overlays and on copies
of them broken the way an operator would break them (run by scripts/test.sh).

    ~/.cache/missive-tools/venv/bin/python -m unittest scripts/test_check_deploy.py
"""
import copy
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import check_deploy  # noqa: E402


def service(docs, name):
    return next(d for d in check_deploy.of_kind(docs, "Service") if d["metadata"]["name"] == name)


class ConnectionBudget(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rendered = {o: check_deploy.render(o)[1] for o in ("dev", "prod")}

    def budget_failures(self, docs):
        """The failures check_connection_budget finds in docs, collected quietly (the
        script's own `fail` prints FAIL lines, which would read as real ones in a log)."""
        found = []
        quiet = {"fail": found.append, "ok": lambda message: None}
        saved = {name: getattr(check_deploy, name) for name in quiet}
        for name, fn in quiet.items():
            setattr(check_deploy, name, fn)
        try:
            check_deploy.check_connection_budget("test", docs)
        finally:
            for name, fn in saved.items():
                setattr(check_deploy, name, fn)
        return found

    def test_the_overlays_fit_their_database(self):
        dev = check_deploy.connection_budget(self.rendered["dev"])
        prod = check_deploy.connection_budget(self.rendered["prod"])
        # 14 functions (web has no database): 5 with a pool of 1, 3 of 2, 6 of 4, at
        # max-scale 3 (dev) and 50 (prod), plus the migration Job's one connection.
        self.assertEqual((dev[0], dev[2]), (3 * 35 + 1, "151"))
        self.assertEqual((prod[0], prod[2]), (50 * 35 + 1, "2000"))
        self.assertEqual(len(dev[1]), 14)
        self.assertEqual(self.budget_failures(self.rendered["prod"]), [])

    def test_a_deployment_above_the_limit_fails_naming_the_largest(self):
        docs = copy.deepcopy(self.rendered["prod"])
        config = next(d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "missive-config")
        config["metadata"]["annotations"]["missive.dev/database-max-connections"] = "151"
        [failure] = self.budget_failures(docs)
        self.assertIn("up to 1751 database connections", failure)
        self.assertIn("> the database's 151", failure)
        self.assertIn("50x4", failure)

    def test_a_pool_larger_than_the_concurrency_or_no_max_scale_fails(self):
        docs = copy.deepcopy(self.rendered["dev"])
        relay = service(docs, "outbox-relay")  # containerConcurrency 1
        for env in relay["spec"]["template"]["spec"]["containers"][0]["env"]:
            if env["name"] == "DB_MAX_CONNECTIONS":
                env["value"] = "3"
        del service(docs, "message-list")["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"]
        failures = self.budget_failures(docs)
        self.assertTrue(any("outbox-relay's pool (3) is larger than its containerConcurrency (1)" in f for f in failures), failures)
        self.assertTrue(any("message-list has no max-scale" in f for f in failures), failures)

    def test_a_missing_limit_fails(self):
        docs = copy.deepcopy(self.rendered["dev"])
        config = next(d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "missive-config")
        del config["metadata"]["annotations"]
        self.assertTrue(any("no missive.dev/database-max-connections" in f for f in self.budget_failures(docs)))


if __name__ == "__main__":
    unittest.main()
