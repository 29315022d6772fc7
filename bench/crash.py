"""Crash test: `kill -9` the server at random moments while work keeps arriving, restart it each
time, then check with our own client that every acknowledged request ran its actions at least once
and that no action ever ran twice at the same time.

    python3 bench/crash.py [--kills 30] [--seed 16] [--bin target/release/cockpit]

Sources of acknowledged requests, each sending on its own thread with a unique id per request:

- REST: schedule the `work` action, then `POST /ays/repository/rest/aysrun`; a `201` is acknowledged
  (a `409`, a run already in progress, is not).
- mail: `smtplib` to the SMTP receiver; a `250` to `DATA` is acknowledged.
- `POST /ays/event/crash` (operator token) and `POST /webhooks/github` (signed with
  `X-Hub-Signature-256` against `[webhooks] github_secret`, with `X-GitHub-Event` and
  `X-GitHub-Delivery`): a `2xx` is acknowledged. Each is used only when the server has the route
  (a probe answering `404`, or a config refusing `[webhooks]`, skips it and the output says so).

The repositories come from a local git repository. Every action appends `start` and `end` lines
(request id, repository, service, action, run, pid, nanosecond time) to `$COCKPIT_DATA/crash.log`,
and holds an exclusive `flock` per (repository, service, action) while it runs: a second copy that
finds the lock taken writes an `overlap` line. The check, after the last restart and once every run
has ended: every acknowledged mail and webhook has an `end` line for each action it subscribes
(both services), every acknowledged REST run, or the run queued again in its place when a kill
cut it short (`again_of` names the run it repeats), ended `ok` with its action run to the end,
no `overlap` line, the `start`/`end`
intervals of each (repository, service, action) never intersect, and no action is still running
after the final shutdown.

Standard library only. Exit status 0 when there is no violation.
"""
import argparse
import hashlib
import hmac
import json
import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = ROOT / "tests/support/keys/test_p384.pem"
PUB = (ROOT / "tests/support/keys/test_p384.pub.pem").read_text().strip().replace("\n", "\\n")
GITHUB_SECRET = "crash-test-github-secret"
# Channels the GitHub webhook might raise its events on; each gets its own action, and a webhook
# counts as run when any of them ran with its id.
GITHUB_CHANNELS = {"github": "ongithub", "github.push": "ongithubpush"}

ACTION = r"""#!/bin/sh
# Crash-test action: logs start and end with the request's id; a held lock means a second copy.
input=$(cat)
id=$(printf '%s' "$input" | grep -o 'crid-[a-z]*-[0-9]*' | head -n 1)
[ -n "$id" ] || id="run-$COCKPIT_RUN"
name=$(printf '%s-%s-%s' "$COCKPIT_REPO" "$COCKPIT_SERVICE" "$COCKPIT_ACTION" | tr -c 'a-zA-Z0-9_-' '_')
log="$COCKPIT_DATA/crash.log"
what="$id $COCKPIT_REPO $COCKPIT_SERVICE $COCKPIT_ACTION $COCKPIT_RUN $$"
exec 9>>"$COCKPIT_DATA/$name.lock"
if ! flock -n 9; then
  echo "overlap $what $(date +%s%N)" >> "$log"
  flock 9
fi
echo "start $what $(date +%s%N)" >> "$log"
sleep 0.2
echo "end $what $(date +%s%N)" >> "$log"
"""


