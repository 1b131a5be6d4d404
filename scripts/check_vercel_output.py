"""Checks what `vercel build` produced in WORK/.vercel/output (see
scripts/vercel-build-check): one function per api/**/*.rs with maxDuration
and the policy file, the crons and the rewrite, public/ as the only static
files, and a built function answering /api/health. Prints the build time and
binary sizes; exits 1 on any failure, including a build over 300 s."""
import json, os, socket, subprocess, sys, time, urllib.error, urllib.request

work, seconds = sys.argv[1], int(sys.argv[2])
out = os.path.join(work, ".vercel", "output")
fail = []

sources = sorted(os.path.relpath(os.path.join(d, f), work)[:-3]
                 for d, _, fs in os.walk(os.path.join(work, "api")) for f in fs if f.endswith(".rs"))
funcs = sorted(os.path.relpath(d, os.path.join(out, "functions"))[:-5]
               for d, _, _ in os.walk(os.path.join(out, "functions")) if d.endswith(".func"))
if sources != funcs:
    fail.append(f"functions {funcs} != api sources {sources}")

binaries = {}
for f in funcs:
    cfg = json.load(open(os.path.join(out, "functions", f + ".func", ".vc-config.json")))
    if cfg.get("maxDuration") != 300:
        fail.append(f"{f}: maxDuration {cfg.get('maxDuration')}")
    files = cfg.get("filePathMap", {})
    if "rollback-guard.toml" not in files:
        fail.append(f"{f}: the policy file is not bundled ({sorted(files)})")
    exe = files.get(cfg.get("handler", "executable"))
    if exe:
        binaries[f] = os.path.join(work, exe)

config = json.load(open(os.path.join(out, "config.json")))
crons = sorted(c["path"] for c in config.get("crons", []))
if crons != ["/api/cron/backups", "/api/cron/evaluate", "/api/cron/probe"]:
    fail.append(f"crons {crons}")
if "/api/incidents?id=" not in json.dumps(config.get("routes", [])):
    fail.append("the /api/incidents/:id rewrite is missing from config.json routes")

static = sorted(os.path.relpath(os.path.join(p, n), os.path.join(out, "static"))
                for p, _, ns in os.walk(os.path.join(out, "static")) for n in ns)
if static != ["index.html"]:
    fail.append(f"static files other than public/: {static[:20]}")

health = binaries.get("api/health")
if not health or not os.path.exists(health):
    fail.append(f"no built health binary ({health})")
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = {"PATH": os.environ.get("PATH", ""), "VERCEL_DEV": "1", "VERCEL_DEV_PORT": str(port),
           "ROLLBACK_GUARD_SQLITE_PATH": os.path.join(work, "guard.db"), "RUST_LOG": "warn"}
    started = time.monotonic()
    proc = subprocess.Popen([health], cwd=work, env=env, stdout=subprocess.DEVNULL)
    body = b""
    try:
        # Polled every 5 ms (10 s at most): a coarser poll measured its own
        # interval (a first try before the listener was up read as 100+ ms).
        for _ in range(2000):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2).read()
                break
            except urllib.error.HTTPError as e:
                body = e.read()
                break
            except OSError:
                time.sleep(0.005)
    finally:
        cold_ms = (time.monotonic() - started) * 1000
        proc.kill()
    # Process start to the first answered request (includes opening SQLite).
    print(f"cold start (spawn to first /api/health answer): {cold_ms:.0f} ms")
    if b'"config"' not in body:
        fail.append(f"the built health function did not answer: {body[:200]!r}")

print(f"build: {seconds} s (bar: under 300 s on 2 cores)")
for f, path in sorted(binaries.items()):
    size = os.path.getsize(path) if os.path.exists(path) else -1
    print(f"  {f}: {size / 1e6:.1f} MB")
if seconds >= 300:
    fail.append(f"the build took {seconds} s, over the 300 s bar")
if fail:
    print("FAILED:\n  " + "\n  ".join(fail))
    sys.exit(1)
print(f"ok: {len(funcs)} functions, crons, rewrite, static = public/ only, health answers")
