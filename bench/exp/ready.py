# Time to ready against a raw paged LIST taken right before, /metrics every 100 ms for the first minute after ready
# (the first recommender run under way), then steady RSS after the run and 700 back-to-back scrapes.
# usage: python3 ready.py KUBECONFIG BINARY [ENV=VAL ...]   (QUICK=1 in the environment: stop after the first minute)
# Runs against one `Karpetrack.Bench.dll serve`; a binary is a NativeAOT executable or a karpetrack.dll (run with dotnet).
import os, sys, subprocess, time, urllib.request, urllib.parse, socket, re
kc, binary = sys.argv[1], sys.argv[2]
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, v = kv.split('=', 1); env[k] = v
    if k.startswith('DOTNET_') and v.lower().startswith('0x'):
        sys.exit(f'{k}={v}: the NativeAOT runtime ignores a DOTNET_ value with a 0x prefix (silently); write the hex digits only')
server = re.search(r'server:\s*(\S+)', open(kc).read()).group(1)

def raw_list():
    # HTTP/1.0 on a plain socket read into one reused buffer: no chunk decoding, so the client costs next to nothing.
    u = urllib.parse.urlparse(server); buf = bytearray(1 << 20); view = memoryview(buf)
    t = time.time(); total = 0; cont = None
    while True:
        path = '/api/v1/pods?limit=500' + (f'&continue={urllib.parse.quote(cont)}' if cont else '')
        c = socket.create_connection((u.hostname, u.port))
        c.sendall(f'GET {path} HTTP/1.0\r\nHost: {u.hostname}\r\nAccept: application/json\r\n\r\n'.encode())
        head = b''
        while True:
            n = c.recv_into(buf)
            if n == 0: break
            if len(head) < 4096: head += bytes(view[:min(n, 4096)])
            total += n
        c.close()
        m = re.search(rb'"continue":"([^"]*)"', head)
        cont = m.group(1).decode() if m and m.group(1) else None
        if not cont: return time.time() - t, total

raw, nbytes = raw_list()
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
cmd = (['dotnet', binary] if binary.endswith('.dll') else [binary]) + ['--kubeconfig', kc, '--metrics-addr', f'127.0.0.1:{port}',
       '--grpc-addr', '127.0.0.1:0', '--log-level', 'warn', '--list-page-size', '500']
t0 = time.time()
p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
def rss():
    d = {}
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith(('VmRSS', 'VmHWM')): k, v = l.split(':'); d[k] = int(v.split()[0]) / 1000
    return d
def cpu():
    f = open(f'/proc/{p.pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100
def get(path):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=30) as r: return r.read()
while True:
    try:
        if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=5).status == 200: break
    except Exception: pass
    time.sleep(0.02)
ready = time.time() - t0; r0 = rss(); c0 = cpu()
if os.environ.get('READY_ONLY'):
    print(f"{' '.join(sys.argv[3:]) or 'default'} {binary}: raw {raw:.2f}s ({nbytes/1e6:.0f} MB) ready {ready:.2f}s = {ready/raw:.2f}x (cpu {c0:.1f}s) hwm@ready {r0['VmHWM']:.0f} [load {open('/proc/loadavg').read().split()[0]}]", flush=True)
    p.terminate(); p.wait(); sys.exit(0)
lat = []
for i in range(610):
    t = time.time(); get('/metrics'); d = time.time() - t
    if i >= 10: lat.append(d)
    if d < 0.1: time.sleep(0.1 - d)
lat.sort()
def gcstats():
    d = {}
    for l in get('/metrics').decode().split('\n'):
        if l.startswith(('dotnet_gc_pause_seconds_total', 'dotnet_collection_count_total', 'karpetrack_recommender_duration_seconds_sum')):
            k, v = l.rsplit(' ', 1); d[k.replace('dotnet_collection_count_total', 'gc')] = round(float(v), 2)
    return d
slow = sum(1 for x in lat if x > 0.015)
first = f"{slow} over 15 ms, {gcstats()}; p50 {lat[len(lat)//2]*1000:.1f} p99 {lat[int(len(lat)*0.99)]*1000:.1f} max {lat[-1]*1000:.0f} ms"
def runs():
    for l in get('/metrics').decode().split('\n'):
        if l.startswith('karpetrack_recommender_duration_seconds_count '): return float(l.split()[1])
    return 0
tag = ' '.join(sys.argv[3:]) or 'default'
line = f"{tag}: raw {raw:.2f}s ready {ready:.2f}s = {ready/raw:.2f}x (cpu {c0:.1f}s) hwm@ready {r0['VmHWM']:.0f}; first minute {first}"
if not os.environ.get('QUICK'):
    while runs() < 1: time.sleep(0.5)
    time.sleep(5); r1 = rss()
    for i in range(700): get('/metrics')
    time.sleep(5); r2 = rss()
    line += f"; hwm@run {r1['VmHWM']:.0f} steady {r2['VmRSS']:.0f} MB"
print(line + f" [load {open('/proc/loadavg').read().split()[0]}]", flush=True)
p.terminate(); p.wait()
