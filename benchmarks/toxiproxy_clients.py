"""Run the official Toxiproxy clients' own test suites against chaosml's proxy.

    python benchmarks/toxiproxy_clients.py --checkouts DIR [--only go,ruby,node,python,chaostoolkit]

DIR holds a checkout of each client, named as on GitHub (``owner+repo`` or just ``repo``):
Shopify/toxiproxy (its Go ``client/`` and ``api_test.go``), Shopify/toxiproxy-ruby,
ihsw/toxiproxy-node-client, douglas/toxiproxy-python and chaostoolkit-incubator/chaostoolkit-toxiproxy.
What they need comes from outside this repository and is not installed by it: Go (Debian
``golang-go``), Ruby with minitest and webmock (``ruby ruby-minitest ruby-webmock``), Node and npm
(the Node client's dev dependencies are installed with ``npm install`` in its checkout), pytest, and
chaostoolkit-lib for the chaostoolkit actions.

Each suite runs against a fresh ``chaosml proxy`` on the port the suite expects (8474; 8475 for the
Go API tests). The Go API tests are written to start Toxiproxy's own server in-process; here their
``WithServer`` helper is replaced by one that points the same tests at chaosml and clears its
proxies after each test (nothing else in them changes). chaostoolkit-toxiproxy's own tests mock
HTTP, so its actions are driven for real instead: create a proxy, add each toxic type through the
action made for it, read the proxy back, disable, enable, delete, reset.

Prints one line per suite (passed/failed/skipped) and, for each failure, its name; exits 1 if any
suite had a failure that is not in ``EXPECTED``, which lists the tests that cannot pass against
chaosml by design, each with the reason.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EXPECTED = {
    "go:TestVersionEndpointReturnsVersion": (
        'expects the body {"version": "git"}, the version of an unreleased Toxiproxy build; '
        "chaosml answers in the same shape with its own version"
    ),
}
REPOS = {
    "go": "toxiproxy",
    "ruby": "toxiproxy-ruby",
    "node": "toxiproxy-node-client",
    "python": "toxiproxy-python",
    "chaostoolkit": "chaostoolkit-toxiproxy",
}
GO_HARNESS = """package toxiproxy_test

import (
	"net"
	"testing"
)

// AssertProxyUp checks whether a proxy's listener accepts connections.
func AssertProxyUp(t *testing.T, addr string, up bool) {
	conn, err := net.Dial("tcp", addr)
	switch {
	case err != nil && up:
		t.Error("Expected proxy to be up:", err)
	case err == nil && !up:
		t.Error("Expected proxy to be down")
	}
	if conn != nil {
		conn.Close()
	}
}

// WithServer points the tests at a running chaosml proxy and clears its proxies afterwards.
func WithServer(t *testing.T, f func(string)) {
	defer func() {
		proxies, err := client.Proxies()
		if err != nil {
			t.Error("Failed to list proxies", err)
			return
		}
		for _, proxy := range proxies {
			if err := proxy.Delete(); err != nil {
				t.Error("Failed to delete proxy", err)
			}
		}
	}()
	f("http://localhost:8475")
}
"""


def find(checkouts: Path, repo: str) -> Path:
    for name in (repo, *(p.name for p in checkouts.glob(f"*+{repo}"))):
        if (checkouts / name).is_dir():
            return checkouts / name
    raise SystemExit(f"no checkout of {repo} in {checkouts}")


@contextmanager
def chaosml_proxy(port: int, *args: str) -> Iterator[None]:
    command = [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{port}", *args]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"chaosml proxy did not start on :{port}") from None
                time.sleep(0.1)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done.stdout + done.stderr


def go(checkout: Path) -> tuple[list[str], list[str]]:
    work = Path(tempfile.mkdtemp(prefix="chaosml-go-"))
    try:
        (work / "client").mkdir()
        for source in (checkout / "client").glob("*.go"):
            shutil.copy(source, work / "client" / source.name)
        (work / "go.mod").write_text("module github.com/Shopify/toxiproxy/v2\n\ngo 1.19\n")
        tests = (checkout / "api_test.go").read_text()
        tests = re.sub(r"\nvar testServer [^\n]*\n", "\n", tests)
        tests = re.sub(r"\nfunc WithServer\(.*?\n}\n", "\n", tests, flags=re.S)
        for package in ("flag", "os", "time"):
            if not re.search(rf"\b{package}\.", tests):
                tests = tests.replace(f'\t"{package}"\n', "")
        tests = re.sub(r'\t"github.com/(prometheus|rs)/[^"]*"\n', "", tests)
        tests = tests.replace('\t"github.com/Shopify/toxiproxy/v2"\n', "")
        (work / "api_test.go").write_text(tests)
        (work / "harness_test.go").write_text(GO_HARNESS)
        env = {"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOCACHE": str(work / ".cache")}
        with chaosml_proxy(8475):
            output = run(["go", "test", "-count=1", "-v", "./..."], work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = re.findall(r"^\s*--- PASS: (\S+)", output, re.M)
    failed = re.findall(r"^\s*--- FAIL: (\S+)", output, re.M)
    broken = re.findall(r"^FAIL\s+(\S+) \[(?:build|setup) failed\]", output, re.M)
    for line in re.findall(r"^\s+\w+_test\.go:\d+: .*$", output, re.M):
        print(f"    {line.strip()}")
    if broken or (not passed and not failed):
        print(output[-3000:])
        failed += [f"{package} (does not build)" for package in broken]
    return passed, failed


def outcomes(output: str, passed: str, failed: str) -> tuple[list[str], list[str]]:
    """The names of passed and failed tests in a runner's output (all of it, if none is found)."""
    found = re.findall(passed, output, re.M), re.findall(failed, output, re.M)
    if not any(found):
        print(output[-3000:])
    return found


