# mem.py's protocol plus: stderr passed through (MEMTRACE lines), smaps summary at steady, scrape latencies.
# usage: python3 mem3.py KUBECONFIG BINARY [ENV=VAL ...]
import os, sys, subprocess, time, urllib.request, socket, collections
kc, binary = sys.argv[1], sys.argv[2]
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, v = kv.split('=', 1); env[k] = v
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
p = subprocess.Popen([binary, '--kubeconfig', kc, '--metrics-addr', f'127.0.0.1:{port}', '--grpc-addr', '127.0.0.1:0', '--log-level', 'warn', '--list-page-size', '500'], env=env, stdout=subprocess.DEVNULL)
def rss():
    d = {}
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith(('VmRSS', 'VmHWM')): k, v = l.split(':'); d[k] = int(v.split()[0]) / 1000
    return d
def get(path):
    return urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=30).read()
t0 = time.time()
while True:
    try:
        if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=5).status == 200: break
    except Exception: pass
    time.sleep(0.05)
ready = time.time() - t0; r0 = rss()
def runs():
    for l in get('/metrics').decode().split('\n'):
        if l.startswith('karpetrack_recommender_duration_seconds_count '): return float(l.split()[1])
    return 0
lat = []
while runs() < 1: time.sleep(0.5)
time.sleep(5); r1 = rss()
if os.environ.get('QUICK'):
    print(f"{' '.join(sys.argv[3:]) or 'default'}: ready {ready:.1f}s hwm@ready {r0['VmHWM']:.0f} hwm@run {r1['VmHWM']:.0f} rss@run {r1['VmRSS']:.0f}", flush=True)
    p.terminate(); p.wait(); sys.exit(0)
for i in range(700):
    t = time.time(); get('/metrics'); lat.append(time.time() - t)
time.sleep(5); r2 = rss()
lat.sort()
def smaps():
    groups = collections.Counter(); name = None
    for l in open(f'/proc/{p.pid}/smaps'):
        parts = l.split()
        if len(parts) >= 5 and '-' in parts[0] and ':' not in parts[0]:
            name = parts[5] if len(parts) >= 6 else '[anon]'
            name = os.path.basename(name)
        elif parts[0] == 'Rss:':
            groups[name] += int(parts[1])
    return groups
g = smaps()
print(f"{' '.join(sys.argv[3:]) or 'default'}: ready {ready:.1f}s hwm@ready {r0['VmHWM']:.0f} hwm@run {r1['VmHWM']:.0f} rss@run {r1['VmRSS']:.0f} steady {r2['VmRSS']:.0f} MB; b2b scrape p50 {lat[len(lat)//2]*1000:.1f} p99 {lat[int(len(lat)*0.99)]*1000:.1f} ms", flush=True)
if os.environ.get('SMAPS'):
    for k, v in g.most_common(12): print(f"   {k:40} {v/1000:7.1f} MB")
    print(open(f'/proc/{p.pid}/smaps_rollup').read())
p.terminate(); p.wait()