def log(*args):
    print("[crash]", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None, headers=None, timeout=10):
    """(status, text); status 0 when the server could not be reached or did not answer."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (OSError, urllib.error.URLError, ConnectionError):
        return 0, ""


class Server:
    """The binary on a fixed API and SMTP port (the same after every restart)."""

    def __init__(self, binary, work, with_webhooks):
        self.binary = binary
        self.work = work
        self.data = work / "data"
        self.api_port, self.mail_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.config = work / "config.toml"
        self.with_webhooks = with_webhooks
        self.proc = None
        self.write_config()

    def write_config(self):
        text = (
            "[oauth]\nclient_id = \"crash\"\nclient_secret = \"crash-secret\"\n"
            "organization = \"myorg\"\nredirect_uri = \"http://127.0.0.1/oauth/callback\"\n"
            f"jwt_key = \"{PUB}\"\n\n[api.ays]\nhost = \"127.0.0.1\"\nport = {self.api_port}\n\n"
            f"[storage]\npath = \"{self.data}\"\n\n"
            f"[mail]\nactive = true\nhost = \"127.0.0.1\"\nport = {self.mail_port}\n"
            "domain = [\"crash.example\"]\n"
        )
        if self.with_webhooks:
            text += f"\n[webhooks]\ngithub_secret = \"{GITHUB_SECRET}\"\n"
        self.config.write_text(text)

    def start(self, timeout=60):
        """Starts and waits for `cockpit ready`; the stderr lines when it exits first."""
        logfile = self.work / "server.log"
        self.offset = logfile.stat().st_size if logfile.exists() else 0
        out = open(logfile, "a")
        self.proc = subprocess.Popen(
            [str(self.binary), "start", "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=out,
            env={**os.environ, "RUST_LOG": "warn,cockpit::server=info"},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            if "cockpit ready" in self.tail():
                return True
            time.sleep(0.02)
        raise RuntimeError("no `cockpit ready`:\n" + self.tail())

    def tail(self):
        """What the server wrote since its last start."""
        with open(self.work / "server.log", "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def token(self):
        out = subprocess.run(
            [str(self.binary), "token", "-c", str(self.config), "--key", str(KEY), "--ttl", "7200"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()


def make_git_source(path):
    """A local git repository: the `worker` template with every action, and two blueprints."""
    actions = path / "actorTemplates/worker/actions"
    actions.mkdir(parents=True)
    (path / "actorTemplates/worker/schema.yaml").write_text("{}\n")
    for name in ["work", "onmail", "onevent", *GITHUB_CHANNELS.values()]:
        (actions / name).write_text(ACTION)
        (actions / name).chmod(0o755)
    (path / "blueprints").mkdir()
    (path / "blueprints/rest.yaml").write_text("worker__r:\n")
    filters = "".join(
        f"  - {{channel: {channel}, action: {action}}}\n"
        for channel, action in [("email", "onmail"), ("crash", "onevent"), *GITHUB_CHANNELS.items()]
    )
    (path / "blueprints/events.yaml").write_text(f"worker__a:\nworker__b:\neventfilters:\n{filters}")
    git = ["git", "-C", str(path), "-c", "user.name=crash", "-c", "user.email=crash@localhost"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "crash test"], check=True)


class Sources:
    """The senders. Each records its acknowledged ids; unacknowledged attempts are counted only."""

    def __init__(self, server, token, rng_seed, enabled):
        self.server = server
        self.token = token
        self.enabled = enabled
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {name: [] for name in enabled}
        self.attempts = {name: 0 for name in enabled}
        self.refused = {name: {} for name in enabled}
        self.seed = rng_seed
        self.threads = []

    def note(self, source, status):
        with self.lock:
            self.refused[source][str(status)] = self.refused[source].get(str(status), 0) + 1

    def serve(self):
        for name in self.enabled:
            thread = threading.Thread(target=self.loop, args=(name,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def loop(self, source):
        rng = random.Random(f"{self.seed}-{source}")
        send = getattr(self, "send_" + source)
        n = 0
        while not self.stop.is_set():
            n += 1
            with self.lock:
                self.attempts[source] += 1
            ident = f"crid-{source}-{n}"
            try:
                ok = send(ident)
            except Exception as err:  # the server was killed mid-request: not acknowledged
                self.note(source, type(err).__name__)
                ok = None
            if ok is not None:
                with self.lock:
                    self.acked[source].append(ok)
            self.stop.wait(rng.uniform(0.15, 0.6))

    def send_rest(self, ident):
        api = self.server.api + "/ays/repository/rest"
        status, _ = http("POST", api + "/service/worker/r/action/work", {}, self.token)
        if status != 200:
            self.note("rest", f"schedule {status}")
            return None
        status, body = http("POST", api + "/aysrun", None, self.token)
        if status != 201:
            self.note("rest", status)
            return None
        return json.loads(body)["key"]

    def send_mail(self, ident):
        message = EmailMessage()
        message["From"] = "crash@client.example"
        message["To"] = "ops@crash.example"
        message["Subject"] = f"crash test {ident}"
        message.set_content(f"request {ident}\n")
        with smtplib.SMTP("127.0.0.1", self.server.mail_port, timeout=10) as smtp:
            smtp.send_message(message)  # raises unless DATA got 250
        return ident

    def send_event(self, ident):
        status, _ = http("POST", self.server.api + "/ays/event/crash", {"crash_id": ident},
                         self.token)
        if not 200 <= status < 300:
            self.note("event", status)
            return None
        return ident

    def send_github(self, ident):
        body = json.dumps({"ref": "refs/heads/main", "crash_id": ident,
                           "repository": {"full_name": "crash/test"}}).encode()
        status, _ = http("POST", self.server.api + "/webhooks/github", body,
                         headers=github_headers(body, ident))
        if not 200 <= status < 300:
            self.note("github", status)
            return None
        return ident


def github_headers(body, delivery, secret=GITHUB_SECRET):
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"{delivery}-{random.getrandbits(64):016x}",
            "Content-Type": "application/json"}


def setup(server, token, work):
    source = work / "source"
    make_git_source(source)
    for repo, blueprint in [("rest", "rest.yaml"), ("events", "events.yaml")]:
        status, body = http("POST", server.api + "/ays/repository",
                            {"name": repo, "git_url": str(source)}, token, timeout=60)
        assert status == 201, (status, body)
        status, body = http("POST", f"{server.api}/ays/repository/{repo}/blueprint/{blueprint}",
                            None, token, timeout=60)
        assert status == 200, (status, body)


def probe(server, token):
    """Which webhook sources the server has: a route that answers 404 is not there."""
    status, _ = http("POST", server.api + "/ays/event/crash-probe", {"probe": True}, token)
    event = status != 404 and status != 0
    body = b"{}"
    status, _ = http("POST", server.api + "/webhooks/github", body,
                     headers=github_headers(body, "probe", secret="not-the-secret"))
    github = server.with_webhooks and status != 404 and status != 0
    return event, github


def runs(server, token, repo):
    """Every run of `repo`, following the `Link: <…>; rel="next"` header from page to page."""
    out = []
    url = f"{server.api}/ays/repository/{repo}/aysrun?limit=1000"
    for _ in range(10000):
        request = urllib.request.Request(url)
        request.add_header("Authorization", f"bearer {token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            out += json.loads(response.read().decode())
            link = response.headers.get("Link") or ""
        found = re.search(r"<([^>]+)>;\s*rel=\"next\"", link)
        if not found:
            return out
        url = urllib.parse.urljoin(url, found.group(1))
    return out


def drain(server, token, timeout):
    """Waits until no run is `new` or `running` in either repository."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = [r for repo in ("rest", "events") for r in runs(server, token, repo)
                if r.get("state") in ("new", "running")]
        if not busy:
            return True
        time.sleep(0.5)
    return False