def ruby(checkout: Path) -> tuple[list[str], list[str]]:
    with chaosml_proxy(8474):
        output = run(["ruby", "-Ilib", "-Itest", "test/toxiproxy_test.rb", "-v"], checkout)
    test = r"^ToxiproxyTest#(\S+) = [\d.]+ s = "
    return outcomes(output, test + r"\.", test + "[FE]")


def node(checkout: Path) -> tuple[list[str], list[str]]:
    if not (checkout / "node_modules").is_dir():
        run(["npm", "install", "--no-audit", "--no-fund"], checkout)
    with chaosml_proxy(8474):
        output = run(["npx", "jest", "--runInBand", "--verbose"], checkout)
    return outcomes(output, r"^\s+✓ (.+?)(?: \(\d+ ms\))?$", r"^\s+✕ (.+?)(?: \(\d+ ms\))?$")


def python(checkout: Path) -> tuple[list[str], list[str]]:
    with chaosml_proxy(8474):
        output = run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], checkout)
    return outcomes(output, r"^(\S+::\S+) PASSED", r"^(\S+::\S+) (?:FAILED|ERROR)")


def chaostoolkit(checkout: Path) -> tuple[list[str], list[str]]:
    sys.path.insert(0, str(checkout))
    from chaostoxi.proxy import actions as proxies  # type: ignore[import-not-found]
    from chaostoxi.proxy import probes  # type: ignore[import-not-found]
    from chaostoxi.toxic import actions as toxics  # type: ignore[import-not-found]

    server = socket.create_server(("127.0.0.1", 0))
    upstream = server.getsockname()[1]
    config = {"toxiproxy_host": "127.0.0.1", "toxiproxy_port": 8474}
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "create_proxy",
            lambda: proxies.create_proxy(
                "ctk",
                listen_host="127.0.0.1",
                upstream_host="127.0.0.1",
                upstream_port=upstream,
                configuration=config,
            ),
        ),
        ("proxy_exist", lambda: probes.proxy_exist("ctk", configuration=config)),
        (
            "create_toxic(attributes=None)",
            lambda: toxics.create_toxic("ctk", "plain", "noop", configuration=config),
        ),
        (
            "create_latency_toxic",
            lambda: toxics.create_latency_toxic("ctk", "lat", 100, 10, configuration=config),
        ),
        (
            "create_bandwith_degradation_toxic",
            lambda: toxics.create_bandwith_degradation_toxic(
                "ctk", "bw", 100, configuration=config
            ),
        ),
        (
            "create_slow_connection_close_toxic",
            lambda: toxics.create_slow_connection_close_toxic(
                "ctk", "sc", 10, configuration=config
            ),
        ),
        (
            "create_timeout_toxic",
            lambda: toxics.create_timeout_toxic("ctk", "to", 1000, configuration=config),
        ),
        (
            "create_slicer_toxic",
            lambda: toxics.create_slicer_toxic("ctk", "sl", 10, 2, 5, configuration=config),
        ),
        (
            "create_limiter_toxic",
            lambda: toxics.create_limiter_toxic("ctk", "lim", 1000, configuration=config),
        ),
        ("delete_toxic", lambda: toxics.delete_toxic("ctk", "lat", configuration=config)),
        (
            "get_proxy_attribute",
            lambda: probes.get_proxy_attribute("ctk", "enabled", configuration=config),
        ),
        ("disable_proxy", lambda: proxies.disable_proxy("ctk", configuration=config)),
        ("enable_proxy", lambda: proxies.enable_proxy("ctk", configuration=config)),
        (
            "modify_proxy",
            lambda: proxies.modify_proxy(
                "ctk", listen_address="127.0.0.1:0", enabled=True, configuration=config
            ),
        ),
        ("reset", lambda: proxies.reset(configuration=config)),
        ("delete_proxy", lambda: proxies.delete_proxy("ctk", configuration=config)),
    ]
    passed, failed = [], []
    with chaosml_proxy(8474):
        for name, step in steps:
            try:
                result = step()
            except Exception as exc:
                print(f"  chaostoolkit {name}: {type(exc).__name__}: {exc}")
                failed.append(name)
                continue
            (passed if result is not False else failed).append(name)
    server.close()
    return passed, failed


SUITES = {"go": go, "ruby": ruby, "node": node, "python": python, "chaostoolkit": chaostoolkit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=Path, required=True)
    parser.add_argument("--only", default=",".join(SUITES))
    args = parser.parse_args()
    unexpected = 0
    for suite in args.only.split(","):
        passed, failed = SUITES[suite](find(args.checkouts, REPOS[suite]))
        expected = [name for name in failed if f"{suite}:{name}" in EXPECTED]
        print(
            f"{suite:13} {len(passed):3} passed  {len(failed) - len(expected):3} failed  "
            f"{len(expected):3} failed as documented"
        )
        for name in failed:
            why = EXPECTED.get(f"{suite}:{name}")
            print(f"    {'documented' if why else 'FAILED'}: {name}" + (f" ({why})" if why else ""))
            unexpected += why is None
        if not passed and not failed:
            unexpected += 1
            print(f"    no test ran for {suite}")
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
