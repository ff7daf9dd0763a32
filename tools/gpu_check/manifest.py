#!/usr/bin/env python3
"""The GPU kit's manifest: the gpu-labelled CTest tests as commands that run from the kit.

    manifest.py stage --ctest-json TESTS.json --build BUILD --source SRC --kit KIT \
        [--extra BUILD/benchmarks/permute_bench ...] [--strip] [--no-copy]
    manifest.py check --kit KIT --source SRC [--extra KIT/benchmarks/permute_bench ...]

CTest's files hold this machine's absolute paths; the GPU machine gets the repository at
another path and the kit (an ignored folder carried with it). `stage` reads
`ctest -L gpu --show-only=json-v1`, copies every build output a test names (and the
--extra files: benchmarks, the bridge) into KIT at its path relative to BUILD, stripped
with --strip, and writes KIT/manifest.json: each test's command with the build directory
written @KIT@ and the source tree @SRC@, its working directory, environment, timeout and
how CTest decides pass or skip (SKIP_RETURN_CODE, PASS/SKIP/FAIL_REGULAR_EXPRESSION,
WILL_FAIL). A test that needs what the GPU machine lacks (mpiexec and Open MPI's
libraries) is kept with `runnable: false` and the reason, so every run says so. --no-copy
writes the manifest for the build tree itself (KIT = BUILD), as the CPU dry run does.

`check` parses the manifest and checks that every file a runnable test calls, and every
extra, is there: in KIT for @KIT@, in SRC for @SRC@. Exit status 1 on anything missing.

Python's standard library only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

KIT, SRC = "@KIT@", "@SRC@"
# What the GPU machine does not have (docs/testing.md, "On a GPU"): no Open MPI.
MPI_LAUNCHERS = {"mpiexec", "mpirun", "orterun"}
MPI_LIBRARY = re.compile(r"^lib(mpi|open-rte|open-pal)\b")
NO_MPI = ("needs mpiexec and Open MPI's libraries, which the GPU machine lacks "
          "(no Debian packages there; docs/testing.md, 'On a GPU')")


def properties(test: dict) -> dict:
    return {p["name"]: p["value"] for p in test.get("properties", [])}


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def needed_libraries(path: str) -> list[str]:
    """The shared libraries an ELF file names (readelf -d), or [] where readelf cannot tell."""
    try:
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return []
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


class Stager:
    def __init__(self, build: str, source: str, kit: str, strip: bool, copy: bool):
        self.build, self.source, self.kit = os.path.realpath(build), os.path.realpath(source), os.path.realpath(kit)
        self.strip, self.copy = strip, copy
        self.files: dict[str, dict] = {}  # kit-relative path -> size, needed libraries
        self.directories: set[str] = set()  # kit-relative folders a test writes into

    def rewrite(self, text: str) -> str:
        """A string of CTest's with the build directory and the source tree made placeholders."""
        text = text.replace(self.build + "/", KIT + "/").replace(self.build, KIT)
        return text.replace(self.source + "/", SRC + "/").replace(self.source, SRC)

    def stage_file(self, path: str) -> str:
        """Copies a build output into the kit, at its path relative to the build directory."""
        relative = os.path.relpath(os.path.realpath(path), self.build)
        if relative in self.files:
            return relative
        target = os.path.join(self.kit, relative)
        if self.copy:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)
            if self.strip:
                subprocess.run(["strip", "--strip-unneeded", target], check=True)
        self.files[relative] = {"bytes": os.path.getsize(target), "needs": needed_libraries(target)}
        return relative

    def stage_paths_in(self, argument: str) -> list[str]:
        """Stages the build outputs an argument names (itself, or the value of -DNAME=VALUE);
        a build path that is no file is where the test writes: its folder is recorded."""
        value = argument.split("=", 1)[1] if argument.startswith("-D") and "=" in argument else argument
        if not value.startswith(self.build + "/"):
            return []
        if os.path.isfile(value):
            return [self.stage_file(value)]
        folder = value if os.path.isdir(value) else os.path.dirname(value)
        self.directories.add(os.path.relpath(folder, self.build))
        return []

    def test_entry(self, test: dict) -> dict:
        props = properties(test)
        command = test.get("command")
        entry = {"name": test["name"], "runnable": True}
        if not command:
            entry.update(runnable=False, not_runnable_because="CTest found no command: its program is not built")
            command = []
        launcher = os.path.basename(command[0]) if command else ""
        if launcher in MPI_LAUNCHERS:  # not staged: it cannot run there
            entry.update(runnable=False, not_runnable_because=NO_MPI)
        staged = [] if launcher in MPI_LAUNCHERS else \
            [relative for argument in command for relative in self.stage_paths_in(argument)]
        libraries = [lib for relative in staged for lib in self.files[relative]["needs"]]
        if launcher in MPI_LAUNCHERS or any(MPI_LIBRARY.match(lib) for lib in libraries):
            entry.update(runnable=False, not_runnable_because=NO_MPI)
        rewritten = [self.rewrite(a) for a in command]
        # A tool of this machine's (cmake, an MPI launcher) is looked up on the GPU machine's PATH.
        if rewritten and os.path.isabs(rewritten[0]):
            rewritten[0] = os.path.basename(rewritten[0])
        entry["command"] = rewritten
        working = props.get("WORKING_DIRECTORY", self.build)
        if working.startswith(self.build):
            self.directories.add(os.path.relpath(working, self.build))
        entry["working_directory"] = self.rewrite(working)
        entry["environment"] = [self.rewrite(e) for e in as_list(props.get("ENVIRONMENT"))]
        entry["timeout"] = props.get("TIMEOUT")
        entry["skip_return_code"] = props.get("SKIP_RETURN_CODE")
        entry["pass_regex"] = as_list(props.get("PASS_REGULAR_EXPRESSION"))
        entry["skip_regex"] = as_list(props.get("SKIP_REGULAR_EXPRESSION"))
        entry["fail_regex"] = as_list(props.get("FAIL_REGULAR_EXPRESSION"))
        entry["will_fail"] = bool(props.get("WILL_FAIL", False))
        entry["labels"] = as_list(props.get("LABELS"))
        return entry


