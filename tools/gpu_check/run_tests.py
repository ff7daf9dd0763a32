#!/usr/bin/env python3
"""Runs the GPU kit's tests (manifest.py's manifest) as CTest would, within a time budget.

    run_tests.py --kit KIT --source SRC [--jobs 4] [--budget 140] [--log FILE] [--results FILE]
                 [--expect-skip]

Each runnable test runs its command with @KIT@ and @SRC@ made this machine's paths, in its
working directory, with its environment, and is judged as CTest judges it: a SKIP regular
expression in the output or the SKIP_RETURN_CODE is a skip; PASS (or FAIL) regular
expressions decide where given; else the exit status (inverted by WILL_FAIL). A test stops
at its own timeout or at what is left of the budget; tests not started when the budget is
spent are reported "not run: out of time", and the tests the GPU machine cannot run are
reported as such. The log holds every test's status and the output of those that did not
pass; --results writes the same as JSON.

Exit status: 0 when every test started passed (or, with --expect-skip, as on a machine
without a GPU, when every runnable test skipped), 1 otherwise (a failure, a timeout, a
test left for lack of time, or a test of the manifest that could not be started).

Python's standard library only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import manifest as kit_manifest  # noqa: E402

CTEST_DEFAULT_TIMEOUT = 1500.0
OUTPUT_KEPT = 6000  # characters of a failed test's output in the log


def judge(test: dict, returncode: int, output: str) -> str:
    """CTest's verdict: passed, failed or skipped."""
    if any(re.search(r, output) for r in test.get("skip_regex", [])):
        return "skipped"
    if test.get("skip_return_code") is not None and returncode == test["skip_return_code"]:
        return "skipped"
    if any(re.search(r, output) for r in test.get("fail_regex", [])):
        return "failed"
    if test.get("pass_regex"):
        return "passed" if any(re.search(r, output) for r in test["pass_regex"]) else "failed"
    ok = returncode == 0
    if test.get("will_fail"):
        ok = not ok
    return "passed" if ok else "failed"


class Runner:
    def __init__(self, kit: str, source: str, budget: float):
        self.kit, self.source = os.path.realpath(kit), os.path.realpath(source)
        self.deadline = time.monotonic() + budget
        self.lock = threading.Lock()

    def resolve(self, text: str) -> str:
        return kit_manifest.resolve(text, self.kit, self.source)

    def run(self, test: dict) -> dict:
        result = {"name": test["name"], "seconds": 0.0}
        if not test["runnable"]:
            result.update(status="not runnable", reason=test["not_runnable_because"])
            return result
        left = self.deadline - time.monotonic()
        if left <= 1:
            result.update(status="not run: out of time")
            return result
        command = [self.resolve(a) for a in test["command"]]
        if os.path.sep not in command[0]:
            found = shutil.which(command[0])
            if not found:
                result.update(status="failed", reason=f"{command[0]} is not on PATH")
                return result
            command[0] = found
        cwd = self.resolve(test["working_directory"])
        os.makedirs(cwd, exist_ok=True)
        env = dict(os.environ)
        for assignment in test.get("environment", []):
            name, _, value = self.resolve(assignment).partition("=")
            env[name] = value
        timeout = min(float(test.get("timeout") or CTEST_DEFAULT_TIMEOUT), left)
        start = time.monotonic()
        try:
            done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
            output = done.stdout.decode(errors="replace")
            result.update(status=judge(test, done.returncode, output), returncode=done.returncode)
        except subprocess.TimeoutExpired as e:
            output = (e.stdout or b"").decode(errors="replace")
            ran_out = timeout < float(test.get("timeout") or CTEST_DEFAULT_TIMEOUT)
            result.update(status="timeout", reason="the budget ran out" if ran_out else f"its timeout, {timeout:g} s")
        except OSError as e:
            output = ""
            result.update(status="failed", reason=f"could not start: {e}")
        result["seconds"] = round(time.monotonic() - start, 2)
        result["output"] = output
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--manifest", help="default: KIT/manifest.json")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--budget", type=float, default=140.0, help="seconds for all the tests")
    ap.add_argument("--log", help="append the log here (default: stdout)")
    ap.add_argument("--results", help="write the results as JSON here")
    ap.add_argument("--expect-skip", action="store_true",
                    help="no GPU here: every runnable test must report skipped")
    ap.add_argument("--filter", help="a regular expression the test names must match")
    args = ap.parse_args()

    try:
        manifest = kit_manifest.load(args.manifest or os.path.join(args.kit, "manifest.json"))
    except (OSError, ValueError) as e:
        print(f"run_tests: {e}")
        return 1
    tests = [t for t in manifest["tests"] if not args.filter or re.search(args.filter, t["name"])]
    runner = Runner(args.kit, args.source, args.budget)
    for folder in manifest.get("directories", []):
        os.makedirs(os.path.join(runner.kit, folder), exist_ok=True)
    log = open(args.log, "a") if args.log else sys.stdout
    started = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(runner.run, tests):
            results.append(r)
            line = f"{r['status']:>22}  {r['seconds']:7.2f} s  {r['name']}"
            if r.get("reason"):
                line += f"  ({r['reason']})"
            print(line, file=log, flush=True)
            if r["status"] not in ("passed", "skipped", "not runnable") or (args.expect_skip and r["status"] == "passed"):
                output = r.get("output", "")
                print("    " + output[-OUTPUT_KEPT:].replace("\n", "\n    "), file=log, flush=True)

    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    runnable = [r for r in results if r["status"] != "not runnable"]
    if args.expect_skip:
        ok = bool(runnable) and all(r["status"] == "skipped" for r in runnable)
    else:
        ok = bool(runnable) and all(r["status"] in ("passed", "skipped") for r in runnable)
    verdict = "ok" if ok else "FAILED"
    # The summary on stdout (where `all` sends it to the log too), the log holding the tests.
    print(f"tests: {summary} in {time.monotonic() - started:.0f} s: {verdict}")
    if log is not sys.stdout:
        for r in results:
            if r["status"] not in ("passed", "skipped"):
                print(f"  - {r['status']}: {r['name']}" + (f" ({r['reason']})" if r.get("reason") else ""))
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"summary": counts, "ok": ok,
                       "tests": [{k: v for k, v in r.items() if k != "output"} for r in results]}, f, indent=1)
            f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
