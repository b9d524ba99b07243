#!/usr/bin/env python3
"""Start-up cost of the gateway: time from exec to the first /health 200,
and its CPU (utime+stime) and RSS at that moment. Median of RUNS starts.
Usage: scripts/startup-measure.py BINARY MAX_CONNECTIONS [RUNS] (5)
Ports are picked in 20000..31999, folders under /tmp, removed after."""
import os, signal, socket, statistics, subprocess, sys, tempfile, time

binary, maxc = sys.argv[1], int(sys.argv[2])
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
tick = os.sysconf("SC_CLK_TCK")

def free_port():
    import random
    while True:
        p = random.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p)); return p
        except OSError:
            pass
        finally:
            s.close()

def health(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

res = []
for r in range(runs):
    d = tempfile.mkdtemp(prefix="wk-start.")
    port = free_port()
    with open(d + "/gateway.ini", "w") as f:
        f.write(f"[gateway]\nlisten = 127.0.0.1\nhttp_port = {port}\napi_key = measure-key\n"
                f"max_connections = {maxc}\n[store]\npath =\n[log]\nlevel = info\ndirectory = logs\n")
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "-c", d + "/gateway.ini"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    ok = False
    while time.monotonic() - t0 < 60 and p.poll() is None:
        if health(port):
            ok = True
            break
        time.sleep(0.002)
    ms = (time.monotonic() - t0) * 1000
    if ok:
        st = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(st[11]) + int(st[12])) * 1000 / tick
        status = open(f"/proc/{p.pid}/status").read()
        rss = int(status.split("VmRSS:")[1].split()[0])
        thr = int(status.split("Threads:")[1].split()[0])
        res.append((ms, cpu, rss, thr))
        print(f"  run {r}: /health {ms:.0f} ms, CPU {cpu:.0f} ms, RSS {rss/1024:.1f} MB, {thr} threads")
        p.send_signal(signal.SIGTERM)
    else:
        err = p.stderr.read().decode(errors="replace").strip().splitlines() if p.poll() is not None else ["(no answer)"]
        print(f"  run {r}: no /health ({err[-1] if err else ''})")
        p.kill()
    p.wait()
    subprocess.run(["rm", "-rf", d])
if res:
    med = lambda i: statistics.median(x[i] for x in res)
    print(f"{binary} max_connections={maxc}: median of {len(res)}: /health {med(0):.0f} ms, "
          f"CPU {med(1):.0f} ms, RSS {med(2)/1024:.1f} MB, {med(3):.0f} threads")
else:
    print(f"{binary} max_connections={maxc}: did not start")