def git_commit(source: str) -> str:
    try:
        return subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def stage(args) -> int:
    with open(args.ctest_json) as f:
        listing = json.load(f)
    stager = Stager(args.build, args.source, args.kit if not args.no_copy else args.build, args.strip, not args.no_copy)
    tests = [stager.test_entry(t) for t in listing.get("tests", []) if "gpu" in as_list(properties(t).get("LABELS"))]
    extras = []
    for extra in args.extra or []:
        if not os.path.isfile(extra):
            print(f"manifest: the extra file {extra} is not built", file=sys.stderr)
            return 1
        stager.stage_file(extra)
        extras.append(KIT + "/" + os.path.relpath(os.path.realpath(extra), stager.build))
    manifest = {
        "version": 1,
        "made": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "source_commit": git_commit(args.source),
        "tests": tests,
        "extras": extras,
        "files": stager.files,
        "directories": sorted(stager.directories),
    }
    os.makedirs(stager.kit, exist_ok=True)
    path = os.path.join(stager.kit, "manifest.json") if not args.no_copy else args.manifest_out
    if not path:
        print("manifest: --no-copy needs --manifest-out", file=sys.stderr)
        return 2
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    runnable = sum(t["runnable"] for t in tests)
    print(f"manifest: {len(tests)} gpu tests ({runnable} runnable from the kit), {len(stager.files)} files -> {path}")
    for t in tests:
        if not t["runnable"]:
            print(f"  not runnable on the GPU machine: {t['name']}: {t['not_runnable_because']}")
    return 0 if tests else 1


def resolve(text: str, kit: str, source: str) -> str:
    return text.replace(KIT, kit).replace(SRC, source)


def placeholder_paths(argument: str) -> list[str]:
    """The @KIT@ / @SRC@ paths an argument names: itself, or the value of -DNAME=VALUE."""
    value = argument.split("=", 1)[1] if argument.startswith("-D") and "=" in argument else argument
    return [value] if value.startswith((KIT + "/", SRC + "/")) else []


def load(path: str) -> dict:
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("version") != 1 or not isinstance(manifest.get("tests"), list):
        raise ValueError(f"{path}: not a version-1 GPU kit manifest")
    for t in manifest["tests"]:
        for key in ("name", "runnable", "command", "working_directory", "environment", "skip_regex", "pass_regex"):
            if key not in t:
                raise ValueError(f"{path}: test {t.get('name', '?')} has no '{key}'")
    return manifest


def check(args) -> int:
    kit, source = os.path.realpath(args.kit), os.path.realpath(args.source)
    manifest_path = args.manifest or os.path.join(kit, "manifest.json")
    try:
        manifest = load(manifest_path)
    except (OSError, ValueError) as e:
        print(f"check: {e}")
        return 1
    missing = []
    written = {KIT + "/" + d if d != "." else KIT for d in manifest.get("directories", [])}
    for t in manifest["tests"]:
        if not t["runnable"]:
            print(f"check: not runnable on the GPU machine: {t['name']}: {t['not_runnable_because']}")
            continue
        if not t["command"]:
            missing.append(f"{t['name']}: no command")
        for argument in t["command"]:
            for p in placeholder_paths(argument):
                # What a test writes (the runner's outputs) needs only its folder, made by the run.
                if not os.path.exists(resolve(p, kit, source)) and not (p in written or os.path.dirname(p) in written):
                    missing.append(f"{t['name']}: {p}")
        program = resolve(t["command"][0], kit, source) if t["command"] else ""
        if program and os.path.sep in program and not os.access(program, os.X_OK):
            missing.append(f"{t['name']}: {t['command'][0]} is not an executable")
        elif program and os.path.sep not in program and not shutil.which(program):
            missing.append(f"{t['name']}: {program} is not on PATH")
    for extra in list(manifest.get("extras", [])) + list(args.extra or []):
        if not os.path.isfile(resolve(extra, kit, source)):
            missing.append(f"extra: {extra}")
    for relative in manifest.get("files", {}):
        if not os.path.isfile(os.path.join(kit, relative)):
            missing.append(f"file: {KIT}/{relative}")
    runnable = sum(t["runnable"] for t in manifest["tests"])
    for m in missing:
        print(f"check: missing {m}")
    print(f"check: {manifest_path}: {len(manifest['tests'])} gpu tests, {runnable} runnable, "
          f"{len(manifest.get('extras', []))} extras, {len(missing)} missing")
    return 1 if missing or runnable == 0 else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--ctest-json", required=True)
    s.add_argument("--build", required=True)
    s.add_argument("--source", required=True)
    s.add_argument("--kit", required=True)
    s.add_argument("--extra", action="append")
    s.add_argument("--strip", action="store_true")
    s.add_argument("--no-copy", action="store_true")
    s.add_argument("--manifest-out")
    c = sub.add_parser("check")
    c.add_argument("--kit", required=True)
    c.add_argument("--source", required=True)
    c.add_argument("--manifest")
    c.add_argument("--extra", action="append")
    args = ap.parse_args()
    return stage(args) if args.command == "stage" else check(args)


if __name__ == "__main__":
    sys.exit(main())