def parse_log(path):
    """start/end/overlap records: (kind, id, repo, service, action, run, pid, ns)."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[0] in ("start", "end", "overlap"):
            records.append((*parts[:7], int(parts[7])))
    return records


def check(server, token, sources, enabled):
    records = parse_log(server.data / "crash.log")
    ended = {}  # id -> set of (repo, service, action) that ran to the end
    started_runs, ended_runs = set(), set()
    for kind, ident, repo, service, action, run_key, pid, _ in records:
        if kind == "end":
            ended.setdefault(ident, set()).add((repo, service, action))
            ended_runs.add(run_key)
        if kind == "start":
            started_runs.add(run_key)
    violations = []
    overlaps = [r for r in records if r[0] == "overlap"]
    for r in overlaps:
        violations.append(f"two copies at once: {r[4]} of {r[3]} in {r[2]} (request {r[1]})")
    # The intervals of one (repo, service, action), by pid.
    spans = {}
    for kind, ident, repo, service, action, run_key, pid, ns in records:
        if kind in ("start", "end"):
            spans.setdefault((repo, service, action), {}).setdefault((run_key, pid), {})[kind] = ns
    for what, by_pid in spans.items():
        closed = sorted((v["start"], v["end"]) for v in by_pid.values() if "start" in v and "end" in v)
        for (s1, e1), (s2, e2) in zip(closed, closed[1:]):
            if s2 < e1:
                violations.append(f"{what} ran twice at once ({(e1 - s2) / 1e6:.0f} ms overlap)")

    events_actions = {"mail": {"onmail"}, "event": {"onevent"},
                      "github": set(GITHUB_CHANNELS.values())}
    rest_runs = {r["key"]: r for r in runs(server, token, "rest")}
    # A run a kill cut short is queued again as a new run naming it (`again_of`): follow that
    # chain from the acknowledged run to the run that ended.
    repeated_by = {r["again_of"]: k for k, r in rest_runs.items() if r.get("again_of")}
    summary = {}
    for source in enabled:
        acked = sources.acked[source]
        lost, interrupted, interrupted_started, interrupted_done = [], 0, 0, 0
        for ident in acked:
            if source == "rest":
                # The acknowledged run, or the run queued again in its place after a kill (and so
                # on), must have run its action to the end and ended ok.
                chain = [ident]
                while chain[-1] in repeated_by and len(chain) < 100:
                    chain.append(repeated_by[chain[-1]])
                if len(chain) > 1:
                    interrupted += 1
                    if any(k in started_runs for k in chain[:-1]):
                        interrupted_started += 1
                    if any(k in ended_runs for k in chain[:-1]):
                        interrupted_done += 1
                last = rest_runs.get(chain[-1], {})
                if last.get("state") != "ok" or not any(k in ended_runs for k in chain):
                    lost.append(f"{ident} (runs {' -> '.join(chain)}; last {last.get('state')}: "
                                f"{last.get('error')}; action "
                                f"{'ended' if any(k in ended_runs for k in chain) else 'started' if any(k in started_runs for k in chain) else 'never started'})")
            else:
                done = {a for (_, _, a) in ended.get(ident, set())}
                services = {s for (_, s, a) in ended.get(ident, set())}
                want = events_actions[source]
                if not done & want or len(services) < 2:
                    lost.append(f"{ident} (ran: {sorted(ended.get(ident, set()))})")
        for item in lost:
            violations.append(f"{source}: acknowledged but never run to the end: {item}")
        summary[source] = {
            "attempts": sources.attempts[source], "acknowledged": len(acked),
            "not_acknowledged": dict(sources.refused[source]), "lost": len(lost),
            "interrupted": interrupted, "interrupted_action_started": interrupted_started,
            "interrupted_action_ended": interrupted_done,
        } if source == "rest" else {
            "attempts": sources.attempts[source], "acknowledged": len(acked),
            "not_acknowledged": dict(sources.refused[source]), "lost": len(lost),
        }
    starts = sum(1 for r in records if r[0] == "start")
    ends = sum(1 for r in records if r[0] == "end")
    ends_per_id = {}
    for r in records:
        if r[0] == "end":
            ends_per_id[r[1]] = ends_per_id.get(r[1], 0) + 1
    twice = sum(1 for ident, acts in ended.items() if ends_per_id[ident] > len(acts))
    return violations, summary, {"starts": starts, "ends": ends, "overlap_lines": len(overlaps),
                                 "event_ids_run_again_after_a_crash": twice}


def parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--min-gap", type=float, default=0.5, help="seconds between kills, at least")
    parser.add_argument("--max-gap", type=float, default=5.0, help="seconds between kills, at most")
    parser.add_argument("--bin", default=None, help="the cockpit binary (default: release, else debug)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--record", action="store_true",
                        help="write the result into BENCHMARKS.md (its `Crash test` section)")
    return parser


def main(argv=None):
    args = parser().parse_args(argv)
    result = crash_test(args)
    print(json.dumps(result, indent=2))
    if args.record:
        sys.path.insert(0, str(ROOT / "bench"))
        import run as bench_run
        bench_run.write_markdown({"crash": result})
        log("BENCHMARKS.md: Crash test section written")
    return 0 if not result["violations"] else 1


def pick_binary(arg):
    if arg:
        return Path(arg).resolve()
    release, debug = ROOT / "target/release/cockpit", ROOT / "target/debug/cockpit"
    if release.exists() and (not debug.exists() or release.stat().st_mtime >= debug.stat().st_mtime):
        return release
    return debug


def crash_test(args):
    binary = pick_binary(args.bin)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cockpit-crash-"))
    log("binary", binary, "work", work, "seed", args.seed)
    server = Server(binary, work, with_webhooks=True)
    skipped = []
    if not server.start():
        if "webhooks" not in server.tail():
            raise RuntimeError("the server did not start:\n" + server.tail())
        skipped.append("github (the config has no [webhooks] section)")
        server.with_webhooks = False
        server.write_config()
        if not server.start():
            raise RuntimeError("the server did not start:\n" + server.tail())
    token = server.token()
    setup(server, token, work)
    event, github = probe(server, token)
    enabled = ["rest", "mail"]
    if event:
        enabled.append("event")
    else:
        skipped.append("event (POST /ays/event/{channel} answers 404)")
    if github:
        enabled.append("github")
    elif server.with_webhooks:
        skipped.append("github (POST /webhooks/github answers 404)")
    for reason in skipped:
        log("skipped source:", reason)
    sources = Sources(server, token, args.seed, enabled)
    sources.serve()
    kills, restarts, restart_s = 0, 0, []
    started = time.time()
    try:
        for _ in range(args.kills):
            time.sleep(rng.uniform(args.min_gap, args.max_gap))
            server.kill9()
            kills += 1
            t = time.perf_counter()
            if not server.start():
                raise RuntimeError("the server did not come back:\n" + server.tail())
            restart_s.append(time.perf_counter() - t)
            restarts += 1
            log(f"kill {kills}/{args.kills}; acknowledged so far:",
                {k: len(v) for k, v in sources.acked.items()})
        time.sleep(2)
    finally:
        sources.join()
    load_s = time.time() - started
    drained = drain(server, token, 600)
    violations, summary, totals = check(server, token, sources, enabled)
    if not drained:
        violations.append("runs still new or running 600 s after the last request")
    server.stop()
    # An action that outlived the server still holds its lock.
    for lock in sorted(server.data.glob("*.lock")):
        held = subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0
        if held:
            violations.append(f"an action outlived the server: {lock.name} is still locked")
    load = os.getloadavg()
    result = {
        "binary": str(binary.relative_to(ROOT)) if binary.is_relative_to(ROOT) else str(binary),
        "seed": args.seed, "kills": kills, "restarts": restarts,
        "restart_median_ms": sorted(restart_s)[len(restart_s) // 2] * 1000 if restart_s else None,
        "seconds_under_load": round(load_s, 1), "sources": summary, "skipped": skipped,
        "actions": totals, "violations": violations, "loadavg": [round(x, 1) for x in load],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    if not args.keep and not violations:
        subprocess.run(["rm", "-rf", str(work)])
    else:
        log("work directory kept:", work)
    return result


if __name__ == "__main__":
    sys.exit(main())
