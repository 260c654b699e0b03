# Time to ready and a watch backlog drain, with the service's CPU for each, against one running
# `Karpetrack.Bench.dll serve` whose stdin is the fifo SRV_IN and whose stdout is the file SRV_OUT.
# usage: python3 drain.py KUBECONFIG BINARY [ENV=VAL ...]   (PERF=ready|drain in the environment: perf record that phase)
import os, sys, subprocess, time, urllib.request, socket, json
kc, binary = sys.argv[1], sys.argv[2]
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, v = kv.split('=', 1); env[k] = v
srv_in, srv_out = os.environ['SRV_IN'], os.environ['SRV_OUT']
changes = int(os.environ.get('CHANGES', '100000'))
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
cmd = (['dotnet', binary] if binary.endswith('.dll') else [binary]) + ['--kubeconfig', kc, '--metrics-addr', f'127.0.0.1:{port}',
       '--grpc-addr', '127.0.0.1:0', '--log-level', 'warn', '--list-page-size', '500']
if 'NORECO' in os.environ: cmd += os.environ['NORECO'].split()
if 'STRACE' in os.environ: cmd = ['strace', '-f', '-c', '-o', os.environ['STRACE']] + cmd   # system calls by count (CPU figures are then strace's)
t0 = time.time()
p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
perf = None
def cpu():
    f = open(f'/proc/{p.pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100
def get(path):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=30) as r: return r.read()
def startperf(tag):
    # System-wide (-a): attaching to the process (-p) right after it started sometimes recorded nothing. Filter with --pid.
    return subprocess.Popen(['perf', 'record'] + (['-e', os.environ['PERFEV']] if 'PERFEV' in os.environ else ['-F', '999']) + ['-g', '-a', '-o', f'/tmp/perf-{tag}.data'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.environ.get('PERF') == 'ready':
    perf = startperf('ready')
while True:
    try:
        if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=5).status == 200: break
    except Exception: pass
    time.sleep(0.02)
ready = time.time() - t0; c0 = cpu()
if perf: perf.send_signal(2); perf.wait(); perf = None
load0 = open('/proc/loadavg').read().split()[0]
def metric(name):
    for l in get('/metrics').decode().split('\n'):
        if l.startswith(name + ' '): return float(l.split()[1])
    return 0
def runs(): return metric('karpetrack_recommender_duration_seconds_count')
# As the bench does: the drain comes after the first recommender run, so that run's CPU is not counted in it.
t_run = time.time()
while 'NORECO' not in os.environ and runs() < 1 and time.time() - t_run < 180: time.sleep(0.5)
time.sleep(float(os.environ.get('SETTLE', '3')))
def events(): return json.loads(get('/sync'))['pods']['events']
before = events()
n0 = open(srv_out).read().count('churned')
with open(srv_in, 'w') as f: f.write(f'churn {changes}\n')
while open(srv_out).read().count('churned') == n0: time.sleep(0.05)
if os.environ.get('PERF') == 'drain': perf = startperf('drain')
c1 = cpu(); t1 = time.time(); r1 = metric('karpetrack_recommender_duration_seconds_sum')
while events() < before + changes and time.time() - t1 < 120: time.sleep(0.005)
drain = time.time() - t1; c2 = cpu(); reco = metric('karpetrack_recommender_duration_seconds_sum') - r1
if perf: perf.send_signal(2); perf.wait()
got = events() - before
print(f"pid {p.pid} {' '.join(sys.argv[3:]) or 'default'} {binary}: ready {ready:.2f}s cpu {c0:.2f}s [load {load0}]; drain {got} in {drain:.2f}s = {got/drain/1000:.0f}k/s cpu {c2-c1:.2f}s (recommender runs ended in it: {reco:.1f}s) [load {open('/proc/loadavg').read().split()[0]}]", flush=True)
p.terminate(); p.wait()
